"""Tabular data: arrays or CSV files, split by seed and standardised on the training split only;
generated regression and classification sets with a known signal."""

from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["Splits", "from_arrays", "load_csv", "make_classification", "make_regression"]


@dataclasses.dataclass(frozen=True)
class Splits:
    """Train / validation / test arrays ready for the Trainer, and what they are.

    ``x_val``/``y_val`` are None without a validation split; ``x_test``/``y_test`` have zero rows
    without a test split. ``mean``/``std`` are the standardisation fitted on the training split
    (None when the data was not standardised); ``class_names`` names the classes of a classifier's
    labels (empty for regression). Build one with keywords; positional order is the field order.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    class_names: tuple[str, ...] = ()


def _check_fractions(validation_split: float, test_split: float) -> None:
    for name, value in (("validation_split", validation_split), ("test_split", test_split)):
        if not 0 <= value < 1:
            raise ValueError(f"{name}: expected a float in [0, 1); got {value!r}")
    if validation_split + test_split >= 1:
        raise ValueError(
            f"validation_split + test_split: expected < 1; got {validation_split + test_split}"
        )


def from_arrays(
    x: ArrayLike,
    y: ArrayLike,
    *,
    validation_split: float = 0.0,
    test_split: float = 0.0,
    standardize: bool = True,
    seed: int = 0,
) -> Splits:
    """Splits ``(x, y)`` by a permutation from ``seed`` and standardises the features with the
    TRAINING split's mean and standard deviation (validation and test reuse those statistics).

    Args:
      x: features ``(N, F)``.
      y: targets ``(N, ...)``.
      validation_split, test_split: fractions in [0, 1) with a sum below 1.
      standardize: whether to standardise the features.
      seed: the permutation's seed.

    Returns:
      ``Splits`` with float32 features (and no ``class_names``).

    Raises:
      ValueError: a non-2-D ``x``, lengths that differ, or fractions out of range.

    Example::

        x, y, w = make_regression()
        splits = from_arrays(x, y, validation_split=0.1, test_split=0.2)
    """
    x = np.asarray(x, np.float32)
    y = np.asarray(y)
    if x.ndim != 2:
        raise ValueError(f"x: expected a 2-D array (examples, features); got shape {x.shape}")
    if len(x) != len(y):
        raise ValueError(f"x and y: expected the same length; got {len(x)} and {len(y)}")
    _check_fractions(validation_split, test_split)
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
        x_train=x[train],
        y_train=y[train],
        x_val=x[val] if n_val else None,
        y_val=y[val] if n_val else None,
        x_test=x[test],
        y_test=y[test],
        mean=mean,
        std=std,
    )


def load_csv(path: str | os.PathLike, target: str = "target", **kwargs) -> Splits:
    """Reads a numeric CSV file with a header row and splits it like ``from_arrays``.

    Args:
      path: the CSV file (comma-separated, first row the column names, numbers only).
      target: the name of the label column; every other column is a feature.
      **kwargs: ``validation_split``, ``test_split``, ``standardize``, ``seed`` of ``from_arrays``.

    Returns:
      ``Splits`` with float32 features and labels.

    Raises:
      ValueError: an empty file, no column ``target`` (the message lists the columns), ragged
        rows or non-numeric values (the message names the file).
    """
    with open(path, newline="") as f:
        rows = [row for row in csv.reader(f) if row]
    if len(rows) < 2:
        raise ValueError(f"{path}: expected a header row and data rows; got {len(rows)} row(s)")
    header, body = [name.strip() for name in rows[0]], rows[1:]
    if target not in header:
        raise ValueError(f"target: no column {target!r} in {path}; columns: {header}")
    for line, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise ValueError(
                f"{path}: line {line} has {len(row)} values; the header has {len(header)} columns"
            )
    try:
        values = np.asarray(body, np.float64)
    except ValueError as error:
        raise ValueError(f"{path}: non-numeric value ({error})") from None
    column = header.index(target)
    x = np.delete(values, column, axis=1)
    return from_arrays(x, values[:, column].astype(np.float32), **kwargs)


def make_regression(
    n: int = 1000, n_features: int = 10, noise: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A linear regression set with a known signal: ``y = x·w + noise·ε``, x, w, ε standard normal.

    Returns:
      ``(x, y, w)``: float32 ``(n, n_features)``, ``(n,)`` and the true weights ``(n_features,)``.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_features)).astype(np.float32)
    w = rng.normal(size=(n_features,)).astype(np.float32)
    y = (x @ w + noise * rng.normal(size=n)).astype(np.float32)
    return x, y, w


def make_classification(
    n: int = 1000, n_features: int = 20, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A binary set with a known signal: ``y = [x·w + 0.1·ε > 0]``, x, w, ε standard normal.

    Returns:
      ``(x, y, w)``: float32 ``(n, n_features)``, float32 0/1 labels ``(n,)`` and the true
      direction ``(n_features,)``.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_features)).astype(np.float32)
    w = rng.normal(size=(n_features,)).astype(np.float32)
    y = (x @ w + 0.1 * rng.normal(size=n) > 0).astype(np.float32)
    return x, y, w
