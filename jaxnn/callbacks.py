"""Callbacks with Keras' semantics: progress, early stopping and ReduceLROnPlateau.

A callback is an object the training loop calls at fixed points (CLU's periodic actions), never
code pasted into the loop. Every hook receives the ``jaxnn.loop.TrainLoop`` — the train state,
the epoch and step reached, the history and the ``stop_training`` flag — not the Trainer;
``on_epoch_end`` also gets the epoch's ``logs`` (``loss``, metrics, ``val_*``,
``learning_rate``, ``epoch_time_s``).

Callbacks that carry state across epochs expose it as ``state_dict()`` / ``load_state_dict()`` so
a checkpoint can hold it and a resumed run continues exactly.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import jax
import numpy as np

from jaxnn import metrics as metrics_lib
from jaxnn import optim, sharding
from jaxnn.loop import TrainLoop
from jaxnn.step import check_finite, split_train_metrics

if TYPE_CHECKING:  # orbax is slow to import: jaxnn.checkpoint loads when a run checkpoints
    from jaxnn import checkpoint as checkpoint_lib

__all__ = [
    "CSVLogger",
    "Callback",
    "Checkpoint",
    "EarlyStopping",
    "ProgressLogger",
    "ReduceLROnPlateau",
    "StopRequest",
    "TensorBoardLogger",
    "close_progress_bars",
    "format_logs",
    "format_value",
    "improved",
]


class Callback:
    """Base class: override the hooks you need."""

    def on_train_begin(self, loop: TrainLoop) -> None:
        """Called once at the start of ``fit``."""

    def on_epoch_begin(self, loop: TrainLoop, epoch: int) -> None:
        """Called before epoch ``epoch`` (0-based, counted over all ``fit`` calls)."""

    def on_dispatch_end(self, loop: TrainLoop, steps_done: int, metrics: dict[str, Any]) -> None:
        """Called after each train dispatch with the on-device accumulated metrics.

        Reading ``metrics`` synchronises with the device: do it rarely (per log interval).
        """

    def on_epoch_end(self, loop: TrainLoop, epoch: int, logs: dict[str, float]) -> None:
        """Called after each epoch; set ``loop.stop_training = True`` to stop."""

    def on_train_end(self, loop: TrainLoop, history: dict[str, list[float]]) -> None:
        """Called once at the end of ``fit``."""

    def state_dict(self) -> dict[str, Any]:
        """What must be checkpointed for an exact resume (empty when stateless)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores what ``state_dict`` returned."""


def format_value(key: str, value: float) -> str:
    """One logged or summary value for people: counts and rates with thousands separators
    (``23,320``), times to 0.1 s, the learning rate to 4 significant digits, everything else
    (losses, metrics) with 4 decimals (``0.9011``, ``23,320.5000``) — never ``2.332e+04``."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return f"{int(value):,}"
    if key == "learning_rate":
        return f"{value:.4g}"
    if key.endswith("_per_s"):
        return f"{value:,.0f}"
    if key.endswith("_time_s"):
        return f"{value:,.1f}"
    return f"{value:,.4f}"


def format_logs(logs: dict[str, float]) -> str:
    """``loss: 0.3012 - accuracy: 0.9011 - ...`` in Keras' style, skipping the epoch time."""
    parts = [f"{k}: {format_value(k, v)}" for k, v in logs.items() if not k.endswith("_time_s")]
    return " - ".join(parts)


# A terminal that reports 0 columns (some containers, CI ttys) would get an empty bar from tqdm.
_FALLBACK_COLUMNS = 80


