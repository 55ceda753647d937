//! The KServe v2 request parser of the HTTP front door, binary tensor data extension
//! included: the body and the `Inference-Header-Content-Length` value are both the
//! attacker's.
//!
//! Input: byte 0 picks how the header is sent:
//! - `% 3 == 0`: no header (the whole body is JSON);
//! - `% 3 == 1`: a well-formed header, the next two bytes (little-endian) its value;
//! - `% 3 == 2`: the header's raw value, its length in the next byte, read by
//!   `kserve::json_length` as the front door reads it.
//!
//! The rest is the body. Run it under an allocation cap (`-malloc_limit_mb`,
//! `-rss_limit_mb`; tools/fuzz.sh sets them). Checks, besides never panicking:
//! - heap in use stays within a generous multiple of the body (a gross blow-up, such as
//!   a preallocation from a declared size, fails the input);
//! - an accepted request's tensors are consistent, and there is at least one;
//! - the parser's two paths agree: a JSON body is parsed again with a duplicate `inputs`
//!   key in front, which the typed path refuses and the `serde_json::Value` path reads
//!   (the last key wins), and the outcome must be the same (for bodies small enough for the
//!   `Value` path, `VALUE_PATH_MAX_BYTES`).
#![no_main]

use cascade_fuzz::{check_heap, peak_during, verbose};
use cascade_runtime::kserve::{InferRequest, VALUE_PATH_MAX_BYTES, json_length, parse_request};
use libfuzzer_sys::fuzz_target;

fn summary(r: &InferRequest) -> String {
    let inputs: Vec<_> = r.inputs.iter().map(|(n, t)| (n, t.dtype(), t.shape(), t.data())).collect();
    format!("{:?} {inputs:?} {:?} {:?}", r.id, r.parameters, r.outputs)
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else { return };
    let (length, body) = match mode % 3 {
        0 => (Ok(None), rest),
        1 => match rest {
            [a, b, body @ ..] => (Ok(Some(usize::from(u16::from_le_bytes([*a, *b])))), body),
            _ => return,
        },
        _ => match rest {
            [n, rest @ ..] if rest.len() >= usize::from(*n) => {
                let (value, body) = rest.split_at(usize::from(*n));
                (json_length(Some(value)), body)
            }
            _ => return,
        },
    };
    let Ok(length) = length else { return };

    let (parsed, peak) = peak_during(|| parse_request(body, length));
    check_heap("parsing the request", peak, body.len(), 1 << 20, 256);
    if verbose() {
        eprintln!("{:?}", parsed.as_ref().map(summary));
    }
    if let Ok(r) = &parsed {
        assert!(!r.inputs.is_empty(), "a request with no inputs was accepted");
        for (_, t) in &r.inputs {
            let elements: usize = t.shape().iter().product();
            assert_eq!(t.data().len(), elements * t.dtype().size());
        }
    }

    // The other path: `{"inputs":1,` before the rest of the JSON object.
    let json_end = length.unwrap_or(body.len()).min(body.len());
    let (json, binary) = body.split_at(json_end);
    // Larger bodies the typed path refuses are not parsed again as a `Value`.
    if json.len() + 11 > VALUE_PATH_MAX_BYTES {
        return;
    }
    let Some(open) = json.iter().position(|b| !b.is_ascii_whitespace()) else { return };
    if json[open] != b'{' {
        return;
    }
    let mut forced = b"{\"inputs\":1,".to_vec();
    forced.extend_from_slice(&json[open + 1..]);
    let forced_json_len = forced.len();
    forced.extend_from_slice(binary);
    let again = parse_request(&forced, length.map(|_| forced_json_len));
    match (&parsed, &again) {
        (Ok(a), Ok(b)) => assert_eq!(summary(a), summary(b), "the typed and the Value path disagree"),
        (Ok(a), Err(e)) => panic!("the typed path accepted {} but the Value path says {e}", summary(a)),
        (Err(e), Ok(b)) => panic!("the typed path refused ({e}) what the Value path accepts: {}", summary(b)),
        (Err(_), Err(_)) => {}
    }
});
