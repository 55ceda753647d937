//! What a KServe v2 upstream's HTTP response turns into: an escalation answer or an error.
//! The server may be hostile or broken; the answer it yields is relayed to downstream
//! nodes over the tier protocol.
//!
//! Input: bytes 0 and 1 pick the status (mostly 200, otherwise any code below 16384), the
//! rest is the body. The escalation asked is id 42 of model `m`.
//!
//! Checks, besides never panicking:
//! - an answer is for the id asked, has 1 to `MAX_TENSORS` outputs, a confidence in [0, 1]
//!   and a label that indexes the logits, and encodes as a tier protocol frame;
//! - a non-2xx status is an HTTP status error whose message is short, and a 2xx never is;
//! - heap in use stays within a generous multiple of the body.
#![no_main]

use cascade_fuzz::{check_heap, peak_during, verbose};
use cascade_runtime::fuzzing::kserve_response;
use cascade_runtime::protocol::{Frame, MAX_TENSORS, ProtocolLimits, encode};
use cascade_runtime::upstream::KserveError;
use libfuzzer_sys::fuzz_target;

const ID: u64 = 42;
const MODEL: &str = "m";

fuzz_target!(|data: &[u8]| {
    let [hi, lo, body @ ..] = data else { return };
    let status = if hi & 0xc0 != 0 { 200 } else { u16::from_be_bytes([*hi, *lo]) };
    let (result, peak) = peak_during(|| kserve_response(status, body, ID, MODEL));
    check_heap("reading the response", peak, body.len(), 1 << 20, 256);
    if verbose() {
        eprintln!("HTTP {status}: {result:?}");
    }
    match result {
        Ok(answer) => {
            assert!((200..300).contains(&status));
            assert_eq!(answer.id, ID);
            assert!((1..=MAX_TENSORS).contains(&answer.outputs.len()));
            assert!((0.0..=1.0).contains(&answer.confidence), "confidence {}", answer.confidence);
            if let Some(label) = answer.label {
                let [only] = &answer.outputs[..] else { panic!("a label without a single logits output") };
                assert!((label as usize) < only.tensor.shape()[1], "label {label} of {:?}", only.tensor);
            }
            assert!(answer.model_version.starts_with(MODEL));
            if let Err(e) = encode(&Frame::Answer(answer), &ProtocolLimits::default()) {
                panic!("an accepted answer cannot be relayed downstream: {e}");
            }
        }
        Err(KserveError::Status { status: s, message }) => {
            assert_eq!(s, status);
            assert!(!(200..300).contains(&status), "a 2xx became a status error");
            assert!(message.chars().count() <= 301, "a message of {} chars", message.chars().count());
        }
        Err(KserveError::Response(_)) => assert!((200..300).contains(&status)),
        Err(other) => panic!("reading a response gave {other:?}"),
    }
});
