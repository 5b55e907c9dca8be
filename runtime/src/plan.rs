//! The run-time side of the plan `network!` compiles: the buffers inference keeps its values in
//! ([`InferenceBuffers`]), the description of each op ([`OpInfo`]) and the plan table,
//! and [`on_pool`], which runs a whole pass on a thread of the rayon pool (or, when it would
//! run on one thread anyway, on the caller's).

use std::fmt::Write as _;

pub use constnet_catalogue::InferenceSlot;

use crate::aligned::AlignedVec;
use crate::kernels;
pub use crate::layers::ConvOp;
use crate::layers::Layer;
use crate::schedule::{self, Placement};
use crate::shape::Shape;
use crate::tensor::Batch;

/// One op of a compiled network's inference, as the plan table shows it.
#[derive(Clone, Copy, Debug)]
pub struct OpInfo {
    /// `conv1+relu1` for a fused op, the layer's name otherwise.
    pub name: &'static str,
    /// What runs, its layers as written, each layer a pass fused into the op followed by the
    /// pass's name: `conv(32, 3) + relu (activation epilogue)`, `flatten (view)`, `dense(10)`.
    pub runs: &'static str,
    /// For an op that runs a convolution, how it runs it at a batch size.
    pub conv: Option<ConvOp>,
    /// The output shape, outermost first, without the batch axis.
    pub output: &'static [usize],
    /// Where inference keeps the output.
    pub inference: InferenceSlot,
}

/// The activation storage of inference: `N` buffers that hold the ops' outputs, whatever their
/// shapes, as the plan assigns them, and the network's output. After the first call at a batch
/// size, a call allocates nothing and clears nothing.
///
/// ```
/// use constnet_runtime::plan::InferenceBuffers;
/// use constnet_runtime::{Flat, Hwc};
/// let mut buffers = InferenceBuffers::<Flat<10>, 2>::default();
/// let images = buffers.take::<Hwc<4, 4, 2>>(0, 3); // 3 samples of 32 values in buffer 0
/// assert_eq!(images.as_slice().len(), 96);
/// buffers.give(0, images);
/// let features = buffers.take::<Flat<8>>(0, 3); // the same allocation, seen as 3 x 8
/// assert_eq!(features.len(), 3);
/// buffers.give(0, features);
/// assert!(buffers.bytes() >= 96 * size_of::<f32>());
/// ```
pub struct InferenceBuffers<O: Shape, const N: usize> {
    slots: [AlignedVec; N],
    /// Values of the allocation each slot holds now written at least once: a batch taken at
    /// most this long needs no zero fill. 0 while the allocation is lent, so a batch never
    /// given back (its pass panicked) leaves an empty slot that knows nothing is written.
    written: [usize; N],
    /// Each lent allocation's address and written count, to tell a returned allocation from a
    /// replaced one.
    lent: [Lent; N],
    output: Batch<O>,
}

/// What a slot knew of the allocation it lent.
#[derive(Clone, Copy, Default)]
struct Lent {
    address: usize,
    written: usize,
}

impl<O: Shape, const N: usize> Default for InferenceBuffers<O, N> {
    fn default() -> Self {
        Self {
            slots: std::array::from_fn(|_| AlignedVec::new()),
            written: [0; N],
            lent: [Lent::default(); N],
            output: Batch::default(),
        }
    }
}

impl<O: Shape, const N: usize> InferenceBuffers<O, N> {
    /// Slot `slot`'s storage (below `N`) as a batch of `samples` samples of shape `S` (contents
    /// unspecified: the op that receives it overwrites it); give it back with
    /// [`InferenceBuffers::give`].
    ///
    /// # Panics
    /// If `slot` is not below `N`.
    pub fn take<S: Shape>(&mut self, slot: usize, samples: usize) -> Batch<S> {
        let mut data = std::mem::take(&mut self.slots[slot]);
        let mut written = std::mem::take(&mut self.written[slot]);
        let len = samples * S::LEN;
        if len <= written {
            data.truncate(len);
            // SAFETY: `written` counts the values of this very allocation initialised by an
            // earlier `resize` (truncation keeps them; the count moves with the allocation:
            // `take` zeroes the slot's, and `give` restores it only for the same allocation),
            // and `len` is no more than that.
            unsafe { data.set_len(len) };
        } else {
            data.resize(len, 0.0);
            written = len;
        }
        self.lent[slot] = Lent {
            address: data.as_ptr() as usize,
            written,
        };
        Batch::from_storage(data, samples)
    }

    /// Returns a batch's storage to slot `slot`.
    pub fn give<S: Shape>(&mut self, slot: usize, batch: Batch<S>) {
        let data = batch.into_storage();
        let lent = self.lent[slot];
        self.written[slot] = if data.as_ptr() as usize == lent.address {
            lent.written.max(data.len())
        } else {
            // Not the allocation lent: only its current values are known to be initialised.
            data.len()
        };
        self.slots[slot] = data;
    }

