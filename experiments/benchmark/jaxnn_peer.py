"""The ``jaxnn`` rows: ``Trainer.fit`` exactly as a user calls it (one fit with validation_data,
default settings), and the ``steps_per_dispatch`` sweep.

Imported by the jaxnn workers only (and by ``experiments.profile_step`` and
``experiments.data_benchmark``, which train the same models).
"""

from __future__ import annotations

import math
import time
from typing import Any

import jax.numpy as jnp
import numpy as np
import optax

import jaxnn
from experiments.benchmark.common import (
    BATCH_SIZE,
    DISPATCH_SIZES,
    EVAL_BATCH_SIZE,
    LEARNING_RATE,
    SWEEP_EXAMPLES,
    EpochLog,
    Peer,
    steady_state,
)


def jaxnn_model(workload: str, dtype: Any = None) -> jaxnn.MLP | jaxnn.CNN:
    """The benchmark's ``"mlp"`` or ``"cnn"`` as a jaxnn model (float32 unless ``dtype``)."""
    dtype = jnp.float32 if dtype is None else dtype
    if workload == "mlp":
        return jaxnn.MLP(features=(128, 128), num_outputs=10, dropout_rate=0.2, dtype=dtype)
    return jaxnn.CNN(filters=(32, 64), dense=(128,), dropout_rate=0.4, batch_norm=True, dtype=dtype)


class _RecordEpochs(jaxnn.Callback):
    """Reports each epoch of ``Trainer.fit`` to the log, and stops by the log's rule."""

    def __init__(self, log: EpochLog):
        self.log = log

    def on_epoch_end(self, trainer, epoch, logs):
        now = time.perf_counter()
        # epoch_time_s - train_time_s is the epoch's test evaluation (and a scalar fetch).
        self.log.add_eval_time(logs["epoch_time_s"] - logs["train_time_s"])
        accuracy = logs["val_accuracy"] if self.log.with_accuracy else None
        self.log.record(logs["train_time_s"], accuracy, self.log.elapsed_minus_eval(now))
        if self.log.done():
            trainer.stop_training = True


class JaxnnPeer(Peer):
    """jaxnn's Trainer: ``fit`` owns the epochs and times each one synchronised itself."""

    def __init__(
        self,
        workload: str,
        data: dict[str, np.ndarray],
        dtype: str | None = None,
        seed: int = 0,
    ):
        super().__init__(workload, data, seed)
        self.dtype = jnp.bfloat16 if dtype == "bfloat16" else None

    def build(self) -> None:
        self.trainer = jaxnn.Trainer(
            jaxnn_model(self.workload, self.dtype),
            loss="sparse_categorical_crossentropy",
            optimizer=optax.adam(LEARNING_RATE),
            metrics=["accuracy"],
            seed=self.seed,
        )

    def train(self, log: EpochLog) -> None:
        test = (self.data["x_test"], self.data["y_test"])
        self.trainer.fit(
            self.data["x_train"],
            self.data["y_train"],
            epochs=log.num_epochs,
            batch_size=BATCH_SIZE,
            validation_data=test if log.with_accuracy else None,
            callbacks=[_RecordEpochs(log)],
            verbose=0,
        )

    def evaluate(self) -> None:
        self.trainer.evaluate(self.data["x_test"], self.data["y_test"], batch_size=EVAL_BATCH_SIZE)

    def extra_fields(self) -> dict[str, Any]:
        steps = math.ceil(self.examples_per_epoch / BATCH_SIZE)
        return {"steps_per_dispatch": self.trainer.dispatch_size(steps)}


def run_dispatch_sweep(workload: str, data: dict[str, np.ndarray], rounds: int) -> dict[str, Any]:
    """Train ex/s of jaxnn's Trainer for each of ``DISPATCH_SIZES`` steps per dispatch, one epoch
    of each in turn for ``1 + rounds`` rounds (the first is the warm-up), so that load drift hits
    all alike; and what ``steps_per_dispatch="auto"`` resolves to."""
    x, y = data["x_train"][: SWEEP_EXAMPLES[workload]], data["y_train"][: SWEEP_EXAMPLES[workload]]
    trainers = {
        k: jaxnn.Trainer(
            jaxnn_model(workload),
            optimizer=optax.adam(LEARNING_RATE),
            metrics=["accuracy"],
            seed=0,
            steps_per_dispatch=k,
        )
        for k in DISPATCH_SIZES
    }
    times: dict[int, list[float]] = {k: [] for k in DISPATCH_SIZES}
    for _ in range(1 + rounds):
        for k, trainer in trainers.items():
            history = trainer.fit(x, y, epochs=1, batch_size=BATCH_SIZE, verbose=0)
            times[k].append(history["train_time_s"][0])
    steps = math.ceil(len(x) / BATCH_SIZE)
    auto = jaxnn.Trainer(jaxnn_model(workload))
    auto.initialize(x[:1], steps_per_epoch=steps)
    out: dict[str, Any] = {
        "auto_resolves_to": auto.dispatch_size(steps),
        "train_examples_per_epoch": len(x),
    }
    for k, ts in times.items():
        examples_per_s, compile_s = steady_state(ts, len(x))
        out[str(k)] = {
            "train_examples_per_s": examples_per_s,
            "compile_s": compile_s,
            "epoch_train_times_s": ts,
        }
    return out
