"""``TrainLoop``: what training has reached, the one object callbacks see; and the loops over an
epoch's dispatches that move it on.

The ``Trainer`` keeps its progress here and hands this object, never itself, to every callback
hook (as CLU's periodic actions see ``(step, t)``, not the loop that calls them). A callback reads
the logs and the state, sets ``stop_training``, or replaces ``state`` (early stopping puts the best
weights back, ReduceLROnPlateau changes the learning-rate scale in the optimizer state).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from jaxnn.state import TrainState

__all__ = ["TrainLoop", "evaluate_dispatches", "train_dispatches"]


@dataclasses.dataclass
class TrainLoop:
    """The train state and where training stands, over every ``fit`` call of one Trainer.

    Attributes:
      state: the train state (params, batch_stats, opt_state, step, dropout key); a callback may
        replace it with ``state.replace(...)``, keeping each leaf's shape, dtype and sharding.
      epoch: epochs completed.
      global_step: optimizer steps applied so far (``state.step``, counted on the host).
      position: steps done inside the current epoch (0 between epochs).
      steps_per_epoch: steps in an epoch of the current ``fit``.
      metrics: the current epoch's metrics accumulated on device (a partial epoch's, restored
        with ``position`` for an exact mid-epoch resume); None between epochs.
      history: every finished epoch's logs, one list entry per epoch (``loss``, metrics,
        ``val_*``, ``learning_rate``, times).
      stop_training: set True to stop after the current epoch.
    """

    state: TrainState | None = None
    epoch: int = 0
    global_step: int = 0
    position: int = 0
    steps_per_epoch: int = 0
    metrics: dict[str, Any] | None = None
    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    stop_training: bool = False

    def record(self, logs: dict[str, float]) -> None:
        """Appends an epoch's logs to ``history`` and counts the epoch as done."""
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)
        self.epoch += 1


def train_dispatches(
    loop: TrainLoop,
    train: Callable[..., tuple[TrainState, dict[str, Any]]],
    data: Any,
    plan: Any,
    k: int,
    metrics: dict[str, Any],
    *,
    mask_last: bool,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """Runs the rest of the current epoch from ``loop.position``, ``k`` steps per call of the
    compiled ``train`` (``jaxnn.step.Steps.train``), over ``plan``'s batches of ``data`` (a
    ``jaxnn.feeding.Fed``); returns the epoch's metrics (on device).

    The loop's state, position, global step and metrics move on after every dispatch, then
    each callback's ``on_dispatch_end`` runs. ``mask_last``: the last batch holds padding that
    BatchNorm must be told about (its own compiled variant).
    """
    total, done = loop.steps_per_epoch, loop.position
    while done < total:
        steps = min(k, total - done)
        x, y, idx, weight, start = data.inputs(plan, done, k)
        masked = mask_last and done + steps == total
        loop.state, metrics = train(
            loop.state, metrics, x, y, idx, weight, start, start + steps, k=k, masked=masked
        )
        done += steps
        loop.position, loop.global_step, loop.metrics = done, loop.global_step + steps, metrics
        for callback in callbacks:
            callback.on_dispatch_end(loop, done, metrics)
    return metrics


def evaluate_dispatches(
    evaluate: Callable[..., dict[str, Any]],
    variables: Any,
    metrics: dict[str, Any],
    data: Any,
    plan: Any,
    k: int,
) -> dict[str, Any]:
    """Every batch of ``plan`` through the compiled ``evaluate``, ``k`` batches per call."""
    for done in range(0, plan.idx.shape[0], k):
        x, y, idx, weight, start = data.inputs(plan, done, k)
        metrics = evaluate(variables, metrics, x, y, idx, weight, start, k=k)
    return metrics
