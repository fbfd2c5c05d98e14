#!/usr/bin/env python3
"""Helpers for selftests.sh (stdlib only; runs on the host and in the guest).

  selftests_util.py variants            < `<test> -l` listing   -> "<mode> <variant>" lines
  selftests_util.py summarize TAP TEST DEVICE MODE TSV           -> appends rows, prints "p s f"
"""
import re
import sys

MODES = sorted(["vfio_type1_iommu", "vfio_type1v2_iommu", "iommufd_compat_type1",
                "iommufd_compat_type1v2", "iommufd"], key=len, reverse=True)


def variants(text):
    """The harness's -l listing is "%-20s %-25s %s" (fixture, variant, test), the three lists
    zipped; a blank column is all spaces; a longer name pushes the rest right. Yields the
    variants that belong to an IOMMU mode: the longest mode name that equals the variant or
    prefixes it followed by "_"."""
    seen = set()
    for line in text.splitlines():
        if line.startswith("# FIXTURE") or line.startswith("-----") or not line.strip():
            continue
        if line[:20].strip() == "":
            rest = line[21:]
        else:
            tok = line.split()[0]
            rest = line[max(len(tok), 20) + 1:]
        if not rest or rest.startswith(" "):
            continue
        variant = rest.split()[0]
        if variant in seen:
            continue
        seen.add(variant)
        for m in MODES:
            if variant == m or variant.startswith(m + "_"):
                yield m, variant
                break


TAP_RE = re.compile(r"^(not ok|ok) \d+ (\S+)(?: # (SKIP|XFAIL|XPASS)\s*(.*))?$")


def summarize(tap, test, dev, mode, tsv):
    p = s = f = 0
    rows = []
    with open(tap, errors="replace") as fh:
        for line in fh:
            m = TAP_RE.match(line.rstrip("\n"))
            if not m:
                continue
            status, case, directive, reason = m.groups()
            if directive == "SKIP":
                res = "skip"
                s += 1
            elif status == "ok":
                res = "pass"
                p += 1
            else:
                res = "fail"
                f += 1
            rows.append("\t".join([test, dev, mode, case, res, (reason or "").strip()]))
    with open(tsv, "a") as out:
        for r in rows:
            out.write(r + "\n")
    print(p, s, f)


def main(argv):
    if len(argv) == 2 and argv[1] == "variants":
        for m, v in variants(sys.stdin.read()):
            print(m, v)
        return 0
    if len(argv) == 7 and argv[1] == "summarize":
        summarize(*argv[2:])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
