"""What every framework's measurement shares: the workloads' settings, the epoch loop with its
clock (warm-up, time to accuracy with the test evaluations excluded, stop rule) and the result
record (examples/s, compile time, peak RSS).

Only the standard library and numpy are imported: a worker imports this module and the one
framework it measures, so that its peak RSS is that framework's.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

WORKLOADS = ("mlp", "cnn")
FRAMEWORKS = (
    "jaxnn",
    "flax",
    "flax_resident",
    "flax_scan",
    "torch",
    "torch_channels_last",
    "torch_compile",
    "keras",
)
# Measured and listed with the others, but not a loop most users write: no ratio is stated against
# the fastest of these (``fastest_peer`` leaves them out).
REFERENCE_FRAMEWORKS = ("flax_scan",)
TARGET_ACCURACY = {"mlp": 0.88, "cnn": 0.91}
MAX_EPOCHS = {"mlp": 15, "cnn": 10}
BATCH_SIZE = 128
EVAL_BATCH_SIZE = 1024
LEARNING_RATE = 1e-3
DISPATCH_SIZES = (1, 8, 32)
# The sweep's CNN epochs use a 4,096-example subset (32 steps): scanned CNN steps run ~20x slower on
# XLA CPU, and full epochs would take a quarter of an hour each.
SWEEP_EXAMPLES = {"mlp": None, "cnn": 4096}


def steady_state(train_times: list[float], num_examples: int) -> tuple[float, float]:
    """``(examples/s, compile seconds)`` from per-epoch train times whose first is the warm-up.

    Examples/s is ``num_examples`` over the median of the later epochs; the compile time is the
    first epoch's excess over that median, clipped at 0 (eager frameworks have none).

    Example::

        steady_state([5.0, 2.0, 3.0], 600)  # (240.0, 2.5)
    """
    if len(train_times) < 2:
        raise ValueError(f"train_times: expected a warm-up and >= 1 timed epoch; got {train_times}")
    steady = statistics.median(train_times[1:])
    return num_examples / steady, max(0.0, train_times[0] - steady)


def median_call_seconds(fn: Callable[[], Any], repeats: int = 3) -> float:
    """Median seconds of ``repeats`` calls of ``fn()`` after a warm-up call (which may compile)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class EpochLog:
    """Per-epoch train times and test accuracies, and the time-to-accuracy bookkeeping.

    Time to accuracy is measured from ``start()`` (before the model is built) to the end of the
    training of the first epoch whose test accuracy reaches the workload's target, with the time
    spent evaluating the test set (``eval_time_total``) excluded. Loops written here call
    ``begin_epoch`` / ``end_training`` / ``end_epoch``; a framework whose ``fit`` owns the epochs
    calls the same from its callbacks, or ``record`` with its own synchronised train time.
    """

    def __init__(self, workload: str, with_accuracy: bool, num_epochs: int):
        self.target = TARGET_ACCURACY[workload]
        self.with_accuracy = with_accuracy
        self.num_epochs = num_epochs
        self.train_times: list[float] = []
        self.accuracies: list[float] = []
        self.eval_time_total = 0.0
        self.time_to_accuracy: float | None = None
        self.epochs_to_accuracy: int | None = None
        self.start_time = time.perf_counter()
        self._epoch_start = self._train_end = self._elapsed = 0.0
        self.training_ended = False

    def start(self) -> None:
        """Marks the start of training setup (model construction comes next)."""
        self.start_time = time.perf_counter()

    def elapsed_minus_eval(self, now: float) -> float:
        """Wall time from ``start()`` to ``now``, test evaluations so far excluded."""
        return now - self.start_time - self.eval_time_total

    def begin_epoch(self) -> None:
        """Starts an epoch's train clock."""
        self._epoch_start = time.perf_counter()
        self.training_ended = False

    def end_training(self) -> None:
        """Stops the epoch's train clock; call it once the epoch's last step has finished."""
        self._train_end = time.perf_counter()
        self._elapsed = self.elapsed_minus_eval(self._train_end)
        self.training_ended = True

    def add_eval_time(self, seconds: float) -> None:
        """Adds a test evaluation's seconds, which time to accuracy excludes."""
        self.eval_time_total += seconds

    def end_epoch(self, accuracy: float | None) -> bool:
        """Records the epoch clocked by ``begin_epoch``/``end_training``; returns ``done()``."""
        self.record(self._train_end - self._epoch_start, accuracy, self._elapsed)
        return self.done()

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
        """The result record of a measurement (a row of benchmark.json's ``results``)."""
        train_examples_per_s, compile_s = steady_state(self.train_times, num_train)
        return {
            "train_examples_per_s": train_examples_per_s,
            "eval_examples_per_s": num_test / eval_seconds,
            "compile_s": compile_s,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "time_to_accuracy_s": self.time_to_accuracy,
            "epochs_to_accuracy": self.epochs_to_accuracy,
            "epoch_train_times_s": self.train_times,
            "test_accuracy_per_epoch": self.accuracies or None,
            "train_examples_per_epoch": num_train,
        }


