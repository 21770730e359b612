"""Orbax checkpoints: save, restore with fall-back past damaged steps, best-N, restore for use.

One checkpoint is a step directory ``<workdir>/checkpoints/<step>`` written by
``ocp.CheckpointManager`` atomically (into a temporary folder that is renamed when complete, so a
crash mid-save leaves the earlier checkpoints as they were). It holds two items: ``state``, the
arrays (a train state, or any pytree such as ``{"train_state": ..., "metrics": ...}``), and
``extra``, JSON (epoch, history, callback states, position in the data). Which steps stay on disk
is orbax's preservation policy: the latest N, plus the best K by a monitored metric.

What a *training* checkpoint holds is decided here and nowhere else: ``save_training`` writes a
``TrainingSnapshot`` (train state, a partial epoch's metrics and position, epochs done, history,
callback states) and ``restore_training`` reads one back.

Example::

    checkpointer = Checkpointer(workdir, keep_latest=2, keep_best=1, best_metric="val_accuracy")
    checkpointer.save(step, state, extra={"epoch": 3}, metrics={"val_accuracy": 0.91})
    restored = checkpointer.restore_latest_good(state)  # None: no checkpoint, start fresh
    variables = restore(workdir, "best")  # {"params": ...} for model.apply, no template needed
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from jaxnn.utils import path_str, probe_writable, tree_digest

__all__ = [
    "CheckpointError",
    "CheckpointFallbackWarning",
    "CheckpointMismatchError",
    "Checkpointer",
    "TrainingSnapshot",
    "load_variables",
    "restore",
    "restore_training",
    "save_training",
]

logger = logging.getLogger(__name__)

# The JSON item keeps the ranking metric with each step, so `restore(workdir, "best")` can find
# the best step without knowing how the run was configured.
_META_KEY = "_checkpoint"
_STATE, _EXTRA = "state", "extra"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written, or none of the checkpoints on disk could be read."""


class CheckpointMismatchError(ValueError):
    """The saved tree's structure, shapes or dtypes differ from the tree it is restored into."""


class CheckpointFallbackWarning(UserWarning):
    """The newest checkpoint was unreadable; an older one is used instead."""


class _OrbaxNoise(logging.Filter):
    """Drops three kinds of log lines (``JAXNN_TRACEBACK=1`` keeps them all): orbax's warning for
    every save without metrics while a best metric is tracked (mid-epoch saves have none by
    design); the errors with tracebacks orbax's threads log when a write or read fails; and
    asyncio's "exception was never retrieved" for the sibling writes of a failed one, which name a
    file in a watched checkpoints folder. Orbax stops awaiting those once one write fails,
    tensorstore fails them into futures nobody reads, and asyncio logs each one whenever Python
    collects it, after the run's one ``error:`` line too. ``save``/``wait`` raise a failed write
    as one ``CheckpointError`` saying what failed; a restore falls back with a warning naming the
    reason."""

    def __init__(self) -> None:
        super().__init__()
        self.directories: set[str] = set()

    def watch(self, directory: Path) -> None:
        """Filters orbax's and asyncio's log lines from now on, asyncio's about ``directory``."""
        self.directories.add(f"{directory}{os.sep}")
        for name in ("absl", "asyncio"):
            logging.getLogger(name).addFilter(self)  # once: a filter is not added twice

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "did not provide metrics" in message:
            return False
        if _tracebacks_asked():
            return True
        failure = record.levelno >= logging.ERROR and "orbax" in record.pathname
        return not (failure or self._unread_checkpoint_error(record, message))

    def _unread_checkpoint_error(self, record: logging.LogRecord, message: str) -> bool:
        if record.name != "asyncio" or "exception was never retrieved" not in message:
            return False
        error = str(record.exc_info[1]) if record.exc_info else ""
        return any(directory in error for directory in self.directories)


def _tracebacks_asked() -> bool:
    return bool(os.environ.get("JAXNN_TRACEBACK"))


_orbax_noise = _OrbaxNoise()


