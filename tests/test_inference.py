"""jaxnn.load / LoadedModel / export on tiny real runs, and the Trainer's variables setter."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from tiny_data import write_idx

import jaxnn
from jaxnn import data, inference, report
from jaxnn import run as run_lib
from jaxnn.losses import get as get_loss

REPO = Path(__file__).resolve().parents[1]


def _experiment(name: str):
    sys.path.insert(0, str(REPO))
    try:
        return __import__(f"experiments.{name}", fromlist=["get_config"]).get_config()
    finally:
        sys.path.remove(str(REPO))


def _binary_run(tmp_path_factory, label_smoothing: float = 0.0):
    config = _experiment("binary")
    config.epochs = 1
    config.batch_size = 16
    config.verbose = 0
    config.dataset.num_examples = 200
    config.model.features = (8,)
    config.label_smoothing = label_smoothing
    workdir = tmp_path_factory.mktemp("binary_run")
    summary = run_lib.run(config, workdir)
    return config, workdir, summary


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory):
    return _binary_run(tmp_path_factory)


@pytest.fixture(scope="module")
def smoothed_binary_run(tmp_path_factory):
    """The binary run with label_smoothing: its test_loss is the smoothed loss."""
    return _binary_run(tmp_path_factory, label_smoothing=0.2)


def _cnn_run(tmp_path_factory, name: str, **model):
    root = tmp_path_factory.mktemp(name)
    config = _experiment("mnist_cnn")
    config.epochs = 1
    config.batch_size = 16
    config.verbose = 0
    config.dataset.source_dir = str(write_idx(root / "idx", n_train=80, n_test=24))
    config.dataset.data_dir = str(root / "tfds")
    config.dataset.normalization = "standardize"
    config.model.filters = (4, 8)
    config.model.dense = (16,)
    config.model.update(model)
    summary = run_lib.run(config, root / "workdir")
    return config, root / "workdir", summary


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    """A tiny MNIST CNN with BatchNorm (batch_stats) and standardised inputs (mean/std)."""
    return _cnn_run(tmp_path_factory, "cnn_run")


@pytest.fixture(scope="module")
def flipped_cnn_run(tmp_path_factory):
    """The CNN run with test-time flips: its test metrics average each image and its mirror."""
    return _cnn_run(tmp_path_factory, "flipped_cnn_run", test_time_hflip=True)


# ------------------------------------------------------------------------------ load
@pytest.mark.parametrize("run", ["binary_run", "cnn_run", "smoothed_binary_run", "flipped_cnn_run"])
def test_load_rebuilds_the_runs_model_and_its_test_metrics(run, request):
    config, workdir, summary = request.getfixturevalue(run)
    loaded = jaxnn.load(workdir)
    assert isinstance(loaded, jaxnn.LoadedModel)
    assert loaded.loss is get_loss(config.loss, label_smoothing=config.label_smoothing)
    # One epoch: the best checkpoint is the run's final state, which the summary measured.
    assert report.params_checksum(loaded.variables["params"]) == summary["params_checksum"]
    splits = data.load_splits(config.dataset, config.seed)
    assert loaded.input_shape == splits.x_test.shape[1:]
    test = loaded.evaluate(splits.x_test, splits.y_test)
    assert test == {k: summary[f"test_{k}"] for k in test}  # the run's Trainer.evaluate, exactly
    probabilities = loaded.predict(splits.x_test)
    labels = loaded.classes(splits.x_test)
    if loaded.loss.task == "binary":
        assert probabilities.shape == (len(splits.x_test), 1)
        assert loaded.class_names == ("0", "1")
        np.testing.assert_array_equal(labels, probabilities[:, 0] > 0.5)
    else:
        assert probabilities.shape == (len(splits.x_test), 10)
        assert loaded.class_names == tuple(str(i) for i in range(10))
        assert "batch_stats" in loaded.variables
        np.testing.assert_array_equal(labels, probabilities.argmax(1))
    accuracy = np.mean(labels == splits.y_test.reshape(-1))
    np.testing.assert_allclose(accuracy, summary["test_accuracy"], rtol=1e-6)


def test_a_run_with_test_time_flips_predicts_the_mean_of_each_image_and_its_mirror(
    flipped_cnn_run,
):
    config, workdir, summary = flipped_cnn_run
    loaded = jaxnn.load(workdir)
    assert loaded.model.test_time_hflip is True
    plain = dataclasses.replace(loaded, model=loaded.model.clone(test_time_hflip=False))
    splits = data.load_splits(config.dataset, config.seed)
    x = splits.x_test
    expected = (plain.predict(x) + plain.predict(x[:, :, ::-1])) / 2
    np.testing.assert_allclose(loaded.predict(x), expected, atol=1e-6)
    accuracy = np.mean(expected.argmax(1) == splits.y_test.reshape(-1))
    np.testing.assert_allclose(summary["test_accuracy"], accuracy, rtol=1e-6)


def test_loaded_predict_is_trainer_predict_bit_for_bit(binary_run):
    """A Trainer trained directly and a LoadedModel given its variables predict the same bits."""
    config, _, _ = binary_run
    splits = data.load_splits(config.dataset, config.seed)
    model = run_lib.build_model(config.model, 1)
    trainer = jaxnn.Trainer(model, loss=config.loss, metrics=tuple(config.metrics), seed=3)
    trainer.fit(splits.x_train, splits.y_train, epochs=2, batch_size=16, verbose=0)
    loaded = inference.LoadedModel(
        model=model,
        variables=jax.tree.map(np.asarray, trainer.variables),
        loss=trainer.loss,
        class_names=("0", "1"),
        input_shape=splits.x_train.shape[1:],
        config=config.to_dict(),
    )
    expected = trainer.predict(splits.x_test)
    np.testing.assert_array_equal(loaded.predict(splits.x_test), expected)
    # Same batches, same bits; another batch size may round differently (XLA picks kernels by
    # shape: on the AMD EPYC VM 2 of 40 outputs differed in the last bit).
    np.testing.assert_array_equal(
        loaded.predict(splits.x_test, batch_size=7), trainer.predict(splits.x_test, batch_size=7)
    )
    np.testing.assert_allclose(loaded.predict(splits.x_test, batch_size=7), expected, rtol=1e-6)
    assert loaded.evaluate(splits.x_test, splits.y_test) == trainer.evaluate(
        splits.x_test, splits.y_test
    )


def test_the_latest_checkpoint_loads_too(binary_run):
    _, workdir, _ = binary_run
    best = jaxnn.load(workdir)
    latest = jaxnn.load(workdir, "latest")
    x = np.random.default_rng(0).normal(size=(5, 20)).astype(np.float32)
    np.testing.assert_array_equal(best.predict(x), latest.predict(x))


def test_missing_workdir_config_or_checkpoint_says_what_to_run(binary_run, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=r"workdir: expected a run's folder.*nowhere"):
        jaxnn.load(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"config\.json.*jaxnn\.run\.run"):
        jaxnn.load(empty)
    (empty / "config.json").write_text((binary_run[1] / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match=r"checkpoints.*train or resume it"):
        jaxnn.load(empty)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint 12345"):
        jaxnn.load(binary_run[1], 12345)


def test_a_config_that_does_not_fit_the_checkpoint_is_refused(binary_run, tmp_path):
    _, workdir, _ = binary_run
    loaded = jaxnn.load(workdir)
    with pytest.raises(
        ValueError,
        match=r"variables\['params'\]\['Dense_0'\]\['bias'\]: "
        r"expected float32\[9\]; got float32\[8\]",
    ):
        inference.LoadedModel(
            model=jaxnn.MLP(features=(9,), num_outputs=1),
            variables=loaded.variables,
            loss=loaded.loss,
            class_names=(),
            input_shape=loaded.input_shape,
            config=loaded.config,
        )


def test_classes_of_a_regression_model_is_an_error():
    model = jaxnn.MLP(features=(4,), num_outputs=1)
    variables = model.init(jax.random.key(0), np.zeros((1, 3), np.float32), train=False)
    loaded = inference.LoadedModel(
        model=model,
        variables=variables,
        loss=get_loss("mse"),
        class_names=(),
        input_shape=(3,),
        config={"loss": "mse", "metrics": ["mae"], "seed": 0},
    )
    x = np.ones((2, 3), np.float32)
    expected = model.apply(variables, x, train=False)
    np.testing.assert_allclose(loaded.predict(x), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="classes: expected a classifier; got a regression"):
        loaded.classes(x)


# ------------------------------------------------------------------------ variables setter
def _initialised(batch_norm: bool = True) -> jaxnn.Trainer:
    trainer = jaxnn.Trainer(jaxnn.MLP(features=(8,), num_outputs=3, batch_norm=batch_norm))
    trainer.initialize(np.zeros((1, 5), np.float32), steps_per_epoch=1)
    return trainer


def test_variables_setter_round_trips_bitwise_and_keeps_the_optimizer_state():
    trainer = _initialised()
    rng = np.random.default_rng(0)
    new = jax.tree.map(
        lambda a: rng.normal(size=a.shape).astype(np.float32), jax.device_get(trainer.variables)
    )
    opt_state, step = trainer.state.opt_state, trainer.state.step
    shardings = [leaf.sharding for leaf in jax.tree.leaves(trainer.variables)]
    trainer.variables = new
    got = jax.device_get(trainer.variables)
    assert jax.tree.structure(got) == jax.tree.structure(new)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(new), strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert trainer.state.opt_state is opt_state and trainer.state.step is step
    # Placed like the live leaves (replicated over the Trainer's mesh).
    assert [leaf.sharding for leaf in jax.tree.leaves(trainer.variables)] == shardings


def test_variables_without_batch_stats_fit_a_model_without_batch_norm():
    trainer = _initialised(batch_norm=False)
    params = jax.tree.map(lambda a: np.asarray(a) * 2, trainer.variables["params"])
    trainer.variables = {"params": params}
    assert set(trainer.variables) == {"params"}
    np.testing.assert_array_equal(
        trainer.variables["params"]["Dense_0"]["kernel"], params["Dense_0"]["kernel"]
    )


def test_variables_setter_names_the_first_mismatch():
    trainer = _initialised()
    good = jax.device_get(trainer.variables)
    wrong_shape = jax.tree.map(lambda a: a, good)
    wrong_shape["params"]["Dense_1"]["kernel"] = np.zeros((8, 2), np.float32)
    with pytest.raises(
        ValueError,
        match=r"variables\['params'\]\['Dense_1'\]\['kernel'\]: expected float32\[8, 3\]; "
        r"got float32\[8, 2\]",
    ):
        trainer.variables = wrong_shape
    wrong_dtype = jax.tree.map(lambda a: a, good)
    wrong_dtype["params"]["Dense_1"]["bias"] = good["params"]["Dense_1"]["bias"].astype(np.float64)
    with pytest.raises(
        ValueError, match=r"\['Dense_1'\]\['bias'\]: expected float32\[3\]; got float64\[3\]"
    ):
        trainer.variables = wrong_dtype
    with pytest.raises(ValueError, match=r"variables\['batch_stats'\].*got nothing"):
        trainer.variables = {"params": good["params"]}
    extra = jax.tree.map(lambda a: a, good)
    extra["params"]["Dense_9"] = {"bias": np.zeros(3, np.float32)}
    with pytest.raises(ValueError, match=r"\['Dense_9'\]\['bias'\]: expected nothing"):
        trainer.variables = extra
    with pytest.raises(ValueError, match=r"variables: expected the keys"):
        trainer.variables = {**good, "cache": {}}
    np.testing.assert_array_equal(
        trainer.variables["params"]["Dense_1"]["kernel"], good["params"]["Dense_1"]["kernel"]
    )


def test_variables_setter_needs_the_state():
    trainer = jaxnn.Trainer(jaxnn.MLP(features=(8,), num_outputs=3))
    with pytest.raises(RuntimeError, match=r"initialize\(.*\) or fit\(\)"):
        trainer.variables = {"params": {}}


# ------------------------------------------------------------------------------ export
# Runs in a fresh interpreter that has jax and numpy only: the exported file is the whole model.
_CONSUMER = """
import json, sys
from pathlib import Path
import jax, numpy as np
assert "jaxnn" not in sys.modules
out = Path(sys.argv[1])
meta = json.loads((out / "model.json").read_text())
exported = jax.export.deserialize(bytearray((out / meta["file"]).read_bytes()))
raw = np.load(out / "raw.npy")
pre = meta["preprocessing"]
x = raw.astype(np.float32)
if "scale" in pre:
    x = x / np.float32(255)
