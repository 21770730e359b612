"""The benchmark's arrays: loaded once in the parent process (through ``jaxnn.data``), handed to
every worker as .npy files that the worker reads into 64-byte-aligned memory.

jaxnn is imported inside the loading functions only: a torch or Keras worker imports this module
to read its .npy files and must not import jax or jaxnn (its peak RSS is its framework's).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np


def _as_images(x: np.ndarray) -> np.ndarray:
    """float32 images in [0, 1], converted as a jaxnn user does (``jaxnn.data.to_float``, which
    returns memory a CPU device uses without copying); every framework gets these same arrays."""
    from jaxnn.data import to_float

    x = np.asarray(x)
    x = to_float(x) if x.dtype == np.uint8 else x.astype(np.float32, copy=False)
    return x.reshape(len(x), 28, 28, 1)


def read_fashion_mnist() -> tuple[dict[str, np.ndarray], str]:
    """Fashion-MNIST's uint8 images and labels (``x_train``, ``y_train``, ``x_test``, ``y_test``)
    and where they came from: ``jaxnn.data.load``, else the original IDX files read directly
    (``jaxnn.data.sources``), for when preparing the tfds dataset fails."""
    from jaxnn import data
    from jaxnn.data import sources

    try:
        x, y = data.load("fashion_mnist", "train")
        x_test, y_test = data.load("fashion_mnist", "test")
        source = "fashion_mnist (jaxnn.data.load)"
    except Exception as error:  # noqa: BLE001 - any failure falls back to the raw files
        folder, tried = sources.find_source_dir("fashion_mnist")
        if folder is None:
            raise sources.DataError(f"fashion_mnist: no IDX files ({'; '.join(tried)})") from error
        print(f"jaxnn.data.load failed ({error!r}); reading {folder}", file=sys.stderr)
        x, y = sources.read_idx_pair(folder, "fashion_mnist", "train")
        x_test, y_test = sources.read_idx_pair(folder, "fashion_mnist", "test")
        source = f"fashion_mnist ({folder} IDX files)"
    return {"x_train": x, "y_train": y, "x_test": x_test, "y_test": y_test}, source


def as_benchmark_arrays(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """float32 (N, 28, 28, 1) images in [0, 1] and int32 labels, from uint8 (or float) images."""
    return {
        "x_train": _as_images(raw["x_train"]),
        "y_train": np.asarray(raw["y_train"]).reshape(-1).astype(np.int32),
        "x_test": _as_images(raw["x_test"]),
        "y_test": np.asarray(raw["y_test"]).reshape(-1).astype(np.int32),
    }


def _fashion_mnist() -> tuple[dict[str, np.ndarray], str]:
    raw, source = read_fashion_mnist()
    arrays = as_benchmark_arrays(raw)
    if arrays["x_train"].shape != (60000, 28, 28, 1) or arrays["x_test"].shape[0] != 10000:
        raise ValueError(
            f"fashion_mnist: expected 60,000 train and 10,000 test images of 28x28x1; got "
            f"{arrays['x_train'].shape} and {arrays['x_test'].shape}"
        )
    return arrays, source


def _random_data(num_train: int, num_test: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.random((num_train, 28, 28, 1), dtype=np.float32),
        "y_train": rng.integers(0, 10, num_train).astype(np.int32),
        "x_test": rng.random((num_test, 28, 28, 1), dtype=np.float32),
        "y_test": rng.integers(0, 10, num_test).astype(np.int32),
    }


def load_data(kind: str, quick: bool) -> tuple[dict[str, np.ndarray], str]:
    """The benchmark's arrays and a description of where they came from.

    Args:
      kind: ``"fashion_mnist"`` (random data, and a note on stderr, when it cannot be read) or
        ``"random"``.
      quick: 2,048 random training and 1,024 test examples, whatever ``kind``.
    """
    if quick:
        return _random_data(2048, 1024), "random (quick: 2,048 train / 1,024 test)"
    if kind == "fashion_mnist":
        try:
            return _fashion_mnist()
        except Exception as error:  # noqa: BLE001 - fall back to random data, and say so
            print(f"Fashion-MNIST unavailable ({error!r}); using random data", file=sys.stderr)
    return _random_data(60000, 10000), "random (60,000 train / 10,000 test)"


def save_arrays(arrays: dict[str, np.ndarray], folder: Path) -> None:
    """Writes each array to ``folder/<name>.npy`` for the workers."""
    for name, array in arrays.items():
        np.save(Path(folder) / f"{name}.npy", array)


def read_npy_aligned(path: Path) -> np.ndarray:
    """An .npy file read straight into 64-byte-aligned memory, as ``jaxnn.data`` returns arrays
    (``jaxnn.sharding.aligned_empty``: a CPU device then uses them without a copy). Written out
    here, not imported, because a torch or Keras worker must not import jaxnn."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0}.get(
            version, np.lib.format.read_array_header_2_0
        )
        shape, fortran_order, dtype = read_header(f)
        if fortran_order or dtype.hasobject:
            raise ValueError(f"{path}: expected a C-ordered numeric array; got {dtype}")
        nbytes = math.prod(shape) * dtype.itemsize
        raw = np.empty(nbytes + 64, np.uint8)
        offset = -raw.ctypes.data % 64
        array = raw[offset : offset + nbytes]
        if f.readinto(memoryview(array)) != nbytes:
            raise ValueError(f"{path}: expected {nbytes} bytes of data; got a truncated file")
    return array.view(dtype).reshape(shape)


def read_arrays(folder: Path) -> dict[str, np.ndarray]:
    """The arrays ``save_arrays`` wrote to ``folder``, each in 64-byte-aligned memory."""
    return {path.stem: read_npy_aligned(path) for path in Path(folder).glob("*.npy")}
