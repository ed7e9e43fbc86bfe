//! Tolerant reading of the fields a decoder needs (STYLE 20, issue 23).
//!
//! APIs and archives drift: a count arrives as a string, an id as a number
//! (early X v2 sent `matching_rules[].id` as a JSON number), a nested object
//! as `null` or `0`. A collector that refuses a post for the shape of a field
//! loses data, so every decoder reads through this module, with one rule:
//!
//! * a record is refused only when it is not JSON (or not an object, which
//!   [`super::decode`] checks first);
//! * a field of another JSON type than expected is **converted** when the
//!   meaning is clear (an integer ↔ its decimal string for ids and counts)
//!   and otherwise **treated as absent**; either way a [`Surprise`] naming the
//!   field is noted, and the post goes on (its raw bytes are what the sink
//!   writes, so nothing of it is lost);
//! * `null` is absent, and no surprise (APIs write it for "not set").
//!
//! The mechanism: every field is read with `deserialize_any` through a
//! [`DeserializeSeed`] that carries the field's name and the record's
//! [`Surprises`], so no type fails. Structs are declared with [`tolerant!`],
//! which writes the struct (every field an `Option`) and a map visitor that
//! takes keys in any order, skips unknown ones without buffering, and lets
//! the last of duplicated keys win. There is no fast path that depends on key
//! order or whitespace: this is the only path.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A field met in an unexpected JSON type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Surprise {
    /// `<object>.<key>` as the decoder names it (`tweet.lang`,
    /// `matching_rule.id`): a bounded set, fit for a metric label.
    pub field: &'static str,
    /// True when the value was converted (a number for a string id, a
    /// decimal string for a count); false when it was treated as absent.
    pub converted: bool,
}

/// The surprises of one record, collected while it is read.
#[derive(Debug, Default)]
pub struct Surprises(RefCell<Vec<Surprise>>);

impl Surprises {
    fn note(&self, field: &'static str, converted: bool) {
        self.0.borrow_mut().push(Surprise { field, converted });
    }

    fn len(&self) -> usize {
        self.0.borrow().len()
    }

    /// What was noted, in reading order.
    pub fn into_vec(self) -> Vec<Surprise> {
        self.0.into_inner()
    }
}

/// What a seed carries down: the field being read and where to note.
#[derive(Clone, Copy)]
pub(crate) struct Cx<'s> {
    pub(crate) field: &'static str,
    pub(crate) surprises: &'s Surprises,
}

impl Cx<'_> {
    pub(crate) fn note(&self, converted: bool) {
        self.surprises.note(self.field, converted);
    }
}

/// A value that can be read from any JSON value: `Some` when usable
/// (possibly converted), `None` when absent, `null` or unusable.
pub(crate) trait Tolerant<'de>: Sized {
    fn read<D: Deserializer<'de>>(d: D, cx: Cx<'_>) -> Result<Option<Self>, D::Error>;
}

/// The seed that reads a `T` tolerantly.
pub(crate) struct Seed<'s, T>(Cx<'s>, PhantomData<T>);

impl<'s, T> Seed<'s, T> {
    pub(crate) fn new(field: &'static str, surprises: &'s Surprises) -> Self {
        Seed(Cx { field, surprises }, PhantomData)
    }
}

impl<'de, T: Tolerant<'de>> DeserializeSeed<'de> for Seed<'_, T> {
    type Value = Option<T>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        T::read(d, self.0)
    }
}

/// Read a whole record as `T` (`None`: not an object).
pub(crate) fn read_record<'de, T: Tolerant<'de>>(
    text: &'de str,
    root: &'static str,
    surprises: &Surprises,
) -> Result<Option<T>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let v = T::read(&mut de, Cx { field: root, surprises })?;
    de.end()?;
    Ok(v)
}

/// Skip the rest of a sequence or map whose value is being dropped.
fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// How a scalar took a JSON value.
pub(crate) enum Got<T> {
    /// The expected type.
    Yes(T),
    /// Another type with a clear meaning, converted.
    Converted(T),
    /// Unusable: treated as absent.
    No,
}

