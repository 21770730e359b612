"""experiments.benchmark: the --quick run's JSON, and the bookkeeping behind its figures.

No timing is asserted: the figures depend on the machine and its load.
"""

import gzip
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import benchmark

REPO_ROOT = Path(__file__).resolve().parents[1]
NUMERIC_FIELDS = ("train_examples_per_s", "eval_examples_per_s", "compile_s", "peak_rss_mb")


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("benchmark") / "benchmark.json"
    command = [sys.executable, "-m", "experiments.benchmark", "--quick", "--out", str(out)]
    command += ["--frameworks", "jaxnn,flax", "--warm-cache"]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_quick_run_reports_every_workload_and_framework(quick_report):
    report, stdout = quick_report
    assert set(report["results"]) == {"mlp", "cnn"}
    for workload, by_framework in report["results"].items():
        assert set(by_framework) == {"jaxnn", "flax", "jaxnn_warm_cache"}, workload
        for framework, result in by_framework.items():
            assert "error" not in result, (workload, framework, result.get("error"))
            for field in NUMERIC_FIELDS:
                value = result[field]
                assert isinstance(value, float), (workload, framework, field, value)
                assert math.isfinite(value) and value > 0, (workload, framework, field, value)
            # --quick: random data, so no time to accuracy; warm-up + 1 measured epoch.
            assert result["time_to_accuracy_s"] is None
            assert result["epochs_to_accuracy"] is None
            assert len(result["epoch_train_times_s"]) == 2
        # jaxnn pads the last batch and trains every example; the Flax loop drops the remainder.
        assert by_framework["jaxnn"]["train_examples_per_epoch"] == 2048
        assert by_framework["jaxnn_warm_cache"]["train_examples_per_epoch"] == 2048
        assert by_framework["flax"]["train_examples_per_epoch"] == 2048 // 128 * 128
    for workload in ("mlp", "cnn"):
        ratio = report["ratios"][workload]["flax"]
        expected = (
            report["results"][workload]["jaxnn"]["train_examples_per_s"]
            / report["results"][workload]["flax"]["train_examples_per_s"]
        )
        assert ratio["train_speedup"] == pytest.approx(expected, rel=1e-12)
        assert ratio["time_to_accuracy_speedup"] is None
        assert set(report["ratios"][workload]) == {"flax"}  # the warm-cache run is not a peer
        warm = report["variant_ratios"][workload]["jaxnn_warm_cache"]["flax"]["train_speedup"]
        assert warm == pytest.approx(
            report["results"][workload]["jaxnn_warm_cache"]["train_examples_per_s"]
            / report["results"][workload]["flax"]["train_examples_per_s"],
            rel=1e-12,
        )
    assert report["machine"]["cores"] >= 1
    assert report["machine"]["versions"]["jax"]
    assert report["config"]["quick"] is True
    assert "jaxnn train x" in stdout and stdout.count("\nmlp ") == 4  # 3 rows, 1 variant line
    assert "mlp jaxnn_warm_cache against flax train x" in stdout


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


def test_read_idx_parses_the_mnist_file_format(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 0x08, 3]) + np.array([2, 3, 4], ">i4").tobytes()
    path = tmp_path / "images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + images.tobytes()))
    np.testing.assert_array_equal(benchmark._read_idx(path), images)


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
    command += ["--steps", "3", "--top", "4", "--out-dir", str(tmp_path)]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("mlp, jaxnn compiler options"), lines
    assert "ms per step" in lines[1] and "cores busy" in lines[1], lines
    ops = [line for line in lines[2:] if " ms  " in line]
    assert len(ops) == 4, lines  # --top 4, and a 3-step MLP epoch runs more ops than that
    assert any("dot_general" in line for line in ops), ops  # named from the optimised HLO
    assert list(tmp_path.joinpath("trace").rglob("*.xplane.pb"))
