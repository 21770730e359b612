"""tfds builders for MNIST, Fashion-MNIST and CIFAR-10 that need no TensorFlow, and ``load``.

The builders (``jaxnn_mnist``, ``jaxnn_fashion_mnist``, ``jaxnn_cifar10``: our own names, so
they never clash with the stock builders) store numpy ``tfds.features.Tensor`` features in
``array_record`` files: uint8 NHWC images and int64 labels, class names in the info's metadata.
tfds prepares into a temporary folder and renames it when complete, so a killed preparation is
never read; ``load`` also checks every split's record count against the dataset info and
rebuilds a prepared folder whose files were damaged afterwards.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from jaxnn.data.sources import (
    DATASETS,
    DataError,
    cifar10_source,
    find_source_dir,
    parse_cifar10,
    read_idx_pair,
)

__all__ = ["BUILDERS", "class_names", "default_data_dir", "load", "prepare"]

SPLITS = ("train", "test")


def default_data_dir() -> str:
    """``$JAXNN_TFDS_DIR``, else tfds' own default (``$TFDS_DATA_DIR`` or ~/tensorflow_datasets)."""
    return os.environ.get("JAXNN_TFDS_DIR") or os.path.expanduser(
        os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
    )


def _ways_to_provide(name: str) -> str:
    spec = DATASETS[name]
    files = ", ".join(f for group in spec.files.values() for f in group)
    lines = [
        f"  - put the original files ({files}) in a folder and pass source_dir= "
        "(--config.dataset.source_dir) or set JAXNN_DATA_DIR to it;",
        "  - pass data_dir= (--config.dataset.data_dir) of an already prepared tfds folder;",
        f"  - allow the download from {spec.url} (unset JAXNN_NO_DOWNLOAD, network access);",
    ]
    if name == "fashion_mnist":
        lines.append("  - on Debian/Ubuntu: apt-get install dataset-fashion-mnist.")
    return "\n".join(lines)


