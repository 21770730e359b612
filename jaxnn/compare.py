"""Compare finished runs: the settings that differ between them, their results, and one picture of
their learning curves overlaid (``jaxnn compare WORKDIR...``).

Example::

    table, png = compare(["checkpoints/sgd", "checkpoints/adam"], "comparison.png")
    print(table)
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxnn.workdir import UNTRAINED_KEYS, flat_config

__all__ = ["compare", "expand_sweeps", "read_run"]

RESULTS = (
    "test_accuracy",
    "test_mae",
    "best_val_metric",
    "best_epoch",
    "epochs_run",
    "wall_time_s",
)


def read_run(workdir: str | os.PathLike) -> dict[str, Any]:
    """A run's ``config.json`` and ``summary.json`` (``summary`` is empty while it is unfinished).

    Raises:
      FileNotFoundError: when ``workdir`` holds no run (no config.json).
    """
    workdir = Path(workdir)
    if not (workdir / "config.json").exists():
        raise FileNotFoundError(
            f"workdir: {workdir} holds no run (no config.json); expected a "
            "folder written by python -m experiments.<name> --workdir=..."
        )
    summary_path = workdir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return {"config": json.loads((workdir / "config.json").read_text()), "summary": summary}


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    return "-" if value is None else str(value)


def _table(names: Sequence[str], rows: dict[str, list[Any]]) -> str:
    header = ["", *names]
    body = [[key, *map(_format, values)] for key, values in rows.items()]
    widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True))
        for row in [header, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def expand_sweeps(workdirs: Sequence[str | os.PathLike]) -> list[Path]:
    """The workdirs, each sweep's (a folder with ``members/``) replaced by its members' run
    folders, in member order."""
    expanded = []
    for workdir in map(Path, workdirs):
        members = workdir / "members"
        if members.is_dir() and not (workdir / "checkpoints").exists():
            expanded.extend(sorted(p for p in members.iterdir() if (p / "config.json").exists()))
        else:
            expanded.append(workdir)
    return expanded


def compare(
    workdirs: Sequence[str | os.PathLike], out: str | os.PathLike | None
) -> tuple[str, Path | None]:
    """The table of differing settings and results, and (with ``out``) a PNG overlaying every
    run's validation (or training) loss and first metric per epoch. A sweep's workdir stands
    for its members (``expand_sweeps``).

    Returns:
      ``(table, path of the PNG or None)``.
    """
    workdirs = expand_sweeps(workdirs)
    runs = [read_run(w) for w in workdirs]
    names = [Path(w).name or str(w) for w in workdirs]
    configs = [flat_config(r["config"]) for r in runs]
    keys = sorted({k for c in configs for k in c} - set(UNTRAINED_KEYS) - {"name"})
    rows = {
        k: [c.get(k) for c in configs]
        for k in keys
        if len({json.dumps(c.get(k)) for c in configs}) > 1
    }
    rows.update(
        {
            k: [r["summary"].get(k) for r in runs]
            for k in RESULTS
            if any(k in r["summary"] for r in runs)
        }
    )
    png = _plot(names, runs, Path(out)) if out is not None else None
    return _table(names, rows), png


def _plot(names: Sequence[str], runs: Sequence[dict[str, Any]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    histories = [r["summary"].get("history", {}) for r in runs]
    metrics = [m for m in ("accuracy", "binary_accuracy", "mae") if any(m in h for h in histories)]
    keys = ["loss", *metrics[:1]]
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4.2), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for name, history in zip(names, histories, strict=True):
            shown = f"val_{key}" if f"val_{key}" in history else key
            if shown in history:
                ax.plot(range(1, len(history[shown]) + 1), history[shown], "o-", label=name)
                ax.set_ylabel(shown)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    # One legend outside the axes: it hides no curve.
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out
