"""Losses: pure functions of (outputs, targets, weights) that return a weighted mean.

Every loss takes the model's raw outputs (logits for the classification losses) and comes in two
forms, after Optax's ``optax.losses``:

* a per-example form, ``per_example(outputs, targets) -> (B,)``;
* the batch form, ``fn(outputs, targets, weights=None) -> ()``, the weighted mean

  .. math:: L = \\frac{\\sum_i w_i \\, \\ell_i}{\\sum_i w_i}

  with :math:`L = 0` when :math:`\\sum_i w_i = 0`. Padded examples carry :math:`w_i = 0`, so they
  count nowhere, and a dataset whose size is not a multiple of the batch gets its exact mean.

``get(name)`` returns a :class:`Loss`, which bundles the per-example function with what the rest of
the package needs to know about it (target kind, output activation, task). ``check_targets``
validates targets on the host, in numpy, before anything compiles. ``get(name,
label_smoothing=alpha)`` smooths the targets of the classification losses, as Keras'
``label_smoothing`` and PyTorch's ``CrossEntropyLoss(label_smoothing=...)`` (integer labels too).

Example::

    loss = losses.get("sparse_categorical_crossentropy")
    losses.check_targets(loss, y_train, num_outputs=10)
    value = loss(logits, labels, weights)           # scalar
    probabilities = loss.output_activation(logits)  # what predict returns
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "Loss",
    "binary_crossentropy",
    "binary_crossentropy_per_example",
    "categorical_crossentropy",
    "categorical_crossentropy_per_example",
    "check_targets",
    "get",
    "mean_absolute_error",
    "mean_absolute_error_per_example",
    "mean_squared_error",
    "mean_squared_error_per_example",
    "names",
    "sparse_categorical_crossentropy",
    "sparse_categorical_crossentropy_per_example",
    "weighted_mean",
]

Array = jax.Array
ArrayLike = jax.typing.ArrayLike
PerExample = Callable[[Array, Array], Array]

TARGET_KINDS = ("int_labels", "one_hot", "binary", "real")
TASKS = ("multiclass", "binary", "regression")


def weighted_mean(values: ArrayLike, weights: ArrayLike | None = None) -> Array:
    """The weighted mean ``Σ w·v / Σ w`` of per-example values, and 0 when ``Σ w == 0``.

    .. math:: \\bar v = \\frac{\\sum_i w_i v_i}{\\sum_i w_i}

    The all-zero-weight case returns 0 with zero gradients (no NaN from 0/0), so a batch made only
    of padding is harmless.

    Args:
      values: per-example values, shape ``(B,)``.
      weights: per-example weights, shape ``(B,)``; ``None`` means all ones.

    Returns:
      A scalar.

    Example::

        >>> float(weighted_mean(jnp.array([1.0, 3.0, 100.0]), jnp.array([1.0, 1.0, 0.0])))
        2.0
    """
    values = jnp.asarray(values)
    if weights is None:
        weights = jnp.ones_like(values)
    weights = jnp.asarray(weights, values.dtype).reshape(values.shape)
    total = jnp.sum(weights)
    positive = total > 0
    # The double `where` keeps both the value and its gradient finite when every weight is 0.
    return jnp.where(positive, jnp.sum(values * weights) / jnp.where(positive, total, 1.0), 0.0)


def _batch_size(outputs: Array, argument: str = "outputs") -> int:
    if outputs.ndim == 0:
        raise ValueError(
            f"{argument}: expected an array with a leading batch dimension; got a scalar of "
            "shape ()"
        )
    return outputs.shape[0]


def _regression_pair(outputs: ArrayLike, targets: ArrayLike) -> tuple[Array, Array]:
    """Outputs and targets as ``(B, D)``; targets ``(B,)`` are fine for outputs ``(B, 1)``."""
    outputs, targets = jnp.asarray(outputs), jnp.asarray(targets)
    batch = _batch_size(outputs)
    if targets.size != outputs.size or (targets.ndim > 0 and targets.shape[0] != batch):
        raise ValueError(
            f"targets: expected as many values per example as outputs, shape {outputs.shape} "
            f"(or {(batch,)} for one output); got {targets.shape}"
        )
    outputs = outputs.reshape(batch, -1)
    return outputs, targets.reshape(outputs.shape).astype(outputs.dtype)


def mean_squared_error_per_example(outputs: ArrayLike, targets: ArrayLike) -> Array:
    """Per-example squared error, averaged over output dimensions.

    .. math:: \\ell_i = \\frac{1}{D} \\sum_{d=1}^{D} (\\hat y_{id} - y_{id})^2

    Args:
      outputs: predictions, shape ``(B,)`` or ``(B, D)``.
      targets: targets with the same number of values (``(B,)`` is fine for outputs ``(B, 1)``).

    Returns:
      Shape ``(B,)``.

    Example::

        >>> mean_squared_error_per_example(jnp.array([[1.0, 2.0]]), jnp.array([[0.0, 0.0]]))
        Array([2.5], dtype=float32)
    """
    outputs, targets = _regression_pair(outputs, targets)
    return jnp.mean(optax.losses.squared_error(outputs, targets), axis=-1)


def mean_absolute_error_per_example(outputs: ArrayLike, targets: ArrayLike) -> Array:
    """Per-example absolute error, averaged over output dimensions.

    .. math:: \\ell_i = \\frac{1}{D} \\sum_{d=1}^{D} |\\hat y_{id} - y_{id}|

    Args:
      outputs: predictions, shape ``(B,)`` or ``(B, D)``.
      targets: targets with the same number of values (``(B,)`` is fine for outputs ``(B, 1)``).

    Returns:
      Shape ``(B,)``.

    Example::

        >>> mean_absolute_error_per_example(jnp.array([[1.0, -2.0]]), jnp.zeros((1, 2)))
        Array([1.5], dtype=float32)
    """
    outputs, targets = _regression_pair(outputs, targets)
    return jnp.mean(jnp.abs(outputs - targets), axis=-1)


def binary_crossentropy_per_example(outputs: ArrayLike, targets: ArrayLike) -> Array:
    """Per-example binary cross-entropy from logits (stable for any logit size).

    With :math:`z_i` the logit and :math:`y_i \\in [0, 1]` the (possibly soft) target,

    .. math:: \\ell_i = -y_i \\log \\sigma(z_i) - (1 - y_i) \\log \\sigma(-z_i)

    computed with ``log_sigmoid`` (``optax.sigmoid_binary_cross_entropy``), so logits of ±100
    give finite values and gradients.

    Args:
      outputs: logits, shape ``(B,)`` or ``(B, 1)``.
      targets: targets in ``[0, 1]``, shape ``(B,)`` or ``(B, 1)``.

    Returns:
      Shape ``(B,)``.

    Example::

        >>> binary_crossentropy_per_example(jnp.array([-100.0]), jnp.array([1.0]))
        Array([100.], dtype=float32)
    """
    return optax.sigmoid_binary_cross_entropy(*_binary_pair(outputs, targets))


def _binary_pair(outputs: ArrayLike, targets: ArrayLike) -> tuple[Array, Array]:
    """Logits and float targets, both ``(B,)``."""
    outputs, targets = jnp.asarray(outputs), jnp.asarray(targets)
    batch = _batch_size(outputs)
    if outputs.size != batch or targets.size != batch:
        raise ValueError(
            f"outputs, targets: expected one logit and one target per example for "
            f"binary_crossentropy, outputs of shape ({batch},) or ({batch}, 1) and targets of the "
            f"same size; got outputs {outputs.shape} and targets {targets.shape}"
        )
    logits = outputs.reshape(batch)
    return logits, targets.reshape(batch).astype(logits.dtype)


def categorical_crossentropy_per_example(outputs: ArrayLike, targets: ArrayLike) -> Array:
    """Per-example softmax cross-entropy with one-hot or soft targets.

    .. math:: \\ell_i = -\\sum_{c} y_{ic} \\log \\operatorname{softmax}(z_i)_c

    Args:
      outputs: logits, shape ``(B, C)``.
      targets: one-hot or soft class probabilities, shape ``(B, C)``.

    Returns:
      Shape ``(B,)``.

    Example::

        >>> categorical_crossentropy_per_example(jnp.zeros((1, 4)), jnp.eye(4)[:1])  # log 4
        Array([1.3862944], dtype=float32)
    """
    return optax.softmax_cross_entropy(*_categorical_pair(outputs, targets))


def _categorical_pair(outputs: ArrayLike, targets: ArrayLike) -> tuple[Array, Array]:
    """Logits ``(B, C)`` and targets ``(B, C)`` in the logits' dtype."""
    outputs, targets = jnp.asarray(outputs), jnp.asarray(targets)
    if outputs.ndim != 2 or targets.shape != outputs.shape:
        raise ValueError(
            f"outputs, targets: expected outputs of shape (B, C) and targets of the same shape "
            f"(one-hot or soft) for categorical_crossentropy; got outputs {outputs.shape} and "
            f"targets {targets.shape}. For integer labels use 'sparse_categorical_crossentropy'."
        )
    return outputs, targets.astype(outputs.dtype)


