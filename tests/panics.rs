//! A panic inside a pass reaches the caller as a panic, and the network works normally after:
//! a user's layer that panics on a pool thread, in the README network, inside passes that keep
//! the pool awake (inference at batch 1 and 128, a training step at batch 128), called from a
//! 2-thread pool and from outside it. A hang is a failure: each call has a minute.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::time::Duration;

use constnet::init::SeededRng;
use constnet::layers::{Build, Layer, NoParams, TensorVisitor, TensorVisitorMut, UpdateVisitor};
use constnet::prelude::*;
use rayon::prelude::*;

/// The identity on 24x24x64 images that, when armed, panics on whichever pool thread takes the
/// last sample of its parallel loop, in every pass.
#[derive(Clone, Debug, Default)]
struct Tripwire {
    armed: bool,
}

type Image = Hwc<24, 24, 64>;

impl Tripwire {
    fn pass(&self, input: &Batch<Image>, output: &mut Batch<Image>) {
        output.copy_from(input);
        let samples = input.len();
        (0..samples).into_par_iter().for_each(|sample| {
            assert!(!(self.armed && sample == samples - 1), "tripwire");
        });
    }
}

impl Layer for Tripwire {
    type Input = Image;
    type Output = Image;
    type Grads = NoParams;
    type Cache = ();
    const PARAMS: usize = 0;

    fn forward(&self, input: &Batch<Image>, output: &mut Batch<Image>, _cache: &mut ()) {
        self.pass(input, output);
    }

    fn backward(
        &self,
        _input: &Batch<Image>,
        _output: &Batch<Image>,
        grad_output: &Batch<Image>,
        _cache: &mut (),
        grad_input: Option<&mut Batch<Image>>,
        _grads: &mut NoParams,
    ) {
        if let Some(grad_input) = grad_input {
            self.pass(grad_output, grad_input);
        }
    }

    fn new_grads(&self) -> NoParams {
        NoParams
    }
    fn visit_params(&self, _visit: &mut TensorVisitor<'_>) {}
    fn visit_params_mut(&mut self, _visit: &mut TensorVisitorMut<'_>) {}
    fn update_params(&mut self, _grads: &NoParams, _update: &mut UpdateVisitor<'_>) {}
}

impl Build for Tripwire {
    fn build(_rng: &mut SeededRng) -> Self {
        Tripwire::default()
    }
}

constnet::network! {
    Tripped<input(28, 28, 1) conv(32, 3) relu conv(64, 3) relu layer(Tripwire) maxpool(2)
            dropout(0.25) flatten dense(128) relu dropout(0.5) dense(10) softmax>
}

/// Runs `call` on a thread of its own and returns whether it panicked; fails if it has not
/// ended within a minute.
fn panics(what: &str, call: impl FnOnce() + Send + 'static) -> bool {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let panicked = catch_unwind(AssertUnwindSafe(call)).is_err();
        let _ = sender.send(panicked);
    });
    match receiver.recv_timeout(Duration::from_secs(60)) {
        Ok(panicked) => panicked,
        Err(_) => panic!("{what} did not return within a minute: the pass hangs"),
    }
}

fn images(samples: usize) -> Batch<Hwc<28, 28, 1>> {
    Batch::from_fn(samples, |i| (i % 255) as f32 / 255.0)
}

/// Runs `call` on `pool`, or from outside any pool.
fn on<R: Send>(pool: Option<&rayon::ThreadPool>, call: impl FnOnce() -> R + Send) -> R {
    match pool {
        Some(pool) => pool.install(call),
        None => call(),
    }
}

/// Inference at `samples` samples panics when the tripwire is armed and gives the unarmed
/// network's output after, on `pool` (or from outside any pool).
fn check_inference(samples: usize, pool: Option<&'static rayon::ThreadPool>) {
    let input = images(samples);
    let want = Tripped::new(1)
        .infer(&input, &mut TrippedWorkspace::default())
        .as_slice()
        .to_vec();
    let what = format!("inference at batch {samples} (pool: {})", pool.is_some());
    let (sender, receiver) = mpsc::channel();
    let panicked = panics(&what, move || {
        let mut net = Tripped::new(1);
        let mut workspace = TrippedWorkspace::default();
        let infer = |net: &Tripped, workspace: &mut TrippedWorkspace| {
            on(pool, || net.infer(&input, workspace).as_slice().to_vec())
        };
        net.layer1.armed = true;
        let tripped = catch_unwind(AssertUnwindSafe(|| infer(&net, &mut workspace))).is_err();
        net.layer1.armed = false;
        let after = infer(&net, &mut workspace);
        let _ = sender.send((tripped, after));
    });
    assert!(!panicked, "{what}: the call after the panic works");
    let (tripped, after) = receiver.recv().expect("the checks ran");
    assert!(
        tripped,
        "{what}: the armed layer's panic reaches the caller"
    );
    assert_eq!(
        after, want,
        "{what}: the next call gives the unarmed output"
    );
}

/// A training step at batch 128 (through `fit`) panics when armed, and `fit` trains after.
fn check_training(pool: Option<&'static rayon::ThreadPool>) {
    let what = format!("fit at batch 128 (pool: {})", pool.is_some());
    let (sender, receiver) = mpsc::channel();
    let panicked = panics(&what, move || {
        let labels = (0..128).map(|i| i % 10).collect();
        let data = Dataset::new(images(128), labels, 10).expect("a data set");
        let mut net = Tripped::new(1);
        let mut optimizer = OptimizerState::new(Adam::default());
        let config = FitConfig {
            batch_size: 128,
            verbose: false,
            ..FitConfig::default()
        };
        let mut train = |net: &mut Tripped| {
            on(pool, || {
                fit(net, &mut optimizer, &data, Validation::None, &config)
            })
        };
        net.layer1.armed = true;
        let tripped = catch_unwind(AssertUnwindSafe(|| train(&mut net))).is_err();
        net.layer1.armed = false;
        let history = train(&mut net).expect("fit trains after the panic");
        let _ = sender.send((tripped, history.epochs.len()));
    });
    assert!(!panicked, "{what}: the call after the panic works");
    let (tripped, epochs) = receiver.recv().expect("the checks ran");
    assert!(
        tripped,
        "{what}: the armed layer's panic reaches the caller"
    );
    assert_eq!(epochs, 1);
}

fn two_thread_pool() -> &'static rayon::ThreadPool {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build();
    Box::leak(Box::new(pool.expect("a pool of two threads")))
}

#[test]
fn a_panicking_layer_reaches_the_caller_and_the_next_call_works() {
    let pool = two_thread_pool();
    for samples in [1, 128] {
        check_inference(samples, Some(pool));
        check_inference(samples, None);
    }
    check_training(Some(pool));
    check_training(None);
}
