//! Plots of a run's latencies with plotters: the percentile distribution of each latency
//! (x in "nines": 90%, 99%, 99.9%, … evenly spaced) above the latency over time. SVG or PNG,
//! chosen by the file's extension.
//!
//! Text is laid out (both formats) and rasterised (PNG) by plotters' `ab_glyph` feature from a
//! TrueType font read at run time (DEPENDENCIES.md note 12; no fontconfig, no freetype):
//! `$LONGLINK_BENCH_FONT`, else DejaVu Sans (Debian's `fonts-dejavu-core`), Liberation Sans
//! or FreeSans where Debian puts them.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, bail};
use plotters::coord::Shift;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// Image size in pixels.
const SIZE: (u32, u32) = (1100, 900);
/// Highest "nines" on the x axis: 99.999%.
const MAX_NINES: f64 = 5.0;
/// Font files tried for PNG output, after `$LONGLINK_BENCH_FONT`.
const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
];
const FONT: &str = "sans-serif";
const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// What [`latency`] draws.
#[derive(Debug, Clone)]
pub(crate) struct LatencyPlot {
    pub(crate) title: String,
    /// Per series: (quantile in 0..1, latency in ms).
    pub(crate) distributions: Vec<(String, Vec<(f64, f64)>)>,
    /// Per series: (seconds after t0, latency in ms).
    pub(crate) over_time: Vec<(String, Vec<(f64, f64)>)>,
    /// A horizontal line: the target.
    pub(crate) target_ms: Option<f64>,
    /// The target line's legend, e.g. "target: p99 ≤ 10 ms".
    pub(crate) target_label: String,
    /// Caption of the upper chart (what the latency is measured from).
    pub(crate) distribution_caption: String,
    /// Caption of the lower chart.
    pub(crate) over_time_caption: String,
    /// The lower chart's x axis.
    pub(crate) over_time_x: String,
}

/// The quantiles at which distributions are sampled: evenly spaced in nines, 0 … 99.999%.
pub(crate) fn nines_points() -> Vec<f64> {
    (0..=100)
        .map(|i| {
            let nines = f64::from(i) * MAX_NINES / 100.0;
            1.0 - 10f64.powf(-nines)
        })
        .collect()
}

/// Refuses an output path the plot cannot be written to (before a long run, not after).
///
/// # Errors
/// An extension other than `.svg` or `.png`; no usable font.
pub(crate) fn check_path(path: &Path) -> anyhow::Result<()> {
    match extension(path).as_deref() {
        Some("svg" | "png") => font(),
        _ => bail!(
            "--plot {}: the file name must end in .svg or .png",
            path.display()
        ),
    }
}

/// Draws `plot` into `path` (.svg or .png).
///
/// # Errors
/// A bad extension, no font for a PNG, or the file cannot be written.
pub(crate) fn latency(path: &Path, plot: &LatencyPlot) -> anyhow::Result<()> {
    font()?;
    match extension(path).as_deref() {
        Some("svg") => draw(SVGBackend::new(path, SIZE).into_drawing_area(), plot),
        Some("png") => draw(BitMapBackend::new(path, SIZE).into_drawing_area(), plot),
        _ => bail!(
            "--plot {}: the file name must end in .svg or .png",
            path.display()
        ),
    }
}

/// Draws `plot` into `path` (a scenario's `--plot`) and says so.
///
/// # Errors
/// As [`latency`].
pub(crate) fn write(path: &Path, plot: &LatencyPlot) -> anyhow::Result<()> {
    latency(path, plot)?;
    println!("plot written to {}", path.display());
    Ok(())
}

fn extension(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|ext| ext.to_str())
        .map(str::to_ascii_lowercase)
}

/// Registers a TrueType font as "sans-serif" once; the error says what was tried.
fn font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let from_env = std::env::var("LONGLINK_BENCH_FONT").ok();
            let candidates = from_env
                .iter()
                .map(String::as_str)
                .chain(FONT_CANDIDATES.iter().copied());
            for candidate in candidates {
                let Ok(bytes) = std::fs::read(candidate) else {
                    continue;
                };
                // plotters keeps fonts for the life of the process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_ok() {
                    return Ok(());
                }
            }
            Err(format!(
                "a plot needs a TrueType font to lay out its text: set LONGLINK_BENCH_FONT to a .ttf file (tried {}; Debian: apt-get install fonts-dejavu-core)",
                FONT_CANDIDATES.join(", ")
            ))
        })
        .clone()
        .map_err(|message| anyhow!(message))
}

