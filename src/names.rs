//! Fixed names for fieldless enums: the spelling each variant is shown, logged and counted
//! under, and the list of every variant, written once as a table instead of a hand-written
//! `match` (and a hand-written array that must list the same variants) per enum.

/// `names! { Enum: pub fn label, pub const ALL { Variant => "name", … } }` gives `Enum` a
/// `fn label(self) -> &'static str` and, when asked, `const ALL: [Enum; N]` in the table's
/// order. A variant missing from the table fails to compile (the `match` is exhaustive).
macro_rules! names {
    (
        $ty:ident : $vis:vis fn $name:ident, $all_vis:vis const ALL
        { $($variant:ident => $text:literal),+ $(,)? }
    ) => {
        impl $ty {
            /// Every variant, in the order of the names table.
            $all_vis const ALL: [$ty; [$($text),+].len()] = [$($ty::$variant),+];
        }
        names! { $ty: $vis fn $name { $($variant => $text),+ } }
    };
    (
        $ty:ident : $vis:vis fn $name:ident
        { $($variant:ident => $text:literal),+ $(,)? }
    ) => {
        impl $ty {
            /// The variant's fixed name.
            $vis fn $name(self) -> &'static str {
                match self {
                    $($ty::$variant => $text),+
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Light {
        Red,
        Amber,
        Green,
    }

    names! {
        Light: fn label, const ALL {
            Red => "red",
            Amber => "amber",
            Green => "green",
        }
    }

    #[test]
    fn the_table_gives_every_variant_its_name_in_order() {
        assert_eq!(Light::ALL, [Light::Red, Light::Amber, Light::Green]);
        let labels: Vec<&str> = Light::ALL.into_iter().map(Light::label).collect();
        assert_eq!(labels, ["red", "amber", "green"]);
    }
}
