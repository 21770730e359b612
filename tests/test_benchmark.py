"""experiments.benchmark: the --quick run's JSON, and the bookkeeping behind its figures.

No timing is asserted: the figures depend on the machine and its load.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments import benchmark
from experiments.benchmark import common
from experiments.benchmark import data as bench_data

REPO_ROOT = Path(__file__).resolve().parents[1]
NUMERIC_FIELDS = ("train_examples_per_s", "eval_examples_per_s", "compile_s", "peak_rss_mb")
QUICK_FRAMEWORKS = ("jaxnn", "flax", "flax_resident", "flax_scan", "jaxnn_warm_cache")


def _quick_command(
    out: Path, *args: str, env: dict | None = None
) -> tuple[dict, subprocess.CompletedProcess]:
    """``python -m experiments.benchmark --quick --out <out> *args``: its report and process."""
    command = [sys.executable, "-m", "experiments.benchmark", "--quick", "--out", str(out), *args]
    proc = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc


def _run_quick(out: Path, *args: str, env: dict | None = None) -> tuple[dict, str]:
    report, proc = _quick_command(out, *args, env=env)
    return report, proc.stdout


def _assert_measured(workload: str, framework: str, result: dict) -> None:
    assert "error" not in result and "skipped" not in result, (workload, framework, result)
    for field in NUMERIC_FIELDS:
        value = result[field]
        assert isinstance(value, float), (workload, framework, field, value)
        # Eager PyTorch compiles nothing: its compile time is clipped at 0. Neither does jaxnn
        # from a warm cache: fit reads the executables in the background before the first
        # epoch's clock starts, which can then be no slower than the next.
        eager = field == "compile_s" and framework in (
            "torch",
            "torch_channels_last",
            "jaxnn_warm_cache",
        )
        assert math.isfinite(value) and (value >= 0 if eager else value > 0), (framework, field)
    # --quick: random data, so no time to accuracy; warm-up + 1 measured epoch.
    assert result["time_to_accuracy_s"] is None
    assert result["epochs_to_accuracy"] is None
    assert len(result["epoch_train_times_s"]) == 2


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("benchmark") / "benchmark.json"
    frameworks = ",".join(f for f in QUICK_FRAMEWORKS if f != "jaxnn_warm_cache")
    return _run_quick(out, "--frameworks", frameworks, "--warm-cache")


def _scan_cnn_skipped() -> bool:
    """On XLA CPU the scanned CNN epoch is skipped, with its reason, instead of taking hours."""
    return jax.default_backend() == "cpu"


def test_quick_run_reports_every_workload_and_framework(quick_report):
    report, stdout = quick_report
    assert set(report["results"]) == {"mlp", "cnn"}
    scan_cnn_skipped = _scan_cnn_skipped()
    for workload, by_framework in report["results"].items():
        assert list(by_framework) == list(QUICK_FRAMEWORKS), workload
        for framework, result in by_framework.items():
            if workload == "cnn" and framework == "flax_scan" and scan_cnn_skipped:
                assert set(result) == {"skipped"} and "GPU" in result["skipped"], result
                continue
            _assert_measured(workload, framework, result)
        # jaxnn pads the last batch and trains every example; the Flax loops drop the remainder.
        assert by_framework["jaxnn"]["train_examples_per_epoch"] == 2048
        assert by_framework["jaxnn_warm_cache"]["train_examples_per_epoch"] == 2048
        assert by_framework["flax"]["train_examples_per_epoch"] == 2048 // 128 * 128
        assert by_framework["flax_resident"]["train_examples_per_epoch"] == 2048 // 128 * 128
    for workload in ("mlp", "cnn"):
        ratio = report["ratios"][workload]["flax"]
        expected = (
            report["results"][workload]["jaxnn"]["train_examples_per_s"]
            / report["results"][workload]["flax"]["train_examples_per_s"]
        )
        assert ratio["train_speedup"] == pytest.approx(expected, rel=1e-12)
        assert ratio["time_to_accuracy_speedup"] is None
        peers = {"flax", "flax_resident", "flax_scan"}
        if workload == "cnn" and scan_cnn_skipped:
            peers.remove("flax_scan")
        assert set(report["ratios"][workload]) == peers  # the warm-cache run is not a peer
        warm = report["variant_ratios"][workload]["jaxnn_warm_cache"]["flax"]["train_speedup"]
        assert warm == pytest.approx(
            report["results"][workload]["jaxnn_warm_cache"]["train_examples_per_s"]
            / report["results"][workload]["flax"]["train_examples_per_s"],
            rel=1e-12,
        )
    assert report["machine"]["cores"] >= 1
    assert report["machine"]["versions"]["jax"]
    assert report["config"]["quick"] is True
    assert "ratio columns: jaxnn against the row's framework" in stdout
    # 5 rows, the line against the fastest peers, the variant's line
    assert "jaxnn train x" in stdout and stdout.count("\nmlp ") == 7
    assert "cnn      flax_scan           skipped: " in stdout or not scan_cnn_skipped
    assert "mlp jaxnn_warm_cache against flax train x" in stdout


def test_quick_run_names_the_fastest_peer_of_each_workload(quick_report):
    report, stdout = quick_report
    for workload, results in report["results"].items():
        # The fastest peer leaves out the reference flax_scan; without Fashion-MNIST, no tta.
        fastest = max(("flax", "flax_resident"), key=lambda f: results[f]["train_examples_per_s"])
        assert report["fastest_peer"][workload] == {
            "train_examples_per_s": fastest,
            "time_to_accuracy_s": None,
        }
        assert report["ratios_vs_fastest"][workload] == {
            "train_speedup": report["ratios"][workload][fastest]["train_speedup"],
            "train_peer": fastest,
            "time_to_accuracy_speedup": None,
            "time_to_accuracy_peer": None,
        }
        speedup = report["ratios_vs_fastest"][workload]["train_speedup"]
        assert (
            f"{workload} jaxnn against the fastest peers: train x{speedup:.2f} against {fastest} "
            "(most train ex/s); tta: no peer has a time to accuracy"
        ) in stdout


needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="torch is not installed (.[bench])"
)


@needs_torch
def test_quick_run_measures_pytorchs_tuned_cnn(tmp_path):
    report, stdout = _run_quick(
        tmp_path / "benchmark.json", "--workloads", "cnn",
        "--frameworks", "torch_channels_last,torch_compile",
    )  # fmt: skip
    by_framework = report["results"]["cnn"]
    assert list(by_framework) == ["torch_channels_last", "torch_compile"]
    for framework, result in by_framework.items():
        _assert_measured("cnn", framework, result)
        assert result["train_examples_per_epoch"] == 2048
    assert report["ratios"] == {}  # no jaxnn in this run
    assert "cnn      torch_compile       " in stdout


@needs_torch
def test_torch_peers_that_cannot_run_or_do_not_apply_say_why(tmp_path):
    # Inductor compiles with $CXX: a compiler that is not there stands for a machine without one.
    env = {**os.environ, "CXX": str(tmp_path / "no-such-g++")}
    report, stdout = _run_quick(
        tmp_path / "benchmark.json", "--workloads", "mlp",
        "--frameworks", "torch_channels_last,torch_compile", env=env,
    )  # fmt: skip
    by_framework = report["results"]["mlp"]
    assert by_framework["torch_channels_last"] == {
        "skipped": "torch_channels_last runs the CNN only: the MLP has no convolution, so the "
        "format would only restride its 28x28x1 input and the run would be the torch row"
    }
    reason = by_framework["torch_compile"]["skipped"]
    assert reason.startswith("torch_compile cannot run here: "), reason
    assert "C++ compiler" in reason and "no-such-g++" in reason, reason
    assert "mlp      torch_compile       skipped: torch_compile cannot run here" in stdout


def test_compute_ratios_divides_throughputs_and_times():
    results = {
        "mlp": {
            "jaxnn": {"train_examples_per_s": 300.0, "time_to_accuracy_s": 10.0},
            "torch": {"train_examples_per_s": 100.0, "time_to_accuracy_s": 40.0},
            "keras": {"train_examples_per_s": 600.0, "time_to_accuracy_s": None},
            "flax": {"error": "failed"},
            "jaxnn_warm_cache": {"train_examples_per_s": 200.0, "time_to_accuracy_s": 5.0},
        }
    }
    ratios = benchmark.compute_ratios(results)
    assert ratios == {  # jaxnn's variants are not peers
        "mlp": {
            "torch": {"train_speedup": 3.0, "time_to_accuracy_speedup": 4.0},
            "keras": {"train_speedup": 0.5, "time_to_accuracy_speedup": None},
        }
    }
    assert benchmark.compute_variant_ratios(results) == {
        "mlp": {
            "jaxnn_warm_cache": {
                "torch": {"train_speedup": 2.0, "time_to_accuracy_speedup": 8.0},
                "keras": {"train_speedup": 200.0 / 600.0, "time_to_accuracy_speedup": None},
            }
        }
    }
    table = benchmark.format_variant_ratios(benchmark.compute_variant_ratios(results))
    assert "mlp jaxnn_warm_cache against torch train x2.00, tta x8.00; keras train x0.33" in table


def test_fastest_peers_pick_the_most_examples_per_s_and_the_least_time_among_peers():
    def record(examples_per_s, time_to_accuracy):
        figures = dict.fromkeys(("eval_examples_per_s", "compile_s", "peak_rss_mb"), 1.0)
        return {
            **figures,
            "train_examples_per_s": examples_per_s,
            "time_to_accuracy_s": time_to_accuracy,
            "epochs_to_accuracy": None if time_to_accuracy is None else 1,
        }

    results = {
        "mlp": {
            "jaxnn": record(300.0, 10.0),
            "flax": record(200.0, 30.0),
            "flax_resident": record(250.0, None),  # fastest training, never reached the target
            "flax_scan": record(900.0, 1.0),  # a reference: never the fastest peer
            "torch": record(100.0, 20.0),  # first to the target
            "torch_compile": {"skipped": "no C++ compiler"},
            "keras": {"error": "failed"},
            "jaxnn_warm_cache": record(1000.0, 0.5),  # a variant of jaxnn, not a peer
        },
        "cnn": {"jaxnn": record(10.0, None), "flax": record(5.0, None)},
        "skipped_only": {"jaxnn": record(1.0, 1.0), "torch": {"skipped": "why"}},
    }
    fastest = benchmark.fastest_peers(results)
    assert fastest == {
        "mlp": {"train_examples_per_s": "flax_resident", "time_to_accuracy_s": "torch"},
        "cnn": {"train_examples_per_s": "flax", "time_to_accuracy_s": None},
    }
    ratios = benchmark.compute_ratios(results)
    assert set(ratios["mlp"]) == {"flax", "flax_resident", "flax_scan", "torch"}
    assert ratios["skipped_only"] == {}
    against = benchmark.ratios_against_fastest(ratios, fastest)
    assert against == {
        "mlp": {
            "train_speedup": 300.0 / 250.0,
            "train_peer": "flax_resident",
            "time_to_accuracy_speedup": 20.0 / 10.0,
            "time_to_accuracy_peer": "torch",
        },
        "cnn": {
            "train_speedup": 2.0,
            "train_peer": "flax",
            "time_to_accuracy_speedup": None,
            "time_to_accuracy_peer": None,
        },
    }
    table = benchmark.format_table(results, ratios, None, against)
    assert (
        "mlp jaxnn against the fastest peers: train x1.20 against flax_resident (most train "
        "ex/s); tta x2.00 against torch (first to the target accuracy)"
    ) in table
    assert (
        "cnn jaxnn against the fastest peers: train x2.00 against flax (most train ex/s); tta: no "
        "peer has a time to accuracy"
    ) in table
    assert "mlp      torch_compile       skipped: no C++ compiler" in table
    assert "(fastest peers leave out the references: flax_scan)" in table


class SkippingPeer(benchmark.Peer):
    """A peer that is skipped (``reason``) or whose training raises ``error``."""

    unavailable_errors = (OSError,)

    def __init__(self, reason=None, error=None):
        super().__init__("mlp", {"x_train": np.zeros((4, 1)), "x_test": np.zeros((2, 1))})
        self.reason, self.error, self.built = reason, error, False

    def skip_reason(self):
        return self.reason

    def build(self):
        self.built = True

    def train_epoch(self):
        raise self.error


def test_a_peer_that_does_not_apply_or_cannot_run_is_a_skip_record():
    from experiments.benchmark.worker import measure_or_skip

    log = benchmark.EpochLog("mlp", False, num_epochs=2)
    peer = SkippingPeer(reason="not for the MLP")
    assert measure_or_skip("x", peer, log) == {"skipped": "not for the MLP"}
    assert not peer.built  # decided before the clock starts
    peer = SkippingPeer(error=FileNotFoundError("no compiler\nmore detail"))
    assert measure_or_skip("x", peer, log) == {
        "skipped": "x cannot run here: FileNotFoundError: no compiler"
    }
    with pytest.raises(ValueError, match="a defect"):  # any other error is a failure
        measure_or_skip("x", SkippingPeer(error=ValueError("a defect")), log)


def _flax_peers(workload: str, first: str, second: str, num_train: int = 256):
    """Two flax peers (``flax_peer.FlaxPeer`` or a ``flax_resident_peer`` class, by name) built
    alike on random data: the same seed, so the same initial state."""
    from experiments.benchmark import flax_peer, flax_resident_peer

    classes = {
        "FlaxPeer": flax_peer.FlaxPeer,
        "FlaxResidentPeer": flax_resident_peer.FlaxResidentPeer,
        "FlaxScanPeer": flax_resident_peer.FlaxScanPeer,
    }
    data = bench_data._random_data(num_train, 8)  # what --data random gives, smaller
    peers = classes[first](workload, data), classes[second](workload, data)
    for peer in peers:
        peer.build()
    return peers


def _assert_trees_close(a, b, atol: float) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=atol)


@pytest.mark.parametrize("workload", ["mlp", "cnn"])
def test_flax_resident_step_trains_as_the_flax_examples_step(workload):
    from experiments.benchmark import flax_peer, flax_resident_peer

    host, resident = _flax_peers(workload, "FlaxPeer", "FlaxResidentPeer")
    x, y = host.data["x_train"], host.data["y_train"]
    for idx in np.random.default_rng(2).permutation(len(x)).reshape(2, 128).astype(np.int32):
        host.state, loss, accuracy = flax_peer.train_step(host.state, x[idx], y[idx])
        donated = resident.state
        resident.state, resident_loss, resident_accuracy = flax_resident_peer.resident_train_step(
            resident.state, resident.x, resident.y, jax.device_put(idx)
        )
        assert abs(float(resident_loss) - float(loss)) <= 1e-6
        assert float(resident_accuracy) == float(accuracy)
        # donated: XLA reused the state's buffers for the new state
        assert all(leaf.is_deleted() for leaf in jax.tree.leaves(donated.params))
    assert int(resident.state.step) == int(host.state.step) == 2
    _assert_trees_close(resident.state.params, host.state.params, atol=1e-6)
    _assert_trees_close(resident.state.batch_stats, host.state.batch_stats, atol=1e-6)
    assert resident.test_accuracy() == host.test_accuracy()


def test_flax_scan_epoch_trains_as_the_resident_steps():
    from experiments.benchmark import flax_resident_peer

    stepped, scanned = _flax_peers("mlp", "FlaxResidentPeer", "FlaxScanPeer")
    batches = np.random.default_rng(3).permutation(256).reshape(2, 128).astype(np.int32)
    batches = jax.device_put(batches)
    losses = []
    for idx in batches:
        stepped.state, loss, _ = flax_resident_peer.resident_train_step(
            stepped.state, stepped.x, stepped.y, idx
        )
        losses.append(float(loss))
    scanned.state, scan_losses, _ = flax_resident_peer.scan_train_epoch(
        scanned.state, scanned.x, scanned.y, batches
    )
    np.testing.assert_allclose(np.asarray(scan_losses), losses, rtol=0, atol=1e-6)
    assert int(scanned.state.step) == 2
    _assert_trees_close(scanned.state.params, stepped.state.params, atol=1e-6)


def test_epoch_log_time_to_accuracy_is_the_first_epoch_reaching_the_target():
    log = benchmark.EpochLog("mlp", with_accuracy=True, num_epochs=15)
    for train_time, accuracy, elapsed in [(5.0, 0.85, 6.0), (2.0, 0.881, 8.5), (3.0, 0.87, 11.0)]:
        log.record(train_time, accuracy, elapsed)
    assert log.time_to_accuracy == 8.5
    assert log.epochs_to_accuracy == 2
    assert log.done()
    summary = log.summary(num_train=600, eval_seconds=0.5, num_test=100)
    assert summary["train_examples_per_s"] == 600 / 2.5  # median of the epochs after the first
    assert summary["compile_s"] == 5.0 - 2.5
    assert summary["eval_examples_per_s"] == 200.0


def test_epoch_log_reports_none_when_the_target_is_never_reached():
    log = benchmark.EpochLog("cnn", with_accuracy=True, num_epochs=10)
    for epoch in range(3):
        log.record(1.0, 0.90, float(epoch))
    assert not log.done()
    assert log.time_to_accuracy is None and log.epochs_to_accuracy is None


class FakeClock:
    """A perf_counter that moves only when told to."""

    def __init__(self):
        self.now = 100.0

    def perf_counter(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakePeer(benchmark.Peer):
    """Setup takes 5 s, the first epoch 6 s (compilation), later ones 2 s, a test pass 1 s."""

    def __init__(self, clock: FakeClock, accuracies: list[float]):
        super().__init__("mlp", {"x_train": np.zeros((600, 1)), "x_test": np.zeros((100, 1))})
        self.clock, self.accuracies = clock, accuracies
        self.epochs = self.test_passes = 0

    def build(self):
        self.clock.advance(5.0)

    def train_epoch(self):
        self.clock.advance(6.0 if self.epochs == 0 else 2.0)
        self.epochs += 1

    def test_accuracy(self):
        self.clock.advance(1.0)
        self.test_passes += 1
        return self.accuracies[self.epochs - 1]


@pytest.mark.parametrize(
    "accuracies, epochs, time_to_accuracy, epochs_to_accuracy",
    [
        ([0.5, 0.7, 0.881, 0.9, 0.9], 3, 5.0 + 6.0 + 2.0 + 2.0, 3),  # test passes excluded
        ([0.9, 0.95, 0.95, 0.95], 3, 5.0 + 6.0, 1),  # reached at once: still warm-up + 2 timed
        ([0.5] * 4, 4, None, None),  # never reached: every epoch of log.num_epochs
    ],
)
def test_measure_times_setup_epochs_and_evaluation_on_one_clock(
    monkeypatch, accuracies, epochs, time_to_accuracy, epochs_to_accuracy
):
    clock = FakeClock()
    monkeypatch.setattr(common, "time", clock)
    peer = FakePeer(clock, accuracies)
    result = benchmark.measure(peer, benchmark.EpochLog("mlp", True, num_epochs=4))
    assert peer.epochs == epochs
    assert result["epoch_train_times_s"] == [6.0] + [2.0] * (epochs - 1)
    assert result["test_accuracy_per_epoch"] == accuracies[:epochs]
    assert result["time_to_accuracy_s"] == time_to_accuracy
    assert result["epochs_to_accuracy"] == epochs_to_accuracy
    assert result["train_examples_per_s"] == 600 / 2.0
    assert result["compile_s"] == 6.0 - 2.0
    assert result["eval_examples_per_s"] == 100 / 1.0  # median of 3 passes after a warm-up
    assert peer.test_passes == epochs + 4


def test_measure_without_accuracy_trains_the_epochs_and_never_evaluates_between_them(
    monkeypatch,
):
    clock = FakeClock()
    monkeypatch.setattr(common, "time", clock)
    peer = FakePeer(clock, [0.5, 0.5])
    result = benchmark.measure(peer, benchmark.EpochLog("cnn", False, num_epochs=2))
    assert result["epoch_train_times_s"] == [6.0, 2.0]
    assert result["test_accuracy_per_epoch"] is None and result["time_to_accuracy_s"] is None
    assert peer.test_passes == 4  # the timed evaluation only: a warm-up and 3 passes


def test_jaxnn_callback_excludes_fits_validation_time_and_stops_by_the_shared_rule(monkeypatch):
    from experiments.benchmark import jaxnn_peer

    clock = FakeClock()
    monkeypatch.setattr(common, "time", clock)
    monkeypatch.setattr(jaxnn_peer, "time", clock)
    log = benchmark.EpochLog("mlp", True, num_epochs=15)
    log.start()
    callback = jaxnn_peer._RecordEpochs(log)
    trainer = types.SimpleNamespace(stop_training=False)
    # (seconds since the last epoch ended, train_time_s, epoch_time_s, val_accuracy)
    for step, train, epoch, accuracy in [(10, 8, 9, 0.5), (3, 2, 3, 0.9), (3, 2, 3, 0.85)]:
        clock.advance(step)
        logs = {"train_time_s": train, "epoch_time_s": epoch, "val_accuracy": accuracy}
        callback.on_epoch_end(trainer, len(log.train_times), logs)
    assert log.train_times == [8, 2, 2]
    assert log.time_to_accuracy == 13.0 - 2.0  # 13 s elapsed, 1 + 1 s of them validation
    assert log.epochs_to_accuracy == 2
    assert trainer.stop_training  # the target was reached, and warm-up + 2 epochs ran


def test_workers_data_round_trips_into_aligned_memory(tmp_path):
    arrays = {
        "x_train": np.random.default_rng(0).random((5, 28, 28, 1), dtype=np.float32),
        "y_train": np.arange(5, dtype=np.int32),
    }
    bench_data.save_arrays(arrays, tmp_path)
    read = bench_data.read_arrays(tmp_path)
    assert set(read) == set(arrays)
    for name, array in read.items():
        np.testing.assert_array_equal(array, arrays[name])
        assert array.dtype == arrays[name].dtype and array.ctypes.data % 64 == 0, name


def test_fashion_mnist_fallback_is_what_jaxnn_data_sources_reads(tmp_path, monkeypatch):
    from tiny_data import write_idx

    from jaxnn import data as jaxnn_data
    from jaxnn.data import sources

    folder = write_idx(tmp_path / "fashion_mnist", n_train=30, n_test=10)
    monkeypatch.setenv("JAXNN_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("JAXNN_NO_SYSTEM_DATA", "1")

    def unavailable(*args, **kwargs):
        raise OSError("tfds: cannot prepare")

    monkeypatch.setattr(jaxnn_data, "load", unavailable)
    raw, source = bench_data.read_fashion_mnist()
    assert source == f"fashion_mnist ({folder} IDX files)"
    arrays = bench_data.as_benchmark_arrays(raw)
    for split in ("train", "test"):
        images, labels = sources.read_idx_pair(folder, "fashion_mnist", split)
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        assert x.dtype == np.float32 and x.shape == (len(labels), 28, 28, 1)
        np.testing.assert_array_equal(x, images.astype(np.float32) / np.float32(255))
        assert y.dtype == np.int32
        np.testing.assert_array_equal(y, labels)


def test_the_package_and_the_workers_data_path_import_neither_jax_nor_jaxnn():
    # A torch or Keras worker reports its own peak RSS: jax would add hundreds of MB.
    code = (
        "import sys; import experiments.benchmark, experiments.benchmark.worker; "
        "from experiments.benchmark import data; "
        "print(sorted(m for m in ('jax', 'jaxnn', 'flax', 'optax') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]"


def test_data_benchmark_reports_pipeline_and_training_throughput():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.data_benchmark",
            "--examples=2048",
            "--cnn-examples=256",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rates = {}
    for line in result.stdout.splitlines():
        if "examples/s" in line:
            name, value = line.split(":")
            rates[name.strip()] = float(value.split()[0].replace(",", ""))
    assert set(rates) == {"batching", "batching + augmentation", "MLP training", "CNN training"}
    assert all(v > 0 and math.isfinite(v) for v in rates.values())


def test_profile_step_lists_the_ops_of_a_traced_epoch(tmp_path):
    command = [sys.executable, "-m", "experiments.profile_step", "--workload", "mlp"]
    command += ["--steps", "3", "--top", "30", "--out-dir", str(tmp_path)]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("mlp, jaxnn compiler options"), lines
    assert "ms per step" in lines[1] and "cores busy" in lines[1], lines
    ops = [line for line in lines[2:] if " ms  " in line]
    assert len(ops) == 30, lines  # --top 30, and a 3-step MLP epoch runs more ops than that
    # Named from the optimised HLO; among 30 ops even when a busy machine reorders the top few.
    assert any("dot_general" in line for line in ops), ops
    assert list(tmp_path.joinpath("trace").rglob("*.xplane.pb"))


def test_sweep_mode_races_one_sweep_against_the_same_runs_in_a_row(tmp_path):
    out = tmp_path / "sweep.json"
    args = ("--frameworks", "jaxnn", "--workloads", "mlp", "--sweep", "2")
    report, stdout = _run_quick(out, *args)
    members = report["member_sweep"]["mlp"]
    sequential, sweep = members["sequential"], members["sweep"]
    assert sequential["mode"] == "sequential" and sweep["mode"] == "sweep"
    # One Trainer run per member, one default device; the sweep on one host device per core.
    assert len(sequential["epoch_train_times_s"]) == 2 and sequential["devices"] == 1
    assert len(sweep["epoch_train_times_s"]) == 1
    cores = len(os.sched_getaffinity(0))
    assert sweep["devices"] == cores and sweep["mesh"]["member"] == math.gcd(2, cores)
    for side in (sequential, sweep):
        times = side["epoch_train_times_s"]
        steady = sum(float(np.median(t[1:])) for t in times)
        per_run = 2 if side is sweep else 1
        expected = per_run * side["train_examples_per_epoch"] * len(times) / steady
        assert side["train_examples_per_s"] == pytest.approx(expected)
    ratio = sweep["train_examples_per_s"] / sequential["train_examples_per_s"]
    assert members["throughput_ratio"] == pytest.approx(ratio)
    assert members["wall_ratio"] == pytest.approx(sequential["wall_s"] / sweep["wall_s"])
    assert "member sweep (K configs" in stdout and f"x{ratio:.2f}" in stdout


def _initial_weights_and_order(framework: str, seed: int) -> list[np.ndarray]:
    """A peer's initial weights and first epoch's data order (where the peer draws one itself),
    built by the worker's ``make_peer`` with ``spec["seed"] = seed`` on random MLP data."""
    from experiments.benchmark.worker import make_peer

    data = bench_data._random_data(256, 8)
    peer = make_peer(framework, "mlp", data, {"seed": seed})
    peer.build()
    if framework == "jaxnn":  # fit draws its data order from the Trainer's seed
        peer.trainer.initialize(data["x_train"][:1], steps_per_epoch=2)
        return [np.asarray(w) for w in jax.tree.leaves(peer.trainer.variables)]
    if framework.startswith("flax"):
        return [np.asarray(w) for w in jax.tree.leaves(peer.state.params)] + [peer.epoch_batches()]
    if framework == "torch":
        import torch

        weights = [p.detach().numpy().copy() for p in peer.model.parameters()]
        return [*weights, torch.randperm(256, generator=peer.generator).numpy()]
    return [np.asarray(w) for w in peer.model.get_weights()]  # keras


