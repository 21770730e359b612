"""Flax Linen models: an MLP and a CNN returning logits; activation and initialiser registries.

Both models take ``train`` as a keyword (dropout on, BatchNorm batch statistics) and an optional
``mask`` of shape ``(batch,)`` that keeps padded examples out of the BatchNorm statistics, so a
padded last batch trains exactly like a short one.

Example::

    model = CNN(filters=(32, 64), dense=(128,), dropout_rate=0.4)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)
    logits = model.apply(variables, images, train=False)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["ACTIVATIONS", "CNN", "INITIALIZERS", "MLP", "get_activation", "get_initializer", "pool"]

Array = jax.Array

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": nn.relu,
    # Keras' LeakyReLU default slope is 0.3 (tf.keras) / 0.2 (Keras 3); Flax's is 0.01. We follow
    # Keras 3, which the tutorials use.
    "leaky_relu": lambda x: nn.leaky_relu(x, negative_slope=0.2),
    "elu": nn.elu,
    "gelu": nn.gelu,
    "sigmoid": nn.sigmoid,
    "tanh": nn.tanh,
    "softplus": nn.softplus,
    "identity": lambda x: x,
}

INITIALIZERS: dict[str, Callable[..., Any]] = {
    "glorot_uniform": nn.initializers.glorot_uniform(),
    "glorot_normal": nn.initializers.glorot_normal(),
    "he_uniform": nn.initializers.he_uniform(),
    "he_normal": nn.initializers.he_normal(),
    "lecun_uniform": nn.initializers.lecun_uniform(),
    "lecun_normal": nn.initializers.lecun_normal(),
    # PyTorch's default for Conv2d and Linear weights (kaiming_uniform with a=sqrt(5)): uniform
    # with bound 1/sqrt(fan_in). Kernels only: biases stay zero, as everywhere in jaxnn.
    "pytorch_uniform": nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
    "zeros": nn.initializers.zeros,
    "ones": nn.initializers.ones,
}

# Keras' BatchNormalization defaults (Flax uses epsilon=1e-5); the tutorials' numbers assume these.
_BN_MOMENTUM = 0.99
_BN_EPSILON = 1e-3


def _lookup(registry: dict[str, Any], name: str | Callable, argument: str) -> Any:
    if callable(name):
        return name
    try:
        return registry[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"{argument}: unknown name {name!r}; expected one of {sorted(registry)} or a callable"
        ) from None


def get_activation(name: str | Callable[[Array], Array]) -> Callable[[Array], Array]:
    """Returns the activation function registered under ``name`` (or ``name`` if callable).

    Raises:
      ValueError: naming the valid activations when ``name`` is unknown.
    """
    return _lookup(ACTIVATIONS, name, "activation")


def get_initializer(name: str | Callable[..., Any]) -> Callable[..., Any]:
    """Returns the kernel initialiser registered under ``name`` (or ``name`` if callable).

    The default everywhere is ``"glorot_uniform"``, as in Keras.
    """
    return _lookup(INITIALIZERS, name, "kernel_init")


def pool(x: Array, kind: str | None, window: int = 2, *, train: bool = True) -> Array:
    """Non-overlapping ``window``×``window`` pooling of NHWC images with Keras' 'valid' padding.

    Implemented as a reshape and a reduction rather than ``nn.max_pool``: the result is the same,
    but on XLA CPU the backward pass of ``reduce_window`` (select-and-scatter) is several times
    slower than the gradient of a plain ``max`` over a reshaped axis. Trailing rows/columns that
    do not fill a window are dropped, as 'valid' pooling does.

    Args:
      x: images of shape ``(batch, height, width, channels)``.
      kind: ``"max"``, ``"avg"`` or ``None`` (no pooling).
      window: window size and stride.
      train: whether a gradient will be taken. Forward-only, ``reduce_window`` (``nn.max_pool``)
        is the faster of the two on XLA CPU, and gives the same values.
    """
    if kind is None or kind == "none":
        return x
    if kind not in ("max", "avg"):
        raise ValueError(f"pool: expected 'max', 'avg' or None; got {kind!r}")
    if not train:
        reduce = nn.max_pool if kind == "max" else nn.avg_pool
        return reduce(x, (window, window), (window, window), "VALID")
    b, h, w, c = x.shape
    hh, ww = h // window, w // window
    x = x[:, : hh * window, : ww * window, :].reshape(b, hh, window, ww, window, c)
    return _window_max(x) if kind == "max" else x.mean(axis=(2, 4))


@jax.custom_vjp
def _window_max(x: Array) -> Array:
    """``x.max(axis=(2, 4))`` of windows ``(b, h, window, w, window, c)``, with JAX's gradient
    (split equally between tied maxima) computed from per-position slices: JAX's own gradient
    counts the ties with a reduction that XLA CPU runs as a separate, slow pass (figures in
    docs/design-notes.md). The same values and gradients bit for bit on their own
    (tests/test_models.py); inside a whole train step XLA may fuse, and so round, differently."""
    return x.max(axis=(2, 4))


def _window_max_fwd(x: Array) -> tuple[Array, tuple[Array, Array]]:
    y = x.max(axis=(2, 4))
    return y, (x, y)


def _window_max_bwd(residuals: tuple[Array, Array], g: Array) -> tuple[Array]:
    x, y = residuals
    hit = (x == y[:, :, None, :, None, :]).astype(x.dtype)
    window_h, window_w = x.shape[2], x.shape[4]
    count = sum(hit[:, :, i, :, j] for i in range(window_h) for j in range(window_w))
    return ((g / count)[:, :, None, :, None, :] * hit,)


_window_max.defvjp(_window_max_fwd, _window_max_bwd)


def _batch_norm(train: bool, module: Any) -> nn.BatchNorm:
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=module.bn_momentum,
        epsilon=module.bn_epsilon,
        dtype=module.dtype,
    )


def _bn_mask(mask: Array | None, x: Array) -> Array | None:
    # nn.BatchNorm wants a mask broadcastable to x: one flag per example, broadcast over features.
    if mask is None:
        return None
    return jnp.broadcast_to(mask.reshape((-1,) + (1,) * (x.ndim - 1)) > 0, x.shape)


class MLP(nn.Module):
    """A multilayer perceptron on flattened inputs: (Dense → [BN] → act → [Dropout])* → Dense.

    Attributes:
      features: widths of the hidden layers.
      num_outputs: width of the output layer (the logits).
      activation: a name from ``ACTIVATIONS`` or a callable.
      dropout_rate: dropout after each hidden activation (0 disables it).
      batch_norm: BatchNorm between each hidden Dense (then without bias) and its activation.
      bn_momentum, bn_epsilon: BatchNorm's running-average momentum and epsilon (Keras' 0.99
        and 1e-3; PyTorch's and Flax examples' 0.9 and 1e-5 make the evaluation statistics
        follow the weights sooner).
      kernel_init: a name from ``INITIALIZERS`` or an initialiser.
      dtype: computation dtype (``jnp.bfloat16`` for mixed precision); parameters stay float32 and
        the logits are returned as float32.
    """

    features: Sequence[int] = (128, 128)
    num_outputs: int = 10
    activation: str | Callable = "relu"
    dropout_rate: float = 0.0
    batch_norm: bool = False
    bn_momentum: float = _BN_MOMENTUM
    bn_epsilon: float = _BN_EPSILON
    kernel_init: str | Callable = "glorot_uniform"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool, mask: Array | None = None) -> Array:
        _check_widths(features=self.features, num_outputs=(self.num_outputs,))
        act = get_activation(self.activation)
        init = get_initializer(self.kernel_init)
        x = x.reshape((x.shape[0], -1)).astype(self.dtype)
        for width in self.features:
            # No bias before BatchNorm (it subtracts the mean): Flax's ResNet does the same, and a
            # bias there only gets gradient noise.
            x = nn.Dense(width, use_bias=not self.batch_norm, kernel_init=init, dtype=self.dtype)(x)
            if self.batch_norm:
                x = _batch_norm(train, self)(x, mask=_bn_mask(mask, x))
            x = act(x)
            if self.dropout_rate > 0:
                x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = nn.Dense(self.num_outputs, kernel_init=init, dtype=self.dtype)(x)
        return x.astype(jnp.float32)


def _check_widths(**widths: Sequence[int]) -> None:
    """Layer widths must be positive integers (checked when the model first sees an input)."""
    for name, values in widths.items():
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
            shown = values[0] if name == "num_outputs" else tuple(values)
            raise ValueError(f"model.{name}: expected integers >= 1; got {shown!r}")


def _check_poolable(shape: Sequence[int], blocks: int) -> None:
    """Each block halves the image: ``blocks`` 2×2 poolings need at least 2^blocks pixels."""
    need = 2**blocks
    if shape[1] < need or shape[2] < need:
        raise ValueError(
            f"x: images of {shape[1]}×{shape[2]} are too small for the CNN's {blocks} 2×2 "
            f"poolings; expected at least {need}×{need} pixels (or fewer filters, or "
            "pool=None)"
        )


class CNN(nn.Module):
    """A convolutional classifier: (Conv → [BN] → activation → pool)* → Flatten → Dropout → Dense*.

    With the defaults and ``dropout_rate=0.4`` this is the tutorials' classic
    Conv32-BN-ReLU-Pool-Conv64-BN-ReLU-Pool-Flatten-Dropout(0.4)-Dense128-Dense10.

    Attributes:
      filters: output channels of each convolution block.
      kernel_size: square convolution window.
      padding: ``"SAME"`` or ``"VALID"`` convolution padding.
      pool: ``"max"``, ``"avg"`` or ``None``: 2×2 pooling after each block.
      dense: widths of the hidden Dense layers after flattening.
      num_outputs: width of the output layer (the logits).
      activation: a name from ``ACTIVATIONS`` or a callable.
      dropout_rate: dropout between Flatten and the first Dense (0 disables it).
      batch_norm: BatchNorm after each convolution (then without bias).
      bn_momentum, bn_epsilon: BatchNorm's running-average momentum and epsilon (as for MLP).
      kernel_init: a name from ``INITIALIZERS`` or an initialiser.
      dtype: computation dtype; parameters stay float32, logits are float32.
      test_time_hflip: when not training, classify each image and its mirror image and return
        the log of their averaged softmax probabilities (logits whose softmax is that average):
        test-time augmentation for evaluation and prediction. Needs ``num_outputs >= 2``
        (softmax classifiers); training is unchanged.
    """

    filters: Sequence[int] = (32, 64)
    kernel_size: int = 3
    padding: str = "SAME"
    pool: str | None = "max"
    dense: Sequence[int] = (128,)
    num_outputs: int = 10
    activation: str | Callable = "relu"
    dropout_rate: float = 0.0
    batch_norm: bool = True
    bn_momentum: float = _BN_MOMENTUM
    bn_epsilon: float = _BN_EPSILON
    kernel_init: str | Callable = "glorot_uniform"
    dtype: Any = jnp.float32
    test_time_hflip: bool = False

    @nn.compact
    def __call__(self, x: Array, *, train: bool, mask: Array | None = None) -> Array:
        if x.ndim != 4:
            raise ValueError(
                "x: CNN expects images of shape (batch, height, width, channels); "
                f"got shape {tuple(x.shape)}. Add a channel axis with x[..., None] for grayscale."
            )
        _check_widths(filters=self.filters, dense=self.dense, num_outputs=(self.num_outputs,))
        if self.pool:
            _check_poolable(x.shape, len(self.filters))
        flip = self.test_time_hflip and not train
        if flip:  # the images, then their mirror images, in one batch
            _check_outputs_for_flip(self.num_outputs)
            x = jnp.concatenate([x, x[:, :, ::-1]])
            mask = None if mask is None else jnp.concatenate([mask, mask])
        act = get_activation(self.activation)
        init = get_initializer(self.kernel_init)
        x = x.astype(self.dtype)
        for channels in self.filters:
            x = nn.Conv(
                channels,
                (self.kernel_size, self.kernel_size),
                padding=self.padding,
                use_bias=not self.batch_norm,  # BatchNorm's offset takes its place
                kernel_init=init,
                dtype=self.dtype,
            )(x)
            if self.batch_norm:
                x = _batch_norm(train, self)(x, mask=_bn_mask(mask, x))
            x = pool(act(x), self.pool, train=train)
        x = x.reshape((x.shape[0], -1))
        if self.dropout_rate > 0:
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        for width in self.dense:
            x = act(nn.Dense(width, kernel_init=init, dtype=self.dtype)(x))
        x = nn.Dense(self.num_outputs, kernel_init=init, dtype=self.dtype)(x)
        x = x.astype(jnp.float32)
        return _average_softmax_halves(x) if flip else x


def _check_outputs_for_flip(num_outputs: int) -> None:
    if num_outputs < 2:
        raise ValueError(
            "test_time_hflip: averages softmax probabilities, so it needs num_outputs >= 2 (a "
            f"softmax classifier); got num_outputs={num_outputs}"
        )


def _average_softmax_halves(logits: Array) -> Array:
    """``log((softmax(a) + softmax(b)) / 2)`` for the two halves ``a, b`` of the batch: logits
    whose softmax is the average of the halves' probabilities."""
    first, second = jnp.split(jax.nn.log_softmax(logits), 2)
    return jnp.logaddexp(first, second) - jnp.log(2.0)
