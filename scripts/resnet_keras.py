#!/usr/bin/env python3
"""The ResNet of `examples/resnet.rs` in TensorFlow/Keras, for a side-by-side training speed.

    python3 scripts/resnet_keras.py --data-dir DIR --epochs 2 [--augment]

The same network (a conv(16) stem, four residual blocks with batch normalisation, the first of
each stage strided with a 1x1 projection, global average pooling, dense(10) softmax; 166,730
parameters, Glorot-uniform weights and Keras's batch-normalisation defaults as in constnet),
the same recipe (Adam 1e-3 decayed along a cosine to zero over the run, batch 128; with
--augment random shifts of up to 2 px and rotations of up to 10 degrees), on 2 threads. Prints
one JSON line per epoch (training images per second, excluding evaluation) and the test accuracy.
Needs tensorflow-cpu and numpy.
"""
import argparse
import gzip
import json
import os
import struct
import time

import numpy as np


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="data/mnist")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--augment", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


ARGS = parse_args()
for var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
    os.environ[var] = str(ARGS.threads)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402  (after the thread settings)

tf.config.threading.set_intra_op_parallelism_threads(ARGS.threads)
tf.config.threading.set_inter_op_parallelism_threads(1)
keras = tf.keras
layers = keras.layers


def read_idx(path):
    """An IDX file (gzip'd or not) as a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    _, dtype, ndim = struct.unpack(">HBB", data[:4])
    assert dtype == 0x08, f"{path}: not unsigned bytes"
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(kind):
    def find(name):
        for candidate in (name, name + ".gz"):
            path = os.path.join(ARGS.data_dir, candidate)
            if os.path.exists(path):
                return path
        raise FileNotFoundError(name)

    images = read_idx(find(f"{kind}-images-idx3-ubyte")).astype(np.float32)[..., None] / 255.0
    labels = read_idx(find(f"{kind}-labels-idx1-ubyte")).astype(np.int64)
    return images, labels


def conv_bn(x, filters, stride=1, relu=True):
    x = layers.Conv2D(filters, 3, strides=stride, padding="same")(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x) if relu else x


def block(x, filters, stride):
    y = conv_bn(x, filters, stride)
    y = conv_bn(y, filters, relu=False)
    if stride != 1 or x.shape[-1] != filters:
        x = layers.Conv2D(filters, 1, strides=stride)(x)
    return layers.ReLU()(layers.Add()([x, y]))


def resnet():
    inputs = keras.Input((28, 28, 1))
    x = inputs
    if ARGS.augment:
        x = layers.RandomTranslation(2 / 28, 2 / 28, fill_mode="constant")(x)
        x = layers.RandomRotation(10 / 360, fill_mode="constant")(x)
    x = conv_bn(x, 16)
    x = block(x, 32, 2)
    x = block(x, 32, 1)
    x = block(x, 64, 2)
    x = block(x, 64, 1)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs)


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.started
        print(json.dumps({
            "epoch": epoch + 1,
            "train_seconds": round(seconds, 2),
            "images_per_second": round(60000 / seconds, 1),
            "loss": round(logs["loss"], 4),
            "accuracy": round(logs["accuracy"], 4),
        }), flush=True)


def main():
    keras.utils.set_random_seed(ARGS.seed)
    (x_train, y_train), (x_test, y_test) = load("train"), load("t10k")
    model = resnet()
    steps = ARGS.epochs * int(np.ceil(len(x_train) / ARGS.batch))
    schedule = keras.optimizers.schedules.CosineDecay(1e-3, steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    print(json.dumps({"params": model.count_params(), "tensorflow": tf.__version__,
                      "threads": ARGS.threads, "augment": ARGS.augment}), flush=True)
    model.fit(x_train, y_train, batch_size=ARGS.batch, epochs=ARGS.epochs, verbose=0,
              callbacks=[EpochTimer()])
    _, accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    print(json.dumps({"test_accuracy": round(accuracy, 4)}), flush=True)


if __name__ == "__main__":
    main()