/// A scalar read tolerantly: each hook says what to make of one JSON type.
pub(crate) trait Scalar<'de>: Sized {
    const EXPECTING: &'static str;
    fn borrowed_str(s: &'de str) -> Got<Self> {
        Self::str(s)
    }
    fn str(_: &str) -> Got<Self> {
        Got::No
    }
    fn u64(_: u64) -> Got<Self> {
        Got::No
    }
    fn i64(_: i64) -> Got<Self> {
        Got::No
    }
    fn f64(_: f64) -> Got<Self> {
        Got::No
    }
}

struct ScalarVisitor<'s, T>(Cx<'s>, PhantomData<T>);

impl<T> ScalarVisitor<'_, T> {
    fn got(self, g: Got<T>) -> Option<T> {
        match g {
            Got::Yes(v) => Some(v),
            Got::Converted(v) => {
                self.0.note(true);
                Some(v)
            }
            Got::No => {
                self.0.note(false);
                None
            }
        }
    }
}

impl<'de, T: Scalar<'de>> Visitor<'de> for ScalarVisitor<'_, T> {
    type Value = Option<T>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Option<T>, E> {
        Ok(self.got(T::borrowed_str(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Option<T>, E> {
        Ok(self.got(T::str(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Option<T>, E> {
        Ok(self.got(T::u64(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Option<T>, E> {
        Ok(self.got(T::i64(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Option<T>, E> {
        Ok(self.got(T::f64(v)))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Option<T>, E> {
        Ok(self.got(Got::No))
    }
    fn visit_unit<E>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_none<E>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<T>, A::Error> {
        drain_seq(seq)?;
        Ok(self.got(Got::No))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
        drain_map(map)?;
        Ok(self.got(Got::No))
    }
}

fn read_scalar<'de, T: Scalar<'de>, D: Deserializer<'de>>(d: D, cx: Cx<'_>) -> Result<Option<T>, D::Error> {
    d.deserialize_any(ScalarVisitor(cx, PhantomData))
}

/// Text: strings only (a number is no text).
impl<'de> Scalar<'de> for Cow<'de, str> {
    const EXPECTING: &'static str = "a string";
    fn borrowed_str(s: &'de str) -> Got<Self> {
        Got::Yes(Cow::Borrowed(s))
    }
    fn str(s: &str) -> Got<Self> {
        Got::Yes(Cow::Owned(s.to_owned()))
    }
}

impl<'de> Tolerant<'de> for Cow<'de, str> {
    fn read<D: Deserializer<'de>>(d: D, cx: Cx<'_>) -> Result<Option<Self>, D::Error> {
        read_scalar(d, cx)
    }
}

/// An identifier sent as a string, also taken from an integer (its decimal
/// form): X v2 sent `matching_rules[].id` as a number in 2021, a string
/// later; archives flip `id_str`s to numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Id<'a>(pub(crate) Cow<'a, str>);

impl<'a> Id<'a> {
    pub(crate) fn into_cow(self) -> Cow<'a, str> {
        self.0
    }
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Scalar<'de> for Id<'de> {
    const EXPECTING: &'static str = "an id (a string or an integer)";
    fn borrowed_str(s: &'de str) -> Got<Self> {
        Got::Yes(Id(Cow::Borrowed(s)))
    }
    fn str(s: &str) -> Got<Self> {
        Got::Yes(Id(Cow::Owned(s.to_owned())))
    }
    fn u64(v: u64) -> Got<Self> {
        Got::Converted(Id(Cow::Owned(v.to_string())))
    }
    fn i64(v: i64) -> Got<Self> {
        Got::Converted(Id(Cow::Owned(v.to_string())))
    }
}

impl<'de> Tolerant<'de> for Id<'de> {
    fn read<D: Deserializer<'de>>(d: D, cx: Cx<'_>) -> Result<Option<Self>, D::Error> {
        read_scalar(d, cx)
    }
}

/// A decimal string as a count or id: digits only, surrounding blanks allowed.
fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim();
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
}

/// A non-negative integer (ids, counts); a decimal string or an integral
/// float is converted.
impl<'de> Scalar<'de> for u64 {
    const EXPECTING: &'static str = "a non-negative integer";
    fn str(s: &str) -> Got<Self> {
        parse_u64(s).map_or(Got::No, Got::Converted)
    }
    fn u64(v: u64) -> Got<Self> {
        Got::Yes(v)
    }
    fn f64(v: f64) -> Got<Self> {
        // 2^64 is exactly representable; anything at or above it is not a u64.
        if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < 18_446_744_073_709_551_616.0 {
            Got::Converted(v as u64)
        } else {
            Got::No
        }
    }
}

impl<'de> Tolerant<'de> for u64 {
    fn read<D: Deserializer<'de>>(d: D, cx: Cx<'_>) -> Result<Option<Self>, D::Error> {
        read_scalar(d, cx)
    }
}

/// Offsets and lengths: a `u64` that fits.
macro_rules! narrow_unsigned {
    ($($t:ty),*) => {$(
        impl<'de> Scalar<'de> for $t {
            const EXPECTING: &'static str = "a small non-negative integer";
            fn str(s: &str) -> Got<Self> {
                parse_u64(s).and_then(|v| <$t>::try_from(v).ok()).map_or(Got::No, Got::Converted)
            }
            fn u64(v: u64) -> Got<Self> {
                <$t>::try_from(v).map_or(Got::No, Got::Yes)
            }
            fn f64(v: f64) -> Got<Self> {
                match <u64 as Scalar<'de>>::f64(v) {
                    Got::Converted(v) => <$t>::try_from(v).map_or(Got::No, Got::Converted),
                    _ => Got::No,
                }
            }
        }

        impl<'de> Tolerant<'de> for $t {
            fn read<D: Deserializer<'de>>(d: D, cx: Cx<'_>) -> Result<Option<Self>, D::Error> {
                read_scalar(d, cx)
            }
        }
    )*};
}

narrow_unsigned!(u32, usize);

/// A coordinate: any JSON number; a numeric string is converted.
impl<'de> Scalar<'de> for f64 {
    const EXPECTING: &'static str = "a number";
    fn str(s: &str) -> Got<Self> {
        s.trim().parse::<f64>().ok().filter(|v| v.is_finite()).map_or(Got::No, Got::Converted)
    }
    fn u64(v: u64) -> Got<Self> {
        Got::Yes(v as f64)
    }
    fn i64(v: i64) -> Got<Self> {
        Got::Yes(v as f64)
    }
    fn f64(v: f64) -> Got<Self> {
        Got::Yes(v)
    }
}

impl<'de> Tolerant<'de> for f64 {
    fn read<D: Deserializer<'de>>(d: D, cx: Cx<'_>) -> Result<Option<Self>, D::Error> {
        read_scalar(d, cx)
    }
}

/// A key whose presence is what counts (`delete`, `limit` …): any value but
/// `null`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Present;

struct PresentVisitor;

impl<'de> Visitor<'de> for PresentVisitor {
    type Value = Option<Present>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Some(Present))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Some(Present))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Some(Present))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Some(Present))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Some(Present))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drain_seq(seq)?;
        Ok(Some(Present))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        drain_map(map)?;
        Ok(Some(Present))
    }
}