def sparse_categorical_crossentropy_per_example(outputs: ArrayLike, targets: ArrayLike) -> Array:
    """Per-example softmax cross-entropy with integer labels.

    .. math:: \\ell_i = -\\log \\operatorname{softmax}(z_i)_{y_i}
                      = \\operatorname{logsumexp}(z_i) - z_{i y_i}

    Args:
      outputs: logits, shape ``(B, C)``.
      targets: integer labels in ``[0, C)``, shape ``(B,)`` or ``(B, 1)``.

    Returns:
      Shape ``(B,)``.

    Example::

        >>> sparse_categorical_crossentropy_per_example(jnp.zeros((1, 4)), jnp.array([2]))
        Array([1.3862944], dtype=float32)
    """
    return optax.softmax_cross_entropy_with_integer_labels(*_sparse_pair(outputs, targets))


def _sparse_pair(outputs: ArrayLike, targets: ArrayLike) -> tuple[Array, Array]:
    """Logits ``(B, C)`` and int32 labels ``(B,)``."""
    outputs, targets = jnp.asarray(outputs), jnp.asarray(targets)
    if outputs.ndim != 2 or targets.size != outputs.shape[0]:
        raise ValueError(
            f"outputs, targets: expected outputs of shape (B, C) and integer targets of shape "
            f"(B,) for sparse_categorical_crossentropy; got outputs {outputs.shape} and targets "
            f"{targets.shape}. For one-hot targets use 'categorical_crossentropy'."
        )
    return outputs, targets.reshape(outputs.shape[0]).astype(jnp.int32)


