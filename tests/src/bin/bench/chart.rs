//! The PNG chart: one bar per missiongate ratio (plotters, with a public-domain 8x8 font).

use std::path::Path;

/// Text in the public-domain 8x8 font, `scale` pixels per font pixel (ASCII only).
pub fn text<DB: plotters::prelude::DrawingBackend>(
    area: &plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    x: i32,
    y: i32,
    s: &str,
    scale: i32,
    color: &plotters::style::RGBColor,
) {
    use plotters::prelude::*;
    for (i, ch) in s.chars().enumerate() {
        let code = if ch.is_ascii() { ch as usize } else { b'?' as usize };
        let glyph = font8x8::legacy::BASIC_LEGACY[code];
        for (gy, row) in glyph.iter().enumerate() {
            for gx in 0..8 {
                if row & (1 << gx) != 0 {
                    let px = x + (i as i32 * 8 + gx) * scale;
                    let py = y + gy as i32 * scale;
                    let _ = area.draw(&Rectangle::new([(px, py), (px + scale, py + scale)], color.filled()));
                }
            }
        }
    }
}

pub struct Bar {
    pub label: String,
    pub ratio: f64,
    pub target: Option<f64>,
    pub detail: String,
    pub diagnostic: bool,
}

pub fn chart(path: &Path, title: &str, subtitle: &[String], bars: &[Bar]) -> Result<(), String> {
    use plotters::prelude::*;
    // Each bar takes two text lines: the label and the bar, then the figures under the bar.
    let (w, row_h, left, axis_w) = (1660i32, 64i32, 540i32, 960i32);
    let top = 40 + 22 * subtitle.len() as i32 + 40;
    let bottom = top + row_h * bars.len() as i32;
    let h = bottom + 64;
    let max_ratio = 1.5f64;
    let x_of = |r: f64| left + (r.clamp(0.0, max_ratio) / max_ratio * f64::from(axis_w)) as i32;
    let root = BitMapBackend::new(path, (w as u32, h as u32)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<_>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let ink = RGBColor(30, 30, 30);
    let grey = RGBColor(120, 120, 120);
    text(&root, 20, 14, title, 3, &ink);
    for (i, line) in subtitle.iter().enumerate() {
        text(&root, 20, 48 + 22 * i as i32, line, 2, &grey);
    }
    for i in 0..=((max_ratio / 0.1).round() as i32) {
        let t = f64::from(i) * 0.1;
        let x = x_of(t);
        let major = i % 5 == 0;
        let c = if i == 10 {
            RGBColor(60, 60, 60)
        } else if major {
            RGBColor(200, 200, 200)
        } else {
            RGBColor(235, 235, 235)
        };
        root.draw(&PathElement::new(vec![(x, top - 6), (x, bottom)], c.stroke_width(1))).map_err(e)?;
        if major {
            text(&root, x - 24, bottom + 8, &format!("{t:.1}x"), 2, &grey);
        }
    }
    text(&root, left, bottom + 34, "req/s of missiongate / req/s of its native counterpart", 2, &grey);
    for (i, b) in bars.iter().enumerate() {
        let y = top + row_h * i as i32;
        let pass = b.target.map(|t| b.ratio >= t);
        let color = match (b.diagnostic, pass) {
            (true, _) => RGBColor(150, 170, 200),
            (false, Some(true)) => RGBColor(60, 160, 90),
            (false, Some(false)) => RGBColor(210, 70, 60),
            (false, None) => RGBColor(70, 110, 180),
        };
        text(&root, 20, y + 8, &b.label, 2, &ink);
        let x1 = x_of(b.ratio).max(left + 2);
        root.draw(&Rectangle::new([(left, y + 4), (x1, y + 28)], color.filled())).map_err(e)?;
        let mut value = format!("{:.2}x", b.ratio);
        if b.ratio > max_ratio {
            value.push_str(" >");
        }
        if let (Some(t), Some(p)) = (b.target, pass) {
            let x = x_of(t);
            root.draw(&PathElement::new(vec![(x, y), (x, y + 32)], RGBColor(20, 20, 20).stroke_width(3))).map_err(e)?;
            value = format!("{value} {} (target {t:.1}x)", if p { "PASS" } else { "MISS" });
        }
        let vx =
            if b.ratio > max_ratio { x1 - 8 - 16 * value.len() as i32 } else { x1.max(b.target.map_or(0, x_of)) + 10 };
        let vcolor = if b.ratio > max_ratio { WHITE } else { ink };
        text(&root, vx, y + 8, &value, 2, &vcolor);
        root.draw(&Rectangle::new([(left, y + 34), (left + 16 * b.detail.len() as i32, y + 52)], WHITE.filled()))
            .map_err(e)?;
        text(&root, left, y + 36, &b.detail, 2, &grey);
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}
