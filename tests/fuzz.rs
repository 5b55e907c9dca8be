//! A stable-Rust fuzzer for the three readers of untrusted files: the IDX reader (raw and
//! gzip), the weight loader (safetensors) and the ONNX importer. Each input is made from a valid
//! seed file by seeded mutations (truncations, bit flips, byte overwrites, insertions,
//! deletions, huge declared dimensions, header lengths past the end, wrong dtypes, value names
//! swapped so that nodes read values made later or by themselves) or is crafted (a gzip bomb,
//! a model declaring a tensor of 2^40 values, a graph with a cycle), written to a file and read
//! back. Every read must return `Ok` or an error, never panic, finish within a
//! second, and keep its peak heap use within a bound stated for the input (counted by this
//! binary's global allocator).
//!
//! `cargo test --test fuzz` runs a short round; `.ci/run` runs the full one,
//! `cargo test --test fuzz -- --ignored` (100,000 inputs per reader).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use constnet::data::idx::{self, read_idx};
use constnet::init::seeded_rng;
use constnet::rand::{Rng, RngExt};
use constnet::weights;
use constnet_onnx_proto::{self as proto, Message};

/// The system allocator, counting the bytes live now and the most live since the last reset.
struct CountingAllocator;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the counters only observe.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            let live = LIVE.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

constnet::network! {
    FuzzNet<input(6, 6, 1) conv(3, 3) batchnorm relu flatten dense(4) softmax>
}

/// Fixed overhead every read may allocate beyond its bound (buffers, error strings).
const SLACK: usize = 1 << 20;
/// The most a deflate stream can expand (1032:1), for bounding what a mutated gzip inflates to.
const DEFLATE_MAX_RATIO: usize = 1032;
/// The longest any single read may take.
const MAX_READ_TIME: Duration = Duration::from_secs(1);

/// What one reader did over a run.
#[derive(Default)]
struct Tally {
    inputs: usize,
    accepted: usize,
    peak_bytes: usize,
    slowest: Duration,
}

/// Writes `bytes` to `path`, reads it with `read`, and checks: no panic, at most
/// `MAX_READ_TIME`, peak heap growth at most `bound` bytes.
fn check_one(
    tally: &mut Tally,
    path: &Path,
    bytes: &[u8],
    bound: usize,
    read: &dyn Fn(&Path) -> bool,
) {
    std::fs::write(path, bytes).unwrap();
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let started = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| read(path)));
    let elapsed = started.elapsed();
    let grew = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    let sample = &bytes[..bytes.len().min(48)];
    let accepted = outcome.unwrap_or_else(|_| panic!("the reader panicked on {sample:02x?}"));
    assert!(
        elapsed <= MAX_READ_TIME,
        "{elapsed:?} on an input of {} bytes starting {sample:02x?}",
        bytes.len()
    );
    assert!(
        grew <= bound,
        "{grew} bytes allocated (bound {bound}) on an input of {} bytes starting {sample:02x?}",
        bytes.len()
    );
    tally.inputs += 1;
    tally.accepted += usize::from(accepted);
    tally.peak_bytes = tally.peak_bytes.max(grew);
    tally.slowest = tally.slowest.max(elapsed);
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn idx_header(dims: &[u32]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
    dims.iter()
        .for_each(|d| bytes.extend_from_slice(&d.to_be_bytes()));
    bytes
}

/// A gzip stream of an IDX header declaring `dims`, followed by `zeros` zero bytes.
fn gzip_bomb(dims: &[u32], zeros: usize) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&idx_header(dims)).unwrap();
    let block = vec![0u8; 1 << 20];
    let mut left = zeros;
    while left > 0 {
        let n = left.min(block.len());
        encoder.write_all(&block[..n]).unwrap();
        left -= n;
    }
    encoder.finish().unwrap()
}

/// One mutation of `seed`: the kind is drawn, then its place and value.
fn mutate(seed: &[u8], rng: &mut impl Rng, interesting: &[&[u8]]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..rng.random_range(1..=3) {
        let len = bytes.len().max(1);
        match rng.random_range(0..8) {
            0 => bytes.truncate(rng.random_range(0..len)),
            1 => {
                let at = rng.random_range(0..len);
                if let Some(byte) = bytes.get_mut(at) {
                    *byte ^= 1 << rng.random_range(0..8);
                }
            }
            2 => {
                let at = rng.random_range(0..len);
                if let Some(byte) = bytes.get_mut(at) {
                    *byte = [0x00, 0xff, 0x7f, 0x80, 0x01][rng.random_range(0..5)];
                }
            }
            3 => {
                let at = rng.random_range(0..=bytes.len());
                let extra: Vec<u8> = (0..rng.random_range(1..64)).map(|_| rng.random()).collect();
                bytes.splice(at..at, extra);
            }
            4 => {
                let at = rng.random_range(0..len);
                let end = (at + rng.random_range(1..64)).min(bytes.len());
                if at < end {
                    bytes.drain(at..end);
                }
            }
            5 => {
                // A huge or overflowing value over a length or dimension field near the start.
                let at = rng.random_range(0..len.min(24));
                let value: [u8; 8] = [u64::MAX, u32::MAX as u64, 1 << 40, 1 << 31, (1 << 32) + 8]
                    [rng.random_range(0..5)]
                .to_le_bytes();
                let big_endian = rng.random_bool(0.5);
                for (k, &v) in value.iter().enumerate() {
                    if let Some(byte) = bytes.get_mut(at + k) {
                        *byte = if big_endian { value[7 - k] } else { v };
                    }
                }
            }
            6 => {
                // Replace one occurrence of an interesting token (a dtype, a shape) by another.
                let from = interesting[rng.random_range(0..interesting.len())];
                let to = interesting[rng.random_range(0..interesting.len())];
                if let Some(at) = bytes.windows(from.len()).position(|w| w == from) {
                    bytes.splice(at..at + from.len(), to.iter().copied());
                }
            }
            _ => bytes.extend((0..rng.random_range(1..32)).map(|_| rng.random::<u8>())),
        }
    }
    bytes
}