def _handler_registry() -> ocp.handlers.DefaultCheckpointHandlerRegistry:
    # Registered up front (not lazily by the first save) so that a fresh manager can read the
    # metadata of checkpoints written by an earlier process.
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    state_handler, extra_handler = ocp.StandardCheckpointHandler(), ocp.JsonCheckpointHandler()
    registry.add(_STATE, ocp.args.StandardSave, state_handler)
    registry.add(_STATE, ocp.args.StandardRestore, state_handler)
    registry.add(_EXTRA, ocp.args.JsonSave, extra_handler)
    registry.add(_EXTRA, ocp.args.JsonRestore, extra_handler)
    return registry


def _flat(tree: Any) -> dict[str, Any]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {path_str(path): leaf for path, leaf in leaves}


def _describe(leaf: Any) -> tuple[tuple[int, ...], str]:
    if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
        return tuple(leaf.shape), str(np.dtype(leaf.dtype))
    array = np.asarray(leaf)
    return array.shape, str(array.dtype)


def _default_sharding() -> jax.sharding.Sharding:
    """The sharding of an array created without placement: the current default device."""
    return jax.device_put(np.zeros((), np.float32)).sharding


def _mismatches(saved_metadata: Any, template: Any) -> list[str]:
    """Human-readable differences between the saved tree and ``template``, by path."""
    saved = {key: _describe(leaf) for key, leaf in _flat(saved_metadata).items()}
    wanted = {key: _describe(leaf) for key, leaf in _flat(template).items()}
    problems = [f"{key}: missing from the checkpoint" for key in wanted if key not in saved]
    problems += [
        f"{key}: in the checkpoint, not in the template" for key in saved if key not in wanted
    ]
    for key in sorted(set(saved) & set(wanted)):
        if saved[key] != wanted[key]:
            (s_shape, s_dtype), (w_shape, w_dtype) = saved[key], wanted[key]
            problems.append(f"{key}: saved {s_shape} {s_dtype}, expected {w_shape} {w_dtype}")
    return problems


def _state_metadata(manager: ocp.CheckpointManager, step: int, where: Path) -> Any:
    metadata = manager.item_metadata(step)
    state = metadata.get(_STATE) if metadata is not None else None
    if state is None:
        raise CheckpointError(f"{where}: no readable metadata for the item {_STATE!r}")
    return state


