"""Stress test of exact resume: SIGKILL a short run at random moments, resume it, compare.

    python -m experiments.stress_resume [--kills=20] [--seed=0] [--workdir=DIR]

A reference run of the `binary` experiment (an MLP with dropout and BatchNorm, a cosine schedule,
ReduceLROnPlateau, checkpoints every 5 steps and at epoch ends) trains uninterrupted. Then, for each
trial, the same command starts in a fresh workdir, is killed with SIGKILL after a random delay
(anywhere from start-up through compilation, training steps and asynchronous saves), and is rerun
until it finishes. The trial passes when its final `params_checksum` equals the reference's.
Prints how many of the trials ended bitwise identical.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

OVERRIDES = [
    "--config.epochs=4",
    "--config.dataset.num_examples=600",
    "--config.batch_size=16",
    "--config.model.batch_norm=True",
    "--config.optimizer.schedule.name=cosine",
    "--config.reduce_lr.enabled=True",
    "--config.reduce_lr.patience=1",
    "--config.checkpoint.every_steps=5",
    "--config.steps_per_dispatch=2",
    "--config.verbose=0",
]


def command(workdir: Path) -> list[str]:
    """The stressed run's command line in ``workdir``."""
    return [sys.executable, "-m", "experiments.binary", f"--workdir={workdir}", *OVERRIDES]


def checksum(workdir: Path) -> str:
    """The finished run's ``params_checksum``."""
    return json.loads((workdir / "summary.json").read_text())["params_checksum"]


def kill_after(workdir: Path, delay: float, env: dict[str, str]) -> bool:
    """Starts the run in ``workdir`` and SIGKILLs it after ``delay`` seconds; whether it was
    still running then."""
    child = subprocess.Popen(
        command(workdir), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(delay)
    killed = child.poll() is None
    if killed:
        child.send_signal(signal.SIGKILL)
    child.wait()
    return killed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="checkpoints/stress_resume")
    args = parser.parse_args()
    root = Path(args.workdir)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    start = time.perf_counter()
    subprocess.run(command(root / "reference"), env=env, check=True, capture_output=True)
    duration = time.perf_counter() - start
    expected = checksum(root / "reference")
    print(f"reference run: {duration:.1f} s, params_checksum {expected[:16]}...")

    rng = random.Random(args.seed)
    identical = 0
    for trial in range(args.kills):
        workdir = root / f"trial_{trial:02d}"
        delay = rng.uniform(0.05, 0.95) * duration
        killed = kill_after(workdir, delay, env)
        resumed = subprocess.run(command(workdir), env=env, capture_output=True, text=True)
        ok = resumed.returncode == 0 and checksum(workdir) == expected
        identical += ok
        steps = (
            sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
            if (workdir / "checkpoints").is_dir()
            else []
        )
        print(
            f"trial {trial + 1:2d}: SIGKILL at {delay:5.1f} s "
            f"({'killed mid-run' if killed else 'the run had already finished'}), resumed -> "
            f"{'bitwise identical' if ok else 'DIFFERENT'} (checkpoints on disk: {steps})",
            flush=True,
        )
        if not ok:
            print(resumed.stdout[-2000:], resumed.stderr[-2000:])
    print(f"{identical}/{args.kills} resumed runs ended bitwise identical to the reference")
    sys.exit(0 if identical == args.kills else 1)


if __name__ == "__main__":
    main()
