"""The data layer on tiny files in the original formats, written here (no network)."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from tiny_data import IDX_FILES, make_images, write_cifar10_python, write_idx

from jaxnn import data
from jaxnn.data import DataError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No download and no system-wide data: every test says where its files are."""
    monkeypatch.setenv("JAXNN_NO_DOWNLOAD", "1")
    monkeypatch.setenv("JAXNN_NO_SYSTEM_DATA", "1")
    monkeypatch.delenv("JAXNN_DATA_DIR", raising=False)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_files_go_through_the_builder_bitwise(name, tmp_path):
    write_idx(tmp_path / "src", n_train=50, n_test=20, seed=3)
    x, y = data.load(name, "train", tmp_path / "tfds", source_dir=tmp_path / "src")
    expected_x, expected_y = make_images(50, (28, 28), seed=3)
    assert x.dtype == np.uint8 and x.shape == (50, 28, 28, 1) and y.dtype == np.int64
    np.testing.assert_array_equal(x[..., 0], expected_x)
    np.testing.assert_array_equal(y, expected_y)
    assert np.bincount(y, minlength=10).tolist() == np.bincount(expected_y, minlength=10).tolist()
    x_test, _ = data.load(name, "test", tmp_path / "tfds", source_dir=tmp_path / "src")
    assert x_test.shape == (20, 28, 28, 1)
    assert (tmp_path / "tfds" / f"jaxnn_{name}" / "1.0.0").is_dir()
    assert len(data.class_names(name)) == 10


def test_cifar10_python_archive_through_the_builder(tmp_path):
    write_cifar10_python(tmp_path / "src", per_batch=6, n_test=8)
    x, y = data.load("cifar10", "train", tmp_path / "tfds", source_dir=tmp_path / "src")
    assert x.shape == (30, 32, 32, 3) and x.dtype == np.uint8
    first, labels = make_images(6, (32, 32, 3), seed=1)  # data_batch_1 was written with seed 1
    np.testing.assert_array_equal(x[:6], first)
    np.testing.assert_array_equal(y[:6], labels)
    x_test, y_test = data.load("cifar10", "test", tmp_path / "tfds", source_dir=tmp_path / "src")
    assert x_test.shape == (8, 32, 32, 3) and data.class_names("cifar10")[0] == "airplane"


def test_cifar10_binary_layout(tmp_path):
    images, labels = make_images(7, (32, 32, 3), seed=5)
    folder = tmp_path / "src" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    record = np.concatenate(
        [labels[:, None], images.transpose(0, 3, 1, 2).reshape(7, 3072)], axis=1
    ).astype(np.uint8)
    for i in range(1, 6):
        (folder / f"data_batch_{i}.bin").write_bytes(record.tobytes())
    (folder / "test_batch.bin").write_bytes(record[:3].tobytes())
    x, y = data.load("cifar10", "train", tmp_path / "tfds", source_dir=tmp_path / "src")
    assert x.shape == (35, 32, 32, 3)
    np.testing.assert_array_equal(x[7:14], images)
    np.testing.assert_array_equal(y[:7], labels)


