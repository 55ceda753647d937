//! Bounded deserialization: the derived serde impls would let a few bytes of a hostile frame
//! declare a long sequence and make the decoder preallocate for it (serde caps that
//! preallocation at 1 MiB, far above a small frame limit), or expand tiny encoded items
//! into large in-memory structs. These helpers check declared counts first and read tensor
//! bytes as one borrowed slice, so memory stays proportional to the bytes received.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::{MAX_DIMS, NamedTensor};
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

/// Deserializes a sequence of at most `MAX` items, refusing longer ones before allocating.
pub(super) fn bounded_vec<'de, D, T, const MAX: usize>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Bounded<T, const MAX: usize>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for Bounded<T, MAX> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a sequence of at most {MAX} items")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let declared = seq.size_hint().unwrap_or(0);
            if declared > MAX {
                note(format!("{declared} items where at most {MAX} are allowed"));
                return Err(de::Error::invalid_length(declared, &self));
            }
            let mut out = Vec::with_capacity(declared);
            while let Some(item) = seq.next_element()? {
                if out.len() == MAX {
                    note(format!("more than {MAX} items"));
                    return Err(de::Error::invalid_length(MAX + 1, &self));
                }
                out.push(item);
            }
            Ok(out)
        }
    }

    d.deserialize_seq(Bounded::<T, MAX>(PhantomData))
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
