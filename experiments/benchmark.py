"""Speed benchmark: jaxnn's Trainer against hand-written Flax, PyTorch and Keras 3 (JAX backend).

    python -m experiments.benchmark                       # full: Fashion-MNIST, every framework
    python -m experiments.benchmark --quick --out /tmp/benchmark.json --frameworks jaxnn,flax
    python -m experiments.benchmark --sweep-dispatch --bf16

Two workloads on 28x28x1 inputs, 60,000 training examples, Adam 1e-3, batch 128:

* ``mlp``: Flatten-Dense128-ReLU-Dropout0.2-Dense128-ReLU-Dropout0.2-Dense10;
* ``cnn``: Conv32(3x3 same)-BN-ReLU-MaxPool2-Conv64(3x3 same)-BN-ReLU-MaxPool2-Flatten-Dropout0.4-
  Dense128-ReLU-Dense10.

Frameworks: ``jaxnn`` (``Trainer.fit`` as a user calls it, default settings), ``flax`` (a Linen +
Optax loop in the style of the Flax ``examples/mnist``: TrainState, one ``@jax.jit`` step per batch,
host-side numpy batching of a per-epoch permutation, ``nn.max_pool``), ``torch`` (eager, 2 threads,
tensor-indexing loop) and ``keras`` (Keras 3 ``model.fit`` on the JAX backend); ``torch`` and
``keras`` run when importable (``pip install -e '.[bench]'``). ``--bf16`` adds ``jaxnn_bf16``
(models with ``dtype=jnp.bfloat16``).

Every (workload, framework) runs in its own subprocess, so its peak RSS is its own, and they run one
after another on the same machine within one invocation: compare the ratios, not the absolute
figures, which move with the load of a shared machine.

What is measured (and how):

* ``train_examples_per_s``: training examples of one epoch / the epoch's synchronised train time,
  the median over the epochs after the first (warm-up) epoch.
* ``compile_s``: first epoch's train time minus the median later epoch's (tracing, compilation and
  first-touch costs; about 0 for eager PyTorch, where it is clipped at 0).
* ``eval_examples_per_s``: test examples / time of one pass over the test set with batch 1024 (each
  framework's own evaluate), median of 3 passes after a warm-up pass.
* ``peak_rss_mb``: ``ru_maxrss`` of the subprocess (data, framework, compiled code, everything).
* ``time_to_accuracy_s`` (Fashion-MNIST, not ``--quick``): wall time from the start of training
  setup (model construction, initialisation, data placement and compilation included) to the end of
  the first epoch after which test accuracy is >= 0.88 (MLP) / 0.91 (CNN), with the time spent
  evaluating the test set after each epoch excluded, for every framework alike. At most 15 (MLP) /
  10 (CNN) epochs; null when the target is not reached. ``epochs_to_accuracy`` counts the epochs.

``ratios[workload][peer]``: ``train_speedup`` = jaxnn train ex/s / peer train ex/s and
``time_to_accuracy_speedup`` = peer time / jaxnn time; above 1 means jaxnn is faster. Peers are
``flax``, ``torch`` and ``keras``; jaxnn's variants (``jaxnn_bf16``, ``jaxnn_warm_cache``) get the
same two ratios against every peer in ``variant_ratios[workload][variant][peer]``.
``--warm-cache`` adds ``jaxnn_warm_cache``: jaxnn with JAX's persistent compilation cache on, as
every ``python -m experiments.<name>`` run has it (``jaxnn.cli.enable_compilation_cache``), in a
cache that a 2-epoch run of the same workload filled first, so its start-up is a re-run's. The
``jaxnn`` row is a first run (no cache), as ``Trainer.fit`` in a user's own script gives.
``--sweep-dispatch`` trains jaxnn with ``steps_per_dispatch`` 1, 8 and 32 in one process, epochs
interleaved round-robin so that load drift hits all three alike (CNN epochs on 4,096 examples).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# Only the standard library and numpy are imported at module level: a worker subprocess imports
# just the framework it measures, so its peak RSS is that framework's.

WORKLOADS = ("mlp", "cnn")
FRAMEWORKS = ("jaxnn", "flax", "torch", "keras")
PEERS_NEEDING_IMPORT = {"torch": "torch", "keras": "keras"}
TARGET_ACCURACY = {"mlp": 0.88, "cnn": 0.91}
MAX_EPOCHS = {"mlp": 15, "cnn": 10}
BATCH_SIZE = 128
EVAL_BATCH_SIZE = 1024
LEARNING_RATE = 1e-3
DISPATCH_SIZES = (1, 8, 32)
# The sweep's CNN epochs use a 4,096-example subset (32 steps): scanned CNN steps run ~20x slower on
# XLA CPU, and full epochs would take a quarter of an hour each.
SWEEP_EXAMPLES = {"mlp": None, "cnn": 4096}
FASHION_MNIST_DIR = Path(os.environ.get("JAXNN_DATA_DIR", "/usr/share/datasets/fashion-mnist"))
REPO_ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ data
def _read_idx(path: Path) -> np.ndarray:
    """Reads a gzipped IDX file (the MNIST format): magic 0 0 dtype ndim, big-endian dims, data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, ">i4", count=ndim, offset=4)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(tuple(int(d) for d in dims))