class _ImageBuilder(tfds.core.GeneratorBasedBuilder):
    """Shared builder: the subclasses name the dataset."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "numpy features in array_record files, no TensorFlow needed."}
    DATASET = ""

    def __init__(self, *, source_dir: str | os.PathLike | None = None, **kwargs):
        self._source_dir = source_dir
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        spec = DATASETS[self.DATASET]
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{self.DATASET} as uint8 NHWC images and int64 labels (jaxnn).",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=spec.shape, dtype=np.uint8),
                    "label": tfds.features.Tensor(shape=(), dtype=np.int64),
                }
            ),
            supervised_keys=("image", "label"),
            homepage=spec.url,
            metadata=tfds.core.MetadataDict(class_names=list(spec.class_names)),
            disable_shuffling=True,  # keep the original files' order: loads match them exactly
        )

    def _read(self, folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
        if self.DATASET == "cifar10":
            return parse_cifar10(cifar10_source(folder), split)
        return read_idx_pair(folder, self.DATASET, split)

    def _download(self, dl_manager, tried: list[str]) -> Path:
        spec = DATASETS[self.DATASET]
        if os.environ.get("JAXNN_NO_DOWNLOAD"):
            tried.append("download: disabled by JAXNN_NO_DOWNLOAD")
            raise DataError(self._not_found(tried))
        urls = {f: spec.url + f for f in spec.download_sha256}
        try:
            paths = dl_manager.download(urls)
        except Exception as error:  # noqa: BLE001 - any failure is reported with the others
            tried.append(f"download from {spec.url}: {type(error).__name__}: {error}")
            raise DataError(self._not_found(tried)) from None
        for file, path in paths.items():
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            if digest != spec.download_sha256[file]:
                raise DataError(
                    f"{path}: checksum mismatch for {file}: sha256 {digest[:12]}..., expected "
                    f"{spec.download_sha256[file][:12]}..."
                )
        folder = Path(next(iter(paths.values()))).parent / f"{self.DATASET}_sources"
        folder.mkdir(exist_ok=True)
        for file, path in paths.items():
            target = folder / file
            if not target.exists():
                os.symlink(path, target)
        return folder

    def _not_found(self, tried: list[str]) -> str:
        listing = "\n".join(f"  - {t}" for t in tried)
        return (
            f"Could not find the {self.DATASET} data. Tried:\n{listing}\n"
            f"Ways to provide it:\n{_ways_to_provide(self.DATASET)}"
        )

    def _split_generators(self, dl_manager):
        folder, tried = find_source_dir(self.DATASET, self._source_dir)
        if folder is None:
            folder = self._download(dl_manager, tried)
        logging.info("Preparing %s from %s", self.DATASET, folder)
        return {split: self._generate_examples(*self._read(folder, split)) for split in SPLITS}

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray):
        for i in range(len(images)):
            yield i, {"image": images[i], "label": labels[i]}


class JaxnnMnist(_ImageBuilder):
    """MNIST: 60,000/10,000 handwritten digits, 28×28×1."""

    DATASET = "mnist"


class JaxnnFashionMnist(_ImageBuilder):
    """Fashion-MNIST: 60,000/10,000 Zalando article images, 28×28×1, 10 classes."""

    DATASET = "fashion_mnist"


class JaxnnCifar10(_ImageBuilder):
    """CIFAR-10: 50,000/10,000 colour images, 32×32×3, 10 classes."""

    DATASET = "cifar10"


BUILDERS = {"mnist": JaxnnMnist, "fashion_mnist": JaxnnFashionMnist, "cifar10": JaxnnCifar10}


def _check_name(name: str) -> None:
    if name not in BUILDERS:
        raise ValueError(f"name: unknown dataset {name!r}; known datasets: {sorted(BUILDERS)}")


def _builder(name: str, data_dir, source_dir) -> _ImageBuilder:
    return BUILDERS[name](
        data_dir=str(data_dir or default_data_dir()),
        source_dir=source_dir,
        file_format="array_record",
    )


def prepare(name: str, data_dir=None, *, source_dir=None) -> _ImageBuilder:
    """Prepares ``name`` in ``data_dir`` (a no-op when already prepared) and returns the builder."""
    _check_name(name)
    builder = _builder(name, data_dir, source_dir)
    tfds.disable_progress_bar()  # its per-shard bars would flood logs; we print our own lines
    builder.download_and_prepare(file_format="array_record")
    return builder


def _read_split(builder: _ImageBuilder, split: str) -> tuple[np.ndarray, np.ndarray]:
    from array_record.python.array_record_module import ArrayRecordReader

    prefix = f"{builder.name}-{split}.array_record-"
    files = sorted(p for p in Path(builder.data_dir).iterdir() if p.name.startswith(prefix))
    expected = builder.info.splits[split].num_examples
    shard_lengths = builder.info.splits[split].shard_lengths
    if len(files) != len(shard_lengths):
        raise DataError(
            f"{builder.data_dir}: {len(files)} {split} shard file(s); dataset_info.json lists "
            f"{len(shard_lengths)}"
        )
    records: list[bytes] = []
    for path, length in zip(files, shard_lengths, strict=True):
        try:
            reader = ArrayRecordReader(str(path))
            shard = reader.read_all()
            reader.close()
        except Exception as error:  # noqa: BLE001 - unreadable shard: corrupt
            raise DataError(f"{path}: unreadable array_record shard ({error})") from None
        if len(shard) != length:
            raise DataError(f"{path}: {len(shard)} records; dataset_info.json says {length}")
        records.extend(shard)
    if len(records) != expected:
        raise DataError(f"{builder.data_dir}: {len(records)} {split} records, expected {expected}")
    decode = builder.info.features.deserialize_example_np
    examples = [decode(r) for r in records]
    images = np.stack([e["image"] for e in examples])
    labels = np.fromiter((e["label"] for e in examples), np.int64, len(examples))
    return images, labels


def load(name: str, split: str, data_dir=None, *, source_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(images, labels)`` of a split as numpy: uint8 (N, H, W, C) and int64 (N,).

    The data comes from, in order: an already prepared tfds ``data_dir``; the original files in
    ``source_dir``, ``$JAXNN_DATA_DIR`` or Debian's dataset-fashion-mnist folder; the official
    download (checksummed). A prepared folder whose files were damaged is rebuilt once.

    Args:
      name: ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``.
      split: ``"train"`` or ``"test"``.
      data_dir: the tfds data folder (default: ``default_data_dir()``).
      source_dir: a folder with the original distribution files.

    Example::

        x_train, y_train = load("fashion_mnist", "train")   # (60000, 28, 28, 1) uint8
    """
    _check_name(name)
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {list(SPLITS)}; got {split!r}")
    builder = prepare(name, data_dir, source_dir=source_dir)
    try:
        return _read_split(builder, split)
    except DataError as error:
        logging.warning("%s; rebuilding %s", error, builder.data_dir)
        shutil.rmtree(builder.data_dir)
        builder = prepare(name, data_dir, source_dir=source_dir)
        return _read_split(builder, split)


def class_names(name: str) -> tuple[str, ...]:
    """The dataset's class names, index by label."""
    _check_name(name)
    return DATASETS[name].class_names
