"""Argument checks at the Trainer's boundary: every array and option is checked here, against the
model and the loss, before anything compiles, with errors that name the argument, what was
expected and what was given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnn import losses as losses_lib
from jaxnn import metrics as metrics_lib
from jaxnn import optim
from jaxnn.callbacks import Callback
from jaxnn.sharding import aligned_empty, put_global

__all__ = [
    "ModelInputs",
    "as_array",
    "check_int",
    "check_optimizer",
    "check_validation_split",
    "training_arrays",
    "with_variables",
]


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int, or a ValueError unless it is an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}; got {value!r}")
    return int(value)


def as_array(name: str, value: Any) -> np.ndarray:
    """``value`` as a numeric numpy array with a leading example axis."""
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


def check_validation_split(validation_split: Any) -> float:
    """A fraction in [0, 1)."""
    if not isinstance(validation_split, int | float) or not 0 <= validation_split < 1:
        raise ValueError(f"validation_split: expected a float in [0, 1); got {validation_split!r}")
    return float(validation_split)


def check_optimizer(optimizer: Any) -> optax.GradientTransformation | dict[str, Any]:
    """An optax transformation as it is, or a name / config dict checked by ``jaxnn.optim``."""
    if isinstance(optimizer, optax.GradientTransformation):
        return optimizer
    optimizer = {"name": optimizer} if isinstance(optimizer, str) else dict(optimizer)
    optim.check_config(optimizer)  # names, keys and types, before anything is built
    return optimizer


# The metric a task reports when none is named (Keras users name one; most want this one).
_DEFAULT_METRIC = {"multiclass": "accuracy", "binary": "binary_accuracy", "regression": "mae"}


def check_metric_names(
    metrics: str | Sequence[str] | None, loss: losses_lib.Loss
) -> tuple[str, ...]:
    """Metric names from ``jaxnn.metrics`` that make sense for ``loss``'s outputs (a single name
    may be a string); None gives the task's usual one."""
    if metrics is None:
        return (_DEFAULT_METRIC[loss.task],)
    if isinstance(metrics, str):
        metrics = [metrics]
    for name in metrics:
        metric = metrics_lib.get(name)  # raises, listing the valid names
        if loss.task not in metric.tasks:
            fits = [n for n in metrics_lib.names() if loss.task in metrics_lib.get(n).tasks]
            raise ValueError(
                f"metrics: {name!r} measures {' or '.join(metric.tasks)} outputs, and the loss "
                f"{loss.name!r} trains a {loss.task} model; expected one of {fits}"
            )
    return tuple(metrics)


def check_compiler_options(options: Any) -> Mapping[str, str] | None:
    """None (the platform's defaults) or a dict of XLA option names to values."""
    if options is not None and not isinstance(options, Mapping):
        raise ValueError(
            "compiler_options: expected a dict of XLA option names to values; got "
            f"{type(options).__name__}"
        )
    return options


def check_callbacks(callbacks: Any) -> list[Any]:
    """A list of ``jaxnn.callbacks.Callback`` objects (a plain function is refused with the fix)."""
    callbacks = list(callbacks)
    for callback in callbacks:
        if not isinstance(callback, Callback):
            raise ValueError(
                f"callbacks: expected jaxnn.Callback objects; got {callback!r}. Subclass "
                "jaxnn.Callback and override a hook, e.g. on_epoch_end(self, loop, epoch, logs)"
            )
    return callbacks


def check_steps_per_dispatch(value: Any) -> int | str:
    """``"auto"`` or an integer >= 1."""
    if value != "auto":
        check_int("steps_per_dispatch", value, 1)
    return value


def check_mesh(mesh: Any) -> jax.sharding.Mesh | None:
    """None (every device) or a ``jax.sharding.Mesh``."""
    if mesh is not None and not isinstance(mesh, jax.sharding.Mesh):
        raise ValueError(f"mesh: expected a jax.sharding.Mesh; got {type(mesh).__name__}")
    return mesh


