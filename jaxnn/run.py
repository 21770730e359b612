"""The one runner behind every experiment: config → data → Trainer → workdir.

``run(config, workdir)`` trains a config as a library call; ``jaxnn.cli`` is the command line
around it (``python -m experiments.<name>``). A workdir gets ``config.json``, ``metrics.csv``,
TensorBoard event files, ``learning_curves.png``, ``confusion_matrix.png`` (classifiers),
``summary.json`` and ``checkpoints/``. Rerunning resumes from the latest checkpoint; a finished
run returns its summary; ``config.fresh=True`` starts over.
"""

from __future__ import annotations

import datetime
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxnn import callbacks as callbacks_lib
from jaxnn import checkpoint as checkpoint_lib
from jaxnn import config as config_lib
from jaxnn import data, losses, report, sharding
from jaxnn import workdir as workdir_lib
from jaxnn.config import base_config, build_model
from jaxnn.data import Splits as Dataset
from jaxnn.data import load_splits as load_dataset
from jaxnn.data.augment import AugmentConfig
from jaxnn.trainer import Trainer

__all__ = [
    "Dataset",
    "base_config",
    "build_model",
    "load_dataset",
    "make_callbacks",
    "num_outputs",
    "plot_confusion",
    "run",
    "summarize",
]

ConfigDict = ml_collections.ConfigDict


def run(
    config: ConfigDict,
    workdir: str | Path,
    *,
    stop: callbacks_lib.StopRequest | None = None,
) -> dict[str, Any]:
    """Trains, evaluates and reports one experiment in ``workdir``; returns its summary.

    The workdir holds one run (``jaxnn.workdir``): a second process refuses while this one
    runs, and a rerun must bring the config the run was started with.

    Args:
      config: a config from ``jaxnn.config.base_config`` (an experiment's ``get_config()``),
        checked whole before anything is written.
      workdir: the run's folder; a rerun resumes from its latest checkpoint.
      stop: set from a signal handler to save and stop (``jaxnn.cli`` does).

    Returns:
      The summary (also in ``summary.json``): test metrics, the best epoch, times, the
      parameters' checksum, the environment, and ``history`` (every epoch's logs).
    """
    start = time.perf_counter()
    config_lib.check(config)
    workdir = Path(workdir)
    with workdir_lib.lock(workdir):  # one run per workdir
        finished = workdir_lib.open_run(config, workdir)
        if finished is not None:
            _print_finished(workdir, finished)
            return finished
        return _train(config, workdir, stop, start)


def _train(config, workdir, stop, start) -> dict[str, Any]:
    """Data, model, resume, fit, summary: the run inside its locked workdir."""
    mesh = sharding.make_mesh()
    sharding.check_batch_size("batch_size", config.batch_size, mesh)
    dataset = _load(config)
    local = _process_rows(dataset, mesh)
    trainer = _trainer(config, dataset, local, mesh)
    monitor = config.monitor if dataset.x_val is not None else config.monitor.removeprefix("val_")
    callbacks = make_callbacks(config, workdir, monitor)
    if config.checkpoint.enabled:
        checkpoint = _checkpoint(config, workdir, monitor, callbacks, stop)
        _resume(trainer, checkpoint)
        callbacks.append(checkpoint)  # last: it saves what the others updated
    remaining = config.epochs - trainer.epoch
    if remaining > 0:
        trainer.fit(
            local.x_train,
            local.y_train,
            epochs=remaining,
            batch_size=config.batch_size,
            validation_data=None if local.x_val is None else (local.x_val, local.y_val),
            callbacks=callbacks,
            verbose=config.verbose if jax.process_index() == 0 else 0,
        )
    return _finish(config, workdir, trainer, dataset, local, monitor, start)


def _print(*args: Any) -> None:
    if jax.process_index() == 0:
        print(*args, flush=True)


def _print_finished(workdir: Path, summary: dict[str, Any]) -> None:
    _print(
        f"{workdir} holds a finished run; its summary (rerun with --config.fresh=True "
        "to start over):"
    )
    shown = {k: v for k, v in summary.items() if k != "history"}
    _print(json.dumps(shown, indent=2, sort_keys=True))


