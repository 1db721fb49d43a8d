//! The progress bar of the commands that run long (`train`, `train-rm`, `sample`): one style on
//! stderr, `LABEL done/total[ UNIT] [=====>    ] MESSAGE ETA eta`.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `total` steps with `done` of them done, labelled `label` before the count and
/// `unit` after it (`""` for none, `" queries"`).
pub fn bar(label: &str, unit: &str, total: usize, done: usize) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{label} {{pos}}/{{len}}{unit} [{{bar:30}}] {{msg}} ETA {{eta}}"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_position(done as u64);
    bar
}