class Checkpointer:
    """Saves and restores a run's checkpoints in ``<workdir>/checkpoints``.

    Args:
      workdir: the run directory (created if needed; must be writable).
      keep_latest: the N most recent steps are always kept.
      keep_best: the K best steps by ``best_metric`` are also kept (steps saved without the metric,
        e.g. mid-epoch saves, only survive as one of the latest N).
      best_metric: the name in ``save(..., metrics=)`` that ranks checkpoints; None: keep only the
        latest N, and ``best_step()`` is the latest.
      best_mode: ``"max"`` (higher is better, e.g. accuracy) or ``"min"`` (e.g. loss).
      async_save: write in a background thread; ``wait()`` (or ``close()``) before exiting.

    Raises:
      CheckpointError: when ``<workdir>/checkpoints`` cannot be created or written.
      ValueError: for an invalid ``keep_latest``, ``keep_best`` or ``best_mode``.

    Example::

        with Checkpointer(workdir, best_metric="val_loss", best_mode="min") as checkpointer:
            checkpointer.save(state_step, state, extra={"epoch": epoch}, metrics=logs)
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        keep_latest: int = 2,
        keep_best: int = 1,
        best_metric: str | None = None,
        best_mode: Literal["min", "max"] = "max",
        async_save: bool = True,
    ):
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode: expected 'max' or 'min'; got {best_mode!r}")
        if not isinstance(keep_latest, int) or keep_latest < 1:
            raise ValueError(f"keep_latest: expected an integer >= 1; got {keep_latest!r}")
        if not isinstance(keep_best, int) or keep_best < 0:
            raise ValueError(f"keep_best: expected an integer >= 0; got {keep_best!r}")
        self.directory = Path(workdir).absolute() / "checkpoints"
        self.best_metric = best_metric
        self.best_mode = best_mode
        self._pending_step: int | None = None
        self._check_writable()

        policy, best_fn = _preservation(keep_latest, keep_best, best_metric, best_mode)
        _orbax_noise.watch(self.directory)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                preservation_policy=policy,
                # best_fn is what makes orbax write each step's metrics to disk, so BestN still
                # ranks the old steps after a restart (without it they read back as None).
                best_fn=best_fn,
                best_mode=best_mode,
                enable_async_checkpointing=async_save,
                create=True,
            ),
            handler_registry=_handler_registry(),
        )

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def _check_writable(self) -> None:
        try:
            probe_writable(self.directory)
        except OSError as error:
            raise CheckpointError(
                f"workdir: cannot write checkpoints to {self.directory} "
                f"({error.strerror or error}); expected a writable directory"
            ) from error

    # ------------------------------------------------------------------------------- saving
    def save(
        self,
        step: int,
        state: Any,
        *,
        extra: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        force: bool = False,
    ) -> bool:
        """Saves the pytree ``state`` and the JSON ``extra`` as step ``step``, asynchronously.

        Args:
          step: the step number (the name of the step directory).
          state: a pytree of arrays (a ``TrainState``, or a dict of several).
          extra: JSON-serialisable data: epoch, history, callback states, position in the data.
          metrics: e.g. the epoch's logs; the ``best_metric`` entry ranks this step for
            ``keep_best``. Non-finite values are dropped (a NaN is never "best").
          force: save even if orbax's save-decision policy would skip this step.

        Returns:
          Whether a save was started: orbax skips (returns False) a step that is not newer than
          the latest one, unless ``force``; a forced save of an existing step raises.

        Raises:
          CheckpointError: when the directory is not writable or the disk is full (also for an
            earlier asynchronous save that failed); the earlier checkpoints stay intact.
        """
        metrics = _ranking(metrics, self.best_metric)
        meta = {
            "metrics": metrics,
            "best_metric": self.best_metric,
            "best_mode": self.best_mode,
            "digest": _digest(state),  # verified at restore: flipped bits are not restored
        }
        extra = {**(extra or {}), _META_KEY: meta}
        try:
            started = self._manager.save(
                int(step),
                args=ocp.args.Composite(
                    **{_STATE: ocp.args.StandardSave(state), _EXTRA: ocp.args.JsonSave(extra)}
                ),
                metrics=metrics,
                force=force,
            )
        except ocp.checkpoint_manager.StepAlreadyExistsError:
            raise ValueError(
                f"step: a checkpoint {step} already exists in {self.directory}; expected a new "
                "step number"
            ) from None
        except (OSError, ValueError, RuntimeError) as error:
            # An asynchronous save that failed earlier surfaces here, as well as this one's
            # synchronous part; tensorstore reports I/O errors as ValueError.
            failed = self._pending_step if self._pending_step is not None else step
            self._pending_step = None
            note = f"checkpoint {step} was not saved either; " if failed != step else ""
            raise _save_error(self.directory, self._manager, failed, error, note) from error
        if started:
            self._pending_step = int(step)
        return started

    def wait(self) -> None:
        """Blocks until a pending asynchronous save is on disk.

        Raises:
          CheckpointError: when that save failed (disk full, directory gone or read-only).
        """
        try:
            self._manager.wait_until_finished()
        except (OSError, ValueError, RuntimeError) as error:
            raise _save_error(self.directory, self._manager, self._pending_step, error) from error
        finally:
            self._pending_step = None

    def close(self) -> None:
        """Waits for a pending save, then releases the manager's threads (orbax waits again
        there: an error it raises is a ``CheckpointError`` too, as from ``wait``)."""
        try:
            self.wait()
        finally:
            try:
                self._manager.close()
            except (OSError, ValueError, RuntimeError) as error:
                raise _save_error(self.directory, self._manager, None, error) from error

    # ------------------------------------------------------------------------------ reading
    def all_steps(self) -> list[int]:
        """The steps of the finished checkpoints on disk, oldest first (waits for a pending
        save; temporary folders of interrupted saves are not listed)."""
        self.wait()
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The most recent finished step, or None when there is none."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def best_step(self) -> int | None:
        """The best step by ``best_metric`` among those saved with it; the latest step when
        there is no metric; None when there are no checkpoints."""
        steps = self.all_steps()
        if self.best_metric is None:
            return steps[-1] if steps else None
        return _best_step(self._manager, steps)

    def _resolve(self, step: int | str) -> int:
        steps = self.all_steps()
        best = self.best_step if self.best_metric is not None else None
        return _resolve_step(steps, step, self.directory, best=best, argument="step")

    def restore(
        self, template_state: Any, step: int | Literal["latest", "best"] = "latest"
    ) -> tuple[Any, dict[str, Any], int]:
        """Restores a checkpoint into ``template_state``'s structure, shapes and dtypes.

        Leaves of the template that are ``jax.Array`` keep their sharding; other leaves (numpy
        arrays, ``ShapeDtypeStruct`` without sharding) come back on the default device. The
        saved tree is compared with the template first, so nothing is restored partially.

        Args:
          template_state: a pytree like the saved one (e.g. a freshly initialised state).
          step: a step number, ``"latest"`` or ``"best"``.

        Returns:
          ``(state, extra, step)``.

        Raises:
          CheckpointMismatchError: naming each key whose shape/dtype differs, is missing or is
            unexpected.
          FileNotFoundError: when there is no such checkpoint.
        """
        step = self._resolve(step)
        where = self.directory / str(step)
        problems = _mismatches(_state_metadata(self._manager, step, where), template_state)
        if problems:
            raise CheckpointMismatchError(
                f"template_state does not fit the checkpoint {where}: "
                + "; ".join(problems[:20])
                + (f"; and {len(problems) - 20} more" if len(problems) > 20 else "")
            )
        default = _default_sharding()

        def abstract(leaf: Any) -> jax.ShapeDtypeStruct:
            shape, dtype = _describe(leaf)
            sharding = getattr(leaf, "sharding", None) or default
            return jax.ShapeDtypeStruct(shape, np.dtype(dtype), sharding=sharding)

        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                **{
                    _STATE: ocp.args.StandardRestore(jax.tree.map(abstract, template_state)),
                    _EXTRA: ocp.args.JsonRestore(),
                }
            ),
        )
        extra = dict(restored[_EXTRA])
        _verify(restored[_STATE], extra.pop(_META_KEY, None), where)
        return restored[_STATE], extra, step

    def restore_latest_good(self, template_state: Any) -> tuple[Any, dict[str, Any], int] | None:
        """Restores the newest readable checkpoint, falling back past damaged ones.

        A step whose files are truncated, corrupted or missing is skipped with a
        ``CheckpointFallbackWarning`` (and a log line) naming its directory.

        Args:
          template_state: as for ``restore``.

        A damaged step newer than the one restored is moved (never deleted) to
        ``<workdir>/damaged_checkpoints/<step>``, so training can save that step number again.

        Returns:
          ``(state, extra, step)``, or None when there are no checkpoints at all.

        Raises:
          CheckpointMismatchError: when the newest readable checkpoint does not fit the template
            (a different model is not a damaged file; it is never skipped).
          CheckpointError: when checkpoints exist but none of them can be read.
        """
        failures, damaged = [], []
        for step in reversed(self.all_steps()):
            try:
                restored = self.restore(template_state, step)
            except CheckpointMismatchError:
                raise
            except Exception as error:  # noqa: BLE001 - a damaged checkpoint: try the previous
                message = f"{self.directory / str(step)}: unreadable checkpoint ({error})"
                failures.append(message)
                damaged.append((step, message))
                continue
            for bad_step, message in damaged:  # a good one exists: move the bad ones aside
                moved = _move_aside(self.directory, bad_step)
                self._manager.reload()
                logger.warning("%s; moved to %s; falling back to the previous one", message, moved)
                warnings.warn(
                    f"{message}; moved to {moved}; falling back to the previous one",
                    CheckpointFallbackWarning,
                    stacklevel=2,
                )
            return restored
        for _, message in damaged:  # none readable: nothing is moved, the user decides
            warnings.warn(message, CheckpointFallbackWarning, stacklevel=2)
        if failures:
            raise CheckpointError(
                f"{self.directory}: none of the {len(failures)} checkpoints can be read:\n  "
                + "\n  ".join(failures)
                + "\nMove the folder away to start over, or restore a backup."
            )
        return None


def _preservation(
    keep_latest: int, keep_best: int, best_metric: str | None, best_mode: str
) -> tuple[Any, Any]:
    """Orbax's preservation policy (the latest N, plus the best K by ``best_metric``) and the
    function that ranks a step's metrics (None without a best metric)."""
    policies: list[Any] = [checkpoint_managers.LatestN(n=keep_latest)]
    if best_metric is None or keep_best == 0:
        return checkpoint_managers.AnyPreservationPolicy(policies), None
    # A step whose metrics lack the name (a run reconfigured in between) ranks last.
    worst = -math.inf if best_mode == "max" else math.inf

    def best_fn(metrics: Mapping[str, float]) -> float:
        return float(metrics.get(best_metric, worst))

    policies.append(
        checkpoint_managers.BestN(
            get_metric_fn=best_fn,
            reverse=best_mode == "min",
            n=keep_best,
            keep_checkpoints_without_metrics=False,
        )
    )
    return checkpoint_managers.AnyPreservationPolicy(policies), best_fn


