//! KServe v2 (Open Inference Protocol) JSON tensors, both ways: the node's front door reads
//! requests with it, the KServe upstream client writes requests and reads answers with it.
//!
//! A tensor is `{"name", "datatype", "shape", "data"}`, `data` flat or nested row-major.
//! Numbers are read straight into a flat list ([`Numbers`]), never into a `serde_json::Value`
//! per element. Every error names the field, such as `inputs[0].data[3]`.
//!
//! With the binary tensor data extension (KServe's and Triton's clients use it by default),
//! a tensor's elements are not in `data` but raw, little-endian and row-major, after the
//! JSON, as [`Tensor::data`] holds them; [`TensorFields::binary`] carries them in.

use serde_json::{Value, json};

use crate::protocol::MAX_DIMS;
use crate::tensor::{DType, Tensor, element_count};

/// One tensor's fields as found in the JSON, still unchecked.
#[derive(Debug, Default)]
pub struct TensorFields<'a> {
    /// `name`.
    pub name: Option<&'a Value>,
    /// `shape`.
    pub shape: Option<&'a Value>,
    /// `datatype`.
    pub datatype: Option<&'a Value>,
    /// `data`, flattened.
    pub data: Option<Numbers>,
    /// The tensor's raw bytes, when they came after the JSON (`parameters.binary_data_size`).
    pub binary: Option<&'a [u8]>,
}

impl<'a> TensorFields<'a> {
    /// The fields of a parsed JSON object.
    pub fn from_object(t: &'a serde_json::Map<String, Value>) -> TensorFields<'a> {
        let data = t.get("data").map(|d| {
            let mut numbers = Numbers::default();
            numbers.flatten_value(d, 0);
            numbers
        });
        TensorFields {
            name: t.get("name"),
            shape: t.get("shape"),
            datatype: t.get("datatype"),
            data,
            binary: None,
        }
    }
}

/// Decodes one tensor of a request's `inputs` or an answer's `outputs` (`section`), the
/// `i`th; every error names the field, such as `inputs[0].shape`.
pub fn decode_tensor(section: &str, i: usize, t: TensorFields<'_>) -> Result<(String, Tensor), String> {
    let f = |field: &str| format!("{section}[{i}].{field}");
    let name = t.name.and_then(Value::as_str).ok_or_else(|| format!("{}: expected a string", f("name")))?;
    let shape = t
        .shape
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{}: expected an array of dimensions", f("shape")))?;
    if shape.len() > MAX_DIMS {
        return Err(format!("{}: {} dimensions, more than {MAX_DIMS}", f("shape"), shape.len()));
    }
    let shape = shape
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| format!("{}: expected non-negative integers", f("shape")))?;
    let datatype = t
        .datatype
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{}: expected a string such as \"UINT8\"", f("datatype")))?;
    let dtype = DType::from_kserve_name(datatype).ok_or_else(|| {
        format!(
            "{}: unknown datatype `{datatype}`; expected FP32, UINT8, INT8, INT32 or INT64",
            f("datatype")
        )
    })?;
    let count = element_count(&shape).ok_or_else(|| format!("{}: too many elements", f("shape")))?;
    if let Some(raw) = t.binary {
        if t.data.is_some() {
            return Err(format!("{}: given as well as binary data; send one or the other", f("data")));
        }
        let expected =
            count.checked_mul(dtype.size()).ok_or_else(|| format!("{}: too many elements", f("shape")))?;
        if raw.len() != expected {
            return Err(format!(
                "{}: {} bytes, but shape {shape:?} of {datatype} needs {expected}",
                f("parameters.binary_data_size"),
                raw.len()
            ));
        }
        let tensor = Tensor::new(dtype, shape, raw.to_vec()).map_err(|e| format!("{section}[{i}]: {e}"))?;
        return Ok((name.to_owned(), tensor));
    }
    let data = t.data.ok_or_else(|| format!("{}: missing", f("data")))?;
    if let Some(problem) = data.problem {
        return Err(format!("{}: {problem}", f("data")));
    }
    if data.values.len() != count {
        return Err(format!(
            "{}: {} values for shape {shape:?} ({count} elements)",
            f("data"),
            data.values.len()
        ));
    }
    let mut bytes = Vec::with_capacity(count * dtype.size());
    for (j, v) in data.values.iter().enumerate() {
        let bad = || format!("{}[{j}]: {v} is not a valid {datatype}", f("data"));
        match dtype {
            DType::F32 => {
                // Beyond f32's range the cast gives infinity, which no answer can carry back.
                let x = v.as_f64() as f32;
                if !x.is_finite() {
                    return Err(format!("{}[{j}]: {v} is out of FP32 range", f("data")));
                }
                bytes.extend_from_slice(&x.to_le_bytes());
            }
            DType::U8 => bytes.push(v.as_u64().and_then(|x| u8::try_from(x).ok()).ok_or_else(bad)?),
            DType::I8 => bytes.extend_from_slice(
                &v.as_i64().and_then(|x| i8::try_from(x).ok()).ok_or_else(bad)?.to_le_bytes(),
            ),
            DType::I32 => bytes.extend_from_slice(
                &v.as_i64().and_then(|x| i32::try_from(x).ok()).ok_or_else(bad)?.to_le_bytes(),
            ),
            DType::I64 => bytes.extend_from_slice(&v.as_i64().ok_or_else(bad)?.to_le_bytes()),
        }
    }
    let tensor = Tensor::new(dtype, shape, bytes).map_err(|e| format!("{section}[{i}]: {e}"))?;
    Ok((name.to_owned(), tensor))
}

