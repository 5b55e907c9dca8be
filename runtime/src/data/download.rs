//! Fetching data files over HTTP(S) with their SHA-256 verified, such that a failed, truncated or
//! corrupted transfer never leaves a file behind: the body streams into a temporary file in the
//! same directory, hashed as it goes, and is renamed into place only once complete and verified.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{DataError, MNIST_FILES};

/// Public HTTPS mirrors of MNIST, tried in order; each serves the four `.gz` files by name.
pub const MNIST_MIRRORS: [&str; 2] = [
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
];

/// SHA-256 of each of [`MNIST_FILES`], as originally published.
pub const MNIST_SHA256: [&str; 4] = [
    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
];

/// Largest file accepted (MNIST's largest is 9.9 MB).
const MAX_BYTES: u64 = 256 << 20;

/// Downloads `url` to `dest` if its SHA-256 is `sha256_hex`. On any failure `dest` is left as
/// it was (absent) and no partial file remains.
pub fn download_verified(
    url: &str,
    dest: impl AsRef<Path>,
    sha256_hex: &str,
) -> Result<(), DataError> {
    let dest = dest.as_ref();
    let fail = |problem: String| DataError::Download {
        file: dest.to_path_buf(),
        url: url.to_string(),
        problem,
    };
    let partial = partial_path(dest);
    let result = fetch_into(url, &partial, sha256_hex).map_err(fail);
    match result {
        Ok(()) => std::fs::rename(&partial, dest).map_err(|source| DataError::Io {
            file: dest.to_path_buf(),
            source,
        }),
        Err(error) => {
            // Nothing to clean up if the file was never created.
            let _ = std::fs::remove_file(&partial);
            Err(error)
        }
    }
}

/// `dir/.name.partial-<pid>`: beside the destination (so the rename is atomic), hidden, and
/// unique to this process.
fn partial_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map_or("download".into(), |n| n.to_string_lossy());
    dest.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// Streams `url` into `path`, hashing as it goes, and checks the digest.
fn fetch_into(url: &str, path: &Path, sha256_hex: &str) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(600)))
        .build()
        .into();
    let response = agent.get(url).call().map_err(|e| match e {
        ureq::Error::StatusCode(code) => format!("the server answered HTTP {code}"),
        other => other.to_string(),
    })?;
    let mut body = response
        .into_body()
        .into_with_config()
        .limit(MAX_BYTES)
        .reader();
    let mut file =
        File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let mut hasher = HashingWriter {
        inner: &mut file,
        hasher: Sha256::new(),
        bytes: 0,
    };
    io::copy(&mut body, &mut hasher)
        .map_err(|e| format!("the transfer broke off after {} bytes: {e}", hasher.bytes))?;
    let (digest, bytes) = (hasher.hasher.finalize(), hasher.bytes);
    file.sync_all()
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let found: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    if found != sha256_hex {
        return Err(format!(
            "the {bytes} bytes received have SHA-256 {found}, not the expected {sha256_hex} \
             (corrupt or a different file)"
        ));
    }
    Ok(())
}

/// A writer that hashes and counts what passes through it.
struct HashingWriter<'a> {
    inner: &'a mut File,
    hasher: Sha256,
    bytes: u64,
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Makes sure `dir` holds the four MNIST files: those missing (with or without `.gz`) are
/// downloaded from the first of `mirrors` that serves them intact. Files already present are
/// used as they are, so any data set laid out like MNIST (Fashion-MNIST, ...) works.
pub fn ensure_mnist(dir: impl AsRef<Path>, mirrors: &[&str]) -> Result<(), DataError> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|source| DataError::Io {
        file: dir.to_path_buf(),
        source,
    })?;
    for (name, sha256) in MNIST_FILES.iter().zip(MNIST_SHA256) {
        let dest = dir.join(name);
        if dest.exists() || dir.join(name.trim_end_matches(".gz")).exists() {
            continue;
        }
        let mut errors = Vec::new();
        for mirror in mirrors {
            eprintln!("downloading {name} from {mirror}");
            match download_verified(&format!("{mirror}{name}"), &dest, sha256) {
                Ok(()) => break,
                Err(error) => errors.push(error.to_string()),
            }
        }
        if !dest.exists() {
            return Err(DataError::Download {
                file: dest,
                url: mirrors.join(", "),
                problem: format!("no mirror served it intact: {}", errors.join("; ")),
            });
        }
    }
    Ok(())
}