def _ranking(metrics: Mapping[str, float] | None, best_metric: str | None) -> dict | None:
    """The finite metrics that rank a step, or None when they lack ``best_metric`` (BestN then
    treats the step as unranked)."""
    if metrics is None:
        return None
    metrics = {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
    return metrics if best_metric is not None and best_metric in metrics else None


def _move_aside(directory: Path, step: int) -> Path:
    """Renames a damaged step's folder out of the checkpoints, to
    ``<workdir>/damaged_checkpoints/<step>`` (process 0 does the move)."""
    aside = directory.parent / "damaged_checkpoints"
    target, copy = aside / str(step), 1
    while target.exists():
        target, copy = aside / f"{step}.{copy}", copy + 1
    if jax.process_index() == 0:
        aside.mkdir(exist_ok=True)
        (directory / str(step)).rename(target)
    return target


def _digest(state: Any) -> str:
    """The arrays' digest under the names orbax stores them by (so a template-free restore,
    which reads dicts, gets the digest of the train state it was saved from)."""
    return tree_digest(state, name=path_str)


def _verify(state: Any, meta: Mapping[str, Any] | None, where: Path) -> None:
    """Checks restored arrays against the digest recorded when they were saved (checkpoints
    written before digests were recorded have none and are taken as they are)."""
    expected = (meta or {}).get("digest")
    if expected is not None and _digest(state) != expected:
        raise CheckpointError(
            f"{where}: the arrays read back do not match the sha256 digest recorded when they "
            "were saved (a corrupted file)"
        )


def _save_error(
    directory: Path,
    manager: ocp.CheckpointManager,
    step: int | None,
    error: BaseException,
    note: str = "",
) -> CheckpointError:
    """One message for a failed save: what failed, why (the OS's reason), which steps are
    still intact on disk."""
    cause = error
    while cause.__cause__ is not None and not isinstance(cause, OSError):
        cause = cause.__cause__
    # tensorstore reports the operating system's error inside its message.
    code = re.search(r"os_error_code='(\d+)'", str(cause))
    number = cause.errno if isinstance(cause, OSError) else int(code.group(1)) if code else None
    if number == errno.ENOSPC:
        reason = "no space left on the device"
    elif number is not None:
        reason = os.strerror(number)
    else:
        reason = f"{type(error).__name__}: {error}"
    try:
        manager.reload()
        intact = sorted(manager.all_steps())
    except Exception:  # noqa: BLE001 - only used to word an error message
        intact = []
    what = f"checkpoint {step}" if step is not None else "a checkpoint"
    return CheckpointError(
        f"{directory}: could not save {what} ({reason}); {note}the checkpoints already "
        f"on disk are intact: {intact}"
    )


def _resolve_step(
    steps: Sequence[int], which: Any, directory: Path, *, best: Any, argument: str
) -> int:
    """``"latest"``, ``"best"`` (``best()``, or the latest when None) or a step number, checked
    against the finished ``steps`` on disk."""
    if which == "latest":
        resolved = steps[-1] if steps else None
    elif which == "best":
        resolved = best() if best is not None else (steps[-1] if steps else None)
    elif isinstance(which, int | np.integer) and not isinstance(which, bool):
        resolved = int(which)
    else:
        raise ValueError(f"{argument}: expected a step number, 'latest' or 'best'; got {which!r}")
    if resolved is None or resolved not in steps:
        raise FileNotFoundError(
            f"{directory}: no checkpoint {which!r}; the steps on disk are {list(steps)}"
        )
    return resolved


def _best_step(manager: ocp.CheckpointManager, steps: Sequence[int]) -> int | None:
    """The best step by the metric recorded in each step's JSON item; the latest step when no
    step has one; skips unreadable steps."""
    best, best_value = None, None
    for step in steps:
        try:
            info = manager.restore(step, args=ocp.args.Composite(extra=ocp.args.JsonRestore()))
            meta = info[_EXTRA].get(_META_KEY) or {}
        except Exception:  # noqa: BLE001 - an unreadable step cannot be the best one
            continue
        name, metrics = meta.get("best_metric"), meta.get("metrics") or {}
        if name is None or name not in metrics:
            continue
        value = metrics[name] if meta.get("best_mode", "max") == "max" else -metrics[name]
        if best_value is None or value > best_value:
            best, best_value = step, value
    if best is None and steps:
        return steps[-1]
    return best


def _restore_state_without_template(workdir: str | os.PathLike, which: int | str) -> Any:
    directory = Path(workdir).absolute() / "checkpoints"
    if not directory.is_dir():
        raise FileNotFoundError(f"workdir: no checkpoints folder in {Path(workdir).absolute()}")
    manager = ocp.CheckpointManager(
        directory,
        options=ocp.CheckpointManagerOptions(create=False, enable_async_checkpointing=False),
        handler_registry=_handler_registry(),
    )
    try:
        steps = sorted(manager.all_steps())
        if not steps:
            raise FileNotFoundError(f"{directory}: no finished checkpoints")
        best = lambda: _best_step(manager, steps)  # noqa: E731 - read only when asked for
        step = _resolve_step(steps, which, directory, best=best, argument="which")
        metadata = _state_metadata(manager, step, directory / str(step))
        # The saved shardings may name devices this process does not have (saved on 8, read on
        # 1): ask for every array whole on the default device instead.
        device = _default_sharding()
        abstract = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device), metadata
        )
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                **{_STATE: ocp.args.StandardRestore(abstract), _EXTRA: ocp.args.JsonRestore()}
            ),
        )
        _verify(restored[_STATE], restored[_EXTRA].get(_META_KEY), directory / str(step))
        return restored[_STATE]
    finally:
        manager.close()


