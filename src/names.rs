//! Fixed names for fieldless enums: the spelling each variant is shown, logged and counted
//! under, and the list of every variant, written once as a table instead of a hand-written
//! `match` (and a hand-written array that must list the same variants) per enum.

/// `names! { Enum: pub fn label, pub const ALL { Variant => "name", … } }` gives `Enum` a
/// `fn label(self) -> &'static str` and, when asked, `const ALL: [Enum; N]` in the table's
/// order. A variant missing from the table fails to compile (the `match` is exhaustive).
///
/// `names! { pub enum Enum: pub fn label, pub const ALL { … } }` also declares the enum from
/// the same table, so its variants are written once and their discriminants (0, 1, …) are
/// their places in `ALL`: what counters indexed by `variant as usize` rely on.
macro_rules! names {
    (
        $(#[$meta:meta])*
        $ty_vis:vis enum $ty:ident : $vis:vis fn $name:ident, $all_vis:vis const ALL
        { $($(#[$variant_meta:meta])* $variant:ident => $text:literal),+ $(,)? }
    ) => {
        $(#[$meta])*
        $ty_vis enum $ty {
            $($(#[$variant_meta])* $variant),+
        }
        names! { $ty: $vis fn $name, $all_vis const ALL { $($variant => $text),+ } }
    };
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

    names! {
        /// Declared by the table itself.
        #[derive(Debug, Clone, Copy, PartialEq)]
        enum Size: fn label, const ALL {
            Small => "s",
            /// A variant keeps its attributes.
            Large => "l",
        }
    }

    #[test]
    fn a_declared_enum_counts_its_variants_in_table_order() {
        assert_eq!(Size::ALL, [Size::Small, Size::Large]);
        assert_eq!(Size::ALL.map(|size| size as usize), [0, 1]);
        assert_eq!(Size::Large.label(), "l");
    }

    #[test]
    fn the_table_gives_every_variant_its_name_in_order() {
        assert_eq!(Light::ALL, [Light::Red, Light::Amber, Light::Green]);
        let labels: Vec<&str> = Light::ALL.into_iter().map(Light::label).collect();
        assert_eq!(labels, ["red", "amber", "green"]);
    }
}
