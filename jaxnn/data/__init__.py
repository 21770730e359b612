"""Datasets through tensorflow-datasets without TensorFlow, preprocessing and augmentation.

``load(name, split)`` gives numpy arrays of MNIST, Fashion-MNIST or CIFAR-10; ``augment`` runs
on device inside the train step; tabular helpers split and standardise on the training split.

Environment: ``JAXNN_TFDS_DIR`` (prepared tfds data, default ~/tensorflow_datasets),
``JAXNN_DATA_DIR`` (a folder of the original files), ``JAXNN_NO_DOWNLOAD=1`` (never download),
``JAXNN_NO_SYSTEM_DATA=1`` (ignore Debian's /usr/share/datasets/fashion-mnist).
"""

from jaxnn.data.augment import AugmentConfig, augment
from jaxnn.data.builders import BUILDERS, class_names, default_data_dir, load, prepare
from jaxnn.data.preprocess import channel_stats, normalize, to_float, train_validation_split
from jaxnn.data.sources import DataError
from jaxnn.data.tabular import (
    Splits,
    from_arrays,
    load_csv,
    make_classification,
    make_regression,
)

__all__ = [
    "BUILDERS",
    "AugmentConfig",
    "DataError",
    "Splits",
    "augment",
    "channel_stats",
    "class_names",
    "default_data_dir",
    "from_arrays",
    "load",
    "load_csv",
    "make_classification",
    "make_regression",
    "normalize",
    "prepare",
    "to_float",
    "train_validation_split",
]
