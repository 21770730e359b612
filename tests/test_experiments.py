"""Every experiment end to end for a tiny epoch on generated files in the original formats."""

from __future__ import annotations

import csv
import datetime
import importlib
import json
import os
import re
import shlex
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg
from tiny_data import write_cifar10_python, write_idx

from jaxnn import run as run_lib

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = [
    "mnist_mlp",
    "mnist_cnn",
    "fashion_mnist_mlp",
    "fashion_mnist_cnn",
    "fashion_mnist_cnn_augmented",
    "cifar10_cnn",
    "cifar10_cnn_augmented",
    "regression",
    "binary",
]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    write_idx(root / "idx", n_train=80, n_test=24)
    write_cifar10_python(root / "cifar", per_batch=12, n_test=16)
    return root


def tiny(config, sources: Path, tmp: Path):
    config.epochs = 2
    schedule = config.optimizer.schedule
    schedule.warmup_epochs = min(schedule.warmup_epochs, 1.0)  # shorter than the 2 epochs
    config.batch_size = 16
    config.verbose = 0
    config.dataset.data_dir = str(tmp / "tfds")
    name = config.dataset.name
    if name in ("mnist", "fashion_mnist"):
        config.dataset.source_dir = str(sources / "idx")
    elif name == "cifar10":
        config.dataset.source_dir = str(sources / "cifar")
    else:
        config.dataset.num_examples = 200
    if config.model.name == "cnn":
        config.model.filters = (4, 8)
        config.model.dense = (16,)
    else:
        config.model.features = (16,)
    return config


