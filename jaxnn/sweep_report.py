"""A finished sweep's comparison: per setting the mean ± spread over seeds, the best member by
its validation metric, a text table (``sweep.txt``), the members' curves in one plot
(``sweep.png``, by ``jaxnn.compare``) and ``summary.json``."""

from __future__ import annotations

import datetime
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxnn import compare, report

__all__ = ["table_text", "write"]


def _result_key(summaries: Sequence[dict[str, Any]]) -> str:
    """The test metric the table shows: ``test_accuracy`` when there is one, else the first
    ``test_*`` metric that is not the loss."""
    keys = [k for k in summaries[0] if k.startswith("test_")]
    if "test_accuracy" in keys:
        return "test_accuracy"
    others = [k for k in keys if k != "test_loss"]
    return (others or keys)[0]


def _spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max."""
    array = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if array.size == 0:
        return {}
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return {
        "mean": float(array.mean()),
        "std": std,
        "min": float(array.min()),
        "max": float(array.max()),
        "n": int(array.size),
    }


def summarize(config: Any, members: Sequence[Any], workdir: Path) -> dict[str, Any]:
    """The sweep's summary from its members' ``summary.json`` files."""
    summaries = [
        json.loads((workdir / "members" / m.name / "summary.json").read_text()) for m in members
    ]
    result = _result_key(summaries)
    rows = []
    for member, summary in zip(members, summaries, strict=True):
        rows.append(
            {
                "member": member.name,
                "setting": member.without_seed(),
                "seed": member.config.seed,
                result: summary.get(result),
                "best_val_metric": summary.get("best_val_metric"),
                "best_epoch": summary.get("best_epoch"),
                "epochs_run": summary.get("epochs_run"),
                "stopped": summary.get("sweep", {}).get("stopped", ""),
            }
        )
    settings = []
    for setting in dict.fromkeys(row["setting"] for row in rows):
        chosen = [row for row in rows if row["setting"] == setting]
        settings.append(
            {
                "setting": setting,
                "seeds": [row["seed"] for row in chosen],
                result: _spread([row[result] for row in chosen]),
                "best_val_metric": _spread([row["best_val_metric"] for row in chosen]),
            }
        )
    ranked = [row for row in rows if row["best_val_metric"] is not None]
    best = None
    if ranked:
        pick = max if config.monitor_mode == "max" else min
        best = pick(ranked, key=lambda row: row["best_val_metric"])["member"]
    return {
        "name": config.name,
        "result": result,
        "monitor": summaries[0].get("monitor", config.monitor),
        "members": rows,
        "settings": settings,
        "best_member": best,
    }


def _cell(stats: dict[str, float]) -> str:
    if not stats:
        return "-"
    if stats["n"] == 1:
        return f"{stats['mean']:.4f}"
    return f"{stats['mean']:.4f} ± {stats['std']:.4f} ({stats['min']:.4f}-{stats['max']:.4f})"


def table_text(summary: dict[str, Any]) -> str:
    """The sweep table: one row per setting (mean ± sample std (min-max) over its seeds), then
    the best member by the validation metric."""
    result, monitor = summary["result"], summary.get("monitor") or "val metric"
    header = ["setting", "seeds", result, f"best {monitor}"]
    body = [
        [s["setting"], str(len(s["seeds"])), _cell(s[result]), _cell(s["best_val_metric"])]
        for s in summary["settings"]
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = [f"Sweep {summary['name']}: {len(summary['members'])} members"]
    for row in [header, ["-" * w for w in widths], *body]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    best = summary.get("best_member")
    if best:
        row = next(r for r in summary["members"] if r["member"] == best)
        lines.append(
            f"Best member by {monitor}: {best} ({monitor} {row['best_val_metric']:.4f}, "
            f"{result} {row[result]:.4f})"
        )
    stopped = [f"{r['member']}: {r['stopped']}" for r in summary["members"] if r["stopped"]]
    if stopped:
        lines.append("Stopped early: " + "; ".join(stopped))
    return "\n".join(lines)


def write(config: Any, members: Sequence[Any], workdir: Path, wall_time_s: float) -> dict:
    """Writes ``sweep.txt``, ``sweep.png`` and ``summary.json`` (last: it marks the sweep
    finished), prints the table, and returns the summary."""
    summary = summarize(config, members, workdir)
    summary["wall_time_s"] = wall_time_s
    summary["finished_at"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    summary["command"] = shlex.join(sys.argv)
    text = table_text(summary)
    report.atomic_write_text(workdir / "sweep.txt", text + "\n")
    member_dirs = [workdir / "members" / m.name for m in members]
    _, png = compare.compare(member_dirs, workdir / "sweep.png")
    print(text)
    print(f"Every member's curves: {png}; compare them with: jaxnn compare {workdir}")
    report.dump_json(workdir / "summary.json", summary)
    return summary
