"""One measurement in a fresh process: reads the data the parent wrote, builds the framework's
peer, times it.

Each framework's module is imported here, inside ``make_peer``, and only for the framework being
measured: the worker's peak RSS is that framework's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from experiments.benchmark.common import FRAMEWORKS, MAX_EPOCHS, EpochLog, Peer, measure
from experiments.benchmark.data import read_arrays


def make_peer(
    framework: str, workload: str, data: dict[str, np.ndarray], spec: dict[str, Any]
) -> Peer:
    """The peer for ``framework`` (one of ``FRAMEWORKS`` or a jaxnn variant), seeded with
    ``spec["seed"]`` (0 when absent)."""
    seed = spec.get("seed", 0)
    if framework in ("jaxnn", "jaxnn_bf16", "jaxnn_warm_cache"):
        if framework == "jaxnn_warm_cache":
            from jaxnn.cli import enable_compilation_cache

            enable_compilation_cache(spec["cache_dir"])
        from experiments.benchmark.jaxnn_peer import JaxnnPeer

        dtype = "bfloat16" if framework == "jaxnn_bf16" else None
        return JaxnnPeer(workload, data, dtype=dtype, seed=seed)
    if framework == "flax":
        from experiments.benchmark.flax_peer import FlaxPeer

        return FlaxPeer(workload, data, seed)
    if framework in ("flax_resident", "flax_scan"):
        from experiments.benchmark.flax_resident_peer import FlaxResidentPeer, FlaxScanPeer

        peer_class = FlaxScanPeer if framework == "flax_scan" else FlaxResidentPeer
        return peer_class(workload, data, seed)
    if framework in ("torch", "torch_channels_last", "torch_compile"):
        from experiments.benchmark.torch_peer import TorchPeer

        return TorchPeer(
            workload,
            data,
            channels_last=framework == "torch_channels_last",
            compile=framework == "torch_compile",
            seed=seed,
        )
    if framework == "keras":
        from experiments.benchmark.keras_peer import KerasPeer

        return KerasPeer(workload, data, seed)
    raise ValueError(f"framework: expected one of {FRAMEWORKS} or a jaxnn variant (jaxnn_bf16, "
                     f"jaxnn_warm_cache); got {framework!r}")  # fmt: skip


def measure_or_skip(framework: str, peer: Peer, log: EpochLog) -> dict[str, Any]:
    """``measure(peer, log)``, or ``{"skipped": reason}`` when the peer does not apply here
    (``skip_reason``) or cannot run here (one of its ``unavailable_errors``)."""
    reason = peer.skip_reason()
    if reason:
        return {"skipped": reason}
    try:
        return measure(peer, log)
    except peer.unavailable_errors as error:
        first_line = (str(error).strip().splitlines() or [""])[0]
        return {"skipped": f"{framework} cannot run here: {type(error).__name__}: {first_line}"}


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs one measurement in this (fresh) process; ``spec`` comes from the parent.

    ``spec`` holds ``data_dir``, ``workload``, ``framework`` (or ``"jaxnn_sweep"``, or
    ``"jaxnn_members"`` with ``members`` and ``mode``: ``--sweep K``), ``measured_epochs``,
    ``time_to_accuracy``, ``seed`` and, for ``jaxnn_warm_cache``, ``cache_dir`` and ``fill_cache``
    (a 2-epoch run that fills the cache).
    """
    data = read_arrays(Path(spec["data_dir"]))
    workload, framework = spec["workload"], spec["framework"]
    if framework == "jaxnn_sweep":
        from experiments.benchmark.jaxnn_peer import run_dispatch_sweep

        return run_dispatch_sweep(workload, data, spec["measured_epochs"])
    if framework == "jaxnn_members":
        from experiments.benchmark.members import run_members

        epochs = 1 + spec["measured_epochs"]
        return run_members(workload, data, spec["members"], epochs, spec["mode"])
    with_accuracy = spec["time_to_accuracy"]
    num_epochs = MAX_EPOCHS[workload] if with_accuracy else 1 + spec["measured_epochs"]
    if spec.get("fill_cache"):  # the same model, steps and evaluation, for 2 epochs
        num_epochs = 2
    peer = make_peer(framework, workload, data, spec)
    return measure_or_skip(framework, peer, EpochLog(workload, with_accuracy, num_epochs))
