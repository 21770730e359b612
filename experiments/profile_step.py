"""Where a training step's time goes: a jax.profiler trace of jaxnn's Trainer, op by op.

    python -m experiments.profile_step                      # the benchmark CNN, jaxnn's defaults
    python -m experiments.profile_step --workload mlp
    python -m experiments.profile_step --xla-defaults       # the CNN with XLA's default options

Trains the benchmark's model (``experiments.benchmark``: batch 128, Adam 1e-3) on random data with
one ``Trainer.fit`` of three epochs of ``--steps`` steps and traces the third one with
``jax.profiler`` (XLA CPU's per-op trace events on, optimised HLO dumped to map op names to what
they compute) and prints the milliseconds per step of the most expensive ops, the wall time per
step and how many cores the process kept busy. XLA's own (Eigen) convolutions run asynchronously
and appear only partly in the trace: wall time minus traced time is printed as "not traced".
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from experiments.benchmark.common import BATCH_SIZE, LEARNING_RATE


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m experiments.profile_step")
    parser.add_argument("--workload", choices=("mlp", "cnn"), default="cnn")
    parser.add_argument("--steps", type=int, default=30, help="steps per (profiled) epoch")
    parser.add_argument("--top", type=int, default=25, help="ops to list")
    parser.add_argument(
        "--xla-defaults", action="store_true", help="Trainer(compiler_options={}): XLA's defaults"
    )
    parser.add_argument("--out-dir", help="where the trace and HLO dump go (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.top < 1:
        parser.error(f"--steps and --top: expected at least 1; got {args.steps} and {args.top}")
    return args


def _op_descriptions(dump_dir: Path) -> dict[str, str]:
    """Op name -> "shape  op_name" from the optimised HLO of the train step."""
    texts = sorted(dump_dir.glob("*jit_train*after_optimizations.txt"))
    out: dict[str, str] = {}
    for text in (t.read_text() for t in texts):
        for match in re.finditer(
            r"^\s*(?:ROOT )?%?([\w.\-]+) = (\S+) .*?op_name=\"([^\"]+)\"", text, re.M
        ):
            out.setdefault(match.group(1), f"{match.group(2)[:34]:34s} {match.group(3)[-60:]}")
    return out


def _set_xla_flags(dump_dir: Path) -> None:
    """Turns on XLA CPU's per-op trace events and the optimised-HLO dump (before jax loads)."""
    if "jax" in sys.modules:
        raise RuntimeError("profile_step sets XLA_FLAGS, so it must run before jax is imported")
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true"
        f" --xla_dump_to={dump_dir} --xla_dump_hlo_pass_re=^$"
    )


def _train_and_trace(args: argparse.Namespace, trace_dir: Path) -> tuple[Any, float, float]:
    """One fit of three epochs, the third traced; returns the trainer, that epoch's train seconds
    and the cores it kept busy."""
    import jax
    import numpy as np
    import optax

    import jaxnn
    from experiments.benchmark.jaxnn_peer import jaxnn_model

    n = args.steps * BATCH_SIZE
    rng = np.random.default_rng(0)
    x = rng.random((n, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, n).astype(np.int32)
    trainer = jaxnn.Trainer(
        jaxnn_model(args.workload),
        optimizer=optax.adam(LEARNING_RATE),
        seed=0,
        compiler_options={} if args.xla_defaults else None,
    )

    class TraceLastEpoch(jaxnn.Callback):
        """Traces the third epoch of one fit (the first compiles, the second warms up)."""

        def on_epoch_begin(self, trainer, epoch):
            if epoch == 2:
                self.cpu, self.start = os.times(), time.perf_counter()
                jax.profiler.start_trace(str(trace_dir))

        def on_epoch_end(self, trainer, epoch, logs):
            if epoch == 2:
                jax.profiler.stop_trace()
                wall, cpu = time.perf_counter() - self.start, os.times()
                self.cores = (cpu.user + cpu.system - self.cpu.user - self.cpu.system) / wall

    tracer = TraceLastEpoch()
    history = trainer.fit(x, y, epochs=3, batch_size=BATCH_SIZE, callbacks=[tracer], verbose=0)
    return trainer, history["train_time_s"][2], tracer.cores


def _per_op_ms(trace_dir: Path, steps: int) -> collections.Counter[str]:
    """Milliseconds per step of each op that XLA's worker threads ran in the trace."""
    from jax.profiler import ProfileData

    per_op: collections.Counter[str] = collections.Counter()
    (trace_file,) = sorted(trace_dir.rglob("*.xplane.pb"))[-1:]
    for plane in ProfileData.from_file(str(trace_file)).planes:
        for line in plane.lines:
            if "XLAEigen" not in line.name and "PjRtCpuClient" not in line.name:
                continue  # XLA's worker threads run the compiled ops
            for event in line.events:
                if not event.name.startswith(("ThunkExecutor", "SlinkyThreadPool")):
                    per_op[event.name] += event.duration_ns / 1e6 / steps
    return per_op


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Trains, traces and prints the profile; returns ms per step, cores busy and traced ms."""
    args = _parse_args(argv)
    out_dir = Path(args.out_dir or tempfile.mkdtemp(prefix="jaxnn_profile_"))
    dump_dir, trace_dir = out_dir / "hlo", out_dir / "trace"
    _set_xla_flags(dump_dir)
    trainer, train_seconds, cores = _train_and_trace(args, trace_dir)
    per_op = _per_op_ms(trace_dir, args.steps)
    step_ms = train_seconds * 1e3 / args.steps
    traced = sum(per_op.values())
    names = _op_descriptions(dump_dir)
    print(f"{args.workload}, {'XLA default' if args.xla_defaults else 'jaxnn'} compiler options "
          f"{trainer.compiler_options}, {args.steps} steps of {BATCH_SIZE}:")  # fmt: skip
    print(f"  {step_ms:.1f} ms per step ({BATCH_SIZE / step_ms * 1e3:,.0f} examples/s), "
          f"{cores:.2f} cores busy; traced ops {traced:.1f} ms, not traced "
          f"{max(step_ms - traced, 0):.1f} ms")  # fmt: skip
    for name, ms in per_op.most_common(args.top):
        print(f"  {ms:7.2f} ms  {name:30s} {names.get(name, '')}")
    print(f"trace and HLO: {out_dir}", file=sys.stderr)
    return {"step_ms": step_ms, "cores": cores, "traced_ms": traced}


if __name__ == "__main__":
    main()
