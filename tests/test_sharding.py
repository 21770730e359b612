"""Data parallelism over a Mesh (8 forced host devices), 2 processes on 127.0.0.1 through
jax.distributed (gloo), and the errors: batch sizes, mesh axes, unreachable coordinator."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxnn
from jaxnn import checkpoint, sharding

sys.path.insert(0, str(Path(__file__).parent))
import distributed_worker  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "distributed_worker.py"


def run_worker(out: Path, devices: int, extra_env=None, args=()) -> subprocess.Popen:
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
        **(extra_env or {}),
    }
    for name in ("JAXNN_COORDINATOR_ADDRESS", "JAXNN_NUM_PROCESSES", "JAXNN_PROCESS_ID"):
        if extra_env is None or name not in extra_env:
            env.pop(name, None)
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(out), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen, timeout: float = 600) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]
    return output


def load(out: Path) -> dict[str, np.ndarray]:
    with np.load(out / "result.npz") as data:
        return {key: data[key] for key in data.files}


def assert_close(ours: dict, reference: dict, rtol: float = 1e-5) -> None:
    """Every array within ``rtol`` of the reference, relative to the array's largest value."""
    assert ours.keys() == reference.keys()
    worst = {}
    for key, expected in reference.items():
        got = ours[key].astype(np.float64)
        scale = max(np.abs(expected).max(), 1e-12)
        worst[key] = float(np.abs(got - expected.astype(np.float64)).max() / scale)
    bad = {k: v for k, v in worst.items() if v > rtol}
    assert not bad, bad
    # The run really trained: two epochs changed the loss and the parameters.
    assert reference["mlp/history/loss"][1] < reference["mlp/history/loss"][0]


@pytest.fixture(scope="module")
def single_device(tmp_path_factory) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("one_device")
    finish(run_worker(out, devices=1))
    assert json.loads((out / "info.json").read_text()) == {"devices": 1, "processes": 1}
    return load(out)


def test_8_devices_match_one_device(single_device, tmp_path):
    finish(run_worker(tmp_path, devices=8))
    assert json.loads((tmp_path / "info.json").read_text()) == {"devices": 8, "processes": 1}
    # MLP with dropout and CNN with BatchNorm (statistics over the global batch), a last partial
    # batch, 300 rows over 8 devices: parameters, BatchNorm statistics, histories, evaluation and
    # predictions all within 1e-5 of the single-device run.
    assert_close(load(tmp_path), single_device)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_and_their_checkpoint_restores_in_one(single_device, tmp_path):
    address = f"127.0.0.1:{free_port()}"
    processes = [
        run_worker(
            tmp_path,
            devices=2,  # 2 processes x 2 devices: a 4-device global mesh
            extra_env={
                "JAXNN_COORDINATOR_ADDRESS": address,
                "JAXNN_NUM_PROCESSES": "2",
                "JAXNN_PROCESS_ID": str(i),
            },
            args=("--checkpoint",),
        )
        for i in range(2)
    ]
    for process in processes:
        finish(process)
    assert json.loads((tmp_path / "info.json").read_text()) == {"devices": 4, "processes": 2}
    result = load(tmp_path)
    assert_close(result, single_device)

    # The checkpoint both processes wrote together reads back whole in this single process:
    # without a template, and into a one-device Trainer that then evaluates like the 2 did.
    for name, (model, shape) in distributed_worker.MODELS.items():
        variables = checkpoint.restore(tmp_path / name, "latest")
        flat = jax.tree_util.tree_flatten_with_path(variables)[0]
        assert len(flat) == sum(k.startswith(f"{name}/[") for k in result)
        for path, leaf in flat:
            np.testing.assert_array_equal(leaf, result[f"{name}/{jax.tree_util.keystr(path)}"])
        trainer = jaxnn.Trainer(
            model, optimizer=distributed_worker.OPTIMIZER, seed=distributed_worker.SEED
        )
        x_val, y_val = distributed_worker.dataset(70, shape, seed=2)
        trainer.initialize(x_val[:1], steps_per_epoch=5, epochs=2)
        with checkpoint.Checkpointer(tmp_path / name) as checkpointer:
            trainer.state, extra, step = checkpointer.restore(trainer.state)
        assert (extra, step, int(trainer.state.step)) == ({"processes": 2}, 10, 10)
        test = trainer.evaluate(x_val, y_val, batch_size=32)
        for key, value in test.items():
            np.testing.assert_allclose(value, result[f"{name}/test/{key}"], rtol=1e-6)