def read_events(folder: Path) -> dict[str, list[float]]:
    """Reads TensorBoard event files (TFRecord framing + Event protos) into tag -> values."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[float]] = {}
    files = sorted(folder.glob("events.out.tfevents.*"))
    assert files, f"no event file in {folder}"
    for path in files:
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            payload = data[offset + 12 : offset + 12 + length]
            offset += 12 + length + 4
            event = event_pb2.Event.FromString(payload)
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append(value.simple_value)
    return scalars


def check_outputs(workdir: Path, classifier: bool, epochs: int = 2) -> dict:
    config = json.loads((workdir / "config.json").read_text())
    assert config["epochs"] == epochs
    with open(workdir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    for column in ("loss", "val_loss", "learning_rate", "grad_norm", "epoch_time_s"):
        assert all(np.isfinite(float(r[column])) for r in rows), column
    events = read_events(workdir / "tensorboard")
    assert len(events["loss/train"]) == epochs and len(events["loss/validation"]) == epochs
    np.testing.assert_allclose(events["loss/train"], [float(r["loss"]) for r in rows], rtol=1e-6)
    pngs = ["learning_curves.png"] + (["confusion_matrix.png"] if classifier else [])
    for png in pngs:
        picture = mpimg.imread(workdir / png)
        assert picture.ndim == 3 and picture.shape[0] > 100 and picture.shape[1] > 100
    summary = json.loads((workdir / "summary.json").read_text())
    keys = [
        "best_val_metric",
        "best_epoch",
        "epochs_run",
        "wall_time_s",
        "train_examples_per_s",
        "params_checksum",
        "versions",
        "device_kind",
        "device_count",
        "finished_at",
        "command",
    ]
    keys += ["test_accuracy"] if classifier else ["test_mae", "test_mse"]
    missing = [k for k in keys if k not in summary]
    assert not missing, missing
    assert summary["epochs_run"] == epochs and len(summary["params_checksum"]) == 64
    finished = datetime.datetime.fromisoformat(summary["finished_at"])
    now = datetime.datetime.now(datetime.UTC)
    assert finished.utcoffset() == datetime.timedelta(0)  # UTC, ISO 8601
    assert abs(now - finished).total_seconds() < 600
    return summary


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_runs_end_to_end(name, sources, tmp_path):
    module = importlib.import_module(f"experiments.{name}")
    config = tiny(module.get_config(), sources, tmp_path)
    summary = run_lib.run(config, tmp_path / "run")
    classifier = name != "regression"
    check_outputs(tmp_path / "run", classifier)
    metric = "test_binary_accuracy" if name == "binary" else "test_accuracy"
    if classifier:
        assert 0.0 <= summary[metric] <= 1.0
    else:
        assert summary["test_mae"] >= 0 and summary["test_mse"] >= 0


def test_optimizers_experiment_draws_every_curve(sources, tmp_path):
    from experiments import optimizers

    config = tiny(optimizers.get_config(), sources, tmp_path)
    config.epochs = 1
    config.optimizers = "sgd,adam"
    summary = optimizers.compare(config, tmp_path / "run")
    assert set(summary) == {"sgd", "adam"}
    assert mpimg.imread(tmp_path / "run" / "optimizers.png").shape[0] > 100
    for name in ("sgd", "adam"):
        check_outputs(tmp_path / "run" / name, classifier=True, epochs=1)


def run_experiment(module, args, tmp_path, sources, cache="off", **kwargs):
    """``python -m <module> --workdir=<tmp>/run --config.dataset.data_dir=<tmp>/tfds *args`` as a
    user types it, in a subprocess reading the test's IDX files; ``cache`` is
    JAXNN_COMPILATION_CACHE."""
    env = {
        **os.environ,
        "JAXNN_DATA_DIR": str(sources / "idx"),
        "PYTHONPATH": str(REPO),
        "JAXNN_COMPILATION_CACHE": cache,
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            module,
            f"--workdir={tmp_path / 'run'}",
            f"--config.dataset.data_dir={tmp_path / 'tfds'}",
            *args,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )


def cli(args, tmp_path, sources, **kwargs):
    """The MLP experiment's command, shrunk to one epoch of an 8-unit MLP, with a compilation
    cache of its own."""
    tiny_mlp = ["--config.epochs=1", "--config.model.features=(8,)", *args]
    return run_experiment(
        "experiments.fashion_mnist_mlp",
        tiny_mlp,
        tmp_path,
        sources,
        cache=str(tmp_path / "xla_cache"),
        **kwargs,
    )


def test_command_line_runs_reports_and_says_when_finished(sources, tmp_path):
    first = cli([], tmp_path, sources)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Epoch 1/1" in first.stdout + first.stderr
    assert "\r" not in first.stderr  # not a terminal: line-based output only
    assert "FLOPs per example" in first.stdout and "Devices:" in first.stdout
    summary = check_outputs(tmp_path / "run", classifier=True, epochs=1)
    assert summary["command"].endswith("fashion_mnist_mlp.py " + shlex.join(first.args[3:]))
    (line,) = [line for line in first.stdout.splitlines() if line.startswith("Summary: ")]
    # fixed decimals and thousands separators, never 2.332e+04
    shown = dict(item.split("=") for item in line.removeprefix("Summary: ").split(", "))
    assert re.fullmatch(r"0\.\d{4}|1\.0000", shown["test_accuracy"]), line
    assert re.fullmatch(r"\d{1,3}(,\d{3})*", shown["train_examples_per_s"]), line
    assert re.fullmatch(r"[\d,]+\.\d", shown["wall_time_s"]) and shown["epochs_run"] == "1", line
    cached = sorted(p.name for p in (tmp_path / "xla_cache").iterdir())
    assert len(cached) >= 3  # the train, eval and predict steps at least
    again = cli([], tmp_path, sources)
    assert again.returncode == 0 and "finished run" in again.stdout
    assert summary["params_checksum"] in again.stdout
    fresh = cli(["--config.fresh=True"], tmp_path, sources)
    assert fresh.returncode == 0 and "finished run" not in fresh.stdout
    # Same seed, same data: a fresh rerun, with its steps loaded from the persistent compilation
    # cache, reproduces the parameters bitwise.
    assert set(cached) <= {p.name for p in (tmp_path / "xla_cache").iterdir()}
    rerun = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert rerun["params_checksum"] == summary["params_checksum"]


def test_augmented_cnn_command_trains_with_its_recipe(sources, tmp_path):
    """``python -m experiments.fashion_mnist_cnn_augmented`` as a user runs it, shrunk by flags
    (6 epochs: its warm-up takes 5), with PyTorch's initialiser picked by name."""
    workdir = tmp_path / "run"
    flags = [
        "--config.epochs=6",
        "--config.batch_size=16",
        "--config.model.filters=(4,8)",
        "--config.model.dense=(16,)",
        "--config.model.kernel_init=pytorch_uniform",
    ]
    result = run_experiment("experiments.fashion_mnist_cnn_augmented", flags, tmp_path, sources)
    assert result.returncode == 0, result.stderr[-3000:]
    check_outputs(workdir, classifier=True, epochs=6)
    config = json.loads((workdir / "config.json").read_text())
    assert config["augment"]["hflip"] is True and config["augment"]["crop_padding"] == 2
    assert config["model"]["bn_momentum"] == 0.9 and config["model"]["filters"] == [4, 8]
    assert config["model"]["dropout_rate"] == 0.1 and config["model"]["test_time_hflip"] is True
    assert config["model"]["kernel_init"] == "pytorch_uniform"
    schedule = config["optimizer"]["schedule"]
    assert schedule["name"] == "warmup_cosine" and schedule["warmup_epochs"] == 5.0
    assert config["optimizer"]["learning_rate"] == 4e-3
    with open(workdir / "metrics.csv") as f:
        lr = [float(row["learning_rate"]) for row in csv.DictReader(f)]
    assert all(lr[i] < lr[i + 1] for i in range(4)), lr  # warming up for 5 epochs
    assert lr[5] < lr[4] <= 4e-3, lr  # then the cosine decay