    /// The network's output of the last call.
    pub fn output(&self) -> &Batch<O> {
        &self.output
    }

    /// Where the last op writes.
    pub fn output_mut(&mut self) -> &mut Batch<O> {
        &mut self.output
    }

    /// Bytes allocated for activations.
    pub fn bytes(&self) -> usize {
        let slots: usize = self.slots.iter().map(AlignedVec::capacity).sum();
        slots * size_of::<f32>() + self.output.capacity_bytes()
    }
}

/// Runs `f`, a pass of network `N` over `samples` samples, on a thread of the rayon pool
/// (directly, when called from one), so the parallel loops of a whole pass split their work from
/// a pool thread instead of each waking the pool from outside and waiting for it.
///
/// The first pass on a pool that needs `N`'s scratch prepares every thread of that pool
/// ([`crate::kernels::prepare_thread`]): it reserves that much scratch, so no pass allocates
/// whichever thread runs which part of it, and flushes denormal floats to zero. The calling
/// thread prepares itself at once; the others are sent the job to run when they are next idle,
/// not waited for: a wait inside a pass that itself runs in a parallel loop would have this
/// thread run the loop's pending halves while it waits, leaving nothing for the others to
/// steal.
///
/// A pass splits each op's work between the threads (samples, or a sample's rows and columns
/// in batches smaller than the pool), op after op, with a little serial work between them. A
/// rayon worker that finds no work sleeps after a few microseconds, and waking it costs tens:
/// more than the split saves on a small layer, and a tenth of a pass through the MLP at batch
/// 128. So, when a pass has enough work to split (2^20 multiply-adds for batches smaller than
/// the pool, 2^23 for others), the other threads spin on the pool's queues until it ends,
/// taking each part as soon as it is offered. A spinner runs whatever it finds, and is stolen
/// only after every older job on the queue (a stealer takes the oldest first), so inference of
/// many batches in `par_iter` tasks still spreads those tasks over the pool.
///
/// A pass that would run on one thread anyway (a pool of one thread, or fewer samples than
/// threads and too little work to keep the pool awake), called from outside the pool, runs on
/// the calling thread instead, splitting nothing (`unsplit`): handing it over would
/// cost more than the pass.
///
/// Each pass also reverses the order in which products split along `K` visit their parts
/// ([`crate::kernels::gemm`]'s split along `K`), so a dense layer's weights stream in
/// alternating order from pass to pass.
#[doc(hidden)]
pub fn on_pool<N: Layer, R: Send>(samples: usize, f: impl FnOnce() -> R + Send) -> R {
    match schedule::placement(samples, N::MULS) {
        Placement::CallingThread => {
            if !kernels::thread_prepared_for(N::SCRATCH) {
                kernels::reserve_thread_scratch(N::SCRATCH);
            }
            schedule::reverse_k_part_order();
            schedule::unsplit(|| kernels::with_denormals_flushed(f))
        }
        Placement::Pool { keep_awake } => {
            let prepare = || {
                if !kernels::thread_prepared_for(N::SCRATCH) {
                    kernels::prepare_thread(N::SCRATCH);
                    rayon::spawn_broadcast(|_| kernels::prepare_thread(N::SCRATCH));
                }
                schedule::reverse_k_part_order();
            };
            schedule::on_pool_thread(keep_awake, prepare, f)
        }
    }
}

/// `1199882` as `1,199,882`.
pub(crate) fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Buffer 0 as the plan table names it, `A`; then `B`, ..., `Z`, `AA`, ...
fn buffer_name(slot: usize) -> String {
    let letter = char::from(b'A' + (slot % 26) as u8);
    match slot / 26 {
        0 => letter.to_string(),
        more => buffer_name(more - 1) + &letter.to_string(),
    }
}

