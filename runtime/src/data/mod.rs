//! Data: reading IDX files into typed datasets, preparing them (scaling, standardisation, one-hot
//! labels, validation splits), and serving seeded shuffled batches, optionally augmented.
//!
//! A [`Dataset<S>`] holds images already shaped as the network's input `S` and scaled to
//! `[0, 1]`, so shape mismatches between data and network are caught when the files are read, with
//! the file named in the error.

mod augment;
#[cfg(feature = "download")]
pub mod download;
#[cfg(feature = "data")]
pub mod idx;

#[cfg(feature = "data")]
use std::path::Path;
use std::path::PathBuf;

use rand::SeedableRng;
use rand::seq::SliceRandom;

pub use augment::Augment;

use crate::init::SeededRng;
use crate::shape::{Flat, Shape};
use crate::tensor::Batch;

/// What can go wrong reading, fetching or assembling data; each variant names the file, or the
/// samples and labels, at fault.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be read or written.
    #[error("{}: {source}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file's content is not what it should be.
    #[error("{}: {problem}", file.display())]
    Format {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// An image file and its label file disagree.
    #[error("{} and {} disagree: {problem}", images.display(), labels.display())]
    Mismatch {
        /// The image file.
        images: PathBuf,
        /// The label file.
        labels: PathBuf,
        /// How they disagree.
        problem: String,
    },
    /// A download failed; nothing was left at `file`.
    #[error("downloading {} from {url}: {problem}", file.display())]
    Download {
        /// Where the file was to be written.
        file: PathBuf,
        /// Where it was fetched from.
        url: String,
        /// What went wrong.
        problem: String,
    },
    /// A data set was given different numbers of images and labels.
    #[error("a data set needs one label per image: {images} images but {labels} labels")]
    CountMismatch {
        /// Number of images.
        images: usize,
        /// Number of labels.
        labels: usize,
    },
    /// A label is not below the number of classes.
    #[error("label {label} of sample {sample} is not below the {classes} classes")]
    LabelOutOfRange {
        /// The sample's index.
        sample: usize,
        /// Its label.
        label: usize,
        /// The number of classes.
        classes: usize,
    },
    /// A target vector holding a NaN or an infinity.
    #[error("the target of sample {sample} is not finite")]
    NonFiniteTarget {
        /// The sample's index.
        sample: usize,
    },
    /// A fixed number of classes was asked of a data set with another.
    #[error("{asked} classes were asked of a data set of {classes} classes")]
    ClassCount {
        /// The number asked for.
        asked: usize,
        /// The data set's number of classes.
        classes: usize,
    },
    /// A validation fraction that leaves no training or no validation sample.
    #[error(
        "a validation split of {fraction} of {samples} samples leaves {train} for training and \
         {validation} for validation; both need at least one (the fraction must be in (0, 1))"
    )]
    ValidationSplit {
        /// The fraction asked for.
        fraction: f32,
        /// Samples in the data set.
        samples: usize,
        /// Samples the split would leave for training.
        train: usize,
        /// Samples the split would leave for validation.
        validation: usize,
    },
}

/// Samples of shape `S`, each with a target of type `T`: a class label below the number of
/// classes (`usize`, the default), or a vector of `N` finite values (`[f32; N]`, for regression
/// and multi-label classification). The constructors check one target per sample and each
/// target, and nothing can break them afterwards.
#[derive(Clone, Debug)]
pub struct Dataset<S: Shape, T = usize> {
    images: Batch<S>,
    targets: Vec<T>,
    /// Classes of a labelled set; values per target of a set of vectors.
    classes: usize,
}

impl<S: Shape, const N: usize> Dataset<S, [f32; N]> {
    /// A data set of `images` with the target vectors `targets`, one per image.
    ///
    /// ```
    /// use constnet_runtime::data::{DataError, Dataset};
    /// use constnet_runtime::{Batch, Flat};
    /// let inputs = Batch::<Flat<2>>::zeros(2);
    /// let data = Dataset::with_targets(inputs.clone(), vec![[0.5], [1.5]]).unwrap();
    /// assert_eq!(data.targets(), &[[0.5], [1.5]]);
    /// let error = Dataset::with_targets(inputs, vec![[0.5], [f32::NAN]]).unwrap_err();
    /// assert!(matches!(error, DataError::NonFiniteTarget { sample: 1 }));
    /// ```
    ///
    /// # Errors
    /// [`DataError::CountMismatch`] unless there is one target per image,
    /// [`DataError::NonFiniteTarget`] for the first target holding a NaN or an infinity.
    pub fn with_targets(images: Batch<S>, targets: Vec<[f32; N]>) -> Result<Self, DataError> {
        if images.len() != targets.len() {
            return Err(DataError::CountMismatch {
                images: images.len(),
                labels: targets.len(),
            });
        }
        if let Some(sample) = targets
            .iter()
            .position(|target| !target.iter().all(|v| v.is_finite()))
        {
            return Err(DataError::NonFiniteTarget { sample });
        }
        Ok(Self {
            images,
            targets,
            classes: N,
        })
    }
}

