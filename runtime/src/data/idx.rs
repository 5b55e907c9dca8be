//! IDX files, the format MNIST (and its look-alikes such as Fashion-MNIST) ship in: a magic
//! number (two zero bytes, a type code, the number of dimensions), the dimensions as big-endian
//! `u32`s, then the values. Files may be gzip-compressed; they are recognised by their content,
//! not their name. Only unsigned bytes (type `0x08`), the type every image and label file of
//! these data sets uses, are read.

use std::io::Read;
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

/// Reads an IDX file of unsigned bytes, gzip-compressed or not.
pub fn read_idx(path: &Path) -> Result<IdxArray, DataError> {
    let error = |problem: String| DataError::Format {
        file: path.to_path_buf(),
        problem,
    };
    let raw = std::fs::read(path).map_err(|source| DataError::Io {
        file: path.to_path_buf(),
        source,
    })?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut decompressed = Vec::new();
        GzDecoder::new(&raw[..])
            .read_to_end(&mut decompressed)
            .map_err(|e| error(format!("the gzip data is corrupt or truncated ({e})")))?;
        decompressed
    } else {
        raw
    };
    parse_idx(&bytes).map_err(error)
}

/// Parses IDX bytes; the error says what is wrong, without the file name.
pub fn parse_idx(bytes: &[u8]) -> Result<IdxArray, String> {
    let [zero_a, zero_b, type_code, rank] = *bytes.get(..4).ok_or_else(|| {
        format!(
            "{} bytes is too short for an IDX header (4 bytes at least)",
            bytes.len()
        )
    })?
    else {
        unreachable!("four bytes were taken")
    };
    if zero_a != 0 || zero_b != 0 {
        return Err(format!(
            "not an IDX file: it starts with {zero_a:#04x} {zero_b:#04x}, not the magic 0x00 0x00"
        ));
    }
    if type_code != UNSIGNED_BYTE {
        return Err(format!(
            "values of type {type_code:#04x}; only unsigned bytes (0x08) are supported"
        ));
    }
    if rank == 0 {
        return Err("the header declares zero dimensions".into());
    }
    let header_len = 4 + 4 * rank as usize;
    let header = bytes.get(4..header_len).ok_or_else(|| {
        format!("the header declares {rank} dimensions but the file ends inside it")
    })?;
    let dims: Vec<usize> = header
        .chunks(4)
        .map(|d| u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("the dimensions {dims:?} overflow"))?;
    let found = bytes.len() - header_len;
    if found != expected {
        return Err(format!(
            "the dimensions {dims:?} need {expected} values but the file holds {found}{}",
            if found < expected {
                " (truncated?)"
            } else {
                ""
            }
        ));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header_len..].to_vec(),
    })
}

/// Writes an IDX file of unsigned bytes (uncompressed). Used to make test data.
pub fn write_idx(path: &Path, dims: &[usize], data: &[u8]) -> Result<(), DataError> {
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
    }
}
