//! The peers table as a PNG: one horizontal bar per row (audio seconds per wall second),
//! grouped by case, coloured by implementation. Text needs a TrueType font file: the
//! first of `BENCH_FONT` and the usual DejaVu Sans / Liberation / macOS paths that exists
//! (the bench setup installs Debian's fonts-dejavu-core).

use std::path::{Path, PathBuf};

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

use super::peers::Row;

const FONT_PATHS: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// The font file used for the chart's text, if one is found.
pub fn font_path() -> Option<PathBuf> {
    std::env::var_os("BENCH_FONT")
        .map(PathBuf::from)
        .into_iter()
        .chain(FONT_PATHS.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

fn register(font: &Path) -> Result<(), String> {
    let bytes = std::fs::read(font).map_err(|e| format!("{}: {e}", font.display()))?;
    // plotters keeps fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| format!("{}: not a usable font", font.display()))
}

fn colour(implementation: &str) -> RGBColor {
    match implementation {
        "Steno" => RGBColor(0xd9, 0x5f, 0x02),
        "mlx-whisper" => RGBColor(0x75, 0x70, 0xb3),
        "faster-whisper int8" => RGBColor(0x1b, 0x9e, 0x77),
        "faster-whisper float32" => RGBColor(0x66, 0xa6, 0x1e),
        "faster-whisper int8 batched" => RGBColor(0x1f, 0x78, 0xb4),
        _ => RGBColor(0x80, 0x80, 0x80),
    }
}

/// Draws `rows` into `out` (PNG).
pub fn draw(rows: &[Row], title: &str, out: &Path) -> Result<(), String> {
    let font = font_path().ok_or_else(|| {
        format!(
            "no font file for the chart's text (tried {FONT_PATHS:?}; set BENCH_FONT or install fonts-dejavu-core)"
        )
    })?;
    register(&font)?;
    // plotters counts segments from the bottom: reverse, so the table's first row is on top.
    let rows: Vec<&Row> = rows.iter().rev().collect();
    let labels: Vec<String> = rows
        .iter()
        .map(|r| format!("{}: {} ({})", r.case, r.implementation, r.mode))
        .collect();
    let max = rows.iter().map(|r| r.speed()).fold(0.0, f64::max).max(1e-3);
    let height = 120 + 34 * rows.len() as u32;
    let root = BitMapBackend::new(out, (1200, height)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<_>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(470)
        .build_cartesian_2d(0.0..max * 1.3, (0..rows.len()).into_segmented())
        .map_err(e)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(WHITE)
        .x_desc("audio seconds per wall second (higher is faster)")
        .y_labels(rows.len())
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    chart
        .draw_series(rows.iter().enumerate().map(|(i, r)| {
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(i)),
                    (r.speed(), SegmentValue::Exact(i + 1)),
                ],
                colour(&r.implementation).filled(),
            );
            bar.set_margin(4, 4, 0, 0);
            bar
        }))
        .map_err(e)?;
    chart
        .draw_series(rows.iter().enumerate().map(|(i, r)| {
            Text::new(
                format!("{:.1}  (WER {:.1} %)", r.speed(), 100.0 * r.wer),
                (r.speed() + max * 0.01, SegmentValue::CenterOf(i)),
                TextStyle::from(("sans-serif", 13).into_font())
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            )
        }))
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png() {
        if font_path().is_none() {
            eprintln!("skipped: no font file (the bench setup installs fonts-dejavu-core)");
            return;
        }
        let row = |case: &'static str, implementation: &str, wall: f64| Row {
            case,
            implementation: implementation.into(),
            mode: "1 process".into(),
            audio_seconds: 60.0,
            wall_seconds: wall,
            wer: 0.05,
            peak_rss: 1 << 28,
            mlx_peak: None,
            profile: None,
        };
        let rows = [
            row("long", "Steno", 10.0),
            row("long", "mlx-whisper", 30.0),
            row("clips", "faster-whisper int8", 5.0),
        ];
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("chart.png");
        draw(&rows, "test", &out).unwrap();
        let png = std::fs::read(&out).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        if let Some(keep) = std::env::var_os("BENCH_CHART_SAMPLE") {
            std::fs::copy(&out, keep).unwrap();
        }
    }
}
