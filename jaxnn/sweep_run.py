"""``run_sweep(config, spec, workdir)``: one experiment trained for every combination of the
values in ``spec`` (``--sweep.<key>="(v1,v2,...)"`` on the command line), the members that can
share one compiled program trained at once (``jaxnn.sweep.Sweep``).

Members that differ only in ``seed`` (image datasets scaled to [0, 1]) and in the optimizer
numbers of ``jaxnn.optim.TRACEABLE`` form one group, trained together with ``jax.vmap``; any
other difference (widths, dropout rate, batch size, the model, augmentation, label smoothing,
schedule lengths, an L2 or momentum of 0 beside non-zero ones) makes groups of their own, run
one after another.

The workdir::

    config.json          the experiment's config and the sweep (fixed at the first start)
    members/<name>/      a run folder per member: config.json, metrics.csv, summary.json,
                         learning_curves.png, confusion_matrix.png, tensorboard/, checkpoints/
                         (best and final); jaxnn.load, predict, export and compare read it
    groups/<g>/          each group's stacked training state (what a rerun resumes from)
    sweep.txt, sweep.png the table (mean ± spread over seeds per setting, the best member) and
                         every member's validation curves in one plot
    summary.json         the same as data; its presence marks the sweep finished
"""

from __future__ import annotations

import ast
import difflib
import itertools
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections

from jaxnn import callbacks as callbacks_lib
from jaxnn import checkpoint as checkpoint_lib
from jaxnn import config as config_lib
from jaxnn import data, optim, report, sweep_report
from jaxnn import run as run_lib
from jaxnn import workdir as workdir_lib
from jaxnn.data.augment import AugmentConfig
from jaxnn.loop import TrainLoop
from jaxnn.sweep import MemberSpec, Sweep
from jaxnn.sweep_members import SweepRecords, member_tree, shared_settings

__all__ = ["Member", "members_of", "parse_sweep_args", "run_sweep"]

ConfigDict = ml_collections.ConfigDict
Spec = dict[str, tuple[Any, ...]]
# Keys a sweep cannot vary: they say how to run, not what to train.
_NOT_SWEPT = ("name", "fresh", "extend", "verbose", "checkpoint")


def parse_sweep_args(argv: Sequence[str]) -> tuple[Spec, list[str]]:
    """Splits ``--sweep.<key>=<values>`` flags from the rest of ``argv``.

    ``<values>`` is a Python literal: a tuple or list of values (``"(1e-3,3e-4)"``) or one
    value. Returns ``(spec, other_args)``; the keys are checked by ``members_of``.

    Raises:
      ValueError: a flag without ``=``, or values that are not a literal.
    """
    spec: Spec = {}
    rest = []
    for arg in argv:
        if not arg.startswith("--sweep."):
            rest.append(arg)
            continue
        key, sep, text = arg[len("--sweep.") :].partition("=")
        if not sep:
            raise ValueError(f'--sweep.{key}: expected --sweep.{key}="(v1,v2,...)"; got {arg!r}')
        try:
            values = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            values = text  # a bare word, such as a name
        values = tuple(values) if isinstance(values, tuple | list) else (values,)
        if not values:
            raise ValueError(f"--sweep.{key}: expected at least one value; got {text!r}")
        spec[key] = values
    return spec, rest


class Member:
    """One member of a sweep: its folder name, its setting (swept key -> value) and config."""

    def __init__(self, index: int, setting: dict[str, Any], config: ConfigDict):
        self.index, self.setting, self.config = index, setting, config
        parts = [f"{key.rsplit('.', 1)[-1]}={_short(value)}" for key, value in setting.items()]
        self.name = f"{index:02d}_" + "_".join(parts)

    def without_seed(self) -> str:
        """The setting apart from the seed, as text (the rows of the sweep table)."""
        shown = {k: v for k, v in self.setting.items() if k != "seed"}
        return ", ".join(f"{k}={v}" for k, v in shown.items()) or "(one setting)"


