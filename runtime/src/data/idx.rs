//! IDX files, the format MNIST (and its look-alikes such as Fashion-MNIST) ship in: a magic
//! number (two zero bytes, a type code, the number of dimensions), the dimensions as big-endian
//! `u32`s, then the values. Files may be gzip-compressed; they are recognised by their content,
//! not their name. Only unsigned bytes (type `0x08`), the type every image and label file of
//! these data sets uses, are read.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use super::DataError;

/// The dimensions and values of an IDX file of unsigned bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions, outermost first (`[60000, 28, 28]` for MNIST's training images).
    pub dims: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<u8>,
}

/// The type code of unsigned bytes.
const UNSIGNED_BYTE: u8 = 0x08;

/// The first two bytes of every gzip file.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The most values an IDX file may declare: 2^32 (4 GiB), a hundred times MNIST's training
/// images. A header declaring more is refused before anything is allocated for its values.
pub const MAX_VALUES: usize = 1 << 32;

/// Reads an IDX file of unsigned bytes, gzip-compressed or not, streaming: the header is checked
/// before any value is read, and memory grows only with the values actually read, never past
/// the declared size. A raw file's length is checked against its header before its values are
/// allocated; a gzip stream that inflates past its declared size (a "gzip bomb") is refused as
/// soon as it does.
pub fn read_idx(path: impl AsRef<Path>) -> Result<IdxArray, DataError> {
    let path = path.as_ref();
    let io = |source| DataError::Io {
        file: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let mut reader = BufReader::new(file);
    let gzip = reader.fill_buf().map_err(io)?.starts_with(&GZIP_MAGIC);
    let parsed = if gzip {
        read_values(GzDecoder::new(reader), None)
    } else {
        read_values(reader, Some(size))
    };
    parsed.map_err(|problem| DataError::Format {
        file: path.to_path_buf(),
        problem: problem.describe(gzip),
    })
}

/// Parses IDX bytes (uncompressed); the error says what is wrong, without the file name.
pub fn parse_idx(bytes: &[u8]) -> Result<IdxArray, String> {
    read_values(bytes, Some(bytes.len() as u64)).map_err(|problem| problem.describe(false))
}

/// What went wrong reading an IDX stream.
enum Problem {
    /// The bytes are not a valid IDX file.
    Format(String),
    /// Reading failed (for gzip: the compressed data is corrupt or truncated).
    Read(std::io::Error),
}

impl Problem {
    fn describe(self, gzip: bool) -> String {
        match self {
            Problem::Format(problem) => problem,
            Problem::Read(error) if gzip => {
                format!("the gzip data is corrupt or truncated ({error})")
            }
            Problem::Read(error) => format!("reading failed ({error})"),
        }
    }
}

/// Reads up to `buf.len()` bytes, stopping early only at the end of the stream; returns how
/// many were read.
fn read_up_to(input: &mut impl Read, buf: &mut [u8]) -> Result<usize, Problem> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Problem::Read(e)),
        }
    }
    Ok(filled)
}