impl<S: Shape> Dataset<S> {
    /// A data set of `images` labelled `labels` in `classes` classes.
    ///
    /// ```
    /// use constnet_runtime::data::{DataError, Dataset};
    /// use constnet_runtime::{Batch, Flat};
    /// let images = Batch::<Flat<2>>::zeros(3);
    /// let data = Dataset::new(images.clone(), vec![0, 1, 1], 2).unwrap();
    /// assert_eq!(data.len(), 3);
    /// let error = Dataset::new(images, vec![0, 2, 1], 2).unwrap_err();
    /// assert!(matches!(error, DataError::LabelOutOfRange { sample: 1, label: 2, classes: 2 }));
    /// ```
    ///
    /// # Errors
    /// [`DataError::CountMismatch`] unless there is one label per image,
    /// [`DataError::LabelOutOfRange`] for the first label not below `classes`.
    pub fn new(images: Batch<S>, labels: Vec<usize>, classes: usize) -> Result<Self, DataError> {
        if images.len() != labels.len() {
            return Err(DataError::CountMismatch {
                images: images.len(),
                labels: labels.len(),
            });
        }
        if let Some((sample, &label)) = labels.iter().enumerate().find(|(_, l)| **l >= classes) {
            return Err(DataError::LabelOutOfRange {
                sample,
                label,
                classes,
            });
        }
        Ok(Self {
            images,
            targets: labels,
            classes,
        })
    }

    /// The class of each image, below [`Dataset::classes`].
    pub fn labels(&self) -> &[usize] {
        &self.targets
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Reads an IDX image file and its IDX label file (with the `data` feature). The images must have the network's input
    /// shape (`[n, 28, 28]` for `Hwc<28, 28, 1>` or `Flat<784>`), every label must be below
    /// `classes`, and both files must hold the same number of samples.
    #[cfg(feature = "data")]
    pub fn from_idx(
        images: impl AsRef<Path>,
        labels: impl AsRef<Path>,
        classes: usize,
    ) -> Result<Self, DataError> {
        let (images, labels) = (images.as_ref(), labels.as_ref());
        let image_array = idx::read_idx(images)?;
        let label_array = idx::read_idx(labels)?;
        let format = |file: &Path, problem: String| DataError::Format {
            file: file.to_path_buf(),
            problem,
        };
        let (&count, sample_dims) = image_array
            .dims
            .split_first()
            .expect("an IDX array has at least one dimension");
        // A flat network takes any sample of the right length; an image network takes samples
        // of its exact dimensions, the channel axis being optional for one channel.
        let fits = match S::DIMS {
            [len] => !sample_dims.is_empty() && sample_dims.iter().product::<usize>() == *len,
            dims => sample_dims == dims || [sample_dims, &[1]].concat() == dims,
        };
        if !fits {
            let found: Vec<String> = sample_dims.iter().map(ToString::to_string).collect();
            return Err(format(
                images,
                format!(
                    "the images are {} but the network expects {}",
                    if found.is_empty() {
                        "scalars".into()
                    } else {
                        found.join("x")
                    },
                    S::describe()
                ),
            ));
        }
        if label_array.dims.len() != 1 {
            return Err(format(
                labels,
                format!("labels must be one-dimensional, not {:?}", label_array.dims),
            ));
        }
        if label_array.dims[0] != count {
            return Err(DataError::Mismatch {
                images: images.to_path_buf(),
                labels: labels.to_path_buf(),
                problem: format!("{count} images but {} labels", label_array.dims[0]),
            });
        }
        let labels_out: Vec<usize> = label_array.data.iter().map(|&l| l as usize).collect();
        let pixels = image_array.data.iter().map(|&p| p as f32 / 255.0).collect();
        let images_out = Batch::from_vec(pixels).expect("length checked against S::LEN");
        Self::new(images_out, labels_out, classes)
            .map_err(|error| format(labels, error.to_string()))
    }

    /// The labels as one-hot vectors of `N` classes.
    ///
    /// # Errors
    /// [`DataError::ClassCount`] if `N` is not the data set's number of classes.
    pub fn one_hot<const N: usize>(&self) -> Result<Batch<Flat<N>>, DataError> {
        if N != self.classes {
            return Err(DataError::ClassCount {
                asked: N,
                classes: self.classes,
            });
        }
        let mut out = Batch::zeros(self.len());
        for (row, &label) in out.as_mut_slice().chunks_mut(N).zip(&self.targets) {
            row[label] = 1.0;
        }
        Ok(out)
    }
}

impl<S: Shape, T: Copy> Dataset<S, T> {
    /// The images, one sample each.
    pub fn images(&self) -> &Batch<S> {
        &self.images
    }

