"""Orbax checkpoints: save, restore-or-init with fall-back, best-N, restore for use.

One checkpoint is a step directory written by ``ocp.CheckpointManager`` (atomically: a
temporary folder renamed on completion) with two items: ``state``, the arrays (train state and
the mid-epoch metric accumulator), and ``extra``, JSON (epoch, position in the epoch, callback
states, ...). Which steps stay on disk is orbax's preservation policy: the latest N plus the
best K by a monitored metric.

Example::

    checkpointer = Checkpointer(workdir, keep_latest=2, keep_best=1, best_metric="val_accuracy")
    checkpointer.save(step, {"train_state": state}, extra={"epoch": 3}, metrics=logs)
    restored = checkpointer.restore_latest_good({"train_state": state})   # None: start fresh
    variables = restore(workdir, "best")                                  # for predict()
"""

from __future__ import annotations

import errno
import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "Checkpointer",
    "load_variables",
    "restore",
]


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read."""


class CheckpointMismatchError(ValueError):
    """The saved tree's structure, shapes or dtypes differ from what it is restored into."""


def _path_str(path: Sequence[Any]) -> str:
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def _flat(tree: Any) -> dict[str, Any]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_path_str(path): leaf for path, leaf in leaves}


def _describe(leaf: Any) -> tuple[tuple[int, ...], str]:
    return tuple(getattr(leaf, "shape", ())), str(np.dtype(getattr(leaf, "dtype", np.float32)))


class Checkpointer:
    """Keeps a run's checkpoints in ``<workdir>/checkpoints``.

    Args:
      workdir: the run directory.
      keep_latest: the N most recent steps always kept.
      keep_best: the K best steps by ``best_metric`` also kept (saves without it are not).
      best_metric: the metric name in ``save(..., metrics=)`` that ranks checkpoints.
      best_mode: ``"max"`` or ``"min"``.
      async_save: write in a background thread (``wait()`` before exit).
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        keep_latest: int = 2,
        keep_best: int = 1,
        best_metric: str | None = None,
        best_mode: str = "max",
        async_save: bool = True,
    ):
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode: expected 'max' or 'min'; got {best_mode!r}")
        if keep_latest < 1:
            raise ValueError(f"keep_latest: expected an integer >= 1; got {keep_latest!r}")
        self.directory = Path(workdir).absolute() / "checkpoints"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            probe = self.directory / ".write_test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as error:
            raise CheckpointError(
                f"{self.directory}: cannot write checkpoints here ({error.strerror})"
            ) from None
        policies = [checkpoint_managers.LatestN(n=keep_latest)]
        if best_metric and keep_best:
            policies.append(
                checkpoint_managers.BestN(
                    get_metric_fn=lambda metrics: metrics[best_metric],
                    reverse=best_mode == "min",
                    n=keep_best,
                    keep_checkpoints_without_metrics=False,
                )
            )
        self.best_metric = best_metric
        self.best_mode = best_mode
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
                enable_async_checkpointing=async_save,
                create=True,
            ),
            item_names=("state", "extra"),
        )

    # -------------------------------------------------------------------------- saving
    def save(
        self,
        step: int,
        tree: Any,
        *,
        extra: Mapping[str, Any],
        metrics: Mapping[str, float] | None = None,
        force: bool = False,
    ) -> bool:
        """Saves ``tree`` (arrays) and ``extra`` (JSON) as step ``step``; asynchronous.

        Raises:
          CheckpointError: when the directory is not writable or the disk is full; the
            checkpoints already on disk are untouched (orbax writes to a temporary folder).
        """
        if metrics is not None:
            metrics = {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
            if self.best_metric and self.best_metric not in metrics:
                metrics = None
        # The ranking metric also goes into the JSON item, so `restore(workdir, "best")` can
        # find the best step without knowing how the run was configured.
        extra = {
            **extra,
            "_checkpoint": {
                "metrics": metrics,
                "best_metric": self.best_metric,
                "best_mode": self.best_mode,
            },
        }
        try:
            return self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(tree), extra=ocp.args.JsonSave(extra)
                ),
                metrics=metrics,
                force=force,
            )
        except OSError as error:
            cause = "disk full" if error.errno == errno.ENOSPC else error.strerror or str(error)
            raise CheckpointError(
                f"{self.directory}: could not save checkpoint {step} ({cause}); the earlier "
                "checkpoints are intact"
            ) from error

    def wait(self) -> None:
        """Blocks until a pending asynchronous save is on disk."""
        try:
            self._manager.wait_until_finished()
        except OSError as error:
            raise CheckpointError(
                f"{self.directory}: a checkpoint save failed ({error})"
            ) from error

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self.wait()
        self._manager.close()

    # ------------------------------------------------------------------------- reading
    def all_steps(self) -> list[int]:
        """Steps on disk, oldest first."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The most recent step, or None."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def best_step(self) -> int | None:
        """The best step by ``best_metric`` (the latest when no metric was recorded)."""
        self._manager.reload()
        return _best_step(self._manager, self.all_steps())

    def _check_matches(self, step: int, template: Any) -> None:
        metadata = self._manager.item_metadata(step)["state"]
        saved = {k: _describe(v) for k, v in _flat(metadata).items()}
        wanted = {k: _describe(v) for k, v in _flat(template).items()}
        problems = [f"{k}: missing from the checkpoint" for k in wanted if k not in saved]
        problems += [
            f"{k}: in the checkpoint but not in the model" for k in saved if k not in wanted
        ]
        for key in sorted(set(saved) & set(wanted)):
            if saved[key] != wanted[key]:
                (s_shape, s_dtype), (w_shape, w_dtype) = saved[key], wanted[key]
                problems.append(f"{key}: saved {s_shape} {s_dtype}, expected {w_shape} {w_dtype}")
        if problems:
            raise CheckpointMismatchError(
                f"{self.directory / str(step)} does not fit the model: " + "; ".join(problems[:20])
            )

    def restore(self, template: Any, step: int | str = "latest") -> tuple[Any, dict, int]:
        """Restores ``step`` (an int, ``"latest"`` or ``"best"``) into ``template``'s structure,
        shapes, dtypes and shardings; returns ``(tree, extra, step)``.

        Raises:
          CheckpointMismatchError: naming the keys that differ (nothing is restored).
          FileNotFoundError: when there is no such checkpoint.
        """
        if step == "latest":
            step = self.latest_step()
        elif step == "best":
            step = self.best_step()
        if step is None or step not in self.all_steps():
            raise FileNotFoundError(
                f"{self.directory}: no checkpoint {step}; have {self.all_steps()}"
            )
        self._check_matches(step, template)
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), extra=ocp.args.JsonRestore()
            ),
        )
        extra = dict(restored["extra"])
        extra.pop("_checkpoint", None)
        return restored["state"], extra, step

    def restore_latest_good(self, template: Any) -> tuple[Any, dict, int] | None:
        """The newest readable checkpoint, falling back past damaged ones with a warning.

        Returns None when there are no checkpoints. A model mismatch is raised, not skipped.

        Raises:
          CheckpointError: when checkpoints exist but none can be read.
        """
        steps = self.all_steps()
        failures = []
        for step in reversed(steps):
            try:
                return self.restore(template, step)
            except CheckpointMismatchError:
                raise
            except Exception as error:  # noqa: BLE001 - a damaged checkpoint: try the previous
                message = (
                    f"{self.directory / str(step)}: unreadable ({type(error).__name__}: {error})"
                )
                warnings.warn(f"{message}; falling back to the previous checkpoint", stacklevel=2)
                logging.warning(message)
                failures.append(message)
        if failures:
            raise CheckpointError(
                "No checkpoint could be read:\n  " + "\n  ".join(failures) + "\nMove the "
                "checkpoints folder away (or use --config.fresh=True) to start over."
            )
        return None


