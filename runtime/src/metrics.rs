//! Classification metrics: the confusion matrix and what follows from it (accuracy, per-class
//! precision, recall and F1), and the result of evaluating a network on a data set.

use std::fmt;

/// Counts of (true class, predicted class) pairs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfusionMatrix {
    classes: usize,
    /// Row-major: `counts[truth * classes + predicted]`.
    counts: Vec<usize>,
}

impl ConfusionMatrix {
    /// An empty matrix for `classes` classes.
    pub fn new(classes: usize) -> Self {
        Self {
            classes,
            counts: vec![0; classes * classes],
        }
    }

    /// Counts one prediction.
    pub fn add(&mut self, truth: usize, predicted: usize) {
        self.counts[truth * self.classes + predicted] += 1;
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// How often class `truth` was predicted as `predicted`.
    pub fn count(&self, truth: usize, predicted: usize) -> usize {
        self.counts[truth * self.classes + predicted]
    }

    /// Number of predictions counted.
    pub fn total(&self) -> usize {
        self.counts.iter().sum()
    }

    /// Fraction of predictions that were right.
    pub fn accuracy(&self) -> f32 {
        let right: usize = (0..self.classes).map(|c| self.count(c, c)).sum();
        ratio(right, self.total())
    }

    /// Of the samples predicted as `class`, the fraction that were.
    pub fn precision(&self, class: usize) -> f32 {
        let predicted: usize = (0..self.classes).map(|t| self.count(t, class)).sum();
        ratio(self.count(class, class), predicted)
    }

    /// Of the samples of `class`, the fraction predicted as such.
    pub fn recall(&self, class: usize) -> f32 {
        let actual: usize = (0..self.classes).map(|p| self.count(class, p)).sum();
        ratio(self.count(class, class), actual)
    }

    /// Harmonic mean of precision and recall.
    pub fn f1(&self, class: usize) -> f32 {
        let (p, r) = (self.precision(class), self.recall(class));
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }

    /// Precision, recall, F1 and support per class, as scikit-learn's report prints them.
    pub fn report(&self) -> String {
        let mut out = format!(
            "{:>5} {:>9} {:>9} {:>9} {:>9}\n",
            "class", "precision", "recall", "f1", "support"
        );
        for c in 0..self.classes {
            let support: usize = (0..self.classes).map(|p| self.count(c, p)).sum();
            out += &format!(
                "{c:>5} {:>9.4} {:>9.4} {:>9.4} {support:>9}\n",
                self.precision(c),
                self.recall(c),
                self.f1(c)
            );
        }
        out
    }
}

fn ratio(part: usize, whole: usize) -> f32 {
    if whole == 0 {
        0.0
    } else {
        part as f32 / whole as f32
    }
}

impl fmt::Display for ConfusionMatrix {
    /// Rows are true classes, columns predicted ones.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .counts
            .iter()
            .max()
            .map_or(1, |m| m.to_string().len())
            .max(4);
        write!(f, "{:>6}", "true\\pred")?;
        for p in 0..self.classes {
            write!(f, " {p:>width$}")?;
        }
        writeln!(f)?;
        for t in 0..self.classes {
            write!(f, "{t:>9}")?;
            for p in 0..self.classes {
                write!(f, " {:>width$}", self.count(t, p))?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// A network's loss and predictions on a data set.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy.
    pub loss: f32,
    /// Fraction classified correctly.
    pub accuracy: f32,
    /// Every (true, predicted) pair.
    pub confusion: ConfusionMatrix,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_recall_f1_by_hand() {
        let mut m = ConfusionMatrix::new(3);
        for (t, p) in [(0, 0), (0, 0), (0, 1), (1, 1), (1, 1), (2, 1), (2, 2)] {
            m.add(t, p);
        }
        assert_eq!(m.total(), 7);
        assert!((m.accuracy() - 5.0 / 7.0).abs() < 1e-6);
        assert!(
            (m.precision(1) - 0.5).abs() < 1e-6,
            "2 of 4 predicted 1 are 1"
        );
        assert!((m.recall(0) - 2.0 / 3.0).abs() < 1e-6);
        assert!((m.f1(2) - 2.0 * 1.0 * 0.5 / 1.5).abs() < 1e-6);
        assert!(
            m.report()
                .contains("    1    0.5000    1.0000    0.6667         2")
        );
        assert!(m.to_string().contains("        0    2    1    0"));
    }
}
