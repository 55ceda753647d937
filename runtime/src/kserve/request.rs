//! Inference requests as KServe v2 clients send them: JSON tensors, or the binary tensor
//! data extension that KServe's and Triton's clients use by default (the body's first
//! `Inference-Header-Content-Length` bytes are the JSON; each input with
//! `parameters.binary_data_size` takes that many raw bytes from what follows, in order).
//! The request's `outputs` list picks the outputs and how each is sent.

use serde_json::Value;

use super::tensor::{Numbers, TensorFields, decode_tensor};
use crate::bounded::{self, Members};
use crate::protocol::{MAX_DIMS, MAX_TENSORS};
use crate::tensor::Tensor;

/// The binary tensor data extension's header: how many bytes of the body are JSON.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// Reads the value of `Inference-Header-Content-Length`, if the request sent one.
pub fn json_length(value: Option<&[u8]>) -> Result<Option<usize>, String> {
    let Some(v) = value else { return Ok(None) };
    let n = std::str::from_utf8(v).ok().and_then(|v| v.trim().parse::<usize>().ok());
    n.map(Some).ok_or_else(|| {
        format!("{HEADER_LENGTH}: expected a byte count, got {:?}", String::from_utf8_lossy(v))
    })
}

/// A parsed inference request.
#[derive(Debug)]
pub struct InferRequest {
    /// The client's request id, echoed back.
    pub id: Option<String>,
    /// Named input tensors.
    pub inputs: Vec<(String, Tensor)>,
    /// String-valued parameters, for the plugin (the binary extension's are not passed on).
    pub parameters: Vec<(String, String)>,
    /// Which outputs to return, and how.
    pub outputs: OutputChoice,
}

/// The outputs a request asked for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OutputChoice {
    /// By name, each as binary data or not, in the order asked; empty: every output.
    pub requested: Vec<(String, bool)>,
    /// Whether outputs not named (all of them, when none is) go as binary data.
    pub binary: bool,
}

/// Parses a KServe v2 inference request; errors name the offending field. `json_length`
/// is the binary extension's `Inference-Header-Content-Length`: the body's first bytes are
/// the JSON, the rest the inputs' raw data.
///
/// This runs before admission, so what it holds stays proportional to the body: a typed
/// path reads each tensor's `data` straight into a flat list of numbers, every other field
/// into its KServe type with bounded counts ([`MAX_TENSORS`] inputs and outputs,
/// [`MAX_DIMS`] dimensions, [`MAX_PARAMETERS`] parameters), and skips members it does not
/// know without holding them. A small body the typed path refuses is parsed again as a
/// `serde_json::Value`, which finds the offending field for the error message; a larger one
/// is refused with the typed parser's message, never expanded into a `Value` tree.
pub fn parse_request(body: &[u8], json_length: Option<usize>) -> Result<InferRequest, String> {
    let (json, binary) = match json_length {
        Some(n) if n > body.len() => {
            return Err(format!("{HEADER_LENGTH}: {n} bytes, but the body has only {}", body.len()));
        }
        Some(n) => body.split_at(n),
        None => (body, &[][..]),
    };
    let not_json = |e: &dyn std::fmt::Display| {
        let hint = if json_length.is_none() && json.contains(&0) {
            format!(" (binary data? then send the JSON's length in {HEADER_LENGTH})")
        } else {
            String::new()
        };
        format!("body is not valid JSON: {e}{hint}")
    };
    // JSON is UTF-8. The typed path skips the members it does not read without checking
    // their strings, so the whole text is checked here: both paths then accept the same bodies.
    let json = std::str::from_utf8(json).map_err(|e| not_json(&e))?;
    let typed_error = match serde_json::from_str::<WireRequest>(json) {
        Ok(wire) => return wire.build(binary),
        Err(e) => e,
    };
    if json.len() > VALUE_PATH_MAX_BYTES {
        return Err(match typed_error.classify() {
            serde_json::error::Category::Data => format!("body: {typed_error}"),
            _ => not_json(&typed_error),
        });
    }
    let value: Value = serde_json::from_str(json).map_err(|e| not_json(&e))?;
    let obj = value.as_object().ok_or("body: expected a JSON object")?;
    let inputs = obj.get("inputs").ok_or("inputs: missing")?;
    let inputs = inputs.as_array().ok_or("inputs: expected an array of tensors")?;
    let tensors = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let t = t.as_object().ok_or_else(|| format!("inputs[{i}]: expected an object"))?;
            Ok((TensorFields::from_object(t), t.get("parameters")))
        })
        .collect::<Result<Vec<_>, String>>()?;
    build_request(obj.get("id"), tensors.into_iter(), obj.get("parameters"), obj.get("outputs"), binary)
}

