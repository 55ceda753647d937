//! An answer as a KServe v2 inference response: outputs as JSON numbers or as binary data
//! after the JSON (as the request's [`OutputChoice`] asks), and `parameters` saying how the
//! answer was produced (the node's reply gives them: `Reply::parameters`).

use serde_json::{Map, Value, json};

use super::request::OutputChoice;
use super::tensor::tensor_values;
use crate::tensor::Tensor;

/// An encoded response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedReply {
    /// The bytes to send.
    pub body: Vec<u8>,
    /// With binary outputs, how many leading bytes are JSON (send it as
    /// `Inference-Header-Content-Length`, content type `application/octet-stream`); `None`
    /// when the body is all JSON.
    pub json_length: Option<usize>,
}

/// The answer, as JSON or, when any output goes as binary data, as JSON followed by the
/// raw bytes. An error is a status and a message.
pub fn encode_reply(
    route: &str,
    id: Option<String>,
    choice: &OutputChoice,
    outputs: &[(String, Tensor)],
    parameters: Map<String, Value>,
) -> Result<EncodedReply, (u16, String)> {
    let selected: Vec<(&str, &Tensor, bool)> = if choice.requested.is_empty() {
        outputs.iter().map(|(n, t)| (n.as_str(), t, choice.binary)).collect()
    } else {
        let mut selected = Vec::with_capacity(choice.requested.len());
        for (i, (name, binary)) in choice.requested.iter().enumerate() {
            let Some((n, t)) = outputs.iter().find(|(n, _)| n == name) else {
                let known: Vec<&str> = outputs.iter().map(|(n, _)| n.as_str()).collect();
                return Err((
                    400,
                    format!(
                        "outputs[{i}].name: route `{route}` has no output `{name}`; it answers with {known:?}"
                    ),
                ));
            };
            selected.push((n.as_str(), t, *binary));
        }
        selected
    };
    let encoded = selected
        .iter()
        .map(|&(name, t, binary)| {
            let mut out = json!({ "name": name, "datatype": t.dtype().kserve_name(), "shape": t.shape() });
            if binary {
                out["parameters"] = json!({ "binary_data_size": t.data().len() });
            } else {
                let data = tensor_values(t).map_err(|why| {
                    (500, format!("route `{route}`: output `{name}` cannot be sent as JSON: {why}"))
                })?;
                out["data"] = Value::Array(data);
            }
            Ok(out)
        })
        .collect::<Result<Vec<Value>, (u16, String)>>()?;
    let mut body = json!({ "model_name": route, "outputs": encoded, "parameters": parameters });
    if let (Some(id), Some(obj)) = (id, body.as_object_mut()) {
        obj.insert("id".into(), json!(id));
    }
    let mut bytes = serde_json::to_vec(&body).map_err(|e| (500, format!("encoding the answer: {e}")))?;
    if !selected.iter().any(|&(_, _, binary)| binary) {
        return Ok(EncodedReply { body: bytes, json_length: None });
    }
    let json_length = bytes.len();
    for &(_, t, _) in selected.iter().filter(|&&(_, _, binary)| binary) {
        bytes.extend_from_slice(t.data());
    }
    Ok(EncodedReply { body: bytes, json_length: Some(json_length) })
}