# Label smoothing (Szegedy et al. 2016; Müller et al. 2019, "When does label smoothing help?").
# Each takes the unsmoothed loss's arguments and the smoothing factor alpha in [0, 1).


def _smoothed_categorical(outputs: ArrayLike, targets: ArrayLike, alpha: float) -> Array:
    """Cross-entropy against ``(1 - alpha) * y + alpha / C`` (Keras' label_smoothing)."""
    logits, targets = _categorical_pair(outputs, targets)
    return optax.softmax_cross_entropy(logits, optax.smooth_labels(targets, alpha))


def _smoothed_sparse(outputs: ArrayLike, targets: ArrayLike, alpha: float) -> Array:
    """Cross-entropy against the smoothed one-hot labels, ``C = outputs.shape[-1]`` (PyTorch's
    ``CrossEntropyLoss(label_smoothing=alpha)``)."""
    logits, labels = _sparse_pair(outputs, targets)
    one_hot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    return optax.softmax_cross_entropy(logits, optax.smooth_labels(one_hot, alpha))


def _smoothed_binary(outputs: ArrayLike, targets: ArrayLike, alpha: float) -> Array:
    """Binary cross-entropy against ``y * (1 - alpha) + alpha / 2`` (Keras' label_smoothing)."""
    logits, targets = _binary_pair(outputs, targets)
    return optax.sigmoid_binary_cross_entropy(logits, targets * (1.0 - alpha) + 0.5 * alpha)


