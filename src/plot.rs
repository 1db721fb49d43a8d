//! A PNG of a run's `metrics.jsonl`: the loss per step (train, smoothed over noisy steps, and
//! eval where it was measured) beside its rank and fine-tune parts, each a curve of its own
//! (RRHF's users ask for them: GanjinZero/RRHF#51), and below them the reward per step of an
//! online run, or else the eval ranking accuracy, and beside it, for a run with `[eval]`, the
//! eval answers' mean reward and their win rate against the start model, as points. Steps are
//! whole numbers on the axis.
//!
//! Text needs a TrueType font, which plotters does not bring: the first of `RRHF_FONT` and the
//! usual system locations that exists is used (Debian: `fonts-dejavu-core`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;

/// Where fonts live on Linux, macOS and Windows, first match wins.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// `(step, value)` points of one metric.
pub type Series = Vec<(f64, f64)>;

struct RunSeries {
    loss: Series,
    rank_loss: Series,
    ft_loss: Series,
    eval_loss: Series,
    reward: Series,
    eval_accuracy: Series,
    eval_reward: Series,
    eval_win_rate: Series,
}

/// One chart: its title, the y axis's name, and its named, coloured series.
struct Panel<'a> {
    title: &'static str,
    y_label: &'static str,
    lines: Vec<(&'static str, &'a Series, RGBAColor)>,
}

