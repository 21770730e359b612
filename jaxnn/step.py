"""Pure, jitted train / eval / predict steps: the only place Linen ``apply`` is called.

A train dispatch runs ``k`` optimizer steps (``jax.lax.scan`` when ``k > 1``) over batches gathered
on device from index arrays, accumulating metrics on device, so the host neither copies batches
nor synchronises inside an epoch. Every batch carries a ``weight`` per example: padded examples
have weight 0 and count nowhere (loss, metrics, BatchNorm statistics).

Example (your own loop)::

    steps = make_steps(model, losses.get("sparse_categorical_crossentropy"), tx, ["accuracy"])
    metrics = steps.empty_train_metrics()
    state, metrics = steps.train(state, metrics, x, y, idx[None], weight[None], 0, 1)
    check_finite(metrics, epoch=0)
    print(jaxnn.metrics.compute_collection(metrics))  # loss, accuracy, grad_norm, ...
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxnn import metrics as metrics_lib
from jaxnn import sharding
from jaxnn.losses import Loss, weighted_mean
from jaxnn.state import TrainState

__all__ = [
    "FIRST_NONFINITE",
    "NONFINITE",
    "Steps",
    "TrainingDivergedError",
    "check_finite",
    "default_compiler_options",
    "gather_rows",
    "make_steps",
    "make_sweep_steps",
    "split_train_metrics",
]

Array = jax.Array
Augment = Callable[[Array, Array], Array]
NONFINITE = "nonfinite_steps"
FIRST_NONFINITE = "first_nonfinite_step"  # 1-based global step number, -1 while all are finite

# XLA CPU hands dots, reductions and convolutions to YNNPACK by default; in jaxlib 0.10 its
# convolutions run on one thread. Left out of the list, convolutions go to XLA's own
# multi-threaded kernels, which are faster with two cores or more (figures in
# docs/design-notes.md).
_CPU_COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,"
    "LIBRARY_FUSION_TYPE_REDUCE"
}


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):  # Linux: the cores this process may run on
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@functools.cache
def _cpu_options_accepted() -> bool:
    """Whether this jaxlib compiles with ``_CPU_COMPILER_OPTIONS`` (a tiny compile, once)."""
    try:
        probe = jax.jit(lambda v: v + 1, compiler_options=_CPU_COMPILER_OPTIONS)
        probe.lower(jnp.zeros((), jnp.float32)).compile()
    except Exception as error:  # noqa: BLE001 - an XLA that lacks the option: use defaults
        logging.getLogger(__name__).warning(
            "XLA CPU options %s not accepted (%s); using XLA's defaults",
            _CPU_COMPILER_OPTIONS,
            error,
        )
        return False
    return True


def default_compiler_options(platform: str) -> dict[str, str]:
    """The XLA options jaxnn compiles its steps with on ``platform`` (``"cpu"``, ``"gpu"``, ...).

    On CPU with more than one core: convolutions through XLA's multi-threaded kernels rather
    than YNNPACK's single-threaded ones (see ``_CPU_COMPILER_OPTIONS``). Elsewhere, or when this
    jaxlib does not know the option (checked once with a tiny compile), XLA's defaults: ``{}``.
    """
    if platform != "cpu" or _usable_cores() < 2 or not _cpu_options_accepted():
        return {}
    return dict(_CPU_COMPILER_OPTIONS)


def gather_rows(array: Array, idx: Array) -> Array:
    """``array[idx]`` for in-bounds row indices, faster on XLA CPU than plain indexing.

    Rows are flattened so each gathered slice is one contiguous block, and ``mode="clip"`` skips
    the out-of-bounds masking that ``array[idx]`` adds (the indices come from a permutation, so
    they are always in bounds); figures in docs/design-notes.md. Shape: ``idx.shape +
    array.shape[1:]``.
    """
    flat = array.reshape(array.shape[0], -1)
    return flat.at[idx].get(mode="clip").reshape(idx.shape + array.shape[1:])


@dataclasses.dataclass(frozen=True)
class Steps:
    """The compiled step functions of one (model, loss, optimizer, metrics) combination.

    Attributes:
      train: ``(state, metrics, x, y, idx, weight, start, stop, *, k=1, masked=False) ->
        (state, metrics)``; ``idx`` and ``weight`` have shape ``(num_batches, batch)`` (an
        epoch's batches, at least ``start + k`` of them) and the call runs batches ``start ..
        min(start + k, stop) - 1``: one compiled ``k`` serves an epoch's last, shorter dispatch
        too (the steps past ``stop`` are skipped, not run on padding). ``masked`` (static) must
        be True when a batch holds padding and the model has BatchNorm; ``state`` and
        ``metrics`` (the accumulator, from ``empty_train_metrics``) are donated.
      evaluate: ``(variables, metrics, x, y, idx, weight, start, *, k=1) -> metrics`` with
        dropout off and running BatchNorm statistics; ``metrics`` is donated.
      predict: ``(variables, x) -> outputs`` after the loss's output activation (probabilities
        for classifiers, values for regression).
      metric_names: the metrics accumulated besides ``loss``.
    """

    train: Callable[..., tuple[TrainState, dict[str, Any]]]
    evaluate: Callable[..., dict[str, Any]]
    predict: Callable[..., Array]
    metric_names: tuple[str, ...]

    def empty_train_metrics(self) -> dict[str, Any]:
        """An empty accumulator for ``train``: the metrics plus the global gradient norm."""
        metrics = metrics_lib.empty_collection(("loss", *self.metric_names))
        metrics["grad_norm"] = metrics_lib.get("loss").empty()
        metrics[NONFINITE] = jnp.zeros((), jnp.int32)
        metrics[FIRST_NONFINITE] = jnp.full((), -1, jnp.int32)
        return metrics

    def empty_eval_metrics(self) -> dict[str, Any]:
        """An empty accumulator for ``evaluate``."""
        return metrics_lib.empty_collection(("loss", *self.metric_names))


def make_steps(
    model: nn.Module,
    loss: Loss,
    tx: optax.GradientTransformation,
    metric_names: Sequence[str] = (),
    *,
    augment: Augment | None = None,
    mesh: jax.sharding.Mesh | None = None,
    compiler_options: Mapping[str, str] | None = None,
) -> Steps:
    """Builds the jitted train, eval and predict functions.

    Args:
      model: a Linen module called as ``model.apply(variables, x, train=..., mask=...)``.
      loss: a ``jaxnn.losses.Loss``; the train loss is its weighted mean over the batch.
      tx: the optax optimizer.
      metric_names: names from ``jaxnn.metrics`` accumulated in train and eval.
      augment: optional ``(key, x_batch) -> x_batch`` applied to training batches only, with the
        key ``fold_in(fold_in(rng, step), 1)`` so it is a function of (seed, step).
      mesh: data parallelism: gathered batches are split over the mesh's ``data`` axis and the
        state, metrics and predictions come back replicated (see ``jaxnn.sharding``); ``x``
        and ``y`` may then be global arrays with their rows split the same way.
      compiler_options: XLA options for the three compilations (``jax.jit``'s
        ``compiler_options``), such as ``default_compiler_options("cpu")``; None: XLA's defaults.
    """
    names = ("loss", *tuple(metric_names))
    gather = functools.partial(_gather, mesh=mesh)
    train_step = _train_step_fn(model, loss, tx, names, augment, gather)
    eval_batch = _eval_batch_fn(model, loss, names, gather)
    # With a mesh, outputs are pinned replicated so every process can read them.
    out = {} if mesh is None else {"out_shardings": sharding.replicated(mesh)}
    out["compiler_options"] = dict(compiler_options) if compiler_options else None
    return Steps(
        train=jax.jit(
            _train_fn(train_step), donate_argnums=(0, 1), static_argnames=("k", "masked"), **out
        ),
        evaluate=jax.jit(
            _evaluate_fn(eval_batch), donate_argnums=(1,), static_argnames=("k",), **out
        ),
        predict=jax.jit(_predict_fn(model, loss), **out),
        metric_names=tuple(metric_names),
    )


def make_sweep_steps(
    model: nn.Module,
    loss: Loss,
    build_tx: Callable[[Mapping[str, Array]], optax.GradientTransformation],
    values: Mapping[str, Array],
    metric_names: Sequence[str] = (),
    *,
    augment: Augment | None = None,
    mesh: jax.sharding.Mesh | None = None,
    compiler_options: Mapping[str, str] | None = None,
) -> Steps:
    """``make_steps`` for K members trained at once: every step is ``jax.vmap`` of the single
    step over a stacked state (``jaxnn.sweep``).

    Member ``i`` trains with the optimizer ``build_tx(values_i)``, where ``values_i`` is row
    ``i`` of each array in ``values`` (shape ``(K,)``, e.g. ``{"learning_rate": lrs}``; empty
    when the members differ only in seed). The functions take and return stacked pytrees:

    - ``train(members, metrics, x, y, idx, weight, start, stop, *, k=1, masked=False)``:
      ``members`` is a ``jaxnn.sweep.Members`` (the stacked ``TrainState`` and an ``active``
      flag per member), ``metrics`` the stacked accumulator, ``idx`` shaped ``(num_batches, K,
      batch)`` (each member its own example order) and ``weight`` ``(num_batches, batch)``
      (shared). A member whose ``active`` flag is False keeps its state and metrics unchanged.
    - ``evaluate(variables, metrics, x, y, idx, weight, start, *, k=1)``: stacked variables and
      metrics, ``idx`` shaped ``(num_batches, K, batch)``.
    - ``predict(variables, x) -> (K, n, ...)``: every member's outputs for the same ``x``.

    With a ``mesh`` that has a ``member`` axis (``jaxnn.sharding.member_mesh``) the member axis
    of every stacked input and output is split over it (``spmd_axis_name``), each member's batch
    over ``data``.
    """
    names = ("loss", *tuple(metric_names))
    gather = functools.partial(_gather, mesh=mesh)
    eval_batch = _eval_batch_fn(model, loss, names, gather)
    axes = () if mesh is None else mesh.axis_names
    vmap = functools.partial(
        jax.vmap, spmd_axis_name=sharding.MEMBER_AXIS if sharding.MEMBER_AXIS in axes else None
    )
    sweep_step = _sweep_step_fn(model, loss, build_tx, values, names, augment, gather, vmap)

    def sweep_eval_batch(variables, metrics, x_all, y_all, idx, weight):
        one = functools.partial(eval_batch, x_all=x_all, y_all=y_all, weight=weight)
        return vmap(lambda v, m, i: one(v, m, idx=i))(variables, metrics, idx)

    predict = _predict_fn(model, loss)
    out = {} if mesh is None else {"out_shardings": sharding.member_sharding(mesh)}
    out["compiler_options"] = dict(compiler_options) if compiler_options else None
    return Steps(
        train=jax.jit(
            _sweep_train_fn(sweep_step),
            donate_argnums=(0, 1),
            static_argnames=("k", "masked"),
            **out,
        ),  # fmt: skip
        evaluate=jax.jit(
            _evaluate_fn(sweep_eval_batch), donate_argnums=(1,), static_argnames=("k",), **out
        ),
        predict=jax.jit(vmap(predict, in_axes=(0, None)), **out),
        metric_names=tuple(metric_names),
    )


def _sweep_step_fn(
    model, loss, build_tx, values, names, augment, gather, vmap
) -> Callable[..., Any]:
    """One optimizer step of every member: ``(members, metrics, x_all, y_all, idx, weight,
    masked) -> (members, metrics)``, the single step vmapped over the member axis (stopped
    members too: ``_sweep_train_fn`` puts their state back once per dispatch)."""

    def sweep_step(members, metrics, x_all, y_all, idx, weight, masked):
        def one(state, metrics, member_values, idx):
            step = _train_step_fn(model, loss, build_tx(member_values), names, augment, gather)
            return step(state, metrics, x_all, y_all, idx, weight, masked)

        state, metrics = vmap(one)(members.state, metrics, values, idx)
        return members.replace(state=state), metrics

    return sweep_step


def _sweep_train_fn(sweep_step: Callable[..., Any]) -> Callable[..., Any]:
    """``_train_fn`` of the sweep step, after which a stopped member's state and metrics are
    what they were before the dispatch: a select per dispatch, not per step (it costs a
    memory pass over the whole state, noticeable for an MLP's scanned steps)."""
    train_k = _train_fn(sweep_step)

    def train(members, metrics, x_all, y_all, idx, weight, start, stop, k=1, masked=False):
        new_members, new_metrics = train_k(
            members, metrics, x_all, y_all, idx, weight, start, stop, k=k, masked=masked
        )

        def keep(new, old):  # a stopped member stands still
            active = members.active.reshape(members.active.shape + (1,) * (new.ndim - 1))
            return jnp.where(active, new, old)

        state = jax.tree.map(keep, new_members.state, members.state)
        return members.replace(state=state), jax.tree.map(keep, new_metrics, metrics)

    return train


def _gather(
    x_all: Array, y_all: Array, idx: Array, *, mesh: jax.sharding.Mesh | None
) -> tuple[Array, Array]:
    """A batch's rows of ``x`` and ``y``; with a mesh, split over its ``data`` axis."""
    x, y = gather_rows(x_all, idx), gather_rows(y_all, idx)
    if mesh is not None:  # each device computes on its part of the batch
        x = jax.lax.with_sharding_constraint(x, sharding.row_sharding(mesh))
        y = jax.lax.with_sharding_constraint(y, sharding.row_sharding(mesh))
    return x, y


def _train_step_fn(
    model: nn.Module,
    loss: Loss,
    tx: optax.GradientTransformation,
    names: tuple[str, ...],
    augment: Augment | None,
    gather: Callable[[Array, Array, Array], tuple[Array, Array]],
) -> Callable[..., tuple[TrainState, dict[str, Any]]]:
    """One optimizer step on one batch: ``(state, metrics, x_all, y_all, idx, weight, masked)
    -> (state, metrics)``, the batch's metrics merged into ``metrics``."""

    def train_step(state: TrainState, metrics, x_all, y_all, idx, weight, masked):
        x, y = gather(x_all, y_all, idx)
        step_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        dropout_key = jax.random.fold_in(step_key, 0)
        if augment is not None:
            x = augment(jax.random.fold_in(step_key, 1), x)
        loss_fn = _loss_fn(model, loss, state.batch_stats, x, y, weight, masked, dropout_key)
        (loss_value, (outputs, per_example, updates)), grads = jax.value_and_grad(
            loss_fn, has_aux=True
        )(state.params)
        param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, param_updates),
            batch_stats=updates["batch_stats"] if state.batch_stats else state.batch_stats,
            opt_state=opt_state,
        )
        batch_metrics = metrics_lib.collection_from_model_output(
            names, outputs=outputs, targets=y, weights=weight, loss=per_example
        )
        merged = _merge_train_metrics(metrics, batch_metrics, grads, loss_value, state.step)
        return new_state, merged

    return train_step