/// Feeds `inputs` mutated IDX files (half of the seeds gzip), then the gzip bombs, to
/// `read_idx`.
fn fuzz_idx(inputs: usize, seed: u64, dir: &Path) -> Tally {
    let mut rng = seeded_rng(seed);
    let images = [
        idx_header(&[3, 5, 4]),
        (0..60).map(|i| (i * 7) as u8).collect(),
    ]
    .concat();
    let labels = [idx_header(&[6]), vec![0, 1, 2, 3, 4, 5]].concat();
    let seeds = [gzip(&images), images.clone(), gzip(&labels), labels];
    let path = dir.join("fuzz.idx");
    let read = |path: &Path| read_idx(path).is_ok();
    let mut tally = Tally::default();
    for i in 0..inputs {
        let seed = &seeds[i % seeds.len()];
        let bytes = mutate(seed, &mut rng, &[&[0x08], &[0x0d], &[0x00]]);
        let inflated = if bytes.starts_with(&[0x1f, 0x8b]) {
            DEFLATE_MAX_RATIO * bytes.len()
        } else {
            bytes.len()
        };
        check_one(&mut tally, &path, &bytes, SLACK + 2 * inflated, &read);
    }
    // Bombs: a small declared size over a huge stream stops after it; a huge declared size is
    // refused before reading; a 2^40 declaration never allocates.
    let bombs = [
        (gzip_bomb(&[10], 256 << 20), SLACK),
        (gzip_bomb(&[1 << 16, 1 << 16, 2], 64 << 20), SLACK),
        (gzip_bomb(&[1 << 20, 1 << 20], 1 << 20), SLACK),
        (gzip_bomb(&[1 << 24, 16], 4 << 20), SLACK + 2 * (4 << 20)),
    ];
    for (bytes, bound) in &bombs {
        check_one(&mut tally, &path, bytes, *bound, &read);
    }
    tally
}

/// Feeds `inputs` mutated weight files to `weights::load`.
fn fuzz_weights(inputs: usize, seed: u64, dir: &Path) -> Tally {
    let mut rng = seeded_rng(seed);
    let path = dir.join("fuzz.safetensors");
    weights::save(&FuzzNet::new(1), &path).unwrap();
    let seed_file = std::fs::read(&path).unwrap();
    let interesting: [&[u8]; 9] = [
        b"F32",
        b"F16",
        b"BF16",
        b"I64",
        b"U8",
        b"[3,3,1,3]",
        b"[4]",
        b"[1099511627776]",
        b"\"data_offsets\":[0,",
    ];
    let read = |path: &Path| weights::load(&mut FuzzNet::new(2), path).is_ok();
    let mut tally = Tally::default();
    for _ in 0..inputs {
        let bytes = mutate(&seed_file, &mut rng, &interesting);
        check_one(&mut tally, &path, &bytes, SLACK + 8 * bytes.len(), &read);
    }
    tally
}

/// Most bytes the importer may allocate per byte of a model file: decoding turns a 2-byte empty
/// message into a struct of a few vectors (about 120 bytes, doubled by a vector's growth), and
/// the translation keeps up to three copies of each weight.
const ONNX_BYTES_PER_FILE_BYTE: usize = 256;