/// Draws `metrics` (a `metrics.jsonl`) into the PNG file `out`, written under a temporary name
/// and renamed.
pub fn plot_metrics(metrics: &Path, out: &Path) -> Result<()> {
    let run = read_series(metrics)?;
    if run.loss.is_empty() {
        bail!("{}: no step lines with a loss to plot", metrics.display());
    }
    register_font()?;
    let tmp = out.with_file_name(format!(".plot-tmp-{}.png", std::process::id()));
    draw(&run, &tmp).with_context(|| format!("cannot draw {}", out.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

/// Draws two runs' loss curves (`[a, b, relative difference]`, as `rrhf compare` reads them) into
/// the PNG file `out`: both curves above, their relative difference per step below.
pub fn plot_comparison(names: [&str; 2], curves: &[Series; 3], out: &Path) -> Result<()> {
    register_font()?;
    let tmp = out.with_file_name(format!(".plot-tmp-{}.png", std::process::id()));
    let draw = || -> Result<()> {
        let root = BitMapBackend::new(&tmp, (1000, 760)).into_drawing_area();
        root.fill(&WHITE)?;
        let panels = root.split_evenly((2, 1));
        let [a, b, difference] = curves;
        panel(
            &panels[0],
            "Loss per step",
            "loss",
            &[(names[0], a, BLUE.to_rgba()), (names[1], b, RED.to_rgba())],
        )?;
        panel(
            &panels[1],
            "Relative difference of the loss",
            "relative difference",
            &[("difference", difference, BLACK.to_rgba())],
        )?;
        root.present()?;
        Ok(())
    };
    draw().with_context(|| format!("cannot draw {}", out.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

fn read_series(path: &Path) -> Result<RunSeries> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut run = RunSeries {
        loss: vec![],
        rank_loss: vec![],
        ft_loss: vec![],
        eval_loss: vec![],
        reward: vec![],
        eval_accuracy: vec![],
        eval_reward: vec![],
        eval_win_rate: vec![],
    };
    for (n, line) in text.lines().enumerate() {
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a JSON line", path.display(), n + 1))?;
        let Some(step) = v["step"].as_f64() else {
            continue;
        };
        for (key, series) in [
            ("loss", &mut run.loss),
            ("rank_loss", &mut run.rank_loss),
            ("ft_loss", &mut run.ft_loss),
            ("eval_loss", &mut run.eval_loss),
            ("reward", &mut run.reward),
            ("eval_rank_accuracy", &mut run.eval_accuracy),
            ("eval_reward", &mut run.eval_reward),
            ("eval_win_rate", &mut run.eval_win_rate),
        ] {
            if let Some(y) = v[key].as_f64().filter(|y| y.is_finite()) {
                series.push((step, y));
            }
        }
    }
    Ok(run)
}

fn register_font() -> Result<()> {
    let candidates: Vec<PathBuf> = std::env::var_os("RRHF_FONT")
        .map(PathBuf::from)
        .into_iter()
        .chain(FONT_PATHS.iter().map(PathBuf::from))
        .collect();
    let Some(path) = candidates.iter().find(|p| p.is_file()) else {
        bail!(
            "no TrueType font found for the plot's text (looked at {FONT_PATHS:?}); install one \
             (Debian: apt-get install fonts-dejavu-core) or point RRHF_FONT at a .ttf file"
        );
    };
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    // plotters keeps fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{} is not a font plotters can read", path.display()))
}

fn draw(run: &RunSeries, path: &Path) -> Result<()> {
    let root = BitMapBackend::new(path, (1200, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let rows = root.split_evenly((2, 1));
    let top = rows[0].split_evenly((1, 2));
    let smoothed = smooth(&run.loss);
    let mut losses = vec![("train", &run.loss, BLUE.mix(0.35))];
    if smoothed.len() > 1 {
        losses.push(("train, smoothed", &smoothed, BLUE.to_rgba()));
    }
    losses.push(("eval", &run.eval_loss, RED.to_rgba()));
    panel(&top[0], "Loss per step", "loss", &losses)?;
    panel(
        &top[1],
        "Its parts: rank and fine-tune loss",
        "loss",
        &[
            ("rank", &run.rank_loss, MAGENTA.to_rgba()),
            ("fine-tune", &run.ft_loss, CYAN.mix(0.9)),
        ],
    )?;
    let lower = lower_panels(run);
    for (area, p) in rows[1].split_evenly((1, lower.len())).iter().zip(&lower) {
        panel(area, p.title, p.y_label, &p.lines)?;
    }
    root.present()?;
    Ok(())
}

/// The lower row: an online run's sampled reward, or else the eval ranking accuracy (left out
/// when there is none and `[eval]` fills the row); then, with `[eval]`, its reward and win rate.
fn lower_panels(run: &RunSeries) -> Vec<Panel<'_>> {
    let mut panels = vec![];
    if !run.reward.is_empty() {
        panels.push(Panel {
            title: "Mean reward of the sampled responses per step",
            y_label: "reward",
            lines: vec![("reward", &run.reward, GREEN.to_rgba())],
        });
    } else if !run.eval_accuracy.is_empty() || run.eval_reward.is_empty() {
        panels.push(Panel {
            title: "Eval ranking accuracy",
            y_label: "accuracy",
            lines: vec![("eval", &run.eval_accuracy, RED.to_rgba())],
        });
    }
    if !run.eval_reward.is_empty() {
        panels.push(Panel {
            title: "Eval answers: mean reward",
            y_label: "reward",
            lines: vec![("eval", &run.eval_reward, RED.to_rgba())],
        });
        panels.push(Panel {
            title: "Eval answers: win rate against the start",
            y_label: "win rate",
            lines: vec![("eval", &run.eval_win_rate, MAGENTA.to_rgba())],
        });
    }
    panels
}

/// Fewer points than this are drawn as they are: smoothing needs noise to average.
const SMOOTH_FROM: usize = 10;

/// An exponential moving average (weight 0.6 on the past, as TensorBoard's default), with its
/// start-up bias divided out so that the first points are not pulled towards 0; empty for a
/// series too short to need it.
fn smooth(series: &Series) -> Series {
    const WEIGHT: f64 = 0.6;
    if series.len() < SMOOTH_FROM {
        return vec![];
    }
    let mut average = 0.0;
    series
        .iter()
        .enumerate()
        .map(|(i, &(x, y))| {
            average = WEIGHT * average + (1.0 - WEIGHT) * y;
            (x, average / (1.0 - WEIGHT.powi(i as i32 + 1)))
        })
        .collect()
}

/// Ticks of the step axis: one per step up to 10 steps, else plotters' round numbers; the
/// labels are whole numbers either way.
fn step_ticks(x_max: f64) -> usize {
    (x_max.ceil() as usize + 1).clamp(2, 11)
}

fn panel(
    area: &DrawingArea<BitMapBackend, Shift>,
    title: &str,
    y_label: &str,
    lines: &[(&str, &Series, RGBAColor)],
) -> Result<()> {
    let points = lines.iter().flat_map(|(_, s, _)| s.iter());
    let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    let pad = ((y_max - y_min) * 0.08).max(1e-3);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, (y_min - pad)..(y_max + pad))?;
    chart
        .configure_mesh()
        .x_labels(step_ticks(x_max))
        .x_label_formatter(&|x| format!("{}", x.round() as i64))
        .x_desc("step")
        .y_desc(y_label)
        .label_style(("sans-serif", 14))
        .draw()?;
    for (name, series, color) in lines {
        if series.is_empty() {
            continue;
        }
        let color = *color;
        chart
            .draw_series(LineSeries::new(
                series.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        // Sparse series (evaluations) get markers so single points show.
        if series.len() < 30 {
            chart.draw_series(
                series
                    .iter()
                    .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
            )?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rrhf-plot-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn draws_a_png_of_loss_and_reward() {
        let dir = scratch("png");
        let metrics = dir.join("metrics.jsonl");
        let mut lines = vec![r#"{"step":0,"eval_loss":2.0,"eval_rank_accuracy":0.5}"#.to_string()];
        lines.push(r#"{"step":0,"round":0,"sample_reward_mean":0.4}"#.into());
        for step in 1..=12 {
            lines.push(format!(
                r#"{{"step":{step},"loss":{},"rank_loss":{},"ft_loss":1.5,"reward":{}}}"#,
                2.0 / step as f64 + 1.5,
                2.0 / step as f64,
                0.4 + 0.05 * step as f64
            ));
        }
        std::fs::write(&metrics, lines.join("\n")).unwrap();
        let run = read_series(&metrics).unwrap();
        assert_eq!(run.loss.len(), 12);
        assert_eq!(
            (run.rank_loss[3], run.ft_loss[11]),
            ((4.0, 0.5), (12.0, 1.5))
        );
        assert!((run.reward[7].1 - 0.8).abs() < 1e-12);
        assert_eq!(run.eval_loss, vec![(0.0, 2.0)]);
        assert!(run.eval_reward.is_empty());
        assert_eq!(lower_panels(&run).len(), 1);

        let png = dir.join("metrics.png");
        plot_metrics(&metrics, &png).unwrap();
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        // The IHDR chunk: width and height as drawn.
        assert_eq!(u32::from_be_bytes(bytes[16..20].try_into().unwrap()), 1200);
        assert_eq!(u32::from_be_bytes(bytes[20..24].try_into().unwrap()), 760);
    }

    #[test]
    fn eval_answers_get_panels_of_their_own() {
        let dir = scratch("eval-answers");
        let metrics = dir.join("metrics.jsonl");
        let mut lines = vec![];
        for step in [0, 2, 4] {
            lines.push(format!(
                r#"{{"step":{step},"eval_reward":{},"eval_reward_std":0.1,"eval_win_rate":{},"eval_answer_tokens":5.0}}"#,
                0.2 * step as f64,
                0.5 + 0.1 * step as f64
            ));
            if step > 0 {
                lines.push(format!(
                    r#"{{"step":{step},"loss":1.0,"rank_loss":0.5,"ft_loss":0.5}}"#
                ));
            }
        }
        std::fs::write(&metrics, lines.join("\n")).unwrap();
        let run = read_series(&metrics).unwrap();
        assert_eq!(run.eval_reward, vec![(0.0, 0.0), (2.0, 0.4), (4.0, 0.8)]);
        assert_eq!(run.eval_win_rate[0], (0.0, 0.5));
        // No online reward and no ranking accuracy: the eval answers fill the row.
        let titles: Vec<&str> = lower_panels(&run).iter().map(|p| p.title).collect();
        assert_eq!(titles.len(), 2, "{titles:?}");
        plot_metrics(&metrics, &dir.join("metrics.png")).unwrap();
    }

    #[test]
    fn smoothing_removes_its_start_up_bias_and_leaves_short_series_alone() {
        let flat: Series = (1..=20).map(|s| (s as f64, 3.0)).collect();
        for (x, y) in smooth(&flat) {
            assert!((y - 3.0).abs() < 1e-12, "step {x}: {y}");
        }
        let noisy: Series = (1..=20)
            .map(|s| (s as f64, if s % 2 == 0 { 1.0 } else { 3.0 }))
            .collect();
        let smoothed = smooth(&noisy);
        let last = smoothed.last().unwrap().1;
        assert!((1.5..2.5).contains(&last), "{last}");
        assert!(smooth(&noisy[..SMOOTH_FROM - 1].to_vec()).is_empty());
    }

    #[test]
    fn a_few_steps_get_a_tick_each() {
        assert_eq!(step_ticks(5.0), 6);
        assert_eq!(step_ticks(1.0), 2);
        assert_eq!(step_ticks(400.0), 11);
    }

    #[test]
    fn names_the_line_that_is_not_json() {
        let dir = scratch("bad");
        let metrics = dir.join("metrics.jsonl");
        std::fs::write(&metrics, "{\"step\":1,\"loss\":1.0}\nnot json\n").unwrap();
        let err = plot_metrics(&metrics, &dir.join("x.png")).unwrap_err();
        assert!(format!("{err:#}").contains("metrics.jsonl:2"), "{err:#}");
    }
}
