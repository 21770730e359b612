"""The datasets' original distribution files: where to find them, and parsing that checks them.

Everything here is numpy and the standard library; every error names the file and the problem.

Checks on local files: gzip integrity, IDX magic numbers, image dimensions, image and label counts
that agree, labels in range, the CIFAR-10 batch layout; and, for files of the official size, the
sha256 of the DECOMPRESSED content where it is known (Fashion-MNIST: measured on Debian's
dataset-fashion-mnist, whose gzip bytes differ from upstream's but whose content is the same).
The decompressed content hashes of MNIST and CIFAR-10 are unknown here (no offline copy), so
those files are checked structurally only; downloads are checked against the official archives'
registered sha256 by the tfds download manager.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import struct
import subprocess
import tarfile
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "DATASETS",
    "DEBIAN_DIRS",
    "DataError",
    "DatasetSpec",
    "find_source_dir",
    "read_cifar10",
    "read_idx_pair",
    "source_files",
]


class DataError(ValueError):
    """A data file is missing, corrupt, truncated or inconsistent."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What we know about one dataset: files, official URLs, checksums, shapes, class names.

    Attributes:
      name: the dataset's name in ``jaxnn.data.load``.
      shape: one image's (H, W, C).
      class_names: the class names, indexed by label.
      url: the official download folder.
      download: file name -> (size in bytes, sha256) of the official compressed files that the
        builder downloads.
      content_sha256: file name -> sha256 of the DECOMPRESSED file, where known.
      sizes: split -> official number of examples.
    """

    name: str
    shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    url: str
    download: dict[str, tuple[int, str]]
    content_sha256: dict[str, str]
    sizes: dict[str, int]


IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# The CIFAR-10 forms we read, in the order we look for them.
CIFAR10_SOURCES = (
    "cifar-10-python.tar.gz",
    "cifar-10-batches-py",
    "cifar-10-binary.tar.gz",
    "cifar-10-batches-bin",
)
# Official archives' sha256 (also registered in tfds' own checksum lists). The builder downloads
# the binary archive, which needs no unpickling; the python archive's hash is here for reference.
CIFAR10_PYTHON_ARCHIVE = (
    170498071,
    "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
)

DATASETS = {
    "mnist": DatasetSpec(
        name="mnist",
        shape=(28, 28, 1),
        class_names=tuple(str(i) for i in range(10)),
        url="https://storage.googleapis.com/cvdf-datasets/mnist/",
        download={
            "train-images-idx3-ubyte.gz": (
                9912422,
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            ),
            "train-labels-idx1-ubyte.gz": (
                28881,
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            ),
            "t10k-images-idx3-ubyte.gz": (
                1648877,
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            ),
            "t10k-labels-idx1-ubyte.gz": (
                4542,
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            ),
        },
        content_sha256={},  # unknown: checked structurally only
        sizes={"train": 60000, "test": 10000},
    ),
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist",
        shape=(28, 28, 1),
        class_names=(
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
        url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        download={
            "train-images-idx3-ubyte.gz": (
                26421880,
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            ),
            "train-labels-idx1-ubyte.gz": (
                29515,
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            ),
            "t10k-images-idx3-ubyte.gz": (
                4422102,
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            ),
            "t10k-labels-idx1-ubyte.gz": (
                5148,
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            ),
        },
        # sha256 of the decompressed files, measured on /usr/share/datasets/fashion-mnist.
        content_sha256={
            "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        sizes={"train": 60000, "test": 10000},
    ),
    "cifar10": DatasetSpec(
        name="cifar10",
        shape=(32, 32, 3),
        class_names=(
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
        ),
        url="https://www.cs.toronto.edu/~kriz/",
        download={
            "cifar-10-binary.tar.gz": (
                170052171,
                "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
            ),
        },
        content_sha256={},  # unknown: checked structurally only
        sizes={"train": 50000, "test": 10000},
    ),
}

# Where Debian's dataset-fashion-mnist package puts the original files.
DEBIAN_DIRS = {"fashion_mnist": Path("/usr/share/datasets/fashion-mnist")}
DEBIAN_PACKAGES = {"fashion_mnist": "dataset-fashion-mnist"}


def source_files(name: str) -> tuple[str, ...]:
    """The file (or folder) names of ``name``'s original distribution that we read.

    For MNIST and Fashion-MNIST all four IDX files are needed; for CIFAR-10 any one of the forms.
    """
    if name == "cifar10":
        return CIFAR10_SOURCES
    return tuple(f for pair in IDX_FILES.values() for f in pair)


def _debian_dir(name: str) -> Path | None:
    """Debian's folder for ``name``: the usual path, else where ``dpkg -L`` says it is."""
    if name not in DEBIAN_DIRS or os.environ.get("JAXNN_NO_SYSTEM_DATA"):
        return None
    if DEBIAN_DIRS[name].is_dir():
        return DEBIAN_DIRS[name]
    try:
        listing = subprocess.run(
            ["dpkg", "-L", DEBIAN_PACKAGES[name]],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in listing.splitlines():
        if line.endswith("/train-images-idx3-ubyte.gz"):
            return Path(line).parent
    return None


def _missing(folder: Path, name: str) -> list[str]:
    """The files of ``name`` that ``folder`` lacks (CIFAR-10: all forms, when none is there)."""
    files = source_files(name)
    missing = [f for f in files if not (folder / f).exists()]
    if name == "cifar10" and len(missing) < len(files):
        return []
    return missing


def find_source_dir(
    name: str, source_dir: str | os.PathLike | None = None
) -> tuple[Path | None, list[str]]:
    """The first folder holding ``name``'s original files, and the places tried before it.

    Order: ``source_dir``, ``$JAXNN_DATA_DIR``, each also with a ``<name>`` subfolder, then the
    Debian package's folder (Fashion-MNIST; off when ``$JAXNN_NO_SYSTEM_DATA`` is set).

    Args:
      name: a key of ``DATASETS``.
      source_dir: a folder given by the caller, or None.

    Returns:
      ``(folder, tried)``: the folder or None, and one line per place that did not hold the data.
    """
    candidates: list[tuple[str, Path]] = []
    if source_dir:
        candidates += [("source_dir", Path(source_dir)), ("source_dir", Path(source_dir) / name)]
    if os.environ.get("JAXNN_DATA_DIR"):
        env = Path(os.environ["JAXNN_DATA_DIR"])
        candidates += [("JAXNN_DATA_DIR", env), ("JAXNN_DATA_DIR", env / name)]
    debian = _debian_dir(name)
    if debian is not None:
        candidates.append((f"Debian package {DEBIAN_PACKAGES[name]}", debian))
    tried = []
    for label, folder in candidates:
        missing = _missing(folder, name)
        if not missing:
            return folder, tried
        what = "does not exist" if not folder.is_dir() else f"lacks {', '.join(missing)}"
        tried.append(f"{label}: {folder} {what}")
    if name in DEBIAN_DIRS and debian is None:
        reason = (
            "disabled by JAXNN_NO_SYSTEM_DATA"
            if os.environ.get("JAXNN_NO_SYSTEM_DATA")
            else ("not installed")
        )
        tried.append(f"Debian package {DEBIAN_PACKAGES[name]}: {DEBIAN_DIRS[name]} ({reason})")
    return None, tried


# ------------------------------------------------------------------------------------- IDX
IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension


def _decompress(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (EOFError, OSError, zlib.error) as error:
        raise DataError(f"{path}: corrupt or truncated gzip file ({error})") from None


def read_idx(path: Path, magic: int) -> tuple[np.ndarray, bytes]:
    """Reads a (gzipped) IDX file of unsigned bytes; returns the array and the decompressed bytes.

    Raises:
      DataError: corrupt gzip, wrong magic number, or a size that disagrees with the header.
    """
    content = _decompress(path)
    dims = magic & 0xFF
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
            f"{path}: IDX header promises shape {shape} ({expected} bytes) but the file holds "
            f"{len(content)} bytes: truncated or corrupt"
        )
    return np.frombuffer(content, np.uint8, offset=header).reshape(shape), content


def read_idx_pair(folder: Path, name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads and checks one split's images and labels from the gzipped IDX files in ``folder``.

    Args:
      folder: holds ``IDX_FILES[split]``.
      name: ``"mnist"`` or ``"fashion_mnist"``.
      split: ``"train"`` or ``"test"``.

    Returns:
      ``(images, labels)``: uint8 (N, 28, 28, 1) and int64 (N,).

    Raises:
      DataError: naming the file: corrupt gzip, wrong magic, wrong dimensions, image and label
        counts that disagree, labels out of range, or (files of the official size) a
        decompressed content checksum that is not the official one.
    """
    spec = DATASETS[name]
    image_file, label_file = (Path(folder) / f for f in IDX_FILES[split])
    images, image_bytes = read_idx(image_file, IDX_IMAGES_MAGIC)
    labels, label_bytes = read_idx(label_file, IDX_LABELS_MAGIC)
    if images.shape[1:] != spec.shape[:2]:
        raise DataError(
            f"{image_file}: images of {images.shape[1]}x{images.shape[2]} pixels; "
            f"expected {spec.shape[0]}x{spec.shape[1]}"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{image_file} holds {len(images)} images but {label_file} holds {len(labels)} labels"
        )
    num_classes = len(spec.class_names)
    if labels.size and labels.max() >= num_classes:
        raise DataError(f"{label_file}: label {labels.max()} outside [0, {num_classes})")
    # Content hashes apply to the official files only, so tiny test files pass the other checks.
    if len(images) == spec.sizes[split]:
        for path, content in ((image_file, image_bytes), (label_file, label_bytes)):
            expected = spec.content_sha256.get(path.name)
            found = hashlib.sha256(content).hexdigest()
            if expected and found != expected:
                raise DataError(
                    f"{path}: checksum mismatch: the decompressed content's sha256 is "
                    f"{found[:16]}..., the official {name} file's is {expected[:16]}..."
                )
    return images[..., None], labels.astype(np.int64)


# ----------------------------------------------------------------------------------- CIFAR
class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches only: plain containers and numpy arrays, no other globals."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}")
        return super().find_class(module, name)


def _cifar_members(path: Path) -> dict[str, bytes]:
    """Base name -> bytes of the files in a CIFAR-10 archive or extracted folder."""
    if path.is_dir():
        return {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    try:
        with tarfile.open(path, "r:gz") as tar:
            return {
                Path(m.name).name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()
            }
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise DataError(f"{path}: corrupt or truncated archive ({error})") from None


def _cifar_python_batch(path: Path, member: str, raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
        data = np.asarray(batch[b"data"], np.uint8)
        labels = np.asarray(batch[b"labels"], np.int64)
    except Exception as error:  # noqa: BLE001 - any unpickling failure is corruption
        raise DataError(f"{path}: {member} is corrupt ({type(error).__name__}: {error})") from None
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (len(data),):
        raise DataError(
            f"{path}: {member} holds data of shape {data.shape} and labels of shape "
            f"{labels.shape}; expected (N, 3072) and (N,)"
        )
    return data, labels


def _cifar_binary_batch(path: Path, member: str, raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    if len(raw) % 3073:
        raise DataError(
            f"{path}: {member} has {len(raw)} bytes, not a multiple of 3073 (1 label + 3072 pixels)"
        )
    records = np.frombuffer(raw, np.uint8).reshape(-1, 3073)
    return records[:, 1:], records[:, 0].astype(np.int64)


def read_cifar10(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Reads both splits of CIFAR-10 from the python or binary archive, or its extracted folder.

    Args:
      path: ``cifar-10-python.tar.gz``, ``cifar-10-batches-py/``, ``cifar-10-binary.tar.gz`` or
        ``cifar-10-batches-bin/``.

    Returns:
      ``{"train": (images, labels), "test": (images, labels)}``: uint8 (N, 32, 32, 3), int64 (N,);
      train is ``data_batch_1`` to ``data_batch_5`` in order.

    Raises:
      DataError: naming the file: corrupt archive, missing batch, wrong layout, bad labels.
    """
    path = Path(path)
    members = _cifar_members(path)
    python = "data_batch_1" in members or "test_batch" in members
    suffix, read = ("", _cifar_python_batch) if python else (".bin", _cifar_binary_batch)
    batches = {
        "train": [f"data_batch_{i}{suffix}" for i in range(1, 6)],
        "test": [f"test_batch{suffix}"],
    }
    result = {}
    for split, names in batches.items():
        parts = []
        for member in names:
            if member not in members:
                raise DataError(f"{path}: missing {member} (found {sorted(members)})")
            parts.append(read(path, member, members[member]))
        data = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise DataError(f"{path}: {split} labels outside [0, 10): {np.unique(labels)}")
        # The files store each image as 3 planes (R, G, B) of 32x32: CHW; we give HWC.
        images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        result[split] = (images, labels)
    return result


def cifar10_source(folder: Path) -> Path:
    """The first CIFAR-10 archive or extracted folder present in ``folder``.

    Raises:
      DataError: when ``folder`` holds none of ``CIFAR10_SOURCES``.
    """
    for candidate in CIFAR10_SOURCES:
        if (Path(folder) / candidate).exists():
            return Path(folder) / candidate
    raise DataError(
        f"{folder}: no CIFAR-10 archive or batches folder; expected one of {CIFAR10_SOURCES}"
    )
