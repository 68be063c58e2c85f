//! Decoding zstd-compressed layers (`tar+zstd`), in the confined unpacking
//! child only (image.rs): the pure-Rust `ruzstd` decoder, one frame after
//! another (zstd:chunked layers have many, and skippable frames between
//! them), each frame's header read here first so that a window larger than
//! `MAX_WINDOW` is refused by name before the decoder allocates for it.
//! The decompressed stream is then checked against the layer's diff id
//! like any other; the frames' own xxhash checksums are not checked.

use ruzstd::decoding::errors::FrameDecoderError;
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};
use std::io::{self, BufRead, Read};

pub const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Largest window a frame may ask for (zstd's own default limit for
/// decoders is 128 MiB; the unpacker may use 256 MiB in all).
pub const MAX_WINDOW: u64 = 64 << 20;

pub struct Decoder<R> {
    source: R,
    frame: FrameDecoder,
    in_frame: bool,
}

impl<R: BufRead> Decoder<R> {
    pub fn new(source: R) -> Decoder<R> {
        Decoder {
            source,
            frame: FrameDecoder::new(),
            in_frame: false,
        }
    }

    /// Read the next frame's header and start decoding it; skippable
    /// frames are passed over. False at the end of the stream.
    fn next_frame(&mut self) -> io::Result<bool> {
        loop {
            if self.source.fill_buf()?.is_empty() {
                return Ok(false);
            }
            let mut magic = [0u8; 4];
            self.source.read_exact(&mut magic)?;
            let number = u32::from_le_bytes(magic);
            if number & 0xffff_fff0 == 0x184d_2a50 {
                let mut length = [0u8; 4];
                self.source.read_exact(&mut length)?;
                let length = u64::from(u32::from_le_bytes(length));
                let skipped = io::copy(&mut (&mut self.source).take(length), &mut io::sink())?;
                if skipped != length {
                    return Err(bad("a skippable frame is cut short"));
                }
                continue;
            }
            if magic != MAGIC {
                return Err(bad(format!(
                    "not a zstd frame (magic number {number:#010x})"
                )));
            }
            let header = self.header(magic)?;
            // The decoder reads the same header again, from our copy.
            self.frame
                .reset(&mut header.as_slice().chain(&mut self.source))
                .map_err(decode_error)?;
            self.in_frame = true;
            return Ok(true);
        }
    }

    /// The rest of a frame header after its magic number, checking the
    /// window it asks for; returns the whole header.
    fn header(&mut self, magic: [u8; 4]) -> io::Result<Vec<u8>> {
        let mut descriptor = [0u8; 1];
        self.source.read_exact(&mut descriptor)?;
        let d = descriptor[0];
        let single_segment = d & 0x20 != 0;
        let content_size_bytes = match d >> 6 {
            0 if single_segment => 1,
            0 => 0,
            1 => 2,
            2 => 4,
            _ => 8,
        };
        let dict_bytes = [0, 1, 2, 4][usize::from(d & 3)];
        let window_bytes = usize::from(!single_segment);
        let mut rest = vec![0u8; window_bytes + dict_bytes + content_size_bytes];
        self.source.read_exact(&mut rest)?;
        let window = if single_segment {
            let mut le = [0u8; 8];
            le[..content_size_bytes].copy_from_slice(&rest[dict_bytes..]);
            let size = u64::from_le_bytes(le);
            if content_size_bytes == 2 {
                size + 256
            } else {
                size
            }
        } else {
            let w = rest[0];
            let base = 1u64 << (10 + u64::from(w >> 3));
            base + (base / 8) * u64::from(w & 7)
        };
        if window > MAX_WINDOW {
            return Err(bad(format!(
                "a frame asks for a {} MiB window; the unpacker allows {} MiB",
                window >> 20,
                MAX_WINDOW >> 20
            )));
        }
        let mut header = magic.to_vec();
        header.push(d);
        header.extend_from_slice(&rest);
        Ok(header)
    }
}

fn bad(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {}", why.into()))
}

fn decode_error(e: FrameDecoderError) -> io::Error {
    bad(e.to_string())
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame && !self.next_frame()? {
                return Ok(0);
            }
            while self.frame.can_collect() < buf.len() && !self.frame.is_finished() {
                let wanted = buf.len() - self.frame.can_collect();
                self.frame
                    .decode_blocks(&mut self.source, BlockDecodingStrategy::UptoBytes(wanted))
                    .map_err(decode_error)?;
            }
            let n = self.frame.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            if self.frame.is_finished() && self.frame.can_collect() == 0 {
                self.in_frame = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruzstd::encoding::{compress_to_vec, CompressionLevel};

    fn decode(data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        Decoder::new(io::BufReader::new(data)).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn frames_and_skippable_frames_decode_in_order() {
        let a: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let b = b"the second frame".repeat(1000);
        let mut stream = compress_to_vec(a.as_slice(), CompressionLevel::Fastest);
        stream.extend_from_slice(&0x184d_2a53u32.to_le_bytes());
        stream.extend_from_slice(&5u32.to_le_bytes());
        stream.extend_from_slice(b"skip!");
        stream.extend(compress_to_vec(
            b.as_slice(),
            CompressionLevel::Uncompressed,
        ));
        let mut want = a.clone();
        want.extend_from_slice(&b);
        assert_eq!(decode(&stream).unwrap(), want);
        assert_eq!(decode(&[]).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn bad_streams_and_huge_windows_are_refused() {
        let e = decode(b"\x28\xb5\x2f\xfdgarbage").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        let e = decode(b"not zstd at all").unwrap_err();
        assert!(e.to_string().contains("magic"), "{e}");
        // A frame whose window descriptor asks for 1 GiB (exponent 20).
        let mut huge = MAGIC.to_vec();
        huge.push(0x00);
        huge.push(20 << 3);
        huge.extend_from_slice(&[0; 16]);
        let e = decode(&huge).unwrap_err();
        assert!(e.to_string().contains("1024 MiB window"), "{e}");
        // A single-segment frame claiming 1 TiB of content.
        let mut claims = MAGIC.to_vec();
        claims.push(0xe0);
        claims.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(decode(&claims).unwrap_err().to_string().contains("window"));
        // Cut short in the middle of a frame.
        let whole = compress_to_vec(&b"abc".repeat(10_000)[..], CompressionLevel::Fastest);
        assert!(decode(&whole[..whole.len() / 2]).is_err());
    }
}