_SEEDED = ["jaxnn", "flax", "flax_resident"] + [
    name for name in ("torch", "keras") if importlib.util.find_spec(name) is not None
]


@pytest.mark.parametrize("framework", _SEEDED)
def test_seed_reaches_every_frameworks_initialisation_and_data_order(framework):
    first, again, other = (_initial_weights_and_order(framework, s) for s in (1, 1, 0))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_seed_and_repeats_flags_alternate_the_order_and_take_medians_and_paired_ratios(tmp_path):
    args = ("--workloads", "mlp", "--frameworks", "jaxnn,flax", "--seed", "3", "--repeats", "2")
    report, proc = _quick_command(tmp_path / "benchmark.json", *args)
    assert report["config"]["seed"] == 3 and report["config"]["repeats"] == 2
    assert "--seed 3 --repeats 2" in report["config"]["command"]
    # The workers ran A B, then B A.
    order = [
        line.split(" (round")[0]
        for line in proc.stderr.splitlines()
        if line.startswith("mlp/") and "of 2)" in line
    ]
    assert order == ["mlp/jaxnn", "mlp/flax", "mlp/flax", "mlp/jaxnn"]
    results = report["results"]["mlp"]
    for framework in ("jaxnn", "flax"):
        runs = results[framework]["runs"]
        assert len(runs) == 2
        for run in runs:
            _assert_measured("mlp", framework, run)
        for field in NUMERIC_FIELDS:
            expected = (runs[0][field] + runs[1][field]) / 2  # the median of two
            assert results[framework][field] == pytest.approx(expected, rel=1e-12), field
    paired = [
        jaxnn["train_examples_per_s"] / flax["train_examples_per_s"]
        for jaxnn, flax in zip(results["jaxnn"]["runs"], results["flax"]["runs"], strict=True)
    ]
    over_rounds = report["ratios_over_rounds"]["mlp"]
    assert over_rounds["rounds"] == 2 and over_rounds["train_peers"] == ["flax"] * 2
    assert over_rounds["train_speedup"]["values"] == pytest.approx(paired, rel=1e-12)
    assert over_rounds["train_speedup"]["median"] == pytest.approx(sum(paired) / 2, rel=1e-12)
    assert over_rounds["time_to_accuracy_speedup"] is None  # random data: no accuracy target
    median = over_rounds["train_speedup"]["median"]
    assert "each row: the median of 2 runs, in rounds of alternating order" in proc.stdout
    assert (
        f"mlp jaxnn against each round's fastest peers (2 rounds, frameworks alternated): train "
        f"x{median:.2f} median"
    ) in proc.stdout
    for flag, value, error in (
        ("--seed", "-1", "--seed: expected an integer >= 0; got -1"),
        ("--repeats", "0", "--repeats: expected an integer >= 1; got 0"),
    ):
        command = [sys.executable, "-m", "experiments.benchmark", "--quick", flag, value]
        proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and error in proc.stderr, proc.stderr


