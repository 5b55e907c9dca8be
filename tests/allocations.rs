//! After warm-up, an inference call (f32 or int8) and a whole training step (forward, loss,
//! backward, optimiser update) allocate nothing, at batch 1 (each image split between threads) and at a
//! batch of several images per thread. A counting global allocator observes every allocation
//! of the process, rayon's worker threads included; this file holds one test so no other test
//! runs beside it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use constnet::context::Context;
use constnet::loss::sparse_softmax_cross_entropy;
use constnet::network::Network;
use constnet::optim::{Adadelta, OptimizerState};
use constnet::quant::{Quantized, QuantizedWorkspace};
use constnet::{Batch, Flat};

/// The system allocator, counting allocations and reallocations.
struct CountingAllocator;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the counter only observes.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

constnet::network! {
    MnistCnn<input(28, 28, 1) conv(32, 3) relu conv(64, 3) relu maxpool(2) dropout(0.25)
             flatten dense(128) relu dropout(0.5) dense(10) softmax>
}

constnet::network! {
    BatchNormCnn<input(12, 12, 3) conv(8, 3, padding = same) batchnorm relu maxpool(2) flatten
                 dense(16) leaky_relu(0.1) dropout(0.3) dense(4) softmax>
}

constnet::network! {
    ResidualCnn<input(12, 12, 3) conv(8, 3, padding = same) relu
                residual(conv(8, 3, padding = same) batchnorm relu conv(8, 3, padding = same))
                residual(conv(16, 3, stride = 2, padding = same) relu, shortcut = project)
                globalavgpool dense(4) softmax>
}

/// Allocations made while `f` runs.
fn allocations_of(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    f();
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

/// Allocations in a training step's forward pass and loss, its backward pass, its optimiser
/// update, and an inference call, summed over five rounds after one warm-up round at `batch`
/// samples. (The first pass reserves im2col and packing scratch on every pool thread, so it
/// does not matter which thread later runs which part of a pass.)
fn counted_allocations<N, const C: usize>(net: &mut N, batch: usize) -> [usize; 4]
where
    N: Network<Output = Flat<C>>,
{
    let input = Batch::<N::Input>::from_fn(batch, |i| ((i * 7919) % 255) as f32 / 255.0);
    let labels: Vec<usize> = (0..batch).map(|i| i % C).collect();
    let mut optimizer = OptimizerState::new(Adadelta::default());
    let mut workspace = N::Cache::default();
    let mut grads = net.new_grads();
    let mut grad_logits = Batch::<Flat<C>>::default();
    let mut counts = [0; 4];
    for round in 0..6 {
        let phases = [
            allocations_of(|| {
                let logits = net.forward_logits(&input, &mut workspace);
                let loss = sparse_softmax_cross_entropy(logits, &labels, &mut grad_logits);
                assert!(loss.is_finite());
            }),
            allocations_of(|| {
                net.backward_logits(&input, &grad_logits, &mut workspace, None, &mut grads)
            }),
            allocations_of(|| optimizer.step(net, &grads, 0).unwrap()),
            allocations_of(|| {
                net.infer(&input, &mut workspace);
            }),
        ];
        if round >= 1 {
            for (count, phase) in counts.iter_mut().zip(phases) {
                *count += phase;
            }
        }
    }
    counts
}

/// Counted on a thread of the rayon pool, as a server's request handlers in a rayon pool are,
/// and on a thread that joined its context (`ContextBuilder::with_this_thread`), as a program's
/// main thread can: a call from outside every pool also hands one job to rayon's shared queue,
/// which allocates a block for every 63 jobs handed to it (crossbeam's `Injector`), about 25
/// bytes per call. (One test, so that no other test allocates while it counts.)
#[test]
fn inference_and_training_steps_allocate_nothing_after_warm_up() {
    rayon::scope(|_| allocation_free_on_a_pool_thread());
    let joined = std::thread::spawn(|| {
        let _context = Context::builder()
            .threads(2)
            .with_this_thread()
            .build()
            .expect("a new thread joins its context");
        allocation_free_on_a_pool_thread();
    });
    joined.join().expect("no allocation on the joined thread");
}

fn allocation_free_on_a_pool_thread() {
    for batch in [1, 16] {
        assert_eq!(
            counted_allocations(&mut MnistCnn::new(0), batch),
            [0; 4],
            "MnistCnn, batch {batch}: allocations in forward + loss, backward, optimiser step, \
             inference"
        );
        assert_eq!(
            counted_allocations(&mut BatchNormCnn::new(0), batch),
            [0; 4],
            "BatchNormCnn, batch {batch}: allocations in forward + loss, backward, optimiser \
             step, inference"
        );
        assert_eq!(
            counted_allocations(&mut ResidualCnn::new(0), batch),
            [0; 4],
            "ResidualCnn, batch {batch}: allocations in forward + loss, backward, optimiser \
             step, inference"
        );
        assert_eq!(
            int8_allocations(&MnistCnn::new(0), batch),
            0,
            "MnistCnn in int8, batch {batch}: allocations in inference"
        );
        assert_eq!(
            int8_allocations(&BatchNormCnn::new(0), batch),
            0,
            "BatchNormCnn in int8, batch {batch}: allocations in inference"
        );
    }
}

/// Allocations in five int8 inference calls at `batch` samples after one warm-up call.
fn int8_allocations<N: Network>(net: &N, batch: usize) -> usize {
    let input = Batch::<N::Input>::from_fn(batch, |i| ((i * 7919) % 255) as f32 / 255.0);
    let int8 = Quantized::calibrate(net, &input).expect("the network quantizes");
    let mut workspace = QuantizedWorkspace::default();
    int8.infer(&input, &mut workspace);
    (0..5)
        .map(|_| {
            allocations_of(|| {
                int8.infer(&input, &mut workspace);
            })
        })
        .sum()
}
