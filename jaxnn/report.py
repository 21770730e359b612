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


def _layer_calls(model: Any, variables: dict[str, Any], x: jax.Array) -> list[tuple]:
    """``(name, input shape, output shape)`` of each direct submodule's first call, in call
    order, recorded while the forward pass at batch 1 is traced (``jax.eval_shape``: nothing is
    compiled; run op by op, it compiled a small XLA program per operation)."""
    import flax.linen as nn

    calls: dict[str, tuple] = {}

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        layer = context.method_name == "__call__" and len(module.path) == 1
        if layer and args and hasattr(args[0], "shape") and hasattr(out, "shape"):
            calls.setdefault(module.name, (module.name, tuple(args[0].shape), tuple(out.shape)))
        return out

    with nn.intercept_methods(record):
        jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    return list(calls.values())


def _between_layers(before: tuple, after: tuple, pool_name: str) -> list[tuple[str, tuple]]:
    """Rows for what happens between two layers outside any module (``jaxnn.models.pool``, a
    reshape): ``[(kind, output shape), ...]`` — a pooling, a flattening, both, or nothing."""
    if before == after or len(after) not in (2, 4):
        return []
    if len(before) == 4 and len(after) == 4:
        smaller = after[3] == before[3] and after[1:3] < before[1:3]
        return [(pool_name, after)] if smaller else []
    if len(before) < 3 or len(after) != 2:
        return []
    if int(np.prod(before[1:])) == after[1]:
        return [("Flatten", after)]
    for window in range(2, 9) if len(before) == 4 else ():  # pooled, then flattened
        pooled = (before[0], before[1] // window, before[2] // window, before[3])
        if int(np.prod(pooled[1:])) == after[1]:
            return [(pool_name, pooled), ("Flatten", after)]
    return []


def _count(tree: Any) -> tuple[int, int]:
    """Number of values and bytes of every array in ``tree``."""
    leaves = jax.tree_util.tree_leaves(tree)
    return sum(int(np.size(p)) for p in leaves), sum(int(p.nbytes) for p in leaves)


def _readable_size(num_bytes: float) -> str:
    """Bytes in Keras' summary style: ``1.61 MB`` (powers of 1024, two decimals)."""
    for unit in ("B", "KB", "MB", "GB"):
        if num_bytes < 1024:
            return f"{num_bytes:.2f} {unit}"
        num_bytes /= 1024
    return f"{num_bytes:.2f} TB"


def _total_flops(
    model: Any, variables: dict[str, Any], x: jax.Array, rows: list, images: int = 1
) -> tuple[int, str]:
    """``(FLOPs, where they come from)`` of ``model``'s forward pass on ``x``: XLA's cost analysis,
    or, where a backend has none, the layers' sum over the ``images`` each example is classified
    as (2 with test-time flips)."""
    try:
        compiled = jax.jit(lambda v: model.apply(v, x, train=False)).lower(variables).compile()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost
        return int(cost.get("flops", 0)), "XLA cost analysis"
    except Exception:  # noqa: BLE001 - cost analysis is optional on some backends
        return images * sum(row[-1] for row in rows), "sum of the layers"


def _summary_rows(model: Any, variables: dict[str, Any], x: jax.Array) -> list[tuple]:
    """``(name, output shape, trainable, non-trainable, FLOPs)`` per layer, with the poolings
    and the flattening that happen between layers as rows of their own."""
    params, stats = variables["params"], variables.get("batch_stats", {})
    pool_name = {"max": "MaxPool", "avg": "AvgPool"}.get(getattr(model, "pool", None), "Pool")
    seen: dict[str, int] = {}
    rows, shape = [], tuple(x.shape)
    for name, in_shape, out_shape in _layer_calls(model, variables, x):
        for kind, between in _between_layers(shape, in_shape, pool_name):
            seen[kind] = seen.get(kind, -1) + 1
            rows.append((f"{kind}_{seen[kind]}", between, 0, 0, 0))
        layer_params = params.get(name, {})
        flops = _layer_flops(name, layer_params, out_shape)
        rows.append(
            (name, out_shape, _count(layer_params)[0], _count(stats.get(name, {}))[0], flops)
        )
        shape = out_shape
    return rows


def model_summary(model: Any, variables: dict[str, Any], input_shape: Sequence[int]) -> str:
    """A Keras-style table: layer, output shape, trainable and non-trainable parameters, FLOPs
    per example; then the totals with their size in bytes.

    Poolings and the flattening, which happen outside any module, get rows of their own. The
    non-trainable parameters are BatchNorm's running means and variances. The total FLOPs per
    example come from XLA's cost analysis of the compiled forward pass at batch size 1.

    Example::

        print(model_summary(CNN(), trainer.variables, (28, 28, 1)))  # or trainer.summary()
    """
    x = np.zeros((1, *input_shape), np.float32)  # a host array: nothing to compile for it
    rows = _summary_rows(model, variables, x)
    header = ("Layer", "Output shape", "Params", "Non-trainable", "FLOPs/example")
    body = [(n, str((None, *s[1:])), f"{p:,}", f"{b:,}", f"{f:,}") for n, s, p, b, f in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    line = "-" * (sum(widths) + 2 * (len(widths) - 1))

    def fmt(row):
        return "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()

    trainable, trainable_bytes = _count(variables["params"])
    frozen, frozen_bytes = _count(variables.get("batch_stats", {}))
    # With test-time flips an evaluation classifies each image twice: the per-example total is
    # the plain forward pass (as trained), and the evaluation's cost gets a line of its own.
    flips = bool(getattr(model, "test_time_hflip", False))
    plain = model.clone(test_time_hflip=False) if flips else model
    total_flops, source = _total_flops(plain, variables, x, rows)
    total_size = _readable_size(trainable_bytes + frozen_bytes)
    flip_line = (
        [
            "FLOPs per example when evaluating or predicting (test-time flips: the image and its "
            f"mirror image): {_total_flops(model, variables, x, rows, images=2)[0]:,}"
        ]
        if flips
        else []
    )
    return "\n".join(
        [
            fmt(header),
            line,
            *(fmt(r) for r in body),
            line,
            f"Total params: {trainable + frozen:,} ({total_size})",
            f"Trainable params: {trainable:,} ({_readable_size(trainable_bytes)})",
            f"Non-trainable params (BatchNorm statistics): {frozen:,} "
            f"({_readable_size(frozen_bytes)})",
            f"FLOPs per example (forward, {source}): {total_flops:,}",
            *flip_line,
        ]
    )


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
    from matplotlib.ticker import MaxNLocator

    keys = ["loss"] + ([metric] if metric and metric in history else [])
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 4), squeeze=False)
    epochs = np.arange(1, len(history["loss"]) + 1)
    for ax, key in zip(axes[0], keys, strict=True):
        ax.plot(epochs, history[key], "o-", label=f"train {key}")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], "s-", label=f"validation {key}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs 1, 2, 3; never 1.25
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
    """Counts of (true, predicted) pairs as an annotated heat map with a colour bar; returns the
    matrix. ``title`` should say which split it shows (``jaxnn.run`` writes "<name> — test
    split, N examples")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(class_names)
    matrix = np.zeros((k, k), np.int64)
    np.add.at(matrix, (np.asarray(labels, np.int64), np.asarray(predictions, np.int64)), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * k, 0.8 + 0.6 * k))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, label="examples")
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
