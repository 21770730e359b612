"""One measurement in a fresh process: reads the data the parent wrote, builds the framework's
peer, times it.

Each framework's module is imported here, inside ``make_peer``, and only for the framework being
measured: the worker's peak RSS is that framework's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from experiments.benchmark.common import MAX_EPOCHS, EpochLog, Peer, measure
from experiments.benchmark.data import read_arrays


def make_peer(
    framework: str, workload: str, data: dict[str, np.ndarray], spec: dict[str, Any]
) -> Peer:
    """The peer for ``framework`` (one of ``FRAMEWORKS`` or a jaxnn variant)."""
    if framework in ("jaxnn", "jaxnn_bf16", "jaxnn_warm_cache"):
        if framework == "jaxnn_warm_cache":
            from jaxnn.cli import enable_compilation_cache

            enable_compilation_cache(spec["cache_dir"])
        from experiments.benchmark.jaxnn_peer import JaxnnPeer

        return JaxnnPeer(workload, data, dtype="bfloat16" if framework == "jaxnn_bf16" else None)
    if framework == "flax":
        from experiments.benchmark.flax_peer import FlaxPeer

        return FlaxPeer(workload, data)
    if framework == "torch":
        from experiments.benchmark.torch_peer import TorchPeer

        return TorchPeer(workload, data)
    if framework == "keras":
        from experiments.benchmark.keras_peer import KerasPeer

        return KerasPeer(workload, data)
    raise ValueError(f"framework: expected one of jaxnn(_bf16, _warm_cache), flax, torch, keras; "
                     f"got {framework!r}")  # fmt: skip


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs one measurement in this (fresh) process; ``spec`` comes from the parent.

    ``spec`` holds ``data_dir``, ``workload``, ``framework`` (or ``"jaxnn_sweep"``),
    ``measured_epochs``, ``time_to_accuracy`` and, for ``jaxnn_warm_cache``, ``cache_dir`` and
    ``fill_cache`` (a 2-epoch run that fills the cache).
    """
    data = read_arrays(Path(spec["data_dir"]))
    workload, framework = spec["workload"], spec["framework"]
    if framework == "jaxnn_sweep":
        from experiments.benchmark.jaxnn_peer import run_dispatch_sweep

        return run_dispatch_sweep(workload, data, spec["measured_epochs"])
    with_accuracy = spec["time_to_accuracy"]
    num_epochs = MAX_EPOCHS[workload] if with_accuracy else 1 + spec["measured_epochs"]
    if spec.get("fill_cache"):  # the same model, steps and evaluation, for 2 epochs
        num_epochs = 2
    peer = make_peer(framework, workload, data, spec)
    return measure(peer, EpochLog(workload, with_accuracy, num_epochs))
