//! Human-friendly durations for the command line ("250ms", "5s", "10m") and
//! for printing latencies.
//!
//! Written by hand instead of pulling in a crate: we need five units and a
//! decimal point, and the tool is meant to keep a small dependency set.

use std::time::Duration;

/// Why a duration given on the command line (or to a control endpoint) was
/// rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (examples: 0ms, 250ms, 1.5s, 10m)")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

/// The largest duration we accept. Anything longer is almost certainly a
/// typo, and `Duration::from_secs_f64` panics on values it cannot represent.
const MAX_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// Parses `<number><unit>` where unit is one of `us`, `µs`, `ms`, `s`, `m`,
/// `h`. A bare `0` is accepted because "no delay" is common and unambiguous.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let fail = |reason| DurationError {
        input: input.to_string(),
        reason,
    };
    let text = input.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let unit_at = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| fail("missing unit"))?;
    let (number, unit) = text.split_at(unit_at);
    if number.is_empty() {
        return Err(fail("missing number"));
    }
    let value: f64 = number.parse().map_err(|_| fail("bad number"))?;
    let seconds_per_unit = match unit {
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(fail("unknown unit")),
    };
    let seconds = value * seconds_per_unit;
    if !seconds.is_finite() || seconds > MAX_SECS {
        return Err(fail("too large"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Formats a latency given in microseconds with a unit chosen so that the
/// number stays short: `850µs`, `12.3ms`, `1.52s`.
pub fn format_micros(micros: u64) -> String {
    if micros < 1_000 {
        format!("{micros}µs")
    } else if micros < 1_000_000 {
        format!("{:.2}ms", micros as f64 / 1e3)
    } else {
        format!("{:.2}s", micros as f64 / 1e6)
    }
}

/// Formats a duration for summaries (`10s`, `250ms`, `1.5s`).
pub fn format_duration(duration: Duration) -> String {
    format_micros(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_units() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0ms"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration(" 2h "), Ok(Duration::from_secs(7200)));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "10",
            "ms",
            "1.2.3s",
            "5 parsecs",
            "-1s",
            "1e400s",
            "99999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn formats_with_a_fitting_unit() {
        assert_eq!(format_micros(850), "850µs");
        assert_eq!(format_micros(12_345), "12.35ms");
        assert_eq!(format_micros(1_520_000), "1.52s");
        assert_eq!(format_duration(Duration::from_secs(10)), "10.00s");
    }
}
