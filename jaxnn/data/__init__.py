"""Datasets through tensorflow-datasets without TensorFlow, preprocessing and augmentation.

``load(name, split)`` gives numpy arrays of MNIST, Fashion-MNIST or CIFAR-10;
``load_image_folder(path)`` reads a folder of class folders of PNG/JPEG images into ``Splits``
(decoded once, then cached in ``<path>/.jaxnn_cache``); ``augment`` runs on device inside the
train step; tabular helpers split and standardise on the training split;
``load_splits(config.dataset, seed)`` is an experiment's whole dataset as ``Splits``.

Environment: ``JAXNN_TFDS_DIR`` (prepared tfds data, default ~/tensorflow_datasets),
``JAXNN_DATA_DIR`` (a folder of the original files), ``JAXNN_NO_DOWNLOAD=1`` (never download),
``JAXNN_NO_SYSTEM_DATA=1`` (ignore Debian's /usr/share/datasets/fashion-mnist).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from jaxnn.data.augment import AugmentConfig, augment, default_augment_options
from jaxnn.data.folders import load_image_folder, read_image_folder
from jaxnn.data.preprocess import channel_stats, normalize, to_float, train_validation_split
from jaxnn.data.sources import DataError
from jaxnn.data.splits import (
    DATASETS,
    FOLDER_DATASETS,
    IMAGE_DATASETS,
    TABULAR_DATASETS,
    load_splits,
)
from jaxnn.data.tabular import (
    Splits,
    from_arrays,
    load_csv,
    make_classification,
    make_regression,
)

if TYPE_CHECKING:
    from jaxnn.data.builders import BUILDERS, class_names, default_data_dir, load, prepare

# The builders import tensorflow_datasets (seconds, and hundreds of modules): only on first use,
# so that the trainer's `import jaxnn.data.preprocess` stays cheap (PEP 562).
_LAZY = {
    name: "jaxnn.data.builders"
    for name in ("BUILDERS", "class_names", "default_data_dir", "load", "prepare")
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "BUILDERS",
    "DATASETS",
    "FOLDER_DATASETS",
    "IMAGE_DATASETS",
    "TABULAR_DATASETS",
    "AugmentConfig",
    "DataError",
    "Splits",
    "augment",
    "channel_stats",
    "class_names",
    "default_augment_options",
    "default_data_dir",
    "from_arrays",
    "load",
    "load_csv",
    "load_image_folder",
    "load_splits",
    "make_classification",
    "make_regression",
    "normalize",
    "prepare",
    "read_image_folder",
    "to_float",
    "train_validation_split",
]
