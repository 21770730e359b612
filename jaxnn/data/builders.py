"""tfds builders for MNIST, Fashion-MNIST and CIFAR-10 that need no TensorFlow, and ``load``.

The builders (``jaxnn_mnist``, ``jaxnn_fashion_mnist``, ``jaxnn_cifar10``: our own names, so
they never clash with the stock builders) store numpy ``tfds.features.Tensor`` features in
``array_record`` files: uint8 NHWC images (as raw bytes) and int64 labels, the class names in the
info's metadata. The data comes from an already prepared folder, else the original files in a
local folder, else the official download checked against registered sha256 checksums.

A killed preparation is never read: tfds prepares into ``<name>/incomplete.XXXXXX_<version>``
and renames it into place only when complete. ``load`` also discards a version folder without
``dataset_info.json``, checks every split's shard files and record counts against the dataset
info on read, and rebuilds a prepared folder whose files were damaged afterwards.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import checksums as tfds_checksums

from jaxnn.data.records import decode_examples
from jaxnn.data.sources import (
    DATASETS,
    DEBIAN_PACKAGES,
    DataError,
    cifar10_source,
    find_source_dir,
    read_cifar10,
    read_idx_pair,
    source_files,
)

__all__ = ["BUILDERS", "SPLITS", "class_names", "default_data_dir", "load", "prepare"]

SPLITS = ("train", "test")
logger = logging.getLogger(__name__)


def default_data_dir() -> str:
    """``$JAXNN_TFDS_DIR``, else tfds' own default (``$TFDS_DATA_DIR`` or ~/tensorflow_datasets)."""
    return os.environ.get("JAXNN_TFDS_DIR") or os.path.expanduser(
        os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
    )


def _ways_to_provide(name: str) -> str:
    spec = DATASETS[name]
    files = ", ".join(source_files(name))
    which = "one of" if name == "cifar10" else "all of"
    lines = [
        f"  - put the original files ({which}: {files}) in a folder and pass source_dir= "
        "(--config.dataset.source_dir) or set JAXNN_DATA_DIR to it;",
        "  - pass data_dir= (--config.dataset.data_dir) of an already prepared tfds folder;",
        f"  - allow the download from {spec.url} (download=True, JAXNN_NO_DOWNLOAD unset, "
        "network access);",
    ]
    if name in DEBIAN_PACKAGES:
        lines.append(f"  - on Debian/Ubuntu: apt-get install {DEBIAN_PACKAGES[name]}.")
    return "\n".join(lines)


