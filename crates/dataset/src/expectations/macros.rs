//! The boilerplate every expectation shares, generated: its arguments with the
//! shared header ([`arguments!`]) and the registration of every expectation
//! ([`registry!`]).

/// Declares an expectation's arguments: a struct that (de)serialises as the
/// spec's TOML and GE's `kwargs` (unknown keys refused), with the shared
/// header written in by name where the expectation takes it:
///
/// - `column`: the column checked;
/// - `bounds`: `min_value`, `max_value` (numbers), `strict_min`, `strict_max`;
/// - `count_bounds`: `min_value`, `max_value` (whole numbers, inclusive);
/// - `mostly`: the share of the considered values that must pass;
///
/// and `severity` always, last. Fields keep the order written: it is the
/// order of GE's argument lists, of the TOML the GE import writes and of the
/// keys a refusal lists. It also implements [`Arguments`](super::Arguments).
///
/// ```text
/// arguments! {
///     /// Non-null values are in a set.
///     pub struct InSet {
///         column,
///         /// Allowed values.
///         pub value_set: Vec<Scalar>,
///         mostly,
///     }
/// }
/// ```
macro_rules! arguments {
    ($(#[$meta:meta])* pub struct $name:ident { $($body:tt)* }) => {
        arguments!(@munch [$(#[$meta])*] $name [] [] $($body)*);
    };
    (@munch $meta:tt $name:ident [$($f:tt)*] [$($part:ident)*] column, $($rest:tt)*) => {
        arguments!(@munch $meta $name [$($f)*
            /// The column.
            pub column: String,
        ] [$($part)* column] $($rest)*);
    };
    (@munch $meta:tt $name:ident [$($f:tt)*] [$($part:ident)*] bounds, $($rest:tt)*) => {
        arguments!(@munch $meta $name [$($f)*
            /// Lower bound (inclusive unless `strict_min`).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub min_value: Option<f64>,
            /// Upper bound (inclusive unless `strict_max`).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub max_value: Option<f64>,
            /// Exclusive lower bound.
            #[serde(default, skip_serializing_if = "crate::expectations::is_false")]
            pub strict_min: bool,
            /// Exclusive upper bound.
            #[serde(default, skip_serializing_if = "crate::expectations::is_false")]
            pub strict_max: bool,
        ] [$($part)* bounds] $($rest)*);
    };
    (@munch $meta:tt $name:ident [$($f:tt)*] [$($part:ident)*] count_bounds, $($rest:tt)*) => {
        arguments!(@munch $meta $name [$($f)*
            /// Smallest count accepted (inclusive).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub min_value: Option<u64>,
            /// Largest count accepted (inclusive).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub max_value: Option<u64>,
        ] [$($part)* count_bounds] $($rest)*);
    };
    (@munch $meta:tt $name:ident [$($f:tt)*] [$($part:ident)*] mostly, $($rest:tt)*) => {
        arguments!(@munch $meta $name [$($f)*
            /// Share of the considered values that must pass (GE `mostly`).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub mostly: Option<f64>,
        ] [$($part)* mostly] $($rest)*);
    };
    (@munch $meta:tt $name:ident [$($f:tt)*] [$($part:ident)*]
        $(#[$fmeta:meta])* pub $field:ident : $ty:ty, $($rest:tt)*) => {
        arguments!(@munch $meta $name [$($f)* $(#[$fmeta])* pub $field: $ty,] [$($part)*] $($rest)*);
    };
    (@munch [$($meta:tt)*] $name:ident [$($f:tt)*] [$($part:ident)*]) => {
        $($meta)*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($f)*
            /// Whether a failure rejects the batch.
            #[serde(default, skip_serializing_if = "crate::expectations::Severity::is_error")]
            pub severity: crate::expectations::Severity,
        }

        impl crate::expectations::Arguments for $name {
            fn header(&self) -> crate::expectations::Header<'_> {
                arguments!(@header self [$($part)*])
            }
        }
    };
    (@header $s:ident [$($part:ident)*]) => {{
        #[allow(unused_mut)]
        let mut header = crate::expectations::Header::new($s.severity);
        $(arguments!(@part header $s $part);)*
        header
    }};
    (@part $h:ident $s:ident column) => {
        $h.column = Some(&$s.column);
    };
    (@part $h:ident $s:ident bounds) => {
        $h.bounds = Some(($s.min_value, $s.max_value));
    };
    (@part $h:ident $s:ident count_bounds) => {
        $h.bounds = Some(($s.min_value.map(|v| v as f64), $s.max_value.map(|v| v as f64)));
    };
    (@part $h:ident $s:ident mostly) => {
        $h.mostly = $s.mostly;
    };
}

/// Registers the expectations, each as `Type = "GE name"`, in the order a
/// refused name lists them: makes [`Expectation`](super::Expectation) (the
/// spec's enum, tagged by `expectation` = the GE name, one variant per type,
/// named like it), each type's `NAME`, and the dispatch from a variant or a GE
/// name to the type's [`Check`](super::Check).
macro_rules! registry {
    ($($variant:ident = $ge:literal,)*) => {
        /// An expectation, named and parameterised as in Great Expectations
        /// (1.x argument names): one variant per expectation type, in the
        /// spec's `[[expectations]]` as `expectation = "<GE name>"` and the
        /// type's arguments. Every one takes `severity` (default `error`);
        /// column-map expectations take `mostly`, the share of non-null
        /// values that must pass.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "expectation", deny_unknown_fields)]
        pub enum Expectation {
            $(
                #[doc = concat!("`", $ge, "`: see [`", stringify!($variant), "`].")]
                #[serde(rename = $ge)]
                $variant($variant),
            )*
        }

        $(
            impl $variant {
                /// The Great Expectations name.
                pub const NAME: &'static str = $ge;
            }

            impl From<$variant> for Expectation {
                fn from(e: $variant) -> Self {
                    Expectation::$variant(e)
                }
            }
        )*

        impl Expectation {
            /// The Great Expectations name.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Expectation::$variant(_) => $ge,)*
                }
            }

            /// What the type does.
            pub(crate) fn as_check(&self) -> &dyn Check {
                match self {
                    $(Expectation::$variant(e) => e,)*
                }
            }

            /// How validation evaluates it over a spec's columns.
            pub(crate) fn plan(&self, columns: &PlanContext<'_>) -> Plan {
                self.as_check().plan(columns)
            }

            /// The expectation a GE suite names `ge_name`, read from its
            /// `kwargs`; None when no type has that name.
            pub(crate) fn from_ge(
                ge_name: &str,
                kwargs: &mut Kwargs<'_>,
                severity: Severity,
                notes: &mut Vec<String>,
            ) -> Option<Result<Self, String>> {
                match ge_name {
                    $($ge => Some(<$variant as Check>::from_ge(kwargs, severity, notes).map(Expectation::$variant)),)*
                    _ => None,
                }
            }
        }
    };
}
