"""Splits and normalisation on numpy arrays, fitted on the training split only."""

from __future__ import annotations

import numpy as np

__all__ = ["channel_stats", "normalize", "to_float", "train_validation_split"]


def train_validation_split(
    x: np.ndarray, y: np.ndarray, validation_split: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Carves a validation set out of the training split, chosen by a permutation from ``seed``.

    Returns ``(x_train, y_train, x_val, y_val)``; the test split is never touched.

    Raises:
      ValueError: when ``validation_split`` is not in [0, 1) or leaves an empty part.
    """
    if not isinstance(validation_split, int | float) or not 0 <= validation_split < 1:
        raise ValueError(f"validation_split: expected a float in [0, 1); got {validation_split!r}")
    if len(x) != len(y):
        raise ValueError(f"x and y: expected the same length; got {len(x)} and {len(y)}")
    order = np.random.default_rng(seed).permutation(len(x))
    num_val = int(round(len(x) * validation_split))
    if validation_split > 0 and not 0 < num_val < len(x):
        raise ValueError(
            f"validation_split: {validation_split} of {len(x)} examples leaves an empty split"
        )
    val, train = np.sort(order[:num_val]), np.sort(order[num_val:])
    return x[train], y[train], x[val], y[val]


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 images → float32 in [0, 1]."""
    return np.asarray(images, np.float32) / np.float32(255.0)


def channel_stats(train_images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of the training images (NHWC)."""
    axes = tuple(range(train_images.ndim - 1))
    mean = train_images.mean(axis=axes, dtype=np.float64)
    std = train_images.std(axis=axes, dtype=np.float64)
    return mean.astype(np.float32), np.maximum(std, 1e-7).astype(np.float32)


def normalize(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(images − mean) / std`` per channel, float32."""
    return ((np.asarray(images, np.float32) - mean) / std).astype(np.float32)
