//! The reference digit splits (`models/data/*.idx?-ubyte`), in IDX, the format MNIST ships in.
//!
//! IDX: a big-endian header (`0x00 0x00 type ndims`, then one u32 per dimension), then the
//! elements. Images are `0x0803` (u8, 3 dims: count, rows, cols), labels `0x0801`.

use std::path::{Path, PathBuf};

/// Why a split could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The file could not be read.
    #[error("cannot read {path}: {cause}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        cause: std::io::Error,
    },
    /// The file is not the IDX file it should be.
    #[error("{path} is not a valid IDX {what} file: {why}")]
    Format {
        /// File.
        path: PathBuf,
        /// `images` or `labels`.
        what: &'static str,
        /// What is wrong.
        why: String,
    },
    /// Image and label files disagree.
    #[error("{images} holds {n_images} images but {labels} holds {n_labels} labels")]
    Mismatch {
        /// Image file.
        images: PathBuf,
        /// Label file.
        labels: PathBuf,
        /// Images counted.
        n_images: usize,
        /// Labels counted.
        n_labels: usize,
    },
}

/// A labelled set of 8-bit grayscale images, row-major, one byte a pixel.
#[derive(Debug, Clone)]
pub struct Digits {
    rows: usize,
    cols: usize,
    pixels: Vec<u8>,
    labels: Vec<u8>,
}

/// The committed splits of the reference data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// 2,000 images for choosing thresholds (calibration).
    Calib,
    /// 2,000 images never used for training or for choosing anything.
    Test,
}

impl Split {
    /// File stem under `models/data/`.
    pub fn stem(self) -> &'static str {
        match self {
            Split::Calib => "calib",
            Split::Test => "test",
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, DatasetError> {
    std::fs::read(path).map_err(|cause| DatasetError::Io { path: path.to_owned(), cause })
}

/// Parses an IDX header with the given magic and dimension count; returns dims and payload.
fn parse_idx<'a>(
    bytes: &'a [u8],
    magic: u32,
    path: &Path,
    what: &'static str,
) -> Result<(Vec<usize>, &'a [u8]), DatasetError> {
    let bad = |why: String| DatasetError::Format { path: path.to_owned(), what, why };
    let ndims = (magic & 0xff) as usize;
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(bad(format!("{} bytes is shorter than the header", bytes.len())));
    }
    let word = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    if word(0) != magic {
        return Err(bad(format!("magic is {:#010x}, expected {magic:#010x}", word(0))));
    }
    let dims: Vec<usize> = (0..ndims).map(|d| word(4 + 4 * d) as usize).collect();
    let want = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let payload = &bytes[header..];
    if want != Some(payload.len()) {
        return Err(bad(format!("dims {dims:?} do not match {} payload bytes", payload.len())));
    }
    Ok((dims, payload))
}

impl Digits {
    /// Reads an images file and a labels file.
    pub fn load(images: &Path, labels: &Path) -> Result<Digits, DatasetError> {
        let image_bytes = read(images)?;
        let (dims, pixels) = parse_idx(&image_bytes, 0x0803, images, "images")?;
        let label_bytes = read(labels)?;
        let (ldims, label_data) = parse_idx(&label_bytes, 0x0801, labels, "labels")?;
        if dims[0] != ldims[0] {
            return Err(DatasetError::Mismatch {
                images: images.to_owned(),
                labels: labels.to_owned(),
                n_images: dims[0],
                n_labels: ldims[0],
            });
        }
        Ok(Digits { rows: dims[1], cols: dims[2], pixels: pixels.to_vec(), labels: label_data.to_vec() })
    }

    /// Reads a committed split from a models directory (`<dir>/data/<split>-*.idx?-ubyte`).
    pub fn load_split(models_dir: &Path, split: Split) -> Result<Digits, DatasetError> {
        let data = models_dir.join("data");
        Digits::load(
            &data.join(format!("{}-images.idx3-ubyte", split.stem())),
            &data.join(format!("{}-labels.idx1-ubyte", split.stem())),
        )
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// `[rows, cols]` of every image.
    pub fn image_shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// Pixels of image `i` (row-major). Panics if `i >= len()`, like slice indexing.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.rows * self.cols;
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Pixels of images `range`, back to back.
    pub fn images(&self, range: std::ops::Range<usize>) -> &[u8] {
        let n = self.rows * self.cols;
        &self.pixels[range.start * n..range.end * n]
    }

    /// Label of image `i`.
    pub fn label(&self, i: usize) -> u8 {
        self.labels[i]
    }

    /// All labels.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(magic: u32, dims: &[u32], payload: &[u8]) -> Vec<u8> {
        let mut v = magic.to_be_bytes().to_vec();
        for d in dims {
            v.extend(d.to_be_bytes());
        }
        v.extend(payload);
        v
    }

    #[test]
    fn reads_and_rejects() {
        let dir = tempfile::tempdir().unwrap();
        let (im, lb) = (dir.path().join("i"), dir.path().join("l"));
        std::fs::write(&im, idx(0x0803, &[2, 2, 2], &[1, 2, 3, 4, 5, 6, 7, 8])).unwrap();
        std::fs::write(&lb, idx(0x0801, &[2], &[3, 9])).unwrap();
        let d = Digits::load(&im, &lb).unwrap();
        assert_eq!((d.len(), d.image(1), d.label(1)), (2, &[5, 6, 7, 8][..], 9));

        std::fs::write(&lb, idx(0x0801, &[3], &[3, 9, 1])).unwrap();
        assert!(matches!(Digits::load(&im, &lb), Err(DatasetError::Mismatch { .. })));
        std::fs::write(&im, idx(0x0803, &[2, 2, 2], &[1, 2, 3])).unwrap();
        let msg = Digits::load(&im, &lb).unwrap_err().to_string();
        assert!(msg.contains("do not match 3 payload bytes"), "{msg}");
        std::fs::write(&im, idx(0x0801, &[8], &[0; 8])).unwrap();
        assert!(Digits::load(&im, &lb).unwrap_err().to_string().contains("magic"));
    }
}
