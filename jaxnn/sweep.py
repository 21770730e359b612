"""``Sweep``: K configurations of one model trained at once, ``jax.vmap`` over a stacked state.

The members share the model, the loss, the batch size and the data; they differ in seed
(initialisation, dropout, example order, validation split) and in the optimizer numbers of
``jaxnn.optim.TRACEABLE`` (learning rate, momentum, betas, epsilon, rho, L2, weight decay,
clipping norm, the schedule's final fraction ``alpha``). Every train step runs all K members in
one compiled program: member ``i`` sees the batches of its own example order, its own dropout
keys and its own optimizer numbers, so it follows the run that ``Trainer(model,
seed=seed_i, optimizer=optimizer_i).fit`` makes (equal up to the float differences between
XLA's batched and unbatched kernels; ``docs/sweeps.md`` has the figures).

Each member keeps its own metrics, history, learning-rate schedule and callbacks (early stopping,
ReduceLROnPlateau, CSV, ...), which see a ``TrainLoop`` of that member alone. A member that stops
(early stopping, or a NaN/Inf loss) stops changing while the others go on. Each member's best
variables by ``monitor`` are kept (``best_variables``) for its best checkpoint.

Example::

    sweep = jaxnn.Sweep(jaxnn.MLP(), [
        {"seed": s, "optimizer": {"name": "adam", "learning_rate": lr}}
        for s in (0, 1, 2) for lr in (1e-3, 3e-4)])
    histories = sweep.fit(x, y, epochs=5, batch_size=128, validation_split=0.1)
    sweep.evaluate(x_test, y_test)   # one dict per member
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxnn import feeding, inputs, optim, sweep_members
from jaxnn import losses as losses_lib
from jaxnn import metrics as metrics_lib
from jaxnn import sharding as sharding_lib
from jaxnn.callbacks import Callback
from jaxnn.data.preprocess import validation_rows
from jaxnn.feeding import Feeder
from jaxnn.loop import TrainLoop, evaluate_dispatches, train_dispatches
from jaxnn.state import TrainState, create_train_state, init_compiler_options
from jaxnn.step import Steps, default_compiler_options, make_sweep_steps
from jaxnn.sweep_members import MemberSpec, member_tree, stack_trees
from jaxnn.utils import ceil_div, round_up

__all__ = ["MemberSpec", "Members", "Sweep"]

_EVAL_BATCH = 1024


@flax.struct.dataclass
class Members:
    """The stacked state of a sweep: every leaf has a leading member axis of size K.

    Attributes:
      state: the members' ``TrainState``s, stacked.
      best: ``{"params", "batch_stats"}`` of each member's best epoch by the monitor so far.
      active: ``(K,)`` bool; False once a member stopped: its state no longer changes.
    """

    state: TrainState
    best: Any
    active: jax.Array


@dataclasses.dataclass(frozen=True)
class _Plan:
    """An epoch's batches for all members, placed: ``device_idx`` ``(num_batches, K, batch)``
    (rows of the data each member reads) and ``device_weight`` ``(num_batches, batch)``; the
    duck type of ``jaxnn.feeding.BatchPlan`` that ``Fed.inputs`` reads."""

    device_idx: jax.Array
    device_weight: jax.Array
    num_batches: int

    @property
    def idx(self) -> jax.Array:
        """The indices (``evaluate_dispatches`` reads their number of batches)."""
        return self.device_idx


class Sweep:
    """Trains K members of one model at once (see the module docstring).

    Args:
      model: a Linen module, as for ``Trainer``.
      members: one ``MemberSpec`` (or dict with ``seed`` and ``optimizer``) per member. The
        optimizers may differ only in ``jaxnn.optim.TRACEABLE`` numbers, and a number that turns
        a piece of the chain on or off (``l2``, ``weight_decay``, ``clip_norm``, ``momentum``)
        must be zero for all members or for none (``jaxnn.sweep_run`` groups such members).
      loss, metrics, augment, steps_per_dispatch, mesh, compiler_options: as for ``Trainer``.
      monitor: the logged value that ranks each member's epochs (e.g. ``"val_accuracy"``) for
        ``best_variables``; None: each member's best is its latest.
      monitor_mode: ``"max"`` or ``"min"``.
    """

    def __init__(
        self,
        model: nn.Module,
        members: Sequence[MemberSpec | Mapping[str, Any]],
        *,
        loss: str | losses_lib.Loss = "sparse_categorical_crossentropy",
        metrics: Sequence[str] | None = None,
        augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
        steps_per_dispatch: int | str = "auto",
        mesh: jax.sharding.Mesh | None = None,
        compiler_options: Mapping[str, str] | None = None,
        monitor: str | None = None,
        monitor_mode: str = "max",
    ):
        self.model = model
        self.loss = losses_lib.get(loss)
        self._inputs = inputs.ModelInputs(model, self.loss)
        self.members = sweep_members.check_members(members)
        self.metric_names = inputs.check_metric_names(metrics, self.loss)
        self.augment = augment
        self.steps_per_dispatch = inputs.check_steps_per_dispatch(steps_per_dispatch)
        self.mesh = inputs.check_mesh(mesh) or sharding_lib.member_mesh(len(self.members))
        self._stacked = sharding_lib.member_sharding(self.mesh)  # per-member arrays
        self._feeder = Feeder(self.mesh, 2**62)  # resident: every member reads the same arrays
        if self._feeder.multiprocess:
            raise ValueError("mesh: a sweep runs in one process; got a multi-process mesh")
        options = inputs.check_compiler_options(compiler_options)
        if options is None:
            options = default_compiler_options(self.mesh.devices.flat[0].platform)
        self.compiler_options = dict(options)
        if monitor_mode not in ("max", "min"):
            raise ValueError(f"monitor_mode: expected 'max' or 'min'; got {monitor_mode!r}")
        self.monitor, self.monitor_mode = monitor, monitor_mode
        self.loop = TrainLoop()  # the sweep's: state is Members, epoch counts sweep epochs
        self.member_loops = [TrainLoop() for _ in self.members]
        self.records = [sweep_members.MemberRecord() for _ in self.members]
        self._steps: Steps | None = None
        self._built_for: tuple[int | None, ...] | None = None
        self._resume_pending = False
        self.num_train = 0  # training examples per member (set by initialize / fit)
        self.fold = jax.jit(sweep_members.fold, out_shardings=self._stacked)

    @property
    def size(self) -> int:
        """The number of members, K."""
        return len(self.members)

    # ------------------------------------------------------------------------------- state
    def initialize(
        self,
        x: Any,
        *,
        epochs: int | None,
        batch_size: int | None = None,
        validation_split: float = 0.0,
        steps_per_epoch: int | None = None,
    ) -> Members:
        """Builds every member's optimizer and state (stacked) and the vmapped steps, for an
        epoch of ``x`` (less ``validation_split``) in batches of ``batch_size`` (or pass
        ``steps_per_epoch``) and a run of ``epochs``. ``fit`` does this itself; call it to
        restore a checkpoint first."""
        x = inputs.as_array("x", x)
        self._inputs.check_x("x", x)
        if steps_per_epoch is None:
            batch_size = inputs.check_int("batch_size", batch_size, 1)
            n_train = len(self._rows(len(x), validation_split)[0][0])
            self.num_train = n_train
            batch_size = self._feeder.train_batch_size(batch_size, n_train)
            steps_per_epoch = feeding.steps_per_epoch(n_train, batch_size)
        configs = [m.optimizer for m in self.members]
        # The members' schedules have one shape (``sweep_members`` checks): the first's lengths.
        built_for = optim.run_lengths_read(
            configs[0], steps_per_epoch=steps_per_epoch, epochs=epochs
        )
        if self._steps is not None and self._built_for == built_for:
            return self.loop.state
        values = sweep_members.traced_values(configs)

        def build_tx(member_values: Mapping[str, jax.Array]):
            return optim.build(
                configs[0], steps_per_epoch=steps_per_epoch, epochs=epochs, values=member_values
            )

        values = {k: jnp.asarray(v, jnp.float32) for k, v in values.items()}
        if self.loop.state is None:
            seeds = [m.seed for m in self.members]
            self.loop.state = _init_members(self, build_tx, values, seeds)
        self._steps = make_sweep_steps(
            self.model,
            self.loss,
            build_tx,
            values,
            self.metric_names,
            augment=self.augment,
            mesh=self.mesh,
            compiler_options=self.compiler_options,
        )
        self._built_for = built_for
        return self.loop.state

    def member_state(self, i: int) -> TrainState:
        """Member ``i``'s train state (a slice of the stacked state)."""
        return member_tree(self.loop.state.state, i)

    def best_variables(self, i: int) -> dict[str, Any]:
        """Member ``i``'s variables at its best epoch by ``monitor`` (its latest without one)."""
        best = member_tree(self.loop.state.best, i)
        return best if best["batch_stats"] else {"params": best["params"]}

    def empty_train_metrics(self) -> dict[str, Any]:
        """The stacked, empty train accumulator (a mid-epoch restore's template)."""
        empty = self._steps.empty_train_metrics()
        return jax.device_put(stack_trees([empty] * self.size), self._stacked)

    def restore(self, snapshot: Any) -> None:
        """Puts a group checkpoint back (``jaxnn.checkpoint.restore_training`` of the sweep's
        ``Members``); the members' records come with the ``SweepRecords`` callback state."""
        self.loop.state = snapshot.state
        self.loop.epoch = snapshot.epoch
        self.loop.global_step = snapshot.step
        self.loop.history = {key: list(values) for key, values in snapshot.history.items()}
        if snapshot.position:
            self.loop.position, self.loop.metrics = snapshot.position, snapshot.metrics
            self._resume_pending = True

    # ------------------------------------------------------------------------------- fit
    def fit(
        self,
        x: Any,
        y: Any,
        *,
        epochs: int = 1,
        batch_size: int = 32,
        validation_split: float = 0.0,
        validation_data: tuple[Any, Any] | None = None,
        callbacks: Sequence[Sequence[Callback]] | None = None,
        sweep_callbacks: Sequence[Callback] = (),
        verbose: int = 1,
    ) -> list[dict[str, list[float]]]:
        """Trains every member for ``epochs`` more epochs; returns each member's history.

        Args:
          x, y: the training data every member draws from. With ``validation_split`` each
            member holds out its own rows, chosen by its seed as ``Trainer.fit`` would.
          epochs, batch_size, validation_data: as for ``Trainer.fit``.
          callbacks: one list of callbacks per member (each sees that member's ``TrainLoop``).
          sweep_callbacks: callbacks of the whole sweep: they see ``self.loop`` (its state is
            the ``Members``), as a group checkpoint does.
          verbose: 0 silent, 1 a progress bar and one line per epoch.
        """
        epochs = inputs.check_int("epochs", epochs, 0)
        batch_size = inputs.check_int("batch_size", batch_size, 1)
        member_callbacks = sweep_members.check_member_callbacks(callbacks, self.size)
        x, y = self._inputs.prepare_xy(x, y)
        split = inputs.check_validation_split(validation_split)
        rows = self._rows(len(x), split if validation_data is None else 0.0)
        sharding_lib.check_batch_size("batch_size", batch_size, self.mesh)
        data = self._feeder.feed(x, y)
        n_train = self.num_train = len(rows[0][0])
        batch_size = self._feeder.train_batch_size(batch_size, n_train)
        total = feeding.steps_per_epoch(n_train, batch_size)
        self.initialize(x, steps_per_epoch=total, epochs=self.loop.epoch + epochs)
        val = None
        if validation_data is not None:
            x_val, y_val = self._inputs.prepare_xy(*validation_data, prefix="validation_data ")
            val = (self._feeder.feed(x_val, y_val), None)
        elif split:
            val = (data, [val_rows for _, val_rows in rows])
        self.loop.steps_per_epoch = total
        for loop in self.member_loops:
            loop.steps_per_epoch = total
        sweep_callbacks = list(sweep_callbacks)
        if verbose:
            sweep_callbacks.append(sweep_members.SweepProgress(total, self.loop.epoch + epochs))
        epoch_fit = sweep_members.EpochFit(self, data, rows, val, batch_size, member_callbacks)
        return epoch_fit.run(epochs, sweep_callbacks)

    def _rows(self, n: int, split: float) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Each member's (train rows, validation rows or None) of the ``n`` examples."""
        if not split:
            return [(np.arange(n), None)] * self.size
        return [validation_rows(n, split, m.seed) for m in self.members]

    def dispatch_size(self, num_steps: int) -> int:
        """Optimizer steps per compiled call (as ``Trainer.dispatch_size``)."""
        # A member's parameters decide, as for its single run.
        params = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), self.loop.state.state.params
        )
        return feeding.dispatch_size(self.steps_per_dispatch, params, num_steps)

    def plan(
        self, n: int, batch_size: int, num_batches: int, rows: Sequence[np.ndarray | None], keys
    ) -> _Plan:
        """Every member's batches over its ``rows`` (None: all ``n``), in the order of its key
        (None: in order), placed with the batch axis split over the mesh."""
        idx = []
        for member_rows, key in zip(rows, keys, strict=True):
            plan = self._feeder.plan(n, batch_size, num_batches, shuffle_key=key)
            idx.append(plan.idx if member_rows is None else member_rows[plan.idx])
        stacked = np.stack(idx, axis=1).astype(np.int32)
        members = (
            sharding_lib.MEMBER_AXIS if sharding_lib.MEMBER_AXIS in self.mesh.axis_names else None
        )
        spec = PartitionSpec(None, members, sharding_lib.DATA_AXIS)
        return _Plan(
            jax.device_put(stacked, NamedSharding(self.mesh, spec)),
            sharding_lib.put_global(plan.weight, sharding_lib.batch_sharding(self.mesh)),
            num_batches,
        )

    def train_epoch(
        self, data: Any, plan: _Plan, k: int, callbacks: Sequence[Callback], n_train: int
    ) -> dict:
        """Runs the sweep's current epoch (from ``loop.position``) over ``n_train`` examples per
        member; returns the stacked metrics fetched to the host."""
        loop, total = self.loop, self.loop.steps_per_epoch
        if self._resume_pending:
            metrics = loop.metrics
        else:
            metrics, loop.position = self.empty_train_metrics(), 0
        self._resume_pending = False
        # As in Trainer: only the last batch can hold padding, and only BatchNorm needs telling.
        padded = total * plan.device_weight.shape[1] > n_train
        masked = padded and bool(self.loop.state.state.batch_stats)
        metrics = train_dispatches(
            loop, self._steps.train, data, plan, k, metrics, mask_last=masked, callbacks=callbacks
        )
        loop.position, loop.metrics = 0, self.empty_train_metrics()
        return jax.device_get(metrics)

    # ------------------------------------------------------------------------------- eval
    def evaluate_plan(self, data: Any, plan: _Plan) -> list[dict[str, float]]:
        """Every member's mean loss and metrics over ``plan``'s batches of ``data``."""
        k = self.dispatch_size(plan.num_batches)
        empty = stack_trees([self._steps.empty_eval_metrics()] * self.size)
        metrics = jax.device_put(empty, self._stacked)
        variables = self.loop.state.state.variables
        metrics = evaluate_dispatches(self._steps.evaluate, variables, metrics, data, plan, k)
        host = jax.device_get(metrics)
        return [metrics_lib.compute_collection(member_tree(host, i)) for i in range(self.size)]

    def eval_plan(self, n: int, batch_size: int, rows: Sequence[np.ndarray | None]) -> _Plan:
        """The plan that evaluates ``n`` examples (each member's ``rows`` of them) in order."""
        batch_size = self._feeder.eval_batch_size(batch_size, n)
        num_batches = ceil_div(n, batch_size)
        k = self.dispatch_size(num_batches)
        return self.plan(n, batch_size, round_up(num_batches, k), rows, [None] * self.size)

    def evaluate(self, x: Any, y: Any, *, batch_size: int = _EVAL_BATCH) -> list[dict[str, float]]:
        """Every member's mean loss and metrics over (x, y): one dict per member."""
        if self._steps is None:
            raise RuntimeError("evaluate() needs a trained sweep: call fit() first.")
        batch_size = inputs.check_int("batch_size", batch_size, 1)
        x, y = self._inputs.prepare_xy(x, y)
        data = self._feeder.feed(x, y)
        return self.evaluate_plan(data, self.eval_plan(len(x), batch_size, [None] * self.size))

    def predict(self, x: Any, *, batch_size: int = _EVAL_BATCH) -> np.ndarray:
        """Every member's outputs for ``x``: shape ``(K, len(x), ...)``."""
        if self._steps is None:
            raise RuntimeError("predict() needs a trained sweep: call fit() first.")
        batch_size = inputs.check_int("batch_size", batch_size, 1)
        x = self._inputs.prepare_x(x)
        data = self._feeder.host(x)
        batch_size = self._feeder.eval_batch_size(batch_size, data.n)
        plan = self._feeder.plan(data.n, batch_size, ceil_div(data.n, batch_size))
        variables = self.loop.state.state.variables
        outputs = [
            np.asarray(self._steps.predict(variables, data.rows(plan, i, 1)[0]))
            for i in range(plan.idx.shape[0])
        ]
        return np.concatenate(outputs, axis=1)[:, : data.n]


