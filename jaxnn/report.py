"""What a run shows and leaves behind: the model summary table, plots, checksums, environment.

Pure host-side helpers with no training logic; ``jaxnn.run`` calls them.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxnn.utils import tree_digest

__all__ = [
    "atomic_write_text",
    "environment",
    "model_summary",
    "params_checksum",
    "plot_confusion_matrix",
    "plot_learning_curves",
]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file and a rename: never half-written.

    The file gets the permissions a plain ``open(path, "w")`` gives (``0o666`` less the umask),
    not the temporary file's private 0600: results on a shared disk stay readable by others.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def params_checksum(params: Any) -> str:
    """sha256 over every parameter's path, dtype, shape and bytes, in sorted path order
    (``jaxnn.utils.tree_digest``): two runs have the same checksum exactly when their
    parameters are bitwise identical."""
    return tree_digest(params)


def environment() -> dict[str, Any]:
    """Library versions and the devices, for summary.json."""
    versions = {"python": platform.python_version()}
    for package in (
        "jax",
        "jaxlib",
        "flax",
        "optax",
        "orbax-checkpoint",
        "numpy",
        "tensorflow-datasets",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    devices = jax.devices()
    return {
        "versions": versions,
        "device_kind": devices[0].device_kind,
        "device_platform": devices[0].platform,
        "device_count": len(devices),
        "process_count": jax.process_count(),
    }


def _layer_flops(kind: str, params: dict[str, Any], out_shape: Sequence[int]) -> int:
    """Multiply-adds ×2 of the layers that dominate the cost; 0 for the rest."""
    if kind.startswith("Dense"):
        fan_in, fan_out = params["kernel"].shape
        return 2 * fan_in * fan_out
    if kind.startswith("Conv"):
        kh, kw, c_in, c_out = params["kernel"].shape
        return 2 * int(np.prod(out_shape[1:3])) * kh * kw * c_in * c_out
    return 0


def model_summary(model: Any, variables: dict[str, Any], input_shape: Sequence[int]) -> str:
    """A Keras-style table: layer, output shape, parameters, FLOPs per example, and totals.

    Output shapes come from the model's captured intermediates; the total FLOPs per example from
    XLA's cost analysis of the compiled forward pass at batch size 1.
    """
    x = jnp.zeros((1, *input_shape), jnp.float32)
    # A real forward pass at batch 1 (cheap): unlike eval_shape's pytree round trip it keeps
    # the intermediates in call order.
    _, state = model.apply(
        variables, x, train=False, capture_intermediates=True, mutable=["intermediates"]
    )
    intermediates = state["intermediates"]
    params = variables["params"]
    rows = []
    for name, value in intermediates.items():
        if name == "__call__":
            continue
        out = value["__call__"][0]
        layer_params = params.get(name, {})
        count = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(layer_params))
        count += sum(
            int(np.prod(p.shape))
            for p in jax.tree_util.tree_leaves(variables.get("batch_stats", {}).get(name, {}))
        )
        rows.append((name, tuple(out.shape), count, _layer_flops(name, layer_params, out.shape)))
    total_params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
    try:
        compiled = jax.jit(lambda v: model.apply(v, x, train=False)).lower(variables).compile()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost
        total_flops = int(cost.get("flops", 0))
    except Exception:  # noqa: BLE001 - cost analysis is optional on some backends
        total_flops = sum(r[3] for r in rows)
    header = ("Layer", "Output shape", "Params", "FLOPs/example")
    body = [(n, str((None, *s[1:])), f"{c:,}", f"{f:,}") for n, s, c, f in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(4)]
    line = "-" * (sum(widths) + 6)

    def fmt(row):
        return "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))

    lines = [fmt(header), line, *(fmt(r) for r in body), line]
    lines.append(f"Trainable params: {total_params:,}")
    non_trainable = sum(
        int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(variables.get("batch_stats", {}))
    )
    lines.append(f"Non-trainable (BatchNorm statistics): {non_trainable:,}")
    lines.append(f"FLOPs per example (forward, XLA cost analysis): {total_flops:,}")
    return "\n".join(lines)


def _savefig(fig: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)


def plot_learning_curves(
    history: dict[str, list[float]],
    path: str | os.PathLike,
    metric: str | None = None,
    title: str = "",
) -> None:
    """Loss and one metric per epoch, train against validation: the overfitting picture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["loss"] + ([metric] if metric and metric in history else [])
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 4), squeeze=False)
    epochs = np.arange(1, len(history["loss"]) + 1)
    for ax, key in zip(axes[0], keys, strict=True):
        ax.plot(epochs, history[key], "o-", label=f"train {key}")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], "s-", label=f"validation {key}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    _savefig(fig, Path(path))
    plt.close(fig)


def plot_confusion_matrix(
    labels: np.ndarray,
    predictions: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    title: str = "",
) -> np.ndarray:
    """Counts of (true, predicted) pairs as an annotated heat map; returns the matrix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(class_names)
    matrix = np.zeros((k, k), np.int64)
    np.add.at(matrix, (np.asarray(labels, np.int64), np.asarray(predictions, np.int64)), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * k, 0.8 + 0.6 * k))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(k):
        for j in range(k):
            color = "white" if matrix[i, j] > threshold else "black"
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7, color=color)
    if title:
        ax.set_title(title)
    _savefig(fig, Path(path))
    plt.close(fig)
    return matrix


def dump_json(path: str | os.PathLike, value: Any) -> None:
    """Atomically writes ``value`` as indented JSON."""
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")
