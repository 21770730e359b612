"""Feeding: where a dataset lives and how its batches reach the compiled steps.

One ``Feeder`` per Trainer hides the three ways data can sit: resident on the devices (a global
array split by rows over the mesh's ``data`` axis, each batch gathered inside the jitted step),
streamed from the host (too big for the devices: each dispatch's rows are gathered in numpy and
copied), and split over processes (each process holds its own rows of a global array). ``fit``,
``evaluate`` and ``predict`` all walk a ``BatchPlan`` (index and weight arrays) through
``Fed.inputs``; only the data's placement differs.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any

import jax
import numpy as np

from jaxnn import sharding
from jaxnn.precompile import abstract
from jaxnn.utils import ceil_div, round_up

__all__ = ["BatchPlan", "Fed", "Feeder", "dispatch_size", "steps_per_epoch"]


def dispatch_size(steps_per_dispatch: int | str, params: Any, num_steps: int) -> int:
    """Optimizer steps per compiled call for an epoch of ``num_steps`` steps: the number asked
    for, or for ``"auto"`` 1 for convolutional models (``params`` holds a 4-D kernel; XLA CPU
    runs scanned convolution steps slower) and up to 32 otherwise."""
    if steps_per_dispatch != "auto":
        return min(int(steps_per_dispatch), num_steps)
    convolutional = any(leaf.ndim == 4 for leaf in jax.tree_util.tree_leaves(params))
    return 1 if convolutional else min(32, num_steps)


def steps_per_epoch(n: int, batch_size: int, drop_remainder: bool = False) -> int:
    """Optimizer steps in an epoch of ``n`` examples: a last partial batch counts unless dropped.

    The one place this number is computed: the optimizer's schedules are built from it.
    """
    if drop_remainder and n < batch_size:
        raise ValueError(
            f"batch_size: {batch_size} is larger than the {n} training examples, and "
            "drop_remainder=True would leave no batch"
        )
    return n // batch_size if drop_remainder else ceil_div(n, batch_size)


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """An epoch's batches: ``idx`` and ``weight`` of shape ``(num_batches, batch_size)`` on the
    host; padding (past the last example) has weight 0 and counts nowhere."""

    idx: np.ndarray
    weight: np.ndarray
    mesh: jax.sharding.Mesh
    _local: dict[int, jax.Array] = dataclasses.field(default_factory=dict, compare=False)

    @property
    def batch_size(self) -> int:
        """Examples per batch."""
        return self.idx.shape[1]

    @functools.cached_property
    def device_idx(self) -> jax.Array:
        """``idx`` with the batch axis split over the mesh's data axis (resident data)."""
        return sharding.put_global(self.idx, sharding.batch_sharding(self.mesh))

    @functools.cached_property
    def device_weight(self) -> jax.Array:
        """``weight`` placed like ``device_idx``."""
        return sharding.put_global(self.weight, sharding.batch_sharding(self.mesh))

    def local_idx(self, k: int) -> jax.Array:
        """Indices ``0 .. k·batch_size - 1`` shaped ``(k, batch_size)`` and placed like
        ``device_idx``: where ``k`` batches copied from the host sit (placed once per ``k``)."""
        if k not in self._local:
            local = np.arange(k * self.batch_size, dtype=np.int32).reshape(k, self.batch_size)
            self._local[k] = jax.device_put(local, sharding.batch_sharding(self.mesh))
        return self._local[k]


@dataclasses.dataclass(frozen=True)
class Fed:
    """A dataset as the steps read it: ``x`` and ``y`` (``y`` None for ``predict``) of ``n``
    examples, either global device arrays (``resident``) or host arrays streamed per dispatch."""

    x: jax.Array | np.ndarray
    y: jax.Array | np.ndarray | None
    n: int
    feeder: Feeder

    @property
    def resident(self) -> bool:
        """Whether the arrays live on the devices (else they are streamed from the host)."""
        return not isinstance(self.x, np.ndarray)

    def inputs(self, plan: BatchPlan, start: int, k: int) -> tuple:
        """``(x, y, idx, weight, start)`` for the step that runs batches ``start .. start + k -
        1`` of ``plan``: the whole resident arrays and the plan, or the rows of those batches
        copied from the host with indices into them (and ``start`` 0)."""
        if self.resident:
            return self.x, self.y, plan.device_idx, plan.device_weight, start
        x, y = self.rows(plan, start, k)
        return x, y, plan.local_idx(k), plan.device_weight[start : start + k], 0

    def abstract_inputs(self, num_batches: int, batch_size: int) -> tuple:
        """What ``inputs`` returns for a resident dataset's first dispatch, as shapes, dtypes and
        shardings only (``jax.ShapeDtypeStruct``): for compiling a step ahead of its first call."""
        plan = functools.partial(
            jax.ShapeDtypeStruct,
            (num_batches, batch_size),
            sharding=sharding.batch_sharding(self.feeder.mesh),
        )
        x, y = abstract((self.x, self.y))
        return x, y, plan(np.dtype(np.int32)), plan(np.dtype(np.float32)), 0

    def rows(self, plan: BatchPlan, start: int, k: int) -> tuple[jax.Array, jax.Array | None]:
        """The rows of batches ``start .. start + k - 1``, gathered on the host and placed."""
        flat = plan.idx[start : start + k].reshape(-1)
        x = self.feeder.put_rows(self.x[flat])
        return x, None if self.y is None else self.feeder.put_rows(self.y[flat])