_SMOOTHED: dict[str, Callable[[ArrayLike, ArrayLike, float], Array]] = {
    "categorical_crossentropy": _smoothed_categorical,
    "sparse_categorical_crossentropy": _smoothed_sparse,
    "binary_crossentropy": _smoothed_binary,
}


def _check_label_smoothing(value: object) -> None:
    """A real number (not a bool) in ``[0, 1)``; NaN never is."""
    real = isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)
    if not (real and 0 <= value < 1):
        raise ValueError(
            f"label_smoothing: expected a real number in [0, 1) (0 = no smoothing, 0.1 is usual); "
            f"got {value!r}"
        )


def _reduced(per_example: PerExample, name: str) -> Callable[..., Array]:
    def loss(outputs: ArrayLike, targets: ArrayLike, weights: ArrayLike | None = None) -> Array:
        return weighted_mean(per_example(outputs, targets), weights)

    loss.__name__ = loss.__qualname__ = name
    loss.__doc__ = (
        f"The weighted mean over examples of :func:`{per_example.__name__}`.\n\n"
        ".. math:: L = \\sum_i w_i \\ell_i / \\sum_i w_i  (0 when every weight is 0)\n\n"
        "Args:\n"
        "  outputs: model outputs (logits for the classification losses).\n"
        "  targets: batch targets.\n"
        "  weights: optional ``(B,)`` example weights; 0 marks padding.\n\n"
        "Returns:\n"
        "  A scalar.\n\n"
        "Example::\n\n"
        f"    value = {name}(outputs, targets, weights)\n"
    )
    return loss


mean_squared_error = _reduced(mean_squared_error_per_example, "mean_squared_error")
mean_absolute_error = _reduced(mean_absolute_error_per_example, "mean_absolute_error")
binary_crossentropy = _reduced(binary_crossentropy_per_example, "binary_crossentropy")
categorical_crossentropy = _reduced(
    categorical_crossentropy_per_example, "categorical_crossentropy"
)
sparse_categorical_crossentropy = _reduced(
    sparse_categorical_crossentropy_per_example, "sparse_categorical_crossentropy"
)


def _identity(outputs: Array) -> Array:
    return outputs


_softmax = functools.partial(jax.nn.softmax, axis=-1)


@dataclasses.dataclass(frozen=True)
class Loss:
    """A loss and what the rest of the package needs to know about it.

    Attributes:
      name: the registry name (or the user function's name).
      per_example: ``(outputs, targets) -> (B,)``.
      target_kind: ``"int_labels"``, ``"one_hot"``, ``"binary"`` or ``"real"``; drives
        :func:`check_targets`.
      output_activation: maps outputs to predictions (softmax, sigmoid or identity); used by
        ``predict``.
      task: ``"multiclass"``, ``"binary"`` or ``"regression"``.
      label_smoothing: the smoothing factor ``per_example`` applies to the targets (0: none);
        recorded here, applied by ``per_example`` (see :func:`get`).

    Example::

        loss = Loss("mse", mean_squared_error_per_example, "real", lambda x: x, "regression")
        value = loss(outputs, targets, weights)
    """

    name: str
    per_example: PerExample
    target_kind: str
    output_activation: Callable[[Array], Array]
    task: str
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.target_kind not in TARGET_KINDS:
            raise ValueError(
                f"target_kind: expected one of {TARGET_KINDS}; got {self.target_kind!r}"
            )
        if self.task not in TASKS:
            raise ValueError(f"task: expected one of {TASKS}; got {self.task!r}")
        _check_label_smoothing(self.label_smoothing)

    def __call__(
        self, outputs: ArrayLike, targets: ArrayLike, weights: ArrayLike | None = None
    ) -> Array:
        """The weighted mean ``Σ w·ℓ / Σ w`` of the per-example loss (0 if ``Σ w == 0``)."""
        return weighted_mean(self.per_example(outputs, targets), weights)