def run_epochs(
    log: EpochLog, train_epoch: Callable[[], Any], test_accuracy: Callable[[], float]
) -> None:
    """Trains epoch after epoch until ``log.num_epochs`` or ``log.done()``; with
    ``log.with_accuracy`` the test set is evaluated after each epoch (off the clock)."""
    for _ in range(log.num_epochs):
        log.begin_epoch()
        train_epoch()
        log.end_training()
        accuracy = None
        if log.with_accuracy:
            eval_start = time.perf_counter()
            accuracy = test_accuracy()
            log.add_eval_time(time.perf_counter() - eval_start)
        if log.end_epoch(accuracy):
            break


class Peer:
    """One framework's side of a measurement, which ``measure`` times.

    A subclass prepares the framework in ``__init__`` (seeds from ``seed``, threads: before the
    clock starts) and supplies ``build`` (model, optimizer, data placement: timed as setup),
    ``train_epoch`` (one synchronised epoch) and ``test_accuracy`` (one pass over the test set,
    batch ``EVAL_BATCH_SIZE``). A framework whose own ``fit`` runs the epochs (jaxnn, Keras)
    overrides ``train`` instead, reporting each epoch to the log from its callbacks, and
    ``evaluate``.

    A peer that does not apply to a workload, or cannot run on this machine, says why in
    ``skip_reason`` (checked before the clock starts) or raises one of its ``unavailable_errors``
    while it is measured: its record is then ``{"skipped": reason}`` instead of figures.
    """

    # Exceptions that mean "this framework cannot run here" (say, no C++ compiler for
    # torch.compile), not a defect in the measurement: the worker reports them as a skip.
    unavailable_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, workload: str, data: dict[str, np.ndarray], seed: int = 0) -> None:
        self.workload = workload
        self.data = data
        self.seed = seed  # initialisation, dropout and data order (``--seed``)
        self.examples_per_epoch = len(data["x_train"])

    def skip_reason(self) -> str | None:
        """Why this peer is not measured on its workload here, or None (it is measured)."""
        return None

    def build(self) -> None:
        """Builds the model and optimizer and places the data (timed as part of setup)."""
        raise NotImplementedError

    def train_epoch(self) -> None:
        """Trains one epoch and returns once its last step has finished."""
        raise NotImplementedError

    def test_accuracy(self) -> float:
        """The test set's accuracy, evaluated with batch ``EVAL_BATCH_SIZE``."""
        raise NotImplementedError

    def train(self, log: EpochLog) -> None:
        """Trains for ``log.num_epochs`` or until ``log.done()``, recording every epoch."""
        run_epochs(log, self.train_epoch, self.test_accuracy)

    def evaluate(self) -> None:
        """One pass over the test set, timed for ``eval_examples_per_s``."""
        self.test_accuracy()

    def extra_fields(self) -> dict[str, Any]:
        """Fields added to this framework's result record."""
        return {}


def measure(peer: Peer, log: EpochLog) -> dict[str, Any]:
    """Times ``peer``: setup and training (``log``'s epochs), then its evaluation; returns the
    result record."""
    log.start()
    peer.build()
    peer.train(log)
    eval_seconds = median_call_seconds(peer.evaluate)
    result = log.summary(peer.examples_per_epoch, eval_seconds, len(peer.data["x_test"]))
    return {**result, **peer.extra_fields()}
