"""Splits and normalisation on numpy arrays, fitted on the training split only."""

from __future__ import annotations

import numpy as np

from jaxnn.sharding import aligned_empty

__all__ = [
    "channel_stats",
    "normalize",
    "to_float",
    "train_validation_split",
    "validation_rows",
]


def train_validation_split(
    x: np.ndarray, y: np.ndarray, validation_split: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Carves a validation set out of the training split, chosen by a permutation from ``seed``.

    Args:
      x, y: the training split's inputs and labels (same length).
      validation_split: the fraction held out, in [0, 1); 0 gives empty validation arrays.
      seed: the permutation's seed; the same seed gives the same split.

    Returns:
      ``(x_train, y_train, x_val, y_val)``, each part in its original order (sorted row
      indices, not the permutation's order); the test split is never touched. The validation
      rows are ``sort(default_rng(seed).permutation(n)[:round(n * validation_split)])``.

    Raises:
      ValueError: when ``validation_split`` is not in [0, 1) or leaves an empty part.
    """
    if not isinstance(validation_split, int | float) or not 0 <= validation_split < 1:
        raise ValueError(f"validation_split: expected a float in [0, 1); got {validation_split!r}")
    if len(x) != len(y):
        raise ValueError(f"x and y: expected the same length; got {len(x)} and {len(y)}")
    train, val = validation_rows(len(x), validation_split, seed)
    return _take_rows(x, train), y[train], _take_rows(x, val), y[val]


def validation_rows(n: int, validation_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The row indices ``(train, validation)`` that ``train_validation_split`` takes from ``n``
    examples: ``sort(default_rng(seed).permutation(n)[:round(n * validation_split)])`` held out,
    the rest (sorted) for training.

    Raises:
      ValueError: when ``validation_split`` is not in [0, 1) or leaves an empty part.
    """
    if not isinstance(validation_split, int | float) or not 0 <= validation_split < 1:
        raise ValueError(f"validation_split: expected a float in [0, 1); got {validation_split!r}")
    order = np.random.default_rng(seed).permutation(n)
    num_val = int(round(n * validation_split))
    if validation_split > 0 and not 0 < num_val < n:
        raise ValueError(
            f"validation_split: {validation_split} of {n} examples leaves "
            f"{n - num_val} for training and {num_val} for validation; both must be > 0"
        )
    return np.sort(order[num_val:]), np.sort(order[:num_val])


def _take_rows(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    # Into an aligned array, which a CPU device then uses without a copy (sharding.aligned_empty).
    x = np.asarray(x)
    out = aligned_empty((len(rows), *x.shape[1:]), x.dtype)
    return np.take(x, rows, axis=0, out=out)


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 images -> float32 in [0, 1] (divided by 255).

    Raises:
      ValueError: ``images`` that are not uint8.
    """
    if np.asarray(images).dtype != np.uint8:
        raise ValueError(
            f"images: expected uint8 values in [0, 255]; got {np.asarray(images).dtype}"
        )
    images = np.asarray(images)
    out = aligned_empty(images.shape, np.float32)  # a CPU device uses it in place, uncopied
    return np.divide(images, np.float32(255.0), out=out, dtype=np.float32)


def channel_stats(train_images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of the TRAINING images ``(N, H, W, C)``.

    Returns:
      ``(mean, std)``, float32 of shape ``(C,)``; std is at least 1e-7 (constant channels).
    """
    axes = tuple(range(train_images.ndim - 1))
    mean = train_images.mean(axis=axes, dtype=np.float64)
    std = train_images.std(axis=axes, dtype=np.float64)
    return mean.astype(np.float32), np.maximum(std, 1e-7).astype(np.float32)


def normalize(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(images - mean) / std`` per channel (the last axis), float32.

    Raises:
      ValueError: ``mean`` or ``std`` whose shape is not ``(C,)`` for C channels.
    """
    channels = np.shape(images)[-1]
    for name, value in (("mean", mean), ("std", std)):
        if np.shape(value) != (channels,):
            raise ValueError(
                f"{name}: expected shape ({channels},) for {channels} channels; "
                f"got {np.shape(value)}"
            )
    images = np.asarray(images, np.float32)
    out = aligned_empty(images.shape, np.float32)  # a CPU device uses it in place, uncopied
    return np.divide(images - mean, std, out=out, casting="same_kind")