    /// The target of each sample: its class, or its target vector.
    pub fn targets(&self) -> &[T] {
        &self.targets
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether there is no sample.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The first `n` samples (all of them if there are fewer).
    pub fn take(&self, n: usize) -> Self {
        let n = n.min(self.len());
        Self {
            images: Batch::from_vec(self.images.as_slice()[..n * S::LEN].to_vec())
                .expect("whole samples"),
            targets: self.targets[..n].to_vec(),
            classes: self.classes,
        }
    }

    /// Splits off the last `fraction` of the samples (rounded) as validation data, as Keras's
    /// `validation_split` does (before any shuffling).
    ///
    /// # Errors
    /// [`DataError::ValidationSplit`] unless both parts hold at least one sample.
    pub fn split_validation(&self, fraction: f32) -> Result<(Self, Self), DataError> {
        let samples = self.len();
        let validation = if fraction > 0.0 && fraction < 1.0 {
            ((samples as f32) * fraction).round() as usize
        } else {
            0
        };
        let train = samples - validation.min(samples);
        if validation == 0 || train == 0 {
            return Err(DataError::ValidationSplit {
                fraction,
                samples,
                train: if validation == 0 { samples } else { train },
                validation,
            });
        }
        let (train_images, validation_images) = self.images.as_slice().split_at(train * S::LEN);
        let part = |images: &[f32], targets: &[T]| Self {
            images: Batch::from_vec(images.to_vec()).expect("whole samples"),
            targets: targets.to_vec(),
            classes: self.classes,
        };
        Ok((
            part(train_images, &self.targets[..train]),
            part(validation_images, &self.targets[train..]),
        ))
    }

    /// Mean and standard deviation of all pixels.
    pub fn pixel_stats(&self) -> (f32, f32) {
        let values = self.images.as_slice();
        let n = values.len().max(1) as f64;
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = values
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        (mean as f32, var.sqrt() as f32)
    }

    /// Standardises every pixel: `(x − mean) / std` (use the training set's statistics for
    /// every split).
    pub fn standardize(&mut self, mean: f32, std: f32) {
        let scale = 1.0 / std.max(f32::EPSILON);
        self.images
            .as_mut_slice()
            .iter_mut()
            .for_each(|v| *v = (*v - mean) * scale);
    }

    /// Copies the samples at `indices` into `images` and their targets into `targets` (resized;
    /// their allocations are kept).
    pub fn gather(&self, indices: &[usize], images: &mut Batch<S>, targets: &mut Vec<T>) {
        images.resize(indices.len());
        targets.clear();
        for (dst, &i) in images.as_mut_slice().chunks_mut(S::LEN).zip(indices) {
            dst.copy_from_slice(self.images.sample(i));
            targets.push(self.targets[i]);
        }
    }
}

/// The indices `0..len`, shuffled by a generator seeded with `seed`.
pub fn shuffled_indices(len: usize, seed: u64) -> Vec<usize> {
    let mut indices: Vec<usize> = (0..len).collect();
    indices.shuffle(&mut SeededRng::seed_from_u64(seed));
    indices
}

/// The four files of MNIST (and of data sets laid out like it, such as Fashion-MNIST), by the
/// names they are published under; each may also be present without the `.gz`.
#[cfg(feature = "data")]
pub const MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

/// The path of `name` in `dir`, preferring the file as named, else without `.gz`.
#[cfg(feature = "data")]
fn find(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    if path.exists() {
        return path;
    }
    let raw = dir.join(name.trim_end_matches(".gz"));
    if raw.exists() { raw } else { path }
}

/// Reads the MNIST training and test sets from `dir` (10 classes; with the `data` feature).
#[cfg(feature = "data")]
pub fn load_mnist<S: Shape>(dir: impl AsRef<Path>) -> Result<(Dataset<S>, Dataset<S>), DataError> {
    let dir = dir.as_ref();
    let [train_images, train_labels, test_images, test_labels] = MNIST_FILES.map(|f| find(dir, f));
    Ok((
        Dataset::from_idx(&train_images, &train_labels, 10)?,
        Dataset::from_idx(&test_images, &test_labels, 10)?,
    ))
}

#[cfg(all(test, feature = "data"))]
mod tests {
    use super::*;
    use crate::shape::Hwc;

    fn write_pair(dir: &Path, image_dims: &[usize], labels: &[u8]) -> (PathBuf, PathBuf) {
        let images = dir.join("images.idx");
        let label_file = dir.join("labels.idx");
        let len: usize = image_dims.iter().product();
        idx::write_idx(
            &images,
            image_dims,
            &(0..len).map(|i| (i % 256) as u8).collect::<Vec<_>>(),
        )
        .unwrap();
        idx::write_idx(&label_file, &[labels.len()], labels).unwrap();
        (images, label_file)
    }