_REGISTRY: dict[str, Loss] = {}
for _loss in (
    Loss("mse", mean_squared_error_per_example, "real", _identity, "regression"),
    Loss("mae", mean_absolute_error_per_example, "real", _identity, "regression"),
    Loss(
        "binary_crossentropy", binary_crossentropy_per_example, "binary", jax.nn.sigmoid, "binary"
    ),
    Loss(
        "categorical_crossentropy",
        categorical_crossentropy_per_example,
        "one_hot",
        _softmax,
        "multiclass",
    ),
    Loss(
        "sparse_categorical_crossentropy",
        sparse_categorical_crossentropy_per_example,
        "int_labels",
        _softmax,
        "multiclass",
    ),
):
    _REGISTRY[_loss.name] = _loss
_ALIASES = {"mean_squared_error": "mse", "mean_absolute_error": "mae"}


def names() -> list[str]:
    """The names :func:`get` accepts, long aliases included, sorted.

    Example::

        >>> "mse" in names()
        True
    """
    return sorted([*_REGISTRY, *_ALIASES])


def get(name_or_callable: str | Loss | PerExample, *, label_smoothing: float = 0.0) -> Loss:
    """Resolves a loss by name, passes a :class:`Loss` through, or wraps a user function.

    A plain callable ``(outputs, targets) -> (B,)`` becomes a regression ``Loss`` (identity output
    activation, ``target_kind="real"``); build a :class:`Loss` yourself for anything else.

    With ``label_smoothing`` :math:`\\alpha > 0` the classification losses train against smoothed
    targets, as Keras' ``label_smoothing`` and PyTorch's ``CrossEntropyLoss(label_smoothing=)``:

    * ``categorical_crossentropy`` and ``sparse_categorical_crossentropy`` (its integer labels
      one-hot over the :math:`C` outputs): :math:`y' = (1 - \\alpha)\\, y + \\alpha / C`
      (``optax.smooth_labels``);
    * ``binary_crossentropy``: :math:`y' = (1 - \\alpha)\\, y + \\alpha / 2`.

    The loss keeps its name, task and output activation (predictions and metrics use the raw
    outputs); only the loss value and its gradient change.

    Args:
      name_or_callable: one of :func:`names`, a ``Loss``, or a per-example function.
      label_smoothing: :math:`\\alpha \\in [0, 1)`; 0 returns the registry's ``Loss`` itself.

    Returns:
      A :class:`Loss`; the same object for the same name and ``label_smoothing``.

    Raises:
      ValueError: for an unknown name (the message lists the valid ones), a ``label_smoothing``
        outside ``[0, 1)``, or a non-zero one for a regression loss or for a ``Loss`` or
        callable (only names are smoothed).
      TypeError: for anything that is neither a string nor callable.

    Example::

        >>> get("mean_squared_error").name
        'mse'
        >>> get("sparse_categorical_crossentropy", label_smoothing=0.1).label_smoothing
        0.1
    """
    _check_label_smoothing(label_smoothing)
    loss = _resolve(name_or_callable)
    if label_smoothing == 0:
        return loss
    if not isinstance(name_or_callable, str):
        what = "a Loss or callable passed as the loss (smooth inside it, or pass a name)"
    elif loss.name not in _SMOOTHED:
        what = f"the {loss.task} loss {loss.name!r}, which has no classes to smooth"
    else:
        return _smoothed(loss.name, float(label_smoothing))
    raise ValueError(
        f"label_smoothing: expected 0 for {what}; smoothing applies to {sorted(_SMOOTHED)}; "
        f"got {label_smoothing!r}"
    )


