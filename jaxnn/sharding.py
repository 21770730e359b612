"""Device placement: a ``jax.sharding.Mesh`` with a ``data`` axis, and ``jax.distributed``.

Data parallelism is expressed with shardings, never ``pmap``: datasets are global arrays whose
rows are split over the mesh's ``data`` axis, each batch is split the same way, and parameters,
optimizer state and metrics are replicated. ``jax.jit`` then partitions the step (XLA SPMD):
gradients, metric sums and BatchNorm statistics are reduced over the global batch, so the same
code gives the same numbers on one CPU, N GPUs, a TPU slice or several hosts.

In a multi-process run every process runs the same program; each one holds only its own rows
(``process_rows``) and the global arrays are assembled with
``jax.make_array_from_process_local_data``.

Example::

    jaxnn.sharding.initialize_distributed()        # no-op unless flags / env ask for processes
    mesh = jaxnn.sharding.make_mesh()              # every device on the "data" axis
    trainer = jaxnn.Trainer(model, mesh=mesh)      # the Trainer uses make_mesh() by default
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxnn.utils import round_up

__all__ = [
    "sync",
    "DATA_AXIS",
    "MEMBER_AXIS",
    "DistributedInitError",
    "aligned_empty",
    "batch_sharding",
    "check_batch_size",
    "data_size",
    "global_rows",
    "initialize_distributed",
    "is_multiprocess",
    "make_mesh",
    "member_mesh",
    "member_sharding",
    "process_rows",
    "put_global",
    "replicate",
    "replicated",
    "row_sharding",
]

DATA_AXIS = "data"
MEMBER_AXIS = "member"  # a sweep's members (jaxnn.sweep)
# XLA's CPU client uses a host buffer in place (no copy) only when it starts on this boundary.
_HOST_ALIGNMENT = 64


class DistributedInitError(RuntimeError):
    """``jax.distributed`` could not be initialised (coordinator unreachable, bad settings)."""


# ------------------------------------------------------------------------------------- mesh
def member_mesh(num_members: int, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A sweep's mesh: ``(data, member)`` over ``devices`` (default: every local device), the
    members split over ``gcd(num_members, len(devices))`` devices, each member's batches over the
    rest. With as many devices as members (or a divisor), each device trains its own members
    whole, with no collectives; with one member it is ``make_mesh``'s data parallelism.

    On CPU each host device is a thread: ``XLA_FLAGS=--xla_force_host_platform_device_count=N``
    (before JAX starts) lets a sweep's members use N cores, which one small model cannot.
    """
    devices = np.asarray(jax.local_devices() if devices is None else list(devices))
    members = math.gcd(num_members, devices.size)
    grid = devices.reshape(devices.size // members, members)
    return Mesh(grid, (DATA_AXIS, MEMBER_AXIS))


def member_sharding(mesh: Mesh) -> NamedSharding:
    """For stacked per-member arrays (leading axis = members): split over ``member`` when the
    mesh has that axis, else replicated."""
    if MEMBER_AXIS in mesh.axis_names:
        return NamedSharding(mesh, PartitionSpec(MEMBER_AXIS))
    return replicated(mesh)


def make_mesh(
    axes: Mapping[str, int] | None = None, devices: Sequence[jax.Device] | None = None
) -> Mesh:
    """A mesh over ``devices`` (default: every device of every process, in process order).

    Args:
      axes: axis name -> size, in mesh order; one size may be -1 (the devices left over).
        Default ``{"data": -1}``: pure data parallelism. It must have a ``"data"`` axis; other
        axes (e.g. ``"model"``) are kept for model sharding, and parameters stay replicated.
      devices: the devices to use.

    Raises:
      ValueError: naming the sizes when they do not multiply to the number of devices.

    Example::

        mesh = make_mesh({"data": 4, "model": 2})
    """
    devices = list(jax.devices() if devices is None else devices)
    axes = dict({DATA_AXIS: -1} if axes is None else axes)
    if DATA_AXIS not in axes:
        raise ValueError(f"axes: expected a {DATA_AXIS!r} axis; got {list(axes)}")
    free = [name for name, size in axes.items() if size == -1]
    fixed = math.prod(size for size in axes.values() if size != -1)
    bad = [f"{k}={v}" for k, v in axes.items() if not isinstance(v, int) or (v < 1 and v != -1)]
    if bad or len(free) > 1 or len(devices) % fixed:
        raise ValueError(
            f"axes: expected sizes >= 1 (at most one -1) that multiply to the {len(devices)} "
            f"devices; got {axes}"
        )
    if free:
        axes[free[0]] = len(devices) // fixed
    if math.prod(axes.values()) != len(devices):
        raise ValueError(
            f"axes: expected sizes that multiply to the {len(devices)} devices; got {axes}, "
            f"which multiply to {math.prod(axes.values())}"
        )
    grid = np.array(devices, dtype=object).reshape(tuple(axes.values()))
    return Mesh(grid, tuple(axes))


def data_size(mesh: Mesh) -> int:
    """The number of devices along the ``data`` axis: a batch is split into this many parts."""
    return int(mesh.shape[DATA_AXIS])


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimizer state, metrics)."""
    return NamedSharding(mesh, PartitionSpec())


def row_sharding(mesh: Mesh) -> NamedSharding:
    """The leading (example) axis split over the ``data`` axis (datasets, batches)."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """For ``(steps, batch)`` index arrays: the batch axis split over ``data``."""
    return NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))


def check_batch_size(name: str, batch_size: int, mesh: Mesh) -> None:
    """Raises a ValueError naming the sizes that work when the batch does not split evenly."""
    parts = data_size(mesh)
    if batch_size % parts:
        lower = max(parts, batch_size // parts * parts)
        raise ValueError(
            f"{name}: {batch_size} does not split over the {parts} devices of the mesh's "
            f"{DATA_AXIS!r} axis; expected a multiple of {parts}, such as {lower} or "
            f"{lower + parts}"
        )


# ------------------------------------------------------------------------------ placement
def is_multiprocess(mesh: Mesh) -> bool:
    """Whether the mesh spans devices of more than one process."""
    return len({d.process_index for d in mesh.devices.flat}) > 1


def sync(name: str) -> None:
    """A barrier across the run's processes (nothing with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places every leaf of ``tree`` whole on every device of the mesh (same value on every
    process; in a multi-process run each process passes its identical copy)."""
    sharding = replicated(mesh)
    if not is_multiprocess(mesh):
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda leaf: put_global(np.asarray(leaf), sharding), tree)


def put_global(array: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
    """Places a host array that every process holds whole (e.g. batch indices) with
    ``sharding``; each process copies only the parts its own devices hold."""
    if len(sharding.device_set) == len(sharding.addressable_devices):
        return jax.device_put(array, sharding)
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def padded_rows(n: int, mesh: Mesh) -> int:
    """``n`` rounded up to a multiple of the data-axis size (a global array's row count)."""
    return round_up(n, data_size(mesh))


def process_rows(n: int, mesh: Mesh | None = None) -> slice:
    """The rows of an ``n``-example dataset that this process holds (a contiguous range).

    In a multi-process run pass each process ``x[process_rows(len(x), mesh)]``; with one process
    it is every row.
    """
    mesh = make_mesh() if mesh is None else mesh
    start, stop = _held_rows(padded_rows(n, mesh), mesh)
    return slice(min(start, n), min(stop, n))


def _held_rows(total: int, mesh: Mesh) -> tuple[int, int]:
    """The contiguous row range ``[start, stop)`` of a ``total``-row global array (split over
    the data axis) that this process's devices hold."""
    held = row_sharding(mesh).addressable_devices_indices_map((total,))
    start = min(index[0].start or 0 for index in held.values())
    stop = max(total if index[0].stop is None else index[0].stop for index in held.values())
    return start, stop


def aligned_empty(shape: Sequence[int], dtype: Any) -> np.ndarray:
    """An uninitialised numpy array whose data starts on a 64-byte boundary.

    On a CPU device, ``global_rows`` places such an array without copying it (the device array
    reads the numpy memory), so a training set held by the caller is not held twice. numpy's own
    allocations start 16 bytes past such a boundary, and XLA copies those. ``jaxnn.data``'s
    ``to_float``, ``normalize`` and ``train_validation_split`` return aligned arrays.

    Example::

        x = aligned_empty((60000, 28, 28, 1), np.float32)
        np.divide(images, np.float32(255), out=x)
    """
    dtype = np.dtype(dtype)
    shape = tuple(int(d) for d in shape)
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + _HOST_ALIGNMENT, np.uint8)
    offset = -raw.ctypes.data % _HOST_ALIGNMENT
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def global_rows(local: np.ndarray, n: int, mesh: Mesh) -> jax.Array:
    """A global array of ``n`` rows split over the ``data`` axis, from this process's rows.

    The row count is padded with zeros to a multiple of the data-axis size; the padding rows are
    never indexed. With one process ``local`` is the whole array; on a single CPU device an
    ``aligned_empty`` array is used in place, not copied, so it must not be modified while the
    returned array is in use (the Trainer drops it at the end of ``fit``/``evaluate``).

    Raises:
      ValueError: when ``local`` is not this process's ``process_rows(n, mesh)``.
    """
    rows = process_rows(n, mesh)
    expected = rows.stop - rows.start
    if len(local) != expected:
        raise ValueError(
            f"x: expected {expected} rows, rows {rows.start}:{rows.stop} of {n} that process "
            f"{jax.process_index()} of {jax.process_count()} holds "
            f"(jaxnn.sharding.process_rows); got {len(local)}"
        )
    total = padded_rows(n, mesh)
    sharding = row_sharding(mesh)
    if not is_multiprocess(mesh):
        if total != n:
            local = np.concatenate([local, np.zeros((total - n, *local.shape[1:]), local.dtype)])
        # may_alias: XLA's CPU client then reads an aligned, C-contiguous host array in place.
        return jax.device_put(local, sharding, may_alias=True)
    start, stop = _held_rows(total, mesh)
    if stop - start != len(local):
        pad = np.zeros((stop - start - len(local), *local.shape[1:]), local.dtype)
        local = np.concatenate([local, pad])
    return jax.make_array_from_process_local_data(sharding, local, (total, *local.shape[1:]))


