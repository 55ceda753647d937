//! Tensors as a plugin sees them: the shared [`cascade_tensor`] vocabulary (the host uses
//! the same types), and their conversion to and from the WIT world's tensors.

use crate::bindings::cascade::plugin::types as wit;

pub use cascade_tensor::{DType, Tensor, TensorError};

fn dtype_to_wit(t: DType) -> wit::TensorType {
    match t {
        DType::F32 => wit::TensorType::Fp32,
        DType::U8 => wit::TensorType::U8,
        DType::I8 => wit::TensorType::I8,
        DType::I32 => wit::TensorType::I32,
        DType::I64 => wit::TensorType::I64,
    }
}

fn dtype_from_wit(ty: wit::TensorType) -> DType {
    match ty {
        wit::TensorType::Fp32 => DType::F32,
        wit::TensorType::U8 => DType::U8,
        wit::TensorType::I8 => DType::I8,
        wit::TensorType::I32 => DType::I32,
        wit::TensorType::I64 => DType::I64,
    }
}

/// A tensor for the host.
pub(crate) fn into_wit(t: Tensor) -> wit::Tensor {
    let (dtype, shape, data) = t.into_parts();
    wit::Tensor {
        // A dimension beyond u32 cannot be backed by a 32-bit address space anyway.
        dimensions: shape.iter().map(|&d| u32::try_from(d).unwrap_or(u32::MAX)).collect(),
        ty: dtype_to_wit(dtype),
        data,
    }
}

/// A tensor from the host, checked like any other.
pub(crate) fn from_wit(t: wit::Tensor) -> Result<Tensor, TensorError> {
    let shape = t.dimensions.iter().map(|&d| d as usize).collect();
    Tensor::new(dtype_from_wit(t.ty), shape, t.data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wit_round_trip() {
        let t = Tensor::from_f32(vec![1, 3], &[0.5, 1.0, 2.0]).unwrap();
        assert_eq!(from_wit(into_wit(t.clone())).unwrap(), t);
        for d in DType::ALL {
            assert_eq!(dtype_from_wit(dtype_to_wit(d)), d);
        }
    }
}