/// A plotters error as an anyhow error (plotters' error types carry the backend's).
fn plotting<E: std::fmt::Display>(err: E) -> anyhow::Error {
    anyhow!("cannot draw the plot: {err}")
}

/// "nines" (x axis position) of a quantile.
fn nines(q: f64) -> f64 {
    (-(1.0 - q).max(1e-12).log10()).clamp(0.0, MAX_NINES)
}

fn nines_label(x: f64) -> String {
    let percent = (1.0 - 10f64.powf(-x)) * 100.0;
    let decimals = (x.round() as usize).saturating_sub(2);
    format!("{percent:.decimals$}%")
}

/// (low, high) of the positive values, widened for a log axis.
fn log_bounds<'a>(
    series: impl Iterator<Item = &'a (String, Vec<(f64, f64)>)>,
    extra: Option<f64>,
) -> (f64, f64) {
    let mut low = f64::INFINITY;
    let mut high = 0f64;
    for (_, points) in series {
        for &(_, y) in points {
            if y > 0.0 {
                low = low.min(y);
                high = high.max(y);
            }
        }
    }
    if let Some(extra) = extra {
        high = high.max(extra);
        low = low.min(extra);
    }
    if !low.is_finite() || high <= 0.0 {
        return (0.01, 10.0);
    }
    ((low * 0.7).max(0.001), high * 1.5)
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    plot: &LatencyPlot,
) -> anyhow::Result<()> {
    root.fill(&WHITE).map_err(plotting)?;
    let root = root.titled(&plot.title, (FONT, 20)).map_err(plotting)?;
    let (top, bottom) = root.split_vertically(SIZE.1 / 2 - 20);

    // Latency by percentile.
    let (low, high) = log_bounds(plot.distributions.iter(), plot.target_ms);
    let mut chart = ChartBuilder::on(&top)
        .margin(12)
        .margin_right(40)
        .caption(plot.distribution_caption.as_str(), (FONT, 16))
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..MAX_NINES, (low..high).log_scale())
        .map_err(plotting)?;
    chart
        .configure_mesh()
        .x_labels(6)
        .x_label_formatter(&|x| nines_label(*x))
        .y_label_formatter(&|y| format!("{y}"))
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .label_style((FONT, 13))
        .draw()
        .map_err(plotting)?;
    for (i, (label, points)) in plot.distributions.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                points
                    .iter()
                    .filter(|(_, ms)| *ms > 0.0)
                    .map(|&(q, ms)| (nines(q), ms)),
                color.stroke_width(2),
            ))
            .map_err(plotting)?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    if let Some(target) = plot.target_ms {
        target_line(&mut chart, &plot.target_label, target, MAX_NINES)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;

    // Latency over time.
    let (low, high) = log_bounds(plot.over_time.iter(), plot.target_ms);
    let end = plot
        .over_time
        .iter()
        .flat_map(|(_, points)| points.iter().map(|&(t, _)| t))
        .fold(0f64, f64::max)
        .max(0.1);
    let mut chart = ChartBuilder::on(&bottom)
        .margin(12)
        .margin_right(40)
        .caption(plot.over_time_caption.as_str(), (FONT, 16))
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..end, (low..high).log_scale())
        .map_err(plotting)?;
    chart
        .configure_mesh()
        .x_desc(plot.over_time_x.as_str())
        .y_desc("latency (ms)")
        .y_label_formatter(&|y| format!("{y}"))
        .label_style((FONT, 13))
        .draw()
        .map_err(plotting)?;
    for (i, (label, points)) in plot.over_time.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied().filter(|(_, ms)| *ms > 0.0),
                color.stroke_width(if i == 1 { 2 } else { 1 }),
            ))
            .map_err(plotting)?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    if let Some(target) = plot.target_ms {
        chart
            .draw_series(LineSeries::new([(0.0, target), (end, target)], RED))
            .map_err(plotting)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present().map_err(plotting)?;
    Ok(())
}

/// What [`series`] draws: charts stacked top to bottom, each a few lines on linear axes from 0
/// (counts or rates over time, where the latency plot's log axis does not fit).
#[derive(Debug, Clone)]
pub(crate) struct SeriesPlot {
    pub(crate) title: String,
    pub(crate) charts: Vec<SeriesChart>,
}