# ---------------------------------------------------------------------------- distributed
_ENV = {
    "coordinator_address": "JAXNN_COORDINATOR_ADDRESS",
    "num_processes": "JAXNN_NUM_PROCESSES",
    "process_id": "JAXNN_PROCESS_ID",
}


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout_s: int = 300,
) -> bool:
    """Starts ``jax.distributed`` when a multi-process run is asked for; otherwise does nothing.

    Arguments left out are read from ``JAXNN_COORDINATOR_ADDRESS``, ``JAXNN_NUM_PROCESSES`` and
    ``JAXNN_PROCESS_ID``. With none of them set, a cluster that JAX detects by itself (Cloud TPU,
    SLURM, Open MPI) is still initialised when ``JAXNN_DISTRIBUTED=auto``. On CPU the collectives
    go through gloo. Call it before anything else touches JAX's devices.

    Args:
      coordinator_address: ``host:port`` of process 0 (which runs the coordinator service).
      num_processes: the number of processes in the run.
      process_id: this process's index in ``[0, num_processes)``.
      timeout_s: how long to wait for every process to join before failing.

    Returns:
      True when ``jax.distributed`` was initialised.

    Raises:
      ValueError: for missing or malformed settings, naming the argument and its variable.
      DistributedInitError: when the coordinator cannot be reached within ``timeout_s``.

    Example (two processes on one machine)::

        JAXNN_COORDINATOR_ADDRESS=127.0.0.1:12355 JAXNN_NUM_PROCESSES=2 JAXNN_PROCESS_ID=0 \\
            python -m experiments.fashion_mnist_mlp &
        JAXNN_COORDINATOR_ADDRESS=127.0.0.1:12355 JAXNN_NUM_PROCESSES=2 JAXNN_PROCESS_ID=1 \\
            python -m experiments.fashion_mnist_mlp
    """
    given = _settings_or_env(coordinator_address, num_processes, process_id)
    if all(value in (None, "") for value in given.values()):
        if os.environ.get("JAXNN_DISTRIBUTED", "") != "auto":
            return False
        jax.distributed.initialize(initialization_timeout=timeout_s)
        return True
    address, count, index = _checked_settings(given)
    if index != 0:
        # JAX aborts the whole process (no exception) when the coordinator never answers; probe it
        # first so the error can say what to do.
        _wait_for_coordinator(address, timeout_s, index, count)
    _join(address, count, index, timeout_s)
    return True


