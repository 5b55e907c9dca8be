//! Passes run with the settings of the context they are given: where work splits never changes
//! a result (inference and a training step agree bit for bit however finely work splits, and on
//! one thread or two), while the instruction set and the convolution algorithm change only the
//! order of sums.

use constnet::context::{Context, ContextError, ConvPolicy, Isa, Settings, Splits};
use constnet::layers::{Layer, ParamSet};
use constnet::loss::sparse_softmax_cross_entropy;
use constnet::network::Network;
use constnet::optim::{OptimizerState, Sgd};
use constnet::{Batch, Flat, Hwc};

constnet::network! {
    Cnn<input(12, 12, 3) conv(16, 3) relu conv(16, 3) relu maxpool(2) batchnorm flatten
        dense(32) relu dropout(0.25) dense(10) softmax>
}

/// Every split threshold at 1: each loop splits as finely as it can.
const FINEST: Splits = Splits {
    min_task_values: 1,
    min_activation_values: 1,
    min_update_values: 1,
    gemm_min_muls_per_part: 1,
    gemm_min_muls_per_awake_part: 1,
    gemm_min_muls_per_column_part: 1,
    row_split_min_muls_per_part: 1,
    keep_awake_muls: 1,
    keep_awake_batch_muls: 1,
};

/// Every split threshold out of reach: nothing splits.
const NONE: Splits = Splits {
    min_task_values: usize::MAX,
    min_activation_values: usize::MAX,
    min_update_values: usize::MAX,
    gemm_min_muls_per_part: usize::MAX,
    gemm_min_muls_per_awake_part: usize::MAX,
    gemm_min_muls_per_column_part: usize::MAX,
    row_split_min_muls_per_part: usize::MAX,
    keep_awake_muls: usize::MAX,
    keep_awake_batch_muls: usize::MAX,
};

fn input(samples: usize) -> Batch<Hwc<12, 12, 3>> {
    Batch::from_fn(samples, |i| ((i * 37) % 101) as f32 / 101.0 - 0.4)
}

fn context(threads: usize, splits: Splits) -> Context {
    Context::builder()
        .threads(threads)
        .splits(splits)
        .build()
        .expect("a context on a supported path builds")
}

/// Inference at batch 1 and 32, one training step's gradients and the weights after an SGD
/// update, under `context`.
fn run(context: &Context) -> Vec<Vec<f32>> {
    context.install(|| {
        let mut net = Cnn::new(3);
        let mut workspace = CnnWorkspace::new();
        let mut outputs = Vec::new();
        for samples in [1, 32] {
            let probabilities = net.infer(&input(samples), &mut workspace);
            outputs.push(probabilities.as_slice().to_vec());
        }
        let batch = input(32);
        let labels: Vec<usize> = (0..32).map(|i| i % 10).collect();
        let logits = net.forward_logits(&batch, &mut workspace).clone();
        let mut grad = Batch::<Flat<10>>::zeros(32);
        sparse_softmax_cross_entropy(&logits, &labels, &mut grad);
        let mut grads = net.new_grads();
        net.backward_logits(&batch, &grad, &mut workspace, None, &mut grads);
        let mut flat = Vec::new();
        grads.visit(&mut |_, _, values| flat.extend_from_slice(values));
        outputs.push(flat);
        let mut optimizer = OptimizerState::new(Sgd::new(0.1));
        optimizer
            .step(&mut net, &grads, 0)
            .expect("the state is this network's");
        let mut params = Vec::new();
        net.visit_params(&mut |_, _, values| params.extend_from_slice(values));
        outputs.push(params);
        outputs
    })
}

#[test]
fn where_work_splits_never_changes_a_result() {
    let default = run(&Context::default());
    for (threads, splits) in [(1, FINEST), (2, FINEST), (2, NONE), (2, Splits::default())] {
        assert!(
            run(&context(threads, splits)) == default,
            "{threads} threads with {splits:?} changed a result"
        );
    }
}

#[test]
fn every_path_and_algorithm_agrees_within_rounding() {
    let default = run(&Context::default());
    for isa in Isa::supported() {
        for conv in [
            ConvPolicy::Gemm,
            ConvPolicy::Winograd2x2,
            ConvPolicy::Winograd4x4,
        ] {
            let context = Context::builder().threads(2).isa(isa).conv(conv).build();
            let results = run(&context.expect("a supported path builds"));
            for (got, want) in results.iter().flatten().zip(default.iter().flatten()) {
                // Float sums in another order: a few units in the last place of each term.
                let close = (got - want).abs() <= 1e-4 * (1.0 + want.abs());
                assert!(close, "{isa:?} with {conv:?}: {got} against {want}");
            }
        }
    }
}

/// The settings reach the kernels: the plan table, which names each convolution's algorithm,
/// follows the context that asks for it.
#[test]
fn the_plan_follows_the_context() {
    let plan = |conv| {
        let context = Context::builder().threads(1).conv(conv).build();
        context.expect("a context builds").install(|| Cnn::plan(64))
    };
    assert!(plan(ConvPolicy::Gemm).contains("GEMM"));
    assert!(!plan(ConvPolicy::Gemm).contains("Winograd"));
    assert!(plan(ConvPolicy::Winograd2x2).contains("Winograd F(2x2, 3x3)"));
    let inside = Context::builder().isa(Isa::Portable).build();
    let settings = inside.expect("portable builds").install(Settings::current);
    assert_eq!(settings.isa, Isa::Portable);
}

/// A context its building thread joins runs that thread's passes in place (the thread is the
/// pool's first), gives the results any other context gives, from that thread and from
/// another, and leaves the thread able to run passes alone once it is dropped.
#[test]
fn a_context_joined_by_its_thread_runs_its_passes_in_place_with_the_same_results() {
    let default = run(&Context::default());
    let caller = std::thread::spawn(move || {
        let joined = Context::builder()
            .threads(2)
            .splits(FINEST)
            .with_this_thread()
            .build()
            .expect("a fresh thread joins a new pool");
        assert_eq!(rayon::current_thread_index(), Some(0));
        assert_eq!(rayon::current_num_threads(), 2);
        assert_eq!(Settings::current(), joined.settings());
        let again = Context::builder().with_this_thread().build();
        assert_eq!(again.unwrap_err(), ContextError::ThreadInPool);
        let in_place = run(&joined);
        let elsewhere = std::thread::scope(|scope| scope.spawn(|| run(&joined)).join());
        let elsewhere = elsewhere.expect("a pass started on another thread ends");
        drop(joined);
        let alone = run(&Context::default());
        [in_place, elsewhere, alone]
    });
    let results = caller.join().expect("the joined thread's passes end");
    for (name, result) in ["in place", "from another thread", "after the drop"]
        .iter()
        .zip(results)
    {
        assert!(result == default, "{name}: a result changed");
    }
    let in_pool = context(1, Splits::default())
        .install(|| Context::builder().with_this_thread().build().unwrap_err());
    assert_eq!(in_pool, ContextError::ThreadInPool);
}
