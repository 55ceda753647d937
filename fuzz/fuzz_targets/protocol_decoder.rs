//! The tier frame decoder on a hostile stream, split into chunks of any sizes.
//!
//! Input: byte 0 picks the limits (the default 16 MiB, or a small `max_frame_bytes` so that
//! frames hit it), byte 1 seeds the chunk sizes, the rest is the stream.
//!
//! Checks, besides never panicking:
//! - the frames and the error are the same however the stream is split;
//! - `Ok(None)` consumed the whole chunk, and the decoder never holds more than one frame
//!   (`buffered() <= HEADER_BYTES + max_frame_bytes`);
//! - heap in use stays proportional to the bytes received (the module's promise);
//! - every decoded frame encodes again under the same limits and decodes to itself;
//! - `protocol::decode` on the whole stream agrees with the streaming decoder.
#![no_main]

use cascade_fuzz::{Rng, check_heap, peak_during, verbose};
use cascade_runtime::protocol::{
    Frame, FrameDecoder, HEADER_BYTES, ProtocolError, ProtocolLimits, decode, encode,
};
use libfuzzer_sys::fuzz_target;

/// What a stream decoded to: each frame as its canonical encoding, then how it ended.
#[derive(Debug, PartialEq)]
struct Decoded {
    frames: Vec<Vec<u8>>,
    end: Result<(), ProtocolError>,
}

/// A frame's canonical bytes: compares tensors' data and NaNs bit for bit.
fn canonical(frame: &Frame) -> Vec<u8> {
    encode(frame, &ProtocolLimits { max_frame_bytes: usize::MAX }).expect("a decoded frame encodes")
}

fn run(stream: &[u8], limits: ProtocolLimits, mut chunk: impl FnMut() -> usize) -> Decoded {
    let mut decoder = FrameDecoder::new(limits);
    let mut frames = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let n = chunk().min(rest.len());
        let mut input = &rest[..n];
        rest = &rest[n..];
        loop {
            let before = input.len();
            match decoder.decode(&mut input) {
                Ok(Some(frame)) => {
                    assert!(input.len() < before, "a frame came out of no bytes");
                    frames.push(canonical(&frame));
                    let again = encode(&frame, &limits).expect("a decoded frame encodes under the same limits");
                    let back = decode(&again, &limits).expect("a re-encoded frame decodes");
                    assert_eq!(canonical(&back), canonical(&frame), "a frame survives encode and decode");
                }
                Ok(None) => {
                    assert!(input.is_empty(), "Ok(None) left {} bytes of the chunk", input.len());
                    break;
                }
                Err(e) => {
                    // Poisoned from now on, whatever comes.
                    assert_eq!(decoder.decode(&mut &[1u8, 0, 0, 0, 0][..]), Err(ProtocolError::Poisoned));
                    return Decoded { frames, end: Err(e) };
                }
            }
            assert!(
                decoder.buffered() <= HEADER_BYTES + limits.max_frame_bytes,
                "the decoder holds {} bytes",
                decoder.buffered()
            );
            if input.is_empty() {
                break;
            }
        }
    }
    Decoded { frames, end: decoder.finish() }
}

fuzz_target!(|data: &[u8]| {
    let [pick, seed, stream @ ..] = data else { return };
    let limits = if pick & 0x80 == 0 {
        ProtocolLimits::default()
    } else {
        ProtocolLimits { max_frame_bytes: usize::from(pick & 0x7f) * 8 }
    };

    let (whole, peak) = peak_during(|| run(stream, limits, || usize::MAX));
    check_heap("decoding the stream in one chunk", peak, stream.len(), 64 << 10, 16);
    if verbose() {
        eprintln!("{} frame(s), then {:?}", whole.frames.len(), whole.end);
    }

    let mut rng = Rng::new(u64::from(*seed));
    let max_chunk = usize::from(seed % 16) + 1;
    let (split, peak) = peak_during(|| run(stream, limits, || rng.below(max_chunk + 1)));
    check_heap("decoding the stream in small chunks", peak, stream.len(), 64 << 10, 16);
    assert_eq!(whole, split, "the split changed what the stream decodes to");

    match (decode(stream, &limits), &whole) {
        (Ok(frame), Decoded { frames, end: Ok(()) }) if frames.len() == 1 => {
            assert_eq!(canonical(&frame), frames[0]);
        }
        (Ok(frame), other) => panic!("decode gave {frame:?}, the stream {other:?}"),
        (Err(_), Decoded { frames, end: Ok(()) }) => {
            assert!(frames.len() != 1, "decode failed on a stream of one whole frame")
        }
        (Err(_), _) => {}
    }
});