impl<'de> Tolerant<'de> for Present {
    fn read<D: Deserializer<'de>>(d: D, _: Cx<'_>) -> Result<Option<Self>, D::Error> {
        d.deserialize_any(PresentVisitor)
    }
}

impl<'de, T: Tolerant<'de>> Tolerant<'de> for Box<T> {
    fn read<D: Deserializer<'de>>(d: D, cx: Cx<'_>) -> Result<Option<Self>, D::Error> {
        Ok(T::read(d, cx)?.map(Box::new))
    }
}

/// The scalar values of a list's or an object's visitor: `null` is absent;
/// a boolean, number or string is noted as a surprise, then treated as absent.
macro_rules! scalars_are_absent {
    ($value:ty) => {
        fn visit_unit<E>(self) -> Result<$value, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<$value, E> {
            Ok(None)
        }
        fn visit_bool<E>(self, _: bool) -> Result<$value, E> {
            self.0.note(false);
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<$value, E> {
            self.0.note(false);
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<$value, E> {
            self.0.note(false);
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<$value, E> {
            self.0.note(false);
            Ok(None)
        }
        fn visit_str<E>(self, _: &str) -> Result<$value, E> {
            self.0.note(false);
            Ok(None)
        }
    };
}
pub(crate) use scalars_are_absent;

/// A list: unusable items are left out (each noted by its own reader).
struct ListVisitor<'s, T>(Cx<'s>, PhantomData<T>);

impl<'de, T: Tolerant<'de>> Visitor<'de> for ListVisitor<'_, T> {
    type Value = Option<Vec<T>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element_seed(Seed::<T>(self.0, PhantomData))? {
            out.extend(item);
        }
        Ok(Some(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        drain_map(map)?;
        self.0.note(false);
        Ok(None)
    }
    scalars_are_absent!(Self::Value);
}

impl<'de, T: Tolerant<'de>> Tolerant<'de> for Vec<T> {
    fn read<D: Deserializer<'de>>(d: D, cx: Cx<'_>) -> Result<Option<Self>, D::Error> {
        d.deserialize_any(ListVisitor(cx, PhantomData))
    }
}

/// A fixed-size tuple of numbers (`[lng, lat]`, a bounding box, `indices`):
/// usable only whole.
struct ArrayVisitor<'s, T, const N: usize>(Cx<'s>, PhantomData<T>);

