//! Inline SVG line charts for the HTML report: round axis ticks, grid, step markers, lines and
//! their legend.

use std::fmt::Write as _;

use super::text::{esc, human};

/// About `n` round tick values covering `0..=max`.
pub(super) fn nice_ticks(max: f64, n: usize) -> Vec<f64> {
    if !(max.is_finite() && max > 0.0) {
        return vec![0.0, 1.0];
    }
    let raw = max / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut v = Vec::new();
    let mut t = 0.0;
    while t < max + step * 0.999 {
        v.push((t / step).round() * step);
        t += step;
    }
    v
}

/// One line of a chart.
pub(super) struct Line<'a> {
    /// Legend.
    pub name: &'a str,
    /// CSS color.
    pub color: &'a str,
    /// `(x, y)` points.
    pub points: Vec<(f64, f64)>,
}

/// Canvas size, margins and the scales mapping data into the plot area.
struct Plot {
    w: f64,
    h: f64,
    /// Left margin (room for the y tick labels).
    l: f64,
    /// Top margin (room for the title).
    t: f64,
    /// Plot area width and height.
    pw: f64,
    ph: f64,
    /// Tick values; the last of each is the axis maximum.
    xt: Vec<f64>,
    yt: Vec<f64>,
    xm: f64,
    ym: f64,
}

impl Plot {
    fn new(lines: &[Line<'_>]) -> Plot {
        let (w, h) = (760.0, 280.0);
        let (l, r, t, b) = (70.0, 20.0, 30.0, 40.0);
        let all = lines.iter().flat_map(|s| s.points.iter());
        let xmax = all.clone().map(|p| p.0).fold(0.0, f64::max);
        let ymax = all.map(|p| p.1).fold(0.0, f64::max);
        let xt = nice_ticks(xmax, 8);
        let yt = nice_ticks(ymax, 5);
        let xm = xt.last().copied().unwrap_or(1.0).max(1e-9);
        let ym = yt.last().copied().unwrap_or(1.0).max(1e-9);
        Plot {
            w,
            h,
            l,
            t,
            pw: w - l - r,
            ph: h - t - b,
            xt,
            yt,
            xm,
            ym,
        }
    }

    fn sx(&self, x: f64) -> f64 {
        self.l + x / self.xm * self.pw
    }

    fn sy(&self, y: f64) -> f64 {
        self.t + self.ph - y / self.ym * self.ph
    }

    /// The `<svg>` opening tag and the title.
    fn header(&self, s: &mut String, title: &str) {
        let (w, h, l) = (self.w, self.h, self.l);
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{}">"#,
            esc(title)
        );
        let _ = write!(
            s,
            r#"<text x="{l}" y="18" font-size="14" font-weight="bold">{}</text>"#,
            esc(title)
        );
    }

    /// Grid lines with their tick labels, the plot frame and the axis labels.
    fn axes(&self, s: &mut String, x_label: &str, y_label: &str) {
        let (h, l, t, pw, ph) = (self.h, self.l, self.t, self.pw, self.ph);
        for &y in &self.yt {
            let py = self.sy(y);
            let _ = write!(
                s,
                r##"<line x1="{l}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
                l + pw,
                l - 6.0,
                py + 4.0,
                human(y)
            );
        }
        for &x in &self.xt {
            let px = self.sx(x);
            let _ = write!(
                s,
                r##"<line x1="{px:.1}" x2="{px:.1}" y1="{t}" y2="{}" stroke="#eee"/><text x="{px:.1}" y="{}" font-size="11" text-anchor="middle">{}</text>"##,
                t + ph,
                t + ph + 15.0,
                human(x)
            );
        }
        let _ = write!(
            s,
            r##"<rect x="{l}" y="{t}" width="{pw}" height="{ph}" fill="none" stroke="#888"/><text x="{}" y="{}" font-size="12" text-anchor="middle">{}</text><text x="14" y="{}" font-size="12" text-anchor="middle" transform="rotate(-90 14 {})">{}</text>"##,
            l + pw / 2.0,
            h - 6.0,
            esc(x_label),
            t + ph / 2.0,
            t + ph / 2.0,
            esc(y_label)
        );
    }

    /// Labelled dashed vertical lines (step starts).
    fn markers(&self, s: &mut String, markers: &[(f64, String)]) {
        let (t, ph) = (self.t, self.ph);
        for (x, label) in markers {
            let px = self.sx(*x);
            let _ = write!(
                s,
                r##"<line x1="{px:.1}" x2="{px:.1}" y1="{t}" y2="{}" stroke="#999" stroke-dasharray="4 3"/><text x="{:.1}" y="{}" font-size="10" fill="#555">{}</text>"##,
                t + ph,
                px + 3.0,
                t + 10.0,
                esc(label)
            );
        }
    }

    /// Each line as a polyline, with its legend entry in the top right corner.
    fn lines(&self, s: &mut String, lines: &[Line<'_>]) {
        for (i, line) in lines.iter().enumerate() {
            let pts: Vec<String> = line
                .points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", self.sx(x), self.sy(y)))
                .collect();
            if !pts.is_empty() {
                let _ = write!(
                    s,
                    r#"<polyline fill="none" stroke="{}" stroke-width="1.8" points="{}"/>"#,
                    esc(line.color),
                    pts.join(" ")
                );
            }
            let lx = self.l + self.pw - 150.0;
            let ly = self.t + 14.0 + i as f64 * 16.0;
            let _ = write!(
                s,
                r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{}" stroke-width="3"/><text x="{}" y="{}" font-size="12">{}</text>"#,
                lx + 18.0,
                esc(line.color),
                lx + 24.0,
                ly + 4.0,
                esc(line.name)
            );
        }
    }
}

/// An SVG line chart; `markers` are labelled vertical lines (step starts).
pub(super) fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    lines: &[Line<'_>],
    markers: &[(f64, String)],
) -> String {
    let plot = Plot::new(lines);
    let mut s = String::new();
    plot.header(&mut s, title);
    plot.axes(&mut s, x_label, y_label);
    plot.markers(&mut s, markers);
    plot.lines(&mut s, lines);
    s.push_str("</svg>");
    s
}