/// The largest JSON text a refused request is parsed again as a `serde_json::Value` for a
/// better message: a `Value` tree can take tens of times its text in memory.
pub const VALUE_PATH_MAX_BYTES: usize = 64 << 10;

/// The most request-level parameters a request may carry.
pub const MAX_PARAMETERS: usize = 64;

/// A request as the typed path reads it: KServe's types, bounded counts, nothing unknown kept.
#[derive(serde::Deserialize)]
struct WireRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(deserialize_with = "bounded::vec::<_, _, MAX_TENSORS>")]
    inputs: Vec<WireTensor>,
    #[serde(default, deserialize_with = "bounded::optional::<_, _, MAX_PARAMETERS>")]
    parameters: Option<Members<Scalar>>,
    #[serde(default, deserialize_with = "bounded::optional::<_, _, MAX_TENSORS>")]
    outputs: Option<Vec<WireOutput>>,
}

#[derive(serde::Deserialize)]
struct WireTensor {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "bounded::optional::<_, _, MAX_DIMS>")]
    shape: Option<Vec<u64>>,
    #[serde(default)]
    datatype: Option<String>,
    #[serde(default)]
    data: Option<Numbers>,
    #[serde(default)]
    parameters: Option<WireTensorParameters>,
}

/// The one input parameter the host reads; others are skipped.
#[derive(serde::Deserialize)]
struct WireTensorParameters {
    #[serde(default)]
    binary_data_size: Option<u64>,
}

#[derive(serde::Deserialize)]
struct WireOutput {
    name: String,
    #[serde(default)]
    parameters: Option<WireOutputParameters>,
}

/// The one output parameter the host reads; others are skipped.
#[derive(serde::Deserialize)]
struct WireOutputParameters {
    #[serde(default)]
    binary_data: Option<bool>,
}

/// A parameter's value: KServe parameters are booleans, numbers or strings.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Scalar {
    Bool(bool),
    Number(serde_json::Number),
    String(String),
}

impl WireRequest {
    /// The request, checked by the same code as the `Value` path; the small fields become
    /// `Value`s again for it (their sizes are bounded by now), the numbers are moved.
    fn build(self, binary: &[u8]) -> Result<InferRequest, String> {
        let small = |t: WireTensor| {
            let fields = SmallFields {
                name: t.name.map(Value::String),
                shape: t.shape.map(|s| Value::Array(s.into_iter().map(Value::from).collect())),
                datatype: t.datatype.map(Value::String),
                parameters: t.parameters.map(|p| {
                    let size = p.binary_data_size.map_or(Value::Null, Value::from);
                    serde_json::json!({ "binary_data_size": size })
                }),
            };
            (fields, t.data)
        };
        let tensors: Vec<_> = self.inputs.into_iter().map(small).collect();
        let parameters = self.parameters.map(|Members(p)| {
            Value::Object(
                p.into_iter()
                    .map(|(k, v)| {
                        let v = match v {
                            Scalar::Bool(b) => Value::Bool(b),
                            Scalar::Number(n) => Value::Number(n),
                            Scalar::String(s) => Value::String(s),
                        };
                        (k, v)
                    })
                    .collect(),
            )
        });
        let outputs = self.outputs.map(|o| {
            Value::Array(
                o.into_iter()
                    .map(|o| {
                        let binary =
                            o.parameters.and_then(|p| p.binary_data).map_or(Value::Null, Value::Bool);
                        serde_json::json!({ "name": o.name, "parameters": { "binary_data": binary } })
                    })
                    .collect(),
            )
        });
        let id = self.id.map(Value::String);
        let mut tensors = tensors;
        let fields = tensors.iter_mut().map(|(f, data)| {
            let fields = TensorFields {
                name: f.name.as_ref(),
                shape: f.shape.as_ref(),
                datatype: f.datatype.as_ref(),
                data: data.take(),
                binary: None,
            };
            (fields, f.parameters.as_ref())
        });
        build_request(id.as_ref(), fields, parameters.as_ref(), outputs.as_ref(), binary)
    }
}