def _as_images(x: np.ndarray) -> np.ndarray:
    """float32 images in [0, 1], converted as a jaxnn user does (``jaxnn.data.to_float``, which
    returns memory a CPU device uses without copying); every framework gets these same arrays."""
    from jaxnn.data import to_float

    x = np.asarray(x)
    x = to_float(x) if x.dtype == np.uint8 else x.astype(np.float32, copy=False)
    return x.reshape(len(x), 28, 28, 1)


def _fashion_mnist() -> tuple[dict[str, np.ndarray], str]:
    """Fashion-MNIST as float32 images in [0, 1]: through jaxnn.data, else Debian's IDX files."""
    try:
        from jaxnn import data

        x, y = data.load("fashion_mnist", "train")
        x_test, y_test = data.load("fashion_mnist", "test")
        source = "fashion_mnist (jaxnn.data.load)"
    except Exception as error:  # noqa: BLE001 - any failure falls back to the raw files
        print(f"jaxnn.data.load failed ({error!r}); reading {FASHION_MNIST_DIR}", file=sys.stderr)
        x = _read_idx(FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz")
        y = _read_idx(FASHION_MNIST_DIR / "train-labels-idx1-ubyte.gz")
        x_test = _read_idx(FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz")
        y_test = _read_idx(FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz")
        source = f"fashion_mnist ({FASHION_MNIST_DIR} IDX files)"
    arrays = {
        "x_train": _as_images(x),
        "y_train": np.asarray(y).reshape(-1).astype(np.int32),
        "x_test": _as_images(x_test),
        "y_test": np.asarray(y_test).reshape(-1).astype(np.int32),
    }
    if arrays["x_train"].shape != (60000, 28, 28, 1) or arrays["x_test"].shape[0] != 10000:
        raise ValueError(f"fashion_mnist: unexpected shapes {arrays['x_train'].shape}")
    return arrays, source


def _random_data(num_train: int, num_test: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.random((num_train, 28, 28, 1), dtype=np.float32),
        "y_train": rng.integers(0, 10, num_train).astype(np.int32),
        "x_test": rng.random((num_test, 28, 28, 1), dtype=np.float32),
        "y_test": rng.integers(0, 10, num_test).astype(np.int32),
    }


def load_data(kind: str, quick: bool) -> tuple[dict[str, np.ndarray], str]:
    """The benchmark's arrays and a description of where they came from."""
    if quick:
        return _random_data(2048, 1024), "random (quick: 2,048 train / 1,024 test)"
    if kind == "fashion_mnist":
        try:
            return _fashion_mnist()
        except Exception as error:  # noqa: BLE001 - fall back to random data, and say so
            print(f"Fashion-MNIST unavailable ({error!r}); using random data", file=sys.stderr)
    return _random_data(60000, 10000), "random (60,000 train / 10,000 test)"


# ------------------------------------------------------------------------------------------ timing
class EpochLog:
    """Per-epoch train times and test accuracies, and the time-to-accuracy bookkeeping."""

    def __init__(self, workload: str, with_accuracy: bool, num_epochs: int):
        self.target = TARGET_ACCURACY[workload]
        self.with_accuracy = with_accuracy
        self.num_epochs = num_epochs
        self.train_times: list[float] = []
        self.accuracies: list[float] = []
        self.eval_time_total = 0.0
        self.time_to_accuracy: float | None = None
        self.epochs_to_accuracy: int | None = None

    def record(self, train_time: float, accuracy: float | None, elapsed_minus_eval: float) -> None:
        """Adds an epoch; ``elapsed_minus_eval`` is the wall time since setup began, evaluations
        excluded, at the end of this epoch's training."""
        self.train_times.append(train_time)
        if accuracy is not None:
            self.accuracies.append(accuracy)
            if self.time_to_accuracy is None and accuracy >= self.target:
                self.time_to_accuracy = elapsed_minus_eval
                self.epochs_to_accuracy = len(self.train_times)

    def done(self) -> bool:
        """Stop when the target is reached and at least warm-up + 2 epochs were timed."""
        return self.time_to_accuracy is not None and len(self.train_times) >= 3

    def summary(self, num_train: int, eval_seconds: float, num_test: int) -> dict[str, Any]:
        steady = statistics.median(self.train_times[1:])
        return {
            "train_examples_per_s": num_train / steady,
            "eval_examples_per_s": num_test / eval_seconds,
            "compile_s": max(0.0, self.train_times[0] - steady),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "time_to_accuracy_s": self.time_to_accuracy,
            "epochs_to_accuracy": self.epochs_to_accuracy,
            "epoch_train_times_s": self.train_times,
            "test_accuracy_per_epoch": self.accuracies or None,
            "train_examples_per_epoch": num_train,
        }


def _time_eval(evaluate) -> float:
    """Median seconds of 3 calls of ``evaluate()`` after a warm-up call (which may compile)."""
    evaluate()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        evaluate()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ------------------------------------------------------------------------------------------ jaxnn
def _jaxnn_model(workload: str, dtype: Any = None):
    import jax.numpy as jnp

    import jaxnn

    dtype = jnp.float32 if dtype is None else dtype
    if workload == "mlp":
        return jaxnn.MLP(features=(128, 128), num_outputs=10, dropout_rate=0.2, dtype=dtype)
    return jaxnn.CNN(filters=(32, 64), dense=(128,), dropout_rate=0.4, batch_norm=True, dtype=dtype)


def run_jaxnn(workload: str, data: dict, log: EpochLog, dtype: str | None = None) -> dict:
    """jaxnn's Trainer exactly as a user calls it: one fit() with validation_data."""
    import jax.numpy as jnp
    import optax

    import jaxnn

    class StopAtAccuracy(jaxnn.Callback):
        """Records epoch-end times and stops once the target is reached (and enough epochs ran)."""

        def __init__(self):
            self.epoch_ends: list[float] = []

        def on_epoch_end(self, trainer, epoch, logs):
            self.epoch_ends.append(time.perf_counter())
            if log.with_accuracy and logs.get("val_accuracy", 0.0) >= log.target:
                if len(self.epoch_ends) >= 3:
                    trainer.stop_training = True

    x, y, x_test, y_test = data["x_train"], data["y_train"], data["x_test"], data["y_test"]
    start = time.perf_counter()
    model = _jaxnn_model(workload, jnp.bfloat16 if dtype == "bfloat16" else None)
    trainer = jaxnn.Trainer(
        model,
        loss="sparse_categorical_crossentropy",
        optimizer=optax.adam(LEARNING_RATE),
        metrics=["accuracy"],
        seed=0,
    )
    stopper = StopAtAccuracy()
    history = trainer.fit(
        x,
        y,
        epochs=log.num_epochs,
        batch_size=BATCH_SIZE,
        validation_data=(x_test, y_test) if log.with_accuracy else None,
        callbacks=[stopper],
        verbose=0,
    )
    eval_so_far = 0.0
    for i, train_time in enumerate(history["train_time_s"]):
        # epoch_time_s - train_time_s is the epoch's test evaluation (and a scalar fetch).
        eval_so_far += history["epoch_time_s"][i] - train_time
        accuracy = history["val_accuracy"][i] if log.with_accuracy else None
        log.record(train_time, accuracy, stopper.epoch_ends[i] - start - eval_so_far)
    eval_seconds = _time_eval(lambda: trainer.evaluate(x_test, y_test, batch_size=EVAL_BATCH_SIZE))
    result = log.summary(len(x), eval_seconds, len(x_test))
    result["steps_per_dispatch"] = trainer.dispatch_size(math.ceil(len(x) / BATCH_SIZE))
    return result


def run_dispatch_sweep(workload: str, data: dict, rounds: int) -> dict:
    """Train ex/s of jaxnn's Trainer for each steps_per_dispatch, epochs interleaved round-robin."""
    import optax

    import jaxnn

    x, y = data["x_train"][: SWEEP_EXAMPLES[workload]], data["y_train"][: SWEEP_EXAMPLES[workload]]
    trainers = {
        k: jaxnn.Trainer(
            _jaxnn_model(workload),
            optimizer=optax.adam(LEARNING_RATE),
            metrics=["accuracy"],
            seed=0,
            steps_per_dispatch=k,
        )
        for k in DISPATCH_SIZES
    }
    times: dict[int, list[float]] = {k: [] for k in DISPATCH_SIZES}
    for _ in range(1 + rounds):  # the first round is the warm-up (compilation)
        for k, trainer in trainers.items():
            history = trainer.fit(x, y, epochs=1, batch_size=BATCH_SIZE, verbose=0)
            times[k].append(history["train_time_s"][0])
    auto = jaxnn.Trainer(_jaxnn_model(workload))
    auto.initialize(x[:1], steps_per_epoch=math.ceil(len(x) / BATCH_SIZE))
    out: dict[str, Any] = {
        "auto_resolves_to": auto.dispatch_size(math.ceil(len(x) / BATCH_SIZE)),
        "train_examples_per_epoch": len(x),
    }
    for k, ts in times.items():
        steady = statistics.median(ts[1:])
        out[str(k)] = {
            "train_examples_per_s": len(x) / steady,
            "compile_s": max(0.0, ts[0] - steady),
            "epoch_train_times_s": ts,
        }
    return out


# ------------------------------------------------------------------------------------------ flax
def run_flax(workload: str, data: dict, log: EpochLog) -> dict:
    """A hand-written Linen + Optax loop in the style of the Flax examples (examples/mnist)."""
    from typing import Any as AnyType

    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import optax
    from flax.training import train_state

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            x = x.reshape((x.shape[0], -1))
            for _ in range(2):
                x = nn.relu(nn.Dense(128)(x))
                x = nn.Dropout(0.2, deterministic=not train)(x)
            return nn.Dense(10)(x)

    class CNN(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            for features in (32, 64):
                x = nn.Conv(features, (3, 3), padding="SAME", use_bias=False)(x)
                x = nn.BatchNorm(use_running_average=not train)(x)
                x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))
            x = x.reshape((x.shape[0], -1))
            x = nn.Dropout(0.4, deterministic=not train)(x)
            x = nn.relu(nn.Dense(128)(x))
            return nn.Dense(10)(x)

    class TrainState(train_state.TrainState):
        batch_stats: AnyType
        dropout_key: jax.Array

    def variables(state, params):
        if state.batch_stats:
            return {"params": params, "batch_stats": state.batch_stats}
        return {"params": params}

    @jax.jit
    def train_step(state, images, labels):
        dropout_key = jax.random.fold_in(state.dropout_key, state.step)

        def loss_fn(params):
            logits, updates = state.apply_fn(
                variables(state, params),
                images,
                train=True,
                rngs={"dropout": dropout_key},
                mutable=["batch_stats"],
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, (logits, updates)

        (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        state = state.apply_gradients(grads=grads)
        if state.batch_stats:
            state = state.replace(batch_stats=updates["batch_stats"])
        accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
        return state, loss, accuracy

    @jax.jit
    def eval_step(state, images, labels):
        logits = state.apply_fn(variables(state, state.params), images, train=False)
        return jnp.sum(jnp.argmax(logits, -1) == labels)

    def train_epoch(state, rng):
        steps = len(x) // BATCH_SIZE  # the Flax example drops the incomplete last batch
        perms = rng.permutation(len(x))[: steps * BATCH_SIZE].reshape(steps, BATCH_SIZE)
        epoch_loss, epoch_accuracy = [], []
        for perm in perms:
            state, loss, accuracy = train_step(state, x[perm], y[perm])
            epoch_loss.append(loss)
            epoch_accuracy.append(accuracy)
        np.mean(jax.device_get(epoch_loss)), np.mean(jax.device_get(epoch_accuracy))  # waits
        return state, steps * BATCH_SIZE

    def test_accuracy(state):
        correct = 0
        for i in range(0, len(x_test), EVAL_BATCH_SIZE):
            s = slice(i, i + EVAL_BATCH_SIZE)
            correct += int(eval_step(state, x_test[s], y_test[s]))
        return correct / len(x_test)

    x, y, x_test, y_test = data["x_train"], data["y_train"], data["x_test"], data["y_test"]
    start = time.perf_counter()
    model = MLP() if workload == "mlp" else CNN()
    init_key, dropout_key = jax.random.split(jax.random.key(0))
    model_variables = model.init(init_key, jnp.ones((1, 28, 28, 1)), train=False)
    state = TrainState.create(
        apply_fn=model.apply,
        params=model_variables["params"],
        tx=optax.adam(LEARNING_RATE),
        batch_stats=model_variables.get("batch_stats", {}),
        dropout_key=dropout_key,
    )
    rng = np.random.default_rng(0)
    num_trained = 0
    for _ in range(log.num_epochs):
        epoch_start = time.perf_counter()
        state, num_trained = train_epoch(state, rng)
        train_end = time.perf_counter()
        eval_before = log.eval_time_total
        accuracy = None
        if log.with_accuracy:
            accuracy = test_accuracy(state)
            log.eval_time_total += time.perf_counter() - train_end
        log.record(train_end - epoch_start, accuracy, train_end - start - eval_before)
        if log.done():
            break
    eval_seconds = _time_eval(lambda: test_accuracy(state))
    return log.summary(num_trained, eval_seconds, len(x_test))


# ------------------------------------------------------------------------------------------ torch
def run_torch(workload: str, data: dict, log: EpochLog) -> dict:
    """PyTorch eager, 2 threads (on the GPU when there is one), a plain tensor-indexing loop."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.set_num_threads(2)
    torch.manual_seed(0)
    start = time.perf_counter()
    if workload == "mlp":
        model = nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, 128), nn.ReLU(), nn.Dropout(0.2),
            nn.Linear(128, 128), nn.ReLU(), nn.Dropout(0.2),
            nn.Linear(128, 10),
        )  # fmt: skip
    else:
        model = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32),
            nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64),
            nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.4),
            nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
            nn.Linear(128, 10),
        )  # fmt: skip
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    # NHWC -> NCHW once, as part of setup (timed like jaxnn's device placement).
    x = torch.from_numpy(data["x_train"]).permute(0, 3, 1, 2).contiguous().to(device)
    y = torch.from_numpy(data["y_train"]).long().to(device)
    x_test = torch.from_numpy(data["x_test"]).permute(0, 3, 1, 2).contiguous().to(device)
    y_test = torch.from_numpy(data["y_test"]).long().to(device)
    generator = torch.Generator().manual_seed(0)

    def train_epoch():
        model.train()
        order = torch.randperm(len(x), generator=generator).to(device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        for i in range(0, len(x), BATCH_SIZE):
            idx = order[i : i + BATCH_SIZE]
            images, labels = x[idx], y[idx]
            logits = model(images)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            correct += (logits.detach().argmax(1) == labels).sum()
        return int(correct)

    @torch.no_grad()
    def test_accuracy():
        model.eval()
        correct = 0
        for i in range(0, len(x_test), EVAL_BATCH_SIZE):
            logits = model(x_test[i : i + EVAL_BATCH_SIZE])
            correct += int((logits.argmax(1) == y_test[i : i + EVAL_BATCH_SIZE]).sum())
        return correct / len(x_test)

    for _ in range(log.num_epochs):
        epoch_start = time.perf_counter()
        train_epoch()
        train_end = time.perf_counter()
        eval_before = log.eval_time_total
        accuracy = None
        if log.with_accuracy:
            accuracy = test_accuracy()
            log.eval_time_total += time.perf_counter() - train_end
        log.record(train_end - epoch_start, accuracy, train_end - start - eval_before)
        if log.done():
            break
    eval_seconds = _time_eval(test_accuracy)
    return log.summary(len(x), eval_seconds, len(x_test))


# ------------------------------------------------------------------------------------------ keras
def run_keras(workload: str, data: dict, log: EpochLog) -> dict:
    """Keras 3 model.fit on the JAX backend, with validation_data as a user would pass it."""
    os.environ["KERAS_BACKEND"] = "jax"
    import jax
    import keras
    from keras import layers

    class Timer(keras.callbacks.Callback):
        """Synchronised per-epoch train times, test-evaluation times and the early stop."""

        def __init__(self):
            super().__init__()
            self.epoch_start = self.test_start = self.eval_before = 0.0
            self.train_end: float | None = None

        def _train_done(self):
            # fit() has just re-attached its state to the variables: wait for the last step.
            jax.block_until_ready([v.value for v in self.model.variables])
            return time.perf_counter()

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_start = time.perf_counter()
            self.train_end = None
            self.eval_before = log.eval_time_total

        def on_test_begin(self, logs=None):
            if self.train_end is None and self.epoch_start:
                self.train_end = self._train_done()
            self.test_start = time.perf_counter()

        def on_test_end(self, logs=None):
            if self.epoch_start:
                log.eval_time_total += time.perf_counter() - self.test_start

        def on_epoch_end(self, epoch, logs=None):
            if self.train_end is None:  # no validation this epoch
                self.train_end = self._train_done()
            accuracy = logs.get("val_accuracy") if log.with_accuracy else None
            elapsed = self.train_end - start - self.eval_before
            log.record(self.train_end - self.epoch_start, accuracy, elapsed)
            if log.done():
                self.model.stop_training = True

    keras.utils.set_random_seed(0)
    x, y, x_test, y_test = data["x_train"], data["y_train"], data["x_test"], data["y_test"]
    start = time.perf_counter()
    if workload == "mlp":
        body = [
            layers.Flatten(),
            layers.Dense(128, activation="relu"), layers.Dropout(0.2),
            layers.Dense(128, activation="relu"), layers.Dropout(0.2),
        ]  # fmt: skip
    else:
        body = []
        for filters in (32, 64):
            body += [
                layers.Conv2D(filters, 3, padding="same", use_bias=False),
                layers.BatchNormalization(),
                layers.ReLU(),
                layers.MaxPooling2D(2),
            ]
        body += [layers.Flatten(), layers.Dropout(0.4), layers.Dense(128, activation="relu")]
    model = keras.Sequential([keras.Input((28, 28, 1)), *body, layers.Dense(10)])
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(
        x,
        y,
        batch_size=BATCH_SIZE,
        epochs=log.num_epochs,
        validation_data=(x_test, y_test) if log.with_accuracy else None,
        validation_batch_size=EVAL_BATCH_SIZE,
        callbacks=[Timer()],
        verbose=0,
    )
    eval_seconds = _time_eval(
        lambda: model.evaluate(x_test, y_test, batch_size=EVAL_BATCH_SIZE, verbose=0)
    )
    return log.summary(len(x), eval_seconds, len(x_test))


def _read_npy_aligned(path: Path) -> np.ndarray:
    """An .npy file read straight into 64-byte-aligned memory, as ``jaxnn.data`` returns arrays
    (``jaxnn.sharding.aligned_empty``: a CPU device then uses them without a copy). Written out
    here because a worker imports nothing but numpy and the framework it measures."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0}.get(
            version, np.lib.format.read_array_header_2_0
        )
        shape, fortran_order, dtype = read_header(f)
        if fortran_order or dtype.hasobject:
            raise ValueError(f"{path}: expected a C-ordered numeric array")
        nbytes = math.prod(shape) * dtype.itemsize
        raw = np.empty(nbytes + 64, np.uint8)
        offset = -raw.ctypes.data % 64
        array = raw[offset : offset + nbytes]
        if f.readinto(memoryview(array)) != nbytes:
            raise ValueError(f"{path}: truncated")
    return array.view(dtype).reshape(shape)


RUNNERS = {"jaxnn": run_jaxnn, "flax": run_flax, "torch": run_torch, "keras": run_keras}


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs one measurement in this (fresh) process; ``spec`` comes from the parent."""
    data = {path.stem: _read_npy_aligned(path) for path in Path(spec["data_dir"]).glob("*.npy")}
    workload, framework = spec["workload"], spec["framework"]
    if framework == "jaxnn_sweep":
        return run_dispatch_sweep(workload, data, spec["measured_epochs"])
    with_accuracy = spec["time_to_accuracy"]
    num_epochs = MAX_EPOCHS[workload] if with_accuracy else 1 + spec["measured_epochs"]
    log = EpochLog(workload, with_accuracy, num_epochs)
    if framework == "jaxnn_bf16":
        return run_jaxnn(workload, data, log, dtype="bfloat16")
    if framework == "jaxnn_warm_cache":
        from jaxnn.cli import enable_compilation_cache

        enable_compilation_cache(spec["cache_dir"])
        if spec.get("fill_cache"):  # the same model, steps and evaluation, for 2 epochs
            log = EpochLog(workload, with_accuracy, 2)
        return run_jaxnn(workload, data, log)
    return RUNNERS[framework](workload, data, log)


# ------------------------------------------------------------------------------------------ parent
def _run_subprocess(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("r", suffix=".json") as result_file:
        command = [sys.executable, "-m", "experiments.benchmark", "--worker", json.dumps(spec)]
        command += ["--worker-out", result_file.name]
        proc = subprocess.run(
            command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
        )
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout)[-3000:]
            raise RuntimeError(f"{spec['framework']}/{spec['workload']} failed:\n{tail}")
        return json.loads(Path(result_file.name).read_text())


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    cpu_model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import jax

    return {
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "jax_devices": [str(d) for d in jax.devices()],
        "python": platform.python_version(),
        "versions": {
            p: _version(p)
            for p in ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "keras", "jaxnn")
        },
    }


def compute_ratios(
    results: dict[str, dict[str, dict]], ours_name: str = "jaxnn"
) -> dict[str, dict[str, dict]]:
    """``ours_name``'s speedup over each peer (> 1: jaxnn faster); jaxnn's variants are not
    peers."""
    ratios: dict[str, dict[str, dict]] = {}
    for workload, by_framework in results.items():
        ours = by_framework.get(ours_name)
        if not ours or "error" in ours:
            continue
        ratios[workload] = {}
        for peer, theirs in by_framework.items():
            if peer.startswith("jaxnn") or "error" in theirs:
                continue
            ours_t, theirs_t = ours["time_to_accuracy_s"], theirs["time_to_accuracy_s"]
            ratios[workload][peer] = {
                "train_speedup": ours["train_examples_per_s"] / theirs["train_examples_per_s"],
                "time_to_accuracy_speedup": theirs_t / ours_t if ours_t and theirs_t else None,
            }
    return ratios


def compute_variant_ratios(results: dict[str, dict[str, dict]]) -> dict[str, dict[str, dict]]:
    """``compute_ratios`` for each jaxnn variant: ``[workload][variant][peer]``."""
    variants = {f for by in results.values() for f in by if f.startswith("jaxnn_")}
    out: dict[str, dict[str, dict]] = {}
    for variant in sorted(variants):
        for workload, by_peer in compute_ratios(results, variant).items():
            out.setdefault(workload, {})[variant] = by_peer
    return out


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def format_table(results: dict, ratios: dict, variant_ratios: dict | None = None) -> str:
    """The results table (ratio columns: jaxnn against the row's peer), then one line per jaxnn
    variant with its ratios against every peer."""
    header = (
        f"{'workload':<8} {'framework':<16} {'train ex/s':>11} {'eval ex/s':>11} "
        f"{'compile s':>9} {'peak RSS MB':>11} {'time-to-acc s':>13} {'ep':>3} "
        f"{'jaxnn train x':>13} {'jaxnn tta x':>11}"
    )
    lines = [header, "-" * len(header)]
    for workload, by_framework in results.items():
        for framework, r in by_framework.items():
            if "error" in r:
                lines.append(f"{workload:<8} {framework:<16} failed: {r['error'].splitlines()[0]}")
                continue
            ratio = ratios.get(workload, {}).get(framework, {})
            lines.append(
                f"{workload:<8} {framework:<16} {_fmt(r['train_examples_per_s'], 0):>11} "
                f"{_fmt(r['eval_examples_per_s'], 0):>11} {_fmt(r['compile_s'], 2):>9} "
                f"{_fmt(r['peak_rss_mb'], 0):>11} {_fmt(r['time_to_accuracy_s'], 1):>13} "
                f"{_fmt(r['epochs_to_accuracy'], 0):>3} "
                f"{_fmt(ratio.get('train_speedup'), 2):>13} "
                f"{_fmt(ratio.get('time_to_accuracy_speedup'), 2):>11}"
            )
    return "\n".join([*lines, *format_variant_ratios(variant_ratios or {}).splitlines()])


def format_variant_ratios(variant_ratios: dict) -> str:
    """One line per (workload, jaxnn variant): its ratios against every peer."""
    lines = []
    for workload, by_variant in variant_ratios.items():
        for variant, by_peer in by_variant.items():
            cells = [
                f"{peer} train x{_fmt(r['train_speedup'], 2)}, "
                f"tta x{_fmt(r['time_to_accuracy_speedup'], 2)}"
                for peer, r in by_peer.items()
            ]
            lines.append(f"{workload} {variant} against " + "; ".join(cells))
    return "\n".join(lines)


def format_sweep(sweep: dict) -> str:
    lines = ["steps_per_dispatch sweep (jaxnn train ex/s, epochs interleaved in one process):"]
    for workload, r in sweep.items():
        if "error" in r:
            lines.append(f"  {workload}: failed: {r['error'].splitlines()[0]}")
            continue
        base = r["1"]["train_examples_per_s"]
        cells = [
            f"{k}: {r[str(k)]['train_examples_per_s']:,.0f} "
            f"(x{r[str(k)]['train_examples_per_s'] / base:.2f}, compile "
            f"{r[str(k)]['compile_s']:.1f}s)"
            for k in DISPATCH_SIZES
        ]
        head = f"  {workload} ({r['train_examples_per_epoch']:,} examples/epoch): "
        lines.append(head + "; ".join(cells) + f"; auto = {r['auto_resolves_to']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.benchmark", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="2,048 random examples, 2 epochs")
    parser.add_argument("--out", default="benchmark.json", help="where to write the JSON")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    parser.add_argument("--data", choices=("fashion_mnist", "random"), default="fashion_mnist")
    parser.add_argument("--bf16", action="store_true", help="also jaxnn with bfloat16 models")
    parser.add_argument("--sweep-dispatch", action="store_true", help="steps_per_dispatch 1/8/32")
    parser.add_argument(
        "--warm-cache", action="store_true",
        help="also jaxnn with a filled persistent compilation cache (an experiment's re-run)",
    )  # fmt: skip
    parser.add_argument(
        "--measured-epochs", type=int, default=None,
        help="timed epochs after the warm-up one when time-to-accuracy is off (default 1 with "
        "--quick, else 2)",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per subprocess")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.workloads = [w for w in args.workloads.split(",") if w]
    args.frameworks = [f for f in args.frameworks.split(",") if f]
    for w in args.workloads:
        if w not in WORKLOADS:
            parser.error(f"--workloads: unknown workload {w!r}; expected some of {WORKLOADS}")
    for f in args.frameworks:
        if f not in FRAMEWORKS:
            parser.error(f"--frameworks: unknown framework {f!r}; expected some of {FRAMEWORKS}")
    if args.measured_epochs is None:
        args.measured_epochs = 1 if args.quick else 2
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.worker:
        result = worker(json.loads(args.worker))
        Path(args.worker_out).write_text(json.dumps(result))
        return result

    frameworks = []
    for f in args.frameworks:
        module = PEERS_NEEDING_IMPORT.get(f)
        if module and importlib.util.find_spec(module) is None:
            print(f"skipping {f}: not importable (pip install -e '.[bench]')", file=sys.stderr)
            continue
        frameworks.append(f)
    if args.bf16:
        frameworks.append("jaxnn_bf16")
    if args.warm_cache:
        frameworks.append("jaxnn_warm_cache")

    arrays, source = load_data("random" if args.quick else args.data, args.quick)
    time_to_accuracy = not args.quick and source.startswith("fashion_mnist")
    print(f"data: {source}; time to accuracy: {time_to_accuracy}", file=sys.stderr)
    results: dict[str, dict[str, dict]] = {}
    sweep: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, array in arrays.items():
            np.save(Path(tmp) / f"{key}.npy", array)
        del arrays
        base = {"data_dir": tmp, "measured_epochs": args.measured_epochs}
        for workload in args.workloads:
            results[workload] = {}
            for framework in frameworks:
                spec = {**base, "workload": workload, "framework": framework}
                spec["time_to_accuracy"] = time_to_accuracy
                start = time.perf_counter()
                try:
                    if framework == "jaxnn_warm_cache":
                        spec["cache_dir"] = str(Path(tmp) / "xla_cache" / workload)
                        _run_subprocess({**spec, "fill_cache": True}, args.timeout)
                    results[workload][framework] = _run_subprocess(spec, args.timeout)
                except (RuntimeError, subprocess.TimeoutExpired) as error:
                    results[workload][framework] = {"error": str(error)}
                print(
                    f"{workload}/{framework}: {time.perf_counter() - start:.0f}s", file=sys.stderr
                )
            if args.sweep_dispatch:
                spec = {**base, "workload": workload, "framework": "jaxnn_sweep"}
                try:
                    sweep[workload] = _run_subprocess(spec, args.timeout)
                except (RuntimeError, subprocess.TimeoutExpired) as error:
                    sweep[workload] = {"error": str(error)}
    ratios = compute_ratios(results)
    variant_ratios = compute_variant_ratios(results)
    report = {
        "machine": machine_info(),
        "config": {
            "quick": args.quick,
            "data": source,
            "time_to_accuracy": time_to_accuracy,
            "batch_size": BATCH_SIZE,
            "eval_batch_size": EVAL_BATCH_SIZE,
            "learning_rate": LEARNING_RATE,
            "target_accuracy": TARGET_ACCURACY,
            "max_epochs": MAX_EPOCHS,
            "measured_epochs": args.measured_epochs,
            "command": " ".join(["python -m experiments.benchmark", *sys.argv[1:]]),
        },
        "results": results,
        "ratios": ratios,
        "variant_ratios": variant_ratios,
    }
    if sweep:
        report["dispatch_sweep"] = sweep
    print(format_table(results, ratios, variant_ratios))
    if sweep:
        print(format_sweep(sweep))
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
