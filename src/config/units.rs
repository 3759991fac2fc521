//! How values are written in the config file, and the types they become: `5%` → [`Weight`]
//! or a fraction, `30s` / `1h30m` → `Duration` (exactly ms, s, m, h, d; at most 30 days),
//! `64KiB` → bytes. Used by validation and by the admin API and CLI (`set-weight`).

use std::fmt;
use std::time::Duration;

/// NEW's share of traffic, in basis points: 0 ..= 10 000 (0.01% steps).
///
/// A sticky user's bucket `b` (0..9999) goes to NEW iff `b < weight.basis_points()`, which
/// is what makes raising the weight move users only from old to new.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Weight(u16);

impl Weight {
    pub const ZERO: Weight = Weight(0);
    pub const FULL: Weight = Weight(10_000);

    pub fn from_basis_points(bp: u16) -> Option<Weight> {
        (bp <= 10_000).then_some(Weight(bp))
    }

    /// From a percentage; `None` when outside 0–100 or finer than 0.01%.
    pub fn from_percent(percent: f64) -> Option<Weight> {
        if !(0.0..=100.0).contains(&percent) {
            return None;
        }
        let bp = percent * 100.0;
        if (bp - bp.round()).abs() > 1e-6 {
            return None;
        }
        Some(Weight(bp.round() as u16))
    }

    pub fn basis_points(self) -> u16 {
        self.0
    }

    pub fn percent(self) -> f64 {
        f64::from(self.0) / 100.0
    }
}

/// In files and JSON a weight is its percentage, like `25` or `0.5`.
impl serde::Serialize for Weight {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.percent())
    }
}

impl<'de> serde::Deserialize<'de> for Weight {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let percent = f64::deserialize(deserializer)?;
        Weight::from_percent(percent).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "weight {percent} is not a percentage in 0..100 with at most two decimals"
            ))
        })
    }
}

impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 % 100 == 0 {
            write!(f, "{}%", self.0 / 100)
        } else {
            write!(f, "{}%", self.percent())
        }
    }
}

/// `5%`, `0.5%` or a bare number (a percent too); returns the percentage.
pub fn parse_percent(text: &str) -> Result<f64, String> {
    let trimmed = text.trim();
    let number = trimmed.strip_suffix('%').unwrap_or(trimmed).trim();
    match number.parse::<f64>() {
        Ok(p) if p.is_finite() && (0.0..=100.0).contains(&p) => Ok(p),
        Ok(_) => Err(format!("`{trimmed}` is outside 0%..100%")),
        Err(_) => Err(format!(
            "`{trimmed}` is not a percentage; write it like `5%` or `0.5%`"
        )),
    }
}

/// The longest duration any setting takes. Deadlines are `Instant + duration`, and an
/// unbounded value overflows that on every request; nothing an operator means lasts longer.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

const DURATION_UNITS: &str = "durations use ms, s, m, h, d (e.g. 30m, 1h30m)";

/// `250ms`, `30s`, `10m`, `2h`, `1d`, `1h30m`: whole numbers with exactly these units, at
/// most `MAX_DURATION`. `30M`, `1y`, `1.5h` and `30 minutes` are refused with a hint rather
/// than read as something the operator did not mean.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("empty duration; {DURATION_UNITS}"));
    }
    if text.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "`{text}` needs a unit, like `{text}s` or `{text}ms`"
        ));
    }
    if text.contains(char::is_whitespace) {
        return Err(format!(
            "`{text}`: write durations without spaces; {DURATION_UNITS}"
        ));
    }
    let too_long = || format!("`{text}` is longer than the maximum of 30d");
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("`{text}` is not a duration; {DURATION_UNITS}"));
        }
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let millis: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => {
                return Err(format!(
                    "`{text}`: `{number}` needs a unit; {DURATION_UNITS}"
                ))
            }
            _ if unit.starts_with('.') => {
                return Err(format!(
                    "`{text}`: fractions are not accepted; write `1h30m` or `90m` instead of \
                     `1.5h`"
                ))
            }
            _ => return Err(format!("`{text}`: unknown unit `{unit}`; {DURATION_UNITS}")),
        };
        let part = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(millis))
            .ok_or_else(too_long)?;
        total = total
            .checked_add(Duration::from_millis(part))
            .ok_or_else(too_long)?;
        rest = next;
    }
    if total > MAX_DURATION {
        return Err(too_long());
    }
    Ok(total)
}

/// `65536`, `64KiB`, `1MiB`, `64KB`.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let scale = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1024,
        "KB" | "kB" => 1000,
        "MiB" | "M" => 1024 * 1024,
        "MB" => 1_000_000,
        _ => {
            return Err(format!(
                "`{text}` is not a size; write it like `64KiB` or `65536`"
            ))
        }
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("`{text}` is not a size; write it like `64KiB` or `65536`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_from_percent_accepts_hundredths_only() {
        assert_eq!(Weight::from_percent(5.0), Some(Weight(500)));
        assert_eq!(Weight::from_percent(0.5), Some(Weight(50)));
        assert_eq!(Weight::from_percent(0.01), Some(Weight(1)));
        assert_eq!(Weight::from_percent(100.0), Some(Weight::FULL));
        assert_eq!(Weight::from_percent(0.005), None);
        assert_eq!(Weight::from_percent(100.5), None);
        assert_eq!(Weight::from_percent(-1.0), None);
    }

    #[test]
    fn weight_displays_as_written() {
        assert_eq!(Weight(500).to_string(), "5%");
        assert_eq!(Weight(50).to_string(), "0.5%");
        assert_eq!(Weight(2550).to_string(), "25.5%");
        assert_eq!(Weight::FULL.to_string(), "100%");
    }

    #[test]
    fn durations_take_exactly_the_documented_units() {
        let ok = [
            ("250ms", 250),
            ("30s", 30_000),
            ("10m", 600_000),
            ("2h", 7_200_000),
            ("1d", 86_400_000),
            ("1h30m", 5_400_000),
            ("0s", 0),
            (" 30d ", 2_592_000_000),
        ];
        for (text, millis) in ok {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(millis)),
                "{text}"
            );
        }
        let refused = [
            ("30M", "unknown unit `M`; durations use ms, s, m, h, d"),
            ("1y", "unknown unit `y`"),
            ("1.5h", "fractions are not accepted"),
            ("30 minutes", "without spaces"),
            ("30minutes", "unknown unit `minutes`"),
            ("30", "needs a unit"),
            ("1h30", "`30` needs a unit"),
            ("-5s", "not a duration"),
            ("", "empty duration"),
            ("31d", "longer than the maximum of 30d"),
            ("18446744073709551615s", "longer than the maximum"),
            ("18446744073709551615ms", "longer than the maximum"),
            ("99999999999999999999999h", "longer than the maximum"),
        ];
        for (text, hint) in refused {
            let err = parse_duration(text).expect_err(text);
            assert!(err.contains(hint), "{text}: {err}");
        }
    }
}
