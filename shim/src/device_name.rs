//! `VFIO_GROUP_GET_DEVICE_FD` name matching, as vfio-pci's `vfio_pci_core_match` and
//! `vfio_pci_core_match_token_uuid` (drivers/vfio/pci/vfio_pci_core.c) do it: the device's
//! name as a prefix, then only spaces and at most one `vf_token=<uuid>` option.

use nix::errno::Errno;

const VF_TOKEN_ARG: &[u8] = b"vf_token=";
const UUID_STRING_LEN: usize = 36;

/// What one device answers to a requested name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameMatch {
    /// Not this device (the kernel goes on to the next device of the group).
    No,
    /// This device; `token` when a `vf_token` was given.
    Yes { token: Option<[u8; 16]> },
}

/// `vfio_pci_core_match(device, buf)` followed by the token check. `sriov`: the device is an
/// SR-IOV PF or VF, the only devices a `vf_token` means something for (a token given to any
/// other device is `EINVAL`, "VF token incorrectly provided, not a PF or VF"). An error
/// stops the kernel's search through the group.
pub fn match_name(buf: &[u8], device: &str, sriov: bool) -> Result<NameMatch, Errno> {
    let name = device.as_bytes();
    if !buf.starts_with(name) {
        return Ok(NameMatch::No);
    }
    let mut rest = &buf[name.len()..];
    let mut token = None;
    if !rest.is_empty() {
        if rest[0] != b' ' {
            return Ok(NameMatch::No);
        }
        while let Some(&c) = rest.first() {
            if c == b' ' {
                rest = &rest[1..];
            } else if token.is_none() && rest.starts_with(VF_TOKEN_ARG) {
                rest = &rest[VF_TOKEN_ARG.len()..];
                if rest.len() < UUID_STRING_LEN {
                    return Err(Errno::EINVAL);
                }
                token = Some(uuid_parse(&rest[..UUID_STRING_LEN])?);
                rest = &rest[UUID_STRING_LEN..];
            } else {
                // Unknown or repeated option.
                return Err(Errno::EINVAL);
            }
        }
    }
    if token.is_some() && !sriov {
        return Err(Errno::EINVAL);
    }
    Ok(NameMatch::Yes { token })
}

/// lib/uuid.c `uuid_parse`: 8-4-4-4-12 hex digits; `EINVAL` otherwise.
fn uuid_parse(s: &[u8]) -> Result<[u8; 16], Errno> {
    const DASHES: [usize; 4] = [8, 13, 18, 23];
    let mut out = [0u8; 16];
    let mut digits = s.iter().enumerate().filter(|(i, _)| !DASHES.contains(i)).map(|(_, c)| *c);
    if DASHES.iter().any(|&i| s[i] != b'-') {
        return Err(Errno::EINVAL);
    }
    let hex = |c: u8| (c as char).to_digit(16).map(|v| v as u8).ok_or(Errno::EINVAL);
    for b in out.iter_mut() {
        let (hi, lo) = (digits.next().ok_or(Errno::EINVAL)?, digits.next().ok_or(Errno::EINVAL)?);
        *b = hex(hi)? << 4 | hex(lo)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = "0000:00:0a.0";
    const TOKEN: &str = "2ab74924-c335-45f4-9b16-8569e5b08258";

    #[test]
    fn names_as_vfio_pci_matches_them() {
        let m = |s: &str, sriov| match_name(s.as_bytes(), DEV, sriov);
        assert_eq!(m(DEV, false), Ok(NameMatch::Yes { token: None }));
        assert_eq!(m("0000:00:0a.0   ", false), Ok(NameMatch::Yes { token: None }), "trailing spaces");
        assert_eq!(m("0000:00:0A.0", false), Ok(NameMatch::No), "case matters");
        assert_eq!(m("0000:00:0a.01", false), Ok(NameMatch::No), "non-space after the name");
        assert_eq!(m("0000:00:0a", false), Ok(NameMatch::No), "a prefix of the name");
        assert_eq!(m("", false), Ok(NameMatch::No));
        assert_eq!(m(&format!("{DEV} vf_token={TOKEN}"), false), Err(Errno::EINVAL), "not a PF or VF");
        assert!(matches!(m(&format!("{DEV} vf_token={TOKEN}"), true), Ok(NameMatch::Yes { token: Some(_) })));
        assert!(matches!(m(&format!("{DEV}  vf_token={TOKEN}  "), true), Ok(NameMatch::Yes { token: Some(_) })));
        assert_eq!(m(&format!("{DEV} vf_token={TOKEN} vf_token={TOKEN}"), true), Err(Errno::EINVAL), "repeated");
        assert_eq!(m(&format!("{DEV} vf_token={TOKEN}x"), true), Err(Errno::EINVAL), "junk after the uuid");
        assert_eq!(m(&format!("{DEV} vf_token=2ab74924"), true), Err(Errno::EINVAL), "short uuid");
        assert_eq!(m(&format!("{DEV} vf_token=2ab74924xc335-45f4-9b16-8569e5b08258"), true), Err(Errno::EINVAL));
        assert_eq!(m(&format!("{DEV} vf_token=2ab7492g-c335-45f4-9b16-8569e5b08258"), true), Err(Errno::EINVAL));
        assert_eq!(m(&format!("{DEV} other=1"), false), Err(Errno::EINVAL), "unknown option");
    }

    #[test]
    fn uuid_bytes() {
        let u = uuid_parse(TOKEN.as_bytes()).unwrap();
        assert_eq!(u[0], 0x2a);
        assert_eq!(u[15], 0x58);
    }
}