def _terminal_columns(stream: Any) -> int | None:
    """The width of the terminal behind ``stream``; None when it cannot be asked."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return None


class ProgressLogger(Callback):
    """A progress bar per epoch on a terminal, and one line per epoch everywhere.

    The bar counts every dispatch (host-side, no device sync) and draws at most every
    ``refresh_s`` seconds; the running metrics are fetched from the device only every
    ``refresh_s``. After a mid-epoch resume the bar starts at the resumed step and its rate and
    ETA count only the steps run since. Output that is not a terminal stays line-based.

    Args:
      steps_per_epoch: the bar's length.
      epochs: the total shown as ``Epoch i/epochs`` (``None`` shows only ``i``).
      refresh_s: minimum time between bar redraws and metric fetches.
      stream: where to write (stderr by default, like tqdm).
    """

    _open: ClassVar[weakref.WeakSet] = weakref.WeakSet()  # for close_progress_bars

    def __init__(
        self,
        steps_per_epoch: int,
        epochs: int | None = None,
        *,
        refresh_s: float = 0.3,
        stream: Any = None,
    ):
        self.steps_per_epoch = steps_per_epoch
        self.epochs = epochs
        self.refresh_s = refresh_s
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar = None
        self._last = 0.0
        ProgressLogger._open.add(self)

    def on_epoch_begin(self, loop: TrainLoop, epoch: int) -> None:
        self._last = time.perf_counter()
        if not self.interactive:
            return
        from tqdm import tqdm

        self.close()
        total = f"/{self.epochs}" if self.epochs else ""
        columns = _terminal_columns(self.stream)
        self._bar = tqdm(
            total=self.steps_per_epoch,
            initial=loop.position,  # a resumed epoch: the rate counts this process's steps only
            desc=f"Epoch {epoch + 1}{total}",
            file=self.stream,
            leave=False,
            mininterval=self.refresh_s,
            miniters=1,  # tqdm's adaptive stride would skip redraws after a slow first step
            ncols=_FALLBACK_COLUMNS if columns == 0 else None,
            dynamic_ncols=columns != 0,
        )

    def on_dispatch_end(self, loop: TrainLoop, steps_done: int, metrics: dict[str, Any]) -> None:
        if self._bar is None:
            return
        now = time.perf_counter()
        if now - self._last >= self.refresh_s or steps_done >= self.steps_per_epoch:
            self._last = now
            self._bar.set_postfix(self._postfix(loop, metrics), refresh=False)
        self._bar.update(steps_done - self._bar.n)  # redraws when mininterval has passed

    @staticmethod
    def _postfix(loop: TrainLoop, metrics: dict[str, Any]) -> dict[str, str]:
        """The running metrics (one device fetch) and the learning rate, when there is one."""
        shown = {k: v for k, v in split_train_metrics(metrics)[0].items() if k != "grad_norm"}
        values = metrics_lib.compute_collection(shown)
        learning_rate = float(optim.current_learning_rate(loop.state.opt_state))
        if not math.isnan(learning_rate):  # a plain optax transformation injects no rate
            values["lr"] = learning_rate
        return {k: f"{v:.4g}" for k, v in values.items()}

    def close(self) -> None:
        """Closes the current bar, clearing its line, so what is written next starts at the
        beginning of a line; nothing when no bar is open."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_epoch_end(self, loop: TrainLoop, epoch: int, logs: dict[str, float]) -> None:
        self.close()
        total = f"/{self.epochs}" if self.epochs else ""
        line = f"Epoch {epoch + 1}{total} - {logs['epoch_time_s']:.1f}s - {format_logs(logs)}"
        print(line, file=self.stream, flush=True)


def close_progress_bars() -> None:
    """Closes every ``ProgressLogger`` bar still open, so a message printed next starts on a
    fresh line: call it when training stops by an exception (``KeyboardInterrupt``), which skips
    the epoch's end that would close the bar."""
    for logger in list(ProgressLogger._open):
        logger.close()


def improved(mode: str, current: float, best: float, min_delta: float = 0.0) -> bool:
    """Whether ``current`` beats ``best`` by more than ``min_delta`` (below for ``"min"``, above
    for ``"max"``): the rule of early stopping, the plateau and a sweep member's best epoch."""
    if mode == "min":
        return current < best - min_delta
    return current > best + min_delta


