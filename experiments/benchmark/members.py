"""``--sweep K``: K configurations of a workload trained at once by ``jaxnn.Sweep`` (one vmapped
program) against the same K configurations trained one after another by ``jaxnn.Trainer`` (what a
user would otherwise run). Each side runs in its own worker; the sweep's worker gets one XLA host
device per core (``--xla_force_host_platform_device_count``, as ``jaxnn sweep`` sets it), the
sequential one JAX's default single device, as ``Trainer.fit`` in a user's script has.

The K members: Adam at learning rates 1e-3 and 5e-4 alternately, seeds 0, 0, 1, 1, ... (so a
sweep of 8 is 2 rates x 4 seeds). Reported per side: ``train_examples_per_s`` (all members: K x
examples per epoch over the median later epoch's train time, summed over the members for the
sequential side), ``compile_s`` (first epochs' excess), ``wall_s`` (from before the first model is
built to the end of the last epoch: compilation and set-up included) and ``cores_busy`` (process
CPU seconds over wall seconds during the timed epochs; spinning thread-pool workers count too).

Imported by the jaxnn member workers only.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import jax
import numpy as np

import jaxnn
from experiments.benchmark.common import BATCH_SIZE, SWEEP_EXAMPLES
from experiments.benchmark.jaxnn_peer import jaxnn_model

RATES = (1e-3, 5e-4)


def member_configs(k: int) -> list[dict[str, Any]]:
    """The sweep's K members: rates alternating over ``RATES``, each rate over seeds 0, 1, ..."""
    return [
        {"seed": i // len(RATES), "optimizer": {"name": "adam", "learning_rate": RATES[i % 2]}}
        for i in range(k)
    ]


class _Clock(jaxnn.Callback):
    """(wall, process CPU) seconds at every epoch's end."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, float]] = []

    def on_train_begin(self, loop) -> None:
        self.marks.append((time.perf_counter(), time.process_time()))

    def on_epoch_end(self, loop, epoch, logs) -> None:
        self.marks.append((time.perf_counter(), time.process_time()))


def _busy(clocks: list[_Clock]) -> float:
    """CPU seconds over wall seconds in the epochs after each run's first."""
    wall = cpu = 0.0
    for clock in clocks:
        (w1, c1), (w2, c2) = clock.marks[1], clock.marks[-1]
        wall, cpu = wall + w2 - w1, cpu + c2 - c1
    return cpu / wall if wall else float("nan")


def run_members(
    workload: str, data: dict[str, np.ndarray], k: int, epochs: int, mode: str
) -> dict[str, Any]:
    """Trains ``k`` members for ``epochs`` (>= 2) as one sweep (``mode="sweep"``) or one after
    another (``"sequential"``); returns the figures of the module docstring."""
    n = SWEEP_EXAMPLES[workload] or len(data["x_train"])
    x, y = data["x_train"][:n], data["y_train"][:n]
    members = member_configs(k)
    start = time.perf_counter()
    if mode == "sweep":
        clock = _Clock()
        sweep = jaxnn.Sweep(jaxnn_model(workload), members)
        histories = sweep.fit(
            x, y, epochs=epochs, batch_size=BATCH_SIZE, verbose=0, sweep_callbacks=[clock]
        )
        clocks, times = [clock], [histories[0]["train_time_s"]]
        extra = {"mesh": dict(sweep.mesh.shape)}
    else:
        clocks, times = [], []
        for member in members:
            clock = _Clock()
            trainer = jaxnn.Trainer(
                jaxnn_model(workload), optimizer=member["optimizer"], seed=member["seed"]
            )
            history = trainer.fit(
                x, y, epochs=epochs, batch_size=BATCH_SIZE, verbose=0, callbacks=[clock]
            )
            clocks.append(clock)
            times.append(history["train_time_s"])
        extra = {}
    wall = time.perf_counter() - start
    steady = sum(statistics.median(t[1:]) for t in times)
    members_per_run = k if mode == "sweep" else 1
    return {
        "mode": mode,
        "members": k,
        "devices": len(jax.devices()),
        "train_examples_per_epoch": n,
        "train_examples_per_s": members_per_run * n * len(times) / steady,
        "compile_s": sum(max(0.0, t[0] - statistics.median(t[1:])) for t in times),
        "wall_s": wall,
        "cores_busy": _busy(clocks),
        "epoch_train_times_s": times,
        **extra,
    }