def _settings_or_env(
    coordinator_address: str | None, num_processes: int | None, process_id: int | None
) -> dict[str, Any]:
    """The three settings, each taken from its ``JAXNN_*`` variable when not given."""
    given = {
        "coordinator_address": coordinator_address,
        "num_processes": num_processes,
        "process_id": process_id,
    }
    for key, variable in _ENV.items():
        if given[key] in (None, "") and os.environ.get(variable, ""):
            given[key] = os.environ[variable]
    return given


def _checked_settings(given: Mapping[str, Any]) -> tuple[str, int, int]:
    """``(address, num_processes, process_id)`` from the settings, or a ValueError naming the
    one that is missing or malformed."""
    missing = [f"{k} (${_ENV[k]})" for k, v in given.items() if v in (None, "")]
    if missing:
        raise ValueError(
            f"{', '.join(missing)}: expected the coordinator address, the number of processes "
            f"and this process's id for a multi-process run (arguments or environment "
            f"variables); got {dict(given)}"
        )
    address = str(given["coordinator_address"])
    if not address.rpartition(":")[2].isdigit():
        raise ValueError(
            f"coordinator_address: expected 'host:port' (e.g. 127.0.0.1:12355); got {address!r}"
        )
    try:
        count, index = int(given["num_processes"]), int(given["process_id"])
    except ValueError:
        raise ValueError(
            "num_processes, process_id: expected integers; got "
            f"{given['num_processes']!r}, {given['process_id']!r}"
        ) from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(
            f"process_id: expected an integer in [0, {count}) for {count} processes; got {index}"
        )
    return address, count, index


def _join(address: str, count: int, index: int, timeout_s: int) -> None:
    """``jax.distributed.initialize``, its failure re-raised saying what to check."""
    # Collectives between CPU devices of different processes (GPU/TPU backends bring their own).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=address,
            num_processes=count,
            process_id=index,
            initialization_timeout=timeout_s,
        )
    except Exception as error:  # noqa: BLE001 - re-raised with what to check
        raise DistributedInitError(
            f"coordinator_address: process {index} of {count} could not join the coordinator at "
            f"{address} within {timeout_s} s ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}). Check that process 0 is "
            "running with the same address and number of processes, and that the port is "
            "reachable."
        ) from error


def _wait_for_coordinator(address: str, timeout_s: float, index: int, count: int) -> None:
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise DistributedInitError(
                    f"coordinator_address: nothing answered at {address} within {timeout_s} s "
                    f"({error.strerror or error}); process {index} of {count} cannot join. Start "
                    "process 0 (it runs the coordinator) with the same address and number of "
                    "processes, or check the host and port."
                ) from None
        time.sleep(0.25)
