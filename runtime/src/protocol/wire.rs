//! Bounded deserialization: the derived serde impls would let a few bytes of a hostile frame
//! declare a long sequence and make the decoder preallocate for it (serde caps that
//! preallocation at 1 MiB, far above a small frame limit), or expand tiny encoded items
//! into large in-memory structs. These helpers check declared counts first and read tensor
//! bytes as one borrowed slice, so memory stays proportional to the bytes received.

use std::cell::RefCell;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::{MAX_DIMS, NamedTensor};
use crate::bounded::AtMost;
use crate::tensor::{DType, Tensor};

thread_local! {
    /// Why the last body failed to decode. Postcard keeps no message for errors raised by
    /// deserializers (to stay allocation-free), so ours are noted here and picked up by
    /// `decode_body` on the same thread, right after the failed call.
    static DETAIL: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn note(detail: String) -> String {
    DETAIL.with(|d| *d.borrow_mut() = Some(detail.clone()));
    detail
}

/// Takes the detail noted by the last failed decode on this thread, if any.
pub(super) fn take_detail() -> Option<String> {
    DETAIL.with(|d| d.borrow_mut().take())
}

/// A [`NamedTensor`] as it is on the wire. Postcard writes nested structs as the plain
/// concatenation of their fields, so this flat mirror reads exactly what
/// `NamedTensor { name, tensor: Tensor { dtype, shape, data } }` writes.
#[derive(Deserialize)]
pub(super) struct NamedTensorWire {
    name: String,
    dtype: DType,
    #[serde(deserialize_with = "bounded_vec::<_, _, MAX_DIMS>")]
    shape: Vec<usize>,
    // Postcard encodes a `Vec<u8>` and a byte string the same way (length, then the bytes).
    #[serde(deserialize_with = "byte_buf")]
    data: Vec<u8>,
}

impl TryFrom<NamedTensorWire> for NamedTensor {
    type Error = String;

    fn try_from(w: NamedTensorWire) -> Result<NamedTensor, String> {
        let tensor =
            Tensor::new(w.dtype, w.shape, w.data).map_err(|e| note(format!("tensor {:?}: {e}", w.name)))?;
        Ok(NamedTensor { name: w.name, tensor })
    }
}

/// Deserializes a sequence of at most `MAX` items, refusing longer ones before allocating
/// (the reason is noted for the error message).
pub(super) fn bounded_vec<'de, D, T, const MAX: usize>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    d.deserialize_seq(AtMost::<Vec<T>, MAX>::new(|why| {
        note(why);
    }))
}

/// Deserializes bytes as one slice of the input, so a declared length larger than what was
/// received fails instead of reserving memory for it.
fn byte_buf<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    struct Bytes;

    impl<'de> Visitor<'de> for Bytes {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("tensor bytes")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
    }

    d.deserialize_bytes(Bytes)
}
