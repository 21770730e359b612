"""``Trainer``: Keras-style ``fit`` / ``evaluate`` / ``predict`` over the pure ``jaxnn.step``s.

The whole dataset is placed on the device once (when it fits under ``device_data_limit_bytes``;
see ``jaxnn.feeding``); each epoch draws a permutation seeded by ``fold_in(data_key, epoch)`` and
feeds index arrays to the jitted train function, ``steps_per_dispatch`` optimizer steps per call.
A last partial batch is padded and its padding masked (weight 0), so every example counts exactly
once. Metrics accumulate on device and are fetched only when something is shown or at an epoch's
end. Callbacks see the ``TrainLoop`` (``trainer.loop``), never the Trainer.

Example::

    trainer = jaxnn.Trainer(jaxnn.MLP(), loss="sparse_categorical_crossentropy",
                            optimizer=optax.adam(1e-3), metrics=["accuracy"], seed=0)
    history = trainer.fit(x_train, y_train, epochs=5, batch_size=128, validation_split=0.1)
    print(trainer.evaluate(x_test, y_test))        # {'loss': ..., 'accuracy': ...}
    probabilities = trainer.predict(x_test)
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax

from jaxnn import feeding, inputs, optim, report
from jaxnn import losses as losses_lib
from jaxnn import metrics as metrics_lib
from jaxnn import sharding as sharding_lib
from jaxnn.callbacks import Callback, ProgressLogger
from jaxnn.feeding import Fed, Feeder
from jaxnn.loop import TrainLoop, evaluate_dispatches, train_dispatches
from jaxnn.precompile import Precompiler, abstract
from jaxnn.state import TrainState, init_lowered, rng_streams
from jaxnn.step import (
    Steps,
    TrainingDivergedError,
    check_finite,
    default_compiler_options,
    make_steps,
    split_train_metrics,
)
from jaxnn.utils import ceil_div, round_up

__all__ = ["Trainer", "TrainingDivergedError", "check_finite"]

OptimizerSpec = optax.GradientTransformation | str | Mapping[str, Any]

# Default evaluation/predict batch: large batches amortise dispatch; memory stays modest.
_EVAL_BATCH = 1024


def _loop_attribute(name: str, doc: str) -> property:
    """A Trainer attribute kept in its ``TrainLoop`` (the names callbacks and users know)."""

    def get(self: Trainer) -> Any:
        return getattr(self.loop, name)

    def set_(self: Trainer, value: Any) -> None:
        setattr(self.loop, name, value)

    return property(get, set_, doc=doc)


def _variables_property() -> property:
    """``Trainer.variables``: read, and assigned (e.g. a checkpoint's) without touching the
    optimizer state; the checks and the placement are ``jaxnn.inputs.with_variables``'s."""

    def get(self: Trainer) -> dict[str, Any]:
        if self.state is None:
            raise RuntimeError("The model has no variables yet: call fit() first.")
        return self.state.variables

    def set_(self: Trainer, variables: Mapping[str, Any]) -> None:
        self.state = inputs.with_variables(self.state, variables)

    doc = """The model variables (params and batch_stats) for ``model.apply``; assignable.

    Assigning ``{"params": ..., "batch_stats": ...}`` (``batch_stats`` may be left out when the
    model has none) replaces the state's params and batch_stats, each leaf checked against the
    live one (structure, shape, dtype) and placed with its sharding; the optimizer state and the
    step count stay. Needs the state: call ``initialize()`` or ``fit()`` first.

    Example::

        trainer.initialize(x[:1], steps_per_epoch=1)
        trainer.variables = jaxnn.checkpoint.restore(workdir, "best")
    """
    return property(get, set_, doc=doc)


def _transformation(optimizer: OptimizerSpec, steps_per_epoch: int, epochs: int | None):
    """The optax transformation: the user's own, or ``jaxnn.optim.build``'s for a config."""
    if isinstance(optimizer, optax.GradientTransformation):
        return optimizer
    return optim.build(optimizer, steps_per_epoch=steps_per_epoch, epochs=epochs)


def _lengths_read(optimizer: OptimizerSpec, steps_per_epoch: int, epochs: int | None) -> tuple:
    """What ``_transformation`` reads of the run's lengths: while it stays the same, so do the
    transformation and the compiled steps (a user's own transformation reads none)."""
    if isinstance(optimizer, optax.GradientTransformation):
        return ()
    return optim.run_lengths_read(optimizer, steps_per_epoch=steps_per_epoch, epochs=epochs)


def _learning_rate_logs(opt_state: Any) -> dict[str, float]:
    """``{"learning_rate": ...}`` for an epoch's logs; empty when the optimizer injects no rate
    (a plain optax transformation), rather than a column of NaN."""
    learning_rate = float(optim.current_learning_rate(opt_state))
    return {} if math.isnan(learning_rate) else {"learning_rate": learning_rate}


def _ignore(state: Any) -> None:
    """``Trainer._build``'s default ``on_state``: nothing to start beside the initialisation."""


def _make_trainer_steps(trainer: Trainer, tx: optax.GradientTransformation) -> Steps:
    """``make_steps`` with the Trainer's model, loss, metrics and settings."""
    return make_steps(
        trainer.model,
        trainer.loss,
        tx,
        trainer.metric_names,
        augment=trainer.augment,
        mesh=trainer.mesh,
        compiler_options=trainer.compiler_options,
    )


def _mask_last_batch(total: int, batch_size: int, n: int, state: Any) -> bool:
    """Whether an epoch's last batch runs the masked train variant: only it can hold padding,
    and only BatchNorm needs telling (the loss and metrics weigh every example anyway), so it
    gets a compiled variant of its own just for that. ``state``: arrays or abstract values."""
    return total * batch_size > n and bool(state.batch_stats)


def _eval_layout(trainer: Trainer, data: Fed, batch_size: int, params: Any) -> tuple[int, ...]:
    """``(batch size, batches, batches per dispatch)`` of an evaluation of ``data``: whole
    dispatches (weight-0 batches fill the last one), so one compiled evaluate serves each size;
    a scan where it pays (MLPs), one batch per call for convolutional models and streams."""
    batch_size = trainer._feeder.eval_batch_size(batch_size, data.n)
    num_batches = ceil_div(data.n, batch_size)
    k = (
        feeding.dispatch_size(trainer.steps_per_dispatch, params, num_batches)
        if data.resident
        else 1
    )
    return batch_size, round_up(num_batches, k), k


def _precompile_first_calls(
    trainer: Trainer, train: Fed, val: Fed | None, batch_size: int, total: int, state: Any
) -> None:
    """Starts compiling the first train dispatch of ``fit`` (and the validation's evaluate) in
    the background, for ``state`` (arrays or their abstract values): exactly the arguments
    ``_train_epoch`` and ``_evaluate_fed`` will pass when the data is resident on the devices.
    Streamed data and multi-process runs compile at the first call, as before."""
    if trainer._feeder.multiprocess or not train.resident:
        return
    state, steps, background = abstract(state), trainer._steps, trainer._precompiler
    k = feeding.dispatch_size(trainer.steps_per_dispatch, state.params, total)
    masked = total <= k and _mask_last_batch(total, batch_size, train.n, state)

    def train_args():
        x, y, idx, weight, start = train.abstract_inputs(round_up(total, k), batch_size)
        metrics = trainer.empty_train_metrics()
        return (state, metrics, x, y, idx, weight, start, min(k, total)), {"k": k, "masked": masked}

    background.start("train", steps.train, train_args)
    if val is None or not val.resident:
        return
    eval_batch, num_batches, eval_k = _eval_layout(
        trainer, val, max(batch_size, _EVAL_BATCH), state.params
    )

    def evaluate_args():
        metrics = sharding_lib.replicate(steps.empty_eval_metrics(), trainer.mesh)
        inputs = val.abstract_inputs(num_batches, eval_batch)
        return (state.variables, metrics, *inputs), {"k": eval_k}

    background.defer("evaluate", steps.evaluate, evaluate_args)


def _require_state(state: TrainState | None, what: str) -> None:
    if state is None:
        raise RuntimeError(f"{what}() needs a trained model: call fit() first.")


class Trainer:
    """Trains a Flax Linen model with an optax optimizer, Keras-style.

    Args:
      model: a Linen module returning logits, called as ``model(x, train=..., mask=...)`` (the
        ``jaxnn.models`` do; ``mask`` keeps padded examples out of BatchNorm statistics).
      loss: a name from ``jaxnn.losses`` or a ``jaxnn.losses.Loss``.
      optimizer: an ``optax.GradientTransformation``, an optimizer name (``"adam"``) or a config
        dict for ``jaxnn.optim.build`` (schedules in epochs, L2, clipping, ...).
      metrics: names from ``jaxnn.metrics`` that fit the loss (the mean loss is always
        reported); default the task's usual one: ``accuracy``, ``binary_accuracy`` or ``mae``.
      seed: the one seed every random stream (init, dropout, data order, augmentation) derives from.
      augment: optional ``(key, x_batch) -> x_batch`` applied to training batches on device.
      steps_per_dispatch: optimizer steps per compiled call; ``"auto"`` picks by model (1 for
        convolutional models, where XLA CPU runs scanned steps slower, 32 otherwise).
      device_data_limit_bytes: datasets larger than this stay on the host and are streamed
        batch-chunk by batch-chunk.
      mesh: the devices to train on (``jaxnn.sharding.make_mesh``); default every device on a
        ``data`` axis. Batches are split over it (``batch_size`` must divide evenly), the state
        is replicated. In a multi-process run each process passes only its own rows of every
        dataset (``x[jaxnn.sharding.process_rows(len(x), mesh)]``); ``predict`` takes the same
        ``x`` on every process and returns every output everywhere.
      compiler_options: XLA options for the train/evaluate/predict compilations; default
        ``jaxnn.step.default_compiler_options`` for the mesh's platform (on a multi-core CPU,
        convolutions through XLA's multi-threaded kernels); ``{}`` compiles with XLA's defaults.
    """

    state = _loop_attribute("state", "The train state (``TrainLoop.state``).")
    epoch = _loop_attribute("epoch", "Epochs completed over all ``fit`` calls.")
    global_step = _loop_attribute("global_step", "Optimizer steps so far, counted on the host.")
    position = _loop_attribute("position", "Steps done inside the current epoch.")
    steps_per_epoch = _loop_attribute("steps_per_epoch", "Steps per epoch of the current fit.")
    stop_training = _loop_attribute("stop_training", "Set True to stop after this epoch.")
    variables = _variables_property()

    def __init__(
        self,
        model: nn.Module,
        *,
        loss: str | losses_lib.Loss = "sparse_categorical_crossentropy",
        optimizer: OptimizerSpec = "adam",
        metrics: Sequence[str] | None = None,
        seed: int = 0,
        augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
        steps_per_dispatch: int | str = "auto",
        device_data_limit_bytes: int = 2 * 1024**3,
        mesh: jax.sharding.Mesh | None = None,
        compiler_options: Mapping[str, str] | None = None,
    ):
        self.loss = losses_lib.get(loss)
        self._inputs = inputs.ModelInputs(model, self.loss)
        self.model = model
        self.metric_names = inputs.check_metric_names(metrics, self.loss)
        self.optimizer = inputs.check_optimizer(optimizer)
        self.seed = inputs.check_int("seed", seed, 0)
        self.augment = augment
        self.steps_per_dispatch = inputs.check_steps_per_dispatch(steps_per_dispatch)
        self.mesh = inputs.check_mesh(mesh) or sharding_lib.make_mesh()
        self.device_data_limit_bytes = device_data_limit_bytes
        self._feeder = Feeder(self.mesh, device_data_limit_bytes)
        compiler_options = inputs.check_compiler_options(compiler_options)
        if compiler_options is None:
            compiler_options = default_compiler_options(self.mesh.devices.flat[0].platform)
        self.compiler_options = dict(compiler_options)
        self.loop = TrainLoop()
        self._resume_pending = False  # the loop's position and metrics continue an epoch
        self._steps: Steps | None = None
        self._built_for: tuple[int | None, ...] | None = None
        self._precompiler = Precompiler()

    # ----------------------------------------------------------------------------- state
    def initialize(
        self,
        x: Any,
        *,
        batch_size: int | None = None,
        epochs: int | None = None,
        drop_remainder: bool = False,
        steps_per_epoch: int | None = None,
    ) -> TrainState:
        """Builds the optimizer, the train state and the compiled steps without training.

        ``fit`` does this itself; call it to restore a checkpoint before ``fit``. Pass the training
        inputs ``x`` (this process's rows) and ``batch_size``: the schedules are built from the
        epoch's length, computed as ``fit`` does (or pass ``steps_per_epoch`` and any ``x`` of the
        right example shape), and ``epochs``, the run's length. Rebuilt (and so compiled again) only
        when what the optimizer's schedule reads of these changes (``optim.run_lengths_read``).
        """
        x = inputs.as_array("x", x)
        self._inputs.check_x("x", x)
        if steps_per_epoch is None:
            batch_size = inputs.check_int("batch_size", batch_size, 1)
            n = self._feeder.global_count(len(x))
            steps_per_epoch = feeding.steps_per_epoch(n, batch_size, drop_remainder)
        self._build(steps_per_epoch, epochs)
        return self.state

    def _build(self, steps_per_epoch: int, epochs: int | None, on_state=_ignore) -> None:
        """``initialize``'s work; ``on_state(state)`` gets the state (its abstract values while
        a new one's initialisation compiles) to start compiling the steps beside it."""
        # A later fit extends the run (epochs grows): the steps are rebuilt, and so compiled
        # again, only when the optimizer's schedule reads the run's length.
        built_for = _lengths_read(self.optimizer, steps_per_epoch, epochs)
        if self._steps is None or self._built_for != built_for:
            tx = _transformation(self.optimizer, steps_per_epoch, epochs)
            self._steps, self._built_for = _make_trainer_steps(self, tx), built_for
            if self.state is None:
                shape = self._inputs.input_shape
                lowered = init_lowered(self.model, tx, shape, seed=self.seed, mesh=self.mesh)
                on_state(lowered.out_info)
                self.state = lowered.compile()()
                return
        on_state(self.state)

    def dispatch_size(self, num_steps: int) -> int:
        """Optimizer steps per compiled call for an epoch of ``num_steps`` steps (resolves
        ``steps_per_dispatch="auto"``: 1 for convolutional models, else up to 32)."""
        return feeding.dispatch_size(self.steps_per_dispatch, self.state.params, num_steps)

    def empty_train_metrics(self) -> dict[str, Any]:
        """An empty train accumulator replicated over the mesh (a mid-epoch restore's template)."""
        return sharding_lib.replicate(self._steps.empty_train_metrics(), self.mesh)

    def resume_mid_epoch(self, position: int, metrics: dict[str, Any]) -> None:
        """Continues the current epoch (``self.epoch``) at step ``position`` with the metrics
        accumulated so far; the epoch's example order is a function of (seed, epoch), so the
        remaining batches are exactly those an uninterrupted run would see."""
        self.loop.position = inputs.check_int("position", position, 0)
        self.loop.metrics = metrics
        self._resume_pending = True

    def restore(self, snapshot: Any) -> None:
        """Puts a ``jaxnn.checkpoint.restore_training`` snapshot back: state, epochs and steps
        done, history, a partial epoch's position."""
        self.state = snapshot.state
        self.loop.epoch = snapshot.epoch
        self.loop.global_step = snapshot.step
        self.loop.history = {key: list(values) for key, values in snapshot.history.items()}
        if snapshot.position:
            self.resume_mid_epoch(snapshot.position, snapshot.metrics)

    # ----------------------------------------------------------------------------- fit
    def fit(
        self,
        x: Any,
        y: Any,
        *,
        epochs: int = 1,
        batch_size: int = 32,
        validation_split: float = 0.0,
        validation_data: tuple[Any, Any] | None = None,
        shuffle: bool = True,
        drop_remainder: bool = False,
        callbacks: Sequence[Callback] = (),
        verbose: int = 1,
    ) -> dict[str, list[float]]:
        """Trains for ``epochs`` more epochs and returns the history of this call.

        Args:
          x, y: training inputs and targets (numpy-compatible, same length). On one CPU device
            a float32 ``x`` in 64-byte-aligned memory (as ``jaxnn.data`` returns it) is trained
            on in place, not copied: do not modify it from a callback during ``fit``.
          epochs: epochs to run (continuing from earlier ``fit`` calls).
          batch_size: examples per step; ``len(x)`` gives batch gradient descent, 1 gives SGD.
          validation_split: fraction in [0, 1) of (x, y) held out for validation, chosen by a
            permutation derived from ``seed`` (``jaxnn.data.train_validation_split``; not the
            last examples as in Keras).
          validation_data: ``(x_val, y_val)``; overrides ``validation_split``.
          shuffle: draw a new example order every epoch (from ``fold_in(data_key, epoch)``).
          drop_remainder: drop the last partial batch instead of padding and masking it.
          callbacks: ``jaxnn.callbacks.Callback`` objects (early stopping, plateau, ...).
          verbose: 0 silent, 1 a progress bar (line-based when not a terminal) and a line per
            epoch.

        Returns:
          A dict of lists, one entry per epoch: ``loss``, each metric, ``grad_norm``,
          ``learning_rate``, ``train_time_s``, ``epoch_time_s`` and, with validation,
          ``val_loss`` and ``val_<metric>``. ``trainer.loop.history`` holds every epoch's.
        """
        epochs = inputs.check_int("epochs", epochs, 0)
        batch_size = inputs.check_int("batch_size", batch_size, 1)
        callbacks = inputs.check_callbacks(callbacks)
        (x, y), validation = inputs.training_arrays(
            self._inputs, x, y, validation_split, validation_data, seed=self.seed,
            multiprocess=self._feeder.multiprocess,
        )  # fmt: skip
        sharding_lib.check_batch_size("batch_size", batch_size, self.mesh)
        train = self._feeder.feed(x, y)
        val = validation and self._feeder.feed(*validation, prefix="validation_data ")
        batch_size = self._feeder.train_batch_size(batch_size, train.n)
        total = feeding.steps_per_epoch(train.n, batch_size, drop_remainder)
        # The steps compile in the background while the state initialises (jaxnn.precompile).
        warm = functools.partial(_precompile_first_calls, self, train, val, batch_size, total)
        self._build(total, self.epoch + epochs, on_state=warm)
        self.loop.steps_per_epoch = total
        if verbose:
            callbacks.append(ProgressLogger(total, self.epoch + epochs))
        return self._fit_epochs(epochs, train, val, batch_size, shuffle, callbacks)

    def _fit_epochs(self, epochs, train, val, batch_size, shuffle, callbacks) -> dict:
        """The epoch loop with its callback hooks; returns this call's part of the history."""
        loop = self.loop
        done_before = {key: len(values) for key, values in loop.history.items()}
        loop.stop_training = False
        for callback in callbacks:
            callback.on_train_begin(loop)
        for _ in range(epochs):
            epoch = loop.epoch
            for callback in callbacks:
                callback.on_epoch_begin(loop, epoch)
            logs = self._run_epoch(train, val, batch_size, shuffle, callbacks)
            loop.record(logs)
            for callback in callbacks:
                callback.on_epoch_end(loop, epoch, logs)
            if loop.stop_training:
                break
        history = {k: v[done_before.get(k, 0) :] for k, v in loop.history.items()}
        for callback in callbacks:
            callback.on_train_end(loop, history)
        return history

    def _run_epoch(self, train: Fed, val: Fed | None, batch_size, shuffle, callbacks) -> dict:
        start = time.perf_counter()
        logs = self._train_epoch(train, batch_size, shuffle, callbacks)
        logs["train_time_s"] = time.perf_counter() - start  # the metrics fetch waited for it
        if val is not None:
            val_logs = self._evaluate_fed(val, max(batch_size, _EVAL_BATCH))
            logs.update({f"val_{k}": v for k, v in val_logs.items()})
        logs.update(_learning_rate_logs(self.state.opt_state))
        logs["epoch_time_s"] = time.perf_counter() - start
        return logs

    def _train_epoch(self, train: Fed, batch_size: int, shuffle: bool, callbacks) -> dict:
        loop, total = self.loop, self.loop.steps_per_epoch
        k = self.dispatch_size(total)
        # Rounded up to whole dispatches: the last one skips the steps past the epoch's end, so
        # one compiled function serves the whole epoch.
        key = jax.random.fold_in(rng_streams(self.seed)["data"], loop.epoch) if shuffle else None
        plan = self._feeder.plan(train.n, batch_size, round_up(total, k), shuffle_key=key)
        if self._resume_pending:
            metrics, done = loop.metrics, loop.position
        else:
            metrics, done = self.empty_train_metrics(), 0
        self._resume_pending = False
        loop.position = done
        loop.global_step = int(self.state.step)  # one sync per epoch; then counted on the host
        padded = _mask_last_batch(total, batch_size, train.n, self.state)
        self._precompiler.wait("train")
        metrics = train_dispatches(
            loop, self._steps.train, train, plan, k, metrics, mask_last=padded, callbacks=callbacks
        )
        check_finite(metrics, loop.epoch)  # before anything is logged or checkpointed
        loop.position, loop.metrics = 0, self.empty_train_metrics()
        return metrics_lib.compute_collection(split_train_metrics(metrics)[0])

    # ----------------------------------------------------------------------------- eval
    def _evaluate_fed(self, data: Fed, batch_size: int) -> dict[str, float]:
        batch_size, num_batches, k = _eval_layout(self, data, batch_size, self.state.params)
        plan = self._feeder.plan(data.n, batch_size, num_batches)
        metrics = sharding_lib.replicate(self._steps.empty_eval_metrics(), self.mesh)
        self._precompiler.wait("evaluate")
        metrics = evaluate_dispatches(self._steps.evaluate, self.variables, metrics, data, plan, k)
        return metrics_lib.compute_collection(metrics)

    def summary(self) -> str:
        """Prints and returns the model's table (``jaxnn.report.model_summary``): each layer's
        output shape, parameters and FLOPs; the totals in bytes. Needs ``initialize`` or ``fit``
        first (RuntimeError from ``variables`` otherwise)."""
        table = report.model_summary(self.model, self.variables, self._inputs.input_shape)
        print(table)
        return table

    def evaluate(self, x: Any, y: Any, *, batch_size: int = _EVAL_BATCH) -> dict[str, float]:
        """Returns the mean loss and metrics over (x, y), every example counted exactly once."""
        _require_state(self.state, "evaluate")
        batch_size = inputs.check_int("batch_size", batch_size, 1)
        x, y = self._inputs.prepare_xy(x, y)
        return self._evaluate_fed(self._feeder.feed(x, y), batch_size)

    def predict(self, x: Any, *, batch_size: int = _EVAL_BATCH) -> np.ndarray:
        """Returns the model's outputs for x as numpy: probabilities for classifiers (softmax or
        sigmoid, by the loss), values for regression."""
        _require_state(self.state, "predict")
        batch_size = inputs.check_int("batch_size", batch_size, 1)
        data = self._feeder.host(self._inputs.prepare_x(x))
        batch_size = self._feeder.eval_batch_size(batch_size, data.n)
        plan = self._feeder.plan(data.n, batch_size, ceil_div(data.n, batch_size))
        variables = self.variables
        outputs = [
            self._steps.predict(variables, data.rows(plan, i, 1)[0])
            for i in range(plan.idx.shape[0])
        ]
        return np.concatenate([np.asarray(o) for o in outputs])[: data.n]
