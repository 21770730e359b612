"""The benchmark's ratios (jaxnn against each peer and against the fastest peer) and the tables it
prints."""

from __future__ import annotations

from collections import Counter
from typing import Any

from experiments.benchmark.common import DISPATCH_SIZES, REFERENCE_FRAMEWORKS


def measured(record: dict) -> bool:
    """Whether a result record holds figures (it neither failed nor was skipped)."""
    return "error" not in record and "skipped" not in record


def compute_ratios(
    results: dict[str, dict[str, dict]], ours_name: str = "jaxnn"
) -> dict[str, dict[str, dict]]:
    """``ours_name``'s speedup over each peer (> 1: jaxnn faster); jaxnn's variants are not
    peers, and failed or skipped records have no ratio."""
    ratios: dict[str, dict[str, dict]] = {}
    for workload, by_framework in results.items():
        ours = by_framework.get(ours_name)
        if not ours or not measured(ours):
            continue
        ratios[workload] = {}
        for peer, theirs in by_framework.items():
            if peer.startswith("jaxnn") or not measured(theirs):
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


def fastest_peers(results: dict[str, dict[str, dict]]) -> dict[str, dict[str, str | None]]:
    """Per workload, the peer with the most ``train_examples_per_s`` and the one with the least
    ``time_to_accuracy_s`` (None when no peer reached the target).

    Peers are the frameworks that are neither jaxnn nor its variants nor one of
    ``REFERENCE_FRAMEWORKS``, and that were measured (not failed, not skipped).

    Example::

        fastest_peers({"mlp": {"torch": {"train_examples_per_s": 2.0, "time_to_accuracy_s": 9.0},
                               "flax": {"train_examples_per_s": 3.0, "time_to_accuracy_s": None}}})
        # {"mlp": {"train_examples_per_s": "flax", "time_to_accuracy_s": "torch"}}
    """
    fastest: dict[str, dict[str, str | None]] = {}
    for workload, by_framework in results.items():
        peers = {
            name: r
            for name, r in by_framework.items()
            if not name.startswith("jaxnn") and name not in REFERENCE_FRAMEWORKS and measured(r)
        }
        if not peers:
            continue
        reached = [name for name, r in peers.items() if r["time_to_accuracy_s"] is not None]
        fastest[workload] = {
            "train_examples_per_s": max(peers, key=lambda n: peers[n]["train_examples_per_s"]),
            "time_to_accuracy_s": min(reached, key=lambda n: peers[n]["time_to_accuracy_s"])
            if reached
            else None,
        }
    return fastest


def ratios_against_fastest(ratios: dict, fastest: dict) -> dict[str, dict[str, Any]]:
    """jaxnn's ``train_speedup`` against the workload's fastest-training peer and its
    ``time_to_accuracy_speedup`` against the peer that reached the target first, each with that
    peer's name (``train_peer``, ``time_to_accuracy_peer``); taken from ``ratios``."""
    out: dict[str, dict[str, Any]] = {}
    for workload, names in fastest.items():
        if workload not in ratios:
            continue
        train_peer, tta_peer = names["train_examples_per_s"], names["time_to_accuracy_s"]
        tta = ratios[workload][tta_peer]["time_to_accuracy_speedup"] if tta_peer else None
        out[workload] = {
            "train_speedup": ratios[workload][train_peer]["train_speedup"],
            "train_peer": train_peer,
            "time_to_accuracy_speedup": tta,
            "time_to_accuracy_peer": tta_peer,
        }
    return out


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def format_table(
    results: dict,
    ratios: dict,
    variant_ratios: dict | None = None,
    against_fastest: dict | None = None,
) -> str:
    """The results table, whose ratio columns hold jaxnn against the row's framework; then a line
    per workload with jaxnn against its fastest peers, named; then a line per jaxnn variant with
    its ratios against every peer."""
    header = (
        f"{'workload':<8} {'framework':<19} {'train ex/s':>11} {'eval ex/s':>11} "
        f"{'compile s':>9} {'peak RSS MB':>11} {'time-to-acc s':>13} {'ep':>3} "
        f"{'jaxnn train x':>13} {'jaxnn tta x':>11}"
    )
    lines = ["ratio columns: jaxnn against the row's framework (> 1: jaxnn is faster)"]
    lines += [header, "-" * len(header)]
    for workload, by_framework in results.items():
        for framework, r in by_framework.items():
            if "error" in r:
                lines.append(f"{workload:<8} {framework:<19} failed: {r['error'].splitlines()[0]}")
                continue
            if "skipped" in r:
                lines.append(f"{workload:<8} {framework:<19} skipped: {r['skipped']}")
                continue
            ratio = ratios.get(workload, {}).get(framework, {})
            lines.append(
                f"{workload:<8} {framework:<19} {_fmt(r['train_examples_per_s'], 0):>11} "
                f"{_fmt(r['eval_examples_per_s'], 0):>11} {_fmt(r['compile_s'], 2):>9} "
                f"{_fmt(r['peak_rss_mb'], 0):>11} {_fmt(r['time_to_accuracy_s'], 1):>13} "
                f"{_fmt(r['epochs_to_accuracy'], 0):>3} "
                f"{_fmt(ratio.get('train_speedup'), 2):>13} "
                f"{_fmt(ratio.get('time_to_accuracy_speedup'), 2):>11}"
            )
    lines += format_against_fastest(against_fastest or {}).splitlines()
    return "\n".join([*lines, *format_variant_ratios(variant_ratios or {}).splitlines()])