def restore(
    workdir: str | os.PathLike, which: int | Literal["best", "latest"] = "latest"
) -> dict[str, Any]:
    """The model variables of a run's checkpoint, ready for ``model.apply``.

    Needs no template: shapes and dtypes come from the checkpoint's metadata, and every array is
    restored whole onto the current default device, whatever the number of devices or the
    sharding it was saved with.

    Args:
      workdir: the run directory (the one holding ``checkpoints/``).
      which: ``"latest"``, ``"best"`` (by the metric the run ranked checkpoints with) or a step.

    Returns:
      ``{"params": ..., "batch_stats": ...}``; ``batch_stats`` only when the model has any.

    Raises:
      FileNotFoundError: when there is no such checkpoint.
      CheckpointError: when the checkpoint holds no ``params``.

    Example::

        variables = restore("checkpoints/mnist_mlp", "best")
        logits = model.apply(variables, x, train=False)
    """
    saved = _restore_state_without_template(workdir, which)
    state = saved.get("train_state", saved) if isinstance(saved, Mapping) else saved
    if not isinstance(state, Mapping) or "params" not in state:
        found = sorted(state) if isinstance(state, Mapping) else type(state).__name__
        raise CheckpointError(
            f"workdir: the checkpoint in {workdir} holds no 'params' (expected a train state, "
            f"or {{'train_state': ...}}); found {found}"
        )
    variables = {"params": state["params"]}
    if state.get("batch_stats"):
        variables["batch_stats"] = state["batch_stats"]
    return variables


