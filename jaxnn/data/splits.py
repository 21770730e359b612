"""An experiment's data from its config: the named dataset loaded, split and normalised.

``load_splits(config.dataset, config.seed)`` is what the runner calls; the config keys are
``name``, ``data_dir``, ``source_dir``, ``validation_split``, ``normalization``, ``limit_train``,
``limit_test`` (image datasets), ``path``, ``image_size``, ``grayscale``, ``cache_dir``,
``test_split`` (``image_folder``: a folder of class folders, see ``folders.load_image_folder``)
and ``num_examples``, ``num_features``, ``noise``, ``test_split``, ``csv_path``, ``target``
(tabular ones). The image builders (and so tensorflow_datasets) are imported only when an image
dataset is asked for.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxnn.data import folders, preprocess, tabular
from jaxnn.data.tabular import Splits

__all__ = [
    "DATASETS",
    "FOLDER_DATASETS",
    "IMAGE_DATASETS",
    "NORMALIZATIONS",
    "TABULAR_DATASETS",
    "check_dataset",
    "load_splits",
]

IMAGE_DATASETS = ("mnist", "fashion_mnist", "cifar10")  # the tfds builders' datasets
FOLDER_DATASETS = ("image_folder",)  # your images: dataset.path/<class_name>/*.png|jpg|jpeg
TABULAR_DATASETS = ("regression", "binary", "csv")
DATASETS = IMAGE_DATASETS + FOLDER_DATASETS + TABULAR_DATASETS
NORMALIZATIONS = ("scale", "standardize")


def check_dataset(cfg: Any) -> None:
    """Checks a ``dataset`` block's name and normalisation, and for ``image_folder`` its ``path``,
    ``image_size`` and ``grayscale`` (before anything is loaded).

    Raises:
      ValueError: an unknown ``name`` or ``normalization``, listing the known ones; an
        ``image_folder`` without ``path`` or with a bad ``image_size`` or ``grayscale``.

    Example::

        check_dataset(config.dataset)
    """
    if cfg.name not in DATASETS:
        raise ValueError(
            f"dataset.name: unknown dataset {cfg.name!r}; expected one of {list(DATASETS)}"
        )
    if cfg.normalization not in NORMALIZATIONS:
        raise ValueError(
            f"dataset.normalization: expected 'scale' or 'standardize'; got {cfg.normalization!r}"
        )
    if cfg.name in FOLDER_DATASETS:
        if not cfg.path:
            raise ValueError(
                f"dataset.path: expected a folder of class folders for dataset.name={cfg.name!r}; "
                f"got {cfg.path!r}"
            )
        folders.check_image_size(cfg.image_size, "dataset.image_size")
        if cfg.grayscale not in (None, True, False):
            raise ValueError(
                f"dataset.grayscale: expected None, True or False; got {cfg.grayscale!r}"
            )


def load_splits(cfg: Any, seed: int) -> Splits:
    """Loads and splits the dataset that ``cfg`` (a run config's ``dataset`` block) names.

    Image datasets: the train and test splits (the first ``limit_train`` / ``limit_test``
    examples when those are > 0), scaled to [0, 1], a validation set carved out of train by
    ``train_validation_split(x, y, validation_split, seed)``, and, with
    ``normalization="standardize"``, every split standardised per channel with the training
    split's statistics (``mean``/``std``). ``image_folder``: ``load_image_folder(path,
    image_size=, grayscale=, validation_split=, test_split=, seed=seed, cache_dir=)`` (an empty
    ``cache_dir`` is the default ``<path>/.jaxnn_cache``), standardised the same way when asked.
    Tabular datasets: ``make_regression`` /
    ``make_classification`` with ``seed`` or ``load_csv``, split by ``from_arrays``.

    Args:
      cfg: anything with the attributes above (an ``ml_collections.ConfigDict``).
      seed: the run's seed: the validation split and the generated data derive from it.

    Returns:
      ``Splits`` with ``class_names`` (the dataset's, ``("0", "1")`` for ``binary``, empty for
      regression and csv data).

    Raises:
      ValueError: an unknown ``name`` or ``normalization`` (the message lists the known ones).

    Example::

        splits = load_splits(config.dataset, config.seed)
        trainer.fit(splits.x_train, splits.y_train, validation_data=(splits.x_val, splits.y_val))
    """
    check_dataset(cfg)
    if cfg.name in TABULAR_DATASETS:
        return _tabular_splits(cfg, seed)
    splits = _image_splits(cfg, seed) if cfg.name in IMAGE_DATASETS else _folder_splits(cfg, seed)
    return _standardize(splits) if cfg.normalization == "standardize" else splits


def _image_splits(cfg: Any, seed: int) -> Splits:
    from jaxnn.data import builders  # tensorflow_datasets: only when an image dataset is asked

    name = cfg.name
    kwargs = {"data_dir": cfg.data_dir or None, "source_dir": cfg.source_dir or None}
    x, y = builders.load(name, "train", **kwargs)
    x_test, y_test = builders.load(name, "test", **kwargs)
    if cfg.limit_train:
        x, y = x[: cfg.limit_train], y[: cfg.limit_train]
    if cfg.limit_test:
        x_test, y_test = x_test[: cfg.limit_test], y_test[: cfg.limit_test]
    x, x_test = preprocess.to_float(x), preprocess.to_float(x_test)
    if cfg.validation_split > 0:
        x, y, x_val, y_val = preprocess.train_validation_split(x, y, cfg.validation_split, seed)
    else:
        x_val = y_val = None
    return Splits(
        x_train=x,
        y_train=y,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        class_names=tuple(builders.class_names(name)),
    )


def _folder_splits(cfg: Any, seed: int) -> Splits:
    return folders.load_image_folder(
        cfg.path,
        image_size=cfg.image_size,
        grayscale=cfg.grayscale,
        validation_split=cfg.validation_split,
        test_split=cfg.test_split,
        seed=seed,
        cache_dir=cfg.cache_dir or None,
    )


def _standardize(splits: Splits) -> Splits:
    """Every image split standardised per channel with the TRAINING split's statistics."""
    mean, std = preprocess.channel_stats(splits.x_train)
    x_val = splits.x_val
    return dataclasses.replace(
        splits,
        x_train=preprocess.normalize(splits.x_train, mean, std),
        x_val=preprocess.normalize(x_val, mean, std) if x_val is not None else None,
        x_test=preprocess.normalize(splits.x_test, mean, std),
        mean=mean,
        std=std,
    )


def _tabular_splits(cfg: Any, seed: int) -> Splits:
    fractions = {"validation_split": cfg.validation_split, "test_split": cfg.test_split}
    if cfg.name == "regression":
        x, y, _ = tabular.make_regression(
            n=cfg.num_examples, n_features=cfg.num_features, noise=cfg.noise, seed=seed
        )
        splits = tabular.from_arrays(x, y, **fractions, seed=seed)
    elif cfg.name == "binary":
        x, y, _ = tabular.make_classification(
            n=cfg.num_examples, n_features=cfg.num_features, seed=seed
        )
        splits = tabular.from_arrays(x, y, **fractions, seed=seed)
    else:
        splits = tabular.load_csv(cfg.csv_path, target=cfg.target, **fractions, seed=seed)
    class_names = ("0", "1") if cfg.name == "binary" else ()
    return dataclasses.replace(splits, class_names=class_names)
