"""Validation splits, normalisation and tabular data: fitted on the training split only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from jaxnn import data


# ------------------------------------------------------------------------ validation split
def test_validation_split_is_deterministic_disjoint_and_complete():
    x = np.arange(100)[:, None] * 10
    y = np.arange(100)
    a = data.train_validation_split(x, y, 0.2, seed=0)
    b = data.train_validation_split(x, y, 0.2, seed=0)
    c = data.train_validation_split(x, y, 0.2, seed=1)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)
    x_train, y_train, x_val, y_val = a
    assert len(x_train) == 80 and len(x_val) == 20
    np.testing.assert_array_equal(x_train[:, 0], y_train * 10)  # pairs stay together
    np.testing.assert_array_equal(x_val[:, 0], y_val * 10)
    assert not set(y_train) & set(y_val) and set(y_train) | set(y_val) == set(range(100))
    assert set(y_val) != set(c[3])


def test_validation_split_zero_and_bad_fractions():
    x, y = np.zeros((10, 2)), np.arange(10)
    x_train, y_train, x_val, y_val = data.train_validation_split(x, y, 0.0, seed=0)
    assert len(x_train) == 10 and len(x_val) == 0
    for bad in (1.0, -0.1, 1.5, "0.2"):
        with pytest.raises(ValueError, match=r"validation_split: expected a float in \[0, 1\)"):
            data.train_validation_split(x, y, bad, seed=0)
    with pytest.raises(ValueError, match="x and y: expected the same length; got 10 and 9"):
        data.train_validation_split(x, y[:9], 0.2, seed=0)
    with pytest.raises(
        ValueError,
        match=r"validation_split: 0.01 of 10 examples leaves 10 for training and 0 for validation; "
        r"both must be > 0",
    ):
        data.train_validation_split(x, y, 0.01, seed=0)


@pytest.mark.parametrize(
    "n, fraction, num_train, num_val", [(100, 0.001, 100, 0), (10, 0.99, 0, 10), (3, 0.9, 0, 3)]
)
def test_validation_split_that_empties_a_side_says_how_many_each_side_gets(
    n, fraction, num_train, num_val
):
    x, y = np.zeros((n, 2)), np.arange(n)
    with pytest.raises(ValueError) as error:
        data.train_validation_split(x, y, fraction, seed=0)
    assert str(error.value) == (
        f"validation_split: {fraction} of {n} examples leaves {num_train} for training and "
        f"{num_val} for validation; both must be > 0"
    )


def test_split_to_float_and_normalize_return_aligned_arrays_with_numpys_values():
    # 64-byte-aligned results are what a CPU device uses without copying (global_rows tests it).
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (37, 5, 5, 3), dtype=np.uint8)
    scaled = data.to_float(images)
    np.testing.assert_array_equal(scaled, images.astype(np.float32) / np.float32(255))
    mean64, std64 = np.array([0.1, 0.5, 0.9]), np.array([0.2, 0.3, 0.4])  # float64: one rounding
    normalized = data.normalize(scaled, mean64, std64)
    np.testing.assert_array_equal(normalized, ((scaled - mean64) / std64).astype(np.float32))
    x_train, _, x_val, _ = data.train_validation_split(scaled, np.arange(37), 0.3, seed=0)
    order = np.random.default_rng(0).permutation(37)
    np.testing.assert_array_equal(x_val, scaled[np.sort(order[:11])])
    np.testing.assert_array_equal(x_train, scaled[np.sort(order[11:])])
    for array in (scaled, normalized, x_train, x_val):
        assert array.ctypes.data % 64 == 0 and array.flags.c_contiguous and array.flags.writeable
        assert array.dtype == np.float32


# ---------------------------------------------------------------------------- normalisation
def test_to_float_scales_uint8_to_unit_interval():
    images = np.array([[[[0], [51]], [[204], [255]]]], np.uint8)
    scaled = data.to_float(images)
    assert scaled.dtype == np.float32 and scaled.shape == images.shape
    np.testing.assert_array_equal(scaled.ravel(), np.float32([0, 0.2, 0.8, 1.0]))
    with pytest.raises(ValueError, match="images: expected uint8 .*got float32"):
        data.to_float(scaled)


def test_channel_stats_and_normalize_per_channel():
    rng = np.random.default_rng(0)
    images = np.stack(
        [rng.normal(1.0, 2.0, (50, 4, 4)), rng.normal(-3.0, 0.5, (50, 4, 4))], axis=-1
    ).astype(np.float32)
    mean, std = data.channel_stats(images)
    assert mean.shape == std.shape == (2,) and mean.dtype == np.float32
    np.testing.assert_allclose(mean, images.reshape(-1, 2).mean(0), rtol=1e-5)
    np.testing.assert_allclose(std, images.reshape(-1, 2).std(0), rtol=1e-5)
    normalized = data.normalize(images, mean, std)
    np.testing.assert_allclose(normalized.reshape(-1, 2).mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(normalized.reshape(-1, 2).std(0), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match=r"mean: expected shape \(2,\) for 2 channels; got \(3,\)"):
        data.normalize(images, np.zeros(3), std)


def test_stats_come_from_train_so_test_stays_shifted():
    rng = np.random.default_rng(1)
    train = rng.normal(0.0, 1.0, (200, 3, 3, 1)).astype(np.float32)
    test = rng.normal(0.5, 1.0, (200, 3, 3, 1)).astype(np.float32)
    mean, std = data.channel_stats(train)
    assert abs(data.normalize(test, mean, std).mean() - 0.5) < 0.1


# ------------------------------------------------------------------------------- tabular
def test_make_regression_has_the_known_linear_signal():
    x, y, w = data.make_regression(n=500, n_features=10, noise=0.0, seed=0)
    assert x.shape == (500, 10) and y.shape == (500,) and w.shape == (10,)
    np.testing.assert_allclose(x @ w, y, rtol=1e-5, atol=1e-5)
    x2, y2, _ = data.make_regression(n=500, n_features=10, noise=0.5, seed=0)
    np.testing.assert_array_equal(x, x2)
    assert 0.4 < np.std(y2 - x2 @ w) < 0.6
    recovered = np.linalg.lstsq(x2, y2, rcond=None)[0]
    np.testing.assert_allclose(recovered, w, atol=0.1)


def test_make_classification_has_the_known_direction():
    x, y, w = data.make_classification(n=2000, n_features=5, seed=3)
    assert x.shape == (2000, 5) and set(np.unique(y)) == {0.0, 1.0}
    assert ((x @ w > 0) == (y == 1)).mean() > 0.95
    assert 0.3 < y.mean() < 0.7


def test_standardisation_is_fitted_on_train_only():
    x, y, _ = data.make_regression(n=500, n_features=4, seed=0)
    x = x + np.arange(500, dtype=np.float32)[:, None] / 100  # later rows shift: splits differ
    splits = data.from_arrays(x, y, validation_split=0.2, test_split=0.2, seed=0)
    assert len(splits.x_train) == 300 and len(splits.x_val) == 100 and len(splits.x_test) == 100
    np.testing.assert_allclose(splits.x_train.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(splits.x_train.std(0), 1.0, rtol=1e-4)
    order = np.random.default_rng(0).permutation(500)
    train_rows = x[order[200:]]
    np.testing.assert_allclose(splits.mean, train_rows.mean(0), rtol=1e-5)
    np.testing.assert_allclose(splits.std, train_rows.std(0), rtol=1e-5)
    test_rows = x[order[:100]]
    np.testing.assert_allclose(splits.x_test, (test_rows - splits.mean) / splits.std, rtol=1e-5)
    assert not np.allclose(splits.x_test.mean(0), 0.0, atol=1e-2)  # test keeps its own shift
    raw = data.from_arrays(x, y, test_split=0.2, standardize=False, seed=0)
    assert raw.mean is None and raw.x_val is None
    np.testing.assert_array_equal(raw.x_test, x[order[:100]])


def test_from_arrays_rejects_bad_input():
    x, y = np.zeros((10, 2)), np.zeros(10)
    with pytest.raises(ValueError, match=r"x: expected a 2-D array .*got shape \(10,\)"):
        data.from_arrays(np.zeros(10), y)
    with pytest.raises(ValueError, match="x and y: expected the same length; got 10 and 9"):
        data.from_arrays(x, y[:9])
    with pytest.raises(ValueError, match=r"test_split: expected a float in \[0, 1\); got 1.0"):
        data.from_arrays(x, y, test_split=1.0)
    with pytest.raises(ValueError, match="validation_split \\+ test_split: expected < 1"):
        data.from_arrays(x, y, validation_split=0.5, test_split=0.5)


def test_csv_loader(tmp_path):
    x, y, _ = data.make_classification(n=40, n_features=3, seed=1)
    path = tmp_path / "d.csv"
    rows = ["a,b,target,c"] + [f"{r[0]},{r[1]},{t},{r[2]}" for r, t in zip(x, y, strict=True)]
    path.write_text("\n".join(rows) + "\n")
    splits = data.load_csv(path, target="target", test_split=0.25, standardize=False, seed=0)
    assert splits.x_train.shape == (30, 3) and splits.x_test.shape == (10, 3)
    order = np.random.default_rng(0).permutation(40)
    np.testing.assert_allclose(splits.x_train, x[order[10:]], rtol=1e-6)
    np.testing.assert_array_equal(splits.y_train, y[order[10:]])
    with pytest.raises(ValueError, match=r"target: no column 'label'.*\['a', 'b', 'target', 'c'\]"):
        data.load_csv(path, target="label")


def test_csv_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a,target\n1,2\n3\n")
    with pytest.raises(ValueError, match=r"bad.csv: line 3 has 1 values; the header has 2"):
        data.load_csv(path)
    path.write_text("a,target\n1,x\n")
    with pytest.raises(ValueError, match=r"bad.csv: non-numeric value"):
        data.load_csv(path)
    path.write_text("a,target\n")
    with pytest.raises(ValueError, match=r"bad.csv: expected a header row and data rows"):
        data.load_csv(path)


def test_splits_take_positional_or_keyword_fields_with_optional_stats_and_names():
    rows = [np.full((2, 1), i, np.float32) for i in range(6)]
    positional = data.Splits(*rows, np.zeros(1), np.ones(1))
    assert positional.x_test is rows[4] and positional.std[0] == 1 and positional.class_names == ()
    keyword = data.Splits(
        x_train=rows[0],
        y_train=rows[1],
        x_val=None,
        y_val=None,
        x_test=rows[4],
        y_test=rows[5],
        class_names=("a", "b"),
    )
    assert keyword.mean is None and keyword.std is None and keyword.class_names == ("a", "b")
    assert [f.name for f in dataclasses.fields(data.Splits)][-3:] == ["mean", "std", "class_names"]
