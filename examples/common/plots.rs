//! The two PNGs an example writes: training curves (loss and accuracy per epoch, training and
//! validation) and a grid of misclassified test digits with their true and predicted classes.
//! Text needs a TrueType font; the first of a few usual system fonts found is used, and without
//! one the pictures are drawn without text.

use std::path::Path;

use constnet::Hwc;
use constnet::data::Dataset;
use constnet::train::History;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

/// Usual places of a sans-serif TrueType font.
const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/Library/Fonts/Arial.ttf",
];

/// Registers a system font as "sans-serif"; whether one was found.
fn register_system_font() -> bool {
    FONTS.iter().any(|path| match std::fs::read(path) {
        Ok(bytes) => register_font(
            "sans-serif",
            FontStyle::Normal,
            Box::leak(bytes.into_boxed_slice()),
        )
        .is_ok(),
        Err(_) => false,
    })
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;

/// Writes `<name>_training.png` and `<name>_misclassified.png` into `dir`.
pub fn write(
    dir: &Path,
    name: &str,
    history: &History,
    test: &Dataset<Hwc<28, 28, 1>>,
    predicted: &[usize],
) -> PlotResult {
    std::fs::create_dir_all(dir)?;
    let text = register_system_font();
    if !text {
        eprintln!(
            "no TrueType font found ({}): plots have no text",
            FONTS.join(", ")
        );
    }
    let curves = dir.join(format!("{name}_training.png"));
    training_curves(&curves, history, text)?;
    let digits = dir.join(format!("{name}_misclassified.png"));
    misclassified(&digits, test, predicted, text)?;
    println!("Wrote {} and {}", curves.display(), digits.display());
    Ok(())
}

fn training_curves(path: &Path, history: &History, text: bool) -> PlotResult {
    let root = BitMapBackend::new(path, (1000, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 2));
    let epochs = history.epochs.len().max(1) as f32;
    let series = [
        (
            "loss",
            history.epochs.iter().map(|e| e.loss).collect::<Vec<_>>(),
            history
                .epochs
                .iter()
                .filter_map(|e| e.val_loss)
                .collect::<Vec<_>>(),
        ),
        (
            history.metric,
            history.epochs.iter().map(|e| e.metric).collect(),
            history.epochs.iter().filter_map(|e| e.val_metric).collect(),
        ),
    ];
    for (panel, (title, train, validation)) in panels.iter().zip(series) {
        let values = train.iter().chain(&validation);
        let (low, high) = values.fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let margin = ((high - low) * 0.1).max(1e-3);
        let mut builder = ChartBuilder::on(panel);
        builder.margin(15);
        if text {
            builder
                .caption(title, ("sans-serif", 22))
                .x_label_area_size(30)
                .y_label_area_size(50);
        }
        let mut chart =
            builder.build_cartesian_2d(1f32..epochs.max(2.0), (low - margin)..(high + margin))?;
        if text {
            chart.configure_mesh().x_desc("epoch").draw()?;
        }
        for (values, color, label) in [(&train, BLUE, "training"), (&validation, RED, "validation")]
        {
            let points = values.iter().enumerate().map(|(i, &v)| ((i + 1) as f32, v));
            let drawn = chart.draw_series(LineSeries::new(points, color.stroke_width(2)))?;
            if text {
                drawn
                    .label(label)
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
            }
        }
        if text {
            chart
                .configure_series_labels()
                .background_style(WHITE)
                .border_style(BLACK)
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}

fn misclassified(
    path: &Path,
    test: &Dataset<Hwc<28, 28, 1>>,
    predicted: &[usize],
    text: bool,
) -> PlotResult {
    const COLUMNS: usize = 8;
    const ROWS: usize = 4;
    const SCALE: usize = 3;
    const CELL: usize = 28 * SCALE + 20;
    let root = BitMapBackend::new(path, ((COLUMNS * CELL) as u32, (ROWS * CELL) as u32))
        .into_drawing_area();
    root.fill(&WHITE)?;
    let wrong = (0..test.len())
        .filter(|&i| predicted[i] != test.labels()[i])
        .take(COLUMNS * ROWS);
    for (slot, index) in wrong.enumerate() {
        let (x0, y0) = ((slot % COLUMNS) * CELL + 10, (slot / COLUMNS) * CELL + 4);
        for (pixel, &value) in test.images().sample(index).iter().enumerate() {
            let shade = 255 - (value.clamp(0.0, 1.0) * 255.0) as u8;
            let (x, y) = (x0 + (pixel % 28) * SCALE, y0 + (pixel / 28) * SCALE);
            root.draw(&Rectangle::new(
                [
                    (x as i32, y as i32),
                    ((x + SCALE) as i32, (y + SCALE) as i32),
                ],
                RGBColor(shade, shade, shade).filled(),
            ))?;
        }
        if text {
            let caption = format!("{} → {}", test.labels()[index], predicted[index]);
            root.draw(&Text::new(
                caption,
                (x0 as i32, (y0 + 28 * SCALE + 2) as i32),
                ("sans-serif", 14),
            ))?;
        }
    }
    root.present()?;
    Ok(())
}