def _init_members(
    sweep: Sweep, build_tx: Callable[..., Any], values: Mapping[str, jax.Array], seeds: list[int]
) -> Members:
    """Every member's initial state in one compiled call, stacked and placed on the member
    axis: ``create_train_state`` vmapped over the seeds and the optimizer numbers that differ
    (``build_tx(values_i)`` is member ``i``'s optimizer). Each member gets the bits its own
    ``init_on_mesh`` would give (tested): its seed is traced as ``uint32``, which is what an
    integer seed becomes in ``jax.random.key`` without x64. One compilation for K members, where
    one per member took ~0.3 s each on a 2-core CPU."""

    def init(seeds: jax.Array, values: Mapping[str, jax.Array]) -> Members:
        sample = jnp.zeros((1, *sweep._inputs.input_shape), jnp.float32)

        def one(seed: jax.Array, member_values: Mapping[str, jax.Array]) -> TrainState:
            return create_train_state(sweep.model, build_tx(member_values), sample, seed=seed)

        state = jax.vmap(one)(seeds, values)
        best = {"params": state.params, "batch_stats": state.batch_stats}
        return Members(state=state, best=best, active=jnp.ones(seeds.shape, bool))

    seeds = np.asarray([seed % 2**32 for seed in seeds], np.uint32)
    options = init_compiler_options(sweep.mesh)
    return jax.jit(init, out_shardings=sweep._stacked, compiler_options=options)(seeds, values)