def test_median_record_keeps_failures_and_needs_the_target_reached_in_every_run():
    from experiments.benchmark.repeats import median_record, round_order

    assert [round_order(["a", "b", "c"], r) for r in range(3)] == [
        ["a", "b", "c"],
        ["c", "b", "a"],
        ["a", "b", "c"],
    ]
    runs = [
        {"train_examples_per_s": 4.0, "time_to_accuracy_s": 9.0, "epochs_to_accuracy": 7},
        {"train_examples_per_s": 1.0, "time_to_accuracy_s": 5.0, "epochs_to_accuracy": 6},
    ]
    record = median_record(runs)
    assert record["train_examples_per_s"] == 2.5 and record["time_to_accuracy_s"] == 7.0
    assert record["epochs_to_accuracy"] == 6.5 and record["runs"] == runs
    missed = median_record([*runs, {**runs[0], "time_to_accuracy_s": None}])
    assert missed["time_to_accuracy_s"] is None and missed["train_examples_per_s"] == 4.0
    failed = median_record([runs[0], {"error": "boom"}])
    assert failed == {"error": "boom", "runs": [runs[0], {"error": "boom"}]}
    assert median_record([{"skipped": "no GPU"}] * 2) == {"skipped": "no GPU"}
    with pytest.raises(ValueError, match="runs: expected at least one"):
        median_record([])