def load_variables(
    workdir: str | os.PathLike,
    names: Sequence[str],
    into_params: Mapping[str, Any],
    *,
    which: int | Literal["best", "latest"] = "best",
) -> dict[str, Any]:
    """Copies the named top-level layers of a run's checkpoint into freshly initialised params,
    for fine-tuning; the other layers keep their initialisation.

    Args:
      workdir: the run to copy from.
      names: top-level layer names, e.g. ``("Conv_0", "Conv_1")``.
      into_params: the new model's ``params`` (not modified).
      which: the checkpoint: ``"best"``, ``"latest"`` or a step.

    Returns:
      A new params dict: ``into_params`` with the named layers replaced by the saved ones.

    Raises:
      KeyError: for a name not in the checkpoint or not in ``into_params``, listing those there.
      ValueError: when a layer's shapes or dtypes differ, naming the layer and the array.

    Example::

        params = load_variables("checkpoints/pretrain", ["Conv_0", "Conv_1"], state.params)
    """
    if isinstance(names, str):
        raise TypeError(f"names: expected a sequence of layer names; got the string {names!r}")
    saved = restore(workdir, which)["params"]
    params = dict(into_params)
    for name in names:
        if name not in saved:
            raise KeyError(
                f"names: the checkpoint in {workdir} has no layer {name!r}; "
                f"available layers: {sorted(saved)}"
            )
        if name not in params:
            raise KeyError(
                f"names: into_params has no layer {name!r}; its layers: {sorted(params)}"
            )
        problems = _mismatches(saved[name], params[name])
        if problems:
            raise ValueError(
                f"names: layer {name!r} of {workdir} does not fit into_params: "
                + "; ".join(f"{name}/{problem}" for problem in problems)
            )
        params[name] = jax.tree.map(
            lambda old, new: jax.device_put(old, getattr(new, "sharding", None)),
            saved[name],
            params[name],
        )
    return params


