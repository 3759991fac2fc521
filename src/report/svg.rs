//! Line charts as inline SVG: no script, no font file, nothing fetched; printable.

use std::fmt::Write;

/// One line on a chart: points as (seconds since the start, value).
#[derive(Debug)]
pub(super) struct Series {
    pub label: &'static str,
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
    /// Holds each value until the next point (a weight), instead of joining them.
    pub step: bool,
    /// Seconds at which to draw a red dot on this line (failed checks).
    pub marks: Vec<(f64, f64)>,
}

/// A chart: its series, horizontal limit lines and vertical event lines.
#[derive(Debug)]
pub(super) struct Chart<'a> {
    pub title: &'a str,
    pub series: Vec<Series>,
    /// (label, value) drawn as dashed lines.
    pub limits: Vec<(String, f64)>,
    /// (label, seconds) drawn as vertical lines: rollbacks, pauses.
    pub events: Vec<(String, f64)>,
    /// Formats a value for the y axis.
    pub unit: fn(f64) -> String,
    /// The whole time span shown, in seconds.
    pub span: f64,
    /// The time at 0 seconds, to label the x axis (UTC).
    pub start: time::OffsetDateTime,
}

const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 30.0;

impl Chart<'_> {
    pub(super) fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let top_value = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .chain(self.limits.iter().map(|l| l.1))
            .fold(0.0f64, f64::max);
        let top_value = nice_top(top_value);
        let span = self.span.max(1.0);
        let x = |seconds: f64| LEFT + seconds / span * (WIDTH - LEFT - RIGHT);
        let y = |value: f64| TOP + (1.0 - value / top_value) * (HEIGHT - TOP - BOTTOM);
        let _ = write!(
            out,
            r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{title}"><title>{title}</title><text x="{LEFT}" y="16" class="ct">{title}</text>"#,
            title = super::html::escape(self.title)
        );
        for tick in 0..=4 {
            let value = top_value * f64::from(tick) / 4.0;
            let _ = write!(
                out,
                r#"<line x1="{LEFT}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" class="grid"/><text x="{tx}" y="{ty:.1}" class="ax" text-anchor="end">{label}</text>"#,
                x2 = WIDTH - RIGHT,
                y = y(value),
                tx = LEFT - 6.0,
                ty = y(value) + 4.0,
                label = (self.unit)(value)
            );
        }
        for tick in 0..=6 {
            let seconds = span * f64::from(tick) / 6.0;
            let _ = write!(
                out,
                r#"<text x="{x:.1}" y="{ty}" class="ax" text-anchor="middle">{label}</text>"#,
                x = x(seconds),
                ty = HEIGHT - 10.0,
                label = self.clock(seconds)
            );
        }
        for (label, value) in &self.limits {
            let _ = write!(
                out,
                r#"<line x1="{LEFT}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" class="limit"/><text x="{x2}" y="{ty:.1}" class="lim" text-anchor="end">{label}</text>"#,
                x2 = WIDTH - RIGHT,
                y = y(*value),
                ty = y(*value) - 4.0,
                label = super::html::escape(label)
            );
        }
        // Events close together (a pause, a resume and a rollback in the same
        // second) get their labels on successive lines instead of printed over
        // each other.
        let mut previous_x = f64::NEG_INFINITY;
        let mut row = 0.0;
        for (label, seconds) in &self.events {
            row = if x(*seconds) - previous_x < 90.0 {
                row + 1.0
            } else {
                0.0
            };
            previous_x = x(*seconds);
            let _ = write!(
                out,
                r#"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{y2}" class="event"/><text x="{tx:.1}" y="{ty}" class="ev" text-anchor="{anchor}">{label}</text>"#,
                x = x(*seconds),
                y2 = HEIGHT - BOTTOM,
                // Labels near the right edge go on the line's left, to stay inside.
                tx = if x(*seconds) > WIDTH - 160.0 {
                    x(*seconds) - 3.0
                } else {
                    x(*seconds) + 3.0
                },
                anchor = if x(*seconds) > WIDTH - 160.0 {
                    "end"
                } else {
                    "start"
                },
                ty = TOP + 10.0 + 11.0 * (row % 4.0),
                label = super::html::escape(label)
            );
        }
        for (index, series) in self.series.iter().enumerate() {
            self.polyline(&mut out, series, &x, &y);
            for (seconds, value) in &series.marks {
                let _ = write!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" class="fail"/>"#,
                    x(*seconds),
                    y(*value)
                );
            }
            let lx = LEFT + 220.0 + index as f64 * 140.0;
            let _ = write!(
                out,
                r#"<line x1="{lx}" x2="{lx2}" y1="12" y2="12" stroke="{color}" stroke-width="3"/><text x="{tx}" y="16" class="ax">{label}</text>"#,
                lx2 = lx + 18.0,
                color = series.color,
                tx = lx + 22.0,
                label = series.label
            );
        }
        out.push_str("</svg>");
        out
    }

    /// `14:30` at `seconds` from the start; `14:30:05` when the chart spans under
    /// six minutes, where minutes alone would label every tick the same.
    fn clock(&self, seconds: f64) -> String {
        let at =
            (self.start + time::Duration::seconds_f64(seconds)).to_offset(time::UtcOffset::UTC);
        if self.span < 360.0 {
            format!("{:02}:{:02}:{:02}", at.hour(), at.minute(), at.second())
        } else {
            format!("{:02}:{:02}", at.hour(), at.minute())
        }
    }

    fn polyline(
        &self,
        out: &mut String,
        series: &Series,
        x: &dyn Fn(f64) -> f64,
        y: &dyn Fn(f64) -> f64,
    ) {
        if series.points.is_empty() {
            return;
        }
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.6" points=""#,
            series.color
        );
        let mut previous: Option<f64> = None;
        for &(seconds, value) in &series.points {
            if let (true, Some(before)) = (series.step, previous) {
                let _ = write!(out, "{:.1},{:.1} ", x(seconds), y(before));
            }
            let _ = write!(out, "{:.1},{:.1} ", x(seconds), y(value));
            previous = Some(value);
        }
        if let (true, Some(last)) = (series.step, previous) {
            let _ = write!(out, "{:.1},{:.1}", x(self.span.max(1.0)), y(last));
        }
        out.push_str(r#""/>"#);
    }
}

/// The top of the y axis: four ticks of a round step (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8 × 10^k)
/// that reach `max`.
fn nice_top(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let raw = max / 4.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .into_iter()
        .map(|factor| factor * magnitude)
        .find(|step| *step * 4.0 >= max * 0.999_999)
        .unwrap_or(10.0 * magnitude);
    step * 4.0
}

#[cfg(test)]
mod tests {
    #[test]
    fn axis_tops_are_round_and_reach_the_maximum() {
        for (max, top) in [
            (100.0, 100.0),
            (2.0, 2.0),
            (500.0, 600.0),
            (0.9, 1.0),
            (0.0, 1.0),
        ] {
            assert!(
                (super::nice_top(max) - top).abs() < 1e-9,
                "{max}: {}",
                super::nice_top(max)
            );
        }
    }
}
