//! Pure domain logic: models, the rules their values keep, templates, matching, delivery
//! policy. Nothing here touches AWS, HTTP frameworks, the clock of a store, or the network;
//! nor does it read requests: `crate::entry::http::parse` turns those into the typed values
//! used here.

/// A fieldless enum whose string forms come from its one declaration: the variants and
/// their `#[strum(...)]` names. Gives `ALL`, `NAMES`, `COUNT`, `as_str`, `parse`, and serde
/// as that name, so the API, the stores, queue messages and logs all spell a value the
/// same way.
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $ty:ident { $($(#[$variant_meta:meta])* $variant:ident),+ $(,)? }
    ) => {
        #[derive(
            Debug,
            Clone,
            Copy,
            PartialEq,
            Eq,
            Hash,
            strum::IntoStaticStr,
            strum::EnumString,
            strum::VariantArray,
            strum::VariantNames,
        )]
        $(#[$meta])*
        $vis enum $ty { $($(#[$variant_meta])* $variant),+ }

        impl $ty {
            pub const COUNT: usize = <$ty as strum::VariantArray>::VARIANTS.len();
            /// Every value, in declaration order.
            pub const ALL: [$ty; Self::COUNT] = {
                let variants = <$ty as strum::VariantArray>::VARIANTS;
                let mut all = [variants[0]; Self::COUNT];
                let mut i = 0;
                while i < Self::COUNT {
                    all[i] = variants[i];
                    i += 1;
                }
                all
            };
            /// Every value's name, in declaration order.
            pub const NAMES: &'static [&'static str] = <$ty as strum::VariantNames>::VARIANTS;

            pub fn as_str(self) -> &'static str {
                self.into()
            }

            /// The value of this name (case-sensitive).
            pub fn parse(name: &str) -> Option<$ty> {
                name.parse().ok()
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Name;
                impl serde::de::Visitor<'_> for Name {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(f, "one of {}", $ty::NAMES.join(", "))
                    }
                    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<$ty, E> {
                        $ty::parse(name).ok_or_else(|| E::unknown_variant(name, $ty::NAMES))
                    }
                }
                d.deserialize_str(Name)
            }
        }
    };
}
pub(crate) use named_enum;

/// `parts` one after the other: name lists built from others at compile time (`N` is
/// the total length; another number does not compile).
pub(crate) const fn concat<const N: usize>(parts: &[&[&'static str]]) -> [&'static str; N] {
    let mut out = [""; N];
    let (mut i, mut n) = (0, 0);
    while i < parts.len() {
        let mut j = 0;
        while j < parts[i].len() {
            out[n] = parts[i][j];
            n += 1;
            j += 1;
        }
        i += 1;
    }
    assert!(n == N, "N must be the total length of the parts");
    out
}

pub mod access;
pub mod alert;
pub mod breaker;
pub mod condition;
pub mod delivery;
pub mod destination;
pub mod enrich;
pub mod error;
pub mod event;
pub mod firing;
pub mod functions;
pub mod guard;
pub mod ids;
pub mod library;
pub mod log;
pub mod macros;
pub mod matching;
pub mod partner;
pub mod postback;
pub mod redact;
pub mod render;
pub mod rules;
pub mod signing;
pub mod slot;
pub mod stats;
pub mod template;

pub use error::ValidationError;