def _resolve_mode(mode: str, monitor: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode: expected 'auto', 'min' or 'max'; got {mode!r}")
    if mode != "auto":
        return mode
    # Keras' rule: accuracy-like metrics are maximised, everything else minimised.
    return "max" if ("acc" in monitor or monitor.endswith("auc")) else "min"


class _Monitor(Callback):
    """Shared monitoring of one logged value: the best so far and epochs without improvement."""

    def __init__(self, monitor: str, mode: str, min_delta: float, patience: int):
        if patience < 0:
            raise ValueError(f"patience: expected an integer >= 0; got {patience!r}")
        self.monitor = monitor
        self.mode = _resolve_mode(mode, monitor)
        self.min_delta = abs(min_delta)
        self.patience = patience
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = -1
        self.wait = 0

    def _current(self, logs: dict[str, float]) -> float:
        if self.monitor not in logs:
            raise KeyError(
                f"monitor: {self.monitor!r} is not in the epoch logs; available: {sorted(logs)}. "
                "Validation metrics need validation_split or validation_data."
            )
        return float(logs[self.monitor])

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.best_epoch = int(state["best_epoch"])
        self.wait = int(state["wait"])


class EarlyStopping(_Monitor):
    """Stops training when ``monitor`` has not improved for ``patience`` epochs (Keras semantics).

    An epoch improves when the value beats the best by more than ``min_delta`` (below for
    ``mode="min"``, above for ``"max"``; ``"auto"`` maximises names containing "acc").
    With ``restore_best_weights`` the parameters and BatchNorm statistics of the best epoch are put
    back when training stops early (as in Keras, a run that uses all its epochs keeps its last
    weights). They are held in host memory, not in ``state_dict``: a run resumed through
    ``Checkpoint.resume`` takes them from the checkpoint saved at the best epoch's end
    (``best_step``), which a ``Checkpointer`` with ``keep_best >= 1`` on the same monitor keeps.

    Example::

        trainer.fit(x, y, epochs=100, validation_split=0.1,
                    callbacks=[EarlyStopping("val_loss", patience=3, restore_best_weights=True)])
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        *,
        mode: str = "auto",
        min_delta: float = 0.0,
        patience: int = 0,
        restore_best_weights: bool = False,
    ):
        super().__init__(monitor, mode, min_delta, patience)
        self.restore_best_weights = restore_best_weights
        self.best_variables = None
        self.best_step = -1  # the optimizer step at the best epoch's end (its checkpoint's step)
        self.stopped_epoch = -1

    def on_epoch_end(self, loop: TrainLoop, epoch: int, logs: dict[str, float]) -> None:
        current = self._current(logs)
        if improved(self.mode, current, self.best, self.min_delta):
            self.best, self.best_epoch, self.wait = current, epoch, 0
            self.best_step = loop.global_step
            if self.restore_best_weights:
                # A host copy: the device buffers are donated to the next train step.
                self.best_variables = jax.device_get((loop.state.params, loop.state.batch_stats))
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            loop.stop_training = True

    def on_train_end(self, loop: TrainLoop, history: dict[str, list[float]]) -> None:
        stopped = self.stopped_epoch >= 0
        if stopped and self.restore_best_weights and self.best_variables is not None:
            live = (loop.state.params, loop.state.batch_stats)
            # Back where the live arrays are (replicated over the mesh, every process).
            params, batch_stats = jax.tree.map(
                lambda saved, now: sharding.put_global(np.asarray(saved), now.sharding),
                self.best_variables,
                live,
            )
            loop.state = loop.state.replace(params=params, batch_stats=batch_stats)

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "stopped_epoch": self.stopped_epoch,
            "best_step": self.best_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.stopped_epoch = int(state.get("stopped_epoch", -1))
        self.best_step = int(state.get("best_step", -1))  # absent before checkpoints held it
        self.best_variables = None  # the best epoch's, from its checkpoint: ``Checkpoint.resume``

    def best_variables_step(self) -> int | None:
        """The checkpoint step whose parameters and BatchNorm statistics this callback still
        needs (its best epoch's end, after ``load_state_dict``), or None when it needs none."""
        wanted = self.restore_best_weights and self.best_variables is None and self.best_step >= 0
        return self.best_step if wanted else None

    def set_best_variables(self, params: Any, batch_stats: Any) -> None:
        """The best epoch's parameters and BatchNorm statistics, as restored from its checkpoint."""
        self.best_variables = jax.device_get((params, batch_stats))


class ReduceLROnPlateau(_Monitor):
    """Multiplies the learning rate by ``factor`` after ``patience`` epochs without improvement.

    Keras semantics: an improvement beats the best by more than ``min_delta``; after a reduction
    ``cooldown`` epochs pass before counting again; the rate never goes below ``min_lr``. The rate
    changes through the optimizer state's ``learning_rate_scale`` (``jaxnn.optim``), a value, not
    a constant of the compiled step, so nothing recompiles; it shows in the logged learning rate
    from the next epoch on.

    Example::

        ReduceLROnPlateau("val_accuracy", mode="max", factor=0.5, patience=5, min_lr=1e-5)
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        *,
        mode: str = "auto",
        factor: float = 0.5,
        patience: int = 5,
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 1e-5,
    ):
        if not 0 < factor < 1:
            raise ValueError(f"factor: expected a float in (0, 1); got {factor!r}")
        super().__init__(monitor, mode, min_delta, patience)
        self.factor = factor
        self.cooldown = cooldown
        self.min_lr = min_lr
        self.cooldown_counter = 0

    def on_epoch_end(self, loop: TrainLoop, epoch: int, logs: dict[str, float]) -> None:
        current = self._current(logs)
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if improved(self.mode, current, self.best, self.min_delta):
            self.best, self.best_epoch, self.wait = current, epoch, 0
            return
        if self.cooldown_counter > 0:
            return
        self.wait += 1
        if self.wait < self.patience:
            return
        opt_state = loop.state.opt_state
        old_lr = float(optim.current_learning_rate(opt_state))
        if old_lr > np.float32(self.min_lr):
            scale = float(optim.get_learning_rate_scale(opt_state))
            base_lr = old_lr / scale
            new_scale = max(scale * self.factor, self.min_lr / base_lr)
            loop.state = loop.state.replace(
                opt_state=optim.set_learning_rate_scale(opt_state, new_scale)
            )
            self.cooldown_counter = self.cooldown
            self.wait = 0

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "cooldown_counter": self.cooldown_counter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.cooldown_counter = int(state["cooldown_counter"])


class CSVLogger(Callback):
    """Writes ``metrics.csv``: one row per epoch of ``loop.history`` with every logged value.

    Process 0 writes it in a multi-process run. The file is rewritten atomically from the
    history (which checkpoints hold), so a resumed run's file has each epoch exactly once.
    """

    def __init__(self, path: str):
        self.path = path

    def on_epoch_end(self, loop: TrainLoop, epoch: int, logs: dict[str, float]) -> None:
        from jaxnn.report import atomic_write_text

        if jax.process_index() != 0:
            return
        columns = ["epoch", *loop.history]
        rows = max(map(len, loop.history.values()), default=0)
        lines = [",".join(columns)]
        for i in range(rows):
            row = [repr(loop.epoch - rows + i + 1)]
            row += [repr(v[i]) if i < len(v) else "" for v in loop.history.values()]
            lines.append(",".join(row))
        atomic_write_text(self.path, "\n".join(lines) + "\n")


class TensorBoardLogger(Callback):
    """Writes TensorBoard event files (``tensorboard --logdir <logdir>`` reads them).

    One scalar per logged value and epoch, train and validation side by side under the same tag
    group (``loss/train``, ``loss/validation``), plus ``learning_rate`` and ``grad_norm``.
    """

    def __init__(self, logdir: str):
        self.logdir = logdir
        self._writer = None

    def on_train_begin(self, loop: TrainLoop) -> None:
        from tensorboardX import SummaryWriter

        if jax.process_index() == 0:  # one writer in a multi-process run
            self._writer = SummaryWriter(self.logdir)

    def on_epoch_end(self, loop: TrainLoop, epoch: int, logs: dict[str, float]) -> None:
        if self._writer is None:
            return
        for key, value in logs.items():
            if key.startswith("val_"):
                tag = f"{key[4:]}/validation"
            elif f"val_{key}" in logs:
                tag = f"{key}/train"
            else:
                tag = key
            self._writer.add_scalar(tag, value, epoch + 1)
        self._writer.flush()

    def on_train_end(self, loop: TrainLoop, history: dict[str, list[float]]) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class StopRequest:
    """A request to save and stop, made from a signal handler (SIGINT / SIGTERM).

    The ``Checkpoint`` callback arms it while training; it then finishes the step in flight,
    saves and raises ``KeyboardInterrupt``. Before that (loading data, compiling) there is nothing
    to save, so ``request`` raises ``KeyboardInterrupt`` at once.
    """

    def __init__(self) -> None:
        self.armed = False
        self.requested = False

    def request(self) -> None:
        """Asks for a save and a stop after the step in flight (safe from a signal handler)."""
        if not self.armed:
            raise KeyboardInterrupt
        self.requested = True


class Checkpoint(Callback):
    """Saves the whole training state at epoch ends and every ``every_steps`` steps, and saves
    and stops when a stop was requested (``StopRequest``, set from SIGINT / SIGTERM).

    What a checkpoint holds is ``jaxnn.checkpoint.save_training``'s business: the train state,
    a partial epoch's metrics and position, the epoch, the history and the state of the
    ``stateful`` callbacks. Nothing is saved when the loss went NaN/Inf: the last good checkpoint
    stays the latest.

    Args:
      checkpointer: a ``jaxnn.checkpoint.Checkpointer``.
      stateful: name -> callback whose ``state_dict`` is saved (early stopping, plateau, ...).
      every_steps: also save every this many optimizer steps (0: epoch ends only).
      stop: the ``StopRequest`` a signal handler sets (default: one of its own).
    """

    def __init__(
        self,
        checkpointer: checkpoint_lib.Checkpointer,
        stateful: Mapping[str, Callback],
        every_steps: int = 0,
        stop: StopRequest | None = None,
    ):
        self.checkpointer = checkpointer
        self.stateful = dict(stateful)
        self.every_steps = every_steps
        self.stop = stop if stop is not None else StopRequest()
        self._last_saved_step = 0

    def request_stop(self) -> None:
        """Asks for a save and a stop after the step in flight (safe from a signal handler)."""
        self.stop.requested = True

    def resume(self, state: Any, metrics: Any) -> checkpoint_lib.TrainingSnapshot | None:
        """The newest readable checkpoint (``jaxnn.checkpoint.restore_training``, into the
        structure of ``state`` and ``metrics``), with the stateful callbacks' states put back;
        None when there is none. Hand it to ``Trainer.restore``."""
        from jaxnn.checkpoint import restore_training

        snapshot = restore_training(self.checkpointer, state, metrics)
        if snapshot is not None:
            for name, callback_state in snapshot.callbacks.items():
                if name in self.stateful:
                    self.stateful[name].load_state_dict(callback_state)
            self._restore_best_variables(snapshot, metrics)
        return snapshot

    def _restore_best_variables(self, snapshot: Any, metrics: Any) -> None:
        """Early stopping's best weights, from the checkpoint of its best epoch's end: a resumed
        run that stops early then ends with the same weights as one never interrupted."""
        for name, callback in self.stateful.items():
            step = callback.best_variables_step() if isinstance(callback, EarlyStopping) else None
            if step is None:
                continue
            if step == snapshot.step and not snapshot.position:
                best = snapshot.state
            elif step in self.checkpointer.all_steps():
                template = {"train_state": snapshot.state, "metrics": metrics}
                best = self.checkpointer.restore(template, step)[0]["train_state"]
            else:
                warnings.warn(
                    f"{name}: the checkpoint of its best epoch (step {step}) is no longer in "
                    f"{self.checkpointer.directory}, so an early stop keeps the last weights, "
                    "not the best; keep it with Checkpointer(keep_best=1, best_metric=<the "
                    "monitor>)",
                    stacklevel=3,
                )
                continue
            callback.set_best_variables(best.params, best.batch_stats)

    def save(self, loop: TrainLoop, logs: dict[str, float] | None = None) -> None:
        """Saves the loop now (mid-epoch metrics checked for NaN/Inf first)."""
        from jaxnn.checkpoint import save_training

        if loop.position:
            check_finite(loop.metrics, loop.epoch)  # never checkpoint a diverged state
        save_training(self.checkpointer, loop, self.stateful, metrics=logs)
        self._last_saved_step = loop.global_step

    def _stop_if_requested(self) -> None:
        if self.stop.requested:
            self.checkpointer.wait()
            raise KeyboardInterrupt("stop requested; checkpoint saved")

    def on_train_begin(self, loop: TrainLoop) -> None:
        # A resumed run starts at the step it restored, which is on disk; a new one at step 0,
        # so the first step checkpoint falls once every_steps steps are done.
        self._last_saved_step = loop.global_step
        self.stop.armed = True

    def on_dispatch_end(self, loop: TrainLoop, steps_done: int, metrics: dict[str, Any]) -> None:
        # The epoch's end saves its last step itself, with the epoch's logs and callback states
        # (a stop requested now is honoured there), so the same step is never saved twice.
        if steps_done == loop.steps_per_epoch:
            return
        every = self.every_steps
        due = every and loop.global_step // every > self._last_saved_step // every
        if self.stop.requested or due:
            self.save(loop)
        self._stop_if_requested()

    def on_epoch_end(self, loop: TrainLoop, epoch: int, logs: dict[str, float]) -> None:
        self.save(loop, logs)
        self._stop_if_requested()

    def on_train_end(self, loop: TrainLoop, history: dict[str, list[float]]) -> None:
        self.stop.armed = False
        self.checkpointer.wait()