def _best_step(manager: ocp.CheckpointManager, steps: list[int]) -> int | None:
    best, best_value = None, None
    for step in steps:
        try:
            info = manager.restore(step, args=ocp.args.Composite(extra=ocp.args.JsonRestore()))
        except Exception:  # noqa: BLE001 - an unreadable step cannot be the best one
            continue
        meta = info["extra"].get("_checkpoint", {})
        metric, metrics = meta.get("best_metric"), meta.get("metrics") or {}
        if metric is None or metric not in metrics:
            continue
        value = metrics[metric] if meta.get("best_mode") == "max" else -metrics[metric]
        if best_value is None or value > best_value:
            best, best_value = step, value
    return best if best is not None else (steps[-1] if steps else None)


def restore(workdir: str | os.PathLike, which: int | str = "latest") -> dict[str, Any]:
    """The model variables of a run's checkpoint, ready for ``model.apply`` / ``Trainer``.

    Needs no template and works with any number of devices: arrays are restored onto this
    process's first device whatever the sharding they were saved with.

    Args:
      workdir: the run directory (the one holding ``checkpoints/``).
      which: ``"latest"``, ``"best"`` or a step number.

    Returns:
      ``{"params": ..., "batch_stats": ...}`` (``batch_stats`` only when the model has any).
    """
    directory = Path(workdir).absolute() / "checkpoints"
    manager = ocp.CheckpointManager(
        directory,
        item_names=("state", "extra"),
        options=ocp.CheckpointManagerOptions(read_only=True),
    )
    steps = sorted(manager.all_steps())
    if not steps:
        raise FileNotFoundError(f"{directory}: no checkpoints")
    if which == "latest":
        step = steps[-1]
    elif which == "best":
        step = _best_step(manager, steps)
    else:
        step = int(which)
        if step not in steps:
            raise FileNotFoundError(f"{directory}: no checkpoint {step}; have {steps}")
    metadata = manager.item_metadata(step)["state"]
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree_util.tree_map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata
    )
    restored = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
    )["state"]
    manager.close()
    train_state = restored["train_state"] if "train_state" in restored else restored
    variables = {"params": train_state["params"]}
    if train_state.get("batch_stats"):
        variables["batch_stats"] = train_state["batch_stats"]
    return variables


def load_variables(
    workdir: str | os.PathLike, names: Sequence[str], into_params: Any, which: int | str = "best"
) -> Any:
    """Copies the named top-level layers (``"Conv_0"``, ...) of a run's checkpoint into
    ``into_params`` (fine-tuning); the other layers keep their fresh initialisation.

    Raises:
      ValueError: for a layer the checkpoint lacks (listing the available ones) or whose shapes
        differ from the new model's.
    """
    saved = restore(workdir, which)["params"]
    params = dict(into_params)
    for name in names:
        if name not in saved:
            raise ValueError(
                f"init_from.layers: {name!r} is not in {workdir}; have {sorted(saved)}"
            )
        if name not in params:
            raise ValueError(
                f"init_from.layers: the model has no layer {name!r}; has {sorted(params)}"
            )
        old, new = _flat(saved[name]), _flat(params[name])
        for key in new:
            if key not in old or _describe(old[key]) != _describe(new[key]):
                raise ValueError(
                    f"init_from.layers: {name}/{key} is saved as "
                    f"{_describe(old[key]) if key in old else 'missing'}; the model needs "
                    f"{_describe(new[key])}"
                )
        params[name] = jax.tree_util.tree_map(
            lambda s, n: jax.numpy.asarray(s, n.dtype), saved[name], params[name]
        )
    return params
