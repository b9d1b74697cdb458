//! Safe wrapper over a C function compiled by this crate's build script.

extern "C" {
    fn bench_adler32(data: *const u8, len: usize) -> u32;
}

/// Adler-32 checksum of `data`, computed by the C code.
pub fn adler32(data: &[u8]) -> u32 {
    // SAFETY: the pointer and length come from a valid slice; the C code only reads them.
    unsafe { bench_adler32(data.as_ptr(), data.len()) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_value() {
        assert_eq!(super::adler32(b"Wikipedia"), 0x11E6_0398);
    }
}