    /// A fresh directory, removed with everything in it when the returned guard is dropped.
    fn temp_dir(name: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("constnet-data-{name}-"))
            .tempdir()
            .unwrap()
    }

    #[test]
    fn reads_scales_splits_and_batches() {
        let dir = temp_dir("ok");
        let (images, labels) = write_pair(dir.path(), &[4, 2, 3], &[0, 1, 2, 1]);
        let data = Dataset::<Hwc<2, 3, 1>>::from_idx(&images, &labels, 3).unwrap();
        assert_eq!(data.len(), 4);
        assert_eq!(data.images.sample(1)[0], 6.0 / 255.0);
        let flat = Dataset::<Flat<6>>::from_idx(&images, &labels, 3).unwrap();
        assert_eq!(
            flat.images,
            Batch::from_vec(data.images.as_slice().to_vec()).unwrap()
        );
        assert_eq!(data.one_hot::<3>().unwrap().sample(2), &[0.0, 0.0, 1.0]);
        assert!(matches!(
            data.one_hot::<4>(),
            Err(DataError::ClassCount {
                asked: 4,
                classes: 3
            })
        ));
        let (train, validation) = data.split_validation(0.25).unwrap();
        assert_eq!((train.len(), validation.len()), (3, 1));
        assert_eq!(validation.targets, [1]);
        let (mut batch, mut batch_labels) = (Batch::default(), Vec::new());
        data.gather(&[3, 0], &mut batch, &mut batch_labels);
        assert_eq!(batch_labels, [1, 0]);
        assert_eq!(batch.sample(0), data.images.sample(3));
        let mut standardized = data.clone();
        let (mean, std) = data.pixel_stats();
        standardized.standardize(mean, std);
        let (new_mean, new_std) = standardized.pixel_stats();
        assert!(new_mean.abs() < 1e-5 && (new_std - 1.0).abs() < 1e-4);
        assert_eq!(shuffled_indices(10, 1), shuffled_indices(10, 1));
        assert_ne!(shuffled_indices(10, 1), shuffled_indices(10, 2));
    }

    /// The checked constructor and the validation split refuse what would index past the class
    /// count or train on nothing, and say so in numbers (`tests/reliability.rs` has the count
    /// mismatch).
    #[test]
    fn inconsistent_data_sets_and_splits_are_errors() {
        let images = Batch::<Flat<2>>::zeros(8);
        let error = Dataset::new(images.clone(), vec![0, 1, 2, 0, 3, 1, 0, 0], 3).unwrap_err();
        assert_eq!(
            error.to_string(),
            "label 3 of sample 4 is not below the 3 classes"
        );
        let data = Dataset::new(images, vec![0; 8], 3).unwrap();
        for (fraction, train, validation) in [
            (0.0, 8, 0),
            (1.0, 8, 0),
            (-0.5, 8, 0),
            (f32::NAN, 8, 0),
            (0.05, 8, 0),
            (0.97, 0, 8),
        ] {
            let error = data.split_validation(fraction).unwrap_err();
            assert!(
                matches!(error, DataError::ValidationSplit { train: t, validation: v, samples: 8, .. } if (t, v) == (train, validation)),
                "{fraction}: {error}"
            );
            assert!(error.to_string().contains("both need at least one"));
        }
        let (train, validation) = data.split_validation(0.5).unwrap();
        assert_eq!((train.len(), validation.len()), (4, 4));
    }

    #[test]
    fn mismatches_are_errors_that_name_the_files() {
        let dir = temp_dir("bad");
        let (images, labels) = write_pair(dir.path(), &[3, 2, 3], &[0, 1]);
        let error = Dataset::<Hwc<2, 3, 1>>::from_idx(&images, &labels, 3)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("images.idx and") && error.contains("3 images but 2 labels"),
            "{error}"
        );

        let (images, labels) = write_pair(dir.path(), &[2, 4, 4], &[0, 1]);
        let error = Dataset::<Hwc<2, 3, 1>>::from_idx(&images, &labels, 3)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("images.idx: the images are 4x4 but the network expects 2x3x1"),
            "{error}"
        );

        let (images, labels) = write_pair(dir.path(), &[2, 2, 3], &[0, 7]);
        let error = Dataset::<Hwc<2, 3, 1>>::from_idx(&images, &labels, 3)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("labels.idx: label 7 of sample 1 is not below the 3 classes"),
            "{error}"
        );

        let error = Dataset::<Hwc<2, 3, 1>>::from_idx(dir.path().join("missing"), &labels, 3)
            .unwrap_err()
            .to_string();
        assert!(error.contains("missing:"), "{error}");
    }
}