/// The fixtures' models, and crafted ones: a tensor declaring 2^40 values, one declaring 2^40
/// over two dimensions with no data, and two nodes each reading the other's output.
fn onnx_seeds() -> Vec<Vec<u8>> {
    let fixture = |name: &str| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/onnx");
        std::fs::read(format!("{dir}/{name}.onnx")).unwrap()
    };
    let model = |nodes: Vec<proto::Node>, initializer: Vec<proto::Tensor>| {
        let value = |name: &str| proto::ValueInfo {
            name: name.into(),
            r#type: Some(proto::Type {
                tensor_type: Some(proto::TensorType {
                    elem_type: proto::FLOAT,
                    shape: Some(proto::Shape {
                        dim: [None, Some(4)]
                            .map(|size| proto::Dimension {
                                dim_value: size,
                                dim_param: None,
                            })
                            .to_vec(),
                    }),
                }),
            }),
        };
        proto::Model {
            ir_version: 8,
            graph: Some(proto::Graph {
                node: nodes,
                initializer,
                input: vec![value("input")],
                output: vec![value("b")],
                ..Default::default()
            }),
            opset_import: vec![proto::OperatorSetId {
                domain: String::new(),
                version: 17,
            }],
            ..Default::default()
        }
        .encode_to_vec()
    };
    let node = |op: &str, inputs: &[&str], output: &str| proto::Node {
        input: inputs.iter().map(|i| i.to_string()).collect(),
        output: vec![output.into()],
        name: output.into(),
        op_type: op.into(),
        attribute: vec![],
    };
    let huge = |dims: Vec<i64>, raw: usize| proto::Tensor {
        dims,
        data_type: proto::FLOAT,
        name: "w".into(),
        raw_data: vec![0; raw],
        ..Default::default()
    };
    vec![
        fixture("torch_resnet"),
        fixture("torch_mixed"),
        fixture("keras_nhwc"),
        fixture("keras_tf2onnx"),
        model(
            vec![node("MatMul", &["input", "w"], "b")],
            vec![huge(vec![1 << 40], 4)],
        ),
        model(
            vec![node("MatMul", &["input", "w"], "b")],
            vec![huge(vec![1 << 20, 1 << 20], 0)],
        ),
        model(
            vec![node("Relu", &["b"], "a"), node("Add", &["input", "a"], "b")],
            vec![],
        ),
    ]
}

/// Feeds `inputs` mutated ONNX models to the importer.
fn fuzz_onnx(inputs: usize, seed: u64, dir: &Path) -> Tally {
    let mut rng = seeded_rng(seed);
    let seeds = onnx_seeds();
    let interesting: [&[u8]; 12] = [
        b"input",
        b"conv_1",
        b"relu_5",
        b"add_13",
        b"gemm_",
        b"Conv",
        b"Add",
        b"Gemm",
        b"MaxPool",
        b"Transpose",
        b"Shape",
        b"Concat",
    ];
    let path = dir.join("fuzz.onnx");
    let read = |path: &Path| constnet_import::import_file(path).is_ok();
    let mut tally = Tally::default();
    for (i, seed) in seeds.iter().enumerate() {
        let bound = SLACK + ONNX_BYTES_PER_FILE_BYTE * seed.len();
        check_one(&mut tally, &path, seed, bound, &read);
        assert_eq!(
            tally.accepted,
            i.min(3) + 1,
            "the fixtures import, the crafted do not"
        );
    }
    for i in 0..inputs {
        let bytes = mutate(&seeds[i % seeds.len()], &mut rng, &interesting);
        let bound = SLACK + ONNX_BYTES_PER_FILE_BYTE * bytes.len();
        check_one(&mut tally, &path, &bytes, bound, &read);
    }
    tally
}

fn report(name: &str, tally: &Tally, elapsed: Duration) {
    println!(
        "{name}: {} inputs in {:.1} s ({:.0} inputs/s), {} accepted, peak heap growth {} bytes, \
         slowest read {:.2?}",
        tally.inputs,
        elapsed.as_secs_f64(),
        tally.inputs as f64 / elapsed.as_secs_f64(),
        tally.accepted,
        tally.peak_bytes,
        tally.slowest
    );
}

fn run(inputs: usize) {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let idx_tally = fuzz_idx(inputs, 1, dir.path());
    report("IDX reader", &idx_tally, started.elapsed());
    let started = Instant::now();
    let weights_tally = fuzz_weights(inputs, 2, dir.path());
    report("weight loader", &weights_tally, started.elapsed());
    let started = Instant::now();
    let onnx_tally = fuzz_onnx(inputs, 3, dir.path());
    report("ONNX importer", &onnx_tally, started.elapsed());
    // The seeds themselves are valid, and some mutations (in the values) stay valid: the
    // readers accept those, so the run exercised both outcomes.
    assert!(idx_tally.accepted > 0 && idx_tally.accepted < idx_tally.inputs);
    assert!(weights_tally.accepted > 0 && weights_tally.accepted < weights_tally.inputs);
    assert!(onnx_tally.accepted > 4 && onnx_tally.accepted < onnx_tally.inputs);
}

/// One test per run of the allocator's counters: tests of one binary run on parallel threads,
/// and another test's allocations would count against this one's bound.
#[test]
fn readers_survive_a_short_fuzzing_round() {
    parse_idx_refuses_huge_declarations_without_allocating();
    run(2_000);
}

#[test]
#[ignore = "the full round (100,000 inputs per reader); .ci/run runs it"]
fn readers_survive_the_full_fuzzing_round() {
    run(100_000);
}

/// The in-memory parser, which shares the reader's code, refuses a huge declaration without
/// allocating for it.
fn parse_idx_refuses_huge_declarations_without_allocating() {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let error = idx::parse_idx(&idx_header(&[1 << 20, 1 << 20])).unwrap_err();
    assert!(error.contains("declare more than"), "{error}");
    assert!(PEAK.load(Ordering::Relaxed) - base < SLACK);
}
