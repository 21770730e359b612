"""Tiny files in the datasets' original formats, written by the tests themselves (no network)."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def make_images(n: int, shape: tuple[int, ...], classes: int = 10, seed: int = 0):
    """Learnable images: class c brightens a band of rows, plus noise; every class present."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    images = rng.integers(0, 60, (n, *shape), dtype=np.uint8)
    band = max(1, shape[0] // classes)
    for i, c in enumerate(labels):
        images[i, c * band : (c + 1) * band] = 255
    return images, labels.astype(np.uint8)


def write_idx(folder: Path, n_train: int = 64, n_test: int = 32, seed: int = 0) -> Path:
    """The four gzipped IDX files of MNIST / Fashion-MNIST, with n_train and n_test examples."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = make_images(n, (28, 28), seed=seed + (split == "test"))
        image_file, label_file = IDX_FILES[split]
        header = struct.pack(">IIII", 0x00000803, n, 28, 28)
        (folder / image_file).write_bytes(gzip.compress(header + images.tobytes()))
        (folder / label_file).write_bytes(
            gzip.compress(struct.pack(">II", 0x00000801, n) + labels.tobytes())
        )
    return folder


def write_cifar10_python(folder: Path, per_batch: int = 20, n_test: int = 20) -> Path:
    """cifar-10-python.tar.gz with the original layout: 5 data batches, a test batch, meta."""
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:

        def add(name: str, obj: dict) -> None:
            payload = pickle.dumps(obj)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))

        names = [
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ]
        add("batches.meta", {b"label_names": [n.encode() for n in names]})
        batches = [(f"data_batch_{i}", per_batch, i) for i in range(1, 6)]
        for name, n, seed in [*batches, ("test_batch", n_test, 99)]:
            images, labels = make_images(n, (32, 32, 3), seed=seed)
            data = images.transpose(0, 3, 1, 2).reshape(n, 3072)  # CHW rows, as upstream
            add(name, {b"data": data, b"labels": [int(v) for v in labels]})
    (folder / "cifar-10-python.tar.gz").write_bytes(buffer.getvalue())
    return folder