@functools.cache
def _smoothed(name: str, alpha: float) -> Loss:
    """The registry's ``name`` with smoothed targets; cached so that equal settings give one
    object."""
    base = _REGISTRY[name]
    per_example = functools.partial(_SMOOTHED[name], alpha=alpha)
    return dataclasses.replace(base, per_example=per_example, label_smoothing=alpha)


def _resolve(name_or_callable: str | Loss | PerExample) -> Loss:
    if isinstance(name_or_callable, Loss):
        return name_or_callable
    if isinstance(name_or_callable, str):
        key = _ALIASES.get(name_or_callable, name_or_callable)
        if key not in _REGISTRY:
            raise ValueError(
                f"loss: unknown name {name_or_callable!r}; expected one of {names()} or a "
                f"callable (outputs, targets) -> per-example losses of shape (B,)"
            )
        return _REGISTRY[key]
    if callable(name_or_callable):
        return Loss(
            name=getattr(name_or_callable, "__name__", "custom_loss"),
            per_example=name_or_callable,
            target_kind="real",
            output_activation=_identity,
            task="regression",
        )
    raise TypeError(
        f"loss: expected a loss name, a jaxnn.losses.Loss or a callable; "
        f"got {type(name_or_callable).__name__}"
    )


def check_targets(
    loss: Loss, targets: np.ndarray, num_outputs: int, *, argument: str = "y"
) -> None:
    """Validates targets on the host, in numpy, before anything compiles.

    The checks follow ``loss.target_kind``:

    * ``"int_labels"``: integer labels of shape ``(N,)`` or ``(N, 1)`` in ``[0, num_outputs)``;
    * ``"one_hot"``: shape ``(N, num_outputs)`` with values in ``[0, 1]``;
    * ``"binary"``: one output, one target per example, values in ``[0, 1]``;
    * ``"real"``: ``num_outputs`` values per example.

    NaN or Inf anywhere is an error for every kind.

    Args:
      loss: the :class:`Loss` the targets are for.
      targets: the training targets ``y``, shape ``(N, ...)``.
      num_outputs: the size of the model's last output dimension.
      argument: the name the errors give the targets (``"val_y"`` for validation data).

    Raises:
      ValueError: naming ``argument``, what was expected and what was given.

    Example::

        >>> check_targets(get("sparse_categorical_crossentropy"), np.array([0, 2, 1]), 3)
        >>> check_targets(get("sparse_categorical_crossentropy"), np.array([0, 3]), 3)
        Traceback (most recent call last):
        ...
        ValueError: y: expected labels in [0, 3) for 'sparse_categorical_crossentropy' ...
    """
    y = np.asarray(targets)
    _check_numeric_examples(y, argument)
    _TARGET_CHECKS[loss.target_kind](y, num_outputs, argument, loss.name)


def _check_numeric_examples(y: np.ndarray, argument: str) -> None:
    """What every kind of target needs: a leading example axis, a numeric dtype, finite values."""
    if y.ndim == 0 or y.shape[0] == 0:
        raise ValueError(
            f"{argument}: expected an array with a leading example dimension; got shape {y.shape}"
        )
    if y.dtype.kind not in "biuf":
        raise ValueError(f"{argument}: expected a numeric array; got dtype {y.dtype}")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        bad = np.flatnonzero(~np.isfinite(y.reshape(y.shape[0], -1)).all(axis=1))
        raise ValueError(
            f"{argument}: expected finite values; got NaN or Inf in {bad.size} example(s), the "
            f"first at index {int(bad[0])}"
        )


