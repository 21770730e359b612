"""An experiment's configuration: every key with its default (``base_config``), the one check of
a whole config (``check``), and what a config builds (the model, the optimizer config).

Experiments override a few keys of ``base_config()``; the command line overrides more
(``--config.<key>=<value>``). ``check`` runs before a run writes anything or loads data, so a
bad value never leaves a half-started workdir behind.
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import ml_collections
from ml_collections import config_dict

from jaxnn import inputs, losses, models, optim
from jaxnn.data.augment import AugmentConfig, default_augment_options
from jaxnn.data.splits import DATASETS, check_dataset

__all__ = ["DATASETS", "base_config", "build_loss", "build_model", "check", "optimizer_config"]

ConfigDict = ml_collections.ConfigDict
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def base_config() -> ConfigDict:
    """Every key an experiment can set, with defaults; experiments override a few of them."""
    c = ConfigDict()
    c.name = "experiment"
    c.seed = 0  # the one seed: init, dropout, data order, validation split, augmentation
    c.epochs = 10
    c.batch_size = 128
    c.steps_per_dispatch = config_dict.placeholder(int)  # None: chosen by model (see Trainer)
    c.fresh = False  # True: delete the workdir's run and start over
    c.extend = False  # True: continue the workdir's run (finished too) to a larger `epochs`
    c.verbose = 1
    c.dataset = _dataset_config()
    c.model = _model_config()
    c.loss = "sparse_categorical_crossentropy"
    # Classification losses only: targets (1 - a) * y + a / C, as Keras' label_smoothing.
    c.label_smoothing = 0.0
    c.metrics = ("accuracy",)
    c.optimizer = optim.default_config()
    c.augment = ConfigDict(default_augment_options())  # AugmentConfig's options, all off
    c.monitor = "val_accuracy"  # best epoch, best checkpoints, early stopping, plateau
    c.monitor_mode = "max"
    c.early_stopping = ConfigDict(
        {"enabled": False, "patience": 5, "min_delta": 0.0, "restore_best_weights": True}
    )
    c.reduce_lr = ConfigDict(
        {
            "enabled": False,
            "factor": 0.5,
            "patience": 5,
            "min_lr": 1e-5,
            "cooldown": 0,
            "min_delta": 1e-4,
        }
    )
    # Fine-tuning: copy these layers from another run's best checkpoint; freeze=True also gives
    # them zero updates (adds them to optimizer.freeze).
    c.init_from = ConfigDict(
        {"workdir": "", "layers": config_dict.placeholder(tuple), "freeze": False}
    )
    c.checkpoint = ConfigDict({"enabled": True, "every_steps": 0, "keep_latest": 2, "keep_best": 1})
    return c


def _dataset_config() -> ConfigDict:
    """Which data, where it is, how it is split and scaled."""
    return ConfigDict(
        {
            "name": "fashion_mnist",  # one of DATASETS
            "data_dir": "",  # prepared tfds data (default $JAXNN_TFDS_DIR or ~/tensorflow_datasets)
            "source_dir": "",  # original distribution files (default: $JAXNN_DATA_DIR, Debian's)
            "validation_split": 0.1,  # carved from train by seed; test is never touched
            "normalization": "scale",  # scale: [0, 1]; standardize: per-channel mean/std of train
            "limit_train": 0,  # >0: use only the first N training examples (quick runs, tests)
            "limit_test": 0,
            "num_examples": 2000,  # generated tabular data
            "num_features": 10,
            "noise": 0.1,
            "test_split": 0.2,
            "csv_path": "",
            "target": "target",
            "path": "",  # image_folder: a folder with one sub-folder of images per class
            "image_size": config_dict.placeholder(tuple),  # image_folder: (height, width)
            "grayscale": config_dict.placeholder(bool),  # image_folder: unset = as the files are
            "cache_dir": "",  # image_folder: decoded-image cache; empty = <path>/.jaxnn_cache
        }
    )


def _model_config() -> ConfigDict:
    """The MLP's or CNN's shape (``build_model``)."""
    return ConfigDict(
        {
            "name": "mlp",  # mlp | cnn
            "features": (128, 128),
            "filters": (32, 64),
            "kernel_size": 3,
            "pool": "max",
            "dense": (128,),
            "activation": "relu",
            "dropout_rate": 0.0,
            "batch_norm": False,
            "bn_momentum": 0.99,  # Keras' BatchNormalization defaults
            "bn_epsilon": 1e-3,
            "kernel_init": "glorot_uniform",
            "dtype": "float32",  # bfloat16: mixed precision with float32 parameters
            "test_time_hflip": False,  # cnn: evaluate/predict on each image and its mirror
        }
    )


def _expect(ok: bool, key: str, expected: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{key}: expected {expected}; got {value!r}")


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def check(config: ConfigDict) -> None:
    """Checks a whole config: names against their registries, numbers against their ranges.

    Raises:
      ValueError: naming the key, what was expected and what was given.
    """
    _expect(_is_int(config.epochs, 1), "epochs", "an integer >= 1", config.epochs)
    _expect(_is_int(config.batch_size, 1), "batch_size", "an integer >= 1", config.batch_size)
    _expect(_is_int(config.seed, 0), "seed", "an integer >= 0", config.seed)
    spd = config.steps_per_dispatch
    _expect(spd is None or _is_int(spd, 1), "steps_per_dispatch", "None or an integer >= 1", spd)
    check_dataset(config.dataset)
    _check_model(config.model)
    loss = build_loss(config)  # raises: an unknown name (listing them), a bad label_smoothing
    inputs.check_metric_names(tuple(config.metrics), loss)  # names, and that they fit the loss
    flip, cnn = config.model.test_time_hflip, config.model.name == "cnn"
    _expect(
        flip is False or (flip is True and cnn and loss.task == "multiclass"),
        "model.test_time_hflip",
        "True or False (True only for model.name='cnn' with a multiclass loss, which averages "
        f"softmax probabilities; here model.name={config.model.name!r}, a {loss.task} loss)",
        flip,
    )
    optim.check_config(optimizer_config(config))
    AugmentConfig.from_options(config.augment.to_dict())
    _expect(
        config.monitor_mode in ("max", "min"), "monitor_mode", "'max' or 'min'", config.monitor_mode
    )
    every = config.checkpoint.every_steps
    _expect(_is_int(every, 0), "checkpoint.every_steps", "an integer >= 0", every)
    keep = config.checkpoint.keep_latest
    _expect(_is_int(keep, 1), "checkpoint.keep_latest", "an integer >= 1", keep)
    keep = config.checkpoint.keep_best
    _expect(_is_int(keep, 0), "checkpoint.keep_best", "an integer >= 0", keep)


def _in(value: Any, low: float, high: float) -> bool:
    """A real number (not a bool) with ``low <= value < high`` (NaN never is)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and low <= value < high