/// One chart of a [`SeriesPlot`].
#[derive(Debug, Clone)]
pub(crate) struct SeriesChart {
    pub(crate) caption: String,
    pub(crate) x_desc: String,
    pub(crate) y_desc: String,
    /// Per line: its legend and (x, y) points.
    pub(crate) series: Vec<(String, Vec<(f64, f64)>)>,
}

/// Draws `plot` into `path` (.svg or .png) and says so.
///
/// # Errors
/// A bad extension, no font, or the file cannot be written.
pub(crate) fn series(path: &Path, plot: &SeriesPlot) -> anyhow::Result<()> {
    series_styled(path, plot, &SeriesStyle::default())
}

/// What [`series_styled`] adds to a [`SeriesPlot`]'s charts. A separate value rather than more
/// fields of [`SeriesChart`], so the scenarios that build plain charts need not name them.
#[derive(Debug, Clone, Default)]
pub(crate) struct SeriesStyle {
    /// A horizontal line across every chart, drawn in red: its legend and y (a target).
    pub(crate) target: Option<(String, f64)>,
    /// A dot at every point: lines of a few measured points (a sweep), not a time series.
    pub(crate) markers: bool,
    /// y on a log scale, for lines of different magnitudes (e.g. nats-server's ~20 KB per
    /// connection beside mosquitto's ~1 KB) that a linear axis would flatten.
    pub(crate) log_y: bool,
}

/// [`series`] with `style`'s target line, markers and y scale.
///
/// # Errors
/// As [`series`].
pub(crate) fn series_styled(
    path: &Path,
    plot: &SeriesPlot,
    style: &SeriesStyle,
) -> anyhow::Result<()> {
    font()?;
    match extension(path).as_deref() {
        Some("svg") => draw_series(SVGBackend::new(path, SIZE).into_drawing_area(), plot, style),
        Some("png") => draw_series(
            BitMapBackend::new(path, SIZE).into_drawing_area(),
            plot,
            style,
        ),
        _ => bail!(
            "plot {}: the file name must end in .svg or .png",
            path.display()
        ),
    }?;
    println!("plot written to {}", path.display());
    Ok(())
}

fn draw_series<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    plot: &SeriesPlot,
    style: &SeriesStyle,
) -> anyhow::Result<()> {
    root.fill(&WHITE).map_err(plotting)?;
    let root = root.titled(&plot.title, (FONT, 20)).map_err(plotting)?;
    let areas = root.split_evenly((plot.charts.len().max(1), 1));
    for (chart_spec, area) in plot.charts.iter().zip(areas.iter()) {
        let points = || chart_spec.series.iter().flat_map(|(_, p)| p.iter());
        let x_end = points().map(|&(x, _)| x).fold(0f64, f64::max).max(0.1);
        let target = style.target.as_ref().map(|(_, y)| *y);
        let builder = |area| {
            let mut builder = ChartBuilder::on(area);
            builder
                .margin(12)
                .margin_right(40)
                .caption(chart_spec.caption.as_str(), (FONT, 16))
                .x_label_area_size(40)
                .y_label_area_size(80);
            builder
        };
        // The two scales are different coordinate types: one generic body draws either.
        if style.log_y {
            let (low, high) = log_bounds(chart_spec.series.iter(), target);
            let chart = builder(area)
                .build_cartesian_2d(0f64..x_end, (low..high).log_scale())
                .map_err(plotting)?;
            draw_chart(chart, chart_spec, style, x_end)?;
        } else {
            let y_end = points()
                .map(|&(_, y)| y)
                .chain(target)
                .fold(0f64, f64::max)
                .max(1.0)
                * 1.05;
            let chart = builder(area)
                .build_cartesian_2d(0f64..x_end, 0f64..y_end)
                .map_err(plotting)?;
            draw_chart(chart, chart_spec, style, x_end)?;
        }
    }
    root.present().map_err(plotting)?;
    Ok(())
}

/// Mesh, lines, target and legend of one [`SeriesChart`], on a linear or a log y axis.
fn draw_chart<'a, DB, Y>(
    mut chart: ChartContext<'a, DB, Cartesian2d<RangedCoordf64, Y>>,
    chart_spec: &SeriesChart,
    style: &SeriesStyle,
    x_end: f64,
) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(chart_spec.x_desc.as_str())
        .y_desc(chart_spec.y_desc.as_str())
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style((FONT, 13))
        .draw()
        .map_err(plotting)?;
    for (i, (label, points)) in chart_spec.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        // A log axis has no place for 0 or less.
        let shown = || {
            points
                .iter()
                .copied()
                .filter(|&(_, y)| !style.log_y || y > 0.0)
        };
        chart
            .draw_series(LineSeries::new(shown(), color.stroke_width(2)))
            .map_err(plotting)?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        if style.markers {
            chart
                .draw_series(shown().map(|point| Circle::new(point, 4, color.filled())))
                .map_err(plotting)?;
        }
    }
    if let Some((label, target)) = &style.target {
        target_line(&mut chart, label, *target, x_end)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    Ok(())
}