def test_unknown_config_key_lists_close_matches(sources, tmp_path):
    result = cli(["--config.optimizer.learning_rat=0.1"], tmp_path, sources)
    assert result.returncode != 0
    assert "optimizer.learning_rate" in result.stderr + result.stdout
    assert not (tmp_path / "run" / "metrics.csv").exists()


def test_unwritable_workdir_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    config = run_lib.base_config()
    with pytest.raises(PermissionError, match="workdir.*not writable"):
        run_lib.run(config, blocker / "run")


def test_fine_tuning_copies_layers_from_another_run_and_freezes_them(sources, tmp_path):
    from experiments import fashion_mnist_cnn
    from jaxnn import checkpoint

    base = tiny(fashion_mnist_cnn.get_config(), sources, tmp_path)
    base.epochs = 1
    run_lib.run(base, tmp_path / "pretrained")
    pretrained = checkpoint.restore(tmp_path / "pretrained", "best")["params"]
    tuned = tiny(fashion_mnist_cnn.get_config(), sources, tmp_path)
    tuned.epochs = 1
    tuned.seed = 7  # a different initialisation for the layers that are not copied
    tuned.init_from.workdir = str(tmp_path / "pretrained")
    tuned.init_from.layers = ("Conv_0", "Conv_1")
    tuned.init_from.freeze = True
    run_lib.run(tuned, tmp_path / "tuned")
    params = checkpoint.restore(tmp_path / "tuned", "latest")["params"]
    for layer in ("Conv_0", "Conv_1"):  # copied, then frozen: unchanged by training
        assert set(params[layer]) == {"kernel"}  # no bias before BatchNorm
        np.testing.assert_array_equal(params[layer]["kernel"], pretrained[layer]["kernel"])
    assert not np.array_equal(params["Dense_1"]["kernel"], pretrained["Dense_1"]["kernel"])


def test_optimizers_command_runs_from_the_command_line(sources, tmp_path):
    flags = [
        "--config.epochs=1",
        "--config.model.features=(8,)",
        "--config.optimizers=sgd,adam",
        "--config.verbose=0",
    ]
    result = run_experiment("experiments.optimizers", flags, tmp_path, sources)
    # The locked command-line config once made this command fail before training.
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary) == {"sgd", "adam"}
    for name in ("sgd", "adam"):
        check_outputs(tmp_path / "run" / name, classifier=True, epochs=1)
    # A header per member with its own learning rate, then the comparison table.
    assert "=== sgd: sgd, learning rate 0.01\n" in result.stdout
    assert "=== adam: adam, learning rate 0.001\n" in result.stdout
    table = result.stdout.split("=== adam")[1]
    assert "optimizer.name" in table and "optimizer.learning_rate" in table
    assert "test_accuracy" in table


