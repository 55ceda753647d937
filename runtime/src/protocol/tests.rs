use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;

use super::*;
use crate::tensor::DType;

/// Counts the bytes this thread holds, so the decoder's peak memory can be asserted.
struct Counting;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    let _ = TRACKING.try_with(|on| {
        if on.get() {
            let live = LIVE.with(|l| {
                l.set(l.get() + delta);
                l.get()
            });
            PEAK.with(|p| p.set(p.get().max(live)));
        }
    });
}

// SAFETY: every call is forwarded to `System` unchanged; the bookkeeping only reads sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            track(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(-(layout.size() as isize));
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            track(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak bytes allocated (and still held at that moment) while `f` runs on this thread.
fn peak_allocation(f: impl FnOnce()) -> isize {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    TRACKING.with(|t| t.set(true));
    f();
    TRACKING.with(|t| t.set(false));
    PEAK.with(|p| p.get())
}

/// Feeds `bytes` to a decoder in chunks of the given sizes until it errs or runs dry.
fn feed(bytes: &[u8], chunks: &[usize], limits: ProtocolLimits) -> Result<Vec<Frame>, ProtocolError> {
    let mut decoder = FrameDecoder::new(limits);
    let mut frames = Vec::new();
    let mut rest = bytes;
    let mut sizes = chunks.iter().cycle();
    while !rest.is_empty() {
        let n = sizes.next().copied().unwrap_or(rest.len()).clamp(1, rest.len());
        let mut chunk = &rest[..n];
        rest = &rest[n..];
        while let Some(frame) = decoder.decode(&mut chunk)? {
            frames.push(frame);
        }
    }
    decoder.finish()?;
    Ok(frames)
}

fn tensor() -> impl Strategy<Value = NamedTensor> {
    let dtype =
        prop_oneof![Just(DType::F32), Just(DType::U8), Just(DType::I8), Just(DType::I32), Just(DType::I64)];
    ("[a-z]{0,8}", dtype, prop::collection::vec(0usize..4, 0..4)).prop_flat_map(|(name, dtype, shape)| {
        let bytes = shape.iter().product::<usize>() * dtype.size();
        prop::collection::vec(any::<u8>(), bytes).prop_map(move |data| NamedTensor {
            name: name.clone(),
            tensor: Tensor::new(dtype, shape.clone(), data).unwrap(),
        })
    })
}

fn finite() -> impl Strategy<Value = f32> {
    -1e6f32..1e6f32
}

fn frame() -> impl Strategy<Value = Frame> {
    let trace = prop::option::of(
        (any::<u128>(), any::<u64>(), any::<bool>()).prop_map(|(t, s, sampled)| TraceContext {
            trace_id: t,
            parent_span_id: s,
            sampled,
        }),
    );
    let request = (
        any::<u64>(),
        ".{0,12}",
        prop::collection::vec(tensor(), 0..4),
        any::<u64>(),
        trace,
        ".{0,12}",
        prop::option::of(finite()),
    )
        .prop_map(|(id, route, inputs, budget_us, trace, node_id, local_confidence)| {
            Frame::Request(EscalationRequest {
                id,
                route,
                inputs,
                budget_us,
                trace,
                node_id,
                local_confidence,
            })
        });
    let timing = ("[a-z]{1,8}", any::<u64>()).prop_map(|(stage, micros)| StageTiming { stage, micros });
    let answer = (
        any::<u64>(),
        prop::collection::vec(tensor(), 0..4),
        finite(),
        prop::option::of(any::<u32>()),
        ".{0,12}",
        prop::collection::vec(timing, 0..4),
    )
        .prop_map(|(id, outputs, confidence, label, model_version, timings)| {
            Frame::Answer(EscalationAnswer { id, outputs, confidence, label, model_version, timings })
        });
    let kind = prop_oneof![
        Just(ErrorKind::Overloaded),
        Just(ErrorKind::DeadlineExceeded),
        Just(ErrorKind::UnknownRoute),
        Just(ErrorKind::BadRequest),
        Just(ErrorKind::UnsupportedVersion),
        Just(ErrorKind::FrameTooLarge),
        Just(ErrorKind::Internal),
        Just(ErrorKind::Unavailable),
    ];
    let error = (any::<u64>(), kind, any::<bool>(), ".{0,24}")
        .prop_map(|(id, kind, retryable, message)| Frame::Error(ErrorFrame { id, kind, retryable, message }));
    prop_oneof![request, answer, error]
}

const SMALL: ProtocolLimits = ProtocolLimits { max_frame_bytes: 4096 };

/// What the decoder may hold at most for `SMALL`: one buffered body, one decoded frame of
/// at most that many bytes, and the bounded per-item overhead (64 tensors, 16 dims each).
const SMALL_PEAK: isize = 2 * 4096 + 64 * 1024;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trips_in_any_chunking(frames in prop::collection::vec(frame(), 1..4),
                                   chunks in prop::collection::vec(1usize..64, 1..8)) {
        let limits = ProtocolLimits::default();
        let mut bytes = Vec::new();
        for f in &frames {
            bytes.extend(encode(f, &limits).unwrap());
        }
        prop_assert_eq!(&feed(&bytes, &chunks, limits).unwrap(), &frames);
        prop_assert_eq!(&decode(&encode(&frames[0], &limits).unwrap(), &limits).unwrap(), &frames[0]);
    }

    #[test]
    fn a_request_sent_with_a_new_budget_decodes_as_the_same_request_with_that_budget(
        frame in frame(), budget_us in any::<u64>()) {
        let Frame::Request(request) = frame else { return Ok(()) };
        let limits = ProtocolLimits::default();
        let sent = encode_request(&request, std::time::Duration::from_micros(budget_us), &limits).unwrap();
        let expected = Frame::Request(EscalationRequest { budget_us, ..request });
        prop_assert_eq!(decode(&sent, &limits).unwrap(), expected);
    }

    #[test]
    fn arbitrary_bytes_never_panic_nor_overallocate(bytes in prop::collection::vec(any::<u8>(), 0..2048),
                                                    valid_header in any::<bool>(),
                                                    chunks in prop::collection::vec(1usize..512, 1..4)) {
        let mut bytes = bytes;
        if valid_header && !bytes.is_empty() {
            // Most random first bytes are refused as a version at once; also exercise bodies.
            bytes[0] = PROTOCOL_VERSION;
        }
        let peak = peak_allocation(|| { let _ = feed(&bytes, &chunks, SMALL); });
        prop_assert!(peak <= SMALL_PEAK, "peak {peak} bytes");
    }

    #[test]
    fn corrupted_frames_never_panic_nor_overallocate(frame in frame(),
                                                     flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let Ok(mut bytes) = encode(&frame, &SMALL) else { return Ok(()) };
        for (at, value) in flips {
            // Keep the version so the corruption reaches the body decoder.
            let at = 1 + at % (bytes.len() - 1);
            bytes[at] = value;
        }
        let peak = peak_allocation(|| {
            if let Ok(frames) = feed(&bytes, &[7], SMALL) {
                // Whatever decodes is well-formed: every tensor matches its shape.
                for f in frames {
                    if let Frame::Request(r) = f {
                        for t in r.inputs {
                            assert_eq!(t.tensor.data().len(), t.tensor.len() * t.tensor.dtype().size());
                        }
                    }
                }
            }
        });
        prop_assert!(peak <= SMALL_PEAK, "peak {peak} bytes");
    }
}

