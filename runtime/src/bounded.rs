//! Deserializing sequences and maps of at most `MAX` entries, refusing a longer one before
//! holding it. The derived serde impls would let a few bytes of hostile input declare or
//! hold a long collection of tiny entries, each far larger in memory than on the wire; the
//! tier protocol's frames and the KServe front door's request bodies bound theirs with these.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};

/// A visitor for at most `MAX` entries; `refused` is told why when it refuses (the tier
/// protocol keeps that for its error message).
pub(crate) struct AtMost<T, const MAX: usize> {
    refused: fn(String),
    entries: PhantomData<T>,
}

impl<T, const MAX: usize> AtMost<T, MAX> {
    pub(crate) fn new(refused: fn(String)) -> Self {
        AtMost { refused, entries: PhantomData }
    }

    /// Checks a declared count, then that one more entry still fits after `held`.
    fn check<E: de::Error>(&self, declared: Option<usize>, held: usize) -> Result<(), E> {
        if let Some(declared) = declared.filter(|&n| n > MAX) {
            (self.refused)(format!("{declared} items where at most {MAX} are allowed"));
            return Err(E::invalid_length(declared, &Limit(MAX)));
        }
        if held == MAX {
            (self.refused)(format!("more than {MAX} items"));
            return Err(E::invalid_length(MAX + 1, &Limit(MAX)));
        }
        Ok(())
    }
}

impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for AtMost<Vec<T>, MAX> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a sequence of at most {MAX} items")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let declared = seq.size_hint();
        self.check(declared, 0)?;
        let mut out = Vec::with_capacity(declared.unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            self.check(None, out.len())?;
            out.push(item);
        }
        Ok(out)
    }
}

/// What an error says was expected.
struct Limit(usize);

impl de::Expected for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at most {} entries", self.0)
    }
}

/// An object's members, in order (a later duplicate does not replace an earlier one).
pub(crate) struct Members<V>(pub(crate) Vec<(String, V)>);

impl<'de, V: Deserialize<'de>, const MAX: usize> Visitor<'de> for AtMost<Members<V>, MAX> {
    type Value = Members<V>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an object of at most {MAX} members")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            self.check::<A::Error>(None, out.len())?;
            let value: V = map.next_value()?;
            out.push((key, value));
        }
        Ok(Members(out))
    }
}

/// `deserialize_with` for a sequence of at most `MAX` items.
pub(crate) fn vec<'de, D, T, const MAX: usize>(d: D) -> Result<Vec<T>, D::Error>
where
    D: de::Deserializer<'de>,
    T: Deserialize<'de>,
{
    d.deserialize_seq(AtMost::<Vec<T>, MAX>::new(|_| ()))
}

/// `deserialize_with` for an optional sequence or object (`T` is `Vec<item>` or
/// [`Members`]) of at most `MAX` entries; `null` or absent is `None`. Reads
/// self-describing input only (JSON), which says whether a sequence or an object follows.
pub(crate) fn optional<'de, D, T, const MAX: usize>(d: D) -> Result<Option<T>, D::Error>
where
    D: de::Deserializer<'de>,
    AtMost<T, MAX>: Visitor<'de, Value = T>,
{
    d.deserialize_option(Optional::<T, MAX>(PhantomData))
}

/// An optional bounded collection: `null` is `None`.
struct Optional<T, const MAX: usize>(PhantomData<T>);

impl<'de, T, const MAX: usize> Visitor<'de> for Optional<T, MAX>
where
    AtMost<T, MAX>: Visitor<'de, Value = T>,
{
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "null, or at most {MAX} entries")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(AtMost::<T, MAX>::new(|_| ())).map(Some)
    }
}