def _loss_fn(model, loss, batch_stats, x, y, weight, masked, dropout_key) -> Callable[..., Any]:
    """``params -> (mean loss, (outputs, per-example loss, BatchNorm updates))`` for one batch."""
    has_bn = bool(batch_stats)

    def loss_fn(params):
        variables = {"params": params}
        if has_bn:
            variables["batch_stats"] = batch_stats
        outputs, updates = model.apply(
            variables,
            x,
            train=True,
            # A mask only where padding can be: masked BatchNorm statistics cost a noticeable share
            # of a CNN step on XLA CPU (docs/design-notes.md), so full batches skip it.
            mask=weight if masked else None,
            rngs={"dropout": dropout_key},
            mutable=["batch_stats"] if has_bn else [],
        )
        per_example = loss.per_example(outputs, y)
        return weighted_mean(per_example, weight), (outputs, per_example, updates)

    return loss_fn


def _merge_train_metrics(
    metrics: dict[str, Any],
    batch_metrics: dict[str, Any],
    grads: Any,
    loss_value: Array,
    step: Array,
) -> dict[str, Any]:
    """The train accumulator after one more step: its metrics merged with the batch's and the
    gradient norm, and the NaN/Inf counters updated from ``loss_value``."""
    # The "grad_norm" entry reuses the mean-loss metric: a running mean of one value per step.
    batch_metrics["grad_norm"] = metrics_lib.get("loss").from_model_output(
        outputs=None,
        targets=None,
        weights=jnp.ones((1,), jnp.float32),
        loss=optax.tree.norm(grads)[None],
    )
    merged = metrics_lib.merge_collections(_without_counters(metrics), batch_metrics)
    # Counts the steps whose loss was NaN/Inf, so the host can stop a diverged run at the next
    # fetch without a device-to-host sync per step.
    bad = ~jnp.isfinite(loss_value)
    merged[NONFINITE] = metrics[NONFINITE] + bad.astype(jnp.int32)
    first = metrics[FIRST_NONFINITE]
    merged[FIRST_NONFINITE] = jnp.where((first < 0) & bad, step + 1, first)
    return merged


