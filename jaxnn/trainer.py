"""``Trainer``: Keras-style ``fit`` / ``evaluate`` / ``predict`` over the pure ``jaxnn.step``s.

The whole dataset is placed on the device once (when it fits under ``device_data_limit_bytes``);
each epoch draws a permutation seeded by ``fold_in(data_key, epoch)`` and feeds index
arrays to the jitted train function, ``steps_per_dispatch`` optimizer steps per call. A last
partial batch is padded and its padding masked (weight 0), so every example counts exactly once.
Metrics accumulate on device and are fetched only when something is shown or at an epoch's end.

Example::

    trainer = jaxnn.Trainer(jaxnn.MLP(), loss="sparse_categorical_crossentropy",
                            optimizer=optax.adam(1e-3), metrics=["accuracy"], seed=0)
    history = trainer.fit(x_train, y_train, epochs=5, batch_size=128, validation_split=0.1)
    print(trainer.evaluate(x_test, y_test))        # {'loss': ..., 'accuracy': ...}
    probabilities = trainer.predict(x_test)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnn import losses as losses_lib
from jaxnn import metrics as metrics_lib
from jaxnn import optim
from jaxnn import sharding as sharding_lib
from jaxnn.callbacks import Callback, ProgressLogger
from jaxnn.state import TrainState, create_train_state, rng_streams
from jaxnn.step import Steps, default_compiler_options, make_steps, split_train_metrics

__all__ = ["Trainer", "TrainingDivergedError", "check_finite"]

OptimizerSpec = optax.GradientTransformation | str | Mapping[str, Any]

# Default evaluation/predict batch: large batches amortise dispatch; memory stays modest.
_EVAL_BATCH = 1024
# XLA CPU compile options for the one-off state initialisation (see Trainer.initialize).
_INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or Inf."""


def check_finite(acc: dict[str, Any], epoch: int) -> None:
    """Raises ``TrainingDivergedError`` naming the epoch and step of the first NaN/Inf loss.

    Called before anything is logged or checkpointed, so no broken state is ever saved.
    """
    _, count, first = split_train_metrics(acc)
    if count:
        raise TrainingDivergedError(
            f"Training diverged in epoch {epoch + 1} at global step {first}: the loss was NaN or "
            f"Inf in {count} step(s). Lower the learning rate, add gradient clipping "
            "(optimizer clip_norm) or check the inputs."
        )


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}; got {value!r}")
    return int(value)


def _as_array(name: str, value: Any) -> np.ndarray:
    try:
        array = np.asarray(value)
    except Exception as error:  # noqa: BLE001 - re-raised with the argument's name
        raise ValueError(f"{name}: expected an array; got {type(value).__name__}") from error
    if array.ndim == 0:
        raise ValueError(f"{name}: expected an array with a leading example axis; got a scalar")
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_
    ):
        raise ValueError(f"{name}: expected a numeric array; got dtype {array.dtype}")
    return array


def _check_finite(name: str, array: np.ndarray) -> None:
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0]
        raise ValueError(
            f"{name}: expected finite values; got NaN or Inf (first at index {tuple(bad)})"
        )


def _padded_batches(
    order: np.ndarray, batch_size: int, num_batches: int
) -> tuple[np.ndarray, np.ndarray]:
    """Index and weight arrays of shape (num_batches, batch_size); padding has weight 0."""
    n = order.shape[0]
    total = num_batches * batch_size
    weight = (np.arange(total) < n).astype(np.float32)
    idx = np.zeros((total,), np.int32)
    idx[: min(n, total)] = order[:total]
    return idx.reshape(num_batches, batch_size), weight.reshape(num_batches, batch_size)


