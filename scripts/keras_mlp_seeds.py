#!/usr/bin/env python3
"""The MLP of examples/mlp.rs in Keras, on the same MNIST files, over several seeds.

Flatten, Dense(128, relu), Dropout(0.2), Dense(10); Adam(1e-3), from-logits sparse
cross-entropy, batch 32, 5 epochs, shuffled every epoch; pixels scaled to [0, 1]. Prints one
JSON line per seed with the test accuracy, to set `cargo run --release --example mlp -- --seed N`
beside. Needs TensorFlow (tensorflow-cpu) and numpy:

    MNIST_DIR=DIR python3 scripts/keras_mlp_seeds.py 0 1 2 3 4 5 6 7 8 9
"""
import gzip
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

DATA = os.environ.get("MNIST_DIR", "data/mnist")


def idx(name, header):
    with gzip.open(os.path.join(DATA, name)) as f:
        return np.frombuffer(f.read(), np.uint8, offset=header)


x_train = idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28) / 255.0
y_train = idx("train-labels-idx1-ubyte.gz", 8)
x_test = idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28) / 255.0
y_test = idx("t10k-labels-idx1-ubyte.gz", 8)

for seed in map(int, sys.argv[1:] or ["0"]):
    tf.keras.utils.set_random_seed(seed)
    model = tf.keras.Sequential([
        tf.keras.Input((28, 28)),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(128, activation="relu"),
        tf.keras.layers.Dropout(0.2),
        tf.keras.layers.Dense(10),
    ])
    model.compile("adam", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=5, batch_size=32, verbose=0)
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(json.dumps({"seed": seed, "test_accuracy": accuracy, "test_loss": loss}), flush=True)
