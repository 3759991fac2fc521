//! Comparing two answers to the same request: status, the listed headers, the body by
//! bytes or, when both are JSON, as JSON with `ignore_json` paths left out. The result is
//! the list of fields that differ (`status`, `header:etag`, `$.items.0.price`, `body`),
//! so noise learned between two OLD answers can be subtracted field by field.

use serde_json::Value;

use super::exchange::Answer;
use crate::config::ShadowSpec;

/// JSON fields a comparison walks at most: past them, what differs is not listed, and
/// so cannot be noise (`Difference::capped`). Noise is checked against all of them; a
/// mismatch sample shows the first [`SHOWN_FIELDS`].
const MAX_FIELDS: usize = 10_000;
/// Differing fields a mismatch sample keeps: one that differs everywhere is one
/// mismatch, not a thousand lines.
pub(crate) const SHOWN_FIELDS: usize = 20;
const EXCERPT: usize = 160;

#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Difference {
    pub fields: Vec<String>,
    /// The first differing bytes of each side, when the bodies differ.
    pub excerpt: Option<String>,
    /// More JSON fields differ than are listed: what is not listed cannot be noise.
    pub capped: bool,
}

pub(crate) fn differences(spec: &ShadowSpec, a: &Answer, b: &Answer) -> Difference {
    let mut out = Difference::default();
    if spec.compare_status && a.status != b.status {
        out.fields.push("status".to_string());
    }
    for name in &spec.compare_headers {
        if a.headers.get(name) != b.headers.get(name) {
            out.fields.push(format!("header:{name}"));
        }
    }
    // Over `max_body` on one side only: the bodies differ, if only in length.
    if spec.compare_body && a.truncated != b.truncated {
        out.fields.push("body".to_string());
        out.excerpt = Some(format!(
            "OLD {} max_body | NEW {} max_body ({} bytes)",
            if a.truncated { "over" } else { "within" },
            if b.truncated { "over" } else { "within" },
            spec.max_body
        ));
        return out;
    }
    // Over `max_body` on both sides: status and headers only.
    if !spec.compare_body || a.truncated || b.truncated || a.body == b.body {
        return out;
    }
    let parsed = (
        serde_json::from_slice::<Value>(&a.body),
        serde_json::from_slice::<Value>(&b.body),
    );
    if let (Ok(mut x), Ok(mut y)) = parsed {
        for path in &spec.ignore_json {
            remove(&mut x, path);
            remove(&mut y, path);
        }
        let before = out.fields.len();
        json_diff("$", &x, &y, &mut out.fields, &mut out.capped);
        if out.fields.len() > before {
            out.excerpt = Some(excerpt(&x.to_string(), &y.to_string()));
        }
    } else {
        out.fields.push("body".to_string());
        out.excerpt = Some(excerpt(
            &String::from_utf8_lossy(&a.body),
            &String::from_utf8_lossy(&b.body),
        ));
    }
    out
}

/// Leaves `path` out of `value`. A segment that is a number steps into an array
/// (`$.items.0.ts`), as the differences name array elements; an element is left out by
/// setting it to null, so that the others keep their places.
fn remove(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = value;
    for segment in parents {
        let next = match at {
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
            _ => at.get_mut(segment.as_str()),
        };
        match next {
            Some(next) => at = next,
            None => return,
        }
    }
    match at {
        Value::Object(map) => {
            map.remove(last.as_str());
        }
        Value::Array(items) => {
            if let Some(item) = last.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                *item = Value::Null;
            }
        }
        _ => {}
    }
}

fn json_diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>, capped: &mut bool) {
    if a == b {
        return;
    }
    if out.len() >= MAX_FIELDS {
        *capped = true;
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (key, value) in x {
                let child = format!("{path}.{key}");
                match y.get(key) {
                    Some(other) => json_diff(&child, value, other, out, capped),
                    None => out.push(child),
                }
            }
            for key in y.keys().filter(|k| !x.contains_key(*k)) {
                out.push(format!("{path}.{key}"));
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                json_diff(&format!("{path}.{i}"), p, q, out, capped);
            }
        }
        _ => out.push(path.to_string()),
    }
}

