"""The parent process: parses the command line, loads the data once, runs every (workload,
framework) in its own worker subprocess, and writes benchmark.json and the tables."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from experiments.benchmark.common import (
    BATCH_SIZE,
    EVAL_BATCH_SIZE,
    FRAMEWORKS,
    LEARNING_RATE,
    MAX_EPOCHS,
    TARGET_ACCURACY,
    WORKLOADS,
)
from experiments.benchmark.data import load_data, save_arrays
from experiments.benchmark.repeats import median_record, ratios_over_rounds, round_order
from experiments.benchmark.tables import (
    compute_ratios,
    compute_variant_ratios,
    fastest_peers,
    format_members,
    format_over_rounds,
    format_sweep,
    format_table,
    ratios_against_fastest,
)
from experiments.benchmark.worker import worker

# The peers whose library is an optional extra ('.[bench]'): run when importable.
PEERS_NEEDING_IMPORT = {
    "torch": "torch",
    "torch_channels_last": "torch",
    "torch_compile": "torch",
    "keras": "keras",
}
REPO_ROOT = Path(__file__).resolve().parents[2]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the package docstring); lists are split and checked."""
    from experiments import benchmark

    parser = argparse.ArgumentParser(
        prog="python -m experiments.benchmark", description=benchmark.__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="2,048 random examples, 2 epochs")
    parser.add_argument("--out", default="benchmark.json", help="where to write the JSON")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument(
        "--frameworks", default=",".join(FRAMEWORKS),
        help=f"comma-separated, some of {','.join(FRAMEWORKS)} (default: all; those needing torch "
        "or keras run when importable)",
    )  # fmt: skip
    parser.add_argument("--data", choices=("fashion_mnist", "random"), default="fashion_mnist")
    parser.add_argument("--bf16", action="store_true", help="also jaxnn with bfloat16 models")
    parser.add_argument("--sweep-dispatch", action="store_true", help="steps_per_dispatch 1/8/32")
    parser.add_argument(
        "--sweep", type=int, default=0, metavar="K",
        help="also K members in one jaxnn.Sweep against the same K configs one after another",
    )  # fmt: skip
    parser.add_argument(
        "--warm-cache", action="store_true",
        help="also jaxnn with a filled persistent compilation cache (an experiment's re-run)",
    )  # fmt: skip
    parser.add_argument(
        "--measured-epochs", type=int, default=None,
        help="timed epochs after the warm-up one when time-to-accuracy is off (default 1 with "
        "--quick, else 2)",
    )  # fmt: skip
    parser.add_argument(
        "--seed", type=int, default=0,
        help="every framework's seed: initialisation, dropout and data order (default 0; the "
        "--sweep and --sweep-dispatch runs keep their own); time to accuracy moves with it",
    )  # fmt: skip
    parser.add_argument(
        "--repeats", type=int, default=1, metavar="N",
        help="measure every framework N times, in rounds that alternate their order; records are "
        "the medians, and jaxnn's ratios against the fastest peers are taken round by round "
        "(default 1)",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per subprocess")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.workloads = [w for w in args.workloads.split(",") if w]
    args.frameworks = [f for f in args.frameworks.split(",") if f]
    for w in args.workloads:
        if w not in WORKLOADS:
            parser.error(f"--workloads: unknown workload {w!r}; expected some of {WORKLOADS}")
    for f in args.frameworks:
        if f not in FRAMEWORKS:
            parser.error(f"--frameworks: unknown framework {f!r}; expected some of {FRAMEWORKS}")
    if args.seed < 0:
        parser.error(f"--seed: expected an integer >= 0; got {args.seed}")
    if args.repeats < 1:
        parser.error(f"--repeats: expected an integer >= 1; got {args.repeats}")
    if args.measured_epochs is None:
        args.measured_epochs = 1 if args.quick else 2
    return args


def _frameworks_to_run(args: argparse.Namespace) -> list[str]:
    """The requested frameworks that can be imported, then the requested jaxnn variants."""
    frameworks = []
    for f in args.frameworks:
        module = PEERS_NEEDING_IMPORT.get(f)
        if module and importlib.util.find_spec(module) is None:
            print(f"skipping {f}: not importable (pip install -e '.[bench]')", file=sys.stderr)
            continue
        frameworks.append(f)
    if args.bf16:
        frameworks.append("jaxnn_bf16")
    if args.warm_cache:
        frameworks.append("jaxnn_warm_cache")
    return frameworks


def _run_subprocess(
    spec: dict[str, Any], timeout: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("r", suffix=".json") as result_file:
        command = [sys.executable, "-m", "experiments.benchmark", "--worker", json.dumps(spec)]
        command += ["--worker-out", result_file.name]
        proc = subprocess.run(
            command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, env=env
        )
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout)[-3000:]
            raise RuntimeError(f"{spec['framework']}/{spec['workload']} failed:\n{tail}")
        return json.loads(Path(result_file.name).read_text())


def _run_or_error(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """The worker's result, or ``{"error": ...}`` when it failed or timed out."""
    try:
        if spec["framework"] == "jaxnn_warm_cache":
            _run_subprocess({**spec, "fill_cache": True}, timeout)
        return _run_subprocess(spec, timeout)
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        return {"error": str(error)}


def run_all(
    args: argparse.Namespace, frameworks: list[str], data_dir: Path, time_to_accuracy: bool
) -> tuple[dict[str, dict[str, dict]], dict[str, dict], dict[str, dict]]:
    """Every (workload, framework) in its own worker, one after another; then, with
    ``--sweep-dispatch``, each workload's dispatch sweep and, with ``--sweep K``, its member
    sweep. Returns ``(results, dispatch sweep, member sweep)``."""
    base = {"data_dir": str(data_dir), "measured_epochs": args.measured_epochs, "seed": args.seed}
    base["time_to_accuracy"] = time_to_accuracy
    results: dict[str, dict[str, dict]] = {}
    sweep: dict[str, dict] = {}
    members: dict[str, dict] = {}
    for workload in args.workloads:
        results[workload] = _measure_rounds(args, {**base, "workload": workload}, frameworks)
        if args.sweep_dispatch:
            spec = {**base, "workload": workload, "framework": "jaxnn_sweep"}
            sweep[workload] = _run_or_error(spec, args.timeout)
        if args.sweep:
            members[workload] = _run_members(args, base, workload)
    return results, sweep, members


def _measure_rounds(
    args: argparse.Namespace, base: dict[str, Any], frameworks: list[str]
) -> dict[str, dict]:
    """One workload's record per framework: one worker each, or with ``--repeats N`` one per
    round in alternating order, each record then the median of the framework's runs."""
    runs: dict[str, list[dict]] = {framework: [] for framework in frameworks}
    for round_index in range(args.repeats):
        for framework in round_order(frameworks, round_index):
            spec = {**base, "framework": framework}
            if framework == "jaxnn_warm_cache":
                spec["cache_dir"] = str(Path(base["data_dir"]) / "xla_cache" / base["workload"])
            start = time.perf_counter()
            runs[framework].append(_run_or_error(spec, args.timeout))
            label = f"{base['workload']}/{framework}"
            if args.repeats > 1:
                label += f" (round {round_index + 1} of {args.repeats})"
            print(f"{label}: {time.perf_counter() - start:.0f}s", file=sys.stderr)
    pick = (lambda r: r[0]) if args.repeats == 1 else median_record
    return {framework: pick(runs[framework]) for framework in frameworks}


def _run_members(args: argparse.Namespace, base: dict, workload: str) -> dict[str, Any]:
    """``--sweep K``: the sequential worker (JAX's default device), then the sweep's (one host
    device per core, as ``jaxnn sweep`` gives itself); their ratios."""
    spec = {**base, "workload": workload, "framework": "jaxnn_members", "members": args.sweep}
    cores = len(os.sched_getaffinity(0))
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={cores}"
    out = {}
    for mode, env in (("sequential", None), ("sweep", {**os.environ, "XLA_FLAGS": flags.strip()})):
        try:
            out[mode] = _run_subprocess({**spec, "mode": mode}, args.timeout, env)
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            return {**out, "error": str(error)}
    out["throughput_ratio"] = (
        out["sweep"]["train_examples_per_s"] / out["sequential"]["train_examples_per_s"]
    )
    out["wall_ratio"] = out["sequential"]["wall_s"] / out["sweep"]["wall_s"]
    return out


def _installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """The machine and the library versions: ``jaxnn.report.environment()``'s, plus the CPU model,
    core counts, JAX's devices, and the installed versions of what it does not list (torch, keras
    and jaxnn, read from package metadata: the parent imports neither torch nor keras)."""
    import jax

    from jaxnn.report import environment

    env_versions = environment()["versions"]
    cpu_model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {p: env_versions[p] for p in ("jax", "jaxlib", "flax", "optax", "numpy")}
    versions |= {p: _installed_version(p) for p in ("torch", "keras", "jaxnn")}
    return {
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "jax_devices": [str(d) for d in jax.devices()],
        "python": env_versions["python"],
        "versions": versions,
    }


def build_report(
    args: argparse.Namespace, source: str, time_to_accuracy: bool, results: dict, sweep: dict
) -> dict[str, Any]:
    """benchmark.json's content."""
    ratios = compute_ratios(results)
    fastest = fastest_peers(results)
    report = {
        "machine": machine_info(),
        "config": {
            "quick": args.quick,
            "data": source,
            "time_to_accuracy": time_to_accuracy,
            "batch_size": BATCH_SIZE,
            "eval_batch_size": EVAL_BATCH_SIZE,
            "learning_rate": LEARNING_RATE,
            "target_accuracy": TARGET_ACCURACY,
            "max_epochs": MAX_EPOCHS,
            "measured_epochs": args.measured_epochs,
            "seed": args.seed,
            "repeats": args.repeats,
            "command": " ".join(["python -m experiments.benchmark", *sys.argv[1:]]),
        },
        "results": results,
        "ratios": ratios,
        "variant_ratios": compute_variant_ratios(results),
        "fastest_peer": fastest,
        "ratios_vs_fastest": ratios_against_fastest(ratios, fastest),
    }
    if args.repeats > 1:
        report["ratios_over_rounds"] = ratios_over_rounds(results)
    if sweep:
        report["dispatch_sweep"] = sweep
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the benchmark (or, with the internal ``--worker``, one measurement) and returns the
    report that it writes to ``--out``."""
    args = parse_args(argv)
    if args.worker:
        result = worker(json.loads(args.worker))
        Path(args.worker_out).write_text(json.dumps(result))
        return result
    frameworks = _frameworks_to_run(args)
    arrays, source = load_data("random" if args.quick else args.data, args.quick)
    time_to_accuracy = not args.quick and source.startswith("fashion_mnist")
    print(f"data: {source}; time to accuracy: {time_to_accuracy}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        save_arrays(arrays, Path(tmp))
        del arrays  # the workers read the files; the parent need not hold the arrays meanwhile
        results, sweep, members = run_all(args, frameworks, Path(tmp), time_to_accuracy)
    report = build_report(args, source, time_to_accuracy, results, sweep)
    if members:
        report["member_sweep"] = members
    if args.repeats > 1:
        print(f"each row: the median of {args.repeats} runs, in rounds of alternating order")
    print(
        format_table(
            results, report["ratios"], report["variant_ratios"], report["ratios_vs_fastest"]
        )
    )
    if "ratios_over_rounds" in report:
        print(format_over_rounds(report["ratios_over_rounds"]))
    if sweep:
        print(format_sweep(sweep))
    if members:
        print(format_members(members))
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)
    return report