# --------------------------------------------------------------------- training checkpoints
@dataclasses.dataclass
class TrainingSnapshot:
    """What a training checkpoint holds: everything an exact resume needs.

    Attributes:
      state: the train state (params, batch_stats, opt_state with the schedule's count and the
        plateau scale, step, dropout key).
      metrics: the metrics accumulated in the current epoch (empty at an epoch's end).
      epoch: epochs completed.
      position: steps done inside the current epoch (0 at an epoch's end).
      step: the optimizer step the checkpoint was taken at.
      history: every finished epoch's logs.
      callbacks: name -> the ``state_dict`` of each stateful callback.
    """

    state: Any
    metrics: Any
    epoch: int
    position: int
    step: int
    history: dict[str, list[float]]
    callbacks: dict[str, dict[str, Any]]


def save_training(
    checkpointer: Checkpointer,
    loop: Any,
    callbacks: Mapping[str, Any],
    *,
    metrics: Mapping[str, float] | None = None,
) -> None:
    """Saves a training loop (``jaxnn.loop.TrainLoop``) as checkpoint ``loop.global_step``.

    Args:
      checkpointer: where to save.
      loop: the state, metrics, epoch, position, global_step and history to save.
      callbacks: name -> callback whose ``state_dict()`` is saved with it.
      metrics: the epoch's logs at an epoch's end; they rank the step for ``keep_best``.
    """
    tree = jax.device_get({"train_state": loop.state, "metrics": loop.metrics})
    extra = {
        "epoch": loop.epoch,
        "position": loop.position,
        "history": loop.history,
        "callbacks": {name: callback.state_dict() for name, callback in callbacks.items()},
    }
    checkpointer.save(loop.global_step, tree, extra=extra, metrics=metrics, force=True)


def restore_training(
    checkpointer: Checkpointer, state: Any, metrics: Any
) -> TrainingSnapshot | None:
    """The newest readable training checkpoint, restored into the structure, shapes, dtypes and
    shardings of ``state`` and ``metrics`` (falling back past damaged steps, see
    ``Checkpointer.restore_latest_good``); None when there is none."""
    restored = checkpointer.restore_latest_good({"train_state": state, "metrics": metrics})
    if restored is None:
        return None
    tree, extra, step = restored
    callback_states = extra.get("callbacks", {})
    history = extra.get("history")
    if history is None:  # written before checkpoints held the history: the CSV logger's rows
        rows = callback_states.get("CSVLogger", {}).get("rows", [])
        history = {}
        for row in rows:
            for key, value in row.items():
                if key != "epoch":
                    history.setdefault(key, []).append(value)
    return TrainingSnapshot(
        state=tree["train_state"],
        metrics=tree["metrics"],
        epoch=int(extra["epoch"]),
        position=int(extra["position"]),
        step=step,
        history=history,
        callbacks=callback_states,
    )
