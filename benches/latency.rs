//! Batch-1 inference latency of the peer workloads, call by call, as the peers' benchmark
//! scripts report ONNX Runtime's (see `docs/benchmarks.md`): the median, 99th percentile and mean of
//! many timed calls after a warm-up, on 1 and 2 threads.
//!
//! Each configuration is timed three times over, the three callers taking turns:
//! - from a pool thread: the calls run inside `ThreadPool::install` on a pool of 1 or 2
//!   threads, as criterion's batch-1 benchmarks run them and as a program that calls `infer`
//!   from its own rayon work does;
//! - from the main thread: `infer` called directly, as most programs call it, on rayon's global
//!   pool (as many threads as cores, or `RAYON_NUM_THREADS`; the other row shows "–");
//! - from a thread that joined its context: `infer` called directly by a thread that built a
//!   context of 1 or 2 threads counting itself (`ContextBuilder::with_this_thread`), as a
//!   program's main thread does when it builds its context so.
//!
//! `W1 int8` and the other `int8` rows time the workload's int8 form ([`Quantized`]).
//!
//! Run with `cargo bench --bench latency`; `-- W1` times one workload (and its int8 form), `--calls N` sets the
//! number of timed calls (default 3000), `--export DIR` writes each workload as ONNX instead.

#[path = "benchmarks/workloads.rs"]
mod workloads;

use std::sync::{Mutex, mpsc};
use std::time::Instant;

use clap::Parser;
use constnet::context::Context;
use constnet::network::Network;
use constnet::quant::{Quantized, QuantizedWorkspace};
use constnet::{Batch, Flat};
use rayon::ThreadPoolBuilder;
use workloads::{C20, L5, M1, R1, W1, W2, W3};

/// Calls made before timing starts.
const WARM_UP_CALLS: usize = 300;

/// Per-call latencies in microseconds, summarised as the peers summarise theirs.
struct Summary {
    median: f64,
    p99: f64,
    mean: f64,
}

impl Summary {
    fn of(mut micros: Vec<f64>) -> Self {
        micros.sort_by(f64::total_cmp);
        let percentile = |p: f64| micros[((micros.len() - 1) as f64 * p).round() as usize];
        Self {
            median: percentile(0.5),
            p99: percentile(0.99),
            mean: micros.iter().sum::<f64>() / micros.len() as f64,
        }
    }
}

/// Rounds the timed calls of a configuration are spread over, the three callers taking turns
/// within each round, so a slow spell of the machine falls on all three alike.
const ROUNDS: usize = 10;

