//! Assertions the unit tests of many modules share.

/// Asserts `text.$test(part)` (`contains`, `starts_with`, `ends_with`), printing the whole
/// text when it fails: the messages under test are long, and the reader needs all of it.
macro_rules! assert_text {
    ($text:expr, $test:ident, $part:expr) => {{
        let text = &$text;
        let part = $part;
        assert!(
            text.$test(part),
            "{text}\n fails `{}` {part:?}",
            stringify!($test)
        );
    }};
}

/// Asserts that `text` contains `part`.
macro_rules! assert_contains {
    ($text:expr, $part:expr $(,)?) => {
        assert_text!($text, contains, $part)
    };
}

/// Asserts that `text` starts with `part`.
macro_rules! assert_starts_with {
    ($text:expr, $part:expr $(,)?) => {
        assert_text!($text, starts_with, $part)
    };
}
