"""TensorFlow/Keras `fit` throughput of the benchmark workloads R1, L5, C20 and M1, built as the
Keras equivalents of `benches/benchmarks/workloads.rs` (Keras's `same` where the networks pad 1
or 2, the same cost), trained with Adam at batch 128 on random data. One JSON line per
workload: the median over `--repeats` timed runs of `--steps` steps, after a warm-up run.

Usage: python3 scripts/bench_tf_workloads.py [--workload C20] [--threads 2]
"""

import argparse
import json
import os
import statistics
import time

ARGS = argparse.ArgumentParser()
ARGS.add_argument("--workload", default="all", choices=["R1", "L5", "C20", "M1", "all"])
ARGS.add_argument("--threads", type=int, default=2)
ARGS.add_argument("--steps", type=int, default=20)
ARGS.add_argument("--repeats", type=int, default=3)
ARGS = ARGS.parse_args()
for var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
    os.environ[var] = str(ARGS.threads)
os.environ["TF_NUM_INTEROP_THREADS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow import keras  # noqa: E402
from tensorflow.keras import layers  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(ARGS.threads)
tf.config.threading.set_inter_op_parallelism_threads(1)


def conv_bn(x, filters, kernel, stride=1, relu=True):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same")(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x) if relu else x


def block(x, filters, stride):
    y = conv_bn(x, filters, 3, stride)
    y = conv_bn(y, filters, 3, relu=False)
    if stride != 1 or x.shape[-1] != filters:
        x = layers.Conv2D(filters, 1, strides=stride)(x)
    return layers.ReLU()(layers.Add()([x, y]))


def r1():
    inputs = keras.Input((28, 28, 1))
    x = conv_bn(inputs, 16, 3)
    for filters, stride in [(32, 2), (32, 1), (64, 2), (64, 1)]:
        x = block(x, filters, stride)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x)), (28, 28, 1)


def l5():
    inputs = keras.Input((28, 28, 1))
    x = layers.Conv2D(6, 5, padding="same", activation="relu")(inputs)
    x = layers.AveragePooling2D(2)(x)
    x = layers.Conv2D(16, 5, activation="relu")(x)
    x = layers.AveragePooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(120, activation="relu")(x)
    x = layers.Dense(84, activation="relu")(x)
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x)), (28, 28, 1)


def c20():
    inputs = keras.Input((32, 32, 3))
    x = conv_bn(inputs, 16, 3)
    for filters in [16, 32, 64]:
        for index in range(3):
            x = block(x, filters, 2 if filters > 16 and index == 0 else 1)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x)), (32, 32, 3)


def m1():
    inputs = keras.Input((32, 32, 3))
    x = conv_bn(inputs, 32, 3)
    for filters, stride in [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)]:
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same")(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
        x = conv_bn(x, filters, 1)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x)), (32, 32, 3)


def train_rate(name, build):
    model, shape = build()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    batch = 128
    x = rng.uniform(-1, 1, (batch * ARGS.steps, *shape)).astype(np.float32)
    y = rng.integers(0, 10, batch * ARGS.steps)
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    rates = []
    for _ in range(ARGS.repeats):
        start = time.perf_counter()
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
        rates.append(len(x) / (time.perf_counter() - start))
    print(json.dumps({"framework": "tensorflow-keras", "version": tf.__version__,
                      "workload": name, "threads": ARGS.threads, "measure": "train_fit",
                      "images_per_s": round(statistics.median(rates), 1),
                      "all": [round(r, 1) for r in rates]}), flush=True)


BUILDERS = {"R1": r1, "L5": l5, "C20": c20, "M1": m1}
for name, build in BUILDERS.items():
    if ARGS.workload in (name, "all"):
        train_rate(name, build)