class Feeder:
    """Places datasets on a mesh and plans their batches.

    Args:
      mesh: the devices; batches are split over its ``data`` axis.
      device_data_limit_bytes: datasets larger than this stay on the host and are streamed.
    """

    def __init__(self, mesh: jax.sharding.Mesh, device_data_limit_bytes: int):
        self.mesh = mesh
        self.device_data_limit_bytes = device_data_limit_bytes
        self.multiprocess = sharding.is_multiprocess(mesh)

    def global_count(self, local: int) -> int:
        """The number of examples over all processes (each passes its own rows)."""
        if not self.multiprocess:
            return local
        from jax.experimental import multihost_utils

        counts = np.asarray(multihost_utils.process_allgather(np.int64(local)))
        return int(counts.sum())

    def feed(self, x: np.ndarray, y: np.ndarray | None, *, prefix: str = "") -> Fed:
        """This process's rows of a dataset placed for the steps (resident when they fit)."""
        n = self.global_count(len(x))
        return Fed(
            self._place(f"{prefix}x", x, n),
            None if y is None else self._place(f"{prefix}y", y, n),
            n,
            self,
        )

    def _place(self, name: str, array: np.ndarray, n: int) -> jax.Array | np.ndarray:
        if array.nbytes * (n / max(len(array), 1)) <= self.device_data_limit_bytes:
            try:
                return sharding.global_rows(array, n, self.mesh)
            except ValueError as error:
                raise ValueError(str(error).replace("x:", f"{name}:", 1)) from None
        if self.multiprocess:
            raise ValueError(
                f"{name}: {array.nbytes / 2**20:.0f} MiB per process is over "
                f"device_data_limit_bytes={self.device_data_limit_bytes}, and streaming from the "
                "host is single-process only; raise device_data_limit_bytes"
            )
        return array

    def put_rows(self, rows: np.ndarray) -> jax.Array:
        """A host batch placed with its rows split over the data axis.

        Streaming is single-process; in a multi-process run only ``predict`` puts host rows, and
        there every process holds the same rows: each places the part its devices hold.
        """
        if self.multiprocess:
            local = rows[sharding.process_rows(len(rows), self.mesh)]
            return sharding.global_rows(local, len(rows), self.mesh)
        return jax.device_put(rows, sharding.row_sharding(self.mesh))

    def host(self, x: np.ndarray) -> Fed:
        """``x``, the same on every process, read batch by batch from the host (``predict``)."""
        return Fed(x, None, len(x), self)

    def plan(
        self,
        n: int,
        batch_size: int,
        num_batches: int,
        *,
        shuffle_key: jax.Array | None = None,
    ) -> BatchPlan:
        """``num_batches`` batches over ``n`` examples, in the order a key draws (or in order).

        The permutation is drawn on the host by numpy, seeded by the key's data: XLA CPU's sort
        is much slower for an epoch of tens of thousands of examples.
        """
        if shuffle_key is not None:
            seed = np.asarray(jax.random.key_data(shuffle_key))
            order = np.random.default_rng(seed).permutation(n)
        else:
            order = np.arange(n)
        total = num_batches * batch_size
        weight = (np.arange(total) < n).astype(np.float32)
        idx = np.zeros((total,), np.int32)
        idx[: min(n, total)] = order[:total]
        shape = (num_batches, batch_size)
        return BatchPlan(idx.reshape(shape), weight.reshape(shape), self.mesh)

    def train_batch_size(self, batch_size: int, n: int) -> int:
        """``batch_size``, or every example (rounded up to split over the data axis) when it is
        larger: then each step trains on the whole dataset, as in Keras, instead of padding a
        batch far beyond it. Says so with a warning."""
        whole = round_up(n, sharding.data_size(self.mesh))
        if batch_size <= whole:
            return batch_size
        warnings.warn(
            f"batch_size: {batch_size} is larger than the {n} training examples; each step "
            f"trains on all of them (batch_size={whole})",
            stacklevel=3,
        )
        return whole

    def eval_batch_size(self, batch_size: int, n: int) -> int:
        """``min(batch_size, n)`` rounded up to split evenly over the data axis."""
        return round_up(min(batch_size, n), sharding.data_size(self.mesh))
