//! Tensors as they cross every boundary of a node: HTTP, sandbox, backends, the tier wire.
//!
//! A [`Tensor`] is an element type, a shape and little-endian bytes. It is validated when it
//! is built, so every holder can trust that `data.len() == product(shape) * dtype.size()`.

use serde::{Deserialize, Serialize};

/// Element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// Unsigned byte (images, quantised activations).
    U8,
    /// Signed byte (quantised weights).
    I8,
    /// 32-bit signed integer.
    I32,
    /// 64-bit signed integer.
    I64,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::U8 | DType::I8 => 1,
            DType::F32 | DType::I32 => 4,
            DType::I64 => 8,
        }
    }

    /// Lowercase name, as used in configs and error messages (`f32`, `u8`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::U8 => "u8",
            DType::I8 => "i8",
            DType::I32 => "i32",
            DType::I64 => "i64",
        }
    }

    /// The KServe v2 / Open Inference Protocol datatype name (`FP32`, `UINT8`, ...).
    pub fn kserve_name(self) -> &'static str {
        match self {
            DType::F32 => "FP32",
            DType::U8 => "UINT8",
            DType::I8 => "INT8",
            DType::I32 => "INT32",
            DType::I64 => "INT64",
        }
    }

    /// Parses a KServe v2 datatype name.
    pub fn from_kserve_name(name: &str) -> Option<DType> {
        Some(match name {
            "FP32" => DType::F32,
            "UINT8" => DType::U8,
            "INT8" => DType::I8,
            "INT32" => DType::I32,
            "INT64" => DType::I64,
            _ => return None,
        })
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a tensor could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    /// The byte length does not match shape and element type.
    #[error("tensor of {dtype} {shape:?} needs {expected} bytes, got {actual}")]
    Length {
        /// Element type.
        dtype: DType,
        /// Declared shape.
        shape: Vec<usize>,
        /// Bytes the shape needs.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// The shape's element count overflows `usize`.
    #[error("tensor shape {0:?} is too large")]
    TooLarge(Vec<usize>),
    /// A typed view was asked of a tensor of another element type.
    #[error("expected a {expected} tensor, got {actual}")]
    DType {
        /// What the caller wanted.
        expected: DType,
        /// What the tensor holds.
        actual: DType,
    },
}

/// An element type, a shape and the elements as little-endian bytes.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({} {:?}, {} bytes)", self.dtype, self.shape, self.data.len())
    }
}

/// Number of elements of `shape`, or `None` on overflow.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl Tensor {
    /// Builds a tensor, checking that `data` holds exactly `product(shape)` elements.
    pub fn new(dtype: DType, shape: Vec<usize>, data: Vec<u8>) -> Result<Tensor, TensorError> {
        let expected = element_count(&shape)
            .and_then(|n| n.checked_mul(dtype.size()))
            .ok_or_else(|| TensorError::TooLarge(shape.clone()))?;
        if expected != data.len() {
            return Err(TensorError::Length { dtype, shape, expected, actual: data.len() });
        }
        Ok(Tensor { dtype, shape, data })
    }

    /// Builds an f32 tensor from values.
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Result<Tensor, TensorError> {
        Tensor::new(DType::F32, shape, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    /// Builds a u8 tensor from bytes.
    pub fn from_u8(shape: Vec<usize>, values: Vec<u8>) -> Result<Tensor, TensorError> {
        Tensor::new(DType::U8, shape, values)
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Shape, outermost dimension first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Raw little-endian element bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Takes the bytes out.
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len() / self.dtype.size()
    }

    /// True if the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The elements of an f32 tensor.
    pub fn to_f32(&self) -> Result<Vec<f32>, TensorError> {
        self.expect(DType::F32)?;
        Ok(self.data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    /// Fails unless the tensor holds `dtype`.
    pub fn expect(&self, dtype: DType) -> Result<(), TensorError> {
        if self.dtype == dtype {
            Ok(())
        } else {
            Err(TensorError::DType { expected: dtype, actual: self.dtype })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_is_checked() {
        assert!(Tensor::new(DType::F32, vec![2, 3], vec![0; 24]).is_ok());
        let err = Tensor::new(DType::F32, vec![2, 3], vec![0; 23]).unwrap_err();
        assert_eq!(err.to_string(), "tensor of f32 [2, 3] needs 24 bytes, got 23");
        assert!(matches!(Tensor::new(DType::U8, vec![usize::MAX, 2], vec![]), Err(TensorError::TooLarge(_))));
    }

    #[test]
    fn f32_round_trip() {
        let t = Tensor::from_f32(vec![3], &[1.5, -2.0, 0.25]).unwrap();
        assert_eq!(t.to_f32().unwrap(), vec![1.5, -2.0, 0.25]);
        assert_eq!(t.len(), 3);
        assert!(Tensor::from_u8(vec![1], vec![7]).unwrap().to_f32().is_err());
    }
}