/// Reads an IDX header and its values from `input`, whose total length is `size` when known.
fn read_values(mut input: impl Read, size: Option<u64>) -> Result<IdxArray, Problem> {
    let format = |problem: String| Problem::Format(problem);
    let mut magic = [0u8; 4];
    let got = read_up_to(&mut input, &mut magic)?;
    if got < 4 {
        return Err(format(format!(
            "{got} bytes is too short for an IDX header (4 bytes at least)"
        )));
    }
    let [zero_a, zero_b, type_code, rank] = magic;
    if zero_a != 0 || zero_b != 0 {
        return Err(format(format!(
            "not an IDX file: it starts with {zero_a:#04x} {zero_b:#04x}, not the magic 0x00 0x00"
        )));
    }
    if type_code != UNSIGNED_BYTE {
        return Err(format(format!(
            "values of type {type_code:#04x}; only unsigned bytes (0x08) are supported"
        )));
    }
    if rank == 0 {
        return Err(format("the header declares zero dimensions".into()));
    }
    let mut header = vec![0u8; 4 * rank as usize];
    if read_up_to(&mut input, &mut header)? < header.len() {
        return Err(format(format!(
            "the header declares {rank} dimensions but the file ends inside it"
        )));
    }
    let dims: Vec<usize> = header
        .chunks(4)
        .map(|d| u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_VALUES)
        .ok_or_else(|| {
            format(format!(
                "the dimensions {dims:?} declare more than {MAX_VALUES} values, the most an IDX \
                 file may hold here"
            ))
        })?;
    let mismatch = |found: String, short: bool| {
        format(format!(
            "the dimensions {dims:?} need {expected} values but the file holds {found}{}",
            if short { " (truncated?)" } else { "" }
        ))
    };
    if let Some(size) = size {
        let found = size.saturating_sub(4 + header.len() as u64);
        if found != expected as u64 {
            return Err(mismatch(found.to_string(), found < expected as u64));
        }
    }
    // Capacity grows with what arrives (at most twice it), not with what the header claims.
    let mut data = Vec::with_capacity(if size.is_some() { expected } else { 0 });
    (&mut input)
        .take(expected as u64)
        .read_to_end(&mut data)
        .map_err(Problem::Read)?;
    if data.len() < expected {
        return Err(mismatch(data.len().to_string(), true));
    }
    // One byte more must be the end: more data is an error, and reaching the end makes a gzip
    // decoder verify its checksum.
    if read_up_to(&mut input, &mut [0u8; 1])? > 0 {
        return Err(mismatch(format!("more than {expected}"), false));
    }
    Ok(IdxArray { dims, data })
}

/// Writes an IDX file of unsigned bytes (uncompressed). Used to make test data.
pub fn write_idx(path: impl AsRef<Path>, dims: &[usize], data: &[u8]) -> Result<(), DataError> {
    let path = path.as_ref();
    let mut bytes = vec![0, 0, UNSIGNED_BYTE, dims.len() as u8];
    for &d in dims {
        bytes.extend_from_slice(&(d as u32).to_be_bytes());
    }
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).map_err(|source| DataError::Io {
        file: PathBuf::from(path),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(rank: u8, dims: &[u32]) -> Vec<u8> {
        let mut bytes = vec![0, 0, 0x08, rank];
        dims.iter()
            .for_each(|d| bytes.extend_from_slice(&d.to_be_bytes()));
        bytes
    }

    #[test]
    fn parses_a_well_formed_file() {
        let mut bytes = header(2, &[2, 3]);
        bytes.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
        let array = parse_idx(&bytes).unwrap();
        assert_eq!(array.dims, [2, 3]);
        assert_eq!(array.data, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn every_malformed_header_names_its_problem() {
        let cases: [(Vec<u8>, &str); 6] = [
            (vec![0, 0], "too short for an IDX header"),
            (vec![0x1f, 0x00, 0x08, 1, 0, 0, 0, 0], "not an IDX file"),
            (vec![0, 0, 0x0d, 1, 0, 0, 0, 0], "values of type 0x0d"),
            (vec![0, 0, 0x08, 0], "zero dimensions"),
            (vec![0, 0, 0x08, 3, 0, 0, 0, 1], "ends inside it"),
            (
                [header(1, &[5]), vec![1, 2]].concat(),
                "need 5 values but the file holds 2 (truncated?)",
            ),
        ];
        for (bytes, expected) in cases {
            let problem = parse_idx(&bytes).unwrap_err();
            assert!(
                problem.contains(expected),
                "{problem:?} should say {expected:?}"
            );
        }
        let too_long = [header(1, &[1]), vec![7, 8]].concat();
        assert!(
            parse_idx(&too_long)
                .unwrap_err()
                .contains("need 1 values but the file holds 2")
        );
        let huge = header(3, &[1 << 16, 1 << 16, 2]);
        assert!(
            parse_idx(&huge)
                .unwrap_err()
                .contains("declare more than 4294967296 values"),
        );
        let overflowing = header(4, &[u32::MAX, u32::MAX, u32::MAX, u32::MAX]);
        assert!(
            parse_idx(&overflowing)
                .unwrap_err()
                .contains("declare more than")
        );
    }
}
