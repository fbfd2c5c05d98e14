//! The daemon's CUSE request parser: a frame read from /dev/cuse, whose contents an
//! unprivileged caller of the node shapes (ioctl and write payloads, lengths, names).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vfio_shim_cuse::ll::Request;

fuzz_target!(|frame: &[u8]| {
    if let Ok(req) = Request::parse(frame) {
        // Whatever parses must be self-consistent: the header's length is the frame's.
        let _ = (req.unique(), req.needs_reply());
    }
});