fn request(inputs: Vec<NamedTensor>) -> Frame {
    Frame::Request(EscalationRequest {
        id: 7,
        route: "digits".into(),
        inputs,
        budget_us: 1,
        trace: None,
        node_id: "edge-1".into(),
        local_confidence: Some(0.5),
    })
}

#[test]
fn unknown_version_is_refused_with_an_error_frame() {
    let mut bytes = encode(&request(vec![]), &SMALL).unwrap();
    // Version 1, which carried an absolute deadline: refused, not misread.
    bytes[0] = 1;
    let err = decode(&bytes, &SMALL).unwrap_err();
    assert_eq!(err, ProtocolError::UnsupportedVersion { got: 1 });
    assert_eq!(err.to_string(), "unsupported tier protocol version 1 (this node speaks version 2)");
    let reply = err.to_error_frame(0);
    assert_eq!((reply.kind, reply.retryable), (ErrorKind::UnsupportedVersion, false));
    // The version alone is enough to refuse: no length needs to arrive.
    assert!(FrameDecoder::new(SMALL).decode(&mut &[9u8][..]).is_err());
}

#[test]
fn declared_length_is_checked_before_buffering() {
    let header = [PROTOCOL_VERSION, 0, 0, 0x10, 0x01];
    let mut decoder = FrameDecoder::new(SMALL);
    let err = decoder.decode(&mut &header[..]).unwrap_err();
    assert_eq!(err, ProtocolError::FrameTooLarge { len: 4097, max: 4096 });
    assert_eq!(decoder.decode(&mut &[0u8][..]), Err(ProtocolError::Poisoned));

    let big =
        NamedTensor { name: "x".into(), tensor: Tensor::new(DType::U8, vec![5000], vec![0; 5000]).unwrap() };
    assert!(matches!(encode(&request(vec![big]), &SMALL), Err(ProtocolError::FrameTooLarge { .. })));
}

#[test]
fn tensor_length_must_match_shape() {
    let t = NamedTensor { name: "x".into(), tensor: Tensor::new(DType::F32, vec![2], vec![0; 8]).unwrap() };
    let mut bytes = encode(&request(vec![t]), &SMALL).unwrap();
    // The shape's single dimension is one varint byte just before the data's length byte:
    // [.., dims=1, 2, len=8, data x8, ..]; make the shape claim 3 elements.
    let pos = bytes.windows(3).position(|w| w == [1, 2, 8]).unwrap();
    bytes[pos + 1] = 3;
    let err = decode(&bytes, &SMALL).unwrap_err();
    assert_eq!(
        err.to_string(),
        "malformed frame body: tensor \"x\": tensor of f32 [3] needs 12 bytes, got 8"
    );
}

#[test]
fn too_many_tensors_are_refused_both_ways() {
    let t = NamedTensor { name: String::new(), tensor: Tensor::new(DType::U8, vec![0], vec![]).unwrap() };
    let frame = request(vec![t; MAX_TENSORS + 1]);
    assert!(matches!(encode(&frame, &SMALL), Err(ProtocolError::TooMany { field: "inputs", .. })));
    // A peer that skips the check is refused by the decoder.
    let mut body = postcard::to_allocvec(&frame).unwrap();
    let mut bytes = vec![PROTOCOL_VERSION];
    bytes.extend((body.len() as u32).to_be_bytes());
    bytes.append(&mut body);
    let err = decode(&bytes, &SMALL).unwrap_err();
    assert_eq!(err.to_string(), "malformed frame body: 65 items where at most 64 are allowed");
}

#[test]
fn truncated_stream_is_reported() {
    let bytes = encode(&request(vec![]), &SMALL).unwrap();
    let err = feed(&bytes[..bytes.len() - 1], &[3], SMALL).unwrap_err();
    assert_eq!(err, ProtocolError::Truncated { have: bytes.len() - 1 });
}
