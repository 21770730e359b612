"""jaxnn.data.sources: parsing the original files, the errors that name them, finding them."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import re
import shutil
import struct
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from tiny_data import IDX_FILES, make_images, write_cifar10_python, write_idx

from jaxnn import data
from jaxnn.data import DataError, sources


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("JAXNN_NO_DOWNLOAD", "1")
    monkeypatch.setenv("JAXNN_NO_SYSTEM_DATA", "1")
    monkeypatch.delenv("JAXNN_DATA_DIR", raising=False)


def write_idx_file(path: Path, magic: int, shape: tuple[int, ...], values: np.ndarray) -> None:
    header = struct.pack(f">I{len(shape)}I", magic, *shape)
    path.write_bytes(gzip.compress(header + np.asarray(values, np.uint8).tobytes()))


# ------------------------------------------------------------------------------------- IDX
def test_idx_pair_reads_what_was_written(tmp_path):
    folder = write_idx(tmp_path, n_train=30, n_test=10, seed=2)
    images, labels = sources.read_idx_pair(folder, "mnist", "train")
    expected_images, expected_labels = make_images(30, (28, 28), seed=2)
    assert images.shape == (30, 28, 28, 1) and images.dtype == np.uint8
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(images[..., 0], expected_images)
    np.testing.assert_array_equal(labels, expected_labels)


def corrupt(path: Path, how: str) -> None:
    raw = gzip.decompress(path.read_bytes())
    if how == "truncate_gzip":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "not_gzip":
        path.write_bytes(b"<html>404 Not Found</html>")
    elif how == "magic":
        path.write_bytes(gzip.compress(b"\x00\x00\x09\x99" + raw[4:]))
    elif how == "short_content":
        path.write_bytes(gzip.compress(raw[:-100]))
    elif how == "header_only":
        path.write_bytes(gzip.compress(raw[:6]))


@pytest.mark.parametrize(
    "split, which, how, message",
    [
        ("train", 0, "truncate_gzip", "corrupt or truncated gzip"),
        ("train", 0, "not_gzip", "corrupt or truncated gzip"),
        ("train", 0, "magic", r"wrong IDX magic number 0x00000999; expected 0x00000803"),
        ("test", 1, "magic", r"wrong IDX magic number 0x00000999; expected 0x00000801"),
        (
            "train",
            0,
            "short_content",
            r"IDX header promises shape \(20, 28, 28\) \(15696 bytes\) but",
        ),
        ("test", 1, "header_only", "truncated IDX file"),
    ],
)
def test_bad_idx_files_are_named_through_load(split, which, how, message, tmp_path):
    write_idx(tmp_path / "src", n_train=20, n_test=10)
    file = IDX_FILES[split][which]
    corrupt(tmp_path / "src" / file, how)
    with pytest.raises(DataError, match=rf"{re.escape(str(tmp_path / 'src' / file))}: {message}"):
        data.load("mnist", "train", tmp_path / "tfds", source_dir=tmp_path / "src")
    # Nothing half-prepared is left behind to be read later.
    assert not (tmp_path / "tfds" / "jaxnn_mnist").exists() or not any(
        (tmp_path / "tfds" / "jaxnn_mnist").iterdir()
    )


def test_wrong_image_dimensions(tmp_path):
    write_idx(tmp_path, n_train=5, n_test=5)
    write_idx_file(
        tmp_path / IDX_FILES["train"][0], 0x803, (5, 32, 32), np.zeros((5, 32, 32), np.uint8)
    )
    with pytest.raises(
        DataError, match=r"train-images-idx3-ubyte.gz: images of 32x32 pixels; expected 28x28"
    ):
        sources.read_idx_pair(tmp_path, "fashion_mnist", "train")


def test_image_and_label_counts_must_agree(tmp_path):
    write_idx(tmp_path / "src", n_train=20, n_test=10)
    shutil.copy(tmp_path / "src" / IDX_FILES["test"][1], tmp_path / "src" / IDX_FILES["train"][1])
    with pytest.raises(
        DataError,
        match=r"train-images-idx3-ubyte.gz holds 20 images but .*"
        r"train-labels-idx1-ubyte.gz holds 10 labels",
    ):
        data.load("mnist", "train", tmp_path / "tfds", source_dir=tmp_path / "src")


def test_labels_must_be_classes(tmp_path):
    write_idx(tmp_path, n_train=5, n_test=5)
    write_idx_file(tmp_path / IDX_FILES["test"][1], 0x801, (5,), [0, 1, 2, 10, 4])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: label 10 outside \[0, 10\)"):
        sources.read_idx_pair(tmp_path, "mnist", "test")


def test_content_checksum_is_checked_at_the_official_size(tmp_path, monkeypatch):
    folder = write_idx(tmp_path, n_train=10, n_test=10)
    spec = sources.DATASETS["fashion_mnist"]
    sources.read_idx_pair(folder, "fashion_mnist", "train")  # tiny files: structure only
    monkeypatch.setitem(spec.sizes, "train", 10)  # pretend the tiny files have the official size
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: checksum mismatch"):
        sources.read_idx_pair(folder, "fashion_mnist", "train")
    # With the decompressed content's own hash registered, the same files pass.
    for file in IDX_FILES["train"]:
        digest = hashlib.sha256(gzip.decompress((folder / file).read_bytes()))
        monkeypatch.setitem(spec.content_sha256, file, digest.hexdigest())
    images, _ = sources.read_idx_pair(folder, "fashion_mnist", "train")
    assert len(images) == 10


def test_content_checksums_do_not_depend_on_the_gzip_bytes(tmp_path, monkeypatch):
    """Debian's gzip bytes differ from upstream's: only the decompressed content is hashed."""
    folder = write_idx(tmp_path, n_train=10, n_test=10)
    spec = sources.DATASETS["fashion_mnist"]
    monkeypatch.setitem(spec.sizes, "train", 10)
    for file in IDX_FILES["train"]:
        content = gzip.decompress((folder / file).read_bytes())
        digest = hashlib.sha256(content).hexdigest()
        monkeypatch.setitem(spec.content_sha256, file, digest)
        (folder / file).write_bytes(gzip.compress(content, compresslevel=1, mtime=12345))
    assert len(sources.read_idx_pair(folder, "fashion_mnist", "train")[0]) == 10


# ----------------------------------------------------------------------------------- CIFAR
def tar_members(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))


def python_batch(n: int, seed: int = 0) -> bytes:
    images, labels = make_images(n, (32, 32, 3), seed=seed)
    rows = images.transpose(0, 3, 1, 2).reshape(n, 3072)
    return pickle.dumps({b"data": rows, b"labels": [int(v) for v in labels]})


def test_cifar10_truncated_archive(tmp_path):
    write_cifar10_python(tmp_path, per_batch=2, n_test=2)
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(archive.read_bytes()[:-200])
    with pytest.raises(DataError, match=r"cifar-10-python.tar.gz: corrupt or truncated archive"):
        sources.read_cifar10(archive)


def test_cifar10_missing_batch(tmp_path):
    members = {f"data_batch_{i}": python_batch(2) for i in (1, 2, 3, 5)}
    members["test_batch"] = python_batch(2)
    tar_members(tmp_path / "cifar-10-python.tar.gz", members)
    with pytest.raises(DataError, match=r"cifar-10-python.tar.gz: missing data_batch_4"):
        sources.read_cifar10(tmp_path / "cifar-10-python.tar.gz")


def test_cifar10_wrong_layouts(tmp_path):
    members = {f"data_batch_{i}": python_batch(2) for i in range(1, 6)}
    members["test_batch"] = pickle.dumps(
        {b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}
    )
    tar_members(tmp_path / "cifar-10-python.tar.gz", members)
    with pytest.raises(
        DataError, match=r"test_batch holds data of shape \(2, 1024\).*expected \(N, 3072\)"
    ):
        sources.read_cifar10(tmp_path / "cifar-10-python.tar.gz")
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        (folder / name).write_bytes(bytes(3073 * 2))
    (folder / "data_batch_3.bin").write_bytes(bytes(3073 * 2 - 1))
    with pytest.raises(DataError, match=r"data_batch_3.bin has 6145 bytes, not a multiple of 3073"):
        sources.read_cifar10(folder)
    (folder / "data_batch_3.bin").write_bytes(bytes([11]) + bytes(3072))
    with pytest.raises(DataError, match=r"cifar-10-batches-bin: train labels outside \[0, 10\)"):
        sources.read_cifar10(folder)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar10_batches_cannot_run_code(tmp_path):
    members = {f"data_batch_{i}": python_batch(2) for i in range(1, 6)}
    members["test_batch"] = pickle.dumps({b"data": _Evil(), b"labels": []})
    tar_members(tmp_path / "cifar-10-python.tar.gz", members)
    with pytest.raises(DataError, match=r"test_batch is corrupt .*forbidden global"):
        sources.read_cifar10(tmp_path / "cifar-10-python.tar.gz")


# --------------------------------------------------------------------------- finding files
def test_source_dir_comes_before_jaxnn_data_dir_and_subfolders_count(tmp_path, monkeypatch):
    write_idx(tmp_path / "given", n_train=5, n_test=5)
    write_idx(tmp_path / "env" / "mnist", n_train=5, n_test=5)
    monkeypatch.setenv("JAXNN_DATA_DIR", str(tmp_path / "env"))
    folder, tried = sources.find_source_dir("mnist", tmp_path / "given")
    assert folder == tmp_path / "given" and tried == []
    folder, tried = sources.find_source_dir("mnist", tmp_path / "other")
    assert folder == tmp_path / "env" / "mnist"
    assert tried == [
        f"source_dir: {tmp_path / 'other'} does not exist",
        f"source_dir: {tmp_path / 'other' / 'mnist'} does not exist",
        f"JAXNN_DATA_DIR: {tmp_path / 'env'} lacks " + ", ".join(sources.source_files("mnist")),
    ]


def test_partial_idx_folder_names_the_missing_files(tmp_path):
    write_idx(tmp_path, n_train=5, n_test=5)
    (tmp_path / IDX_FILES["test"][1]).unlink()
    folder, tried = sources.find_source_dir("mnist", tmp_path)
    assert folder is None
    assert tried[0] == f"source_dir: {tmp_path} lacks t10k-labels-idx1-ubyte.gz"


def test_debian_folder_found_by_path_then_dpkg(tmp_path, monkeypatch):
    write_idx(tmp_path / "debian", n_train=5, n_test=5)
    monkeypatch.delenv("JAXNN_NO_SYSTEM_DATA")
    monkeypatch.setitem(sources.DEBIAN_DIRS, "fashion_mnist", tmp_path / "debian")
    assert sources.find_source_dir("fashion_mnist")[0] == tmp_path / "debian"
    assert sources.find_source_dir("mnist")[0] is None  # Debian packages Fashion-MNIST only

    monkeypatch.setitem(sources.DEBIAN_DIRS, "fashion_mnist", tmp_path / "not-there")
    listing = "/.\n/usr\n" + "".join(f"{tmp_path / 'debian' / f}\n" for f in IDX_FILES["train"])
    asked = []

    def fake_run(command, **kwargs):
        asked.append(command)
        return subprocess.CompletedProcess(command, 0, stdout=listing, stderr="")

    monkeypatch.setattr(sources.subprocess, "run", fake_run)
    assert sources.find_source_dir("fashion_mnist")[0] == tmp_path / "debian"
    assert asked == [["dpkg", "-L", "dataset-fashion-mnist"]]

    monkeypatch.setenv("JAXNN_NO_SYSTEM_DATA", "1")
    folder, tried = sources.find_source_dir("fashion_mnist")
    assert folder is None and "disabled by JAXNN_NO_SYSTEM_DATA" in tried[-1]
