"""``--repeats N``: every framework measured N times, the frameworks alternated.

Round ``r`` runs the frameworks in their order when ``r`` is even and in reverse when it is odd
(A B C, C B A, A B C, ...), so that a machine that speeds up or slows down during the run hits
every framework alike. A framework's record is then the median of its runs (``median_record``),
and jaxnn's ratios against the fastest peers are taken within each round, from runs minutes apart,
and summarised by their median and range (``ratios_over_rounds``): on a noisy shared machine a
ratio of medians from runs far apart says less than the median of paired ratios.
"""

from __future__ import annotations

import statistics
from typing import Any

from experiments.benchmark.tables import (
    compute_ratios,
    fastest_peers,
    measured,
    ratios_against_fastest,
)

# The fields of a result record that are medians over the runs; the per-epoch lists stay in
# ``runs``, and every other field (examples per epoch, steps per dispatch) is the first run's.
MEDIAN_FIELDS = (
    "train_examples_per_s",
    "eval_examples_per_s",
    "compile_s",
    "peak_rss_mb",
    "time_to_accuracy_s",
    "epochs_to_accuracy",
)
PER_EPOCH_FIELDS = ("epoch_train_times_s", "test_accuracy_per_epoch")


def round_order(frameworks: list[str], round_index: int) -> list[str]:
    """The frameworks in the order round ``round_index`` (from 0) runs them.

    Example::

        [round_order(["a", "b", "c"], r) for r in range(3)]
        # [["a", "b", "c"], ["c", "b", "a"], ["a", "b", "c"]]
    """
    return list(frameworks) if round_index % 2 == 0 else list(reversed(frameworks))


def median_record(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One framework's record over its ``runs``: each of ``MEDIAN_FIELDS`` the median of the runs
    (null when a run has none: the target accuracy must be reached in every run), and ``runs``
    itself. A run that failed makes the record that failure, with every run kept; skips are the
    same in every run, so the first one's stands.

    Example::

        median_record([{"train_examples_per_s": 3.0, "time_to_accuracy_s": 9.0},
                       {"train_examples_per_s": 1.0, "time_to_accuracy_s": 7.0},
                       {"train_examples_per_s": 2.0, "time_to_accuracy_s": None}])
        # train_examples_per_s 2.0, time_to_accuracy_s None, runs: the three records
    """
    if not runs:
        raise ValueError("runs: expected at least one result record; got none")
    failed = [run for run in runs if "error" in run]
    if failed:
        return {"error": failed[0]["error"], "runs": runs}
    if "skipped" in runs[0]:
        return {"skipped": runs[0]["skipped"]}
    record = {k: v for k, v in runs[0].items() if k not in PER_EPOCH_FIELDS}
    for field in MEDIAN_FIELDS:
        values = [run.get(field) for run in runs]
        record[field] = None if None in values else statistics.median(values)
    return {**record, "runs": runs}


def _spread(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "values": values,
    }


def ratios_over_rounds(results: dict[str, dict[str, dict]]) -> dict[str, dict[str, Any]]:
    """jaxnn against the fastest peers round by round, from records that hold ``runs``.

    Per workload: ``train_speedup`` and ``time_to_accuracy_speedup``, each ``{"median", "min",
    "max", "values"}`` over the rounds where it exists (null when in none), and the peer each
    round measured against (``train_peers``, ``time_to_accuracy_peers``). Each round's ratios are
    ``ratios_against_fastest`` of that round's runs alone.
    """
    out: dict[str, dict[str, Any]] = {}
    for workload, by_framework in results.items():
        ours = by_framework.get("jaxnn", {})
        if "runs" not in ours or not measured(ours):
            continue
        rounds = []
        for index in range(len(ours["runs"])):
            one_round = {
                name: record["runs"][index] if "runs" in record else record
                for name, record in by_framework.items()
            }
            ratios = compute_ratios({workload: one_round})
            rounds.append(ratios_against_fastest(ratios, fastest_peers({workload: one_round})))
        rows = [r[workload] for r in rounds if workload in r]
        tta = [row for row in rows if row["time_to_accuracy_speedup"] is not None]
        out[workload] = {
            "rounds": len(ours["runs"]),
            "train_speedup": _spread([row["train_speedup"] for row in rows]),
            "train_peers": [row["train_peer"] for row in rows],
            "time_to_accuracy_speedup": _spread([row["time_to_accuracy_speedup"] for row in tta]),
            "time_to_accuracy_peers": [row["time_to_accuracy_peer"] for row in tta],
        }
    return out
