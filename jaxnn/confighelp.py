"""One line of help for every config key, and the ``--help`` text of an experiment.

``DESCRIPTIONS`` is checked against ``jaxnn.config.base_config()`` by a test: a key without a
description fails it.
"""

from __future__ import annotations

from typing import Any

import ml_collections

__all__ = ["DESCRIPTIONS", "config_help"]

_OPTIMIZER = {
    "name": "sgd | momentum | nesterov | adam | adamw | rmsprop | adagrad",
    "learning_rate": "the peak learning rate (a schedule scales it)",
    "momentum": "sgd/rmsprop momentum; unset: 0.9 for momentum and nesterov, else 0",
    "nesterov": "Nesterov momentum for sgd",
    "b1": "adam/adamw: decay of the gradient average",
    "b2": "adam/adamw: decay of the squared-gradient average",
    "eps": "adam, rmsprop, adagrad: the epsilon of the denominator (Keras' 1e-7)",
    "rho": "rmsprop: decay of the squared-gradient average",
    "initial_accumulator_value": "adagrad: the accumulator's start value",
    "weight_decay": "decoupled decay on kernels, times the rate; unset: 4e-3 for adamw, else 0",
    "l2": "lambda of the penalty lambda*sum(kernel^2) (Keras' kernel_regularizer=l2)",
    "clip_norm": "clip the gradient's global norm to this; 0 = off",
    "accumulate_steps": "apply the mean gradient of k steps every k steps",
    "freeze": "parameter path prefixes that get zero updates, e.g. ('Conv_0',)",
    "schedule.name": "constant | step | exponential | cosine | warmup_cosine",
    "schedule.decay_factor": "step: multiply the rate by this every decay_every_epochs",
    "schedule.decay_every_epochs": "step: epochs between decays",
    "schedule.decay_rate": "exponential: multiply the rate by this per decay_epochs",
    "schedule.decay_epochs": "exponential: epochs per decay_rate",
    "schedule.total_epochs": "cosine length in epochs; 0 = the run's epochs",
    "schedule.warmup_epochs": "warmup_cosine: epochs of linear warm-up from 0",
    "schedule.alpha": "cosine: the final rate as a fraction of learning_rate",
}

