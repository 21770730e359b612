"""jaxnn.data.load through the real tfds builders, on tiny files in the original formats.

No network: downloads are disabled or replaced by local copies.

Parsing errors are in test_data_sources.py, augmentation in test_data_augment.py, splits and
tabular data in test_data_tabular.py.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from tiny_data import IDX_FILES, make_images, write_cifar10_python, write_idx

from jaxnn import data
from jaxnn.data import DataError, builders, records, sources

REPO = Path(__file__).resolve().parents[1]
VERSION = str(builders.JaxnnMnist.VERSION)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No download and no system-wide data: every test says where its files are."""
    monkeypatch.setenv("JAXNN_NO_DOWNLOAD", "1")
    monkeypatch.setenv("JAXNN_NO_SYSTEM_DATA", "1")
    monkeypatch.delenv("JAXNN_DATA_DIR", raising=False)
    monkeypatch.delenv("JAXNN_TFDS_DIR", raising=False)


def expected_idx(n_train: int, n_test: int, seed: int):
    """What tiny_data.write_idx writes: (images, labels) per split."""
    return {
        "train": make_images(n_train, (28, 28), seed=seed),
        "test": make_images(n_test, (28, 28), seed=seed + 1),
    }


def cifar_batches(per_batch: int, n_test: int):
    """The CIFAR-10 batches that tiny_data.write_cifar10_python writes, in NHWC."""
    train = [make_images(per_batch, (32, 32, 3), seed=i) for i in range(1, 6)]
    return {
        "train": (
            np.concatenate([b[0] for b in train]),
            np.concatenate([b[1] for b in train]),
        ),
        "test": make_images(n_test, (32, 32, 3), seed=99),
    }