def _short(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return "".join(c if c.isalnum() or c in ".-+" else "-" for c in text)


def members_of(config: ConfigDict, spec: Spec) -> list[Member]:
    """Every combination of ``spec``'s values applied to ``config``, each config checked.

    Raises:
      ValueError: an unknown key (with close matches), a key that cannot be swept, a value of
        the wrong type, or a member config that ``jaxnn.config.check`` refuses.
    """
    if not spec:
        raise ValueError("sweep: expected at least one --sweep.<key>=(values) flag")
    flat = workdir_lib.flat_config(json.loads(config.to_json()))
    for key in spec:
        if key not in flat:
            close = difflib.get_close_matches(key, list(flat), n=3)
            hint = f"; did you mean {close}?" if close else ""
            raise ValueError(f"--sweep.{key}: unknown config key{hint}")
        if key.split(".")[0] in _NOT_SWEPT:
            raise ValueError(f"--sweep.{key}: not a setting a sweep can vary; set it with --config")
    members = []
    for index, values in enumerate(itertools.product(*spec.values())):
        setting = dict(zip(spec, values, strict=True))
        member = ConfigDict(config.to_dict())
        for key, value in setting.items():
            _set(member, key, value)
        member.name = f"{config.name}/{index:02d}"
        config_lib.check(member)
        members.append(Member(index, setting, member))
    return members


def _set(config: ConfigDict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node[part]
    try:
        node[leaf] = value
    except TypeError as error:
        raise ValueError(f"--sweep.{key}: {value!r} does not fit the key ({error})") from None


def _seed_traced(config: ConfigDict) -> bool:
    """Whether members may differ in seed within one group: the data arrays must not depend on
    it (image datasets scaled to [0, 1]; each member then holds out its own validation rows)."""
    dataset = config.dataset
    image = dataset.name in data.splits.IMAGE_DATASETS
    return image and dataset.normalization == "scale" and not config.init_from.workdir


def groups_of(members: Sequence[Member]) -> list[list[Member]]:
    """The members in groups that can train in one vmapped program, in member order."""
    groups: dict[str, list[Member]] = {}
    for member in members:
        flat = workdir_lib.flat_config(json.loads(member.config.to_json()))
        static = {
            k: v
            for k, v in flat.items()
            if not k.startswith("optimizer.") and k not in ("name", *workdir_lib.UNTRAINED_KEYS)
        }
        if _seed_traced(member.config):
            static.pop("seed")
        static["optimizer"] = shared_settings(
            optim.check_config(config_lib.optimizer_config(member.config))
        )
        key = json.dumps(static, sort_keys=True, default=repr)
        groups.setdefault(key, []).append(member)
    return list(groups.values())


def _sweep_config(config: ConfigDict, spec: Spec) -> ConfigDict:
    """What the workdir's config.json records: the experiment's config and the sweep."""
    recorded = ConfigDict(config.to_dict())
    recorded.sweep = ConfigDict({key.replace(".", "/"): list(v) for key, v in spec.items()})
    return recorded


def run_sweep(
    config: ConfigDict,
    spec: Spec,
    workdir: str | Path,
    *,
    stop: callbacks_lib.StopRequest | None = None,
) -> dict[str, Any]:
    """Trains every member of the sweep in ``workdir`` (see the module docstring); returns the
    sweep's summary. A rerun resumes; a finished sweep returns its summary; the workdir rules
    are a run's (one process at a time, the config fixed at the first start, ``fresh``)."""
    start = time.perf_counter()
    config_lib.check(config)
    if config.extend:
        raise ValueError("config.extend: not available for sweeps; start a new sweep workdir")
    if jax.process_count() > 1:
        raise ValueError("sweep: runs in one process; start it without --num_processes")
    members = members_of(config, spec)
    workdir = Path(workdir)
    with workdir_lib.lock(workdir):
        finished = workdir_lib.open_run(_sweep_config(config, spec), workdir)
        if finished is not None:
            print(f"{workdir} holds a finished sweep (--config.fresh=True starts over):")
            print(sweep_report.table_text(finished))
            return finished
        groups = groups_of(members)
        if config.model.name == "cnn" and jax.devices()[0].platform == "cpu":
            # XLA CPU runs a convolution vmapped over members' weights (a grouped convolution)
            # ~3x slower than the members' convolutions one after another (docs/sweeps.md).
            groups = [[member] for group in groups for member in group]
            print("CNN on CPU: members train one after another (vmapped convolutions are slower)")
        print(f"Sweep: {len(members)} members in {len(groups)} group(s) trained one after another")
        datasets: dict[str, Any] = {}
        for g, group in enumerate(groups):
            _run_group(g, group, workdir, datasets, stop)
        return sweep_report.write(config, members, workdir, time.perf_counter() - start)


def _load(config: ConfigDict, datasets: dict[str, Any]) -> tuple[Any, bool]:
    """The group's data (loaded once per dataset config) and whether each member splits off its
    own validation rows (``fit(validation_split=...)``) rather than sharing ``x_val``."""
    per_member = _seed_traced(config) and config.dataset.validation_split > 0
    dataset_config = ConfigDict(config.dataset.to_dict())
    if per_member:
        dataset_config.validation_split = 0.0
    key = dataset_config.to_json() + ("" if per_member else f"seed={config.seed}")
    if key not in datasets:
        datasets[key] = data.load_splits(dataset_config, config.seed)
    return datasets[key], per_member


def _run_group(g: int, group: list[Member], workdir: Path, datasets, stop) -> None:
    if all((workdir / "members" / m.name / "summary.json").exists() for m in group):
        return
    config = group[0].config
    dataset, per_member = _load(config, datasets)
    names = ", ".join(m.name for m in group)
    print(f"Group {g}: {len(group)} member(s) at once: {names}")
    split = config.dataset.validation_split if per_member else 0.0
    validation = None if dataset.x_val is None else (dataset.x_val, dataset.y_val)
    has_val = per_member or validation is not None
    monitor = config.monitor if has_val else config.monitor.removeprefix("val_")
    sweep = _sweep(config, group, dataset, monitor)
    sweep.initialize(
        dataset.x_train, epochs=config.epochs, batch_size=config.batch_size, validation_split=split
    )
    member_callbacks = [
        run_lib.make_callbacks(m.config, _member_dir(workdir, m), monitor) for m in group
    ]
    sweep_callbacks = []
    if config.checkpoint.enabled:
        checkpoint = _group_checkpoint(config, workdir / "groups" / str(g), sweep, member_callbacks)
        checkpoint.stop = stop or checkpoint.stop
        snapshot = checkpoint.resume(sweep.loop.state, sweep.empty_train_metrics())
        if snapshot is not None:
            sweep.restore(snapshot)
            print(f"Resuming group {g} from step {snapshot.step} ({snapshot.epoch} epochs done).")
        sweep_callbacks.append(checkpoint)
    remaining = config.epochs - sweep.loop.epoch
    if remaining > 0:
        sweep.fit(
            dataset.x_train,
            dataset.y_train,
            epochs=remaining,
            batch_size=config.batch_size,
            validation_split=split,
            validation_data=validation,
            callbacks=member_callbacks,
            sweep_callbacks=sweep_callbacks,
            verbose=config.verbose,
        )
    _finish_members(group, workdir, sweep, dataset, monitor)


def _sweep(config: ConfigDict, group: list[Member], dataset: Any, monitor: str) -> Sweep:
    model = config_lib.build_model(config.model, run_lib.num_outputs(config, dataset))
    augment = AugmentConfig.from_options(config.augment.to_dict())
    specs = [MemberSpec(m.config.seed, config_lib.optimizer_config(m.config)) for m in group]
    return Sweep(
        model,
        specs,
        loss=config_lib.build_loss(config),
        metrics=tuple(config.metrics),
        augment=augment if augment.enabled else None,
        steps_per_dispatch=config.steps_per_dispatch or "auto",
        monitor=monitor,
        monitor_mode=config.monitor_mode,
    )


class _GroupCheckpoint(callbacks_lib.Checkpoint):
    """The group's checkpoint: the stacked ``Members`` and every member's records. A member's
    NaN loss is that member's (it stops at the epoch's end), so partial epochs are saved as
    they are, for the others."""

    def save(self, loop: TrainLoop, logs: dict[str, float] | None = None) -> None:
        checkpoint_lib.save_training(self.checkpointer, loop, self.stateful, metrics=logs)
        self._last_saved_step = loop.global_step


def _group_checkpoint(config, where: Path, sweep: Sweep, member_callbacks) -> _GroupCheckpoint:
    checkpointer = checkpoint_lib.Checkpointer(
        where, keep_latest=config.checkpoint.keep_latest, keep_best=0
    )
    records = SweepRecords(sweep, member_callbacks)
    return _GroupCheckpoint(
        checkpointer, {"sweep": records}, every_steps=config.checkpoint.every_steps
    )


def _member_dir(workdir: Path, member: Member) -> Path:
    path = workdir / "members" / member.name
    path.mkdir(parents=True, exist_ok=True)
    return path


def _finish_members(group, workdir: Path, sweep: Sweep, dataset, monitor: str) -> None:
    """Each member's run folder: checkpoints, summary, plots (summary.json last: it marks the
    member done)."""
    tests = sweep.evaluate(dataset.x_test, dataset.y_test)
    probabilities = None
    if sweep.loss.task != "regression":
        probabilities = sweep.predict(dataset.x_test)
    n_train = sweep.num_train
    for i, member in enumerate(group):
        path = _member_dir(workdir, member)
        config = member.config
        report.dump_json(path / "config.json", json.loads(config.to_json()))
        _member_checkpoints(path, sweep, i, monitor, config)
        loop = sweep.member_loops[i]
        summary = run_lib.summarize(
            config, loop.history, tests[i], sweep.member_state(i).params, n_train, monitor
        )
        summary["sweep"] = {"setting": member.setting, "stopped": sweep.records[i].stopped}
        first_metric = next((m for m in config.metrics if m in loop.history), None)
        if loop.history:
            report.plot_learning_curves(
                loop.history, path / "learning_curves.png", first_metric, title=member.name
            )
        if probabilities is not None:
            run_lib.plot_confusion(config, path, dataset, probabilities[i])
        report.dump_json(path / "summary.json", summary)


def _member_checkpoints(path: Path, sweep: Sweep, i: int, monitor: str, config) -> None:
    """The member's best and final states as its run folder's checkpoints (rewritten whole)."""
    if (path / "checkpoints").exists():
        shutil.rmtree(path / "checkpoints")
    loop, record = sweep.member_loops[i], sweep.records[i]
    final = sweep.member_state(i)
    metrics = member_tree(sweep.empty_train_metrics(), i)
    with checkpoint_lib.Checkpointer(
        path, keep_latest=1, keep_best=1, best_metric=monitor, best_mode=config.monitor_mode
    ) as checkpointer:
        epochs = len(loop.history.get("loss", []))
        if record.best_epoch and record.best_epoch < epochs:
            best = sweep.best_variables(i)
            state = final.replace(
                params=best["params"], batch_stats=best.get("batch_stats", final.batch_stats)
            )
            history = {k: v[: record.best_epoch] for k, v in loop.history.items()}
            step = record.best_epoch * loop.steps_per_epoch
            best_loop = TrainLoop(state, record.best_epoch, step, 0, 0, metrics, history)
            checkpoint_lib.save_training(checkpointer, best_loop, {}, metrics=record.best_logs)
        last = TrainLoop(final, loop.epoch, loop.global_step, 0, 0, metrics, loop.history)
        logs = {k: v[-1] for k, v in loop.history.items()}
        checkpoint_lib.save_training(checkpointer, last, {}, metrics=logs)
