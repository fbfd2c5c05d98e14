//! The handoff description a receiving process decodes from a memfd another process sent it
//! (the sender may be hostile): decode never panics, and what decodes encodes back to text that
//! decodes to the same description.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vfio_shim::handoff::Handoff;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(h) = Handoff::decode(text) {
        let _ = h.max_fd_index();
        if let Ok(again) = h.encode() {
            assert_eq!(Handoff::decode(&again).as_ref(), Ok(&h), "decode(encode(h)) != h");
        }
    }
});
