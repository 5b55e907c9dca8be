//! The bar [`fit`](super::fit) shows while an epoch runs (steps done, time left, running loss
//! and accuracy): indicatif's with the `progress` feature; without it, none, and only the line
//! per epoch is printed.

/// One epoch's progress bar, hidden unless `verbose`.
pub(super) struct EpochBar {
    #[cfg(feature = "progress")]
    bar: indicatif::ProgressBar,
}

#[cfg(feature = "progress")]
impl EpochBar {
    pub(super) fn new(verbose: bool, steps: usize, epoch: usize, epochs: usize) -> Self {
        use indicatif::{ProgressBar, ProgressStyle};
        if !verbose {
            return Self {
                bar: ProgressBar::hidden(),
            };
        }
        let bar = ProgressBar::new(steps as u64);
        bar.set_style(
            ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} ETA {eta} - {msg}")
                .expect("a valid template"),
        );
        bar.set_prefix(format!("Epoch {}/{epochs}", epoch + 1));
        Self { bar }
    }

    /// One more step done; `message` (the running figures) is only made when shown.
    pub(super) fn step(&self, message: impl FnOnce() -> String) {
        if !self.bar.is_hidden() {
            self.bar.set_message(message());
        }
        self.bar.inc(1);
    }

    /// Leaves the bar where it stopped (the epoch failed).
    pub(super) fn abandon(&self) {
        self.bar.abandon();
    }

    /// Clears the bar (the epoch's line follows).
    pub(super) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(not(feature = "progress"))]
impl EpochBar {
    pub(super) fn new(_verbose: bool, _steps: usize, _epoch: usize, _epochs: usize) -> Self {
        Self {}
    }

    pub(super) fn step(&self, _message: impl FnOnce() -> String) {}

    pub(super) fn abandon(&self) {}

    pub(super) fn finish(&self) {}
}