def _train_fn(train_step: Callable[..., Any]) -> Callable[..., Any]:
    """The jitted ``train`` of :class:`Steps`: ``k`` steps from batch ``start``, none past
    ``stop``."""

    def train(state, metrics, x_all, y_all, idx, weight, start, stop, k=1, masked=False):
        idx = jax.lax.dynamic_slice_in_dim(idx, start, k)
        weight = jax.lax.dynamic_slice_in_dim(weight, start, k)
        if k == 1:  # a plain step: no while loop for XLA to schedule around
            return train_step(state, metrics, x_all, y_all, idx[0], weight[0], masked)

        def body(carry, batch):
            i, batch_idx, batch_weight = batch
            return jax.lax.cond(
                start + i < stop,
                lambda c: train_step(*c, x_all, y_all, batch_idx, batch_weight, masked),
                lambda c: c,
                carry,
            ), None

        return jax.lax.scan(body, (state, metrics), (jnp.arange(k), idx, weight))[0]

    return train


def _eval_batch_fn(
    model: nn.Module,
    loss: Loss,
    names: tuple[str, ...],
    gather: Callable[[Array, Array, Array], tuple[Array, Array]],
) -> Callable[..., dict[str, Any]]:
    """``(variables, metrics, x_all, y_all, idx, weight) -> metrics`` with one more batch merged
    in; dropout off and running BatchNorm statistics."""

    def eval_batch(variables, metrics, x_all, y_all, idx, weight):
        x, y = gather(x_all, y_all, idx)
        outputs = model.apply(variables, x, train=False)
        per_example = loss.per_example(outputs, y)
        batch_metrics = metrics_lib.collection_from_model_output(
            names, outputs=outputs, targets=y, weights=weight, loss=per_example
        )
        return metrics_lib.merge_collections(metrics, batch_metrics)

    return eval_batch