/// A typed tensor's small fields as `Value`s, for the checks both paths share.
struct SmallFields {
    name: Option<Value>,
    shape: Option<Value>,
    datatype: Option<Value>,
    parameters: Option<Value>,
}

/// The request-level parameter asking for every output as binary data.
const BINARY_OUTPUT: &str = "binary_data_output";

fn build_request<'a>(
    id: Option<&Value>,
    inputs: impl ExactSizeIterator<Item = (TensorFields<'a>, Option<&'a Value>)>,
    parameters: Option<&Value>,
    outputs: Option<&Value>,
    binary: &'a [u8],
) -> Result<InferRequest, String> {
    let id = match id {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("id: expected a string".into()),
    };
    if inputs.len() == 0 {
        return Err("inputs: expected at least one tensor".into());
    }
    if inputs.len() > MAX_TENSORS {
        return Err(format!("inputs: {} tensors, at most {MAX_TENSORS} entries", inputs.len()));
    }
    let mut rest = binary;
    let mut tensors = Vec::with_capacity(inputs.len());
    for (i, (mut t, params)) in inputs.enumerate() {
        if let Some(size) = binary_data_size(i, params)? {
            if size > rest.len() {
                let hint = if binary.is_empty() {
                    format!(" (send the JSON's length in {HEADER_LENGTH}, then the data)")
                } else {
                    String::new()
                };
                return Err(format!(
                    "inputs[{i}].parameters.binary_data_size: {size} bytes, but {} are left after the JSON{hint}",
                    rest.len()
                ));
            }
            let (mine, after) = rest.split_at(size);
            t.binary = Some(mine);
            rest = after;
        }
        tensors.push(decode_tensor("inputs", i, t)?);
    }
    if !rest.is_empty() {
        return Err(format!(
            "body: {} bytes after the JSON are no input's binary data (inputs' binary_data_size add up to {})",
            rest.len(),
            binary.len() - rest.len()
        ));
    }
    let binary_default = match parameters.and_then(|p| p.get(BINARY_OUTPUT)) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(format!("parameters.{BINARY_OUTPUT}: expected true or false")),
    };
    let parameters = match parameters {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(m)) if m.len() > MAX_PARAMETERS => {
            return Err(format!("parameters: {} members, at most {MAX_PARAMETERS} entries", m.len()));
        }
        Some(Value::Object(m)) => m
            .iter()
            .filter(|(k, _)| k.as_str() != BINARY_OUTPUT)
            .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
            .collect(),
        Some(_) => return Err("parameters: expected an object".into()),
    };
    let outputs = output_choice(outputs, binary_default)?;
    Ok(InferRequest { id, inputs: tensors, parameters, outputs })
}

/// An input's `parameters.binary_data_size`, if it has one.
fn binary_data_size(i: usize, parameters: Option<&Value>) -> Result<Option<usize>, String> {
    let size = match parameters {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(p)) => p.get("binary_data_size"),
        Some(_) => return Err(format!("inputs[{i}].parameters: expected an object")),
    };
    match size {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().and_then(|n| usize::try_from(n).ok()).map(Some).ok_or_else(|| {
            format!("inputs[{i}].parameters.binary_data_size: expected a byte count, got {v}")
        }),
    }
}