def jaxnn_command(*args: str, tmp_path: Path, sources: Path) -> subprocess.CompletedProcess:
    """The installed ``jaxnn`` console command, as a user types it."""
    env = {
        **os.environ,
        "JAXNN_DATA_DIR": str(sources / "idx"),
        "PYTHONPATH": str(REPO),
        "JAXNN_COMPILATION_CACHE": "off",
    }
    jaxnn = Path(sys.executable).with_name("jaxnn")
    assert jaxnn.exists(), "the jaxnn console command is not installed (pip install -e .)"
    return subprocess.run(
        [str(jaxnn), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )


def test_jaxnn_list_and_python_m_experiments_name_every_experiment(sources, tmp_path):
    listed = jaxnn_command("list", tmp_path=tmp_path, sources=sources)
    assert listed.returncode == 0, listed.stderr[-2000:]
    for name in EXPERIMENTS + ["optimizers"]:
        assert f"  {name} " in listed.stdout
    assert "[fashion_mnist]" in listed.stdout and "fault_drill" in listed.stdout
    same = subprocess.run(
        [sys.executable, "-m", "experiments"], cwd=REPO, capture_output=True, text=True
    )
    assert same.returncode == 0 and same.stdout == listed.stdout


def test_help_lists_every_config_key_with_its_default_and_exits_0(sources, tmp_path):
    from experiments import fashion_mnist_cnn
    from jaxnn.confighelp import DESCRIPTIONS

    result = cli(["--help"], tmp_path, sources)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage: python -m experiments.fashion_mnist_mlp" in result.stdout
    assert "--config.optimizer.learning_rate=0.001  (float)" in result.stdout
    assert "--config.init_from.layers=unset" in result.stdout
    for key in DESCRIPTIONS:
        assert f"--config.{key}=" in result.stdout, key
    # Every key of every experiment has its description.
    for key in flat_keys(fashion_mnist_cnn.get_config()):
        assert key in DESCRIPTIONS, key


def flat_keys(config, prefix=""):
    for key, value in config.items():
        if hasattr(value, "items"):
            yield from flat_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_jaxnn_run_trains_like_python_m_and_compare_tabulates_runs(sources, tmp_path):
    common = [
        f"--config.dataset.data_dir={tmp_path / 'tfds'}",
        "--config.epochs=1",
        "--config.model.features=(8,)",
        "--config.verbose=0",
    ]
    for lr in ("0.001", "0.01"):
        result = jaxnn_command(
            "run", "fashion_mnist_mlp", f"--workdir=lr{lr}",
            f"--config.optimizer.learning_rate={lr}", *common, tmp_path=tmp_path, sources=sources,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        check_outputs(tmp_path / f"lr{lr}", classifier=True, epochs=1)
    compared = jaxnn_command(
        "compare", "lr0.001", "lr0.01", "--out=both.png", tmp_path=tmp_path, sources=sources
    )
    assert compared.returncode == 0, compared.stderr[-2000:]
    lines = compared.stdout.splitlines()
    assert lines[0].split() == ["lr0.001", "lr0.01"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:] if line.strip()}
    assert rows["optimizer.learning_rate"] == ["0.0010", "0.0100"]
    assert "seed" not in rows  # only what differs, then the results
    assert len(rows["test_accuracy"]) == 2 and rows["epochs_run"] == ["1", "1"]
    assert mpimg.imread(tmp_path / "both.png").shape[0] > 100
    typo = jaxnn_command("run", "fashion_mnist_mlp", "--config.epoch=2", tmp_path=tmp_path,
                         sources=sources)  # fmt: skip
    assert typo.returncode == 2 and "Did you mean --config.epochs?" in typo.stderr


def test_jaxnn_predict_and_export_use_a_trained_run(sources, tmp_path):
    from PIL import Image

    import jaxnn

    data_dir = f"--config.dataset.data_dir={tmp_path / 'tfds'}"
    trained = jaxnn_command(
        "run", "fashion_mnist_mlp", "--workdir=run", data_dir, "--config.epochs=1",
        "--config.model.features=(8,)", "--config.verbose=0", tmp_path=tmp_path, sources=sources,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]
    raw = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    Image.fromarray(raw[0]).save(tmp_path / "one.png")
    np.save(tmp_path / "three.npy", raw)
    result = jaxnn_command("predict", "run", "one.png", "three.npy", tmp_path=tmp_path,
                           sources=sources)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "one.png[0]",
        *(f"three.npy[{i}]" for i in range(3)),
    ]
    loaded = jaxnn.load(tmp_path / "run")
    expected = loaded.predict((raw / np.float32(255))[..., None])
    for line, row in zip(lines[1:], expected, strict=True):
        top = int(np.argmax(row))
        assert line.split(": ")[1].startswith(f"{loaded.class_names[top]} {row[top]:.4f}")
    assert lines[0].split(": ")[1] == lines[1].split(": ")[1]  # the PNG is three.npy's first
    exported = jaxnn_command("export", "run", "exported", tmp_path=tmp_path, sources=sources)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert (tmp_path / "exported" / "model.stablehlo").stat().st_size > 0
    description = json.loads((tmp_path / "exported" / "model.json").read_text())
    assert description["class_names"] == list(loaded.class_names)
