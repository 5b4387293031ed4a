//! SHA-256 of a stream, as lowercase hex (what sha256sum prints and SHA256SUMS lists). Shared by
//! the build (xtask) and the box's updater so both hash artifacts the same way. Reads only what
//! it is given; opening files is the caller's.

use std::io::Read;

use sha2::{Digest, Sha256};

/// SHA-256 of everything `reader` yields.
pub fn sha256_hex(mut reader: impl Read) -> std::io::Result<String> {
    let mut h = Sha256::new();
    std::io::copy(&mut reader, &mut h)?;
    Ok(format!("{:x}", h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_sha256sum() {
        // printf abc | sha256sum
        let want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_hex(&b"abc"[..]).unwrap(), want);
        let big = vec![7u8; (1 << 20) + 3];
        assert_eq!(sha256_hex(&big[..]).unwrap(), format!("{:x}", Sha256::digest(&big)));
    }
}
