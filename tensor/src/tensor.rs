//! Tensors as they cross every boundary of a node: HTTP, sandbox, backends, the tier wire.
//!
//! A [`Tensor`] is an element type, a shape and little-endian bytes. It is validated when it
//! is built, so every holder can trust that `data.len() == product(shape) * dtype.size()`.

use std::fmt;

use crate::dtype::DType;

/// Why a tensor could not be built or viewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TensorError {
    /// The byte length does not match shape and element type.
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
    TooLarge(Vec<usize>),
    /// A typed view was asked of a tensor of another element type.
    DType {
        /// What the caller wanted.
        expected: DType,
        /// What the tensor holds.
        actual: DType,
    },
    /// A reshape to a shape with a different element count.
    Reshape {
        /// Elements in the tensor.
        from: usize,
        /// Elements the new shape needs.
        to: usize,
    },
}

impl fmt::Display for TensorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TensorError::Length { dtype, shape, expected, actual } => {
                write!(f, "tensor of {dtype} {shape:?} needs {expected} bytes, got {actual}")
            }
            TensorError::TooLarge(shape) => write!(f, "tensor shape {shape:?} is too large"),
            TensorError::DType { expected, actual } => {
                write!(f, "expected a {expected} tensor, got {actual}")
            }
            TensorError::Reshape { from, to } => {
                write!(f, "cannot reshape {from} elements into a shape of {to}")
            }
        }
    }
}

impl std::error::Error for TensorError {}

/// Number of elements of `shape`, or `None` on overflow.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// An element type, a shape and the elements as little-endian bytes.
#[derive(Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({} {:?}, {} bytes)", self.dtype, self.shape, self.data.len())
    }
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

    /// Builds a tensor without checking its length: only for test plugins that send the
    /// host malformed tensors on purpose (the host checks every tensor it is given).
    #[cfg(feature = "unchecked")]
    pub fn from_parts_unchecked(dtype: DType, shape: Vec<usize>, data: Vec<u8>) -> Tensor {
        Tensor { dtype, shape, data }
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

    /// Takes the shape and bytes out.
    pub fn into_parts(self) -> (DType, Vec<usize>, Vec<u8>) {
        (self.dtype, self.shape, self.data)
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

    /// The same elements under another shape with the same element count.
    pub fn reshape(self, shape: Vec<usize>) -> Result<Tensor, TensorError> {
        let to = element_count(&shape).ok_or_else(|| TensorError::TooLarge(shape.clone()))?;
        if to != self.len() {
            return Err(TensorError::Reshape { from: self.len(), to });
        }
        Ok(Tensor { shape, ..self })
    }

    /// The elements of a u8 tensor.
    pub fn as_u8(&self) -> Result<&[u8], TensorError> {
        self.expect(DType::U8)?;
        Ok(&self.data)
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
    fn length_and_views_are_checked() {
        let t = Tensor::from_f32(vec![2], &[1.5, -2.0]).unwrap();
        assert_eq!(t.to_f32().unwrap(), vec![1.5, -2.0]);
        assert_eq!(t.len(), 2);
        assert_eq!(t.as_u8(), Err(TensorError::DType { expected: DType::U8, actual: DType::F32 }));
        let err = Tensor::new(DType::F32, vec![2, 3], vec![0; 23]).unwrap_err();
        assert_eq!(err.to_string(), "tensor of f32 [2, 3] needs 24 bytes, got 23");
        assert!(matches!(Tensor::new(DType::U8, vec![usize::MAX, 2], vec![]), Err(TensorError::TooLarge(_))));
    }

    #[test]
    fn reshape_keeps_elements() {
        let t = Tensor::from_u8(vec![784], vec![7; 784]).unwrap();
        let r = t.clone().reshape(vec![1, 1, 28, 28]).unwrap();
        assert_eq!(r.shape(), &[1, 1, 28, 28]);
        assert_eq!(r.data(), t.data());
        assert_eq!(t.reshape(vec![2, 28, 28]), Err(TensorError::Reshape { from: 784, to: 1568 }));
    }

    #[test]
    fn kserve_names_round_trip() {
        for d in DType::ALL {
            assert_eq!(DType::from_kserve_name(d.kserve_name()), Some(d));
        }
        assert_eq!(DType::from_kserve_name("BF16"), None);
    }
}
