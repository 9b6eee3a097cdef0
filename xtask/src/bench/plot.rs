//! `--plot FILE.svg`: teardown time (with the cost model) and invalidation commands
//! against memory size, log-log, one line per strategy, one pair of charts per format
//! and backing. Plain SVG written here (no plotting dependency).

use std::fmt::Write;

use super::cases::{Backing, Format, STRATEGIES};
use super::cost::CostModel;
use super::Row;

const W: f64 = 300.0;
const H: f64 = 200.0;
const PAD: f64 = 48.0;
const COLORS: [&str; 5] = ["#d62728", "#ff7f0e", "#9467bd", "#1f77b4", "#2ca02c"];

/// One chart: `points[s]` are (GiB, value) for strategy `s`.
fn chart(out: &mut String, x0: f64, y0: f64, title: &str, points: &[Vec<(f64, f64)>]) {
    let all: Vec<(f64, f64)> = points.iter().flatten().copied().filter(|p| p.1 > 0.0).collect();
    if all.is_empty() {
        return;
    }
    let (xl, xh) =
        all.iter().fold((f64::MAX, f64::MIN), |(l, h), p| (l.min(p.0.log10()), h.max(p.0.log10())));
    let (yl, yh) =
        all.iter().fold((f64::MAX, f64::MIN), |(l, h), p| (l.min(p.1.log10()), h.max(p.1.log10())));
    let (yl, yh) = (yl.floor(), yh.ceil().max(yl.floor() + 1.0));
    let xs = |x: f64| x0 + PAD + (x.log10() - xl) / (xh - xl).max(1e-9) * (W - 1.5 * PAD);
    let ys = |y: f64| y0 + H - PAD + (yl - y.log10()) / (yh - yl) * (H - 1.5 * PAD);
    let _ =
        writeln!(out, r#"<text x="{}" y="{}" font-size="11">{title}</text>"#, x0 + PAD, y0 + 14.0);
    let _ = writeln!(
        out,
        r#"<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="grey"/>"#,
        x0 + PAD,
        y0 + PAD / 2.0,
        W - 1.5 * PAD,
        H - 1.5 * PAD
    );
    for d in yl as i32..=yh as i32 {
        let y = ys(10f64.powi(d));
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" font-size="9" text-anchor="end">1e{d}</text>"#,
            x0 + PAD - 3.0,
            y + 3.0
        );
    }
    for &(g, _) in &points[0] {
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" font-size="9" text-anchor="middle">{g}G</text>"#,
            xs(g),
            y0 + H - PAD + 12.0
        );
    }
    for (s, line) in points.iter().enumerate() {
        let pts: Vec<String> = line
            .iter()
            .filter(|p| p.1 > 0.0)
            .map(|&(x, y)| format!("{:.1},{:.1}", xs(x), ys(y)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
            COLORS[s],
            pts.join(" ")
        );
    }
}

/// The whole figure for `rows` (the modelled rows are drawn).
pub fn svg(rows: &[Row], model: CostModel) -> String {
    let mut out = String::new();
    let cols = 4.0;
    let panels = (Format::ALL.len() * Backing::ALL.len()) as f64;
    let height = (panels * 2.0 / cols).ceil() * H + 40.0;
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="sans-serif">"#,
        cols * W
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (i, (_, name)) in STRATEGIES.iter().enumerate() {
        let x = 10.0 + i as f64 * 150.0;
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="8" width="12" height="4" fill="{}"/><text x="{}" y="14" font-size="11">{name}</text>"#,
            COLORS[i],
            x + 16.0
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="780" y="14" font-size="11">teardown time: CPU + {} ns/wait + {} ns/extra command</text>"#,
        model.sync_ns, model.cmd_ns
    );
    let mut k = 0.0;
    for f in Format::ALL {
        for b in Backing::ALL {
            for metric in ["time ms", "invalidations"] {
                let points: Vec<Vec<(f64, f64)>> = STRATEGIES
                    .iter()
                    .map(|(_, s)| {
                        rows.iter()
                            .filter(|r| {
                                r.m.format == f
                                    && r.m.backing == b
                                    && r.m.strategy == *s
                                    && r.model == model
                            })
                            .map(|r| {
                                let v = if metric == "time ms" {
                                    r.nanos() as f64 / 1e6
                                } else {
                                    r.m.invalidations as f64
                                };
                                (r.m.gib as f64, v)
                            })
                            .collect()
                    })
                    .collect();
                let x0 = (k % cols) * W;
                let y0 = 30.0 + (k / cols).floor() * H;
                chart(&mut out, x0, y0, &format!("{} {}: {metric}", f.name(), b.name()), &points);
                k += 1.0;
            }
        }
    }
    out.push_str("</svg>\n");
    out
}