class ModelInputs:
    """Checks arrays against one model and loss, and remembers the example shape they fix.

    The first ``x`` checked fixes the example shape (found by abstract evaluation of the model,
    so nothing compiles); later arrays must match it.
    """

    def __init__(self, model: nn.Module, loss: losses_lib.Loss):
        if not isinstance(model, nn.Module):
            raise ValueError(f"model: expected a flax.linen Module; got {type(model).__name__}")
        self.model = model
        self.loss = loss
        self.input_shape: tuple[int, ...] | None = None
        self.num_outputs: int | None = None

    def check_x(self, name: str, x: np.ndarray) -> None:
        """Checks x against the model before anything compiles (abstract evaluation only)."""
        _check_finite(name, x)
        if self.input_shape is not None:
            if tuple(x.shape[1:]) != self.input_shape:
                raise ValueError(
                    f"{name}: expected examples of shape {self.input_shape} (what the model was "
                    f"built with); got {tuple(x.shape[1:])}"
                )
            return
        logits = self._abstract_logits(name, x)
        if logits.ndim != 2 or logits.shape[0] != len(x):
            raise ValueError(
                f"model: expected outputs of shape (batch, num_outputs); got {logits.shape}"
            )
        self.input_shape = tuple(x.shape[1:])
        self.num_outputs = int(logits.shape[1])

    def _abstract_logits(self, name: str, x: np.ndarray) -> jax.ShapeDtypeStruct:
        sample = jax.ShapeDtypeStruct(x.shape, jnp.float32)

        def init(s):  # the key made inside: an eager one would compile two small programs
            return self.model.init_with_output(jax.random.key(0), s, train=False)

        try:
            out = jax.eval_shape(init, sample)
        except ValueError as error:
            if str(error).startswith((f"{name}:", "x:", "model.")):  # already says what to do
                raise ValueError(str(error).replace("x:", f"{name}:", 1)) from None
            raise ValueError(
                f"{name}: examples of shape {tuple(x.shape[1:])} do not fit the model: {error}"
            ) from None
        except (TypeError, ZeroDivisionError) as error:
            raise ValueError(
                f"{name}: examples of shape {tuple(x.shape[1:])} do not fit the model: {error}"
            ) from None
        return out[0]

    def prepare_x(self, x: Any, name: str = "x") -> np.ndarray:
        """``x`` checked and as float32 (in aligned memory, which a CPU device uses in place)."""
        x = as_array(name, x)
        self.check_x(name, x)
        if x.dtype != np.float32:
            converted = aligned_empty(x.shape, np.float32)
            np.copyto(converted, x, casting="unsafe")
            x = converted
        return x

    def prepare_xy(self, x: Any, y: Any, prefix: str = "") -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` checked against the model and the loss: float32 x, int32 or float32 y."""
        x = as_array(f"{prefix}x", x)
        y = as_array(f"{prefix}y", y)
        if len(x) != len(y):
            raise ValueError(
                f"{prefix}x and {prefix}y: expected the same number of examples; got "
                f"{len(x)} in {prefix}x and {len(y)} in {prefix}y"
            )
        if len(x) == 0:
            raise ValueError(f"{prefix}x: expected at least one example; got 0")
        x = self.prepare_x(x, f"{prefix}x")
        losses_lib.check_targets(self.loss, y, self.num_outputs, argument=f"{prefix}y")
        if self.loss.target_kind == "int_labels":
            return x, y.reshape(len(y)).astype(np.int32)
        return x, y.astype(np.float32, copy=False)


def training_arrays(
    model_inputs: ModelInputs,
    x: Any,
    y: Any,
    validation_split: Any,
    validation_data: Any,
    *,
    seed: int,
    multiprocess: bool,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray] | None]:
    """``fit``'s arrays checked: ``((x, y), (x_val, y_val) or None)``, ``validation_data``
    checked like ``(x, y)``, or a ``validation_split`` carved from ``(x, y)`` by
    ``jaxnn.data.train_validation_split``."""
    validation_split = check_validation_split(validation_split)
    x, y = model_inputs.prepare_xy(x, y)
    if validation_data is not None:
        if not isinstance(validation_data, tuple | list) or len(validation_data) != 2:
            raise ValueError("validation_data: expected a tuple (x_val, y_val)")
        return (x, y), model_inputs.prepare_xy(*validation_data, prefix="validation_data ")
    if not validation_split:
        return (x, y), None
    if multiprocess:
        raise ValueError(
            "validation_split: not available in a multi-process run (each process holds "
            "only its rows); split the data first and pass validation_data"
        )
    from jaxnn.data.preprocess import train_validation_split

    x, y, x_val, y_val = train_validation_split(x, y, validation_split, seed)
    return (x, y), (x_val, y_val)


def _leaf_description(leaf: Any) -> str:
    dtype = getattr(leaf, "dtype", None) or np.asarray(leaf).dtype
    return f"{np.dtype(dtype).name}{list(np.shape(leaf))}"


def _structure_mismatch(live_leaves: list, new_leaves: list) -> str:
    """The first path (in the model's order) where two trees of variables differ, described."""
    new = {jax.tree_util.keystr(path): leaf for path, leaf in new_leaves}
    live = {jax.tree_util.keystr(path): leaf for path, leaf in live_leaves}
    for path, leaf in live.items():
        if path not in new:
            return f"variables{path}: expected {_leaf_description(leaf)}; got nothing"
    for path, leaf in new.items():
        if path not in live:
            return (
                f"variables{path}: expected nothing (the model has no such variable); got "
                f"{_leaf_description(leaf)}"
            )
    return "variables: expected the model's tree structure; got another one with the same paths"


def _leaf_description(leaf: Any) -> str:
    return f"{np.dtype(leaf.dtype).name}{list(np.shape(leaf))}"


def with_variables(state: Any, variables: Any) -> Any:
    """``state`` (a ``jaxnn.TrainState``) with its params and batch_stats replaced by
    ``variables`` (``{"params": ..., "batch_stats": ...}``; ``batch_stats`` may be left out when
    the state has none), each new leaf checked against the live one and placed with its sharding
    (``jaxnn.sharding.put_global``); the optimizer state, step and key stay as they are.

    Raises:
      RuntimeError: ``state`` is None (the Trainer has not been initialised).
      ValueError: keys, tree structure, a shape or a dtype that differ, naming the first path.

    Example::

        state = with_variables(trainer.state, jaxnn.checkpoint.restore(workdir, "best"))
    """
    if state is None:
        raise RuntimeError(
            "variables: the Trainer has no state yet: call initialize(x[:1], steps_per_epoch=1) "
            "or fit() before assigning variables"
        )
    if not isinstance(variables, Mapping):
        raise ValueError(
            "variables: expected a dict {'params': ..., 'batch_stats': ...}; got "
            f"{type(variables).__name__}"
        )
    live = {"params": state.params, "batch_stats": state.batch_stats}
    new = {"params": variables.get("params"), "batch_stats": variables.get("batch_stats") or {}}
    if set(variables) - set(live) or "params" not in variables:
        raise ValueError(
            f"variables: expected the keys ['params', 'batch_stats']; got {sorted(variables)}"
        )
    live_leaves, live_tree = jax.tree_util.tree_flatten_with_path(live)
    new_leaves, new_tree = jax.tree_util.tree_flatten_with_path(new)
    if live_tree != new_tree:
        raise ValueError(_structure_mismatch(live_leaves, new_leaves))
    placed = []
    for (path, old), (_, leaf) in zip(live_leaves, new_leaves, strict=True):
        if _leaf_description(leaf) != _leaf_description(old):
            raise ValueError(
                f"variables{jax.tree_util.keystr(path)}: expected {_leaf_description(old)}; "
                f"got {_leaf_description(leaf)}"
            )
        placed.append(put_global(np.asarray(leaf), old.sharding))
    replaced = jax.tree_util.tree_unflatten(live_tree, placed)
    return state.replace(params=replaced["params"], batch_stats=replaced["batch_stats"])