if "mean" in pre:
    x = (x - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
assert list(x.shape[1:]) == meta["input"]["shape"][1:]
np.save(out / "outputs.npy", np.asarray(exported.call(x)))
np.save(out / "outputs_3.npy", np.asarray(exported.call(x[:3])))  # the batch is symbolic
assert "jaxnn" not in sys.modules
"""


def _run_consumer(out: Path) -> tuple[np.ndarray, np.ndarray]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", _CONSUMER, str(out)], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return np.load(out / "outputs.npy"), np.load(out / "outputs_3.npy")


def test_export_runs_without_jaxnn_and_predicts_as_load(binary_run, tmp_path):
    config, workdir, _ = binary_run
    out = inference.export(workdir, tmp_path / "exported")
    meta = json.loads((out / "model.json").read_text())
    assert meta["input"] == {"shape": [None, 20], "dtype": "float32", "preprocessed": True}
    assert meta["output"]["shape"] == [None, 1] and meta["output"]["kind"] == "probabilities"
    assert meta["class_names"] == ["0", "1"] and meta["platforms"] == ["cpu", "cuda"]
    splits = data.load_splits(config.dataset, config.seed)
    np.testing.assert_array_equal(
        np.asarray(meta["preprocessing"]["mean"], np.float32), splits.mean
    )
    np.testing.assert_array_equal(np.asarray(meta["preprocessing"]["std"], np.float32), splits.std)
    # The raw features of the test split: undo the standardisation the run applied.
    raw = splits.x_test * splits.std + splits.mean
    np.save(out / "raw.npy", raw)
    outputs, outputs_3 = _run_consumer(out)
    x = (raw.astype(np.float32) - splits.mean) / splits.std
    expected = jaxnn.load(workdir).predict(x)
    np.testing.assert_allclose(outputs, expected, rtol=1e-6)
    np.testing.assert_allclose(outputs_3, expected[:3], rtol=1e-6)


def test_export_of_a_cnn_takes_raw_images_through_model_json(cnn_run, tmp_path):
    config, workdir, _ = cnn_run
    loaded = jaxnn.load(workdir)
    out = inference.export(loaded, tmp_path / "exported", platforms=("cpu",))
    meta = json.loads((out / "model.json").read_text())
    assert meta["input"]["shape"] == [None, 28, 28, 1]
    assert meta["preprocessing"]["scale"] == 1 / 255
    assert meta["preprocessing"]["normalization"] == "standardize"
    assert meta["class_names"] == [str(i) for i in range(10)]
    raw, _ = data.load(
        "mnist", "test", data_dir=config.dataset.data_dir, source_dir=config.dataset.source_dir
    )
    np.save(out / "raw.npy", raw)
    outputs, outputs_3 = _run_consumer(out)
    splits = data.load_splits(config.dataset, config.seed)  # what the run's model saw
    expected = loaded.predict(splits.x_test)
    np.testing.assert_allclose(outputs, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(outputs_3, expected[:3], rtol=1e-6, atol=1e-7)