DESCRIPTIONS: dict[str, str] = {
    "name": "the run's name in plots and summaries",
    "seed": "the one seed: initialisation, dropout, data order, validation split",
    "epochs": "epochs to train",
    "batch_size": "examples per step (the global batch over all devices)",
    "steps_per_dispatch": "optimizer steps per compiled call; unset: by model",
    "fresh": "True: delete the workdir's run and start over",
    "extend": "True: continue the workdir's run (finished too) to a larger epochs",
    "verbose": "0: silent; 1: a progress bar and a line per epoch",
    "dataset.name": "mnist | fashion_mnist | cifar10 | image_folder | regression | binary | csv",
    "dataset.data_dir": "prepared tfds data (default $JAXNN_TFDS_DIR or ~/tensorflow_datasets)",
    "dataset.source_dir": "the original files (default $JAXNN_DATA_DIR, then Debian's)",
    "dataset.validation_split": "fraction of train held out for validation, by seed",
    "dataset.normalization": "scale: [0, 1]; standardize: per-channel mean/std of train",
    "dataset.limit_train": "> 0: only the first N training examples",
    "dataset.limit_test": "> 0: only the first N test examples",
    "dataset.num_examples": "generated data: number of examples",
    "dataset.num_features": "generated data: number of features",
    "dataset.noise": "regression data: noise of the targets",
    "dataset.test_split": "tabular data: fraction held out for testing",
    "dataset.csv_path": "csv: the file",
    "dataset.target": "csv: the target column",
    "dataset.path": "image_folder: a folder with one sub-folder of PNG/JPEG images per class",
    "dataset.image_size": "image_folder: resize to (height, width); unset: keep the size",
    "dataset.grayscale": "image_folder: True 1 channel, False RGB; unset: as the files are",
    "dataset.cache_dir": "image_folder: where decoded images are cached (<path>/.jaxnn_cache)",
    "model.name": "mlp | cnn",
    "model.features": "mlp: hidden layer widths",
    "model.filters": "cnn: channels of each Conv-[BN]-activation-pool block",
    "model.kernel_size": "cnn: square convolution window",
    "model.pool": "cnn: max | avg | '' (2x2 pooling after each block)",
    "model.dense": "cnn: hidden Dense widths after flattening",
    "model.activation": "relu, gelu, tanh, ... (jaxnn.models.ACTIVATIONS)",
    "model.dropout_rate": "dropout rate (mlp: after each hidden layer; cnn: after flattening)",
    "model.batch_norm": "BatchNorm after each hidden layer / convolution",
    "model.bn_momentum": "BatchNorm's running-average momentum (Keras 0.99, PyTorch 0.9)",
    "model.bn_epsilon": "BatchNorm's epsilon (Keras 1e-3, PyTorch and Flax 1e-5)",
    "model.kernel_init": "glorot_uniform (Keras), pytorch_uniform, ... (jaxnn.models.INITIALIZERS)",
    "model.dtype": "float32 | bfloat16 (mixed precision, float32 parameters)",
    "model.test_time_hflip": "cnn: evaluate/predict on each image's and its mirror's mean softmax",
    "loss": "sparse_categorical_crossentropy, binary_crossentropy, mse, ...",
    "label_smoothing": "classification losses: targets (1-a)*y + a/C (Keras' label_smoothing)",
    "metrics": "reported besides the loss; must fit the loss's task",
    **{f"optimizer.{key}": text for key, text in _OPTIMIZER.items()},
    "augment.hflip": "flip left-right with probability 1/2",
    "augment.crop_padding": "pad by this many pixels, then crop a random window",
    "augment.width_shift": "random horizontal shift, as a fraction of the width",
    "augment.height_shift": "random vertical shift, as a fraction of the height",
    "augment.rotation": "random rotation within +- this many degrees",
    "augment.brightness": "add a random delta within +- this",
    "augment.contrast": "scale the contrast by a factor within 1 +- this",
    "augment.erasing": "zero one random rectangle of an image with this probability",
    "monitor": "the logged value that picks the best epoch and checkpoint",
    "monitor_mode": "max | min: whether a larger monitor is better",
    "early_stopping.enabled": "stop when monitor has not improved for patience epochs",
    "early_stopping.patience": "epochs without improvement before stopping",
    "early_stopping.min_delta": "the smallest change that counts as an improvement",
    "early_stopping.restore_best_weights": "put the best epoch's weights back when stopping",
    "reduce_lr.enabled": "multiply the rate by factor after patience epochs without improvement",
    "reduce_lr.factor": "the multiplier, in (0, 1)",
    "reduce_lr.patience": "epochs without improvement before reducing",
    "reduce_lr.min_lr": "the rate never goes below this",
    "reduce_lr.cooldown": "epochs to wait after a reduction",
    "reduce_lr.min_delta": "the smallest change that counts as an improvement",
    "init_from.workdir": "fine-tuning: copy layers from this run's best checkpoint",
    "init_from.layers": "the layers to copy, e.g. ('Conv_0', 'Conv_1')",
    "init_from.freeze": "True: the copied layers get no updates",
    "checkpoint.enabled": "save checkpoints (needed to resume)",
    "checkpoint.every_steps": "also save every N optimizer steps; 0 = epoch ends only",
    "checkpoint.keep_latest": "how many of the newest checkpoints to keep",
    "checkpoint.keep_best": "how many of the best checkpoints (by monitor) to keep",
}


def _leaves(config: ml_collections.ConfigDict, prefix: str = "") -> list[tuple[str, Any, str]]:
    rows = []
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            rows += _leaves(value, f"{prefix}{key}.")
        else:
            kind = config.get_type(key)
            rows.append((f"{prefix}{key}", value, getattr(kind, "__name__", str(kind))))
    return rows


_ORDER = ("run", "dataset", "model", "optimizer", "augment", "early_stopping", "reduce_lr")


def config_help(config: ml_collections.ConfigDict) -> str:
    """Every key of ``config``, grouped by block: ``--config.<key>``, its type, this experiment's
    default and a one-line description."""
    groups: dict[str, list[str]] = {}
    for key, value, kind in _leaves(config):
        block = key.split(".")[0] if "." in key else "run"
        shown = "unset" if value is None else repr(value)
        groups.setdefault(block, []).append(
            f"    --config.{key}={shown}  ({kind})\n        {DESCRIPTIONS.get(key, '')}"
        )
    order = [g for g in _ORDER if g in groups] + sorted(set(groups) - set(_ORDER))
    return "\n".join(f"\n  {block}:\n" + "\n".join(groups[block]) for block in order)