def test_tensorflow_is_never_imported(tmp_path):
    write_idx(tmp_path / "src", n_train=20, n_test=10)
    target, source = str(tmp_path / "tfds"), str(tmp_path / "src")
    code = (
        "import sys; from jaxnn import data; "
        f"data.load('mnist', 'train', {target!r}, source_dir={source!r}); "
        "print('tensorflow' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"


def corrupt(folder: Path, file: str, how: str) -> None:
    path = folder / file
    raw = gzip.decompress(path.read_bytes())
    if how == "truncate_gzip":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif how == "magic":
        path.write_bytes(gzip.compress(b"\x00\x00\x09\x99" + raw[4:]))
    elif how == "short_content":
        path.write_bytes(gzip.compress(raw[:-100]))


@pytest.mark.parametrize(
    "file, how, message",
    [
        (IDX_FILES["train"][0], "truncate_gzip", "corrupt or truncated gzip"),
        (IDX_FILES["train"][0], "magic", "wrong IDX magic number"),
        (IDX_FILES["train"][0], "short_content", "truncated or corrupt"),
    ],
)
def test_bad_files_are_named(file, how, message, tmp_path):
    write_idx(tmp_path / "src", n_train=20, n_test=10)
    corrupt(tmp_path / "src", file, how)
    with pytest.raises(DataError, match=rf"{file}.*{message}"):
        data.load("mnist", "train", tmp_path / "tfds", source_dir=tmp_path / "src")


def test_image_and_label_counts_must_agree(tmp_path):
    write_idx(tmp_path / "src", n_train=20, n_test=10)
    shutil.copy(tmp_path / "src" / IDX_FILES["test"][1], tmp_path / "src" / IDX_FILES["train"][1])
    with pytest.raises(DataError, match="holds 20 images but .* holds 10 labels"):
        data.load("mnist", "train", tmp_path / "tfds", source_dir=tmp_path / "src")


def test_fashion_mnist_content_checksum_is_checked_at_official_size(tmp_path):
    from jaxnn.data import sources

    folder = write_idx(tmp_path / "src", n_train=10, n_test=10)
    spec = sources.DATASETS["fashion_mnist"]
    original = dict(spec.sizes)
    spec.sizes["train"] = 10  # pretend the tiny file has the official size
    try:
        with pytest.raises(DataError, match="checksum mismatch"):
            sources.read_idx_pair(folder, "fashion_mnist", "train")
    finally:
        spec.sizes.update(original)


def test_nothing_found_lists_what_was_tried_and_the_ways(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXNN_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(DataError) as error:
        data.load("fashion_mnist", "train", tmp_path / "tfds")
    text = str(error.value)
    assert "JAXNN_DATA_DIR" in text and "disabled by JAXNN_NO_DOWNLOAD" in text
    assert "apt-get install dataset-fashion-mnist" in text and "source_dir" in text


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown dataset 'mnsit'.*'cifar10', 'fashion_mnist'"):
        data.load("mnsit", "train")


def test_damaged_prepared_data_is_rebuilt_not_read_short(tmp_path):
    write_idx(tmp_path / "src", n_train=40, n_test=10)
    kwargs = {"source_dir": tmp_path / "src"}
    data.load("mnist", "train", tmp_path / "tfds", **kwargs)
    version_dir = tmp_path / "tfds" / "jaxnn_mnist" / "1.0.0"
    shard = next(version_dir.glob("jaxnn_mnist-train.array_record-*"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 3])  # cut short
    x, _ = data.load("mnist", "train", tmp_path / "tfds", **kwargs)
    assert len(x) == 40
    # A preparation killed half-way leaves only an "incomplete" folder, which is never read.
    shutil.rmtree(version_dir)
    (tmp_path / "tfds" / "jaxnn_mnist" / "incomplete.XYZ_1.0.0").mkdir()
    x, _ = data.load("mnist", "train", tmp_path / "tfds", **kwargs)
    assert len(x) == 40


def test_validation_split_is_deterministic_and_disjoint():
    x = np.arange(100)[:, None]
    y = np.arange(100)
    a = data.train_validation_split(x, y, 0.2, seed=0)
    b = data.train_validation_split(x, y, 0.2, seed=0)
    c = data.train_validation_split(x, y, 0.2, seed=1)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)
    assert len(a[2]) == 20 and len(a[0]) == 80
    assert not set(a[1]) & set(a[3]) and set(a[1]) | set(a[3]) == set(range(100))
    assert set(a[3]) != set(c[3])
    with pytest.raises(ValueError, match=r"validation_split: expected a float in \[0, 1\)"):
        data.train_validation_split(x, y, 1.0, seed=0)


def test_standardisation_is_fitted_on_train_only():
    x, y, w = data.make_regression(n=500, n_features=10, noise=0.0, seed=0)
    np.testing.assert_allclose(x @ w, y, rtol=1e-5, atol=1e-5)  # the known signal
    splits = data.from_arrays(x, y, validation_split=0.2, test_split=0.2, seed=0)
    np.testing.assert_allclose(splits.x_train.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(splits.x_train.std(0), 1.0, atol=1e-4)
    assert not np.allclose(splits.x_test.mean(0), 0.0, atol=1e-3)  # test keeps its own shift
    assert len(splits.x_train) == 300 and len(splits.x_val) == 100 and len(splits.x_test) == 100


def test_csv_loader(tmp_path):
    x, y, _ = data.make_classification(n=40, n_features=3, seed=1)
    path = tmp_path / "d.csv"
    rows = ["a,b,target,c"] + [f"{r[0]},{r[1]},{t},{r[2]}" for r, t in zip(x, y, strict=True)]
    path.write_text("\n".join(rows))
    splits = data.load_csv(path, target="target", test_split=0.25, standardize=False, seed=0)
    assert splits.x_train.shape == (30, 3) and set(np.unique(splits.y_train)) <= {0.0, 1.0}
    with pytest.raises(ValueError, match=r"target: no column 'label'.*\['a', 'b', 'target', 'c'\]"):
        data.load_csv(path, target="label")


def test_normalisation():
    images = np.stack([np.full((2, 2, 3), v, np.uint8) for v in (0, 255)])
    scaled = data.to_float(images)
    assert scaled.dtype == np.float32 and scaled.min() == 0.0 and scaled.max() == 1.0
    mean, std = data.channel_stats(scaled)
    np.testing.assert_allclose(mean, [0.5] * 3)
    np.testing.assert_allclose(
        data.normalize(scaled, mean, std).std(axis=(0, 1, 2)), 1.0, rtol=1e-6
    )


def test_augmentation_is_per_example_deterministic_and_correct():
    rng = np.random.default_rng(0)
    image = rng.random((8, 8, 1)).astype(np.float32)
    batch = np.stack([image, image, image, image])
    key = jax.random.key(1)
    assert data.augment(key, batch) is batch  # every option off: identity
    flipped = np.asarray(jax.jit(lambda k, b: data.augment(k, b, hflip=True))(key, batch))
    for out in flipped:  # each example is either itself or its mirror image
        assert np.array_equal(out, image) or np.array_equal(out, image[:, ::-1])
    many = np.asarray(data.augment(key, np.stack([image] * 32), crop_padding=2))
    padded = np.pad(image, ((2, 2), (2, 2), (0, 0)))
    windows = [padded[dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)]
    for out in many:  # a shifted window of the zero-padded input
        assert any(np.array_equal(out, w) for w in windows)
    assert len({out.tobytes() for out in many}) > 5  # different examples, different crops
    np.testing.assert_array_equal(many, data.augment(key, np.stack([image] * 32), crop_padding=2))
    other = np.asarray(data.augment(jax.random.key(2), np.stack([image] * 32), crop_padding=2))
    assert not np.array_equal(many, other)
    rotated = data.augment(key, batch, rotation=30.0, brightness=0.1, contrast=0.2)
    assert rotated.shape == batch.shape and rotated.dtype == batch.dtype
    assert np.isfinite(np.asarray(rotated)).all()


@pytest.mark.slow
def test_real_fashion_mnist_from_debian(tmp_path, monkeypatch):
    """Needs `apt-get install dataset-fashion-mnist`; times the first and a later load."""
    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("dataset-fashion-mnist is not installed")
    monkeypatch.delenv("JAXNN_NO_SYSTEM_DATA")
    start = time.perf_counter()
    x, y = data.load("fashion_mnist", "train", tmp_path / "tfds")
    first = time.perf_counter() - start
    start = time.perf_counter()
    x_test, _ = data.load("fashion_mnist", "test", tmp_path / "tfds")
    later = time.perf_counter() - start
    assert x.shape == (60000, 28, 28, 1) and len(x_test) == 10000
    assert np.bincount(y).tolist() == [6000] * 10
    print(f"first preparation + load: {first:.1f} s; later load of test: {later:.2f} s")