class _ImageBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared builder; the subclasses name the dataset."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "numpy features in array_record files, no TensorFlow needed.",
        "1.1.0": "images stored as raw bytes (fixed-size records, bulk decoding).",
    }
    DATASET = ""

    def __init__(
        self,
        *,
        source_dir: str | os.PathLike | None = None,
        download: bool = True,
        **kwargs,
    ):
        self._source_dir = source_dir
        self._download_allowed = download
        super().__init__(**kwargs)

    @tfds.core.utils.classproperty
    @classmethod
    def url_infos(cls) -> dict[str, tfds_checksums.UrlInfo] | None:
        """The official files' registered sizes and sha256, checked by the download manager."""
        if not cls.DATASET:
            return None
        spec = DATASETS[cls.DATASET]
        return {
            spec.url + file: tfds_checksums.UrlInfo(
                size=tfds.core.utils.Size(size), checksum=sha256, filename=file
            )
            for file, (size, sha256) in spec.download.items()
        }

    def _info(self) -> tfds.core.DatasetInfo:
        spec = DATASETS[self.DATASET]
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                f"{self.DATASET} as uint8 NHWC images and int64 labels (jaxnn). "
                f"Classes: {', '.join(spec.class_names)}."
            ),
            features=tfds.features.FeaturesDict(
                {
                    # Raw bytes, not tfds' default int64 list: fixed-size records, fast reads.
                    "image": tfds.features.Tensor(
                        shape=spec.shape, dtype=np.uint8, encoding=tfds.features.Encoding.BYTES
                    ),
                    "label": tfds.features.Tensor(shape=(), dtype=np.int64),
                }
            ),
            supervised_keys=("image", "label"),
            homepage=spec.url,
            metadata=tfds.core.MetadataDict(class_names=list(spec.class_names)),
            disable_shuffling=True,  # keep the original files' order: loads match them exactly
        )

    def _not_found(self, tried: list[str]) -> str:
        listing = "\n".join(f"  - {t}" for t in tried)
        return (
            f"Could not find the {self.DATASET} data. Tried:\n{listing}\n"
            f"Ways to provide it:\n{_ways_to_provide(self.DATASET)}"
        )

    def _download(self, dl_manager: tfds.download.DownloadManager, tried: list[str]) -> Path:
        """Downloads the official files (sha256-checked by tfds) into a folder of their names."""
        spec = DATASETS[self.DATASET]
        tried.append(f"already prepared data in {Path(self.data_dir).parent}: none")
        if not self._download_allowed:
            tried.append("download: disabled by download=False")
            raise DataError(self._not_found(tried))
        if os.environ.get("JAXNN_NO_DOWNLOAD"):
            tried.append("download: disabled by JAXNN_NO_DOWNLOAD")
            raise DataError(self._not_found(tried))
        try:
            paths = dl_manager.download({f: spec.url + f for f in spec.download})
        except Exception as error:  # noqa: BLE001 - any failure is reported with the others
            tried.append(f"download from {spec.url}: {type(error).__name__}: {error}")
            raise DataError(self._not_found(tried)) from None
        folder = Path(next(iter(paths.values()))).parent / f"{self.name}_sources"
        folder.mkdir(exist_ok=True)
        for file, path in paths.items():
            target = folder / file
            if target.is_symlink() or target.exists():
                target.unlink()
            target.symlink_to(path)
        return folder

    def _read(self, folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if self.DATASET == "cifar10":
            return read_cifar10(cifar10_source(folder))
        return {split: read_idx_pair(folder, self.DATASET, split) for split in SPLITS}

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        folder, tried = find_source_dir(self.DATASET, self._source_dir)
        if folder is None:
            folder = self._download(dl_manager, tried)
        logger.info("Preparing %s from %s", self.DATASET, folder)
        arrays = self._read(folder)
        return {split: self._generate_examples(*arrays[split]) for split in SPLITS}

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray):
        for i in range(len(images)):
            yield i, {"image": images[i], "label": labels[i]}


class JaxnnMnist(_ImageBuilder):
    """MNIST: 60,000/10,000 handwritten digits, 28x28x1, 10 classes."""

    DATASET = "mnist"


class JaxnnFashionMnist(_ImageBuilder):
    """Fashion-MNIST: 60,000/10,000 Zalando article images, 28x28x1, 10 classes."""

    DATASET = "fashion_mnist"


class JaxnnCifar10(_ImageBuilder):
    """CIFAR-10: 50,000/10,000 colour images, 32x32x3, 10 classes."""

    DATASET = "cifar10"


BUILDERS: dict[str, type[_ImageBuilder]] = {
    "mnist": JaxnnMnist,
    "fashion_mnist": JaxnnFashionMnist,
    "cifar10": JaxnnCifar10,
}


def _check_name(name: str) -> None:
    if name not in BUILDERS:
        raise ValueError(f"name: unknown dataset {name!r}; known datasets: {sorted(BUILDERS)}")


def _builder(name: str, data_dir, source_dir, download: bool) -> _ImageBuilder:
    return BUILDERS[name](
        data_dir=str(data_dir or default_data_dir()),
        source_dir=source_dir,
        download=download,
        file_format="array_record",
    )


def prepare(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    source_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> tfds.core.GeneratorBasedBuilder:
    """Prepares ``name`` in ``data_dir`` (a no-op when already prepared) and returns the builder.

    A version folder without ``dataset_info.json`` (not written by tfds' atomic rename, e.g. a
    partial copy) is deleted and prepared again.

    Args:
      name: ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``.
      data_dir: the tfds data folder (default: ``default_data_dir()``).
      source_dir: a folder with the original distribution files.
      download: whether the official download may be tried when no local source has the data.

    Raises:
      ValueError: an unknown ``name``.
      DataError: bad source files, or no source at all (the message lists what was tried).
    """
    _check_name(name)
    builder = _builder(name, data_dir, source_dir, download)
    version_dir = Path(builder.data_dir)
    if version_dir.exists() and not (version_dir / "dataset_info.json").exists():
        logger.warning("%s has no dataset_info.json: incomplete, preparing again", version_dir)
        shutil.rmtree(version_dir)
        builder = _builder(name, data_dir, source_dir, download)
    tfds.disable_progress_bar()  # its per-shard bars would flood logs
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(force_checksums_validation=True),
    )
    return builder


