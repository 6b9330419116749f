//! SVG charts of a run, drawn with plotters' SVG backend from the run's own figures:
//! tasks/s against workers for the fleet's diamond burst (the embedded default as a
//! reference line), and latency histograms of a burst.

use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Serialize;

use crate::stats::Histogram;

/// Width and height of every chart, in pixels.
const SIZE: (u32, u32) = (800, 480);
/// Buckets a latency histogram aims for.
const BUCKETS: usize = 40;

/// A chart written under `--out`, with the data it plots.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Chart {
    /// The file's name, relative to `latest.md`.
    pub(crate) file: String,
    pub(crate) title: String,
    pub(crate) series: Vec<Series>,
    /// The SVG document.
    #[serde(skip)]
    pub(crate) svg: String,
}

/// One series of a chart: its label and what it plots.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Series {
    pub(crate) label: String,
    #[serde(flatten)]
    pub(crate) data: Data,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Data {
    /// (workers, tasks/s) points.
    Points(Vec<(usize, f64)>),
    /// A reference level (tasks/s).
    Level(f64),
    Histogram(Histogram),
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Renders `draw` on a white SVG canvas of [`SIZE`].
fn render(draw: impl FnOnce(&Area<'_>) -> Result<()>) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plotting)?;
        draw(&root)?;
        root.present().map_err(plotting)?;
    }
    Ok(svg)
}

fn plotting(err: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("failed to draw a chart: {err}")
}

/// Tasks/s of the fleet's diamond burst against its worker processes, one point
/// per fleet of the run; the embedded default's, if it ran, as a dashed level.
pub(crate) fn throughput(
    file: &str,
    fleet: &[(usize, f64)],
    embedded: Option<f64>,
    concurrency: usize,
) -> Result<Chart> {
    let title = format!("Diamond burst: tasks/s against workers (× {concurrency} tasks each)");
    let max_workers = fleet.iter().map(|(workers, _)| *workers).max().unwrap_or(1);
    let top = fleet
        .iter()
        .map(|(_, tasks)| *tasks)
        .chain(embedded)
        .fold(0.0_f64, f64::max)
        .max(1.0)
        * 1.2;
    let x_range = 0.5..max_workers as f64 + 0.5;
    let svg = render(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(&title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x_range.clone(), 0.0..top)
            .map_err(plotting)?;
        let whole = |x: &f64| {
            if (x - x.round()).abs() < 1e-9 {
                format!("{x:.0}")
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .x_desc("worker processes")
            .y_desc("tasks/s")
            .x_labels(max_workers * 2 + 1)
            .x_label_formatter(&whole)
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(plotting)?;
        let points: Vec<(f64, f64)> = fleet
            .iter()
            .map(|(workers, tasks)| (*workers as f64, *tasks))
            .collect();
        chart
            .draw_series(LineSeries::new(points, BLUE.stroke_width(2)).point_size(5))
            .map_err(plotting)?
            .label("fleet (PostgreSQL, RabbitMQ, Redis)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        if let Some(level) = embedded {
            let style = RED.stroke_width(2);
            chart
                .draw_series(DashedLineSeries::new(
                    [(x_range.start, level), (x_range.end, level)],
                    8,
                    6,
                    style,
                ))
                .map_err(plotting)?
                .label("embedded default (reference)")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(plotting)?;
        Ok(())
    })?;
    let mut series = vec![Series {
        label: "fleet".to_owned(),
        data: Data::Points(fleet.to_vec()),
    }];
    if let Some(level) = embedded {
        series.push(Series {
            label: "embedded".to_owned(),
            data: Data::Level(level),
        });
    }
    Ok(Chart {
        file: file.to_owned(),
        title,
        series,
        svg,
    })
}

/// A latency histogram of one or two sets of samples (ms) on one axis: the first
/// as filled bars, the second, if any, as outlined bars over them.
pub(crate) fn latency(
    file: &str,
    title: &str,
    counted: &str,
    sets: &[(&str, &[f64])],
) -> Result<Chart> {
    let all: Vec<f64> = sets
        .iter()
        .flat_map(|(_, samples)| samples.iter().copied())
        .collect();
    // One start and width for every set, so that their bars line up.
    let Histogram {
        from_ms, bucket_ms, ..
    } = Histogram::of(&all, BUCKETS);
    let histograms: Vec<(&str, Histogram)> = sets
        .iter()
        .map(|(label, samples)| {
            let histogram = Histogram::with_buckets(samples, from_ms, bucket_ms);
            (*label, histogram)
        })
        .collect();
    let buckets = histograms
        .iter()
        .map(|(_, histogram)| histogram.counts.len())
        .max()
        .unwrap_or(1);
    let right = from_ms + buckets as f64 * bucket_ms;
    let top = histograms
        .iter()
        .flat_map(|(_, histogram)| histogram.counts.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1) as f64
        * 1.15;
    let svg = render(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(from_ms..right, 0.0..top)
            .map_err(plotting)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc(format!("ms (buckets of {bucket_ms} ms)"))
            .y_desc(counted)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(plotting)?;
        let colors = [BLUE, RED];
        for (n, (label, histogram)) in histograms.iter().enumerate() {
            let color = colors[n % colors.len()];
            let style = if n == 0 {
                color.mix(0.6).filled()
            } else {
                color.stroke_width(2)
            };
            let bars = histogram
                .counts
                .iter()
                .enumerate()
                .filter(|(_, count)| **count > 0)
                .map(move |(i, count)| {
                    let left = from_ms + i as f64 * bucket_ms;
                    Rectangle::new([(left, 0.0), (left + bucket_ms, *count as f64)], style)
                });
            chart
                .draw_series(bars)
                .map_err(plotting)?
                .label(format!("{label} (n = {})", sets[n].1.len()))
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], style));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(plotting)?;
        Ok(())
    })?;
    Ok(Chart {
        file: file.to_owned(),
        title: title.to_owned(),
        series: histograms
            .into_iter()
            .map(|(label, histogram)| Series {
                label: label.to_owned(),
                data: Data::Histogram(histogram),
            })
            .collect(),
        svg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throughput_chart_plots_the_run() {
        let chart = throughput(
            "t.svg",
            &[(1, 650.0), (2, 520.0), (4, 340.0)],
            Some(700.0),
            16,
        )
        .expect("a chart");
        assert!(chart.svg.starts_with("<svg"), "{}", &chart.svg[..60]);
        assert!(chart.svg.contains("worker processes"));
        assert!(chart.svg.contains("embedded default (reference)"));
        let json = serde_json::to_value(&chart.series).expect("series serialize");
        assert_eq!(json[0]["points"][2], serde_json::json!([4, 340.0]));
        assert_eq!(json[1]["level"], serde_json::json!(700.0));
    }

    #[test]
    fn histograms_share_their_buckets() {
        let empty: Vec<f64> = (0..200).map(|n| f64::from(n % 50)).collect();
        let full: Vec<f64> = (0..200).map(|n| f64::from(n % 90)).collect();
        let chart = latency(
            "l.svg",
            "latency",
            "deployments",
            &[("empty", &empty), ("history", &full)],
        )
        .expect("a chart");
        assert!(chart.svg.contains("history (n = 200)"));
        let widths: Vec<f64> = chart
            .series
            .iter()
            .map(|series| match &series.data {
                Data::Histogram(histogram) => histogram.bucket_ms,
                _ => 0.0,
            })
            .collect();
        assert_eq!(widths, vec![5.0, 5.0]);
        let late: Vec<f64> = (0..100).map(|n| f64::from(1500 + n)).collect();
        let chart =
            latency("l.svg", "latency", "deployments", &[("burst", &late)]).expect("a chart");
        match &chart.series[0].data {
            Data::Histogram(histogram) => assert_eq!(histogram.from_ms, 1500.0),
            _ => panic!("a histogram"),
        }
    }
}