class Trainer:
    """Trains a Flax Linen model with an optax optimizer, Keras-style.

    Args:
      model: a Linen module returning logits, called as ``model(x, train=..., mask=...)`` (the
        ``jaxnn.models`` do; ``mask`` keeps padded examples out of BatchNorm statistics).
      loss: a name from ``jaxnn.losses`` or a ``jaxnn.losses.Loss``.
      optimizer: an ``optax.GradientTransformation``, an optimizer name (``"adam"``) or a config
        dict for ``jaxnn.optim.build`` (schedules in epochs, L2, clipping, ...).
      metrics: names from ``jaxnn.metrics`` (the mean loss is always reported).
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
        convolutions through XLA's multi-threaded kernels: the benchmark CNN's step took 52-57 ms
        instead of 71-77 ms on the 2-core VM); ``{}`` compiles with XLA's defaults.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        loss: str | losses_lib.Loss = "sparse_categorical_crossentropy",
        optimizer: OptimizerSpec = "adam",
        metrics: Sequence[str] = ("accuracy",),
        seed: int = 0,
        augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
        steps_per_dispatch: int | str = "auto",
        device_data_limit_bytes: int = 2 * 1024**3,
        mesh: jax.sharding.Mesh | None = None,
        compiler_options: Mapping[str, str] | None = None,
    ):
        if not isinstance(model, nn.Module):
            raise ValueError(f"model: expected a flax.linen Module; got {type(model).__name__}")
        self.model = model
        self.loss = losses_lib.get(loss)
        if isinstance(metrics, str):
            metrics = [metrics]
        for name in metrics:
            metrics_lib.get(name)  # raises, listing the valid names
        self.metric_names = tuple(metrics)
        if not isinstance(optimizer, optax.GradientTransformation):
            optimizer = {"name": optimizer} if isinstance(optimizer, str) else dict(optimizer)
            optim.check_config(optimizer)  # names, keys and types, before anything is built
        self.optimizer = optimizer
        self.seed = _check_int("seed", seed, 0)
        self.augment = augment
        if steps_per_dispatch != "auto":
            _check_int("steps_per_dispatch", steps_per_dispatch, 1)
        self.steps_per_dispatch = steps_per_dispatch
        self.device_data_limit_bytes = device_data_limit_bytes
        if mesh is not None and not isinstance(mesh, jax.sharding.Mesh):
            raise ValueError(f"mesh: expected a jax.sharding.Mesh; got {type(mesh).__name__}")
        self.mesh = sharding_lib.make_mesh() if mesh is None else mesh
        self._multiprocess = sharding_lib.is_multiprocess(self.mesh)
        self._platform = self.mesh.devices.flat[0].platform
        if compiler_options is not None and not isinstance(compiler_options, Mapping):
            raise ValueError(
                "compiler_options: expected a dict of XLA option names to values; got "
                f"{type(compiler_options).__name__}"
            )
        self.compiler_options = (
            default_compiler_options(self._platform)
            if compiler_options is None
            else dict(compiler_options)
        )
        self.state: TrainState | None = None
        self.epoch = 0  # epochs completed over all fit calls
        # Steps done inside the current epoch and its metric accumulator: a checkpoint taken
        # mid-epoch stores both, and ``resume_mid_epoch`` puts them back for an exact resume.
        self.position = 0
        self.steps_per_epoch = 0  # of the current fit
        self.global_step = 0  # optimizer steps so far (= state.step), kept on the host
        self._resume_acc: dict[str, Any] | None = None
        self.stop_training = False
        self._steps: Steps | None = None
        self._built_for: tuple[int, int | None] | None = None
        self._input_shape: tuple[int, ...] | None = None
        self._num_outputs: int | None = None

    # ----------------------------------------------------------------------------- inputs
    def _check_input(self, name: str, x: np.ndarray) -> None:
        """Checks x against the model before anything compiles (abstract evaluation only)."""
        _check_finite(name, x)
        if self._input_shape is not None:
            if tuple(x.shape[1:]) != self._input_shape:
                raise ValueError(
                    f"{name}: expected examples of shape {self._input_shape} (what the model was "
                    f"built with); got {tuple(x.shape[1:])}"
                )
            return
        sample = jax.ShapeDtypeStruct(x.shape, jnp.float32)
        key = jax.random.key(0)
        try:
            out = jax.eval_shape(lambda s: self.model.init_with_output(key, s, train=False), sample)
        except ValueError as error:
            if str(error).startswith(f"{name}:"):
                raise
            raise ValueError(
                f"{name}: examples of shape {tuple(x.shape[1:])} do not fit the model: {error}"
            ) from None
        except TypeError as error:
            raise ValueError(
                f"{name}: examples of shape {tuple(x.shape[1:])} do not fit the model: {error}"
            ) from None
        logits = out[0]
        if logits.ndim != 2 or logits.shape[0] != len(x):
            raise ValueError(
                f"model: expected outputs of shape (batch, num_outputs); got {logits.shape}"
            )
        self._input_shape = tuple(x.shape[1:])
        self._num_outputs = int(logits.shape[1])

    def _prepare_xy(self, x: Any, y: Any, prefix: str = "") -> tuple[np.ndarray, np.ndarray]:
        x = _as_array(f"{prefix}x", x)
        y = _as_array(f"{prefix}y", y)
        if len(x) != len(y):
            raise ValueError(
                f"{prefix}x and {prefix}y: expected the same number of examples; got "
                f"{len(x)} in {prefix}x and {len(y)} in {prefix}y"
            )
        if len(x) == 0:
            raise ValueError(f"{prefix}x: expected at least one example; got 0")
        self._check_input(f"{prefix}x", x)
        losses_lib.check_targets(self.loss, y, self._num_outputs, argument=f"{prefix}y")
        if x.dtype != np.float32:
            # Into aligned memory, which a CPU device then uses without another copy.
            converted = sharding_lib.aligned_empty(x.shape, np.float32)
            np.copyto(converted, x, casting="unsafe")
            x = converted
        return x, self._targets_dtype(y)

    def _targets_dtype(self, y: np.ndarray) -> np.ndarray:
        if self.loss.target_kind == "int_labels":
            return y.reshape(len(y)).astype(np.int32)
        return y.astype(np.float32, copy=False)

    def _global_count(self, local: int) -> int:
        """The number of examples over all processes (each passes its own rows)."""
        if not self._multiprocess:
            return local
        from jax.experimental import multihost_utils

        counts = np.asarray(multihost_utils.process_allgather(np.int64(local)))
        return int(counts.sum())

    def _place(self, name: str, array: np.ndarray, n: int) -> jax.Array | np.ndarray:
        """The global array of ``n`` rows (split over the data axis), or the host array itself
        when it is too big for the devices (then streamed)."""
        if array.nbytes * (n / max(len(array), 1)) <= self.device_data_limit_bytes:
            try:
                return sharding_lib.global_rows(array, n, self.mesh)
            except ValueError as error:
                raise ValueError(str(error).replace("x:", f"{name}:", 1)) from None
        if self._multiprocess:
            raise ValueError(
                f"{name}: {array.nbytes / 2**20:.0f} MiB per process is over "
                f"device_data_limit_bytes={self.device_data_limit_bytes}, and streaming from the "
                "host is single-process only; raise device_data_limit_bytes"
            )
        return array

    def _batches(self, key, n: int, batch_size: int, num_batches: int, shuffle: bool):
        """An epoch's (index, weight) arrays, batch axis split over the mesh's data axis.

        The permutation is drawn on the host by numpy, seeded by the key's data: XLA CPU's sort
        took ~35 ms for 60,000 examples (8 % of an MLP epoch), numpy takes ~1 ms.
        """
        if shuffle:
            order = np.random.default_rng(np.asarray(jax.random.key_data(key))).permutation(n)
        else:
            order = np.arange(n)
        idx, weight = _padded_batches(order, batch_size, num_batches)
        placement = sharding_lib.batch_sharding(self.mesh)
        return sharding_lib.put_global(idx, placement), sharding_lib.put_global(weight, placement)

    def _put_rows(self, array: np.ndarray) -> jax.Array:
        """A host batch placed with its rows split over the data axis (single process)."""
        return jax.device_put(array, sharding_lib.row_sharding(self.mesh))

    # ----------------------------------------------------------------------------- state
    def initialize(self, x: Any, *, steps_per_epoch: int, epochs: int | None = None) -> TrainState:
        """Builds the optimizer, the train state and the compiled steps without training.

        ``fit`` does this itself; call it directly to restore a checkpoint into ``self.state``
        before ``fit``. ``x`` only needs the right example shape (``x[:1]`` will do);
        ``epochs`` is the run's total length (cosine schedules default to it). The steps are
        rebuilt (and so recompiled) only when these change, since schedules depend on them.
        """
        x = _as_array("x", x)
        self._check_input("x", x)
        if self._steps is not None and self._built_for == (steps_per_epoch, epochs):
            return self.state
        if isinstance(self.optimizer, optax.GradientTransformation):
            tx = self.optimizer
        else:
            tx = optim.build(self.optimizer, steps_per_epoch=steps_per_epoch, epochs=epochs)
        if self.state is None:
            shape = (1, *self._input_shape)

            def init() -> TrainState:
                sample = jnp.zeros(shape, jnp.float32)
                return create_train_state(self.model, tx, sample, seed=self.seed)

            # One compiled initialisation (op-by-op it dispatched dozens of small compiles),
            # created replicated on the mesh. It runs once, so on CPU it is compiled without
            # LLVM's optimisations: 0.7 s -> 0.2 s (MLP), 1.2 s -> 0.3 s (CNN); uniform
            # initialisers give the same bits, normal ones (erfinv) differ in the last bits.
            options = _INIT_COMPILER_OPTIONS if self._platform == "cpu" else None
            self.state = jax.jit(
                init, out_shardings=sharding_lib.replicated(self.mesh), compiler_options=options
            )()
        self._steps = make_steps(
            self.model,
            self.loss,
            tx,
            self.metric_names,
            augment=self.augment,
            mesh=self.mesh,
            compiler_options=self.compiler_options,
        )
        self._built_for = (steps_per_epoch, epochs)
        return self.state

    def dispatch_size(self, num_steps: int) -> int:
        """Optimizer steps per compiled call for an epoch of ``num_steps`` steps (resolves
        ``steps_per_dispatch="auto"``: 1 for convolutional models, else up to 32)."""
        if self.steps_per_dispatch != "auto":
            return min(int(self.steps_per_dispatch), num_steps)
        convolutional = any(leaf.ndim == 4 for leaf in jax.tree_util.tree_leaves(self.state.params))
        return 1 if convolutional else min(32, num_steps)

    @property
    def variables(self) -> dict[str, Any]:
        """The model variables (params and batch_stats) for ``model.apply``."""
        if self.state is None:
            raise RuntimeError("The model has no variables yet: call fit() first.")
        return self.state.variables

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
            a float32 ``x`` in 64-byte-aligned memory (what ``jaxnn.data.to_float``,
            ``normalize`` and ``train_validation_split`` return) is trained on in place, not
            copied: do not modify it from a callback during ``fit``.
          epochs: epochs to run (continuing from earlier ``fit`` calls).
          batch_size: examples per step; ``len(x)`` gives batch gradient descent, 1 gives SGD.
          validation_split: fraction in [0, 1) of (x, y) held out for validation, chosen by a
            permutation derived from ``seed`` (not the last examples as in Keras).
          validation_data: ``(x_val, y_val)``; overrides ``validation_split``.
          shuffle: draw a new example order every epoch (from ``fold_in(data_key, epoch)``).
          drop_remainder: drop the last partial batch instead of padding and masking it.
          callbacks: ``jaxnn.callbacks.Callback`` objects (early stopping, plateau, ...).
          verbose: 0 silent, 1 a progress bar (line-based when not a terminal) and a line per
            epoch.

        Returns:
          A dict of lists, one entry per epoch: ``loss``, each metric, ``grad_norm``,
          ``learning_rate``, ``train_time_s``, ``epoch_time_s`` and, with validation,
          ``val_loss`` and ``val_<metric>``.
        """
        epochs = _check_int("epochs", epochs, 0)
        batch_size = _check_int("batch_size", batch_size, 1)
        if not isinstance(validation_split, int | float) or not 0 <= validation_split < 1:
            raise ValueError(
                f"validation_split: expected a float in [0, 1); got {validation_split!r}"
            )
        x, y = self._prepare_xy(x, y)
        if validation_data is not None:
            if not isinstance(validation_data, tuple | list) or len(validation_data) != 2:
                raise ValueError("validation_data: expected a tuple (x_val, y_val)")
            x_val, y_val = self._prepare_xy(*validation_data, prefix="validation_data ")
        elif validation_split > 0:
            if self._multiprocess:
                raise ValueError(
                    "validation_split: not available in a multi-process run (each process holds "
                    "only its rows); split the data first and pass validation_data"
                )
            order = np.random.default_rng(self.seed).permutation(len(x))
            num_val = int(round(len(x) * validation_split))
            if num_val == 0 or num_val == len(x):
                raise ValueError(
                    f"validation_split: {validation_split} of {len(x)} examples leaves "
                    f"{len(x) - num_val} for training and {num_val} for validation; "
                    "both must be > 0"
                )
            x_val, y_val = x[order[:num_val]], y[order[:num_val]]
            x, y = x[order[num_val:]], y[order[num_val:]]
        else:
            x_val = y_val = None

        sharding_lib.check_batch_size("batch_size", batch_size, self.mesh)
        n = self._global_count(len(x))
        if drop_remainder and n < batch_size:
            raise ValueError(
                f"batch_size: {batch_size} is larger than the {n} training examples, and "
                "drop_remainder=True would leave no batch"
            )
        steps_per_epoch = n // batch_size if drop_remainder else math.ceil(n / batch_size)
        self.initialize(x[:1], steps_per_epoch=steps_per_epoch, epochs=self.epoch + epochs)
        x_dev, y_dev = self._place("x", x, n), self._place("y", y, n)
        if x_val is not None:
            n_val = self._global_count(len(x_val))
            val_dev = (
                self._place("validation_data x", x_val, n_val),
                self._place("validation_data y", y_val, n_val),
                n_val,
            )
        else:
            val_dev = None
        per_dispatch = self.dispatch_size(steps_per_epoch)
        self.steps_per_epoch = steps_per_epoch
        data_key = rng_streams(self.seed)["data"]

        callbacks = list(callbacks)
        if verbose:
            callbacks.append(ProgressLogger(steps_per_epoch, self.epoch + epochs))
        history: dict[str, list[float]] = {}
        self.stop_training = False
        for cb in callbacks:
            cb.on_train_begin(self)
        for _ in range(epochs):
            epoch = self.epoch
            for cb in callbacks:
                cb.on_epoch_begin(self, epoch)
            start = time.perf_counter()
            train_logs = self._train_epoch(
                x_dev,
                y_dev,
                n,
                jax.random.fold_in(data_key, epoch),
                shuffle,
                batch_size,
                steps_per_epoch,
                per_dispatch,
                callbacks,
            )
            logs = dict(train_logs)  # fetching the metrics waited for the epoch's last step
            logs["train_time_s"] = time.perf_counter() - start
            if val_dev is not None:
                val_logs = self._evaluate_arrays(*val_dev, batch_size=max(batch_size, _EVAL_BATCH))
                logs.update({f"val_{k}": v for k, v in val_logs.items()})
            logs["learning_rate"] = float(optim.current_learning_rate(self.state.opt_state))
            logs["epoch_time_s"] = time.perf_counter() - start
            self.epoch += 1
            for key, value in logs.items():
                history.setdefault(key, []).append(value)
            for cb in callbacks:
                cb.on_epoch_end(self, epoch, logs)
            if self.stop_training:
                break
        for cb in callbacks:
            cb.on_train_end(self, history)
        return history

    def _train_epoch(
        self, x, y, n, key, shuffle, batch_size, steps_per_epoch, per_dispatch, callbacks
    ) -> dict[str, float]:
        # Rounded up to whole dispatches: the last one skips the steps past the epoch's end, so
        # one compiled function serves the whole epoch.
        num_batches = -(-steps_per_epoch // per_dispatch) * per_dispatch
        idx, weight = self._batches(key, n, batch_size, num_batches, shuffle)
        on_host = isinstance(x, np.ndarray)
        if on_host:
            idx_host = np.asarray(idx)
        acc = self.empty_train_metrics()
        done = 0
        if self._resume_acc is not None:
            acc, done = self._resume_acc, self.position
            self._resume_acc = None
        self.position = done
        self.global_step = int(self.state.step)  # one sync per epoch; then counted on the host
        # Only the last batch can hold padding, and only BatchNorm needs telling (the loss and
        # metrics weigh every example anyway): a compiled variant of its own just for that.
        padded = steps_per_epoch * batch_size > n and bool(self.state.batch_stats)
        k = per_dispatch
        while done < steps_per_epoch:
            steps = min(k, steps_per_epoch - done)
            masked = padded and done + steps == steps_per_epoch
            if on_host:  # streamed: gather on the host, copy (asynchronously) to the device
                flat = idx_host[done : done + k].reshape(-1)
                xs, ys = self._put_rows(x[flat]), self._put_rows(y[flat])
                local = np.arange(flat.size, dtype=np.int32).reshape(k, batch_size)
                chunk_idx = jax.device_put(local, sharding_lib.batch_sharding(self.mesh))
                self.state, acc = self._steps.train(
                    self.state,
                    acc,
                    xs,
                    ys,
                    chunk_idx,
                    weight[done : done + k],
                    0,
                    steps,
                    k=k,
                    masked=masked,
                )
            else:
                self.state, acc = self._steps.train(
                    self.state, acc, x, y, idx, weight, done, steps_per_epoch, k=k, masked=masked
                )
            done += steps
            self.position = done
            self.global_step += steps
            for cb in callbacks:
                cb.on_dispatch_end(self, done, acc)
        self.position = 0
        return self._finish_metrics(acc)

    def empty_train_metrics(self) -> dict[str, Any]:
        """An empty train accumulator, replicated over the mesh (also the template for
        restoring a mid-epoch one)."""
        return sharding_lib.replicate(self._steps.empty_train_metrics(), self.mesh)

    def resume_mid_epoch(self, position: int, acc: dict[str, Any]) -> None:
        """Continues the current epoch (``self.epoch``) at step ``position`` with the metrics
        accumulated so far; the epoch's example order is a function of (seed, epoch), so the
        remaining batches are exactly those an uninterrupted run would see."""
        self.position = _check_int("position", position, 0)
        self._resume_acc = acc

    def _finish_metrics(self, acc: dict[str, Any]) -> dict[str, float]:
        """Fetches the accumulated metrics once and stops a diverged run."""
        check_finite(acc, self.epoch)
        return metrics_lib.compute_collection(split_train_metrics(acc)[0])

    # ----------------------------------------------------------------------------- eval
    def _eval_batch_size(self, batch_size: int, n: int) -> int:
        """``min(batch_size, n)`` rounded up to split evenly over the data axis."""
        parts = sharding_lib.data_size(self.mesh)
        return -(-min(batch_size, n) // parts) * parts

    def _evaluate_arrays(self, x, y, n: int, *, batch_size: int) -> dict[str, float]:
        batch_size = self._eval_batch_size(batch_size, n)
        num_batches = math.ceil(n / batch_size)
        # Whole dispatches (weight-0 batches fill the last one): one compiled evaluate per size.
        per_dispatch = 1 if isinstance(x, np.ndarray) else self.dispatch_size(num_batches)
        num_batches = -(-num_batches // per_dispatch) * per_dispatch
        idx, weight = self._batches(None, n, batch_size, num_batches, False)
        acc = sharding_lib.replicate(self._steps.empty_eval_metrics(), self.mesh)
        if isinstance(x, np.ndarray):
            idx_host = np.asarray(idx)
            local = jax.device_put(
                np.arange(batch_size, dtype=np.int32)[None], sharding_lib.batch_sharding(self.mesh)
            )
            for i in range(num_batches):
                flat = idx_host[i]
                acc = self._steps.evaluate(
                    self.variables,
                    acc,
                    self._put_rows(x[flat]),
                    self._put_rows(y[flat]),
                    local,
                    weight[i : i + 1],
                    0,
                )
        else:
            # Batches per dispatch as in training: a scan where it pays (MLPs), one batch per
            # call for convolutional models.
            for done in range(0, num_batches, per_dispatch):
                acc = self._steps.evaluate(
                    self.variables, acc, x, y, idx, weight, done, k=per_dispatch
                )
        return metrics_lib.compute_collection(acc)

    def _require_state(self, what: str) -> None:
        if self.state is None:
            raise RuntimeError(f"{what}() needs a trained model: call fit() first.")

    def evaluate(self, x: Any, y: Any, *, batch_size: int = _EVAL_BATCH) -> dict[str, float]:
        """Returns the mean loss and metrics over (x, y), every example counted exactly once."""
        self._require_state("evaluate")
        batch_size = _check_int("batch_size", batch_size, 1)
        x, y = self._prepare_xy(x, y)
        n = self._global_count(len(x))
        return self._evaluate_arrays(
            self._place("x", x, n), self._place("y", y, n), n, batch_size=batch_size
        )

    def predict(self, x: Any, *, batch_size: int = _EVAL_BATCH) -> np.ndarray:
        """Returns the model's outputs for x as numpy: probabilities for classifiers (softmax or
        sigmoid, by the loss), values for regression."""
        self._require_state("predict")
        batch_size = _check_int("batch_size", batch_size, 1)
        x = _as_array("x", x)
        self._check_input("x", x)
        x = x.astype(np.float32, copy=False)
        n = len(x)
        batch_size = self._eval_batch_size(batch_size, n)
        padded = math.ceil(n / batch_size) * batch_size
        outputs = []
        for start in range(0, padded, batch_size):
            batch = x[start : start + batch_size]
            if len(batch) < batch_size:  # pad to keep one compiled shape
                pad = np.zeros((batch_size - len(batch), *x.shape[1:]), np.float32)
                batch = np.concatenate([batch, pad])
            if self._multiprocess:  # every process passes the same x: split it by rows
                local = batch[sharding_lib.process_rows(batch_size, self.mesh)]
                batch = sharding_lib.global_rows(local, batch_size, self.mesh)
            else:
                batch = self._put_rows(batch)
            outputs.append(self._steps.predict(self.variables, batch))
        return np.concatenate([np.asarray(o) for o in outputs])[:n]
