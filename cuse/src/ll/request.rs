//! Requests: one frame read from /dev/cuse -> a typed [`Request`]. No I/O, no panics: every
//! length is checked before it is used.

use super::abi::*;
use std::fmt;
use zerocopy::FromBytes;

/// One request as the kernel sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    pub header: fuse_in_header,
    pub op: Operation<'a>,
}

/// The operations a CUSE connection can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation<'a> {
    CuseInit(cuse_init_in),
    Open(fuse_open_in),
    Release(fuse_release_in),
    Ioctl {
        arg: fuse_ioctl_in,
        /// The `in_size` bytes the kernel copied from the caller's in-iovecs, concatenated.
        in_data: &'a [u8],
    },
    Poll(fuse_poll_in),
    /// Needs no reply (fs/fuse/dev.c:1405 queues it; answering is optional).
    Interrupt(fuse_interrupt_in),
    Read(fuse_read_in),
    Write {
        arg: fuse_write_in,
        data: &'a [u8],
    },
    Flush(fuse_flush_in),
    Fsync(fuse_fsync_in),
    /// Any other opcode: answered ENOSYS (or not at all, see [`Request::needs_reply`]).
    Unknown {
        opcode: u32,
        body: &'a [u8],
    },
}

/// Why a frame could not be parsed. `unique` is known once the header parsed, so the session
/// can still answer the request with EIO instead of leaving its caller waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Fewer bytes than a `fuse_in_header`.
    ShortHeader { have: usize },
    /// `fuse_in_header.len` is not the frame's length.
    LengthMismatch { unique: u64, opcode: u32, header_len: u32, frame_len: usize },
    /// `total_extlen` claims more bytes than the frame holds.
    BadExtensions { unique: u64, opcode: u32, extlen: usize, body_len: usize },
    /// The body is shorter than the opcode's fixed argument.
    ShortBody { unique: u64, opcode: u32, need: usize, have: usize },
    /// The data after the fixed argument is not the size the argument states.
    DataSizeMismatch { unique: u64, opcode: u32, stated: u32, have: usize },
    /// The frame is a byte-swapped CUSE_INIT: the kernel's endianness is not ours.
    ByteSwapped,
}

impl ParseError {
    /// The request id, when the header was readable.
    pub fn unique(&self) -> Option<u64> {
        match *self {
            ParseError::LengthMismatch { unique, .. }
            | ParseError::BadExtensions { unique, .. }
            | ParseError::ShortBody { unique, .. }
            | ParseError::DataSizeMismatch { unique, .. } => Some(unique),
            ParseError::ShortHeader { .. } | ParseError::ByteSwapped => None,
        }
    }

    /// The opcode, when the header was readable.
    pub fn opcode(&self) -> Option<u32> {
        match *self {
            ParseError::LengthMismatch { opcode, .. }
            | ParseError::BadExtensions { opcode, .. }
            | ParseError::ShortBody { opcode, .. }
            | ParseError::DataSizeMismatch { opcode, .. } => Some(opcode),
            ParseError::ShortHeader { .. } => None,
            ParseError::ByteSwapped => Some(opcode::CUSE_INIT_BSWAP_RESERVED),
        }
    }

    /// Whether an EIO answer is due: the caller of a request that expects a reply waits for one
    /// uninterruptibly (fs/fuse/dev.c:702 request_wait_answer), so even a garbled request gets one.
    pub fn needs_reply(&self) -> bool {
        match (self.unique(), self.opcode()) {
            (Some(_), Some(op)) => opcode_needs_reply(op),
            _ => false,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::ShortHeader { have } => write!(f, "frame of {have} bytes: shorter than fuse_in_header"),
            ParseError::LengthMismatch { unique, opcode, header_len, frame_len } => {
                write!(f, "request {unique} opcode {opcode}: header says {header_len} bytes, frame has {frame_len}")
            }
            ParseError::BadExtensions { unique, opcode, extlen, body_len } => {
                write!(f, "request {unique} opcode {opcode}: {extlen} bytes of extensions in a {body_len}-byte body")
            }
            ParseError::ShortBody { unique, opcode, need, have } => {
                write!(f, "request {unique} opcode {opcode}: body of {have} bytes, argument needs {need}")
            }
            ParseError::DataSizeMismatch { unique, opcode, stated, have } => {
                write!(f, "request {unique} opcode {opcode}: argument states {stated} data bytes, frame has {have}")
            }
            ParseError::ByteSwapped => write!(f, "byte-swapped CUSE_INIT: foreign-endian kernel"),
        }
    }
}

impl std::error::Error for ParseError {}

