"""The members of a ``jaxnn.sweep.Sweep``: their specs, what is traced per member, their records,
and the epoch loop that runs every member's callbacks on its own ``TrainLoop``."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxnn import inputs, optim
from jaxnn import metrics as metrics_lib
from jaxnn.callbacks import Callback, ProgressLogger, improved
from jaxnn.state import rng_streams
from jaxnn.step import split_train_metrics
from jaxnn.utils import round_up

__all__ = [
    "EpochFit",
    "MemberRecord",
    "MemberSpec",
    "SweepProgress",
    "SweepRecords",
    "check_member_callbacks",
    "check_members",
    "fold",
    "member_tree",
    "shared_settings",
    "stack_trees",
    "traced_values",
]

# Pieces of the optimizer chain that a zero value leaves out: members must agree on them.
_ON_OFF = ("l2", "weight_decay", "clip_norm", "momentum")


@dataclasses.dataclass(frozen=True)
class MemberSpec:
    """One member of a sweep: its seed and its optimizer config (``jaxnn.optim.build``'s)."""

    seed: int = 0
    optimizer: Mapping[str, Any] = dataclasses.field(default_factory=lambda: {"name": "adam"})


def member_tree(tree: Any, i: int) -> Any:
    """Member ``i``'s slice of a stacked pytree."""
    return jax.tree.map(lambda leaf: leaf[i], tree)


def stack_trees(trees: Sequence[Any]) -> Any:
    """Pytrees of one structure stacked leaf by leaf along a new leading axis."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def check_members(members: Any) -> list[MemberSpec]:
    """The members as ``MemberSpec``s, each optimizer checked; raises ValueError naming the
    member and the key when they cannot share one compiled program."""
    if not isinstance(members, Sequence) or isinstance(members, str) or not members:
        raise ValueError(f"members: expected a non-empty list of member specs; got {members!r}")
    specs = []
    for i, member in enumerate(members):
        if isinstance(member, Mapping):
            unknown = sorted(set(member) - {"seed", "optimizer"})
            if unknown:
                raise ValueError(f"members[{i}]: unknown keys {unknown}; expected seed, optimizer")
            member = MemberSpec(**member)
        if not isinstance(member, MemberSpec):
            raise ValueError(f"members[{i}]: expected a MemberSpec or dict; got {member!r}")
        inputs.check_int(f"members[{i}].seed", member.seed, 0)
        if not isinstance(member.optimizer, Mapping):
            raise ValueError(
                f"members[{i}].optimizer: expected an optimizer config dict; "
                f"got {member.optimizer!r}"
            )
        specs.append(dataclasses.replace(member, optimizer=optim.check_config(member.optimizer)))
    _check_shared(specs)
    return specs


def shared_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """What must be equal across members: every key but the traced numbers, and for the
    on/off numbers whether they are on."""
    static = {k: v for k, v in config.items() if k not in optim.TRACEABLE and k != "schedule"}
    static["schedule"] = {k: v for k, v in config["schedule"].items() if k != "alpha"}
    static.update({f"{key} on": bool(config[key]) for key in _ON_OFF})
    if callable(config["learning_rate"]):
        static["learning_rate"] = config["learning_rate"]
    return static


def _check_shared(specs: Sequence[MemberSpec]) -> None:
    first = shared_settings(specs[0].optimizer)
    for i, spec in enumerate(specs[1:], start=1):
        other = shared_settings(spec.optimizer)
        for key, value in first.items():
            if other[key] != value:
                raise ValueError(
                    f"members[{i}].optimizer: {key!r} is {other[key]!r} but members[0] has "
                    f"{value!r}; members of one sweep may differ only in seed and in "
                    f"{list(optim.TRACEABLE)} (with each of {list(_ON_OFF)} zero for all or for "
                    "none): train the others as another sweep (jaxnn sweep groups them itself)"
                )


def traced_values(configs: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
    """The ``jaxnn.optim.TRACEABLE`` numbers that differ between the members' checked
    optimizer configs: key -> one value per member. Numbers they share stay constants of the
    compiled step, exactly as in a single run."""
    values = {}
    for key in optim.TRACEABLE:
        if key == "schedule.alpha":
            column = [c["schedule"]["alpha"] for c in configs]
        else:
            column = [c[key] for c in configs]
        if callable(column[0]):
            continue
        if any(value != column[0] for value in column):
            values[key] = [float(value) for value in column]
    return values


def check_member_callbacks(callbacks: Any, size: int) -> list[list[Callback]]:
    """One checked list of callbacks per member (empty lists when None)."""
    if callbacks is None:
        return [[] for _ in range(size)]
    if not isinstance(callbacks, Sequence) or len(callbacks) != size:
        raise ValueError(
            f"callbacks: expected one list of callbacks per member ({size} lists); "
            f"got {callbacks!r}"
        )
    checked = [inputs.check_callbacks(member) for member in callbacks]
    if len({id(cb) for member in checked for cb in member}) != sum(map(len, checked)):
        raise ValueError("callbacks: each member needs callbacks of its own, not shared objects")
    return checked


@dataclasses.dataclass
class MemberRecord:
    """What a member's history does not say: why it stopped, its best epoch by the monitor."""

    stopped: str = ""  # "" while training; else why it stopped
    best: float | None = None
    best_epoch: int = 0  # 1-based; 0 before the first epoch
    best_logs: dict[str, float] = dataclasses.field(default_factory=dict)


class SweepRecords(Callback):
    """The members' loops, records and callback states as one stateful callback of the sweep's
    group checkpoint (``jaxnn.callbacks.Checkpoint(stateful={"sweep": SweepRecords(...)})``)."""

    def __init__(self, sweep: Any, callbacks: Sequence[Sequence[Callback]]):
        self.sweep = sweep
        self.callbacks = [{type(cb).__name__: cb for cb in member} for member in callbacks]

    def state_dict(self) -> dict[str, Any]:
        members = []
        for loop, record, named in zip(
            self.sweep.member_loops, self.sweep.records, self.callbacks, strict=True
        ):
            members.append(
                {
                    "epoch": loop.epoch,
                    "global_step": loop.global_step,
                    "history": loop.history,
                    "record": dataclasses.asdict(record),
                    "callbacks": {name: cb.state_dict() for name, cb in named.items()},
                }
            )
        return {"members": members}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for i, saved in enumerate(state["members"]):
            loop = self.sweep.member_loops[i]
            loop.epoch, loop.global_step = int(saved["epoch"]), int(saved["global_step"])
            loop.history = {key: list(values) for key, values in saved["history"].items()}
            self.sweep.records[i] = MemberRecord(**saved["record"])
            for name, callback_state in saved["callbacks"].items():
                if name in self.callbacks[i]:
                    self.callbacks[i][name].load_state_dict(callback_state)


class SweepProgress(ProgressLogger):
    """The progress bar of a sweep: the running loss of the members (lowest - highest); after
    each epoch one line with the range of each member's loss and monitored value."""

    def on_epoch_end(self, loop: Any, epoch: int, logs: dict[str, float]) -> None:
        self.close()
        total = f"/{self.epochs}" if self.epochs else ""
        parts = [f"Epoch {epoch + 1}{total}", f"{logs['epoch_time_s']:.1f}s"]
        parts.append(f"{int(logs['members_training'])} of {loop.state.active.shape[0]} training")
        for key in logs:
            if key.endswith("_min"):
                name = key.removesuffix("_min")
                parts.append(f"{name} {logs[key]:.4f}-{logs[name + '_max']:.4f}")
        print(" - ".join(parts), file=self.stream, flush=True)

    @staticmethod
    def _postfix(loop: Any, metrics: dict[str, Any]) -> dict[str, str]:
        host = jax.device_get(metrics["loss"].compute())
        active = np.asarray(jax.device_get(loop.state.active))
        losses = np.asarray(host)[active] if active.any() else np.asarray(host)
        return {"loss": f"{losses.min():.4g}-{losses.max():.4g}"}


class EpochFit:
    """The epochs of one ``Sweep.fit`` call: trains all members at once, then runs each active
    member's callbacks on its own ``TrainLoop`` and folds their changes back into the stack."""

    def __init__(self, sweep: Any, data, rows, val, batch_size: int, callbacks):
        self.sweep, self.data, self.val = sweep, data, val
        self.train_rows = [train for train, _ in rows]
        self.batch_size = batch_size
        self.callbacks = callbacks
        self.n_train = len(self.train_rows[0])
        self._improved: set[int] = set()  # members whose epoch was their best so far
        self._sliced: list[Any] = []

    def run(self, epochs: int, sweep_callbacks: Sequence[Callback]) -> list[dict[str, list]]:
        sweep, loop = self.sweep, self.sweep.loop
        before = [{k: len(v) for k, v in m.history.items()} for m in sweep.member_loops]
        loop.stop_training = False
        self._sync_member_states()
        for callback in sweep_callbacks:
            callback.on_train_begin(loop)
        for i in self._active():
            for callback in self.callbacks[i]:
                callback.on_train_begin(sweep.member_loops[i])
        for _ in range(epochs):
            if not self._active():
                break
            epoch = loop.epoch
            for callback in sweep_callbacks:
                callback.on_epoch_begin(loop, epoch)
            for i in self._active():
                for callback in self.callbacks[i]:
                    callback.on_epoch_begin(sweep.member_loops[i], sweep.member_loops[i].epoch)
            logs = self._epoch(sweep_callbacks)
            loop.record(logs)
            for callback in sweep_callbacks:
                callback.on_epoch_end(loop, epoch, logs)
            if loop.stop_training:
                break
        for i in self._active():
            self._end_member(i)
        self._fold_back()
        for callback in sweep_callbacks:
            callback.on_train_end(loop, loop.history)
        return [
            {k: v[done.get(k, 0) :] for k, v in m.history.items()}
            for m, done in zip(sweep.member_loops, before, strict=True)
        ]

    def _active(self) -> list[int]:
        return [i for i, record in enumerate(self.sweep.records) if not record.stopped]

    def _sync_member_states(self) -> None:
        """Each member loop's state: its slice of the stack (callbacks read and replace it)."""
        for i, member_loop in enumerate(self.sweep.member_loops):
            member_loop.state = member_tree(self.sweep.loop.state.state, i)
        self._sliced = [m.state for m in self.sweep.member_loops]

    def _epoch(self, sweep_callbacks: Sequence[Callback]) -> dict[str, float]:
        sweep, start = self.sweep, time.perf_counter()
        total = sweep.loop.steps_per_epoch
        k = sweep.dispatch_size(total)
        keys = [
            jax.random.fold_in(rng_streams(m.seed)["data"], loop.epoch)
            for m, loop in zip(sweep.members, sweep.member_loops, strict=True)
        ]
        plan = sweep.plan(self.n_train, self.batch_size, round_up(total, k), self.train_rows, keys)
        metrics = sweep.train_epoch(self.data, plan, k, sweep_callbacks, self.n_train)
        metrics = jax.device_get(metrics)  # one fetch; each member's slice is then numpy's
        train_time = time.perf_counter() - start
        logs = [self._train_logs(metrics, i) for i in range(sweep.size)]
        if self.val is not None:
            val_data, val_rows = self.val
            n_val = val_data.n if val_rows is None else len(val_rows[0])
            rows = [None] * sweep.size if val_rows is None else val_rows
            batch = max(self.batch_size, 1024)
            val_logs = sweep.evaluate_plan(val_data, sweep.eval_plan(n_val, batch, rows))
            for member_logs, member_val in zip(logs, val_logs, strict=True):
                member_logs.update({f"val_{k}": v for k, v in member_val.items()})
        learning_rates = np.asarray(optim.current_learning_rate(sweep.loop.state.state.opt_state))
        self._sync_member_states()
        for i in self._active():
            logs[i]["train_time_s"] = train_time
            if not math.isnan(float(learning_rates[i])):
                logs[i]["learning_rate"] = float(learning_rates[i])
            logs[i]["epoch_time_s"] = time.perf_counter() - start
            self._member_epoch_end(i, logs[i], metrics)
        self._fold_back()
        return self._sweep_logs(logs, time.perf_counter() - start)

    def _sweep_logs(self, logs: Sequence[dict[str, float]], seconds: float) -> dict[str, float]:
        """The sweep's own epoch logs: its time, how many members train on, and the lowest and
        highest loss and monitored value over the members that trained this epoch."""
        trained = [logs[i] for i in range(len(logs)) if "epoch_time_s" in logs[i]]
        summary = {"epoch_time_s": seconds, "members_training": float(len(self._active()))}
        for key in dict.fromkeys(("loss", self.sweep.monitor or "loss")):
            values = [member[key] for member in trained if key in member]
            if values:
                summary[f"{key}_min"], summary[f"{key}_max"] = min(values), max(values)
        return summary

    def _train_logs(self, metrics: dict[str, Any], i: int) -> dict[str, float]:
        member, _, _ = split_train_metrics(member_tree(metrics, i))
        return metrics_lib.compute_collection(member)

    def _member_epoch_end(self, i: int, logs: dict[str, float], metrics: dict[str, Any]) -> None:
        loop, record = self.sweep.member_loops[i], self.sweep.records[i]
        _, count, first = split_train_metrics(member_tree(metrics, i))
        if count:  # this member diverged: it stops, the others go on
            record.stopped = (
                f"diverged in epoch {loop.epoch + 1} at step {first}: the loss was NaN or Inf in "
                f"{count} step(s)"
            )
            self._end_member(i)
            return
        loop.global_step = int(loop.state.step)
        epoch = loop.epoch
        loop.record(logs)
        self._track_best(i, logs)
        for callback in self.callbacks[i]:
            callback.on_epoch_end(loop, epoch, logs)
        if loop.stop_training:
            record.stopped = f"early stopping after epoch {epoch + 1}"
            self._end_member(i)

    def _track_best(self, i: int, logs: dict[str, float]) -> None:
        """Marks member ``i``'s epoch as its best when the monitor improved (or without one)."""
        sweep, record = self.sweep, self.sweep.records[i]
        monitor = sweep.monitor
        value = logs.get(monitor) if monitor else None
        if monitor and value is None:
            raise KeyError(f"monitor: {monitor!r} is not in the epoch logs; have {sorted(logs)}")
        if value is None or record.best is None or improved(sweep.monitor_mode, value, record.best):
            record.best = None if value is None else float(value)
            record.best_epoch, record.best_logs = sweep.member_loops[i].epoch, dict(logs)
            self._improved.add(i)

    def _end_member(self, i: int) -> None:
        loop = self.sweep.member_loops[i]
        for callback in self.callbacks[i]:
            callback.on_train_end(loop, loop.history)

    def _fold_back(self) -> None:
        """Writes the member loops' replaced states, new bests and stops into the stack."""
        sweep = self.sweep
        members = sweep.loop.state
        state = members.state
        for i, (loop, sliced) in enumerate(zip(sweep.member_loops, self._sliced, strict=True)):
            if loop.state is not sliced:  # a callback replaced it (plateau, best weights)
                state = jax.tree.map(lambda s, m, i=i: s.at[i].set(m), state, loop.state)
        improved = np.zeros((sweep.size,), bool)
        improved[sorted(self._improved)] = True
        active = np.array([not r.stopped for r in sweep.records])
        sweep.loop.state = sweep.fold(members.replace(state=state), improved, active)
        self._improved = set()
        self._sync_member_states()


def fold(members: Any, improved: jax.Array, active: jax.Array) -> Any:
    """``members`` with the improved members' variables as their best and the active flags."""

    def where(new: jax.Array, old: jax.Array) -> jax.Array:
        mask = improved.reshape((-1,) + (1,) * (new.ndim - 1))
        return jnp.where(mask, new, old)

    current = {"params": members.state.params, "batch_stats": members.state.batch_stats}
    best = jax.tree.map(where, current, members.best)
    return members.replace(best=best, active=active)
