"""The sweep as users type it: ``python -m experiments.<name> --sweep.<key>=(...)`` and
``jaxnn sweep``, its workdir, its table, resume after SIGKILL, and ``jaxnn compare``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tiny_data import write_idx

from jaxnn import config as config_lib
from jaxnn.sweep_run import groups_of, members_of, parse_sweep_args

REPO = Path(__file__).resolve().parents[1]
TINY = ["--config.epochs=2", "--config.model.features=(8,)", "--config.batch_size=16"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    write_idx(root / "idx", n_train=80, n_test=24)
    return root


def environment(sources: Path) -> dict[str, str]:
    return {
        **os.environ,
        "JAXNN_DATA_DIR": str(sources / "idx"),
        "PYTHONPATH": str(REPO),
        "JAXNN_COMPILATION_CACHE": "off",
    }


def experiment(workdir: Path, *args: str, sources: Path, **kwargs) -> subprocess.CompletedProcess:
    """``python -m experiments.fashion_mnist_mlp`` with tiny settings, as a user runs it."""
    command = [
        sys.executable,
        "-m",
        "experiments.fashion_mnist_mlp",
        f"--workdir={workdir}",
        f"--config.dataset.data_dir={workdir.parent / 'tfds'}",
        *TINY,
        *args,
    ]
    return subprocess.run(
        command, cwd=REPO, env=environment(sources), capture_output=True, text=True, timeout=600
    )


def jaxnn(*args: str, sources: Path, cwd: Path) -> subprocess.CompletedProcess:
    executable = Path(sys.executable).with_name("jaxnn")
    return subprocess.run(
        [str(executable), *args],
        cwd=cwd,
        env=environment(sources),
        capture_output=True,
        text=True,
        timeout=600,
    )


SWEEP = ["--sweep.optimizer.learning_rate=(1e-2,1e-3)", "--sweep.seed=(0,1)"]
MEMBER_FILES = ("config.json", "metrics.csv", "summary.json", "learning_curves.png")


def test_a_sweep_command_trains_every_member_tabulates_and_resumes_finished(sources, tmp_path):
    workdir = tmp_path / "sweep"
    done = experiment(workdir, *SWEEP, sources=sources)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "4 members in 1 group(s)" in done.stdout
    members = sorted((workdir / "members").iterdir())
    assert [m.name for m in members] == [
        "00_learning_rate=0.01_seed=0",
        "01_learning_rate=0.01_seed=1",
        "02_learning_rate=0.001_seed=0",
        "03_learning_rate=0.001_seed=1",
    ]
    summaries = []
    for member in members:
        for name in (*MEMBER_FILES, "confusion_matrix.png", "checkpoints"):
            assert (member / name).exists(), member / name
        summaries.append(json.loads((member / "summary.json").read_text()))
        assert len((member / "metrics.csv").read_text().strip().splitlines()) == 1 + 2
    summary = json.loads((workdir / "summary.json").read_text())
    # The table's numbers are the members': mean and sample std over the two seeds.
    for rate, chosen in (("0.01", [0, 1]), ("0.001", [2, 3])):
        setting = f"optimizer.learning_rate={rate}"
        row = next(s for s in summary["settings"] if s["setting"] == setting)
        values = [summaries[i]["test_accuracy"] for i in chosen]
        assert row["test_accuracy"]["mean"] == pytest.approx(np.mean(values))
        assert row["test_accuracy"]["std"] == pytest.approx(np.std(values, ddof=1))
        assert row["seeds"] == [0, 1]
    best = max(range(4), key=lambda i: summaries[i]["best_val_metric"])
    assert summary["best_member"] == members[best].name
    assert f"Best member by val_accuracy: {members[best].name}" in done.stdout
    assert (workdir / "sweep.txt").read_text().splitlines()[
        0
    ] == "Sweep fashion_mnist_mlp: 4 members"
    assert (workdir / "sweep.png").stat().st_size > 0

    again = experiment(workdir, *SWEEP, sources=sources)
    assert again.returncode == 0 and "holds a finished sweep" in again.stdout
    changed = experiment(workdir, *SWEEP, "--config.batch_size=8", sources=sources)
    assert changed.returncode == 2 and "batch_size" in changed.stderr
    other_sweep = experiment(workdir, "--sweep.seed=(0,1,2)", sources=sources)
    assert other_sweep.returncode == 2 and "sweep" in other_sweep.stderr

    compared = jaxnn("compare", str(workdir), "--out", "cmp.png", sources=sources, cwd=tmp_path)
    assert compared.returncode == 0, compared.stderr[-2000:]
    assert all(member.name in compared.stdout for member in members)

    # Member 3 is the run its config describes: the single run ends the same.
    single = experiment(
        tmp_path / "single", "--config.seed=1", "--config.optimizer.learning_rate=1e-3",
        sources=sources,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-2000:]
    alone = json.loads((tmp_path / "single" / "summary.json").read_text())
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(summaries[3]["history"][key], alone["history"][key], rtol=1e-5)
    assert summaries[3]["test_accuracy"] == pytest.approx(alone["test_accuracy"], abs=1e-6)


def test_jaxnn_sweep_groups_what_cannot_share_a_program_and_refuses_typos(sources, tmp_path):
    done = jaxnn(
        "sweep", "fashion_mnist_mlp", f"--workdir={tmp_path / 'sweep'}",
        f"--config.dataset.data_dir={tmp_path / 'tfds'}", *TINY,
        "--sweep.model.features=((8,),(4,))", "--sweep.seed=(0,1)",
        sources=sources, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "4 members in 2 group(s)" in done.stdout
    assert done.stdout.count("member(s) at once") == 2
    fresh = jaxnn(
        "sweep", "fashion_mnist_mlp", f"--workdir={tmp_path / 'sweep'}",
        f"--config.dataset.data_dir={tmp_path / 'tfds'}", *TINY, "--config.fresh=True",
        "--sweep.seed=(5,)", sources=sources, cwd=tmp_path,
    )  # fmt: skip
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert [p.name for p in (tmp_path / "sweep" / "members").iterdir()] == ["00_seed=5"]
    assert sorted(p.name for p in (tmp_path / "sweep" / "groups").iterdir()) == ["0"]
    typo = jaxnn(
        "sweep", "fashion_mnist_mlp", "--sweep.optimizer.learnign_rate=(1e-3,1e-4)",
        sources=sources, cwd=tmp_path,
    )  # fmt: skip
    assert typo.returncode == 2
    assert "unknown config key; did you mean ['optimizer.learning_rate'" in typo.stderr
    assert "RuntimeWarning" not in typo.stderr
    bare = jaxnn("sweep", "fashion_mnist_mlp", sources=sources, cwd=tmp_path)
    assert bare.returncode != 0 and "expected at least one --sweep" in bare.stderr


def _finished_steps(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def test_a_sweep_killed_with_sigkill_resumes_bit_for_bit(sources, tmp_path):
    args = [
        "--config.epochs=4",
        "--config.steps_per_dispatch=1",
        "--config.checkpoint.every_steps=2",
        "--config.early_stopping.enabled=True",
        "--config.early_stopping.patience=2",
        *SWEEP,
    ]
    reference = experiment(tmp_path / "reference", *args, sources=sources)
    assert reference.returncode == 0, reference.stderr[-3000:]

    workdir = tmp_path / "killed"
    command = [
        sys.executable, "-m", "experiments.fashion_mnist_mlp", f"--workdir={workdir}",
        f"--config.dataset.data_dir={tmp_path / 'tfds'}", *TINY, *args,
    ]  # fmt: skip
    child = subprocess.Popen(
        command, cwd=REPO, env=environment(sources), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    saved = workdir / "groups" / "0" / "checkpoints"
    deadline = time.monotonic() + 300
    while not _finished_steps(saved) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert child.poll() is None, "the sweep ended before its first checkpoint"
    child.send_signal(signal.SIGKILL)
    child.wait()
    steps = _finished_steps(saved)
    assert steps and not (workdir / "summary.json").exists()
    assert max(steps) < 4 * 5 * 4  # killed before the end (5 steps per epoch)

    resumed = experiment(workdir, *args, sources=sources)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming group 0 from step" in resumed.stdout
    for member in sorted((tmp_path / "reference" / "members").iterdir()):
        expected = json.loads((member / "summary.json").read_text())
        got = json.loads((workdir / "members" / member.name / "summary.json").read_text())
        assert got["params_checksum"] == expected["params_checksum"], member.name
        for key, values in expected["history"].items():
            if not key.endswith("time_s"):
                assert got["history"][key] == values, (member.name, key)
        assert got["test_accuracy"] == expected["test_accuracy"]


def test_sweep_flags_parse_into_the_product_of_their_values_and_groups():
    spec, rest = parse_sweep_args(
        ["--sweep.seed=(0,1,2)", "--config.epochs=3", "--sweep.optimizer.name=sgd"]
    )
    assert spec == {"seed": (0, 1, 2), "optimizer.name": ("sgd",)} and rest == ["--config.epochs=3"]
    config = config_lib.base_config()
    config.dataset.name = "fashion_mnist"
    spec = {"optimizer.learning_rate": (1e-3, 1e-4), "optimizer.l2": (0.0, 1e-4), "seed": (0, 1)}
    members = members_of(config, spec)
    assert len(members) == 8 and members[5].setting == {
        "optimizer.learning_rate": 1e-4,
        "optimizer.l2": 0.0,
        "seed": 1,
    }
    groups = groups_of(members)  # an L2 of 0 leaves its piece out of the chain: two programs
    assert [[m.index for m in g] for g in groups] == [[0, 1, 4, 5], [2, 3, 6, 7]]
    config.dataset.normalization = "standardize"  # the data then depend on the seed's split
    assert len(groups_of(members_of(config, {"seed": (0, 1)}))) == 2
    with pytest.raises(ValueError, match="not a setting a sweep can vary"):
        members_of(config, {"checkpoint.keep_latest": (1, 2)})
    with pytest.raises(ValueError, match="epochs: expected an integer >= 1; got 0"):
        members_of(config, {"epochs": (0, 2)})


def test_label_smoothing_values_are_separate_groups_and_checked_per_member():
    config = config_lib.base_config()
    config.dataset.name = "fashion_mnist"  # seeds share a group; smoothing values do not
    spec, _ = parse_sweep_args(["--sweep.label_smoothing=(0.0,0.1)", "--sweep.seed=(0,1)"])
    members = members_of(config, spec)
    assert [m.setting["label_smoothing"] for m in members] == [0.0, 0.0, 0.1, 0.1]
    assert [[m.index for m in g] for g in groups_of(members)] == [[0, 1], [2, 3]]
    assert [config_lib.build_loss(m.config).label_smoothing for m in members] == [0, 0, 0.1, 0.1]
    with pytest.raises(ValueError, match=r"^label_smoothing: expected a real number in \[0, 1\)"):
        members_of(config, {"label_smoothing": (0.1, 1.0)})
