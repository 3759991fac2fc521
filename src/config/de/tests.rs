use super::node::edit_distance;
use super::*;
use crate::config::yaml::parse;

#[derive(Debug, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
struct Inner {
    hold: Option<Spanned<String>>,
    count: Option<u64>,
}

#[derive(Debug, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
struct Outer {
    name: Option<Spanned<String>>,
    inner: Option<Spanned<Inner>>,
    items: Option<Vec<Spanned<Inner>>>,
    flag: Option<bool>,
    #[serde(default)]
    pause: Present,
    hooks: Option<Entries<u64>>,
}

fn read(src: &str) -> (Option<Outer>, Vec<Located>) {
    from_node(&parse(src).unwrap())
}

#[test]
fn spans_point_at_values() {
    let (outer, errors) = read("name: api\ninner:\n  hold: 10m\n");
    assert!(errors.is_empty(), "{errors:?}");
    let outer = outer.unwrap();
    assert_eq!(outer.name.unwrap().mark, Mark { line: 1, col: 7 });
    let inner = outer.inner.unwrap();
    assert_eq!(inner.mark.line, 3);
    assert_eq!(inner.value.hold.unwrap().mark, Mark { line: 3, col: 9 });
}

#[test]
fn every_unknown_key_is_reported_with_a_suggestion() {
    let (outer, errors) = read("nmae: api\ninner:\n  hodl: 10m\nitems:\n  - zzz: 1\n");
    assert!(outer.is_some());
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert_eq!(errors[0].mark, Mark { line: 1, col: 1 });
    assert_contains!(errors[0].message, "did you mean `name`");
    assert_eq!(errors[1].mark, Mark { line: 3, col: 3 });
    assert!(errors[1].message.contains("`hodl`") && errors[1].message.contains("`hold`"));
    assert_contains!(errors[2].message, "expected one of");
}

#[test]
fn wrong_shapes_are_recorded_and_replaced() {
    let (outer, errors) = read("inner: 5\nitems: {a: 1}\nflag: maybe\nname: [1]\n");
    let outer = outer.unwrap();
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert_eq!(outer.inner.unwrap().value, Inner::default());
    assert_eq!(outer.items.unwrap(), vec![]);
    assert_eq!(outer.flag, Some(false));
    assert_eq!(errors[0].mark.line, 1);
    assert!(errors[0].message.contains("expected a mapping"));
    assert!(errors[2].message.contains("true or false"));
}

#[test]
fn numbers_that_do_not_parse_are_reported() {
    let (_, errors) = read("inner:\n  count: lots\n");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].mark, Mark { line: 2, col: 10 });
}

#[test]
fn present_sees_a_key_even_with_an_empty_value() {
    let (outer, _) = read("pause:\n");
    assert!(outer.unwrap().pause.0.is_some());
    let (outer, _) = read("pause: {}\n");
    assert!(outer.unwrap().pause.0.is_some());
    let (outer, _) = read("name: x\n");
    assert!(outer.unwrap().pause.0.is_none());
}

#[test]
fn entries_keep_order_and_key_positions() {
    let (outer, errors) = read("hooks:\n  b: 1\n  a: 2\n");
    assert!(errors.is_empty());
    let hooks = outer.unwrap().hooks.unwrap().0;
    assert_eq!(hooks[0].0.value, "b");
    assert_eq!(hooks[1].0.mark, Mark { line: 3, col: 3 });
    assert_eq!(hooks[1].1, 2);
}

#[test]
fn edit_distance_is_levenshtein() {
    assert_eq!(edit_distance("hodl", "hold"), 2);
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(edit_distance("weight", "weight"), 0);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
}