def _check_int_labels(y: np.ndarray, num_outputs: int, argument: str, name: str) -> None:
    n = y.shape[0]
    if y.ndim == 2 and y.shape[1] > 1:
        raise ValueError(
            f"{argument}: expected integer labels of shape ({n},) for {name!r}; got shape "
            f"{y.shape}, which looks one-hot: use 'categorical_crossentropy', or pass "
            f"{argument}.argmax(-1)"
        )
    if y.ndim > 2:
        raise ValueError(
            f"{argument}: expected integer labels of shape ({n},) for {name!r}; got shape {y.shape}"
        )
    # Like Keras, float labels are fine when they hold whole class indices (0.0, 1.0, ...).
    if y.dtype.kind not in "iu" and not (y.dtype.kind == "f" and np.all(y == np.round(y))):
        raise ValueError(
            f"{argument}: expected integer labels for {name!r}; got dtype {y.dtype}. Cast with "
            f"{argument}.astype(np.int32) if the values are whole class indices."
        )
    bad = np.flatnonzero((y < 0) | (y >= num_outputs))
    if bad.size:
        value = y.reshape(-1)[bad[0]]
        raise ValueError(
            f"{argument}: expected labels in [0, {num_outputs}) for {name!r} and a model with "
            f"{num_outputs} outputs; got {int(value)} at index {int(bad[0])} "
            f"({bad.size} label(s) out of range)"
        )


def _check_one_hot(y: np.ndarray, num_outputs: int, argument: str, name: str) -> None:
    n = y.shape[0]
    if y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1 and num_outputs > 1):
        raise ValueError(
            f"{argument}: expected one-hot or soft targets of shape ({n}, {num_outputs}) for "
            f"{name!r}; got shape {y.shape} ({y.dtype}), which looks like integer labels: use "
            f"'sparse_categorical_crossentropy'"
        )
    if y.shape != (n, num_outputs):
        raise ValueError(
            f"{argument}: expected shape ({n}, {num_outputs}) for {name!r}, to match the model's "
            f"{num_outputs} outputs; got {y.shape}"
        )
    if y.min() < 0 or y.max() > 1:
        raise ValueError(
            f"{argument}: expected probabilities in [0, 1] for {name!r}; got values in "
            f"[{y.min()}, {y.max()}]"
        )


def _check_binary(y: np.ndarray, num_outputs: int, argument: str, name: str) -> None:
    n = y.shape[0]
    if num_outputs != 1:
        raise ValueError(
            f"num_outputs: expected a model with 1 output (a logit) for {name!r}; got "
            f"{num_outputs}. For {num_outputs} classes use 'sparse_categorical_crossentropy'."
        )
    if y.size != n:
        raise ValueError(
            f"{argument}: expected one target per example for {name!r}, shape ({n},) or ({n}, 1); "
            f"got {y.shape}"
        )
    if y.min() < 0 or y.max() > 1:
        raise ValueError(
            f"{argument}: expected values in [0, 1] for {name!r}; got values in "
            f"[{y.min()}, {y.max()}]"
        )


def _check_real(y: np.ndarray, num_outputs: int, argument: str, name: str) -> None:
    n = y.shape[0]
    per_example = y.size // n
    if per_example != num_outputs:
        raise ValueError(
            f"{argument}: expected {num_outputs} value(s) per example for {name!r}, to match the "
            f"model's outputs, shape ({n}, {num_outputs})"
            + (f" or ({n},)" if num_outputs == 1 else "")
            + f"; got shape {y.shape} ({per_example} per example)"
        )


# One check per `Loss.target_kind` (every kind in TARGET_KINDS has one).
_TARGET_CHECKS: dict[str, Callable[[np.ndarray, int, str, str], None]] = {
    "int_labels": _check_int_labels,
    "one_hot": _check_one_hot,
    "binary": _check_binary,
    "real": _check_real,
}