def format_against_fastest(against_fastest: dict) -> str:
    """One line per workload: jaxnn's ratios against its fastest peers, each named."""
    lines = []
    for workload, r in against_fastest.items():
        tta_peer = r["time_to_accuracy_peer"]
        tta = (
            f"tta x{_fmt(r['time_to_accuracy_speedup'], 2)} against {tta_peer} (first to the "
            "target accuracy)"
            if tta_peer
            else "tta: no peer has a time to accuracy"
        )
        lines.append(
            f"{workload} jaxnn against the fastest peers: train x{_fmt(r['train_speedup'], 2)} "
            f"against {r['train_peer']} (most train ex/s); {tta}"
        )
    if lines:
        lines.append(f"(fastest peers leave out the references: {', '.join(REFERENCE_FRAMEWORKS)})")
    return "\n".join(lines)


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


def format_members(members: dict) -> str:
    """The ``--sweep K`` figures: per workload, the sweep against the same K runs in a row."""
    lines = ["member sweep (K configs: one jaxnn.Sweep vs jaxnn.Trainer runs one after another):"]
    for workload, r in members.items():
        if "error" in r:
            lines.append(f"  {workload}: failed: {r['error'].splitlines()[0]}")
            continue
        seq, sweep = r["sequential"], r["sweep"]
        lines.append(
            f"  {workload} K={sweep['members']} ({sweep['train_examples_per_epoch']:,} examples"
            f"/epoch): train ex/s (all members) sequential {seq['train_examples_per_s']:,.0f} on "
            f"{seq['devices']} device(s), {seq['cores_busy']:.2f} cores busy; sweep "
            f"{sweep['train_examples_per_s']:,.0f} on {sweep['devices']} device(s) "
            f"{sweep['mesh']}, {sweep['cores_busy']:.2f} cores busy: x{r['throughput_ratio']:.2f}"
            f"; wall incl. compile {seq['wall_s']:.1f}s vs {sweep['wall_s']:.1f}s: "
            f"x{r['wall_ratio']:.2f}"
        )
    return "\n".join(lines)


def _spread_text(name: str, spread: dict | None, peers: list[str]) -> str:
    if spread is None:
        return f"{name}: in no round"
    counts = ", ".join(f"{peer} {n}" for peer, n in Counter(peers).most_common())
    return (
        f"{name} x{_fmt(spread['median'], 2)} median, x{_fmt(spread['min'], 2)}-"
        f"x{_fmt(spread['max'], 2)} over {len(spread['values'])} rounds (against {counts})"
    )


def format_over_rounds(over_rounds: dict[str, dict[str, Any]]) -> str:
    """One line per workload: the paired ratios' median and range, and whom they were against."""
    lines = []
    for workload, r in over_rounds.items():
        train = _spread_text("train", r["train_speedup"], r["train_peers"])
        tta = _spread_text("tta", r["time_to_accuracy_speedup"], r["time_to_accuracy_peers"])
        lines.append(
            f"{workload} jaxnn against each round's fastest peers ({r['rounds']} rounds, "
            f"frameworks alternated): {train}; {tta}"
        )
    return "\n".join(lines)