impl<'de, T: Tolerant<'de> + Copy + Default, const N: usize> Visitor<'de> for ArrayVisitor<'_, T, N> {
    type Value = Option<[T; N]>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a list of {N} numbers")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = [T::default(); N];
        let mut n = 0;
        let mut whole = true;
        let noted = self.0.surprises.len();
        while let Some(item) = seq.next_element_seed(Seed::<T>(self.0, PhantomData))? {
            match item {
                Some(v) if n < N => out[n] = v,
                _ => whole = false,
            }
            n += 1;
        }
        if whole && n == N {
            Ok(Some(out))
        } else {
            // Once per value: an item that was itself unusable noted it.
            if self.0.surprises.len() == noted {
                self.0.note(false);
            }
            Ok(None)
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        drain_map(map)?;
        self.0.note(false);
        Ok(None)
    }
    scalars_are_absent!(Self::Value);
}

impl<'de, T: Tolerant<'de> + Copy + Default, const N: usize> Tolerant<'de> for [T; N] {
    fn read<D: Deserializer<'de>>(d: D, cx: Cx<'_>) -> Result<Option<Self>, D::Error> {
        d.deserialize_any(ArrayVisitor::<T, N>(cx, PhantomData))
    }
}

/// The non-object values of a struct's visitor: noted, treated as absent.
macro_rules! not_an_object {
    ($lt:lifetime, $value:ty) => {
        $crate::post::tolerant::scalars_are_absent!($value);
        fn visit_seq<A: serde::de::SeqAccess<$lt>>(self, seq: A) -> Result<$value, A::Error> {
            $crate::post::tolerant::drain_seq_pub(seq)?;
            self.0.note(false);
            Ok(None)
        }
    };
}
pub(crate) use not_an_object;

#[doc(hidden)]
pub(crate) fn drain_seq_pub<'de, A: SeqAccess<'de>>(seq: A) -> Result<(), A::Error> {
    drain_seq(seq)
}

/// The JSON key of a field: its name, or the literal given with `as`.
macro_rules! key_of {
    ($f:ident) => {
        stringify!($f)
    };
    ($f:ident $k:literal) => {
        $k
    };
}
pub(crate) use key_of;

