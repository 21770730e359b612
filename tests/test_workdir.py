"""What a workdir guarantees: one run at a time, the config it started with, bad values refused
before anything is written, result files readable by others. Commands run as a user types them."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import binary
from jaxnn import run as run_lib
from jaxnn import workdir as workdir_lib

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--config.epochs=1",
    "--config.dataset.num_examples=200",
    "--config.batch_size=16",
    "--config.model.features=(8,)",
    "--config.verbose=0",
]


def tiny_config():
    config = binary.get_config()
    config.epochs = 1
    config.dataset.num_examples = 200
    config.batch_size = 16
    config.model.features = (8,)
    config.verbose = 0
    return config


def command(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAXNN_COMPILATION_CACHE": "off"}
    return subprocess.run(
        [sys.executable, "-m", "experiments.binary", f"--workdir={workdir}", *TINY, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--config.batch_size=0", "batch_size: expected an integer >= 1; got 0"),
        ("--config.epochs=-1", "epochs: expected an integer >= 1; got -1"),
        ("--config.optimizer.learning_rate=-0.1", "optimizer.learning_rate: expected a finite"),
        ("--config.checkpoint.every_steps=-5", "checkpoint.every_steps: expected an integer >= 0"),
        ("--config.optimizer.name=sgdd", "optimizer.name: expected one of"),
        ("--config.optimizer.schedule.name=linear", "optimizer.schedule.name: expected one of"),
        ("--config.model.bn_momentum=1.0", "model.bn_momentum: expected a float in [0, 1)"),
    ],
)
def test_bad_values_are_refused_before_anything_is_written(tmp_path, flag, message):
    result = command(tmp_path / "run", flag)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"error: {message}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "config.json").exists()


def test_a_changed_config_is_refused_and_the_record_kept(tmp_path):
    workdir = tmp_path / "run"
    run_lib.run(tiny_config(), workdir)
    (workdir / "summary.json").unlink()  # as if interrupted before the end
    recorded = (workdir / "config.json").read_text()
    changed = tiny_config()
    changed.optimizer.learning_rate = 0.01
    changed.seed = 5
    with pytest.raises(ValueError) as refused:
        run_lib.run(changed, workdir)
    message = str(refused.value)
    assert "optimizer.learning_rate: started with 0.001, now 0.01" in message
    assert "seed: started with 0, now 5" in message
    assert "--config.fresh=True" in message and "--workdir" in message
    assert (workdir / "config.json").read_text() == recorded
    # Where the data is found and how much is printed may change; a fresh start may change all.
    moved = tiny_config()
    moved.verbose = 1
    moved.dataset.data_dir = str(tmp_path / "elsewhere")
    assert run_lib.run(moved, workdir)["epochs_run"] == 1
    changed.fresh = True
    assert run_lib.run(changed, workdir)["epochs_run"] == 1
    assert json.loads((workdir / "config.json").read_text())["seed"] == 5


def test_a_finished_run_refuses_new_settings_instead_of_ignoring_them(tmp_path):
    workdir = tmp_path / "run"
    run_lib.run(tiny_config(), workdir)
    longer = tiny_config()
    longer.epochs = 5
    with pytest.raises(ValueError, match="epochs: started with 1, now 5"):
        run_lib.run(longer, workdir)


def test_a_second_run_in_the_same_workdir_is_refused_naming_the_first(tmp_path):
    workdir = tmp_path / "run"
    with workdir_lib.lock(workdir):
        result = command(workdir)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"is in use by PID {os.getpid()} on host" in result.stderr
    assert not (workdir / "config.json").exists()
    # The lock goes with its holder: the same command now runs.
    assert command(workdir).returncode == 0


def test_result_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        run_lib.run(tiny_config(), tmp_path / "run")
    finally:
        os.umask(old)
    for name in ("config.json", "metrics.csv", "summary.json"):
        mode = stat.S_IMODE((tmp_path / "run" / name).stat().st_mode)
        assert mode == 0o644, (name, oct(mode))


def test_extend_continues_a_finished_run_to_more_epochs_and_records_it(tmp_path):
    workdir = tmp_path / "run"
    first = run_lib.run(tiny_config(), workdir)
    longer = tiny_config()
    longer.epochs = 3
    longer.extend = True
    summary = run_lib.run(longer, workdir)
    assert summary["epochs_run"] == 3 and len(summary["history"]["loss"]) == 3
    assert summary["history"]["loss"][0] == first["history"]["loss"][0]
    kept = json.loads((workdir / "summary.epochs_1.json").read_text())
    assert kept["params_checksum"] == first["params_checksum"]
    assert json.loads((workdir / "config.json").read_text())["epochs"] == 3
    (change,) = json.loads((workdir / "config_changes.json").read_text())
    assert change["epochs"] == {"from": 1, "to": 3} and change["time"].startswith("20")
    # The same command again finds a finished 3-epoch run; fewer epochs cannot be "extended".
    assert run_lib.run(longer, workdir)["params_checksum"] == summary["params_checksum"]
    longer.epochs = 2
    with pytest.raises(ValueError, match="epochs: --config.extend=True continues a run to more"):
        run_lib.run(longer, workdir)


def test_a_workdir_from_before_unset_values_were_none_still_resumes(tmp_path):
    workdir = tmp_path / "run"
    run_lib.run(tiny_config(), workdir)
    record = json.loads((workdir / "config.json").read_text())
    record["steps_per_dispatch"], record["init_from"]["layers"] = 0, [""]
    del record["extend"], record["dataset"]["path"], record["label_smoothing"]  # added since
    (workdir / "config.json").write_text(json.dumps(record))
    assert run_lib.run(tiny_config(), workdir)["epochs_run"] == 1