/// `OLD … | NEW …` from the first byte that differs.
fn excerpt(a: &str, b: &str) -> String {
    let common = a
        .char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i);
    let start = a[..common]
        .char_indices()
        .rev()
        .nth(20)
        .map_or(0, |(i, _)| i);
    let cut = |s: &str| {
        s.get(start..)
            .unwrap_or("")
            .chars()
            .take(EXCERPT)
            .collect::<String>()
    };
    format!("OLD …{} | NEW …{}", cut(a), cut(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ShadowSpec {
        ShadowSpec::example()
    }

    fn answer(status: u16, body: &str) -> Answer {
        Answer::of(status, "application/json", body)
    }

    #[test]
    fn json_is_compared_as_json_with_ignored_paths_left_out() {
        let spec = spec();
        let a = answer(200, r#"{"id":1,"meta":{"at":"10:00"},"items":[1,2]}"#);
        let same = answer(200, r#"{"items":[1,2], "meta":{"at":"10:01"}, "id":1}"#);
        assert_eq!(differences(&spec, &a, &same).fields, Vec::<String>::new());
        let other = answer(500, r#"{"id":2,"meta":{"at":"10:00"},"items":[1,3],"x":0}"#);
        assert_eq!(
            differences(&spec, &a, &other).fields,
            vec!["status", "$.id", "$.items.1", "$.x"]
        );
        let text = answer(200, "plain one");
        let d = differences(&spec, &text, &answer(200, "plain two"));
        assert_eq!(d.fields, vec!["body"]);
        assert_eq!(
            d.excerpt.as_deref(),
            Some("OLD …plain one | NEW …plain two")
        );
    }

    #[test]
    fn ignored_paths_step_into_arrays() {
        let spec = ShadowSpec {
            ignore_json: vec![
                vec!["items".into(), "0".into(), "ts".into()],
                vec!["ids".into(), "1".into()],
            ],
            ..spec()
        };
        let a = answer(200, r#"{"items":[{"ts":1,"p":5},{"ts":1}],"ids":[7,8]}"#);
        let b = answer(200, r#"{"items":[{"ts":2,"p":5},{"ts":2}],"ids":[7,9]}"#);
        // The first item's ts and the second id are left out; the second item's ts is not.
        assert_eq!(differences(&spec, &a, &b).fields, vec!["$.items.1.ts"]);
    }

    #[test]
    fn bodies_over_the_limit_are_judged_by_status_and_headers() {
        let spec = spec();
        let mut a = answer(200, "aaaa");
        a.truncated = true;
        let mut b = answer(200, "bbbb");
        b.truncated = true;
        assert!(differences(&spec, &a, &b).fields.is_empty());
        // Over the limit on one side only, the bodies differ: never a match (a NEW that
        // answered 5 MB where OLD answered 2 KB once was one).
        let one_side = Difference {
            fields: vec!["body".to_string()],
            excerpt: Some("OLD within max_body | NEW over max_body (1024 bytes)".to_string()),
            capped: false,
        };
        assert_eq!(differences(&spec, &answer(200, "small"), &b), one_side);
    }

    #[test]
    fn a_diff_lists_every_field_up_to_its_limit_and_says_when_it_stopped() {
        let spec = ShadowSpec {
            max_body: 1 << 20,
            ..spec()
        };
        let many = |n: usize, v: u32| {
            let fields: Vec<String> = (0..n).map(|i| format!("\"f{i:05}\":{v}")).collect();
            answer(200, &format!("{{{}}}", fields.join(",")))
        };
        // A list of 30 items, each with its own timestamp: all 30 named, so all 30 can be
        // noise (the first 20 only, once, made the rest a mismatch).
        let d = differences(&spec, &many(30, 1), &many(30, 2));
        assert_eq!(d.fields.len(), 30);
        assert!(!d.capped);
        let d = differences(&spec, &many(MAX_FIELDS + 5, 1), &many(MAX_FIELDS + 5, 2));
        assert_eq!(d.fields.len(), MAX_FIELDS);
        assert!(d.capped);
    }
}
