"""What a run's workdir guarantees: one run at a time, the config it was started with, and a
finished run left as it is.

- **One run per workdir**: ``lock`` holds an exclusive ``flock`` on ``<workdir>/.lock`` for the
  run's lifetime; the operating system releases it when the process dies (kill -9 leaves no
  stale lock). A second run refuses at once, naming the holder's PID and host.
- **The config is fixed at the first start**: ``open_run`` compares the config with the
  workdir's ``config.json`` and refuses a different one before anything is written, listing the
  keys that differ and the ways forward. Keys that do not change what is trained (where the data
  is found, how much is printed) may differ.
- **Continuing a run for more epochs** is explicit: ``--config.epochs=N --config.extend=True``
  (a finished run too, as Keras' ``fit(initial_epoch=...)``); ``config_changes.json`` records
  what changed and when. A schedule tied to the run's length (cosine, warmup_cosine without
  ``total_epochs``) is then rebuilt for the new length: from the step reached on, the rate
  follows the longer curve (it rises again); pin ``optimizer.schedule.total_epochs`` when
  starting a run that may be continued.
- ``fresh=True`` deletes the run's outputs (never ``damaged_checkpoints/``) and starts over.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import ml_collections

from jaxnn import report, sharding
from jaxnn.utils import probe_writable

__all__ = [
    "OUTPUTS",
    "UNTRAINED_KEYS",
    "WorkdirBusyError",
    "config_differences",
    "flat_config",
    "lock",
    "open_run",
]

OUTPUTS = (
    "config.json",
    "metrics.csv",
    "summary.json",
    "learning_curves.png",
    "confusion_matrix.png",
    "checkpoints",
    "tensorboard",
    # a sweep's (jaxnn.sweep_run)
    "members",
    "groups",
    "sweep.txt",
    "sweep.png",
)
# Keys that may change between the starts of one run: they do not change what is trained.
UNTRAINED_KEYS = (
    "fresh",
    "extend",
    "verbose",
    "dataset.data_dir",
    "dataset.source_dir",
    "dataset.cache_dir",
)


class WorkdirBusyError(RuntimeError):
    """Another process is running in this workdir."""


@contextlib.contextmanager
def lock(workdir: Path) -> Iterator[None]:
    """Holds ``<workdir>/.lock`` exclusively while the block runs (process 0 of a run only).

    Raises:
      PermissionError: the workdir cannot be created or written.
      WorkdirBusyError: when another process holds it, naming that process's PID and host.
    """
    try:
        probe_writable(workdir)
    except OSError as error:
        raise PermissionError(
            f"workdir: {str(workdir)!r} is not writable ({error.strerror}); choose another with "
            "--workdir=PATH"
        ) from None
    if jax.process_index() != 0:
        yield
        return
    path = workdir / ".lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "an unknown process"
            raise WorkdirBusyError(
                f"workdir: {workdir} is in use by {holder}; wait for it to finish, stop it, or "
                "choose another --workdir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"PID {os.getpid()} on host {socket.gethostname()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def flat_config(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A config as ``{"optimizer.learning_rate": 0.001, ...}`` (dotted keys, leaves only)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flat_config(value, f"{prefix}{key}."))
    return {k.rstrip("."): v for k, v in flat.items()}


def config_differences(saved: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """``key: started with A, now B`` for every key (but ``UNTRAINED_KEYS``) that differs."""
    old, new = flat_config(saved), flat_config(config)
    return [
        f"{key}: started with {old.get(key)!r}, now {new.get(key)!r}"
        for key in sorted(set(old) | set(new))
        if key not in UNTRAINED_KEYS and old.get(key) != new.get(key)
    ]


def _check_same_config(workdir: Path, config: dict[str, Any]) -> None:
    """Refuses a config other than the recorded one; with ``extend`` a larger ``epochs`` is the
    one difference allowed, and the run is continued (``_extend``)."""
    path = workdir / "config.json"
    if not path.exists():
        return
    saved = _upgraded(json.loads(path.read_text()))
    differences = config_differences(saved, config)
    if differences and config.get("extend") and all(d.startswith("epochs:") for d in differences):
        _extend(workdir, saved, config)
    elif differences:
        raise ValueError(
            f"config: {workdir} holds a run started with another config ({'; '.join(differences)})."
            " Rerun with the values it was started with, start it over with --config.fresh=True,"
            " continue it to more epochs with --config.epochs=N --config.extend=True, or give the"
            " new config its own --workdir"
        )


def _upgraded(saved: dict[str, Any]) -> dict[str, Any]:
    """A config.json written by an earlier jaxnn, read as it would be written now: keys added
    since take their defaults, and unset values that were 0 or ("",) are None."""
    from jaxnn.config import base_config

    flat = flat_config(saved)
    for key, value in flat_config(json.loads(base_config().to_json())).items():
        flat.setdefault(key, value)
    if flat.get("steps_per_dispatch") == 0:
        flat["steps_per_dispatch"] = None
    if flat.get("init_from.layers") == [""]:
        flat["init_from.layers"] = None
    return flat


def _extend(workdir: Path, saved: dict[str, Any], config: dict[str, Any]) -> None:
    """Continues a run to more epochs: the earlier summary is kept as ``summary.epochs_<N>.json``,
    ``config.json`` takes the new length and ``config_changes.json`` records the change."""
    old, new = saved["epochs"], config["epochs"]
    if new <= old:
        raise ValueError(
            f"epochs: --config.extend=True continues a run to more epochs than its {old}; got {new}"
        )
    if jax.process_index() == 0:
        summary = workdir / "summary.json"
        if summary.exists():
            summary.rename(workdir / f"summary.epochs_{old}.json")
        changes_path = workdir / "config_changes.json"
        changes = json.loads(changes_path.read_text()) if changes_path.exists() else []
        when = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        changes.append({"time": when, "epochs": {"from": old, "to": new}})
        report.dump_json(changes_path, changes)
        report.dump_json(workdir / "config.json", config)
    sharding.sync("extended the run")


def _clear(workdir: Path) -> None:
    for name in OUTPUTS:
        path = workdir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def open_run(config: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any] | None:
    """Makes ``workdir`` (writable: ``lock`` checked) ready for ``config``: clears it with
    ``config.fresh``, refuses a config other than the one the run started with, and records the
    config at the first start.

    Returns:
      A finished run's summary (nothing to train), or None.

    Raises:
      ValueError: the workdir's run was started with another config.
    """
    values = json.loads(config.to_json())
    if config.fresh and jax.process_index() == 0:
        _clear(workdir)
    sharding.sync("cleared workdir")
    _check_same_config(workdir, values)  # on every process: all of them refuse
    summary_path = workdir / "summary.json"
    if summary_path.exists():
        return json.loads(summary_path.read_text())
    if jax.process_index() == 0 and not (workdir / "config.json").exists():
        report.dump_json(workdir / "config.json", values)
    return None
