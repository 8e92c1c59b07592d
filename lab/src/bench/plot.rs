//! `results.png` of `twill bench`: one bar chart per figure (TCP 1 stream,
//! TCP 4 streams, 64-byte UDP packet rate, request/response latency, new
//! connections per second), one bar per system. Pure Rust (plotters' bitmap backend with ab_glyph); the
//! only thing it needs from the system is a TrueType font file.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

/// Fonts tried in order (Debian: fonts-dejavu-core; Fedora: dejavu-sans-fonts).
const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
];

/// One panel: a title and a value per system (None: not measured).
#[derive(Debug, Clone)]
pub struct Panel {
    /// Title, with the unit.
    pub title: String,
    /// `(system, value)` in table order.
    pub bars: Vec<(String, Option<f64>)>,
}

/// A bar's colour: twill blue, the kernel anchor grey, the limit green.
fn colour(system: &str) -> RGBColor {
    match system {
        "twill-vxlan" => RGBColor(0x2b, 0x6c, 0xb0),
        "twill-vxlan-svc" => RGBColor(0x1f, 0x4e, 0x79),
        "twill-vxlan-pol" => RGBColor(0x4b, 0x3f, 0x9e),
        "twill-udp" => RGBColor(0x6b, 0xae, 0xd6),
        "kernel-vxlan" => RGBColor(0x88, 0x88, 0x88),
        _ => RGBColor(0x33, 0xa0, 0x2c),
    }
}

fn load_font() -> Result<()> {
    let path = FONTS
        .iter()
        .find(|p| Path::new(p).exists())
        .ok_or_else(|| {
            anyhow!(
                "no DejaVuSans.ttf found (looked in {}); install fonts-dejavu-core",
                FONTS.join(", ")
            )
        })?;
    let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    // plotters keeps registered fonts for the life of the process; one
    // leaked copy per `twill bench` run.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{path} is not a usable TrueType font"))?;
    Ok(())
}

/// Draws `panels` two per row into `path` (PNG, 1400 wide, 500 per row).
pub fn draw(path: &Path, caption: &str, panels: &[Panel]) -> Result<()> {
    if panels.len() > 6 {
        bail!("at most 6 panels");
    }
    load_font()?;
    let rows = panels.len().div_ceil(2).max(1);
    let root = BitMapBackend::new(path, (1400, 500 * rows as u32)).into_drawing_area();
    let err = |e: DrawingAreaErrorKind<_>| anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(caption, ("sans-serif", 18)).map_err(err)?;
    for (area, panel) in root.split_evenly((rows, 2)).iter().zip(panels) {
        draw_panel(area, panel).map_err(|e| anyhow!("drawing {}: {e}", path.display()))?;
    }
    root.present().map_err(err)?;
    Ok(())
}

fn draw_panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    panel: &Panel,
) -> Result<(), DrawingAreaErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>> {
    let n = panel.bars.len();
    let max = panel
        .bars
        .iter()
        .filter_map(|(_, v)| *v)
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let top = if max > 0.0 { max * 1.2 } else { 1.0 };
    let names: Vec<String> = panel.bars.iter().map(|(s, _)| s.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 22))
        .margin(18)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d((0..n.saturating_sub(1)).into_segmented(), 0.0..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_labels(n.max(1))
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .label_style(("sans-serif", 16))
        .draw()?;
    let anchor = panel
        .bars
        .iter()
        .find(|(s, _)| s == "kernel-vxlan")
        .and_then(|(_, v)| *v)
        .filter(|a| *a > 0.0);
    let label_style =
        TextStyle::from(("sans-serif", 16).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    for (i, (system, v)) in panel.bars.iter().enumerate() {
        let Some(v) = v.filter(|v| v.is_finite()) else {
            continue;
        };
        let mut bar = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), v),
            ],
            colour(system).filled(),
        );
        bar.set_margin(0, 0, 20, 20);
        chart.draw_series(std::iter::once(bar))?;
        let label = match anchor {
            Some(a) => format!("{} ({:.2}×)", format_value(v), v / a),
            None => format_value(v),
        };
        chart.draw_series(std::iter::once(Text::new(
            label,
            (SegmentValue::CenterOf(i), v + top * 0.01),
            label_style.clone(),
        )))?;
    }
    Ok(())
}

fn format_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
