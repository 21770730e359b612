"""The ``keras`` peer: Keras 3 ``model.fit`` on the JAX backend, with validation_data as a user
would pass it.

Imported by the keras worker only; it imports jax (Keras's backend) but not jaxnn.
"""

from __future__ import annotations

import os
import time

import numpy as np

from experiments.benchmark.common import BATCH_SIZE, EVAL_BATCH_SIZE, LEARNING_RATE, EpochLog, Peer

os.environ["KERAS_BACKEND"] = "jax"  # read when keras is first imported
import jax  # noqa: E402
import keras  # noqa: E402
from keras import layers  # noqa: E402


def keras_model(workload: str) -> keras.Sequential:
    """The benchmark's ``"mlp"`` or ``"cnn"`` as an uncompiled Keras model."""
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
    return keras.Sequential([keras.Input((28, 28, 1)), *body, layers.Dense(10)])


class _EpochClock(keras.callbacks.Callback):
    """Clocks fit()'s epochs on the log: synchronised train times, test evaluations off the clock,
    and the log's stop rule."""

    def __init__(self, log: EpochLog):
        super().__init__()
        self.log = log
        self.test_start = 0.0

    def _end_training(self):
        # fit() has just re-attached its state to the variables: wait for the last step.
        jax.block_until_ready([v.value for v in self.model.variables])
        self.log.end_training()

    def on_epoch_begin(self, epoch, logs=None):
        self.log.begin_epoch()

    def on_test_begin(self, logs=None):
        if not self.log.training_ended:
            self._end_training()
        self.test_start = time.perf_counter()

    def on_test_end(self, logs=None):
        self.log.add_eval_time(time.perf_counter() - self.test_start)

    def on_epoch_end(self, epoch, logs=None):
        if not self.log.training_ended:  # no validation this epoch
            self._end_training()
        accuracy = logs.get("val_accuracy") if self.log.with_accuracy else None
        if self.log.end_epoch(accuracy):
            self.model.stop_training = True


class KerasPeer(Peer):
    """``model.fit`` owns the epochs; ``_EpochClock`` reports them to the log."""

    def __init__(self, workload: str, data: dict[str, np.ndarray], seed: int = 0):
        super().__init__(workload, data, seed)
        keras.utils.set_random_seed(seed)

    def build(self) -> None:
        self.model = keras_model(self.workload)
        self.model.compile(
            optimizer=keras.optimizers.Adam(LEARNING_RATE),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )

    def train(self, log: EpochLog) -> None:
        test = (self.data["x_test"], self.data["y_test"])
        self.model.fit(
            self.data["x_train"],
            self.data["y_train"],
            batch_size=BATCH_SIZE,
            epochs=log.num_epochs,
            validation_data=test if log.with_accuracy else None,
            validation_batch_size=EVAL_BATCH_SIZE,
            callbacks=[_EpochClock(log)],
            verbose=0,
        )

    def evaluate(self) -> None:
        x_test, y_test = self.data["x_test"], self.data["y_test"]
        self.model.evaluate(x_test, y_test, batch_size=EVAL_BATCH_SIZE, verbose=0)