def test_a_missing_coordinator_fails_within_the_timeout():
    start = time.monotonic()
    with pytest.raises(sharding.DistributedInitError, match=r"nothing answered at 127\.0\.0\.1"):
        sharding.initialize_distributed(f"127.0.0.1:{free_port()}", 2, 1, timeout_s=2)
    assert time.monotonic() - start < 10


def test_distributed_settings_are_checked(monkeypatch):
    for name in ("JAXNN_COORDINATOR_ADDRESS", "JAXNN_NUM_PROCESSES", "JAXNN_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("JAXNN_DISTRIBUTED", raising=False)
    assert sharding.initialize_distributed() is False  # nothing asked: a single process
    with pytest.raises(ValueError, match=r"process_id \(\$JAXNN_PROCESS_ID\)"):
        sharding.initialize_distributed("127.0.0.1:1234", 2)
    with pytest.raises(ValueError, match=r"coordinator_address: expected 'host:port'"):
        sharding.initialize_distributed("localhost", 2, 0)
    with pytest.raises(ValueError, match=r"process_id: expected an integer in \[0, 2\)"):
        sharding.initialize_distributed("127.0.0.1:1234", 2, 2)


def test_mesh_axes_and_rows_on_one_device():
    mesh = sharding.make_mesh()
    assert dict(mesh.shape) == {"data": jax.device_count()}
    assert sharding.process_rows(10, mesh) == slice(0, 10)
    with pytest.raises(ValueError, match=r"axes: expected a 'data' axis; got \['model'\]"):
        sharding.make_mesh({"model": -1})
    with pytest.raises(ValueError, match=r"axes: .*multiply to the 1 devices; got \{'data': 2\}"):
        sharding.make_mesh({"data": 2})
    rows = sharding.global_rows(np.arange(5.0), 5, mesh)
    np.testing.assert_array_equal(rows, np.arange(5.0))
    with pytest.raises(
        ValueError, match=r"^x: expected 5 rows, rows 0:5 of 5 that process 0 of 1 holds .*; got 4$"
    ):
        sharding.global_rows(np.arange(4.0), 5, mesh)


def test_an_aligned_host_array_is_placed_without_a_copy_on_one_cpu_device():
    if jax.device_count() != 1 or jax.default_backend() != "cpu":
        pytest.skip("zero-copy placement is a single-CPU-device property")
    mesh = sharding.make_mesh()
    aligned = sharding.aligned_empty((6, 7), np.float32)
    aligned[...] = np.arange(42, dtype=np.float32).reshape(6, 7)
    assert aligned.ctypes.data % 64 == 0
    placed = sharding.global_rows(aligned, 6, mesh)
    assert placed.unsafe_buffer_pointer() == aligned.ctypes.data  # the device reads numpy's memory
    np.testing.assert_array_equal(placed, aligned)
    shifted = sharding.aligned_empty((6 * 7 + 4,), np.float32)[4:].reshape(6, 7)  # 16 bytes past
    assert shifted.ctypes.data % 64 == 16  # where numpy's own allocations start: XLA copies these
    shifted[...] = aligned
    assert sharding.global_rows(shifted, 6, mesh).unsafe_buffer_pointer() != shifted.ctypes.data


BAD_INPUT_ON_8 = """
import json, sys
import numpy as np
import jaxnn
from jaxnn import sharding
errors = {}
trainer = jaxnn.Trainer(jaxnn.MLP(features=(4,), num_outputs=2))
x, y = np.zeros((40, 3), np.float32), np.zeros(40, np.int32)
for name, call in {
    "batch": lambda: trainer.fit(x, y, batch_size=12, verbose=0),
    "mesh": lambda: sharding.make_mesh({"data": 3, "model": -1}),
}.items():
    try:
        call()
        errors[name] = None
    except ValueError as error:
        errors[name] = str(error)
trainer.fit(x, y, batch_size=16, verbose=0)  # a multiple of 8 trains
mesh = sharding.make_mesh({"data": 4, "model": 2})
rows = sharding.global_rows(x, 40, mesh)  # split 4 ways over "data", replicated over "model"
errors["rows"] = [sharding.data_size(mesh), [s.data.shape[0] for s in rows.addressable_shards]]
print(json.dumps(errors))
"""


def test_batch_sizes_that_do_not_split_over_8_devices_say_which_do():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    result = subprocess.run(
        [sys.executable, "-c", BAD_INPUT_ON_8],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    errors = json.loads(result.stdout.strip().splitlines()[-1])
    assert errors["batch"] == (
        "batch_size: 12 does not split over the 8 devices of the mesh's 'data' axis; expected a "
        "multiple of 8, such as 8 or 16"
    )
    assert (
        "axes: expected sizes >= 1 (at most one -1) that multiply to the 8 devices"
        in (errors["mesh"])
    )
    assert errors["rows"] == [4, [10] * 8]


def test_an_experiment_runs_in_two_processes_like_in_one(tmp_path):
    from tiny_data import write_idx

    sources = write_idx(tmp_path / "idx", n_train=80, n_test=24)
    flags = [
        "--config.epochs=2",
        "--config.batch_size=16",
        "--config.verbose=0",
        f"--config.dataset.source_dir={sources}",
        f"--config.dataset.data_dir={tmp_path / 'tfds'}",
        "--config.model.features=(16,)",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAXNN_")}
    env.update({"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    env["JAXNN_COMPILATION_CACHE"] = "off"  # two processes would write the same entries
    command = [sys.executable, "-m", "experiments.fashion_mnist_mlp", *flags]

    def start(workdir: Path, *extra: str) -> subprocess.Popen:
        return subprocess.Popen(
            [*command, f"--workdir={workdir}", *extra],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    finish(start(tmp_path / "one"))  # also prepares the shared tfds data_dir
    address = f"127.0.0.1:{free_port()}"
    processes = [
        start(
            tmp_path / "two",
            f"--coordinator_address={address}",
            "--num_processes=2",
            f"--process_id={i}",
        )
        for i in range(2)
    ]
    outputs = [finish(process) for process in processes]
    assert "Summary:" in outputs[0] and "Summary:" not in outputs[1]  # process 0 reports
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert (one["device_count"], one["process_count"]) == (2, 1)
    assert (two["device_count"], two["process_count"]) == (4, 2)
    for key in ("test_accuracy", "test_loss", "best_val_metric"):
        np.testing.assert_allclose(two[key], one[key], rtol=1e-5)
    rows = (tmp_path / "two" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3  # a header and one row per epoch, written once
    steps = sorted(int(p.name) for p in (tmp_path / "two" / "checkpoints").iterdir())
    assert steps == [5, 10]  # 72 training examples (8 validate) in 5 batches of 16, 2 epochs


EARLY_STOPPING_ON_8_DEVICES = """
import jax, numpy as np, jaxnn
from jaxnn import sharding
x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
y = (x[:, 0] > 0).astype(np.int32)
trainer = jaxnn.Trainer(jaxnn.MLP(features=(8,), num_outputs=2, batch_norm=True))
# Nothing beats the first epoch by 1e9: epoch 2 stops the run and restores epoch 1's weights.
stopper = jaxnn.EarlyStopping(
    "loss", mode="min", min_delta=1e9, patience=1, restore_best_weights=True
)
trainer.fit(x, y, epochs=5, batch_size=16, callbacks=[stopper], verbose=0)
assert stopper.stopped_epoch == 1, stopper.stopped_epoch
replicated = sharding.replicated(trainer.mesh)
leaves = jax.tree.leaves((trainer.state.params, trainer.state.batch_stats))
same = sum(leaf.sharding.is_equivalent_to(replicated, leaf.ndim) for leaf in leaves)
print(len(jax.devices()), same, len(leaves))
"""


def test_early_stopping_restores_the_best_weights_replicated_over_8_devices():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    env["JAX_PLATFORMS"] = "cpu"
    result = subprocess.run(
        [sys.executable, "-c", EARLY_STOPPING_ON_8_DEVICES],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    devices, replicated, leaves = map(int, result.stdout.split())
    assert devices == 8 and leaves > 0 and replicated == leaves
