//! One trained network shared by reference between many rayon tasks: inference needs no lock and
//! no hidden state, so every task gets the outputs a sequential run gets, and the tasks spread
//! over every thread of the pool.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Instant;

use constnet::{Batch, Hwc};
use rayon::prelude::*;

constnet::network! {
    SharedCnn<input(28, 28, 1) conv(16, 3) relu maxpool(2) conv(32, 3) relu batchnorm flatten
              dense(64) relu dropout(0.5) dense(10) softmax>
}

const TASKS: usize = 200;
const BATCH: usize = 16;

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool")
}

/// The input of task `t`: a batch of 16 images, different for every task.
fn task_input(t: usize) -> Batch<Hwc<28, 28, 1>> {
    Batch::from_fn(BATCH, |i| ((i * 31 + t * 17) % 97) as f32 / 97.0)
}

fn assert_sync<T: Sync>(_: &T) {}

#[test]
fn two_hundred_tasks_share_one_network_without_a_lock() {
    let net = SharedCnn::new(5);
    assert_sync(&net);
    let inputs: Vec<_> = (0..TASKS).map(task_input).collect();

    let started = Instant::now();
    let sequential: Vec<Batch<_>> = pool(1).install(|| {
        let mut workspace = SharedCnnWorkspace::default();
        inputs
            .iter()
            .map(|x| net.infer(x, &mut workspace).clone())
            .collect()
    });
    let sequential_time = started.elapsed();

    let threads_used = Mutex::new(HashSet::new());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let started = Instant::now();
    let parallel: Vec<Batch<_>> = pool(threads).install(|| {
        inputs
            .par_iter()
            .map_init(SharedCnnWorkspace::default, |workspace, x| {
                threads_used
                    .lock()
                    .unwrap()
                    .insert(rayon::current_thread_index());
                net.infer(x, workspace).clone()
            })
            .collect()
    });
    let parallel_time = started.elapsed();

    assert_eq!(parallel.len(), TASKS);
    assert_eq!(
        parallel, sequential,
        "shared inference must give the sequential outputs"
    );
    let threads_used = threads_used.into_inner().unwrap().len();
    assert!(
        threads_used >= 2,
        "the tasks ran on {threads_used} thread(s) of {threads}"
    );
    println!(
        "{TASKS} tasks of batch {BATCH}: sequential {sequential_time:.2?}, {threads} threads \
         {parallel_time:.2?} (speed-up {:.2}x, {threads_used} threads used)",
        sequential_time.as_secs_f64() / parallel_time.as_secs_f64()
    );
}
