//! Tensors as a plugin sees them: element type, shape, little-endian bytes.

use crate::bindings::cascade::plugin::types as wit;

/// Element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// Unsigned byte.
    U8,
    /// Signed byte.
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

    /// Lowercase name (`f32`, `u8`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::U8 => "u8",
            DType::I8 => "i8",
            DType::I32 => "i32",
            DType::I64 => "i64",
        }
    }

    pub(crate) fn to_wit(self) -> wit::TensorType {
        match self {
            DType::F32 => wit::TensorType::Fp32,
            DType::U8 => wit::TensorType::U8,
            DType::I8 => wit::TensorType::I8,
            DType::I32 => wit::TensorType::I32,
            DType::I64 => wit::TensorType::I64,
        }
    }

    pub(crate) fn from_wit(ty: wit::TensorType) -> DType {
        match ty {
            wit::TensorType::Fp32 => DType::F32,
            wit::TensorType::U8 => DType::U8,
            wit::TensorType::I8 => DType::I8,
            wit::TensorType::I32 => DType::I32,
            wit::TensorType::I64 => DType::I64,
        }
    }
}

impl core::fmt::Display for DType {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a tensor could not be built or viewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TensorError {
    /// The byte length does not match shape and element type.
    Length {
        /// Bytes the shape needs.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// The shape's element count overflows.
    TooLarge,
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

impl core::fmt::Display for TensorError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TensorError::Length { expected, actual } => {
                write!(f, "tensor needs {expected} bytes, got {actual}")
            }
            TensorError::TooLarge => f.write_str("tensor shape is too large"),
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

fn byte_len(dtype: DType, shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))?.checked_mul(dtype.size())
}

/// An element type, a shape and the elements as little-endian bytes; validated when built.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl Tensor {
    /// Builds a tensor, checking that `data` holds exactly `product(shape)` elements.
    pub fn new(dtype: DType, shape: Vec<usize>, data: Vec<u8>) -> Result<Tensor, TensorError> {
        let expected = byte_len(dtype, &shape).ok_or(TensorError::TooLarge)?;
        if expected != data.len() {
            return Err(TensorError::Length { expected, actual: data.len() });
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

    /// The same elements under another shape with the same element count.
    pub fn reshape(self, shape: Vec<usize>) -> Result<Tensor, TensorError> {
        let to = byte_len(DType::U8, &shape).ok_or(TensorError::TooLarge)?;
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

    /// Builds a tensor from anything: used for tests and by plugins that deliberately send
    /// the host malformed tensors. The host validates every tensor it receives.
    pub fn from_parts_unchecked(dtype: DType, shape: Vec<usize>, data: Vec<u8>) -> Tensor {
        Tensor { dtype, shape, data }
    }

    pub(crate) fn into_wit(self) -> wit::Tensor {
        wit::Tensor {
            // A dimension beyond u32 cannot be backed by a 32-bit address space anyway.
            dimensions: self.shape.iter().map(|&d| u32::try_from(d).unwrap_or(u32::MAX)).collect(),
            ty: self.dtype.to_wit(),
            data: self.data,
        }
    }

    pub(crate) fn from_wit(t: wit::Tensor) -> Result<Tensor, TensorError> {
        let shape = t.dimensions.iter().map(|&d| d as usize).collect();
        Tensor::new(DType::from_wit(t.ty), shape, t.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_and_views_are_checked() {
        let t = Tensor::from_f32(vec![2], &[1.5, -2.0]).unwrap();
        assert_eq!(t.to_f32().unwrap(), vec![1.5, -2.0]);
        assert_eq!(t.as_u8(), Err(TensorError::DType { expected: DType::U8, actual: DType::F32 }));
        assert_eq!(
            Tensor::new(DType::F32, vec![2, 3], vec![0; 23]),
            Err(TensorError::Length { expected: 24, actual: 23 })
        );
        assert_eq!(Tensor::new(DType::U8, vec![usize::MAX, 2], vec![]), Err(TensorError::TooLarge));
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
    fn wit_round_trip() {
        let t = Tensor::from_f32(vec![1, 3], &[0.5, 1.0, 2.0]).unwrap();
        assert_eq!(Tensor::from_wit(t.clone().into_wit()).unwrap(), t);
    }
}
