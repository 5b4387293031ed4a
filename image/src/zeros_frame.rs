//! A zstd frame that decodes to a run of zero bytes, written directly as RLE blocks (RFC 8878,
//! section 3.1): what compressing the zeros would give, without feeding gigabytes of them
//! through the compressor. The .img.zst is mostly such runs (the free slot, the unused end of
//! slot A), and a fleet build would otherwise spend seconds per site compressing nothing.
//! Written by hand because the zstd crate has no way to emit a run without reading it.
//! Pure: returns bytes, writes nothing.

const MAGIC: u32 = 0xFD2F_B528;
/// Window 2^17 = 128 KiB, the largest block zstd allows; every decoder accepts it.
const WINDOW_LOG: u8 = 17;
const BLOCK_MAX: u64 = 1 << WINDOW_LOG;
/// Block type 1: one byte repeated Block_Size times.
const RLE: u32 = 1;

/// One frame, with its content size in the header, that decodes to `len` zeros.
pub fn zeros_frame(len: u64) -> Vec<u8> {
    let blocks = len.div_ceil(BLOCK_MAX).max(1);
    let mut out = Vec::with_capacity(14 + 4 * blocks as usize);
    out.extend_from_slice(&MAGIC.to_le_bytes());
    // Frame_Header_Descriptor: an 8-byte content size (flag 3), not single-segment, no
    // checksum, no dictionary; then the window descriptor (exponent = log - 10, no mantissa).
    out.push(0b1100_0000);
    out.push((WINDOW_LOG - 10) << 3);
    out.extend_from_slice(&len.to_le_bytes());
    let mut left = len;
    for i in 0..blocks {
        let size = left.min(BLOCK_MAX) as u32;
        left -= u64::from(size);
        let last = u32::from(i + 1 == blocks);
        // A zero-length RLE block is allowed and decodes to nothing (the empty frame's block).
        let header = last | (RLE << 1) | (size << 3);
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(frame: &[u8]) -> Vec<u8> {
        zstd::stream::decode_all(frame).expect("zstd decodes the frame")
    }

    #[test]
    fn decodes_to_exactly_that_many_zeros() {
        for len in [0u64, 1, 4095, BLOCK_MAX - 1, BLOCK_MAX, BLOCK_MAX + 1, 5 * BLOCK_MAX + 17, 3 << 20] {
            let out = decoded(&zeros_frame(len));
            assert_eq!(out.len() as u64, len, "length {len}");
            assert!(out.iter().all(|&b| b == 0), "length {len}");
        }
    }

    #[test]
    fn frames_concatenate_with_compressed_ones_into_one_stream() {
        let mut stream = zstd::stream::encode_all(&b"head"[..], 3).unwrap();
        stream.extend(zeros_frame(1000));
        stream.extend(zstd::stream::encode_all(&b"tail"[..], 3).unwrap());
        let mut want = b"head".to_vec();
        want.extend(std::iter::repeat_n(0, 1000));
        want.extend(b"tail");
        assert_eq!(decoded(&stream), want);
    }

    #[test]
    fn a_frame_of_gigabytes_stays_small_and_declares_its_size() {
        let len = 6u64 << 30;
        let frame = zeros_frame(len);
        assert!(frame.len() < 200_000, "{} bytes", frame.len());
        assert_eq!(zstd::zstd_safe::get_frame_content_size(&frame).ok(), Some(Some(len)));
    }
}
