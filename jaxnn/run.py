"""The one runner behind every experiment: config → data → Trainer → workdir.

``python -m experiments.<name> [--workdir=checkpoints/<name>] [--config.<key>=<value> ...]`` ends
up in ``main``; ``run(config, workdir)`` is the same thing as a library call. A workdir gets
``config.json``, ``metrics.csv``, TensorBoard event files, ``learning_curves.png``,
``confusion_matrix.png`` (classifiers), ``summary.json`` and ``checkpoints/``. Rerunning the same
command resumes from the latest checkpoint; a finished run prints its summary;
``--config.fresh=True`` starts over.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxnn import callbacks as callbacks_lib
from jaxnn import losses, models, optim, report, sharding
from jaxnn.trainer import Trainer

__all__ = [
    "Dataset",
    "base_config",
    "build_model",
    "enable_compilation_cache",
    "load_dataset",
    "main",
    "run",
]

ConfigDict = ml_collections.ConfigDict


def base_config() -> ConfigDict:
    """Every key an experiment can set, with defaults; experiments override a few of them."""
    c = ConfigDict()
    c.name = "experiment"
    c.seed = 0  # the one seed: init, dropout, data order, validation split, augmentation
    c.epochs = 10
    c.batch_size = 128
    c.steps_per_dispatch = 0  # 0: chosen by model (see Trainer)
    c.fresh = False  # True: delete the workdir's run and start over
    c.verbose = 1
    c.dataset = ConfigDict(
        {
            "name": "fashion_mnist",  # mnist | fashion_mnist | cifar10 | regression | binary | csv
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
        }
    )
    c.model = ConfigDict(
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
            "kernel_init": "glorot_uniform",
            "dtype": "float32",  # bfloat16: mixed precision with float32 parameters
        }
    )
    c.loss = "sparse_categorical_crossentropy"
    c.metrics = ("accuracy",)
    c.optimizer = optim.default_config()
    c.augment = ConfigDict(
        {
            "hflip": False,
            "crop_padding": 0,
            "width_shift": 0.0,
            "height_shift": 0.0,
            "rotation": 0.0,
            "brightness": 0.0,
            "contrast": 0.0,
        }
    )
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
    c.init_from = ConfigDict({"workdir": "", "layers": ("",), "freeze": False})
    c.checkpoint = ConfigDict({"enabled": True, "every_steps": 0, "keep_latest": 2, "keep_best": 1})
    return c


# --------------------------------------------------------------------------------------- data
@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train/validation/test arrays ready for the Trainer, and what they are."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...] = ()


IMAGE_DATASETS = ("mnist", "fashion_mnist", "cifar10")
TABULAR_DATASETS = ("regression", "binary", "csv")


def load_dataset(cfg: ConfigDict, seed: int) -> Dataset:
    """Loads and splits the dataset that ``cfg`` (the config's ``dataset`` part) names."""
    from jaxnn import data

    name = cfg.name
    if name in IMAGE_DATASETS:
        kwargs = {"data_dir": cfg.data_dir or None, "source_dir": cfg.source_dir or None}
        x, y = data.load(name, "train", **kwargs)
        x_test, y_test = data.load(name, "test", **kwargs)
        if cfg.limit_train:
            x, y = x[: cfg.limit_train], y[: cfg.limit_train]
        if cfg.limit_test:
            x_test, y_test = x_test[: cfg.limit_test], y_test[: cfg.limit_test]
        x, x_test = data.to_float(x), data.to_float(x_test)
        if cfg.validation_split > 0:
            x, y, x_val, y_val = data.train_validation_split(x, y, cfg.validation_split, seed)
        else:
            x_val = y_val = None
        if cfg.normalization == "standardize":
            mean, std = data.channel_stats(x)
            x, x_test = data.normalize(x, mean, std), data.normalize(x_test, mean, std)
            x_val = data.normalize(x_val, mean, std) if x_val is not None else None
        elif cfg.normalization != "scale":
            raise ValueError(
                "dataset.normalization: expected 'scale' or 'standardize'; "
                f"got {cfg.normalization!r}"
            )
        return Dataset(x, y, x_val, y_val, x_test, y_test, tuple(data.class_names(name)))
    if name in TABULAR_DATASETS:
        if name == "regression":
            x, y, _ = data.make_regression(
                n=cfg.num_examples, n_features=cfg.num_features, noise=cfg.noise, seed=seed
            )
            splits = data.from_arrays(
                x, y, validation_split=cfg.validation_split, test_split=cfg.test_split, seed=seed
            )
        elif name == "binary":
            x, y, *_ = data.make_classification(
                n=cfg.num_examples, n_features=cfg.num_features, seed=seed
            )
            splits = data.from_arrays(
                x, y, validation_split=cfg.validation_split, test_split=cfg.test_split, seed=seed
            )
        else:
            splits = data.load_csv(
                cfg.csv_path,
                target=cfg.target,
                validation_split=cfg.validation_split,
                test_split=cfg.test_split,
                seed=seed,
            )
        return Dataset(
            splits.x_train,
            splits.y_train,
            splits.x_val,
            splits.y_val,
            splits.x_test,
            splits.y_test,
            tuple(str(i) for i in range(2)) if name == "binary" else (),
        )
    raise ValueError(
        f"dataset.name: unknown dataset {name!r}; expected one of "
        f"{list(IMAGE_DATASETS + TABULAR_DATASETS)}"
    )


# -------------------------------------------------------------------------------------- model
def build_model(cfg: ConfigDict, num_outputs: int) -> models.MLP | models.CNN:
    """The model that ``cfg`` (the config's ``model`` part) describes."""
    dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
    if cfg.dtype not in dtypes:
        raise ValueError(f"model.dtype: expected one of {list(dtypes)}; got {cfg.dtype!r}")
    common = {
        "num_outputs": num_outputs,
        "activation": cfg.activation,
        "dropout_rate": cfg.dropout_rate,
        "batch_norm": cfg.batch_norm,
        "kernel_init": cfg.kernel_init,
        "dtype": dtypes[cfg.dtype],
    }
    models.get_activation(cfg.activation)
    models.get_initializer(cfg.kernel_init)
    if cfg.name == "mlp":
        return models.MLP(features=tuple(cfg.features), **common)
    if cfg.name == "cnn":
        return models.CNN(
            filters=tuple(cfg.filters),
            kernel_size=cfg.kernel_size,
            pool=cfg.pool or None,
            dense=tuple(cfg.dense),
            **common,
        )
    raise ValueError(f"model.name: expected 'mlp' or 'cnn'; got {cfg.name!r}")


def _optimizer_config(config: ConfigDict) -> dict[str, Any]:
    optimizer = config.optimizer.to_dict()
    if config.init_from.workdir and config.init_from.freeze:
        layers = tuple(name for name in config.init_from.layers if name)
        optimizer["freeze"] = tuple(dict.fromkeys((*optimizer.get("freeze", ()), *layers)))
    return optimizer


def _augment_fn(cfg: ConfigDict) -> Callable | None:
    options = cfg.to_dict()
    if not any(options.values()):
        return None
    from jaxnn.data import augment

    return lambda key, x: augment(key, x, **options)


def _num_outputs(config: ConfigDict, dataset: Dataset) -> int:
    task = losses.get(config.loss).task  # the loss registry knows each loss's task
    if task == "binary":
        return 1
    if task == "regression":
        return 1 if dataset.y_train.ndim == 1 else int(dataset.y_train.shape[1])
    if dataset.class_names:
        return len(dataset.class_names)
    return int(np.max(dataset.y_train)) + 1


# ------------------------------------------------------------------------------------ workdir
def _module_name() -> str:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return spec.name if spec is not None else "experiments.<name>"


def _check_workdir(workdir: Path) -> None:
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write_test_{os.getpid()}"  # one per process
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise PermissionError(
            f"workdir: {str(workdir)!r} is not writable ({error.strerror}); choose another with "
            "--workdir=PATH"
        ) from None


OUTPUTS = (
    "config.json",
    "metrics.csv",
    "summary.json",
    "learning_curves.png",
    "confusion_matrix.png",
    "checkpoints",
    "tensorboard",
)


def _clear_run(workdir: Path) -> None:
    for name in OUTPUTS:
        path = workdir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _print(*args: Any) -> None:
    if jax.process_index() == 0:
        print(*args, flush=True)


# --------------------------------------------------------------------------------------- run
def run(config: ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Trains, evaluates and reports one experiment in ``workdir``; returns its summary."""
    start = time.perf_counter()
    workdir = Path(workdir)
    _check_workdir(workdir)
    if config.fresh and jax.process_index() == 0:
        _clear_run(workdir)
    _sync("cleared workdir")
    summary_path = workdir / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        _print(
            f"{workdir} holds a finished run; its summary (rerun with --config.fresh=True "
            "to start over):"
        )
        _print(json.dumps(summary, indent=2, sort_keys=True))
        return summary
    if jax.process_index() == 0:
        report.dump_json(workdir / "config.json", json.loads(config.to_json()))

    devices = jax.devices()
    _print(
        f"Devices: {len(devices)} x {devices[0].device_kind} ({devices[0].platform}) in "
        f"{jax.process_count()} process(es): {[str(d) for d in devices]}"
    )
    mesh = sharding.make_mesh()
    sharding.check_batch_size("batch_size", config.batch_size, mesh)
    # Process 0 prepares the data first, so processes sharing a data_dir never race to write it.
    if jax.process_index() == 0:
        dataset = load_dataset(config.dataset, config.seed)
    _sync("dataset prepared")
    if jax.process_index() != 0:
        dataset = load_dataset(config.dataset, config.seed)
    _print(
        f"Data: {len(dataset.x_train)} train, "
        f"{0 if dataset.x_val is None else len(dataset.x_val)} validation, "
        f"{len(dataset.x_test)} test examples of shape {dataset.x_train.shape[1:]}"
    )
    model = build_model(config.model, _num_outputs(config, dataset))
    trainer = Trainer(
        model,
        loss=config.loss,
        optimizer=_optimizer_config(config),
        metrics=tuple(config.metrics),
        seed=config.seed,
        augment=_augment_fn(config.augment),
        steps_per_dispatch=config.steps_per_dispatch or "auto",
        mesh=mesh,
    )
    n = len(dataset.x_train)
    steps_per_epoch = -(-n // config.batch_size)
    trainer.initialize(dataset.x_train[:1], steps_per_epoch=steps_per_epoch, epochs=config.epochs)
    _print(report.model_summary(model, trainer.variables, dataset.x_train.shape[1:]))
    if config.init_from.workdir:
        from jaxnn.checkpoint import load_variables

        layers = [name for name in config.init_from.layers if name]
        params = load_variables(config.init_from.workdir, layers, trainer.state.params)
        trainer.state = trainer.state.replace(params=params)
        _print(f"Initialised {layers} from {config.init_from.workdir} (best checkpoint).")

    validation = dataset.x_val is not None
    monitor = config.monitor if validation else config.monitor.removeprefix("val_")
    csv_logger = callbacks_lib.CSVLogger(str(workdir / "metrics.csv"))
    callbacks: list[callbacks_lib.Callback] = [
        csv_logger,
        callbacks_lib.TensorBoardLogger(str(workdir / "tensorboard")),
    ]
    if config.early_stopping.enabled:
        callbacks.append(
            callbacks_lib.EarlyStopping(
                monitor,
                mode=config.monitor_mode,
                patience=config.early_stopping.patience,
                min_delta=config.early_stopping.min_delta,
                restore_best_weights=config.early_stopping.restore_best_weights,
            )
        )
    if config.reduce_lr.enabled:
        callbacks.append(
            callbacks_lib.ReduceLROnPlateau(
                monitor,
                mode=config.monitor_mode,
                factor=config.reduce_lr.factor,
                patience=config.reduce_lr.patience,
                min_lr=config.reduce_lr.min_lr,
                cooldown=config.reduce_lr.cooldown,
                min_delta=config.reduce_lr.min_delta,
            )
        )
    stateful = {c.__class__.__name__: c for c in callbacks}
    checkpoint = None
    if config.checkpoint.enabled:
        from jaxnn.checkpoint import Checkpointer

        checkpointer = Checkpointer(
            workdir,
            keep_latest=config.checkpoint.keep_latest,
            keep_best=config.checkpoint.keep_best,
            best_metric=monitor,
            best_mode=config.monitor_mode,
        )
        checkpoint = callbacks_lib.Checkpoint(
            checkpointer, stateful, every_steps=config.checkpoint.every_steps
        )
        _resume(trainer, checkpointer, checkpoint, stateful)
        callbacks.append(checkpoint)  # last: it saves what the others updated
        _STOP_HANDLERS[:] = [checkpoint.request_stop]
    remaining = config.epochs - trainer.epoch
    # Each process hands the Trainer only its own rows (all of them with one process).
    local = _process_rows(dataset, mesh)
    if remaining > 0:
        trainer.fit(
            local.x_train,
            local.y_train,
            epochs=remaining,
            batch_size=config.batch_size,
            validation_data=(local.x_val, local.y_val) if validation else None,
            callbacks=callbacks,
            verbose=config.verbose if jax.process_index() == 0 else 0,
        )
    full_history = _history_from_rows(csv_logger.rows)
    return _finish(config, workdir, trainer, dataset, local, full_history, monitor, start)


def _process_rows(dataset: Dataset, mesh: jax.sharding.Mesh) -> Dataset:
    if jax.process_count() == 1:
        return dataset

    def rows(array: np.ndarray | None) -> np.ndarray | None:
        return None if array is None else array[sharding.process_rows(len(array), mesh)]

    return dataclasses.replace(
        dataset,
        **{
            field.name: rows(getattr(dataset, field.name))
            for field in dataclasses.fields(Dataset)
            if field.name.startswith(("x_", "y_"))
        },
    )


def _sync(name: str) -> None:
    """A barrier across processes (nothing with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


_STOP_HANDLERS: list[Callable[[], None]] = []


def _resume(trainer, checkpointer, checkpoint, stateful) -> None:
    """Continues from the latest readable checkpoint, if there is one."""
    template = {"train_state": trainer.state, "metrics": trainer.empty_train_metrics()}
    restored = checkpointer.restore_latest_good(template)
    if restored is None:
        return
    tree, extra, step = restored
    trainer.state = tree["train_state"]
    trainer.epoch = int(extra["epoch"])
    trainer.global_step = step
    if extra["position"]:
        trainer.resume_mid_epoch(int(extra["position"]), tree["metrics"])
    for name, state in extra["callbacks"].items():
        stateful[name].load_state_dict(state)
    checkpoint._last_saved_step = step
    where = f", step {extra['position']} of epoch {trainer.epoch + 1}" if extra["position"] else ""
    _print(f"Resuming from checkpoint {step} ({trainer.epoch} epochs done{where}).")


def _history_from_rows(rows: list[dict[str, float]]) -> dict[str, list[float]]:
    history: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            if key != "epoch":
                history.setdefault(key, []).append(value)
    return history


def _finish(config, workdir, trainer, dataset, local, history, monitor, start) -> dict[str, Any]:
    test = trainer.evaluate(local.x_test, local.y_test)
    summary: dict[str, Any] = {"name": config.name, "epochs_run": len(history.get("loss", []))}
    summary.update({f"test_{k}": v for k, v in test.items()})
    if "test_binary_accuracy" in summary:  # every classifier reports test_accuracy
        summary.setdefault("test_accuracy", summary["test_binary_accuracy"])
    if monitor in history:
        values = np.asarray(history[monitor])
        best = int(np.argmax(values) if config.monitor_mode == "max" else np.argmin(values))
        summary.update(
            {"best_val_metric": float(values[best]), "best_epoch": best + 1, "monitor": monitor}
        )
    train_times = history.get("train_time_s", [])
    steady = train_times[1:] if len(train_times) > 1 else train_times
    if steady:
        summary["train_examples_per_s"] = len(dataset.x_train) * len(steady) / float(sum(steady))
    summary["wall_time_s"] = time.perf_counter() - start
    summary["params_checksum"] = report.params_checksum(trainer.state.params)
    summary.update(report.environment())
    first_metric = next((m for m in config.metrics if m in history), None)
    # Every process predicts (a collective computation); process 0 writes the files.
    probabilities = None
    if trainer.loss.task != "regression":
        probabilities = trainer.predict(dataset.x_test)
    if jax.process_index() == 0:
        if history:
            report.plot_learning_curves(
                history, workdir / "learning_curves.png", first_metric, title=config.name
            )
        if probabilities is not None:
            if probabilities.shape[1] == 1:
                predicted = (probabilities[:, 0] > 0.5).astype(np.int64)
                labels = dataset.y_test.reshape(-1).astype(np.int64)
                names = dataset.class_names or ("0", "1")
            else:
                predicted = probabilities.argmax(1)
                labels = (
                    dataset.y_test if dataset.y_test.ndim == 1 else dataset.y_test.argmax(1)
                ).astype(np.int64)
                names = dataset.class_names or tuple(str(i) for i in range(probabilities.shape[1]))
            report.plot_confusion_matrix(
                labels, predicted, names, workdir / "confusion_matrix.png", title=config.name
            )
        report.dump_json(workdir / "summary.json", summary)
    keys = [
        k
        for k in (
            "test_accuracy",
            "test_binary_accuracy",
            "test_mae",
            "test_mse",
            "best_val_metric",
            "best_epoch",
            "epochs_run",
            "wall_time_s",
            "train_examples_per_s",
        )
        if k in summary
    ]
    _print("Summary: " + ", ".join(f"{k}={summary[k]:.4g}" for k in keys))
    return summary


# --------------------------------------------------------------------------------------- CLI
def _flatten_keys(config: ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        path = f"{prefix}{key}"
        keys.append(path)
        if isinstance(value, ConfigDict):
            keys.extend(_flatten_keys(value, f"{path}."))
    return keys


def check_overrides(config: ConfigDict, argv: list[str]) -> None:
    """Rejects ``--config.<key>=...`` for keys the config does not have, naming close matches."""
    known = _flatten_keys(config)
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        key = arg[len("--config.") :].split("=", 1)[0]
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise SystemExit(
                f"error: --config.{key}: unknown config key.{hint} "
                "(python -m experiments.<name> --helpfull lists every key)"
            )


def enable_compilation_cache(path: str | os.PathLike | None = None) -> str | None:
    """Turns on JAX's persistent compilation cache, so a second run skips XLA compilation.

    Args:
      path: the cache folder; default ``$JAXNN_COMPILATION_CACHE`` or ``~/.cache/jaxnn/xla``.
        ``"off"`` (or the variable set to ``off``) leaves the cache disabled.

    Returns:
      The folder in use, or None when disabled. Every compiled step is cached (JAX's default
      skips those compiling in under a second, which is most of ours).
    """
    path = path or os.environ.get("JAXNN_COMPILATION_CACHE") or Path.home() / ".cache/jaxnn/xla"
    if str(path) == "off":
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return str(path)


def main(get_config: Callable[[], ConfigDict], default_workdir: str) -> None:
    """The command line of an experiment module: absl flags with ml_collections overrides."""
    from absl import app, flags
    from ml_collections import config_flags

    check_overrides(get_config(), sys.argv[1:])
    config_flags.DEFINE_config_dict("config", get_config(), "The experiment's configuration.")
    flags.DEFINE_string("workdir", default_workdir, "Where the run's files and checkpoints go.")
    # Multi-process runs (one process per host, or per GPU); env: JAXNN_COORDINATOR_ADDRESS, ...
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process).")
    flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process).")
    flags.DEFINE_integer("process_id", None, "This process's index (multi-process).")
    flags.DEFINE_integer("distributed_timeout", 300, "Seconds to wait for every process to join.")

    def _main(argv: list[str]) -> None:
        del argv
        from absl import logging as absl_logging

        if not flags.FLAGS["verbosity"].present:  # tfds and jax log a lot at INFO
            absl_logging.set_verbosity(absl_logging.WARNING)

        def _handler(signum, frame):  # finish the step in flight, save, then stop
            if not _STOP_HANDLERS:
                raise KeyboardInterrupt
            for request_stop in _STOP_HANDLERS:
                request_stop()

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _handler)
        try:
            sharding.initialize_distributed(
                flags.FLAGS.coordinator_address,
                flags.FLAGS.num_processes,
                flags.FLAGS.process_id,
                timeout_s=flags.FLAGS.distributed_timeout,
            )
            enable_compilation_cache()
            run(flags.FLAGS.config, flags.FLAGS.workdir)
        except KeyboardInterrupt:
            command = f"python -m {_module_name()} {' '.join(sys.argv[1:])}".rstrip()
            saved = Path(flags.FLAGS.workdir, "checkpoints")
            if saved.is_dir() and any(p.name.isdigit() for p in saved.iterdir()):
                _print(
                    f"Interrupted: the state is saved in {saved}. Resume with the same "
                    f"command: {command}"
                )
            else:
                _print(f"Interrupted before the first checkpoint; rerun to start: {command}")
            sys.exit(130)
        except (
            ValueError,
            PermissionError,
            FileNotFoundError,
            sharding.DistributedInitError,
        ) as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    app.run(_main)
