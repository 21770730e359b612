"""Fault drill: every fault a run's workdir must survive, tried against a small run, one line each.

    python -m experiments.fault_drill [--workdir=checkpoints/fault_drill] [--seed=0]

The run is `experiments.stress_resume`'s (the `binary` experiment with BatchNorm, dropout, a
cosine schedule, ReduceLROnPlateau and a checkpoint every 5 steps). An uninterrupted run gives the
reference parameters; then each fault is staged in a workdir of its own and the same command is
run again. A case ends `recovered` (the run finished with the reference's parameters, bit for
bit), `refused` (a clear `error:` line, exit 2, nothing written, and the run then finished
as the reference), `lost` (the run could not finish) or `CORRUPTED` (it finished with other
parameters, and said nothing). The last line counts them.

Faults: SIGKILL at random moments (start-up, compilation, steps, asynchronous saves); the latest
checkpoint truncated, bit-flipped, or missing its array data, its metadata, its JSON item or
its whole state folder; a checkpoint write that fails for lack of space (the file-size limit
of the process, so the write fails as on a full disk); two runs at once in one workdir; a
changed config on resume; a nonsense value.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from experiments.stress_resume import checksum, command, kill_after

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _run(workdir: Path, *extra: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*command(workdir), *extra], env=ENV, capture_output=True, text=True, **kwargs
    )


def _finished_as(workdir: Path, expected: str) -> tuple[str, str]:
    """Reruns the command; the outcome of the case."""
    result = _run(workdir)
    if result.returncode != 0:
        return "lost", result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "?"
    if checksum(workdir) != expected:
        return "CORRUPTED", "finished with other parameters"
    return "recovered", "finished bit for bit as the reference"


def _interrupted(workdir: Path, expected: str) -> Path:
    """A run that stopped after its last save but before its summary: the latest checkpoint is
    the one a fault then damages (and the run must train through its step again)."""
    _run(workdir, check=True)
    assert checksum(workdir) == expected
    (workdir / "summary.json").unlink()
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    return workdir / "checkpoints" / str(steps[-1])


def _largest(folder: Path) -> Path:
    return max((p for p in folder.iterdir() if p.is_file()), key=lambda p: p.stat().st_size)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(max(0, middle - 2000), min(len(data), middle + 2000)):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGES: dict[str, Callable[[Path], None]] = {
    "latest checkpoint's array data truncated": lambda s: _truncate(_largest(s / "state" / "d")),
    "latest checkpoint's array data bit-flipped": lambda s: _flip(_largest(s / "state" / "d")),
    "latest checkpoint's array data deleted": lambda s: _largest(s / "state" / "d").unlink(),
    "latest checkpoint's _METADATA deleted": lambda s: (s / "state" / "_METADATA").unlink(),
    "latest checkpoint's JSON item deleted": lambda s: (s / "extra" / "metadata").unlink(),
    "latest checkpoint's state folder deleted": lambda s: shutil.rmtree(s / "state"),
}


def kill_case(workdir: Path, expected: str, delay: float) -> tuple[str, str]:
    killed = kill_after(workdir, delay, ENV)
    outcome, detail = _finished_as(workdir, expected)
    when = f"at {delay:.1f} s" + ("" if killed else " (after the run ended)")
    return outcome, f"{when}; {detail}"


def damage_case(workdir: Path, expected: str, damage: Callable[[Path], None]) -> tuple[str, str]:
    step = _interrupted(workdir, expected)
    damage(step)
    outcome, detail = _finished_as(workdir, expected)
    moved = workdir / "damaged_checkpoints" / step.name
    return outcome, f"{detail}; step {step.name} moved aside: {moved.is_dir()}"


def disk_full_case(workdir: Path, expected: str) -> tuple[str, str]:
    def limit_file_size() -> None:  # writes past 2 KiB fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    _run(workdir, "--config.fresh=True", check=True)  # config.json and data in place
    (workdir / "summary.json").unlink()
    shutil.rmtree(workdir / "checkpoints")
    failed = _run(workdir, preexec_fn=limit_file_size)
    lines = failed.stderr.strip().splitlines()
    clear = failed.returncode == 1 and lines and lines[-1].startswith("error: ")
    if not clear:
        return "lost", f"exit {failed.returncode}: {lines[-1] if lines else '?'}"
    outcome, detail = _finished_as(workdir, expected)
    return outcome, f"one error line, exit 1; then {detail}"


def two_runs_case(workdir: Path, expected: str) -> tuple[str, str]:
    first = subprocess.Popen(
        command(workdir), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    lock = workdir / ".lock"
    while first.poll() is None and not (lock.exists() and lock.read_text().strip()):
        time.sleep(0.05)
    second = _run(workdir)
    first.wait()
    if second.returncode != 2 or "is in use by PID" not in second.stderr:
        return "lost", f"the second run was not refused (exit {second.returncode})"
    if first.returncode != 0 or checksum(workdir) != expected:
        return "lost", "the first run did not finish as the reference"
    return "refused", "the second run was refused naming the first; the first finished bit for bit"


def refusal_case(workdir: Path, expected: str, flag: str, stage: bool) -> tuple[str, str]:
    if stage:
        _interrupted(workdir, expected)
    recorded = (workdir / "config.json").read_text() if stage else None
    result = _run(workdir, flag)
    line = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    unchanged = recorded == (
        (workdir / "config.json").read_text() if (workdir / "config.json").exists() else None
    )
    if result.returncode != 2 or not line.startswith("error: ") or not unchanged:
        return "lost", f"exit {result.returncode}: {line[:120]}"
    outcome, detail = _finished_as(workdir, expected)
    return ("refused" if outcome == "recovered" else outcome), f"{line[:90]}...; then {detail}"


def cases(root: Path, expected: str, duration: float, rng: random.Random) -> dict:
    drill: dict[str, Callable[[Path], tuple[str, str]]] = {}
    for i in range(3):
        delay = rng.uniform(0.1, 0.9) * duration
        drill[f"SIGKILL {i + 1}"] = lambda w, d=delay: kill_case(w, expected, d)
    for name, damage in DAMAGES.items():
        drill[name] = lambda w, d=damage: damage_case(w, expected, d)
    drill["checkpoint write fails (file too large / disk full)"] = lambda w: disk_full_case(
        w, expected
    )
    drill["two runs at once in one workdir"] = lambda w: two_runs_case(w, expected)
    drill["changed config on resume"] = lambda w: refusal_case(
        w, expected, "--config.optimizer.learning_rate=0.01", stage=True
    )
    drill["nonsense value (batch_size=0)"] = lambda w: refusal_case(
        w, expected, "--config.batch_size=0", stage=False
    )
    return drill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="checkpoints/fault_drill")
    args = parser.parse_args()
    root = Path(args.workdir)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    _run(root / "reference", check=True)  # fills the compilation cache: later runs are warm
    start = time.perf_counter()
    _run(root / "warm", check=True)
    duration = time.perf_counter() - start
    expected = checksum(root / "reference")
    print(f"reference run: {duration:.1f} s warm, params_checksum {expected[:16]}...", flush=True)
    outcomes = []
    drill = cases(root, expected, duration, random.Random(args.seed))
    for i, (name, case) in enumerate(drill.items()):
        outcome, detail = case(root / f"case_{i:02d}")
        outcomes.append(outcome)
        print(f"{name}: {outcome} ({detail})", flush=True)
    lost, corrupted = outcomes.count("lost"), outcomes.count("CORRUPTED")
    survived = len(outcomes) - lost - corrupted
    print(
        f"{survived}/{len(outcomes)} faults survived, {lost} runs lost, "
        f"{corrupted} silent corruptions"
    )
    sys.exit(0 if survived == len(outcomes) else 1)


if __name__ == "__main__":
    main()
