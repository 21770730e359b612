"""The datasets' original distribution files: where to find them, and parsing that checks them.

Everything here is numpy and the standard library; errors name the file and the problem.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import subprocess
import tarfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

__all__ = [
    "DATASETS",
    "DEBIAN_DIRS",
    "DataError",
    "DatasetSpec",
    "find_source_dir",
    "parse_cifar10",
    "read_idx_pair",
]


class DataError(ValueError):
    """A data file is missing, corrupt, truncated or inconsistent."""


class DatasetSpec:
    """What we know about one dataset: files, official URLs, checksums, shapes, class names."""

    def __init__(self, name, shape, classes, files, url, download_sha256, content_sha256, sizes):
        self.name = name
        self.shape = shape
        self.class_names = classes
        self.files = files  # split -> tuple of file names (IDX) or archive candidates (CIFAR)
        self.url = url
        self.download_sha256 = download_sha256  # of the official gz/tar.gz bytes
        self.content_sha256 = content_sha256  # of decompressed IDX files (gzip-independent)
        self.sizes = sizes  # split -> official number of examples


_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

DATASETS = {
    "mnist": DatasetSpec(
        "mnist",
        (28, 28, 1),
        tuple(str(i) for i in range(10)),
        _IDX_FILES,
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        {
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
        # The decompressed MNIST content hashes could not be computed here (no copy offline):
        # local MNIST files are checked structurally (magic, dimensions, counts) only.
        {},
        {"train": 60000, "test": 10000},
    ),
    "fashion_mnist": DatasetSpec(
        "fashion_mnist",
        (28, 28, 1),
        (
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        _IDX_FILES,
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        {
            "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
        # sha256 of the DECOMPRESSED files (measured on Debian's dataset-fashion-mnist, whose
        # gzip bytes differ from upstream's but whose content is the same).
        {
            "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        {"train": 60000, "test": 10000},
    ),
    "cifar10": DatasetSpec(
        "cifar10",
        (32, 32, 3),
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        {
            "archive": (
                "cifar-10-python.tar.gz",
                "cifar-10-batches-py",
                "cifar-10-binary.tar.gz",
                "cifar-10-batches-bin",
            )
        },
        "https://www.cs.toronto.edu/~kriz/",
        {
            "cifar-10-binary.tar.gz": "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"
        },
        {},
        {"train": 50000, "test": 10000},
    ),
}

# Where Debian's dataset-fashion-mnist package puts the original files.
DEBIAN_DIRS = {"fashion_mnist": Path("/usr/share/datasets/fashion-mnist")}


def _debian_dir(name: str) -> Path | None:
    if name not in DEBIAN_DIRS or os.environ.get("JAXNN_NO_SYSTEM_DATA"):
        return None
    if DEBIAN_DIRS[name].is_dir():
        return DEBIAN_DIRS[name]
    try:  # the package may install elsewhere on other distributions' versions
        listing = subprocess.run(
            ["dpkg", "-L", "dataset-fashion-mnist"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in listing.splitlines():
        if line.endswith("train-images-idx3-ubyte.gz"):
            return Path(line).parent
    return None


def _has_files(folder: Path, spec: DatasetSpec) -> bool:
    if spec.name == "cifar10":
        return any((folder / f).exists() for f in spec.files["archive"])
    return all((folder / f).exists() for pair in spec.files.values() for f in pair)


def find_source_dir(
    name: str, source_dir: str | os.PathLike | None = None
) -> tuple[Path | None, list[str]]:
    """The first folder holding the dataset's original files, and the list of places tried.

    Order: ``source_dir``, ``$JAXNN_DATA_DIR`` (and its ``<name>`` subfolder), Debian's folder.
    """
    spec = DATASETS[name]
    candidates: list[tuple[str, Path]] = []
    if source_dir:
        candidates += [("source_dir", Path(source_dir)), ("source_dir", Path(source_dir) / name)]
    if os.environ.get("JAXNN_DATA_DIR"):
        env = Path(os.environ["JAXNN_DATA_DIR"])
        candidates += [("JAXNN_DATA_DIR", env), ("JAXNN_DATA_DIR", env / name)]
    debian = _debian_dir(name)
    if debian is not None:
        candidates.append(("Debian package dataset-fashion-mnist", debian))
    tried = []
    for label, folder in candidates:
        if _has_files(folder, spec):
            return folder, tried
        tried.append(f"{label}: {folder} (no {name} files)")
    if name in DEBIAN_DIRS and debian is None:
        tried.append(f"Debian package dataset-fashion-mnist: {DEBIAN_DIRS[name]} (not installed)")
    return None, tried


# ------------------------------------------------------------------------------------- IDX
def _decompress(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (EOFError, OSError, zlib.error) as error:
        raise DataError(f"{path}: corrupt or truncated gzip file ({error})") from None


def _read_idx(path: Path, magic: int, dims: int) -> np.ndarray:
    content = _decompress(path)
    header = 4 + 4 * dims
    if len(content) < header:
        raise DataError(f"{path}: truncated IDX file ({len(content)} bytes, header needs {header})")
    found = struct.unpack(">I", content[:4])[0]
    if found != magic:
        raise DataError(f"{path}: wrong IDX magic number {found:#010x}; expected {magic:#010x}")
    shape = struct.unpack(f">{dims}I", content[4:header])
    expected = header + int(np.prod(shape))
    if len(content) != expected:
        raise DataError(
            f"{path}: IDX header promises {shape} ({expected} bytes) but the file holds "
            f"{len(content)} bytes: truncated or corrupt"
        )
    return np.frombuffer(content, np.uint8, offset=header).reshape(shape), content


def read_idx_pair(folder: Path, name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads and checks one split's images and labels from gzipped IDX files.

    Checks: gzip integrity, magic numbers, 28×28 images, matching counts, labels < 10, and for
    files of the official size the sha256 of the decompressed content.
    """
    spec = DATASETS[name]
    image_file, label_file = (folder / f for f in spec.files[split])
    images, image_bytes = _read_idx(image_file, 0x00000803, 3)
    labels, label_bytes = _read_idx(label_file, 0x00000801, 1)
    if images.shape[1:] != spec.shape[:2]:
        raise DataError(f"{image_file}: images of {images.shape[1:]}; expected {spec.shape[:2]}")
    if len(images) != len(labels):
        raise DataError(
            f"{image_file} holds {len(images)} images but {label_file} holds {len(labels)} labels"
        )
    if labels.size and labels.max() >= len(spec.class_names):
        raise DataError(f"{label_file}: label {labels.max()} outside [0, {len(spec.class_names)})")
    if len(images) == spec.sizes[split]:
        for path, content in ((image_file, image_bytes), (label_file, label_bytes)):
            expected = spec.content_sha256.get(path.name)
            if expected and hashlib.sha256(content).hexdigest() != expected:
                raise DataError(
                    f"{path}: checksum mismatch: the decompressed content's sha256 is not the "
                    f"official {name} file's ({expected[:12]}...)"
                )
    return images[..., None], labels.astype(np.int64)


