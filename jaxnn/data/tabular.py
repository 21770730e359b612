"""Tabular data: arrays or CSV files, split by seed and standardised on the training split only;
generated regression and classification sets with a known signal."""

from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np

__all__ = ["Splits", "from_arrays", "load_csv", "make_classification", "make_regression"]


@dataclasses.dataclass(frozen=True)
class Splits:
    """Train / validation / test arrays and the standardisation fitted on train (or None)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray
    mean: np.ndarray | None
    std: np.ndarray | None


def from_arrays(
    x,
    y,
    *,
    validation_split: float = 0.0,
    test_split: float = 0.0,
    standardize: bool = True,
    seed: int = 0,
) -> Splits:
    """Splits (x, y) by a permutation from ``seed`` and standardises features with the training
    split's mean and standard deviation (validation and test use the same statistics)."""
    x = np.asarray(x, np.float32)
    y = np.asarray(y)
    if x.ndim != 2:
        raise ValueError(f"x: expected a 2-D array (examples, features); got shape {x.shape}")
    if len(x) != len(y):
        raise ValueError(f"x and y: expected the same length; got {len(x)} and {len(y)}")
    for name, value in (("validation_split", validation_split), ("test_split", test_split)):
        if not 0 <= value < 1:
            raise ValueError(f"{name}: expected a float in [0, 1); got {value!r}")
    if validation_split + test_split >= 1:
        raise ValueError(
            f"validation_split + test_split: expected < 1; got {validation_split + test_split}"
        )
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(len(x) * test_split))
    n_val = int(round(len(x) * validation_split))
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    mean = std = None
    if standardize:
        mean = x[train].mean(0)
        std = np.maximum(x[train].std(0), 1e-7)
        x = (x - mean) / std
    return Splits(
        x[train],
        y[train],
        x[val] if n_val else None,
        y[val] if n_val else None,
        x[test],
        y[test],
        mean,
        std,
    )


def load_csv(path: str | os.PathLike, target: str = "target", **kwargs) -> Splits:
    """Reads a numeric CSV with a header; ``target`` names the label column; ``from_arrays``
    keyword arguments split and standardise."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{path}: empty CSV file")
    header, body = rows[0], rows[1:]
    if target not in header:
        raise ValueError(f"target: no column {target!r} in {path}; columns: {header}")
    try:
        values = np.asarray(body, np.float64)
    except ValueError as error:
        raise ValueError(f"{path}: non-numeric value ({error})") from None
    column = header.index(target)
    x = np.delete(values, column, axis=1)
    y = values[:, column]
    if np.all(y == np.round(y)) and len(np.unique(y)) <= 2:
        y = y.astype(np.float32)  # binary labels stay 0/1 floats for binary cross-entropy
    return from_arrays(x, y.astype(np.float32), **kwargs)


def make_regression(n: int = 1000, n_features: int = 10, noise: float = 0.1, seed: int = 0):
    """``y = x·w + noise·ε`` with standard normal x, w and ε; returns ``(x, y, w)``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_features)).astype(np.float32)
    w = rng.normal(size=(n_features,)).astype(np.float32)
    y = (x @ w + noise * rng.normal(size=n)).astype(np.float32)
    return x, y, w


def make_classification(n: int = 1000, n_features: int = 20, seed: int = 0):
    """Binary labels ``y = [x·w + 0.1·ε > 0]`` with a known direction w; returns ``(x, y, w)``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_features)).astype(np.float32)
    w = rng.normal(size=(n_features,)).astype(np.float32)
    y = (x @ w + 0.1 * rng.normal(size=n) > 0).astype(np.float32)
    return x, y, w