/// The request's `outputs`: names, and whether each goes as binary data.
fn output_choice(outputs: Option<&Value>, binary: bool) -> Result<OutputChoice, String> {
    let requested = match outputs {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.len() > MAX_TENSORS => {
            return Err(format!("outputs: {} asked for, at most {MAX_TENSORS} entries", items.len()));
        }
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let name = o
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("outputs[{i}].name: expected a string"))?;
                let as_binary = match o.get("parameters").and_then(|p| p.get("binary_data")) {
                    None | Some(Value::Null) => binary,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => {
                        return Err(format!("outputs[{i}].parameters.binary_data: expected true or false"));
                    }
                };
                Ok((name.to_owned(), as_binary))
            })
            .collect::<Result<_, String>>()?,
        Some(_) => return Err("outputs: expected an array of {\"name\": ...} objects".into()),
    };
    Ok(OutputChoice { requested, binary })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kserve::tensor::tensor_values;
    use serde_json::json;

    #[test]
    fn nested_and_flat_data_parse_the_same() {
        let flat = br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"UINT8","data":[1,2,3,4]}]}"#;
        let nested = br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"UINT8","data":[[1,2],[3,4]]}]}"#;
        let a = parse_request(flat, None).unwrap();
        let b = parse_request(nested, None).unwrap();
        assert_eq!(a.inputs, b.inputs);
        assert_eq!(a.inputs[0].1.data(), &[1, 2, 3, 4]);
    }

    #[test]
    fn the_typed_path_and_the_value_path_agree() {
        let bodies: [&[u8]; 4] = [
            br#"{"id":"a","inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,-2.5],[3e2,4]]}],"parameters":{"k":"v","n":3}}"#,
            br#"{"inputs":[{"name":"x","shape":[3],"datatype":"INT64","data":[-9223372036854775808,0,9223372036854775807]}]}"#,
            br#"{"inputs":[{"name":"x","shape":[2],"datatype":"INT8","data":[-128,127]},{"name":"y","shape":[1],"datatype":"INT32","data":[7],"parameters":{}}]}"#,
            br#"{"inputs":[{"name":"x","shape":[1],"datatype":"UINT8","data":[255]}],"outputs":[{"name":"p"}]}"#,
        ];
        for body in bodies {
            let typed = parse_request(body, None).unwrap();
            // The Value path, forced by a body the typed path refuses (a duplicate key).
            let text = std::str::from_utf8(body).unwrap();
            let forced = format!("{{\"inputs\": 1, {}", &text[1..]);
            assert!(serde_json::from_str::<WireRequest>(&forced).is_err());
            let reparsed = parse_request(forced.as_bytes(), None).unwrap();
            assert_eq!(
                (typed.id, typed.inputs, typed.parameters),
                (reparsed.id, reparsed.inputs, reparsed.parameters)
            );
        }
    }

    #[test]
    fn data_problems_are_reported_not_fatal_to_the_parse() {
        let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
        let cases = [
            (r#"["a",1]"#.to_owned(), "expected numbers, found \"a\""),
            ("[1,{}]".to_owned(), "found an object"),
            ("[1,null]".to_owned(), "found null"),
            (deep, "nested too deeply"),
            ("[1.5]".to_owned(), "1.5 is not a valid UINT8"),
        ];
        for (data, expected) in cases {
            let body =
                format!(r#"{{"inputs":[{{"name":"x","shape":[1],"datatype":"UINT8","data":{data}}}]}}"#);
            let e = parse_request(body.as_bytes(), None).unwrap_err();
            assert!(e.starts_with("inputs[0].data") && e.contains(expected), "{data}: {e}");
        }
    }

    proptest::proptest! {
        /// Whatever the bytes, the parser answers with a request or an error, never a panic.
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = parse_request(&body, None);
        }

        /// Well-formed requests come back with exactly the values sent.
        #[test]
        fn well_formed_requests_round_trip(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..64)) {
            let body = json!({ "inputs": [{ "name": "x", "shape": [data.len()], "datatype": "UINT8", "data": data }] });
            let parsed = parse_request(&serde_json::to_vec(&body).unwrap(), None).unwrap();
            proptest::prop_assert_eq!(parsed.inputs[0].1.data(), &data[..]);
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases: [(&[u8], &str); 7] = [
            (
                br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1e39]}]}"#,
                "data[0]: 1000000000000000000000000000000000000000 is out of FP32 range",
            ),
            (b"{", "not valid JSON"),
            (br#"{"inputs":{}}"#, "inputs:"),
            (br#"{"inputs":[{"name":"x","shape":[2],"datatype":"UINT8","data":[1]}]}"#, "inputs[0].data"),
            (br#"{"inputs":[{"name":"x","shape":[1],"datatype":"BF16","data":[1]}]}"#, "inputs[0].datatype"),
            (br#"{"inputs":[{"name":"x","shape":[-1],"datatype":"UINT8","data":[1]}]}"#, "inputs[0].shape"),
            (
                br#"{"inputs":[{"name":"x","shape":[1],"datatype":"UINT8","data":[300]}]}"#,
                "inputs[0].data[0]",
            ),
        ];
        for (body, field) in cases {
            let e = parse_request(body, None).unwrap_err();
            assert!(e.contains(field), "{e:?} should name {field}");
        }
    }

    /// A JSON header, then the raw bytes of the inputs that say how many they take.
    fn binary_body(json: &Value, raw: &[u8]) -> (Vec<u8>, usize) {
        let mut body = serde_json::to_vec(json).unwrap();
        let n = body.len();
        body.extend_from_slice(raw);
        (body, n)
    }

    #[test]
    fn binary_inputs_are_read_after_the_json_in_order() {
        let floats: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let json = json!({
            "inputs": [
                { "name": "a", "shape": [2], "datatype": "FP32", "parameters": { "binary_data_size": 8 } },
                { "name": "b", "shape": [3], "datatype": "UINT8", "data": [7, 8, 9] },
                { "name": "c", "shape": [1, 3], "datatype": "INT8", "parameters": { "binary_data_size": 3 } },
            ],
            "parameters": { "binary_data_output": true, "k": "v" },
            "outputs": [{ "name": "p" }, { "name": "q", "parameters": { "binary_data": false } }],
        });
        let raw = [&floats[..], &[0xff, 0x01, 0x80]].concat();
        let (body, n) = binary_body(&json, &raw);
        for body in [body.clone(), [&body[..n], b" ", &body[n..]].concat()] {
            let r = parse_request(&body, Some(body.len() - raw.len())).unwrap();
            assert_eq!(r.inputs[0].1, Tensor::from_f32(vec![2], &[1.5, -2.0]).unwrap());
            assert_eq!(r.inputs[1].1.data(), &[7, 8, 9]);
            assert_eq!((r.inputs[2].1.shape(), r.inputs[2].1.data()), (&[1, 3][..], &[0xff, 0x01, 0x80][..]));
            // The extension's own parameter is not the plugin's.
            assert_eq!(r.parameters, vec![("k".to_string(), "v".to_string())]);
            let expected = vec![("p".to_string(), true), ("q".to_string(), false)];
            assert_eq!(r.outputs, OutputChoice { requested: expected, binary: true });
        }
    }

    #[test]
    fn binary_framing_errors_name_what_is_wrong() {
        let tensor = |size: Value| json!({ "inputs": [{ "name": "a", "shape": [2], "datatype": "FP32", "parameters": { "binary_data_size": size } }] });
        let cases: [(Vec<u8>, Option<usize>, &str); 7] = [
            (binary_body(&tensor(json!(8)), &[0; 4]).0, Some(binary_body(&tensor(json!(8)), &[]).1), "but 4 are left"),
            (binary_body(&tensor(json!(4)), &[0; 4]).0, Some(binary_body(&tensor(json!(4)), &[]).1), "needs 8"),
            (binary_body(&tensor(json!(8)), &[0; 12]).0, Some(binary_body(&tensor(json!(8)), &[]).1), "4 bytes after the JSON"),
            (binary_body(&tensor(json!(-1)), &[]).0, None, "binary_data_size: expected a byte count"),
            (binary_body(&tensor(json!(8)), &[]).0, None, "Inference-Header-Content-Length"),
            (b"{}".to_vec(), Some(3), "the body has only 2"),
            (
                serde_json::to_vec(&json!({ "inputs": [{ "name": "a", "shape": [1], "datatype": "UINT8", "data": [1], "parameters": { "binary_data_size": 1 } }] })).unwrap()
                    .into_iter().chain([1]).collect(),
                None,
                "body is not valid JSON",
            ),
        ];
        for (body, n, expected) in cases {
            let e = parse_request(&body, n).unwrap_err();
            assert!(e.to_lowercase().contains(&expected.to_lowercase()), "{e:?} should say {expected:?}");
        }
        let both = json!({ "inputs": [{ "name": "a", "shape": [1], "datatype": "UINT8", "data": [1], "parameters": { "binary_data_size": 1 } }] });
        let (body, n) = binary_body(&both, &[1]);
        assert!(
            parse_request(&body, Some(n))
                .unwrap_err()
                .contains("inputs[0].data: given as well as binary data")
        );
        let bad_choice = json!({ "inputs": [{ "name": "a", "shape": [1], "datatype": "UINT8", "data": [1] }], "outputs": [{ "name": 3 }] });
        assert!(
            parse_request(&serde_json::to_vec(&bad_choice).unwrap(), None)
                .unwrap_err()
                .contains("outputs[0].name")
        );
    }

    proptest::proptest! {
        /// Whatever the bytes and the header length, an answer or an error, never a panic.
        #[test]
        fn arbitrary_binary_bodies_never_panic(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
            n in 0usize..300,
        ) {
            let _ = parse_request(&body, Some(n));
        }
    }

    /// A body of about 2 MiB whose request-level parameters are `n` tiny members.
    fn with_parameters(n: usize) -> Vec<u8> {
        let members: Vec<String> = (0..n).map(|i| format!("\"p{i}\":0")).collect();
        format!(
            r#"{{"inputs":[{{"name":"x","shape":[1],"datatype":"UINT8","data":[1]}}],"parameters":{{{}}}}}"#,
            members.join(",")
        )
        .into_bytes()
    }

    /// Before admission, a body must not become a structure many times its size: a few
    /// bytes per parameter, output or dimension are refused past their caps instead of
    /// being held, and a large refused body is not parsed again as a `Value` tree.
    #[test]
    fn what_a_body_may_hold_before_admission_is_bounded() {
        assert!(parse_request(&with_parameters(MAX_PARAMETERS), None).is_ok());
        let big = with_parameters(200_000);
        assert!(big.len() > VALUE_PATH_MAX_BYTES);
        let e = parse_request(&big, None).unwrap_err();
        assert!(e.starts_with("body: invalid length") && e.contains("at most 64 entries"), "{e}");
        // A small body past the cap gets the same refusal from the typed path.
        let e = parse_request(&with_parameters(MAX_PARAMETERS + 1), None).unwrap_err();
        assert!(e.contains("at most 64 entries"), "{e}");

        let outputs: Vec<String> = (0..=MAX_TENSORS).map(|i| format!(r#"{{"name":"o{i}"}}"#)).collect();
        let body = format!(
            r#"{{"inputs":[{{"name":"x","shape":[1],"datatype":"UINT8","data":[1]}}],"outputs":[{}]}}"#,
            outputs.join(",")
        );
        let e = parse_request(body.as_bytes(), None).unwrap_err();
        assert!(e.contains("at most 64 entries"), "{e}");

        // Members the node does not read are skipped, however large, without being held.
        let unknown = format!(
            r#"{{"inputs":[{{"name":"x","shape":[1],"datatype":"UINT8","data":[1]}}],"extra":[{}0]}}"#,
            "[],".repeat(500_000)
        );
        assert_eq!(parse_request(unknown.as_bytes(), None).unwrap().inputs.len(), 1);
        // A large body that is wrong is refused with the typed parser's message.
        let wrong = unknown.replace(r#""shape":[1]"#, r#""shape":["one"]"#);
        let e = parse_request(wrong.as_bytes(), None).unwrap_err();
        assert!(e.starts_with("body: invalid type: string \"one\""), "{e}");
    }

    /// Found by fuzzing (fuzz/fuzz_targets/kserve_request.rs): the typed path skipped a member
    /// it does not read without checking its string, so a body that is not UTF-8 there was
    /// accepted, while the same body with any other flaw was refused as "not valid JSON".
    #[test]
    fn a_body_that_is_not_utf8_is_refused_wherever_the_bad_bytes_are() {
        let good = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"UINT8","data":[1]}],"other":"a"}"#;
        assert!(parse_request(good, None).is_ok());
        let bad = [&good[..good.len() - 3], b"\xf2\"}"].concat();
        let e = parse_request(&bad, None).unwrap_err();
        assert!(e.starts_with("body is not valid JSON: invalid utf-8"), "{e}");
    }

    #[test]
    fn outputs_round_trip_to_json_numbers() {
        let t = Tensor::from_f32(vec![1, 2], &[0.25, 0.75]).unwrap();
        assert_eq!(tensor_values(&t).unwrap(), vec![json!(0.25), json!(0.75)]);
        let nan = Tensor::from_f32(vec![1], &[f32::NAN]).unwrap();
        assert!(tensor_values(&nan).unwrap_err().contains("element 0 is NaN"));
    }
}