# ------------------------------------------------------------------------------ workdir
# --------------------------------------------------------------------------- data, model
def _load(config: ConfigDict) -> Dataset:
    devices = jax.devices()
    _print(
        f"Devices: {len(devices)} x {devices[0].device_kind} ({devices[0].platform}) in "
        f"{jax.process_count()} process(es): {[str(d) for d in devices]}"
    )
    # Process 0 prepares the data first, so processes sharing a data_dir never race to write it.
    if jax.process_index() == 0:
        dataset = data.load_splits(config.dataset, config.seed)
    sharding.sync("dataset prepared")
    if jax.process_index() != 0:
        dataset = data.load_splits(config.dataset, config.seed)
    _print(
        f"Data: {len(dataset.x_train)} train, "
        f"{0 if dataset.x_val is None else len(dataset.x_val)} validation, "
        f"{len(dataset.x_test)} test examples of shape {dataset.x_train.shape[1:]}"
    )
    return dataset


def _process_rows(dataset: Dataset, mesh: jax.sharding.Mesh) -> Dataset:
    """Each process hands the Trainer only its own rows (all of them with one process)."""
    if jax.process_count() == 1:
        return dataset

    def rows(array: np.ndarray | None) -> np.ndarray | None:
        return None if array is None else array[sharding.process_rows(len(array), mesh)]

    return Dataset(
        rows(dataset.x_train),
        rows(dataset.y_train),
        rows(dataset.x_val),
        rows(dataset.y_val),
        rows(dataset.x_test),
        rows(dataset.y_test),
        class_names=dataset.class_names,
    )


def num_outputs(config: ConfigDict, dataset: Dataset) -> int:
    """The model's output width: 1 for binary and single-target regression, else the targets'
    width or the number of classes."""
    task = losses.get(config.loss).task  # the loss registry knows each loss's task
    if task == "binary":
        return 1
    if task == "regression":
        return 1 if dataset.y_train.ndim == 1 else int(dataset.y_train.shape[1])
    if dataset.class_names:
        return len(dataset.class_names)
    return int(np.max(dataset.y_train)) + 1


def _trainer(config: ConfigDict, dataset: Dataset, local: Dataset, mesh) -> Trainer:
    """The Trainer, built (optimizer, state, steps) for the run's length, fine-tuned layers
    copied in."""
    model = build_model(config.model, num_outputs(config, dataset))
    augment = AugmentConfig.from_options(config.augment.to_dict())
    trainer = Trainer(
        model,
        loss=config_lib.build_loss(config),
        optimizer=config_lib.optimizer_config(config),
        metrics=tuple(config.metrics),
        seed=config.seed,
        augment=augment if augment.enabled else None,
        steps_per_dispatch=config.steps_per_dispatch or "auto",
        mesh=mesh,
    )
    trainer.initialize(local.x_train, batch_size=config.batch_size, epochs=config.epochs)
    _print(report.model_summary(model, trainer.variables, dataset.x_train.shape[1:]))
    if config.init_from.workdir:
        layers = list(config.init_from.layers or ())
        params = checkpoint_lib.load_variables(
            config.init_from.workdir, layers, trainer.state.params
        )
        trainer.state = trainer.state.replace(params=params)
        _print(f"Initialised {layers} from {config.init_from.workdir} (best checkpoint).")
    return trainer


# ---------------------------------------------------------------------- callbacks, resume
def make_callbacks(config: ConfigDict, workdir: Path, monitor: str) -> list[callbacks_lib.Callback]:
    """A run's callbacks from its config: CSV and TensorBoard logs in ``workdir``, early
    stopping and ReduceLROnPlateau on ``monitor`` when enabled."""
    callbacks: list[callbacks_lib.Callback] = [
        callbacks_lib.CSVLogger(str(workdir / "metrics.csv")),
        callbacks_lib.TensorBoardLogger(str(workdir / "tensorboard")),
    ]
    if config.early_stopping.enabled:
        es = config.early_stopping
        callbacks.append(
            callbacks_lib.EarlyStopping(
                monitor,
                mode=config.monitor_mode,
                patience=es.patience,
                min_delta=es.min_delta,
                restore_best_weights=es.restore_best_weights,
            )
        )
    if config.reduce_lr.enabled:
        options = {k: v for k, v in config.reduce_lr.to_dict().items() if k != "enabled"}
        callbacks.append(
            callbacks_lib.ReduceLROnPlateau(monitor, mode=config.monitor_mode, **options)
        )
    return callbacks