def write_cifar10(folder: Path, form: str, per_batch: int = 6, n_test: int = 8) -> None:
    """CIFAR-10 in one of its four forms: python/binary, archive/extracted folder."""
    if form.startswith("python"):
        write_cifar10_python(folder, per_batch=per_batch, n_test=n_test)
        if form == "python-folder":
            with tarfile.open(folder / "cifar-10-python.tar.gz") as tar:
                tar.extractall(folder, filter="data")
            (folder / "cifar-10-python.tar.gz").unlink()
        return
    batches = cifar_batches(per_batch, n_test)
    members = {}
    for split, names in (
        ("train", [f"data_batch_{i}.bin" for i in range(1, 6)]),
        ("test", ["test_batch.bin"]),
    ):
        images, labels = batches[split]
        rows = np.concatenate(
            [labels[:, None], images.transpose(0, 3, 1, 2).reshape(len(images), 3072)], axis=1
        ).astype(np.uint8)
        for i, name in enumerate(names):
            size = len(rows) // len(names)
            members[name] = rows[i * size : (i + 1) * size].tobytes()
    members["batches.meta.txt"] = "\n".join(data.class_names("cifar10")).encode()
    folder.mkdir(parents=True, exist_ok=True)
    if form == "binary-folder":
        (folder / "cifar-10-batches-bin").mkdir()
        for name, raw in members.items():
            (folder / "cifar-10-batches-bin" / name).write_bytes(raw)
        return
    with tarfile.open(folder / "cifar-10-binary.tar.gz", "w:gz") as tar:
        for name, raw in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_files_go_through_the_builder_bitwise(name, tmp_path):
    write_idx(tmp_path / "src", n_train=60, n_test=20, seed=3)
    expected = expected_idx(60, 20, seed=3)
    for split, n in (("train", 60), ("test", 20)):
        x, y = data.load(name, split, tmp_path / "tfds", source_dir=tmp_path / "src")
        assert x.dtype == np.uint8 and x.shape == (n, 28, 28, 1)
        assert y.dtype == np.int64 and y.shape == (n,)
        np.testing.assert_array_equal(x[..., 0], expected[split][0])
        np.testing.assert_array_equal(y, expected[split][1])
        assert np.bincount(y, minlength=10).tolist() == [n // 10] * 10
    version_dir = tmp_path / "tfds" / f"jaxnn_{name}" / VERSION
    info = json.loads((version_dir / "dataset_info.json").read_text())
    assert info["fileFormat"] == "array_record"
    assert {s["name"]: int(s["shardLengths"][0]) for s in info["splits"]} == {
        "train": 60,
        "test": 20,
    }
    assert sorted(p.name.split(".")[0] for p in version_dir.glob("*.array_record-*")) == [
        f"jaxnn_{name}-test",
        f"jaxnn_{name}-train",
    ]
    builder = builders.BUILDERS[name](data_dir=str(tmp_path / "tfds"))
    assert builder.info.metadata["class_names"] == list(data.class_names(name))
    assert data.class_names("fashion_mnist")[9] == "Ankle boot"


@pytest.mark.parametrize(
    "form", ["python-archive", "python-folder", "binary-archive", "binary-folder"]
)
def test_cifar10_every_form_goes_through_the_builder_bitwise(form, tmp_path):
    write_cifar10(tmp_path / "src", form, per_batch=6, n_test=8)
    expected = cifar_batches(6, 8)
    for split, n in (("train", 30), ("test", 8)):
        x, y = data.load("cifar10", split, tmp_path / "tfds", source_dir=tmp_path / "src")
        assert x.dtype == np.uint8 and x.shape == (n, 32, 32, 3) and y.dtype == np.int64
        np.testing.assert_array_equal(x, expected[split][0])
        np.testing.assert_array_equal(y, expected[split][1])
    assert data.class_names("cifar10")[0] == "airplane"


def test_tensorflow_is_never_imported(tmp_path):
    write_idx(tmp_path / "src", n_train=20, n_test=10)
    write_cifar10_python(tmp_path / "src", per_batch=2, n_test=2)
    target, source = str(tmp_path / "tfds"), str(tmp_path / "src")
    code = (
        "import sys; from jaxnn import data\n"
        f"for name in ('mnist', 'cifar10'):\n"
        f"    data.prepare(name, {target!r}, source_dir={source!r})\n"
        f"    x, y = data.load(name, 'train', {target!r})\n"
        "    print('RESULT', name, len(x))\n"
        "print('RESULT', 'tensorflow' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = [line for line in out.stdout.splitlines() if line.startswith("RESULT")]
    assert results == ["RESULT mnist 20", "RESULT cifar10 10", "RESULT False"]


def test_a_prepared_data_dir_needs_no_source(tmp_path):
    write_idx(tmp_path / "src", n_train=30, n_test=10)
    data.prepare("mnist", tmp_path / "tfds", source_dir=tmp_path / "src")
    shutil.rmtree(tmp_path / "src")
    x, _ = data.load("mnist", "train", tmp_path / "tfds")
    assert len(x) == 30


def test_default_data_dir_is_jaxnn_tfds_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXNN_TFDS_DIR", str(tmp_path / "tfds"))
    assert data.default_data_dir() == str(tmp_path / "tfds")
    write_idx(tmp_path / "src", n_train=10, n_test=10)
    data.load("mnist", "test", source_dir=tmp_path / "src")
    assert (tmp_path / "tfds" / "jaxnn_mnist" / VERSION / "dataset_info.json").is_file()
    monkeypatch.delenv("JAXNN_TFDS_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    assert data.default_data_dir() == str(tmp_path / "home" / "tensorflow_datasets")


# ------------------------------------------------------------------------------ bulk decoding
def test_bulk_decoding_matches_tfds_record_by_record(tmp_path, monkeypatch):
    write_cifar10_python(tmp_path / "src", per_batch=4, n_test=4)
    builder = data.prepare("cifar10", tmp_path / "tfds", source_dir=tmp_path / "src")
    from array_record.python.array_record_module import ArrayRecordReader

    (path,) = builder.info.splits["train"].filepaths
    raw = ArrayRecordReader(str(path)).read_all()
    calls = []

    def decode_one(record):
        calls.append(1)
        return builder.info.features.deserialize_example_np(record)

    images, labels = records.decode_examples(raw, (32, 32, 3), decode_one)
    assert len(calls) == 2  # the fast path: only the first and last record cross-checked
    slow = [builder.info.features.deserialize_example_np(r) for r in raw]
    np.testing.assert_array_equal(images, np.stack([e["image"] for e in slow]))
    np.testing.assert_array_equal(labels, [e["label"] for e in slow])


def test_bulk_decoding_falls_back_for_other_layouts():
    """tfds' default int64-list encoding has records of varying length: per-record decoding."""
    from tensorflow_datasets.core import example_serializer

    features = tfds.features.FeaturesDict(
        {
            "image": tfds.features.Tensor(shape=(4, 4, 1), dtype=np.uint8),
            "label": tfds.features.Tensor(shape=(), dtype=np.int64),
        }
    )
    serializer = example_serializer.ExampleSerializer(features.get_serialized_info())
    images, labels = make_images(10, (4, 4, 1), seed=0)
    raw = [
        serializer.serialize_example(features.encode_example({"image": i, "label": int(c)}))
        for i, c in zip(images, labels, strict=True)
    ]
    assert len({len(r) for r in raw}) > 1
    assert records.example_layout(raw[0])["label"][0] == "int64"
    decoded_images, decoded_labels = records.decode_examples(
        raw, (4, 4, 1), features.deserialize_example_np
    )
    np.testing.assert_array_equal(decoded_images, images)
    np.testing.assert_array_equal(decoded_labels, labels)


def test_bulk_decoding_rejects_a_record_with_another_structure(tmp_path):
    """One record whose structure bytes differ from the others' sends the split to the fallback."""
    write_idx(tmp_path / "src", n_train=10, n_test=10)
    builder = data.prepare("mnist", tmp_path / "tfds", source_dir=tmp_path / "src")
    from array_record.python.array_record_module import ArrayRecordReader

    (path,) = builder.info.splits["train"].filepaths
    raw = ArrayRecordReader(str(path)).read_all()
    decode = builder.info.features.deserialize_example_np
    assert records._fast_decode(raw, (28, 28, 1)) is not None
    renamed = [raw[0]] + [r.replace(b"label", b"lab3l") for r in raw[1:]]
    assert records._fast_decode(renamed, (28, 28, 1)) is None
    # A label of 300 takes a two-byte varint: other lengths, so the exact per-record fallback.
    from tensorflow_datasets.core import example_serializer

    features = builder.info.features
    serializer = example_serializer.ExampleSerializer(features.get_serialized_info())
    image = np.full((28, 28, 1), 7, np.uint8)
    odd = serializer.serialize_example(features.encode_example({"image": image, "label": 300}))
    calls = []

    def decode_one(record):
        calls.append(1)
        return decode(record)

    images, labels = records.decode_examples(raw + [odd], (28, 28, 1), decode_one)
    assert len(calls) == 11
    assert labels[-1] == 300 and (images[-1] == 7).all()
    np.testing.assert_array_equal(labels[:10], expected_idx(10, 10, seed=0)["train"][1])


# ------------------------------------------------------------------- half-prepared, damaged
def prepared(tmp_path, n_train=40):
    write_idx(tmp_path / "src", n_train=n_train, n_test=10)
    data.load("mnist", "train", tmp_path / "tfds", source_dir=tmp_path / "src")
    return tmp_path / "tfds" / "jaxnn_mnist" / VERSION


def test_a_killed_preparation_is_never_read(tmp_path):
    """tfds prepares into incomplete.XXXXXX_<version> and renames it only when complete."""
    version_dir = prepared(tmp_path)
    partial = version_dir.parent / f"incomplete.ABC123_{VERSION}"
    shutil.copytree(version_dir, partial)
    shard = next(partial.glob("jaxnn_mnist-train.array_record-*"))
    shard.write_bytes(shard.read_bytes()[:100])
    shutil.rmtree(version_dir)  # killed before the rename: only the incomplete folder is left
    x, _ = data.load("mnist", "train", tmp_path / "tfds", source_dir=tmp_path / "src")
    assert len(x) == 40
    assert (version_dir / "dataset_info.json").is_file()


def test_a_version_dir_without_dataset_info_is_prepared_again(tmp_path):
    version_dir = prepared(tmp_path)
    (version_dir / "dataset_info.json").unlink()
    x, _ = data.load("mnist", "train", tmp_path / "tfds", source_dir=tmp_path / "src")
    assert len(x) == 40


@pytest.mark.parametrize("damage", ["truncate", "delete", "fewer_records"])
def test_damaged_shards_are_rebuilt_not_read_short(damage, tmp_path):
    from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

    version_dir = prepared(tmp_path)
    shard = next(version_dir.glob("jaxnn_mnist-train.array_record-*"))
    if damage == "truncate":
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 3])
    elif damage == "delete":
        shard.unlink()
    else:  # a valid array_record file holding only 25 of the 40 records
        kept = ArrayRecordReader(str(shard)).read_all()[:25]
        writer = ArrayRecordWriter(str(shard), "group_size:1")
        for record in kept:
            writer.write(record)
        writer.close()
        assert ArrayRecordReader(str(shard)).num_records() == 25
    x, y = data.load("mnist", "train", tmp_path / "tfds", source_dir=tmp_path / "src")
    assert len(x) == 40
    np.testing.assert_array_equal(y, expected_idx(40, 10, seed=0)["train"][1])


def test_damaged_data_without_a_source_is_an_error_not_a_short_read(tmp_path):
    version_dir = prepared(tmp_path)
    shutil.rmtree(tmp_path / "src")
    (next(version_dir.glob("jaxnn_mnist-train.array_record-*"))).unlink()
    with pytest.raises(DataError, match=r"(?s)missing train shard.*could not be rebuilt.*Tried"):
        data.load("mnist", "train", tmp_path / "tfds")


# ----------------------------------------------------------------------------- wrong requests
def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(
        ValueError, match=r"name: unknown dataset 'mnsit'.*'cifar10', 'fashion_mnist', 'mnist'"
    ):
        data.load("mnsit", "train")
    with pytest.raises(ValueError, match=r"name: unknown dataset 'svhn'"):
        data.class_names("svhn")
    with pytest.raises(ValueError, match=r"split: expected one of \['train', 'test'\]; got 'val'"):
        data.load("mnist", "val")


def test_nothing_found_lists_what_was_tried_and_the_ways(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("JAXNN_DATA_DIR", str(empty))
    with pytest.raises(DataError) as error:
        data.load("fashion_mnist", "train", tmp_path / "tfds", source_dir=tmp_path / "nowhere")
    text = str(error.value)
    assert f"source_dir: {tmp_path / 'nowhere'} does not exist" in text
    assert f"JAXNN_DATA_DIR: {empty} lacks train-images-idx3-ubyte.gz" in text
    assert "Debian package dataset-fashion-mnist" in text and "JAXNN_NO_SYSTEM_DATA" in text
    assert "download: disabled by JAXNN_NO_DOWNLOAD" in text
    assert f"already prepared data in {tmp_path / 'tfds' / 'jaxnn_fashion_mnist'}" in text
    assert "apt-get install dataset-fashion-mnist" in text and "data_dir=" in text
    assert "t10k-labels-idx1-ubyte.gz" in text  # the expected file names
    assert not (tmp_path / "tfds" / "jaxnn_fashion_mnist" / VERSION).exists()
    assert not list((tmp_path / "tfds" / "jaxnn_fashion_mnist").glob("incomplete*"))


def test_download_false_is_reported(tmp_path, monkeypatch):
    monkeypatch.delenv("JAXNN_NO_DOWNLOAD")
    with pytest.raises(
        DataError, match=r"(?s)download: disabled by download=False.*cifar-10-python"
    ):
        data.load("cifar10", "test", tmp_path / "tfds", download=False)


# ---------------------------------------------------------------------------------- download
def test_download_checksums_are_registered_and_agree_with_tfds():
    from tensorflow_datasets.core.download import checksums

    registered = checksums.get_all_url_infos()  # tfds' own lists for its stock builders
    for name, builder in builders.BUILDERS.items():
        infos = builder.url_infos
        assert len(infos) == len(sources.DATASETS[name].download) > 0
        for url, info in infos.items():
            assert url.startswith(sources.DATASETS[name].url)
            assert registered[url] == info  # size and sha256


def test_download_path_reads_the_downloaded_files(tmp_path, monkeypatch):
    """The download branch, with the download manager's fetch replaced by local copies."""
    monkeypatch.delenv("JAXNN_NO_DOWNLOAD")
    write_idx(tmp_path / "fetched", n_train=20, n_test=10, seed=7)
    asked = {}

    def fake_download(self, url_or_urls):
        asked.update(url_or_urls)
        return {file: tmp_path / "fetched" / file for file in url_or_urls}

    monkeypatch.setattr(tfds.download.DownloadManager, "download", fake_download)
    x, y = data.load("mnist", "train", tmp_path / "tfds")
    assert asked == {
        f: sources.DATASETS["mnist"].url + f
        for f in sources.IDX_FILES["train"] + sources.IDX_FILES["test"]
    }
    np.testing.assert_array_equal(y, expected_idx(20, 10, seed=7)["train"][1])


def test_debian_folder_is_detected(tmp_path, monkeypatch):
    write_idx(tmp_path / "debian", n_train=20, n_test=10, seed=5)
    monkeypatch.setitem(sources.DEBIAN_DIRS, "fashion_mnist", tmp_path / "debian")
    monkeypatch.delenv("JAXNN_NO_SYSTEM_DATA")
    x, y = data.load("fashion_mnist", "test", tmp_path / "tfds")
    np.testing.assert_array_equal(y, expected_idx(20, 10, seed=5)["test"][1])


# ------------------------------------------------------------------------------- real data
@pytest.mark.slow
def test_real_fashion_mnist_from_debian(tmp_path, monkeypatch):
    """Needs `apt-get install dataset-fashion-mnist`."""
    if not sources.DEBIAN_DIRS["fashion_mnist"].is_dir():
        pytest.skip("dataset-fashion-mnist is not installed")
    monkeypatch.delenv("JAXNN_NO_SYSTEM_DATA")
    x, y = data.load("fashion_mnist", "train", tmp_path / "tfds")
    x_test, y_test = data.load("fashion_mnist", "test", tmp_path / "tfds")
    assert x.shape == (60000, 28, 28, 1) and x.dtype == np.uint8 and y.dtype == np.int64
    assert x_test.shape == (10000, 28, 28, 1)
    assert np.bincount(y).tolist() == [6000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10
    # Bitwise the Debian files' content (which passed the official content checksums).
    expected, labels = sources.read_idx_pair(
        sources.DEBIAN_DIRS["fashion_mnist"], "fashion_mnist", "test"
    )
    np.testing.assert_array_equal(x_test, expected)
    np.testing.assert_array_equal(y_test, labels)
    assert IDX_FILES["train"][0] in sources.DATASETS["fashion_mnist"].content_sha256


# ------------------------------------------------------------------- a run's dataset block
def dataset_config(**overrides) -> ml_collections.ConfigDict:
    """A run config's ``dataset`` block (the keys jaxnn.run's base_config sets)."""
    cfg = {
        "name": "mnist",
        "data_dir": "",
        "source_dir": "",
        "validation_split": 0.1,
        "normalization": "scale",
        "limit_train": 0,
        "limit_test": 0,
        "num_examples": 2000,
        "num_features": 10,
        "noise": 0.1,
        "test_split": 0.2,
        "csv_path": "",
        "target": "target",
    }
    return ml_collections.ConfigDict({**cfg, **overrides})


def test_load_splits_images_limit_scale_and_carve_validation_out_of_train(tmp_path):
    write_idx(tmp_path / "src", n_train=60, n_test=20, seed=3)
    dirs = {"data_dir": str(tmp_path / "tfds"), "source_dir": str(tmp_path / "src")}
    cfg = dataset_config(validation_split=0.2, limit_train=50, limit_test=10, **dirs)
    splits = data.load_splits(cfg, seed=4)
    images, labels = expected_idx(60, 20, seed=3)["train"]
    x = images[:50, :, :, None].astype(np.float32) / np.float32(255)
    expected = data.train_validation_split(x, labels[:50].astype(np.int64), 0.2, seed=4)
    got = (splits.x_train, splits.y_train, splits.x_val, splits.y_val)
    for array, want in zip(got, expected, strict=True):
        np.testing.assert_array_equal(array, want)
    assert splits.x_train.shape == (40, 28, 28, 1) and splits.x_val.shape == (10, 28, 28, 1)
    assert splits.x_train.dtype == np.float32 and splits.y_train.dtype == np.int64
    test_images, test_labels = expected_idx(60, 20, seed=3)["test"]
    np.testing.assert_array_equal(splits.x_test[..., 0] * 255, test_images[:10])
    np.testing.assert_array_equal(splits.y_test, test_labels[:10])
    assert splits.class_names == data.class_names("mnist") and len(splits.class_names) == 10
    assert splits.mean is None and splits.std is None
    whole = data.load_splits(dataset_config(validation_split=0.0, **dirs), seed=4)
    assert whole.x_val is None and whole.y_val is None
    assert len(whole.x_train) == 60 and len(whole.x_test) == 20


def test_load_splits_standardize_uses_the_training_split_statistics(tmp_path):
    write_idx(tmp_path / "src", n_train=40, n_test=10, seed=1)
    dirs = {"data_dir": str(tmp_path / "tfds"), "source_dir": str(tmp_path / "src")}
    scaled = data.load_splits(dataset_config(validation_split=0.25, **dirs), seed=0)
    splits = data.load_splits(
        dataset_config(validation_split=0.25, normalization="standardize", **dirs), seed=0
    )
    mean, std = data.channel_stats(scaled.x_train)
    np.testing.assert_array_equal(splits.mean, mean)
    np.testing.assert_array_equal(splits.std, std)
    for part in ("x_train", "x_val", "x_test"):
        want = data.normalize(getattr(scaled, part), mean, std)
        np.testing.assert_array_equal(getattr(splits, part), want)
    np.testing.assert_array_equal(splits.y_val, scaled.y_val)
    with pytest.raises(
        ValueError,
        match=r"dataset.normalization: expected 'scale' or 'standardize'; got 'minmax'",
    ):
        data.load_splits(dataset_config(normalization="minmax", **dirs), seed=0)


def test_load_splits_generated_tabular_data():
    cfg = dataset_config(name="regression", num_examples=200, num_features=3, noise=0.5)
    splits = data.load_splits(cfg, seed=2)
    x, y, _ = data.make_regression(n=200, n_features=3, noise=0.5, seed=2)
    expected = data.from_arrays(x, y, validation_split=0.1, test_split=0.2, seed=2)
    assert splits.x_train.shape == (140, 3) and len(splits.x_val) == 20 and len(splits.x_test) == 40
    for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "mean", "std"):
        np.testing.assert_array_equal(getattr(splits, field), getattr(expected, field))
    assert splits.class_names == ()
    binary = data.load_splits(
        dataset_config(name="binary", num_examples=100, num_features=4, validation_split=0.0),
        seed=2,
    )
    assert binary.class_names == ("0", "1") and binary.x_val is None
    assert binary.x_train.shape == (80, 4) and binary.x_test.shape == (20, 4)
    x, y, _ = data.make_classification(n=100, n_features=4, seed=2)
    order = np.random.default_rng(2).permutation(100)
    np.testing.assert_array_equal(binary.y_test, y[order[:20]])
    assert set(np.unique(binary.y_train)) == {0.0, 1.0}


def test_load_splits_csv_and_unknown_names(tmp_path):
    path = tmp_path / "d.csv"
    rows = ["a,b,label"] + [f"{i},{i * i},{i % 3}" for i in range(20)]
    path.write_text("\n".join(rows) + "\n")
    cfg = dataset_config(
        name="csv", csv_path=str(path), target="label", validation_split=0.25, test_split=0.25
    )
    splits = data.load_splits(cfg, seed=0)
    expected = data.load_csv(path, target="label", validation_split=0.25, test_split=0.25, seed=0)
    assert splits.x_train.shape == (10, 2) and len(splits.x_val) == 5 and len(splits.x_test) == 5
    np.testing.assert_array_equal(splits.y_val, expected.y_val)
    assert splits.class_names == ()
    with pytest.raises(
        ValueError,
        match=r"dataset.name: unknown dataset 'mnsit'; expected one of \['mnist', "
        r"'fashion_mnist', 'cifar10', 'image_folder', 'regression', 'binary', 'csv'\]",
    ):
        data.load_splits(dataset_config(name="mnsit"), seed=0)


def test_importing_preprocess_or_the_package_leaves_tensorflow_datasets_out():
    """The trainer imports jaxnn.data.preprocess: the tfds builders load only on first use."""
    code = (
        "import sys\n"
        "import jaxnn.data.preprocess\n"
        "print('RESULT', 'tensorflow_datasets' in sys.modules)\n"
        "from jaxnn import data\n"
        "from jaxnn.data import AugmentConfig, Splits, load_splits, train_validation_split\n"
        "print('RESULT', 'tensorflow_datasets' in sys.modules)\n"
        "from jaxnn.data import load\n"
        "print('RESULT', 'tensorflow_datasets' in sys.modules, load is data.builders.load)\n"
        "print('RESULT', all(getattr(data, name) is not None for name in data.__all__))\n"
        "print('RESULT', sorted(set(data.__all__) - set(dir(data))))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = [line for line in out.stdout.splitlines() if line.startswith("RESULT")]
    assert results == [
        "RESULT False",
        "RESULT False",
        "RESULT True True",
        "RESULT True",
        "RESULT []",
    ]
