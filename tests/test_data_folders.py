"""jaxnn.data.load_image_folder on tiny PNG/JPEG folders written with Pillow: arrays, labels,
splits by seed, grayscale and resizing, every error, the decoded-image cache, and the
``image_folder`` dataset of a run config."""

from __future__ import annotations

import os
from pathlib import Path

import ml_collections
import numpy as np
import pytest
from PIL import Image

from jaxnn import data
from jaxnn.data import folders, splits

CLASSES = ("cat", "ant", "dog")  # written unsorted; labels follow the sorted names


def write_folder(root: Path, *, mode: str = "RGB", n: int = 5, size=(8, 8), seed: int = 0):
    """3 classes × ``n`` PNG images of ``size`` (height, width); returns the uint8 arrays
    ``(N, H, W, C)`` and labels in the loader's order (sorted classes, then file names)."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1}[mode]
    images, labels = [], []
    for label, name in enumerate(sorted(CLASSES)):
        (root / name).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (*size, channels), dtype=np.uint8)
            image = pixels[..., 0] if mode == "L" else pixels
            Image.fromarray(image, mode).save(root / name / f"img{i}.png")
            images.append(pixels)
            labels.append(label)
    return np.stack(images), np.asarray(labels, np.int64)


def expected_splits(images, labels, validation_split, test_split, seed):
    """The documented formula, computed here independently of the loader."""
    n = len(images)
    order = np.random.default_rng(seed).permutation(n)
    num_test = int(round(n * test_split))
    test, rest = np.sort(order[:num_test]), np.sort(order[num_test:])
    val_order = np.random.default_rng(seed).permutation(len(rest))
    num_val = int(round(len(rest) * validation_split))
    val, train = rest[np.sort(val_order[:num_val])], rest[np.sort(val_order[num_val:])]
    as_float = lambda rows: images[rows].astype(np.float32) / np.float32(255)  # noqa: E731
    return {
        "x_train": as_float(train),
        "y_train": labels[train],
        "x_val": as_float(val),
        "y_val": labels[val],
        "x_test": as_float(test),
        "y_test": labels[test],
    }


def assert_splits_equal(got, want: dict):
    for field, value in want.items():
        np.testing.assert_array_equal(getattr(got, field), value, err_msg=field)
        assert getattr(got, field).dtype == value.dtype, field


# ------------------------------------------------------------------------ arrays and splits
def test_rgb_folder_shapes_labels_class_names_and_the_documented_split(tmp_path):
    images, labels = write_folder(tmp_path / "d")
    got = data.load_image_folder(tmp_path / "d", seed=3)
    assert got.class_names == ("ant", "cat", "dog")
    # 15 images: round(1.5) = 2 test, round(13 * 0.1) = 1 validation, 12 train
    assert got.x_train.shape == (12, 8, 8, 3) and got.x_val.shape == (1, 8, 8, 3)
    assert got.x_test.shape == (2, 8, 8, 3)
    assert got.x_train.dtype == np.float32 and got.y_train.dtype == np.int64
    assert got.mean is None and got.std is None
    assert_splits_equal(got, expected_splits(images, labels, 0.1, 0.1, seed=3))
    # every image exactly once, and the labels' counts per class
    assert np.bincount(np.concatenate([got.y_train, got.y_val, got.y_test])).tolist() == [5, 5, 5]
    assert 0.0 <= got.x_train.min() and got.x_train.max() <= 1.0
    assert got.x_train.ctypes.data % 64 == 0  # to_float's aligned memory


def test_splits_are_determined_by_the_seed(tmp_path):
    write_folder(tmp_path / "d")
    kwargs = {"validation_split": 0.2, "test_split": 0.2, "cache_dir": tmp_path / "c"}
    first = data.load_image_folder(tmp_path / "d", seed=7, **kwargs)
    again = data.load_image_folder(tmp_path / "d", seed=7, **kwargs)
    other = data.load_image_folder(tmp_path / "d", seed=8, **kwargs)
    for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(first, field), getattr(again, field))
    assert len(first.x_test) == len(other.x_test) == 3 and len(first.x_val) == 2
    assert not np.array_equal(first.x_test, other.x_test)


def test_no_validation_or_test_split(tmp_path):
    images, labels = write_folder(tmp_path / "d")
    got = data.load_image_folder(tmp_path / "d", validation_split=0.0, test_split=0.0)
    assert got.x_val is None and got.y_val is None
    assert got.x_test.shape == (0, 8, 8, 3) and got.y_test.shape == (0,)
    np.testing.assert_array_equal(got.x_train, images.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(got.y_train, labels)


# ------------------------------------------------------------------- channels and resizing
def test_an_all_grayscale_folder_gives_one_channel(tmp_path):
    images, labels = write_folder(tmp_path / "g", mode="L")
    got = data.load_image_folder(tmp_path / "g", validation_split=0.0, test_split=0.0)
    assert got.x_train.shape == (15, 8, 8, 1)
    np.testing.assert_array_equal(got.x_train, images.astype(np.float32) / np.float32(255))
    rgb = data.load_image_folder(
        tmp_path / "g", grayscale=False, validation_split=0.0, test_split=0
    )
    assert rgb.x_train.shape == (15, 8, 8, 3)
    np.testing.assert_array_equal(rgb.x_train, np.repeat(got.x_train, 3, axis=-1))


def test_grayscale_true_converts_rgb_and_one_rgb_image_makes_the_folder_rgb(tmp_path):
    images, _ = write_folder(tmp_path / "d")
    got = data.load_image_folder(tmp_path / "d", grayscale=True, validation_split=0, test_split=0)
    assert got.x_train.shape == (15, 8, 8, 1)
    want = [np.asarray(Image.fromarray(image).convert("L")) for image in images]
    np.testing.assert_array_equal(np.round(got.x_train[..., 0] * 255), np.stack(want))
    write_folder(tmp_path / "mixed", mode="L")
    Image.fromarray(images[0]).save(tmp_path / "mixed" / "dog" / "colour.png")
    mixed = data.load_image_folder(tmp_path / "mixed", validation_split=0, test_split=0)
    assert mixed.x_train.shape == (16, 8, 8, 3)


def test_image_size_resizes_with_pillow_bilinear(tmp_path):
    images, _ = write_folder(tmp_path / "d")
    got = data.load_image_folder(
        tmp_path / "d", image_size=(4, 6), validation_split=0, test_split=0
    )
    assert got.x_train.shape == (15, 4, 6, 3)
    # Pillow takes (width, height)
    want = [
        np.asarray(Image.fromarray(im).resize((6, 4), Image.Resampling.BILINEAR)) for im in images
    ]
    np.testing.assert_array_equal(np.round(got.x_train * 255), np.stack(want))


def test_images_of_different_sizes_need_image_size(tmp_path):
    write_folder(tmp_path / "d")
    odd = tmp_path / "d" / "dog" / "wide.png"
    Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(odd)
    first = tmp_path / "d" / "ant" / "img0.png"
    with pytest.raises(ValueError) as error:
        data.load_image_folder(tmp_path / "d")
    assert str(error.value) == (
        "image_size: expected every image to have the same size when image_size is None (or "
        f"pass image_size=(height, width)); got 8x8 (height x width) for {str(first)!r} and "
        f"8x12 (height x width) for {str(odd)!r}"
    )
    got = data.load_image_folder(tmp_path / "d", image_size=(8, 8), test_split=0)
    assert got.x_train.shape[1:] == (8, 8, 3) and len(got.x_train) + len(got.x_val) == 16


def test_jpeg_any_case_extension_and_other_files_ignored(tmp_path):
    images, _ = write_folder(tmp_path / "d")
    jpeg = tmp_path / "d" / "ant" / "photo.JPG"
    Image.fromarray(images[0]).save(jpeg, format="JPEG")
    Image.fromarray(images[1]).save(tmp_path / "d" / "cat" / "z.jpeg", format="JPEG")
    (tmp_path / "d" / "ant" / "notes.txt").write_text("not an image")
    (tmp_path / "d" / "ant" / ".hidden.png").write_bytes(b"not decoded")
    (tmp_path / "d" / ".thumbnails").mkdir()  # hidden: not a class
    Image.fromarray(images[2]).save(tmp_path / "d" / "loose.png")  # not in a class folder
    x, y, class_names = data.read_image_folder(tmp_path / "d")
    assert class_names == ("ant", "cat", "dog") and x.shape == (17, 8, 8, 3)
    assert np.bincount(y).tolist() == [6, 6, 5]
    # files sorted by name within a class: img0..img4 then photo.JPG
    np.testing.assert_array_equal(x[5], np.asarray(Image.open(jpeg).convert("RGB")))
    np.testing.assert_array_equal(x[:5], images[:5])


# ------------------------------------------------------------------------------- errors
def test_errors_name_the_argument_and_the_folder(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(ValueError) as error:
        data.load_image_folder(missing)
    assert str(error.value) == (
        f"path: expected a folder of class folders; got {str(missing)!r}, not found"
    )
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"path: expected a folder of class folders; got .*a file"):
        data.load_image_folder(tmp_path / "file.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError) as error:
        data.load_image_folder(tmp_path / "empty")
    assert str(error.value) == (
        "path: expected at least 2 class folders (one per class) in "
        f"{str(tmp_path / 'empty')!r}; got none"
    )
    (tmp_path / "empty" / "only").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "empty" / "only" / "a.png")
    with pytest.raises(ValueError, match=r"expected at least 2 class folders .*; got 1 \(only\)$"):
        data.load_image_folder(tmp_path / "empty")
    (tmp_path / "empty" / "blank").mkdir()
    (tmp_path / "empty" / "blank" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError) as error:
        data.load_image_folder(tmp_path / "empty")
    assert str(error.value) == (
        "class folder 'blank': expected .png, .jpg or .jpeg images in "
        f"{str(tmp_path / 'empty' / 'blank')!r}; got none"
    )


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_file_that_cannot_be_decoded_is_named(tmp_path, damage):
    write_folder(tmp_path / "d")
    bad = tmp_path / "d" / "cat" / "img3.png"
    content = bad.read_bytes()
    bad.write_bytes(b"this is not a png" if damage == "garbage" else content[: len(content) // 2])
    with pytest.raises(ValueError) as error:
        data.load_image_folder(tmp_path / "d")
    message = str(error.value)
    assert message.startswith(
        f"{str(bad)!r}: expected a PNG or JPEG image; got a file that cannot be decoded ("
    )
    assert not (tmp_path / "d" / ".jaxnn_cache").exists()  # nothing cached from a failed read


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": (8,)}, r"image_size: expected None or \(height, width\), two ints > 0; "),
        ({"image_size": (0, 8)}, r"image_size: expected None or .*; got \(0, 8\)"),
        ({"grayscale": "yes"}, r"grayscale: expected None, True or False; got 'yes'"),
        ({"test_split": 1.0}, r"test_split: expected a float in \[0, 1\); got 1.0"),
        ({"validation_split": -0.1}, r"validation_split: expected a float in \[0, 1\); got -0.1"),
        ({"test_split": 0.01}, r"test_split: 0.01 of 15 examples leaves 15 for training and 0 "),
        ({"validation_split": 0.99}, r"validation_split: 0.99 of 13 examples leaves 0 for"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    write_folder(tmp_path / "d")
    with pytest.raises(ValueError, match=message):
        data.load_image_folder(tmp_path / "d", **kwargs)


# -------------------------------------------------------------------------------- cache
def cache_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def count_decodes(monkeypatch) -> list[int]:
    calls = []
    decode = folders._decode_files

    def counting(files, *args):
        calls.append(len(files))
        return decode(files, *args)

    monkeypatch.setattr(folders, "_decode_files", counting)
    return calls


def test_the_second_load_reads_the_cache_without_decoding(tmp_path, monkeypatch):
    write_folder(tmp_path / "d")
    first = data.load_image_folder(tmp_path / "d", seed=1)
    cache = tmp_path / "d" / ".jaxnn_cache"
    names = cache_files(cache)
    assert len(names) == 1 and names[0].startswith("image_folder-") and names[0].endswith(".npz")

    def fail(*args):
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(folders, "_decode_files", fail)
    second = data.load_image_folder(tmp_path / "d", seed=1)
    for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(first, field), getattr(second, field))
    assert second.class_names == first.class_names
    assert cache_files(cache) == names  # nothing rewritten, no temporary file left


def test_a_changed_folder_or_other_options_are_decoded_again(tmp_path, monkeypatch):
    images, _ = write_folder(tmp_path / "d")
    calls = count_decodes(monkeypatch)
    cache = tmp_path / "d" / ".jaxnn_cache"
    data.read_image_folder(tmp_path / "d")
    data.read_image_folder(tmp_path / "d")
    assert calls == [15]
    Image.fromarray(images[0]).save(tmp_path / "d" / "ant" / "new.png")  # a file added
    x, _, _ = data.read_image_folder(tmp_path / "d")
    assert calls == [15, 16] and len(x) == 16 and len(cache_files(cache)) == 2
    changed = tmp_path / "d" / "dog" / "img0.png"
    Image.fromarray(255 - images[10]).save(changed)  # same size and name, new content
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    x, _, _ = data.read_image_folder(tmp_path / "d")
    assert calls == [15, 16, 16]
    np.testing.assert_array_equal(x[11], 255 - images[10])
    data.read_image_folder(tmp_path / "d", image_size=(4, 4))
    data.read_image_folder(tmp_path / "d", grayscale=True)
    assert calls == [15, 16, 16, 16, 16] and len(cache_files(cache)) == 5
    (tmp_path / "d" / "ant" / "new.png").unlink()  # back to a folder seen before... almost
    data.read_image_folder(tmp_path / "d")
    assert calls == [15, 16, 16, 16, 16, 15]  # dog/img0.png changed since the first cache


def test_cache_dir_and_a_damaged_cache_file(tmp_path, monkeypatch):
    write_folder(tmp_path / "d")
    calls = count_decodes(monkeypatch)
    first = data.read_image_folder(tmp_path / "d", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "d" / ".jaxnn_cache").exists()
    [name] = cache_files(tmp_path / "cache")
    (tmp_path / "cache" / name).write_bytes(b"PK\x03\x04 damaged")
    again = data.read_image_folder(tmp_path / "d", cache_dir=tmp_path / "cache")
    assert calls == [15, 15] and cache_files(tmp_path / "cache") == [name]
    np.testing.assert_array_equal(first[0], again[0])
    data.read_image_folder(tmp_path / "d", cache_dir=tmp_path / "cache")
    assert calls == [15, 15]  # the replaced file is read


def test_a_cache_that_cannot_be_written_warns_and_leaves_no_file(tmp_path, monkeypatch):
    write_folder(tmp_path / "d")

    def refuse(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(folders.os, "replace", refuse)
    with pytest.warns(UserWarning, match=r"cache_dir: cannot write the decoded images to .*"):
        x, y, _ = data.read_image_folder(tmp_path / "d")
    assert x.shape == (15, 8, 8, 3) and len(y) == 15
    assert cache_files(tmp_path / "d" / ".jaxnn_cache") == []  # the temporary file is removed


# ------------------------------------------------------------------- a run's dataset block
def dataset_config(**overrides) -> ml_collections.ConfigDict:
    """The ``dataset`` block with the keys ``image_folder`` needs."""
    cfg = {
        "name": "image_folder",
        "validation_split": 0.1,
        "test_split": 0.2,
        "normalization": "scale",
        "path": "",
        "image_size": None,
        "grayscale": None,
        "cache_dir": "",
    }
    return ml_collections.ConfigDict({**cfg, **overrides})


def test_load_splits_image_folder(tmp_path):
    write_folder(tmp_path / "d", n=10)
    cfg = dataset_config(path=str(tmp_path / "d"), image_size=(4, 4))
    got = data.load_splits(cfg, seed=5)
    want = data.load_image_folder(
        tmp_path / "d", image_size=(4, 4), validation_split=0.1, test_split=0.2, seed=5
    )
    assert got.x_train.shape == (22, 4, 4, 3) and len(got.x_val) == 2 and len(got.x_test) == 6
    for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
    assert got.class_names == ("ant", "cat", "dog")
    cfg.normalization = "standardize"
    standardized = data.load_splits(cfg, seed=5)
    mean, std = data.channel_stats(want.x_train)
    np.testing.assert_array_equal(standardized.mean, mean)
    for field in ("x_train", "x_val", "x_test"):
        want_part = data.normalize(getattr(want, field), mean, std)
        np.testing.assert_array_equal(getattr(standardized, field), want_part)


def test_check_dataset_needs_a_path_and_a_valid_image_size():
    assert "image_folder" in splits.DATASETS and "image_folder" in data.FOLDER_DATASETS
    with pytest.raises(ValueError) as error:
        splits.check_dataset(dataset_config())
    assert str(error.value) == (
        "dataset.path: expected a folder of class folders for dataset.name='image_folder'; got ''"
    )
    with pytest.raises(ValueError, match=r"dataset.image_size: expected None or \(height, width"):
        splits.check_dataset(dataset_config(path="x", image_size=(32, 32, 3)))
    with pytest.raises(ValueError, match=r"dataset.grayscale: expected None, True or False"):
        splits.check_dataset(dataset_config(path="x", grayscale="no"))
    splits.check_dataset(dataset_config(path="x", image_size=(32, 32), grayscale=True))