/// FORGET and BATCH_FORGET expect no reply; INTERRUPT expects none unless the server wants it
/// requeued (EAGAIN). CUSE never sends the forgets; they are listed so an unknown-opcode answer
/// is never written for them.
pub fn opcode_needs_reply(op: u32) -> bool {
    !matches!(op, opcode::FUSE_FORGET | opcode::FUSE_BATCH_FORGET | opcode::FUSE_INTERRUPT)
}

impl<'a> Request<'a> {
    /// Parses one frame, exactly as returned by one read(2) of /dev/cuse.
    pub fn parse(frame: &'a [u8]) -> Result<Request<'a>, ParseError> {
        let (header, _) =
            fuse_in_header::read_from_prefix(frame).map_err(|_| ParseError::ShortHeader { have: frame.len() })?;
        let unique = header.unique;
        let opc = header.opcode;
        if opc == opcode::CUSE_INIT_BSWAP_RESERVED {
            return Err(ParseError::ByteSwapped);
        }
        if header.len as usize != frame.len() {
            return Err(ParseError::LengthMismatch {
                unique,
                opcode: opc,
                header_len: header.len,
                frame_len: frame.len(),
            });
        }
        let body = &frame[size_of::<fuse_in_header>()..];
        // Extensions (security context, supplementary groups) trail the arguments.
        let extlen = header.total_extlen as usize * 8;
        let body = match body.len().checked_sub(extlen) {
            Some(n) => &body[..n],
            None => return Err(ParseError::BadExtensions { unique, opcode: opc, extlen, body_len: body.len() }),
        };
        let op = match opc {
            opcode::CUSE_INIT => Operation::CuseInit(fixed(&header, body)?.0),
            opcode::FUSE_OPEN => Operation::Open(fixed(&header, body)?.0),
            opcode::FUSE_RELEASE => Operation::Release(fixed(&header, body)?.0),
            opcode::FUSE_IOCTL => {
                let (arg, in_data) = sized(&header, body, |a: &fuse_ioctl_in| a.in_size)?;
                Operation::Ioctl { arg, in_data }
            }
            opcode::FUSE_POLL => Operation::Poll(fixed(&header, body)?.0),
            opcode::FUSE_INTERRUPT => Operation::Interrupt(fixed(&header, body)?.0),
            opcode::FUSE_READ => Operation::Read(fixed(&header, body)?.0),
            opcode::FUSE_WRITE => {
                let (arg, data) = sized(&header, body, |a: &fuse_write_in| a.size)?;
                Operation::Write { arg, data }
            }
            opcode::FUSE_FLUSH => Operation::Flush(fixed(&header, body)?.0),
            opcode::FUSE_FSYNC => Operation::Fsync(fixed(&header, body)?.0),
            other => Operation::Unknown { opcode: other, body },
        };
        Ok(Request { header, op })
    }

    pub fn unique(&self) -> u64 {
        self.header.unique
    }

    /// Whether the kernel waits for an answer to this request.
    pub fn needs_reply(&self) -> bool {
        opcode_needs_reply(self.header.opcode)
    }
}

/// Reads the opcode's fixed argument; what follows it is returned as the data.
fn fixed<'b, T: FromBytes>(header: &fuse_in_header, body: &'b [u8]) -> Result<(T, &'b [u8]), ParseError> {
    T::read_from_prefix(body).map_err(|_| ParseError::ShortBody {
        unique: header.unique,
        opcode: header.opcode,
        need: size_of::<T>(),
        have: body.len(),
    })
}