/// Declare a struct read tolerantly from a JSON object.
///
/// ```ignore
/// tolerant! {
///     /// An X v2 user.
///     struct User<'a> in "user" {
///         id: Id<'a>,
///         username: Cow<'a, str>,
///         kind as "type": Cow<'a, str>,
///     }
/// }
/// ```
///
/// Every field becomes an `Option` of its type (`None`: absent, `null` or
/// unusable); `in "user"` names the object in surprise labels (`user.id`).
/// The struct also records which keys were present, whatever their value
/// (`has("text")`), for the decoders that classify a record by its keys.
macro_rules! tolerant {
    (
        $(#[$meta:meta])*
        struct $name:ident<$lt:lifetime> in $label:literal {
            $( $(#[$fmeta:meta])* $field:ident $(as $key:literal)? : $ty:ty ),* $(,)?
        }
    ) => {
        $crate::post::tolerant::tolerant!(@define [$(#[$meta])*] $name [$lt] [<$lt>] $label
            { $( [$(#[$fmeta])*] $field [$($key)?] : $ty ),* });
    };
    (
        $(#[$meta:meta])*
        struct $name:ident in $label:literal {
            $( $(#[$fmeta:meta])* $field:ident $(as $key:literal)? : $ty:ty ),* $(,)?
        }
    ) => {
        $crate::post::tolerant::tolerant!(@define [$(#[$meta])*] $name ['de] [] $label
            { $( [$(#[$fmeta])*] $field [$($key)?] : $ty ),* });
    };
    (@define [$($meta:tt)*] $name:ident [$lt:lifetime] [$($args:tt)*] $label:literal
        { $( [$($fmeta:tt)*] $field:ident [$($key:literal)?] : $ty:ty ),* }
    ) => {
        $($meta)*
        #[derive(Default)]
        struct $name $($args)* {
            $( $($fmeta)* $field: Option<$ty>, )*
            /// Bit `i` set: the `i`-th declared key was present (any value).
            present: u64,
        }

        #[allow(dead_code)]
        impl $($args)* $name $($args)* {
            /// Was `key` in the object, whatever its value?
            fn has(&self, key: &str) -> bool {
                let keys: &[&str] = &[$( $crate::post::tolerant::key_of!($field $($key)?) ),*];
                keys.iter().position(|k| *k == key).is_some_and(|i| self.present & (1 << i) != 0)
            }
        }

        const _: () = {
            // One bit of `present` per key.
            assert!([$( stringify!($field) ),*].len() <= 64, "a tolerant struct holds at most 64 keys");
            use $crate::post::tolerant::{Cx, Seed, Tolerant};
            use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

            #[allow(non_camel_case_types)]
            #[derive(Clone, Copy)]
            enum Field { $($field,)* __other }

            struct Keys;

            impl<'k> Visitor<'k> for Keys {
                type Value = Field;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a key")
                }
                fn visit_str<E>(self, v: &str) -> Result<Field, E> {
                    Ok(match v {
                        $( $crate::post::tolerant::key_of!($field $($key)?) => Field::$field, )*
                        _ => Field::__other,
                    })
                }
            }

            impl<'k> DeserializeSeed<'k> for Keys {
                type Value = Field;
                fn deserialize<D: Deserializer<'k>>(self, d: D) -> Result<Field, D::Error> {
                    d.deserialize_identifier(Keys)
                }
            }

            struct Object<'s, $lt>(Cx<'s>, std::marker::PhantomData<&$lt ()>);

            impl<'s, $lt> Visitor<$lt> for Object<'s, $lt> {
                type Value = Option<$name $($args)*>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str(concat!("an object (", $label, ")"))
                }
                fn visit_map<A: MapAccess<$lt>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                    let mut out = <$name $($args)*>::default();
                    let s = self.0.surprises;
                    while let Some(k) = map.next_key_seed(Keys)? {
                        match k {
                            $( Field::$field => {
                                out.present |= 1 << (Field::$field as u32);
                                out.$field = map.next_value_seed(Seed::<$ty>::new(
                                    concat!($label, ".", $crate::post::tolerant::key_of!($field $($key)?)),
                                    s,
                                ))?;
                            } )*
                            Field::__other => {
                                map.next_value::<IgnoredAny>()?;
                            }
                        }
                    }
                    Ok(Some(out))
                }
                $crate::post::tolerant::not_an_object!($lt, Self::Value);
            }

            impl<$lt> Tolerant<$lt> for $name $($args)* {
                fn read<D: Deserializer<$lt>>(d: D, cx: Cx<'_>) -> Result<Option<Self>, D::Error> {
                    d.deserialize_any(Object(cx, std::marker::PhantomData))
                }
            }
        };
    };
}
pub(crate) use tolerant;

#[cfg(test)]
#[path = "tolerant_tests.rs"]
mod tests;