/// A tensor's elements as JSON numbers. JSON has no NaN or infinity: such an element is an
/// error naming it.
pub fn tensor_values(t: &Tensor) -> Result<Vec<Value>, String> {
    let d = t.data();
    Ok(match t.dtype() {
        DType::F32 => {
            let mut out = Vec::with_capacity(d.len() / 4);
            for (i, c) in d.chunks_exact(4).enumerate() {
                let x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                let n = serde_json::Number::from_f64(f64::from(x))
                    .ok_or_else(|| format!("element {i} is {x}, which JSON cannot carry"))?;
                out.push(Value::Number(n));
            }
            out
        }
        DType::U8 => d.iter().map(|b| json!(b)).collect(),
        DType::I8 => d.iter().map(|b| json!(*b as i8)).collect(),
        DType::I32 => {
            d.chunks_exact(4).map(|c| json!(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect()
        }
        DType::I64 => d
            .chunks_exact(8)
            .map(|c| json!(i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])))
            .collect(),
    })
}

/// Deepest nesting of a tensor's `data` arrays accepted.
pub const MAX_DATA_DEPTH: usize = 32;

/// A JSON number as the parser saw it: integers stay exact.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    /// A non-negative integer.
    U(u64),
    /// A negative integer.
    I(i64),
    /// A number with a fraction or an exponent.
    F(f64),
}

impl Num {
    fn as_f64(self) -> f64 {
        match self {
            Num::U(u) => u as f64,
            Num::I(i) => i as f64,
            Num::F(f) => f,
        }
    }

    /// Integers only, as `serde_json::Value::as_u64` reads them.
    fn as_u64(self) -> Option<u64> {
        match self {
            Num::U(u) => Some(u),
            Num::I(i) => u64::try_from(i).ok(),
            Num::F(_) => None,
        }
    }

    fn as_i64(self) -> Option<i64> {
        match self {
            Num::U(u) => i64::try_from(u).ok(),
            Num::I(i) => Some(i),
            Num::F(_) => None,
        }
    }
}

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Num::U(u) => write!(f, "{u}"),
            Num::I(i) => write!(f, "{i}"),
            Num::F(x) => write!(f, "{x}"),
        }
    }
}

/// A tensor's `data`, flat or nested (row-major), flattened; the first problem found (a
/// non-number, too deep a nesting) is kept for the error message instead of failing the
/// parse, so the message can name the field.
#[derive(Debug, Clone, Default)]
pub struct Numbers {
    /// The numbers, row-major.
    pub values: Vec<Num>,
    /// The first thing that was not a number, if any.
    pub problem: Option<String>,
}

impl Numbers {
    fn note(&mut self, problem: impl FnOnce() -> String) {
        if self.problem.is_none() {
            self.problem = Some(problem());
        }
    }

    /// Appends the numbers of an already parsed JSON value.
    pub fn flatten_value(&mut self, v: &Value, depth: usize) {
        match v {
            Value::Array(items) if depth < MAX_DATA_DEPTH => {
                items.iter().for_each(|x| self.flatten_value(x, depth + 1))
            }
            Value::Array(_) => self.note(|| "nested too deeply".into()),
            Value::Number(n) => {
                let num = n
                    .as_u64()
                    .map(Num::U)
                    .or_else(|| n.as_i64().map(Num::I))
                    .or_else(|| n.as_f64().map(Num::F));
                match num {
                    Some(num) => self.values.push(num),
                    None => self.note(|| format!("{n} is not a number this node reads")),
                }
            }
            other => self.note(|| format!("expected numbers, found {other}")),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Numbers {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut numbers = Numbers::default();
        serde::de::DeserializeSeed::deserialize(Flatten { out: &mut numbers, depth: 0 }, deserializer)?;
        Ok(numbers)
    }
}

/// Appends the numbers of one JSON value (recursing into arrays) to `out`.
struct Flatten<'a> {
    out: &'a mut Numbers,
    depth: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("numbers, or arrays of numbers")
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.out.values.push(Num::U(v));
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.out.values.push(Num::I(v));
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.out.values.push(Num::F(v));
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth >= MAX_DATA_DEPTH {
            self.out.note(|| "nested too deeply".into());
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            return Ok(());
        }
        let (out, depth) = (self.out, self.depth + 1);
        while seq.next_element_seed(Flatten { out: &mut *out, depth })?.is_some() {}
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.out.note(|| "expected numbers, found an object".into());
        while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.out.note(|| format!("expected numbers, found {}", Value::String(v.to_owned())));
        Ok(())
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.out.note(|| format!("expected numbers, found {v}"));
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.out.note(|| "expected numbers, found null".into());
        Ok(())
    }
}