def test_ratios_over_rounds_pair_each_round_against_its_own_fastest_peer():
    from experiments.benchmark.repeats import median_record, ratios_over_rounds

    def run(ex_s, tta):
        return {"train_examples_per_s": ex_s, "time_to_accuracy_s": tta}

    jaxnn = [run(10.0, 5.0), run(20.0, 4.0), run(30.0, None)]
    flax = [run(8.0, 6.0), run(10.0, 6.0), run(40.0, 2.0)]
    keras = [run(9.0, 5.5), run(25.0, 8.0), run(20.0, 3.0)]
    results = {"mlp": {n: median_record(r) for n, r in (("jaxnn", jaxnn), ("flax", flax))}}
    results["mlp"]["keras"] = median_record(keras)
    results["mlp"]["flax_scan"] = median_record([run(99.0, 0.1)] * 3)  # a reference: left out
    out = ratios_over_rounds(results)["mlp"]
    assert out["train_peers"] == ["keras", "keras", "flax"]
    assert out["train_speedup"]["values"] == pytest.approx([10 / 9, 20 / 25, 30 / 40])
    assert out["train_speedup"]["median"] == pytest.approx(0.8)
    assert out["train_speedup"]["min"] == pytest.approx(0.75)
    assert out["train_speedup"]["max"] == pytest.approx(10 / 9)
    # Round 3: jaxnn missed the target, so it has no time-to-accuracy ratio.
    assert out["time_to_accuracy_peers"] == ["keras", "flax"]
    assert out["time_to_accuracy_speedup"]["values"] == pytest.approx([5.5 / 5.0, 6.0 / 4.0])
    assert out["rounds"] == 3