/// Times `calls` calls of `call`, each on its own: microseconds per call.
fn time_calls(calls: usize, call: &mut dyn FnMut()) -> Vec<f64> {
    (0..calls)
        .map(|_| {
            let start = Instant::now();
            call();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect()
}

/// One image of `N`'s input.
fn image<N: Network>() -> Batch<N::Input> {
    Batch::from_fn(1, |i| ((i * 37) % 101) as f32 / 101.0)
}

/// Times network `N` at batch 1 on a pool of `threads` threads as [`time_all`] does.
fn workload<N>(threads: usize, calls: usize) -> [Option<Summary>; 3]
where
    N: Network<Output = Flat<10>>,
{
    let network = N::new(0);
    let image = image::<N>();
    let mut workspace = N::Cache::default();
    time_all(threads, calls, || {
        std::hint::black_box(network.infer(&image, &mut workspace));
    })
}

/// Times the int8 form of network `N` ([`Quantized`], calibrated on 256 images of noise) as
/// [`workload`] times `N`.
fn workload_int8<N>(threads: usize, calls: usize) -> [Option<Summary>; 3]
where
    N: Network<Output = Flat<10>>,
{
    let calibration = Batch::<N::Input>::from_fn(256, |i| ((i * 7919) % 251) as f32 / 251.0);
    let int8 = Quantized::calibrate(&N::new(0), &calibration).expect("the workload quantizes");
    let image = image::<N>();
    let mut workspace = QuantizedWorkspace::default();
    time_all(threads, calls, || {
        std::hint::black_box(int8.infer(&image, &mut workspace));
    })
}

/// Times `infer` on a pool of `threads` threads from one of its threads; from the main thread
/// when the global pool has that many; and from a thread that joined a context of `threads`
/// threads. The three take turns: [`WARM_UP_CALLS`] untimed calls each, then [`ROUNDS`] rounds
/// of an equal share of `calls` each.
fn time_all(threads: usize, calls: usize, infer: impl FnMut() + Send) -> [Option<Summary>; 3] {
    let pool = ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool");
    let from_main_thread = rayon::current_num_threads() == threads;
    let infer = Mutex::new(infer);
    let time = |calls| time_calls(calls, &mut *infer.lock().expect("no call panicked"));
    let mut micros: [Vec<f64>; 3] = Default::default();
    std::thread::scope(|scope| {
        let (requests, joined_requests) = mpsc::channel::<usize>();
        let (joined_replies, replies) = mpsc::channel();
        scope.spawn(move || {
            let _context = Context::builder()
                .threads(threads)
                .with_this_thread()
                .build()
                .expect("a new thread joins its context");
            for calls in joined_requests {
                joined_replies
                    .send(time(calls))
                    .expect("the main thread waits");
            }
        });
        let share = calls.div_ceil(ROUNDS);
        for (round, calls) in std::iter::once(WARM_UP_CALLS)
            .chain([share; ROUNDS])
            .enumerate()
        {
            let timed = [
                Some(pool.install(|| time(calls))),
                from_main_thread.then(|| time(calls)),
                {
                    requests.send(calls).expect("the joined thread waits");
                    Some(replies.recv().expect("the joined thread replies"))
                },
            ];
            if round > 0 {
                for (all, timed) in micros.iter_mut().zip(timed) {
                    all.extend(timed.unwrap_or_default());
                }
            }
        }
    });
    micros.map(|micros| (!micros.is_empty()).then(|| Summary::of(micros)))
}

/// Batch-1 latency of the peer workloads, call by call.
#[derive(Parser)]
struct Cli {
    /// Times only the workloads whose name contains this (`W1`, `R1`, `C20`, ...).
    filter: Option<String>,
    /// Timed calls per configuration.
    #[arg(long, default_value_t = 3000)]
    calls: usize,
    /// Instead of timing, writes each workload as `DIR/<name>.onnx` (its weights drawn from
    /// seed 0), for ONNX Runtime to time the same networks.
    #[arg(long, value_name = "DIR")]
    export: Option<std::path::PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Writes network `N`, weights from seed 0, as `dir/<name>.onnx`.
fn export<N: Network>(dir: &std::path::Path) {
    let path = dir.join(format!("{}.onnx", N::NAME));
    constnet::onnx::export(&N::new(0), &path).expect("the workload exports");
    println!("wrote {}", path.display());
}

fn main() {
    let Cli {
        filter,
        calls,
        export: export_dir,
        ..
    } = Cli::parse();
    let filter = filter.unwrap_or_default();
    type Run = fn(usize, usize) -> [Option<Summary>; 3];
    type Export = fn(&std::path::Path);
    let workloads: [(&str, Run, Export); 11] = [
        ("W1", workload::<W1>, export::<W1>),
        ("W1 int8", workload_int8::<W1>, export::<W1>),
        ("W2", workload::<W2>, export::<W2>),
        ("W2 int8", workload_int8::<W2>, export::<W2>),
        ("W3", workload::<W3>, export::<W3>),
        ("W3 int8", workload_int8::<W3>, export::<W3>),
        ("R1", workload::<R1>, export::<R1>),
        ("L5", workload::<L5>, export::<L5>),
        ("L5 int8", workload_int8::<L5>, export::<L5>),
        ("C20", workload::<C20>, export::<C20>),
        ("M1", workload::<M1>, export::<M1>),
    ];
    let chosen = workloads.iter().filter(|(name, ..)| name.contains(&filter));
    if let Some(dir) = export_dir {
        let chosen = chosen.filter(|(name, ..)| !name.ends_with("int8"));
        std::fs::create_dir_all(&dir).expect("the export directory");
        chosen.for_each(|(.., write)| write(&dir));
        return;
    }
    println!("Batch-1 inference, µs per call: median / p99 / mean of {calls} calls");
    println!(
        "{:<10}{:<9}{:>26}{:>26}{:>26}",
        "network", "threads", "from a pool thread", "from the main thread", "joined thread"
    );
    for (name, run, _) in chosen {
        for threads in [1, 2] {
            let cells = run(threads, calls).map(|summary| {
                summary.map_or("–".to_string(), |s| {
                    format!("{:.1} / {:.1} / {:.1}", s.median, s.p99, s.mean)
                })
            });
            println!(
                "{name:<10}{threads:<9}{:>26}{:>26}{:>26}",
                cells[0], cells[1], cells[2]
            );
        }
    }
}