def _checkpoint(config, workdir, monitor, callbacks, stop) -> callbacks_lib.Checkpoint:
    checkpointer = checkpoint_lib.Checkpointer(
        workdir,
        keep_latest=config.checkpoint.keep_latest,
        keep_best=config.checkpoint.keep_best,
        best_metric=monitor,
        best_mode=config.monitor_mode,
    )
    stateful = {c.__class__.__name__: c for c in callbacks}
    return callbacks_lib.Checkpoint(
        checkpointer, stateful, every_steps=config.checkpoint.every_steps, stop=stop
    )


def _resume(trainer: Trainer, checkpoint: callbacks_lib.Checkpoint) -> None:
    """Continues from the latest readable checkpoint, if there is one."""
    snapshot = checkpoint.resume(trainer.state, trainer.empty_train_metrics())
    if snapshot is None:
        return
    trainer.restore(snapshot)
    where = ""
    if snapshot.position:
        where = f", step {snapshot.position} of epoch {snapshot.epoch + 1}"
    _print(f"Resuming from checkpoint {snapshot.step} ({snapshot.epoch} epochs done{where}).")


# ------------------------------------------------------------------------------ summary
def _finish(config, workdir, trainer, dataset, local, monitor, start) -> dict[str, Any]:
    history = trainer.loop.history
    summary = _summary(config, trainer, dataset, local, monitor)
    summary["wall_time_s"] = time.perf_counter() - start
    # Every process predicts (a collective computation); process 0 writes the files.
    probabilities = None
    if trainer.loss.task != "regression":
        probabilities = trainer.predict(dataset.x_test)
    if jax.process_index() == 0:
        first_metric = next((m for m in config.metrics if m in history), None)
        if history:
            report.plot_learning_curves(
                history, workdir / "learning_curves.png", first_metric, title=config.name
            )
        if probabilities is not None:
            plot_confusion(config, workdir, dataset, probabilities)
        report.dump_json(workdir / "summary.json", summary)
    keys = (
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
    shown = (f"{k}={callbacks_lib.format_value(k, summary[k])}" for k in keys if k in summary)
    _print("Summary: " + ", ".join(shown))
    return summary


def _summary(config, trainer, dataset, local, monitor) -> dict[str, Any]:
    test = trainer.evaluate(local.x_test, local.y_test)
    return summarize(
        config, trainer.loop.history, test, trainer.state.params, len(dataset.x_train), monitor
    )


def summarize(
    config: ConfigDict,
    history: dict[str, list[float]],
    test: dict[str, float],
    params: Any,
    num_train: int,
    monitor: str,
) -> dict[str, Any]:
    """A run's summary: test metrics, the best epoch by ``monitor``, throughput over the epochs
    after the first, the parameters' checksum, when and how it ran, and the history."""
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
        summary["train_examples_per_s"] = num_train * len(steady) / float(sum(steady))
    summary["params_checksum"] = report.params_checksum(params)
    summary["finished_at"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    summary["command"] = shlex.join(sys.argv)  # what was run, as typed
    summary.update(report.environment())
    summary["history"] = history
    return summary


def plot_confusion(config, workdir: Path, dataset: Dataset, probabilities: np.ndarray) -> None:
    """``confusion_matrix.png`` of the test split from a classifier's probabilities."""
    if probabilities.shape[1] == 1:
        predicted = (probabilities[:, 0] > 0.5).astype(np.int64)
        labels = dataset.y_test.reshape(-1).astype(np.int64)
        names = dataset.class_names or ("0", "1")
    else:
        predicted = probabilities.argmax(1)
        y = dataset.y_test
        labels = (y if y.ndim == 1 else y.argmax(1)).astype(np.int64)
        names = dataset.class_names or tuple(str(i) for i in range(probabilities.shape[1]))
    title = f"{config.name} — test split, {len(labels):,} examples"
    report.plot_confusion_matrix(labels, predicted, names, workdir / "confusion_matrix.png", title)
