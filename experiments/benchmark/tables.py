"""The benchmark's ratios (jaxnn against each peer) and the tables it prints."""

from __future__ import annotations

from typing import Any

from experiments.benchmark.common import DISPATCH_SIZES


def compute_ratios(
    results: dict[str, dict[str, dict]], ours_name: str = "jaxnn"
) -> dict[str, dict[str, dict]]:
    """``ours_name``'s speedup over each peer (> 1: jaxnn faster); jaxnn's variants are not
    peers."""
    ratios: dict[str, dict[str, dict]] = {}
    for workload, by_framework in results.items():
        ours = by_framework.get(ours_name)
        if not ours or "error" in ours:
            continue
        ratios[workload] = {}
        for peer, theirs in by_framework.items():
            if peer.startswith("jaxnn") or "error" in theirs:
                continue
            ours_t, theirs_t = ours["time_to_accuracy_s"], theirs["time_to_accuracy_s"]
            ratios[workload][peer] = {
                "train_speedup": ours["train_examples_per_s"] / theirs["train_examples_per_s"],
                "time_to_accuracy_speedup": theirs_t / ours_t if ours_t and theirs_t else None,
            }
    return ratios


def compute_variant_ratios(results: dict[str, dict[str, dict]]) -> dict[str, dict[str, dict]]:
    """``compute_ratios`` for each jaxnn variant: ``[workload][variant][peer]``."""
    variants = {f for by in results.values() for f in by if f.startswith("jaxnn_")}
    out: dict[str, dict[str, dict]] = {}
    for variant in sorted(variants):
        for workload, by_peer in compute_ratios(results, variant).items():
            out.setdefault(workload, {})[variant] = by_peer
    return out


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def format_table(results: dict, ratios: dict, variant_ratios: dict | None = None) -> str:
    """The results table (ratio columns: jaxnn against the row's peer), then one line per jaxnn
    variant with its ratios against every peer."""
    header = (
        f"{'workload':<8} {'framework':<16} {'train ex/s':>11} {'eval ex/s':>11} "
        f"{'compile s':>9} {'peak RSS MB':>11} {'time-to-acc s':>13} {'ep':>3} "
        f"{'jaxnn train x':>13} {'jaxnn tta x':>11}"
    )
    lines = [header, "-" * len(header)]
    for workload, by_framework in results.items():
        for framework, r in by_framework.items():
            if "error" in r:
                lines.append(f"{workload:<8} {framework:<16} failed: {r['error'].splitlines()[0]}")
                continue
            ratio = ratios.get(workload, {}).get(framework, {})
            lines.append(
                f"{workload:<8} {framework:<16} {_fmt(r['train_examples_per_s'], 0):>11} "
                f"{_fmt(r['eval_examples_per_s'], 0):>11} {_fmt(r['compile_s'], 2):>9} "
                f"{_fmt(r['peak_rss_mb'], 0):>11} {_fmt(r['time_to_accuracy_s'], 1):>13} "
                f"{_fmt(r['epochs_to_accuracy'], 0):>3} "
                f"{_fmt(ratio.get('train_speedup'), 2):>13} "
                f"{_fmt(ratio.get('time_to_accuracy_speedup'), 2):>11}"
            )
    return "\n".join([*lines, *format_variant_ratios(variant_ratios or {}).splitlines()])


def format_variant_ratios(variant_ratios: dict) -> str:
    """One line per (workload, jaxnn variant): its ratios against every peer."""
    lines = []
    for workload, by_variant in variant_ratios.items():
        for variant, by_peer in by_variant.items():
            cells = [
                f"{peer} train x{_fmt(r['train_speedup'], 2)}, "
                f"tta x{_fmt(r['time_to_accuracy_speedup'], 2)}"
                for peer, r in by_peer.items()
            ]
            lines.append(f"{workload} {variant} against " + "; ".join(cells))
    return "\n".join(lines)


def format_sweep(sweep: dict) -> str:
    """The ``--sweep-dispatch`` figures: one line per workload."""
    lines = ["steps_per_dispatch sweep (jaxnn train ex/s, epochs interleaved in one process):"]
    for workload, r in sweep.items():
        if "error" in r:
            lines.append(f"  {workload}: failed: {r['error'].splitlines()[0]}")
            continue
        base = r["1"]["train_examples_per_s"]
        cells = [
            f"{k}: {r[str(k)]['train_examples_per_s']:,.0f} "
            f"(x{r[str(k)]['train_examples_per_s'] / base:.2f}, compile "
            f"{r[str(k)]['compile_s']:.1f}s)"
            for k in DISPATCH_SIZES
        ]
        head = f"  {workload} ({r['train_examples_per_epoch']:,} examples/epoch): "
        lines.append(head + "; ".join(cells) + f"; auto = {r['auto_resolves_to']}")
    return "\n".join(lines)
