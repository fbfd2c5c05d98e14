#!/usr/bin/env python3
"""The explorer's volume per column and how many of its sequences differ from type1's.

Usage: explorer-summary.py RESULTS COLUMN...   (RESULTS as vfio-shim-compat run writes it:
RESULTS/<kernel>/<mode>/explorer.out and .err). Prints, per column, the explorer's summary
line (sequences, operations, time, deaths) and, for every column but full/type1, the number of
sequences (s<i> or r.<file>) with any record that differs from type1's. Informational: the
verdict is vfio-shim-compat compare's.
"""
import pathlib
import re
import sys


def sequences(path):
    out = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        parts = line.split(" ", 2)
        if len(parts) >= 2 and "." in parts[1]:
            # s12.3.map -> s12, r.pair-group.3.map -> r.pair-group, s12.end.rng -> s12
            out.setdefault(parts[1].rsplit(".", 2)[0], []).append(line)
    return out


def main():
    res = pathlib.Path(sys.argv[1])
    oracle = sequences(res / "full/type1/explorer.out")
    for col in ["full/type1"] + [c for c in sys.argv[2:] if c != "full/type1"]:
        err = res / col / "explorer.err"
        m = re.search(r"explorer: (.*)", err.read_text()) if err.exists() else None
        print(f"explorer ({col}): {m.group(1) if m else 'no run'}")
        if col != "full/type1" and oracle:
            this = sequences(res / col / "explorer.out")
            n = sum(1 for k, v in oracle.items() if this.get(k) != v)
            print(f"explorer ({col}): {n} of {len(oracle)} sequences differ from type1")


main()