/// The plan table of a network whose inference runs `ops` and whose training keeps
/// `training_values` values per sample (op outputs and their gradients), with the algorithm of
/// each convolution and the bytes of the activation buffers of both at `batch` samples, and of
/// the transformed filters kept between calls.
pub fn plan_table(name: &str, ops: &[OpInfo], training_values: usize, batch: usize) -> String {
    let buffers = ops
        .iter()
        .filter_map(|op| match op.inference {
            InferenceSlot::Buffer(slot) => Some(slot + 1),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let mut slot_values = vec![0usize; buffers];
    let mut output_values = 0;
    let rows: Vec<[String; 5]> = ops
        .iter()
        .map(|op| {
            let values: usize = op.output.iter().product();
            let place = match op.inference {
                InferenceSlot::Buffer(slot) => {
                    slot_values[slot] = slot_values[slot].max(values);
                    format!("buffer {}", buffer_name(slot))
                }
                InferenceSlot::Output => {
                    output_values = values;
                    "output".to_string()
                }
                InferenceSlot::View => "view of its input".to_string(),
            };
            let dims: Vec<String> = op.output.iter().map(ToString::to_string).collect();
            let algorithm = op.conv.map(|conv| (conv.algorithm)(batch).to_string());
            [
                op.name.to_string(),
                op.runs.to_string(),
                algorithm.unwrap_or_default(),
                format!("({})", dims.join(", ")),
                place,
            ]
        })
        .collect();
    let headers = [
        "Op",
        "Runs",
        "Convolution",
        "Output",
        "Inference keeps it in",
    ];
    let widths: Vec<usize> = (0..headers.len())
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .chain([headers[column].len()])
                .max()
                .unwrap_or(0)
                + 2
        })
        .collect();
    let line = |cells: [&str; 5]| {
        let mut line = String::from(" ");
        for (cell, width) in cells.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}");
        }
        line.trim_end().to_string() + "\n"
    };
    let mut out = format!("Plan of \"{name}\"\n") + &line(headers);
    for row in &rows {
        out += &line(row.each_ref().map(String::as_str));
    }
    let bytes = |values: usize| thousands(values * batch * size_of::<f32>());
    let _ = writeln!(
        out,
        "Activations at batch {batch}: inference {} bytes ({buffers} buffers and the output), \
         training {} bytes (the outputs backward reads and every gradient)",
        bytes(slot_values.iter().sum::<usize>() + output_values),
        bytes(training_values)
    );
    let filter_values: usize = ops
        .iter()
        .filter_map(|op| op.conv.map(|conv| (conv.cached_filter_values)(batch)))
        .sum();
    if filter_values > 0 {
        let _ = writeln!(
            out,
            "Transformed filters kept between calls (Winograd): {} bytes at inference; \
             training keeps as many again for input gradients",
            thousands(filter_values * size_of::<f32>())
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use rayon::prelude::*;

    use super::*;
    use crate::context::Splits;
    use crate::layers::Dense;
    use crate::schedule::pass_threads;

    /// A batch never given back (its pass panicked) leaves its slot empty, and the next take
    /// of that slot gets fresh, initialised storage of the length asked for.
    #[test]
    fn a_batch_never_given_back_leaves_a_usable_slot() {
        use crate::Flat;
        let mut buffers = InferenceBuffers::<Flat<1>, 1>::default();
        let mut batch = buffers.take::<Flat<4>>(0, 3);
        batch.as_mut_slice().fill(7.0);
        buffers.give(0, batch);
        drop(buffers.take::<Flat<4>>(0, 3));
        let mut batch = buffers.take::<Flat<4>>(0, 3);
        assert_eq!(batch.as_slice(), &[0.0; 12]);
        batch.as_mut_slice().fill(1.0);
        buffers.give(0, batch);
        assert_eq!(buffers.take::<Flat<4>>(0, 2).as_slice(), &[1.0; 8]);
    }

    /// Passes that keep the pool awake (one sample through a layer of 2^20 multiply-adds)
    /// finish with the right result, with nested parallel loops inside, on pools of 1 to 4
    /// threads and started from outside any pool (on the global pool), many times over.
    #[test]
    fn passes_on_an_awake_pool_finish() {
        type Heavy = Dense<1024, 1024>;
        const SAMPLES: usize = 1;
        assert!(SAMPLES * <Heavy as Layer>::MULS >= Splits::default().keep_awake_muls);
        let values: Vec<u64> = (0..100_000).collect();
        let want: u64 = values.iter().map(|v| v * 3).sum();
        let pass = || {
            let sums: Vec<u64> = values
                .par_chunks(1000)
                .map(|chunk| chunk.par_iter().map(|v| v * 3).sum())
                .collect();
            sums.iter().sum::<u64>()
        };
        for threads in 1..=4 {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build();
            let pool = pool.expect("a pool");
            for _ in 0..50 {
                assert_eq!(pool.install(|| on_pool::<Heavy, _>(SAMPLES, pass)), want);
            }
        }
        for _ in 0..50 {
            assert_eq!(on_pool::<Heavy, _>(SAMPLES, pass), want);
        }
    }

    /// A pass too small to split runs on the calling thread when that is outside the pool,
    /// splitting nothing; on a pool thread, or with work to split, it runs in the pool.
    #[test]
    fn small_passes_run_on_the_calling_thread() {
        type Light = Dense<16, 16>;
        let caller = std::thread::current().id();
        let where_and_threads = || (std::thread::current().id(), pass_threads());
        assert_eq!(on_pool::<Light, _>(1, where_and_threads), (caller, 1));
        assert_eq!(pass_threads(), rayon::current_num_threads());
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build();
        let pool = pool.expect("a pool");
        let (thread, threads) = pool.install(|| on_pool::<Light, _>(1, where_and_threads));
        assert!(thread != caller && threads == 2);
        if rayon::current_num_threads() >= 2 {
            let (thread, _) = on_pool::<Dense<1024, 1024>, _>(1, where_and_threads);
            assert_ne!(
                thread, caller,
                "a pass that keeps the pool awake runs in it"
            );
        }
    }
}