def _evaluate_fn(eval_batch: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """The jitted ``evaluate`` of :class:`Steps`: ``k`` batches from batch ``start``."""

    def evaluate(variables, metrics, x_all, y_all, idx, weight, start, k=1):
        idx = jax.lax.dynamic_slice_in_dim(idx, start, k)
        weight = jax.lax.dynamic_slice_in_dim(weight, start, k)
        if k == 1:
            return eval_batch(variables, metrics, x_all, y_all, idx[0], weight[0])

        def body(metrics, batch):
            return eval_batch(variables, metrics, x_all, y_all, *batch), None

        return jax.lax.scan(body, metrics, (idx, weight))[0]

    return evaluate


def _predict_fn(model: nn.Module, loss: Loss) -> Callable[[Any, Array], Array]:
    """The jitted ``predict`` of :class:`Steps`: outputs after the loss's output activation."""

    def predict(variables, x):
        return loss.output_activation(model.apply(variables, x, train=False))

    return predict


def _without_counters(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A train accumulator without its NaN/Inf step counters: the mergeable metrics."""
    return {k: v for k, v in metrics.items() if k not in (NONFINITE, FIRST_NONFINITE)}


def split_train_metrics(metrics: dict[str, Any]) -> tuple[dict[str, Any], int, int]:
    """Splits a train accumulator into (metrics, NaN/Inf step count, first such step or -1)."""
    return _without_counters(metrics), int(metrics[NONFINITE]), int(metrics[FIRST_NONFINITE])


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or Inf."""


def check_finite(metrics: dict[str, Any], epoch: int) -> None:
    """Raises ``TrainingDivergedError`` naming the epoch and step of the first NaN/Inf loss.

    Called before anything is logged or checkpointed, so no broken state is ever saved.
    """
    _, count, first = split_train_metrics(metrics)
    if count:
        raise TrainingDivergedError(
            f"Training diverged in epoch {epoch + 1} at global step {first}: the loss was NaN or "
            f"Inf in {count} step(s). Lower the learning rate, add gradient clipping "
            "(optimizer clip_norm) or check the inputs."
        )
