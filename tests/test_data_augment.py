"""jaxnn.data.augment: exact results for flips, crops, shifts, rotations and jitter."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnn.data import AugmentConfig, augment, default_augment_options
from jaxnn.data.augment import _rotate_by

KEY = jax.random.key(1)


def known_image(h: int = 8, w: int = 8, c: int = 2, seed: int = 0) -> np.ndarray:
    """Random values in (0.1, 1]: no pixel equals the zero fill, no symmetry."""
    return np.random.default_rng(seed).uniform(0.1, 1.0, (h, w, c)).astype(np.float32)


def windows(image: np.ndarray, pad_y: int, pad_x: int) -> list[np.ndarray]:
    h, w, _ = image.shape
    padded = np.pad(image, ((pad_y, pad_y), (pad_x, pad_x), (0, 0)))
    return [
        padded[dy : dy + h, dx : dx + w]
        for dy in range(2 * pad_y + 1)
        for dx in range(2 * pad_x + 1)
    ]


def which(out: np.ndarray, candidates: list[np.ndarray]) -> int:
    """The index of the candidate equal to ``out`` bitwise, or -1."""
    return next((i for i, c in enumerate(candidates) if np.array_equal(out, c)), -1)


def test_every_option_off_is_the_identity():
    batch = np.stack([known_image(seed=i) for i in range(3)])
    assert augment(KEY, batch) is batch
    np.testing.assert_array_equal(jax.jit(augment)(KEY, batch), batch)
    assert AugmentConfig()(KEY, batch) is batch


def test_hflip_is_np_flip_or_nothing_per_example():
    image = known_image(seed=3)
    batch = np.stack([image] * 64)
    out = np.asarray(jax.jit(lambda k, b: augment(k, b, hflip=True))(KEY, batch))
    picks = [which(o, [image, np.flip(image, axis=1)]) for o in out]
    assert -1 not in picks
    assert 10 < sum(picks) < 54  # identical inputs, independent coin flips per example


def test_crop_with_padding_4_is_a_window_of_the_zero_padded_input():
    image = known_image(seed=4)
    batch = np.stack([image] * 64)
    out = np.asarray(augment(KEY, batch, crop_padding=4))
    assert out.shape == batch.shape and out.dtype == np.float32
    candidates = windows(image, 4, 4)
    picks = [which(o, candidates) for o in out]
    assert -1 not in picks
    assert len(set(picks)) > 20  # 81 possible windows, 64 independent draws
    np.testing.assert_array_equal(out, augment(KEY, batch, crop_padding=4))
    assert not np.array_equal(out, augment(jax.random.key(2), batch, crop_padding=4))


def test_width_shift_moves_columns_only():
    image = known_image(h=8, w=8, seed=5)
    batch = np.stack([image] * 32)
    out = np.asarray(augment(KEY, batch, width_shift=0.25))  # up to ceil(0.25 * 8) = 2 pixels
    candidates = windows(image, 0, 2)
    picks = [which(o, candidates) for o in out]
    assert -1 not in picks and len(set(picks)) == 5
    out = np.asarray(augment(KEY, batch, height_shift=0.1))  # up to ceil(0.8) = 1 pixel
    picks = [which(o, windows(image, 1, 0)) for o in out]
    assert -1 not in picks and len(set(picks)) == 3


def test_rotation_by_a_right_angle_is_rot90():
    image = known_image(h=6, w=6, c=1, seed=6)
    np.testing.assert_allclose(_rotate_by(image, jnp.float32(0.0)), image, atol=1e-6)
    # Counter-clockwise as displayed (row 0 at the top) is np.rot90's direction.
    np.testing.assert_allclose(
        _rotate_by(image, jnp.float32(math.pi / 2)), np.rot90(image, k=1), atol=1e-5
    )
    np.testing.assert_allclose(
        _rotate_by(image, jnp.float32(math.pi)), np.rot90(image, k=2), atol=1e-5
    )


def test_random_rotation_keeps_the_centre_and_zero_fills_the_corners():
    ones = np.ones((16, 9, 9, 1), np.float32)
    out = np.asarray(augment(KEY, ones, rotation=40.0))
    assert out.shape == ones.shape and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 4, 4, 0], 1.0, atol=1e-6)  # the centre does not move
    assert (out[:, 0, 0, 0] < 1.0).mean() > 0.8  # corners rotate out: zero fill comes in
    assert len({o.tobytes() for o in out}) == 16  # a different angle per example
    small = np.asarray(augment(KEY, ones, rotation=1e-4))
    np.testing.assert_allclose(small, ones, atol=1e-3)


def test_brightness_adds_one_bounded_delta_per_image():
    batch = np.stack([known_image(seed=i) for i in range(16)])
    out = np.asarray(augment(KEY, batch, brightness=0.2))
    delta = out - batch
    per_image = delta.reshape(16, -1)
    np.testing.assert_allclose(
        per_image, np.broadcast_to(per_image[:, :1], per_image.shape), atol=1e-6
    )
    assert np.abs(per_image[:, 0]).max() <= 0.2 and len(set(per_image[:, 0].round(6))) == 16


def test_contrast_scales_the_deviation_from_the_image_mean():
    batch = np.stack([known_image(seed=i) for i in range(16)])
    out = np.asarray(augment(KEY, batch, contrast=0.3))
    mean = batch.mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3), keepdims=True), mean, atol=1e-5)
    factor = ((out - mean) / (batch - mean)).reshape(16, -1)
    np.testing.assert_allclose(factor, np.broadcast_to(factor[:, :1], factor.shape), rtol=1e-3)
    assert ((factor[:, 0] >= 0.7 - 1e-5) & (factor[:, 0] <= 1.3 + 1e-5)).all()


def erased_rectangle(out: np.ndarray, image: np.ndarray) -> tuple[int, int] | None:
    """(height, width) of the one zeroed rectangle of ``out`` (the rest equal to ``image``
    bitwise), None when nothing was erased; fails on any other difference."""
    zero = (out == 0).all(axis=-1)
    np.testing.assert_array_equal(out[~zero], image[~zero])
    if not zero.any():
        return None
    rows, cols = np.flatnonzero(zero.any(axis=1)), np.flatnonzero(zero.any(axis=0))
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    assert zero.sum() == height * width  # one filled rectangle, no holes
    return height, width


def test_erasing_zeroes_one_rectangle_of_torchvisions_size_and_shape():
    image = known_image(h=28, w=28, c=1, seed=5)
    out = np.asarray(jax.jit(lambda k, b: augment(k, b, erasing=1.0))(KEY, np.stack([image] * 256)))
    sizes = np.array([erased_rectangle(o, image) for o in out])
    area = sizes[:, 0] * sizes[:, 1] / 28**2
    ratio = sizes[:, 0] / sizes[:, 1]
    # 2-33 % of the area and a ratio in [0.3, 3.3], give or take each side's rounding to a pixel.
    assert area.min() >= 0.01 and area.max() <= 0.38 and 0.1 < area.mean() < 0.25
    assert ratio.min() >= 0.25 and ratio.max() <= 4.0 and (ratio < 1).any() and (ratio > 1).any()
    assert len({tuple(s) for s in sizes}) > 50  # drawn per example


def test_erasing_probability_is_per_example():
    image = known_image(h=12, w=12, c=3, seed=6)
    out = np.asarray(augment(KEY, np.stack([image] * 400), erasing=0.5))
    erased = sum(erased_rectangle(o, image) is not None for o in out)
    assert 160 <= erased <= 240  # Binomial(400, 0.5): mean 200, std 10


def test_erasing_leaves_the_other_options_draws_unchanged():
    """Erasing comes last with a key of its own: outside its rectangle, the batch is what the
    other options gave without it, so turning it on does not reshuffle flips and crops."""
    batch = np.stack([known_image(seed=i) for i in range(32)])
    options = {"hflip": True, "crop_padding": 2, "brightness": 0.1}
    without = np.asarray(augment(KEY, batch, **options))
    with_erasing = np.asarray(augment(KEY, batch, **options, erasing=1.0))
    for out, expected in zip(with_erasing, without, strict=True):
        assert erased_rectangle(out, expected) is not None


def test_deterministic_per_key_and_jit_equals_eager():
    batch = np.stack([known_image(seed=0)] * 8)
    options = {"hflip": True, "crop_padding": 2, "rotation": 15.0, "brightness": 0.1}
    eager = np.asarray(augment(KEY, batch, **options))
    jitted = np.asarray(jax.jit(lambda k, b: augment(k, b, **options))(KEY, batch))
    np.testing.assert_allclose(eager, jitted, atol=1e-6)
    np.testing.assert_array_equal(eager, augment(KEY, batch, **options))
    assert not np.allclose(eager, augment(jax.random.key(7), batch, **options))
    assert len({o.tobytes() for o in eager}) == 8  # identical inputs, different augmentations


def test_augment_config_bundles_the_options():
    config = AugmentConfig(hflip=True, crop_padding=4)
    batch = np.stack([known_image(seed=1)] * 4)
    np.testing.assert_array_equal(
        jax.jit(config)(KEY, batch), augment(KEY, batch, hflip=True, crop_padding=4)
    )
    assert set(dataclasses.asdict(config)) == {
        "hflip",
        "crop_padding",
        "width_shift",
        "height_shift",
        "rotation",
        "brightness",
        "contrast",
        "erasing",
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.hflip = False  # type: ignore[misc]


@pytest.mark.parametrize(
    "images, options, message",
    [
        (np.zeros((8, 8, 1), np.float32), {}, r"images: expected \(batch, height, width"),
        (np.zeros((2, 8, 8, 1), np.uint8), {"hflip": True}, "images: expected floating-point"),
        (np.zeros((2, 8, 8, 1), np.float32), {"crop_padding": -1}, "crop_padding: expected"),
        (np.zeros((2, 8, 8, 1), np.float32), {"width_shift": 1.0}, r"width_shift: .*\[0, 1\)"),
        (np.zeros((2, 8, 8, 1), np.float32), {"rotation": 400.0}, "rotation: expected degrees"),
        (np.zeros((2, 8, 8, 1), np.float32), {"contrast": 2.0}, "contrast: expected"),
        (np.zeros((2, 8, 8, 1), np.float32), {"erasing": 1.5}, r"erasing: .*\[0, 1\]; got 1.5"),
    ],
)
def test_bad_arguments_are_named(images, options, message):
    with pytest.raises(ValueError, match=message):
        augment(KEY, images, **options)
    if options and images.dtype == np.float32:
        with pytest.raises(ValueError, match=message):
            AugmentConfig(**options)


# ------------------------------------------------------------- one list of options
def test_the_config_is_the_one_list_of_options_and_defaults():
    fields = {f.name: f.default for f in dataclasses.fields(AugmentConfig)}
    assert default_augment_options() == fields
    assert list(default_augment_options()) == [
        "hflip",
        "crop_padding",
        "width_shift",
        "height_shift",
        "rotation",
        "brightness",
        "contrast",
        "erasing",
    ]
    assert AugmentConfig.from_options(default_augment_options()) == AugmentConfig()
    assert not AugmentConfig().enabled
    for name, value in (("hflip", True), ("crop_padding", 1), ("rotation", 5.0)):
        config = AugmentConfig.from_options({**default_augment_options(), name: value})
        assert config.enabled and getattr(config, name) == value


def test_from_options_rejects_unknown_keys_and_bad_values():
    with pytest.raises(
        ValueError, match=r"augment: unknown option 'flip'; expected one of \['hflip', "
    ):
        AugmentConfig.from_options({"flip": True})
    with pytest.raises(ValueError, match=r"rotation: expected degrees in \[0, 180\]; got 200"):
        AugmentConfig.from_options({"rotation": 200})
    with pytest.raises(TypeError, match=r"augment: unknown option 'flip'"):
        augment(KEY, np.zeros((2, 4, 4, 1), np.float32), flip=True)


def test_the_config_called_equals_augment_with_its_options_bitwise():
    """What a run does with its config block: the same numbers as augment(key, x, **options)."""
    batch = np.stack([known_image(h=9, w=7, c=3, seed=i) for i in range(6)])
    options = {
        **default_augment_options(),
        "hflip": True,
        "crop_padding": 2,
        "width_shift": 0.3,
        "rotation": 15.0,
        "brightness": 0.1,
        "contrast": 0.2,
    }
    config = AugmentConfig.from_options(options)
    expected = np.asarray(augment(KEY, batch, **options))
    np.testing.assert_array_equal(config(KEY, batch), expected)
    jitted = jax.jit(lambda key, x: augment(key, x, **options))(KEY, batch)
    np.testing.assert_array_equal(jax.jit(config)(KEY, batch), jitted)
    assert not np.array_equal(expected, batch)
