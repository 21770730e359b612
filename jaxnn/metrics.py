"""On-device metrics after ``clu.metrics``: pytrees of sums and counts that merge exactly.

A metric holds two float32 scalars, ``total = Σ w·v`` and ``count = Σ w``, over the examples it has
seen, where ``v`` is a per-example value (a loss, a 0/1 hit, an error) and ``w`` the example weight
(1 for real examples, 0 for padding). ``merge`` adds them, so merging batch metrics in any order, on
any device, gives the metric of the whole dataset, exactly even when its size is not a multiple of
the batch; ``compute`` returns

.. math:: m = \\frac{\\sum_i w_i v_i}{\\sum_i w_i}

and 0 for a metric that has seen no weight (instead of NaN).

Each metric class has ``empty()``, ``from_model_output(*, outputs, targets, weights, loss)``,
``merge(other)`` and ``compute()``; every ``from_model_output`` accepts all four keywords and
ignores what it does not need. A collection is a plain ``dict`` of metrics.

Example::

    from jaxnn import metrics as metrics_lib

    names = ("loss", "accuracy")
    metrics = metrics_lib.empty_collection(names)
    for logits, labels, weights, per_example_loss in batches:   # inside jit in practice
        batch = metrics_lib.collection_from_model_output(
            names, outputs=logits, targets=labels, weights=weights, loss=per_example_loss)
        metrics = metrics_lib.merge_collections(metrics, batch)
    print(metrics_lib.compute_collection(metrics))   # {"loss": ..., "accuracy": ...}
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxnn import losses

__all__ = [
    "MAE",
    "MSE",
    "Accuracy",
    "BinaryAccuracy",
    "Loss",
    "Metric",
    "TopKAccuracy",
    "collection_from_model_output",
    "compute_collection",
    "empty_collection",
    "get",
    "merge_collections",
    "names",
    "top_k_accuracy",
]

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


@flax.struct.dataclass
class Metric:
    """A weighted mean kept as an on-device ``total`` and ``count`` (float32 scalars).

    Subclasses define ``name`` and ``values(outputs, targets, loss) -> (B,)``, the per-example
    value whose weighted mean the metric reports.

    Example::

        m = Accuracy.from_model_output(outputs=logits, targets=labels, weights=weights, loss=None)
        m = m.merge(Accuracy.from_model_output(...))
        float(m.compute())
    """

    total: Array
    count: Array

    name: ClassVar[str] = "metric"
    # The loss tasks (``jaxnn.losses.TASKS``) whose outputs the metric makes sense for.
    tasks: ClassVar[tuple[str, ...]] = ("multiclass", "binary", "regression")

    @classmethod
    def values(cls, outputs: Any, targets: Any, loss: Any) -> Array:
        """The per-example values, shape ``(B,)``."""
        raise NotImplementedError(
            f"{cls.__name__}.values: expected the subclass to define values(outputs, targets, "
            "loss) -> per-example values of shape (B,); got Metric's, which has none"
        )

    @classmethod
    def empty(cls) -> Metric:
        """A metric that has seen nothing: ``total = count = 0``.

        Example::

            >>> float(Accuracy.empty().compute())
            0.0
        """
        return cls(total=jnp.zeros((), jnp.float32), count=jnp.zeros((), jnp.float32))

    @classmethod
    def from_model_output(
        cls,
        *,
        outputs: ArrayLike | None = None,
        targets: ArrayLike | None = None,
        weights: ArrayLike | None = None,
        loss: ArrayLike | None = None,
        **unused: Any,
    ) -> Metric:
        """The metric of one batch: ``total = Σ w·v``, ``count = Σ w``.

        Args:
          outputs: model outputs (logits), shape ``(B, ...)``.
          targets: batch targets.
          weights: ``(B,)`` example weights, 0 for padding; ``None`` means all ones.
          loss: per-example loss, shape ``(B,)``.
          **unused: other model outputs, ignored (CLU's convention).

        Returns:
          A metric of this class.

        Example::

            m = Loss.from_model_output(outputs=None, targets=None, weights=w, loss=per_example)
        """
        del unused
        values = jnp.asarray(cls.values(outputs, targets, loss), jnp.float32)
        values = values.reshape(values.shape[0])
        if weights is None:
            weights = jnp.ones_like(values)
        weights = jnp.asarray(weights, jnp.float32)
        if weights.size != values.shape[0]:
            raise ValueError(
                f"weights: expected shape ({values.shape[0]},), one per example, for metric "
                f"{cls.name!r}; got {weights.shape}"
            )
        weights = weights.reshape(values.shape)
        return cls(total=jnp.sum(values * weights), count=jnp.sum(weights))

    def merge(self, other: Metric) -> Metric:
        """Adds the totals and counts of two metrics of the same class.

        Example::

            >>> a = Loss.from_model_output(loss=jnp.array([1.0]), weights=jnp.array([1.0]))
            >>> b = Loss.from_model_output(loss=jnp.array([3.0]), weights=jnp.array([1.0]))
            >>> float(a.merge(b).compute())
            2.0
        """
        if type(other) is not type(self):
            raise TypeError(
                f"other: expected another {type(self).__name__} to merge with metric "
                f"{type(self).__name__}; got {type(other).__name__}"
            )
        return type(self)(total=self.total + other.total, count=self.count + other.count)

    def compute(self) -> Array:
        """``total / count``, and 0 when ``count == 0`` (nothing seen).

        Example::

            >>> float(Loss(total=jnp.array(6.0), count=jnp.array(3.0)).compute())
            2.0
        """
        # Fetched (numpy) values are computed in numpy: the same float32 bits (the fillers take
        # the count's dtype, so numpy 1.x does not promote to float64), and no small XLA program
        # to compile for them (compute_collection).
        xp = np if isinstance(self.total, np.ndarray | np.generic) else jnp
        positive = self.count > 0
        quotient = self.total / xp.where(positive, self.count, xp.ones_like(self.count))
        return xp.where(positive, quotient, xp.zeros_like(quotient))


def _labels(outputs: Array, targets: Array) -> Array:
    """Integer labels ``(B,)`` from labels ``(B,)``/``(B, 1)`` or one-hot/soft ``(B, C)``."""
    batch = outputs.shape[0]
    if targets.ndim == 2 and targets.shape[1] > 1:
        if targets.shape != outputs.shape:
            raise ValueError(
                f"targets: expected one-hot targets of the shape of outputs {outputs.shape}; "
                f"got {targets.shape}"
            )
        return jnp.argmax(targets, axis=-1)
    if targets.size != batch:
        raise ValueError(
            f"targets: expected integer labels of shape ({batch},) or one-hot of shape "
            f"{outputs.shape}; got {targets.shape}"
        )
    return targets.reshape(batch).astype(jnp.int32)


@flax.struct.dataclass
class Loss(Metric):
    """The weighted mean of the per-example loss passed as ``loss``.

    .. math:: m = \\sum_i w_i \\ell_i / \\sum_i w_i
    """

    name: ClassVar[str] = "loss"

    @classmethod
    def values(cls, outputs: Any, targets: Any, loss: Any) -> Array:
        if loss is None:
            raise ValueError(
                "loss: expected the per-example loss of shape (B,) for metric 'loss'; got None"
            )
        return jnp.asarray(loss)


@flax.struct.dataclass
class Accuracy(Metric):
    """Multi-class accuracy: the fraction of examples with ``argmax(logits) == label``.

    .. math:: m = \\sum_i w_i [\\arg\\max_c z_{ic} = y_i] / \\sum_i w_i

    ``targets`` are integer labels ``(B,)``/``(B, 1)`` or one-hot/soft targets ``(B, C)``, whose
    argmax is the label.
    """

    name: ClassVar[str] = "accuracy"
    tasks: ClassVar[tuple[str, ...]] = ("multiclass",)

    @classmethod
    def values(cls, outputs: Any, targets: Any, loss: Any) -> Array:
        outputs, targets = jnp.asarray(outputs), jnp.asarray(targets)
        predicted = jnp.argmax(outputs, axis=-1)
        return predicted == _labels(outputs, targets)


@flax.struct.dataclass
class BinaryAccuracy(Metric):
    """Binary accuracy from logits: ``logit > 0`` agrees with ``target > 0.5``.

    .. math:: m = \\sum_i w_i [(z_i > 0) = (y_i > 0.5)] / \\sum_i w_i
    """

    name: ClassVar[str] = "binary_accuracy"
    tasks: ClassVar[tuple[str, ...]] = ("binary",)

    @classmethod
    def values(cls, outputs: Any, targets: Any, loss: Any) -> Array:
        outputs, targets = jnp.asarray(outputs), jnp.asarray(targets)
        batch = outputs.shape[0]
        if outputs.size != batch or targets.size != batch:
            raise ValueError(
                f"outputs, targets: expected one logit and one target per example for metric "
                f"'binary_accuracy', shape ({batch},) or ({batch}, 1); got outputs "
                f"{outputs.shape}, targets {targets.shape}"
            )
        return (outputs.reshape(batch) > 0) == (targets.reshape(batch) > 0.5)


@flax.struct.dataclass
class TopKAccuracy(Metric):
    """Top-k accuracy: the label's logit is among the ``k`` largest (``k = 5`` here).

    An example counts as a hit when fewer than ``k`` classes have a strictly larger logit than the
    label's, so classes tied at the boundary all count as in the top k (as Keras' ``in_top_k``).

    .. math:: m = \\sum_i w_i \\big[\\#\\{c : z_{ic} > z_{i y_i}\\} < k\\big] / \\sum_i w_i

    Use :func:`top_k_accuracy` for another ``k``.
    """

    name: ClassVar[str] = "top5_accuracy"
    tasks: ClassVar[tuple[str, ...]] = ("multiclass",)
    k: ClassVar[int] = 5

    @classmethod
    def values(cls, outputs: Any, targets: Any, loss: Any) -> Array:
        outputs, targets = jnp.asarray(outputs), jnp.asarray(targets)
        labels = _labels(outputs, targets)
        label_logit = jnp.take_along_axis(outputs, labels[:, None], axis=-1)
        above = jnp.sum(outputs > label_logit, axis=-1)
        return above < cls.k


@functools.cache
def top_k_accuracy(k: int) -> type[Metric]:
    """The top-``k`` accuracy metric class, named ``f"top{k}_accuracy"``.

    The same ``k`` always returns the same class, so jitted functions are not retraced.

    Args:
      k: how many of the largest logits count as a hit, ``k >= 1``.

    Returns:
      A subclass of :class:`TopKAccuracy`.

    Example::

        >>> top_k_accuracy(3).name
        'top3_accuracy'
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k: expected an integer >= 1 for top_k_accuracy; got {k!r}")
    if k == TopKAccuracy.k:
        return TopKAccuracy
    cls = type(
        f"Top{k}Accuracy",
        (TopKAccuracy,),
        {"__annotations__": {}, "name": f"top{k}_accuracy", "k": k, "__module__": __name__},
    )
    return flax.struct.dataclass(cls)


@flax.struct.dataclass
class MAE(Metric):
    """Mean absolute error, per example averaged over output dimensions.

    .. math:: m = \\sum_i w_i \\tfrac{1}{D}\\sum_d |\\hat y_{id} - y_{id}| / \\sum_i w_i
    """

    name: ClassVar[str] = "mae"
    tasks: ClassVar[tuple[str, ...]] = ("regression",)

    @classmethod
    def values(cls, outputs: Any, targets: Any, loss: Any) -> Array:
        return losses.mean_absolute_error_per_example(outputs, targets)


@flax.struct.dataclass
class MSE(Metric):
    """Mean squared error, per example averaged over output dimensions.

    .. math:: m = \\sum_i w_i \\tfrac{1}{D}\\sum_d (\\hat y_{id} - y_{id})^2 / \\sum_i w_i
    """

    name: ClassVar[str] = "mse"
    tasks: ClassVar[tuple[str, ...]] = ("regression",)

    @classmethod
    def values(cls, outputs: Any, targets: Any, loss: Any) -> Array:
        return losses.mean_squared_error_per_example(outputs, targets)


_REGISTRY: dict[str, type[Metric]] = {
    "loss": Loss,
    "accuracy": Accuracy,
    "binary_accuracy": BinaryAccuracy,
    "top_k_accuracy": TopKAccuracy,
    "mae": MAE,
    "mse": MSE,
}
_TOP_K = re.compile(r"top(\d+)_accuracy")


def names() -> list[str]:
    """The metric names :func:`get` accepts (besides ``"top{k}_accuracy"`` for any ``k``).

    Example::

        >>> "accuracy" in names()
        True
    """
    return list(_REGISTRY)


def get(name: str) -> type[Metric]:
    """The metric class for a name; ``"top{k}_accuracy"`` works for any ``k >= 1``.

    Args:
      name: one of :func:`names`, or ``"top3_accuracy"`` and the like.

    Returns:
      A :class:`Metric` subclass.

    Raises:
      ValueError: for an unknown name, listing the valid ones.

    Example::

        >>> get("top3_accuracy").k
        3
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    match = _TOP_K.fullmatch(name) if isinstance(name, str) else None
    if match and int(match.group(1)) >= 1:
        return top_k_accuracy(int(match.group(1)))
    raise ValueError(
        f"metrics: unknown name {name!r}; expected one of {names()} or 'top{{k}}_accuracy'"
    )


def empty_collection(names: Sequence[str]) -> dict[str, Metric]:
    """``{name: get(name).empty()}`` for each name.

    Example::

        >>> sorted(empty_collection(["loss", "accuracy"]))
        ['accuracy', 'loss']
    """
    return {name: get(name).empty() for name in names}


def collection_from_model_output(names: Sequence[str], **kwargs: Any) -> dict[str, Metric]:
    """``{name: get(name).from_model_output(**kwargs)}`` for each name (jit-able).

    Args:
      names: metric names.
      **kwargs: ``outputs``, ``targets``, ``weights``, ``loss``.

    Example::

        batch = collection_from_model_output(
            ["loss", "accuracy"], outputs=logits, targets=labels, weights=w, loss=per_example)
    """
    return {name: get(name).from_model_output(**kwargs) for name in names}


def merge_collections(a: Mapping[str, Metric], b: Mapping[str, Metric]) -> dict[str, Metric]:
    """Merges two collections with the same names, metric by metric (jit-able).

    Raises:
      ValueError: when the names differ.

    Example::

        metrics = merge_collections(metrics, batch)
    """
    if set(a) != set(b):
        raise ValueError(
            f"a, b: expected metric collections with the same names; got {sorted(a)} and "
            f"{sorted(b)}"
        )
    return {name: a[name].merge(b[name]) for name in a}


def compute_collection(collection: Mapping[str, Any]) -> dict[str, float]:
    """Computes every metric and fetches the results to the host in one transfer.

    Entries that are not metrics (a plain counter array, say) are fetched as they are.

    Example::

        >>> compute_collection({"loss": Loss(total=jnp.array(3.0), count=jnp.array(2.0))})
        {'loss': 1.5}
    """
    # Fetched first, then computed on the host: an eager division on the device would compile
    # three small XLA programs in every fresh process, on the first epoch's clock.
    fetched = jax.device_get(dict(collection))
    return {
        name: float(value.compute() if isinstance(value, Metric) else value)
        for name, value in fetched.items()
    }