/// The target as a thin red line across the chart (0 … `x_end`), in the legend as `label`.
fn target_line<'a, DB, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, Y>>,
    label: &str,
    target: f64,
    x_end: f64,
) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    Y: Ranged<ValueType = f64>,
{
    chart
        .draw_series(LineSeries::new(
            [(0.0, target), (x_end, target)],
            RED.stroke_width(1),
        ))
        .map_err(plotting)?
        .label(label)
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    Ok(())
}

/// The legend box, at `position`.
fn legend<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 13))
        .draw()
        .map_err(plotting)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LatencyPlot {
        let curve: Vec<(f64, f64)> = nines_points()
            .into_iter()
            .map(|q| (q, 1.0 + 20.0 * q * q))
            .collect();
        LatencyPlot {
            title: "test".to_owned(),
            distributions: vec![("a".to_owned(), curve.clone()), ("b".to_owned(), curve)],
            over_time: vec![(
                "c".to_owned(),
                (0..50)
                    .map(|i| (f64::from(i) * 0.1, 2.0 + f64::from(i % 7)))
                    .collect(),
            )],
            target_ms: Some(10.0),
            target_label: "target: p99 ≤ 10 ms".to_owned(),
            distribution_caption: "by percentile".to_owned(),
            over_time_caption: "over time".to_owned(),
            over_time_x: "seconds".to_owned(),
        }
    }

    #[test]
    fn labels_and_points() {
        assert_eq!(nines_label(2.0), "99%");
        assert_eq!(nines_label(3.0), "99.9%");
        assert_eq!(nines_label(0.0), "0%");
        let points = nines_points();
        assert_eq!(points.first().copied(), Some(0.0));
        assert!((nines(points[60]) - 3.0).abs() < 1e-9);
    }

    #[test]
    fn writes_svg_when_a_font_exists() {
        if font().is_err() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plot.svg");
        check_path(&path).unwrap();
        latency(&path, &sample()).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("<svg") && svg.contains("99.9%"));
        assert!(check_path(&dir.path().join("plot.jpg")).is_err());
    }

    #[test]
    fn writes_series_svg_when_a_font_exists() {
        if font().is_err() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("series.svg");
        let line: Vec<(f64, f64)> = (0..20)
            .map(|i| (f64::from(i) * 0.1, f64::from(i * i)))
            .collect();
        let chart = SeriesChart {
            caption: "count".to_owned(),
            x_desc: "seconds".to_owned(),
            y_desc: "messages".to_owned(),
            series: vec![("pulled".to_owned(), line)],
        };
        let plot = SeriesPlot {
            title: "test".to_owned(),
            charts: vec![chart.clone(), chart],
        };
        series(&path, &plot).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("<svg") && svg.contains("pulled"));
        assert!(series(&dir.path().join("series.jpg"), &plot).is_err());
    }

    #[test]
    fn writes_styled_series_svg_when_a_font_exists() {
        if font().is_err() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.svg");
        let plot = SeriesPlot {
            title: "test".to_owned(),
            charts: vec![SeriesChart {
                caption: "RSS per connection".to_owned(),
                x_desc: "connections".to_owned(),
                y_desc: "bytes".to_owned(),
                series: vec![
                    ("low".to_owned(), vec![(1000.0, 900.0), (5000.0, 1000.0)]),
                    (
                        "high".to_owned(),
                        vec![(1000.0, 20_000.0), (5000.0, 21_000.0)],
                    ),
                ],
            }],
        };
        let style = SeriesStyle {
            target: Some(("target ≤ 2,048 B".to_owned(), 2048.0)),
            markers: true,
            log_y: true,
        };
        series_styled(&path, &plot, &style).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("<svg") && svg.contains("target") && svg.contains("<circle"));
    }

    #[test]
    fn writes_png_when_a_font_exists() {
        if font().is_err() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plot.png");
        latency(&path, &sample()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"));
    }
}