/// A fixed part followed by exactly the data length it states (`stated`).
fn sized<'b, T: FromBytes>(
    header: &fuse_in_header,
    body: &'b [u8],
    stated: impl Fn(&T) -> u32,
) -> Result<(T, &'b [u8]), ParseError> {
    let (arg, data) = fixed::<T>(header, body)?;
    let stated = stated(&arg);
    if data.len() != stated as usize {
        return Err(ParseError::DataSizeMismatch {
            unique: header.unique,
            opcode: header.opcode,
            stated,
            have: data.len(),
        });
    }
    Ok((arg, data))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    /// Builds a frame as the kernel would: header with the right `len`, then the body.
    pub(crate) fn frame(opcode: u32, unique: u64, body: &[u8]) -> Vec<u8> {
        let header = fuse_in_header {
            len: (40 + body.len()) as u32,
            opcode,
            unique,
            nodeid: 0,
            uid: 1000,
            gid: 100,
            pid: 4242,
            total_extlen: 0,
            padding: 0,
        };
        let mut v = header.as_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    /// The CUSE_INIT frame a 7.3 kernel sends (fs/fuse/cuse.c:454-460), byte for byte.
    const CUSE_INIT_FRAME: [u8; 56] = [
        56, 0, 0, 0, // len
        0, 16, 0, 0, // opcode 4096
        2, 0, 0, 0, 0, 0, 0, 0, // unique 2
        0, 0, 0, 0, 0, 0, 0, 0, // nodeid
        0, 0, 0, 0, 0, 0, 0, 0, // uid, gid
        0x39, 0x05, 0, 0, // pid 1337
        0, 0, 0, 0, // total_extlen, padding
        7, 0, 0, 0, 46, 0, 0, 0, // major 7, minor 46
        0, 0, 0, 0, 1, 0, 0, 0, // unused, flags CUSE_UNRESTRICTED_IOCTL
    ];

    #[test]
    fn cuse_init_fixture() {
        let r = Request::parse(&CUSE_INIT_FRAME).unwrap();
        assert_eq!(r.unique(), 2);
        assert_eq!(r.header.pid, 1337);
        match r.op {
            Operation::CuseInit(i) => {
                assert_eq!((i.major, i.minor, i.flags), (7, 46, CUSE_UNRESTRICTED_IOCTL));
            }
            other => panic!("{other:?}"),
        }
        assert!(r.needs_reply());
    }

    #[test]
    fn ioctl_with_data() {
        let arg = fuse_ioctl_in {
            fh: 7,
            flags: FUSE_IOCTL_UNRESTRICTED,
            cmd: 0x3b64,
            arg: 0x7fff_0000_1000,
            in_size: 4,
            out_size: 0,
        };
        let mut body = arg.as_bytes().to_vec();
        body.extend_from_slice(&16u32.to_ne_bytes());
        let f = frame(opcode::FUSE_IOCTL, 10, &body);
        let r = Request::parse(&f).unwrap();
        match r.op {
            Operation::Ioctl { arg: a, in_data } => {
                assert_eq!(a, arg);
                assert_eq!(in_data, &16u32.to_ne_bytes());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!((r.header.uid, r.header.gid, r.header.pid), (1000, 100, 4242));
    }

    #[test]
    fn every_fixed_opcode_parses() {
        let cases: [(u32, usize); 8] = [
            (opcode::FUSE_OPEN, 8),
            (opcode::FUSE_RELEASE, 24),
            (opcode::FUSE_POLL, 24),
            (opcode::FUSE_INTERRUPT, 8),
            (opcode::FUSE_READ, 40),
            (opcode::FUSE_FLUSH, 24),
            (opcode::FUSE_FSYNC, 16),
            (opcode::CUSE_INIT, 16),
        ];
        for (op, size) in cases {
            let f = frame(op, 4, &vec![0u8; size]);
            let r = Request::parse(&f).unwrap_or_else(|e| panic!("opcode {op}: {e}"));
            assert_eq!(r.header.opcode, op);
            // One byte short of the argument: an error naming the request, never a panic.
            let f = frame(op, 4, &vec![0u8; size - 1]);
            let e = Request::parse(&f).unwrap_err();
            assert_eq!(e, ParseError::ShortBody { unique: 4, opcode: op, need: size, have: size - 1 });
        }
    }

    #[test]
    fn interrupt_needs_no_reply() {
        let f = frame(opcode::FUSE_INTERRUPT, 11, &10u64.to_ne_bytes());
        let r = Request::parse(&f).unwrap();
        assert_eq!(r.op, Operation::Interrupt(fuse_interrupt_in { unique: 10 }));
        assert!(!r.needs_reply());
        // A garbled interrupt gets no EIO answer either.
        let f = frame(opcode::FUSE_INTERRUPT, 11, &[0; 3]);
        assert!(!Request::parse(&f).unwrap_err().needs_reply());
    }

    #[test]
    fn write_data_must_match_size() {
        let arg = fuse_write_in { fh: 1, size: 3, ..Default::default() };
        let mut body = arg.as_bytes().to_vec();
        body.extend_from_slice(b"abc");
        let f = frame(opcode::FUSE_WRITE, 6, &body);
        match Request::parse(&f).unwrap().op {
            Operation::Write { data, .. } => assert_eq!(data, b"abc"),
            other => panic!("{other:?}"),
        }
        body.pop();
        let f = frame(opcode::FUSE_WRITE, 6, &body);
        assert!(matches!(Request::parse(&f), Err(ParseError::DataSizeMismatch { stated: 3, have: 2, .. })));
    }

    #[test]
    fn unknown_opcode_is_kept() {
        let f = frame(1, 8, b"xy");
        let r = Request::parse(&f).unwrap();
        assert_eq!(r.op, Operation::Unknown { opcode: 1, body: b"xy" });
        assert!(r.needs_reply());
        let f = frame(opcode::FUSE_FORGET, 8, b"");
        assert!(!Request::parse(&f).unwrap().needs_reply());
    }

    #[test]
    fn truncated_header_is_an_error() {
        for n in 0..40 {
            let e = Request::parse(&CUSE_INIT_FRAME[..n]).unwrap_err();
            assert_eq!(e, ParseError::ShortHeader { have: n });
            assert_eq!(e.unique(), None);
            assert!(!e.needs_reply());
        }
    }

    #[test]
    fn truncated_ioctl_body_is_an_error() {
        let arg = fuse_ioctl_in { in_size: 8, ..Default::default() };
        let mut body = arg.as_bytes().to_vec();
        body.extend_from_slice(&[1; 8]);
        let full = frame(opcode::FUSE_IOCTL, 12, &body);
        // Every truncation of the body, with the header's len fixed up so only the body lies.
        for cut in 0..body.len() {
            let mut f = full[..40 + cut].to_vec();
            f[0..4].copy_from_slice(&((40 + cut) as u32).to_ne_bytes());
            let e = Request::parse(&f).unwrap_err();
            assert_eq!(e.unique(), Some(12));
            assert!(e.needs_reply(), "{e}");
            if cut < 32 {
                assert!(matches!(e, ParseError::ShortBody { need: 32, .. }), "{e}");
            } else {
                assert!(matches!(e, ParseError::DataSizeMismatch { stated: 8, .. }), "{e}");
            }
        }
        // in_size larger than the data present.
        let arg = fuse_ioctl_in { in_size: u32::MAX, ..Default::default() };
        let f = frame(opcode::FUSE_IOCTL, 12, arg.as_bytes());
        assert!(matches!(Request::parse(&f), Err(ParseError::DataSizeMismatch { .. })));
    }

    #[test]
    fn lying_length_field_is_an_error() {
        let mut f = CUSE_INIT_FRAME.to_vec();
        for len in [0u32, 39, 40, 55, 57, 4096, u32::MAX] {
            f[0..4].copy_from_slice(&len.to_ne_bytes());
            let e = Request::parse(&f).unwrap_err();
            assert!(matches!(e, ParseError::LengthMismatch { unique: 2, frame_len: 56, .. }), "{e}");
        }
        // A frame cut short of what the header claims.
        assert!(matches!(
            Request::parse(&CUSE_INIT_FRAME[..50]),
            Err(ParseError::LengthMismatch { header_len: 56, frame_len: 50, .. })
        ));
    }

    #[test]
    fn extensions_are_bounded() {
        let mut f = frame(opcode::FUSE_OPEN, 3, &[0; 8]);
        f[36..38].copy_from_slice(&2u16.to_ne_bytes()); // 16 bytes of extensions, 8 present
        assert!(matches!(Request::parse(&f), Err(ParseError::BadExtensions { extlen: 16, body_len: 8, .. })));
        f[36..38].copy_from_slice(&1u16.to_ne_bytes()); // 8 bytes of extension eat the argument
        assert!(matches!(Request::parse(&f), Err(ParseError::ShortBody { .. })));
        let mut f = frame(opcode::FUSE_OPEN, 3, &[0; 16]);
        f[36..38].copy_from_slice(&1u16.to_ne_bytes());
        assert!(Request::parse(&f).is_ok());
    }

    #[test]
    fn byte_swapped_init_is_refused() {
        let f = frame(opcode::CUSE_INIT_BSWAP_RESERVED, 2, &[0; 16]);
        assert_eq!(Request::parse(&f), Err(ParseError::ByteSwapped));
    }

    /// Every prefix of every fixture: errors, never panics.
    #[test]
    fn no_prefix_panics() {
        let arg = fuse_ioctl_in { in_size: 4, ..Default::default() };
        let mut body = arg.as_bytes().to_vec();
        body.extend_from_slice(&[9; 4]);
        let fixtures = [CUSE_INIT_FRAME.to_vec(), frame(opcode::FUSE_IOCTL, 1, &body), frame(1, 1, b"")];
        for f in fixtures {
            for n in 0..=f.len() {
                let _ = Request::parse(&f[..n]);
                let mut g = f[..n].to_vec();
                if n >= 4 {
                    g[0..4].copy_from_slice(&(n as u32).to_ne_bytes());
                }
                let _ = Request::parse(&g);
            }
        }
    }
}