def _read_split(builder: tfds.core.GeneratorBasedBuilder, split: str):
    """Reads a prepared split in bulk, checking shards and counts against the dataset info."""
    from array_record.python.array_record_module import ArrayRecordReader

    folder = builder.data_dir
    if str(builder.info.file_format.value) != "array_record":
        raise DataError(f"{folder}: file format {builder.info.file_format}; expected array_record")
    if split not in builder.info.splits:
        raise DataError(f"{folder}/dataset_info.json: no {split!r} split")
    info = builder.info.splits[split]
    records: list[bytes] = []
    for path, length in zip(info.filepaths, info.shard_lengths, strict=True):
        if not path.exists():
            raise DataError(f"{path}: missing {split} shard listed in dataset_info.json")
        try:
            reader = ArrayRecordReader(str(path))
            shard = reader.read_all()
            reader.close()
        except Exception as error:  # noqa: BLE001 - an unreadable shard is a corrupt one
            raise DataError(f"{path}: unreadable array_record shard ({error})") from None
        if len(shard) != length:
            raise DataError(f"{path}: {len(shard)} records; dataset_info.json says {length}")
        records.extend(shard)
    if len(records) != info.num_examples:
        raise DataError(
            f"{folder}: {len(records)} {split} records; dataset_info.json says {info.num_examples}"
        )
    spec = DATASETS[builder.DATASET]
    try:
        images, labels = decode_examples(
            records, spec.shape, builder.info.features.deserialize_example_np
        )
    except Exception as error:  # noqa: BLE001 - undecodable records are corrupt ones
        raise DataError(f"{folder}: cannot decode the {split} records ({error})") from None
    if labels.size and (labels.min() < 0 or labels.max() >= len(spec.class_names)):
        raise DataError(f"{folder}: {split} labels outside [0, {len(spec.class_names)})")
    return images, labels


def load(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    *,
    source_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(images, labels)`` of a split as numpy: uint8 (N, H, W, C) and int64 (N,).

    The data comes from, in order: an already prepared tfds ``data_dir``; the original files in
    ``source_dir``, ``$JAXNN_DATA_DIR`` or Debian's dataset-fashion-mnist folder; the official
    download (sha256-checked; off with ``download=False`` or ``$JAXNN_NO_DOWNLOAD``). The
    prepared array_record files are read in bulk; a prepared folder whose files were damaged is
    rebuilt once.

    Args:
      name: ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``.
      split: ``"train"`` or ``"test"``.
      data_dir: the tfds data folder (default: ``default_data_dir()``).
      source_dir: a folder with the original distribution files.
      download: whether the official download may be tried.

    Raises:
      ValueError: an unknown ``name`` or ``split``.
      DataError: bad files (named in the message), or no source at all.

    Example::

        x_train, y_train = load("fashion_mnist", "train")  # (60000, 28, 28, 1) uint8
    """
    _check_name(name)
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {list(SPLITS)}; got {split!r}")
    kwargs = {"source_dir": source_dir, "download": download}
    builder = prepare(name, data_dir, **kwargs)
    try:
        return _read_split(builder, split)
    except DataError as error:
        logger.warning("%s; rebuilding %s", error, builder.data_dir)
        shutil.rmtree(builder.data_dir, ignore_errors=True)
        try:
            builder = prepare(name, data_dir, **kwargs)
        except DataError as rebuild_error:
            raise DataError(
                f"{error}\nThe prepared data was damaged and could not be rebuilt:\n{rebuild_error}"
            ) from None
        return _read_split(builder, split)


def class_names(name: str) -> tuple[str, ...]:
    """The dataset's class names, indexed by label.

    Raises:
      ValueError: an unknown ``name`` (the message lists the known ones).
    """
    _check_name(name)
    return DATASETS[name].class_names