# ----------------------------------------------------------------------------------- CIFAR
def _cifar_members(path: Path) -> dict[str, bytes]:
    """name -> bytes of the batch files, from an archive or an extracted folder."""
    if path.is_dir():
        return {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    try:
        with tarfile.open(path, "r:gz") as tar:
            return {
                Path(m.name).name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()
            }
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise DataError(f"{path}: corrupt or truncated archive ({error})") from None


def _cifar_python(path: Path, members: dict[str, bytes], names: Iterable[str]):
    images, labels = [], []
    for name in names:
        if name not in members:
            raise DataError(f"{path}: missing {name}")
        try:
            batch = pickle.load(io.BytesIO(members[name]), encoding="bytes")
            data = np.asarray(batch[b"data"], np.uint8)
            batch_labels = np.asarray(batch[b"labels"], np.int64)
        except Exception as error:  # noqa: BLE001 - any unpickling failure is corruption
            raise DataError(f"{path}: {name} is corrupt ({error})") from None
        if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(batch_labels):
            raise DataError(
                f"{path}: {name} holds data of shape {data.shape} and {len(batch_labels)} labels; "
                "expected (N, 3072) and N"
            )
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(batch_labels)
    return np.concatenate(images), np.concatenate(labels)


def _cifar_binary(path: Path, members: dict[str, bytes], names: Iterable[str]):
    images, labels = [], []
    for name in names:
        if name not in members:
            raise DataError(f"{path}: missing {name}")
        raw = np.frombuffer(members[name], np.uint8)
        if raw.size % 3073:
            raise DataError(f"{path}: {name} has {raw.size} bytes, not a multiple of 3073")
        records = raw.reshape(-1, 3073)
        labels.append(records[:, 0].astype(np.int64))
        images.append(records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return np.concatenate(images), np.concatenate(labels)


def parse_cifar10(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads one split of CIFAR-10 from the python or binary archive (or extracted folder)."""
    members = _cifar_members(path)
    if "data_batch_1" in members or "test_batch" in members:
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        images, labels = _cifar_python(path, members, names)
    else:
        names = (
            [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
        )
        images, labels = _cifar_binary(path, members, names)
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: labels outside [0, 10) in the {split} split")
    return np.ascontiguousarray(images), labels


def cifar10_source(folder: Path) -> Path:
    """The first CIFAR-10 archive or extracted folder present in ``folder``."""
    for candidate in DATASETS["cifar10"].files["archive"]:
        if (folder / candidate).exists():
            return folder / candidate
    raise DataError(f"{folder}: no CIFAR-10 archive or batches folder")