def _check_model(cfg: ConfigDict) -> None:
    _expect(cfg.name in ("mlp", "cnn"), "model.name", "'mlp' or 'cnn'", cfg.name)
    _expect(cfg.dtype in _DTYPES, "model.dtype", f"one of {list(_DTYPES)}", cfg.dtype)
    models.get_activation(cfg.activation)
    models.get_initializer(cfg.kernel_init)
    momentum, epsilon = cfg.bn_momentum, cfg.bn_epsilon
    _expect(_in(momentum, 0, 1), "model.bn_momentum", "a float in [0, 1)", momentum)
    _expect(_in(epsilon, 0, math.inf) and epsilon > 0, "model.bn_epsilon", "a float > 0", epsilon)
    _expect(
        _in(cfg.dropout_rate, 0, 1), "model.dropout_rate", "a float in [0, 1)", cfg.dropout_rate
    )


def build_model(cfg: ConfigDict, num_outputs: int) -> models.MLP | models.CNN:
    """The model that ``cfg`` (the config's ``model`` part) describes."""
    _check_model(cfg)
    common = {
        "num_outputs": num_outputs,
        "activation": cfg.activation,
        "dropout_rate": cfg.dropout_rate,
        "batch_norm": cfg.batch_norm,
        "bn_momentum": cfg.bn_momentum,
        "bn_epsilon": cfg.bn_epsilon,
        "kernel_init": cfg.kernel_init,
        "dtype": _DTYPES[cfg.dtype],
    }
    if cfg.name == "mlp":
        return models.MLP(features=tuple(cfg.features), **common)
    return models.CNN(
        filters=tuple(cfg.filters),
        kernel_size=cfg.kernel_size,
        pool=cfg.pool or None,
        dense=tuple(cfg.dense),
        test_time_hflip=bool(cfg.get("test_time_hflip", False)),  # not in older config.json files
        **common,
    )


def build_loss(config: ConfigDict | dict[str, Any]) -> losses.Loss:
    """The run's loss: ``config.loss`` with ``config.label_smoothing``, which a config saved
    before the key existed lacks (it trained without smoothing)."""
    return losses.get(config["loss"], label_smoothing=config.get("label_smoothing", 0.0))


def optimizer_config(config: ConfigDict) -> dict[str, Any]:
    """The optimizer part as a dict, with the fine-tuned layers frozen when ``init_from`` says
    so (they join ``optimizer.freeze``)."""
    optimizer = config.optimizer.to_dict()
    if config.init_from.workdir and config.init_from.freeze:
        layers = tuple(config.init_from.layers or ())
        optimizer["freeze"] = tuple(dict.fromkeys((*optimizer.get("freeze", ()), *layers)))
    return optimizer
