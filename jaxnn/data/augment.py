"""Image augmentation in JAX: jit-compatible, random per example, a pure function of the key.

What the tutorials do with Keras' ImageDataGenerator / RandomFlip / RandomCrop / RandomTranslation
/ RandomRotation / RandomErasing: horizontal flips, random crops of a zero-padded image, integer
translations, rotations (bilinear, zero fill), brightness / contrast jitter and random erasing.
Every option off is the identity; the Trainer applies it to training batches only.

Example::

    x = augment(jax.random.key(0), images, hflip=True, crop_padding=4)
    # or, bundled:
    cifar = AugmentConfig(hflip=True, crop_padding=4)
    x = cifar(jax.random.key(0), images)
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["AugmentConfig", "augment", "default_augment_options"]


def _shift_crop(key: jax.Array, image: jax.Array, pad_y: int, pad_x: int) -> jax.Array:
    """A random H x W window of the image zero-padded by (pad_y, pad_x): an integer translation."""
    padded = jnp.pad(image, ((pad_y, pad_y), (pad_x, pad_x), (0, 0)))
    key_y, key_x = jax.random.split(key)
    dy = jax.random.randint(key_y, (), 0, 2 * pad_y + 1)
    dx = jax.random.randint(key_x, (), 0, 2 * pad_x + 1)
    return jax.lax.dynamic_slice(padded, (dy, dx, 0), image.shape)


def _rotate_by(image: jax.Array, angle: jax.Array) -> jax.Array:
    """Rotates (H, W, C) by ``angle`` radians about the centre: bilinear, zero fill.

    Positive angles turn the content counter-clockwise as displayed (row 0 at the top), like
    ``np.rot90`` for a right angle.
    """
    h, w, _ = image.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    yy, xx = jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij")
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    # Each output pixel samples the input at the inversely rotated position.
    src_y = cos * (yy - cy) + sin * (xx - cx) + cy
    src_x = -sin * (yy - cy) + cos * (xx - cx) + cx

    def one_channel(channel: jax.Array) -> jax.Array:
        return jax.scipy.ndimage.map_coordinates(
            channel, [src_y, src_x], order=1, mode="constant", cval=0.0
        )

    return jax.vmap(one_channel, in_axes=2, out_axes=2)(image)


def _erase(key: jax.Array, image: jax.Array, probability: float) -> jax.Array:
    """With ``probability``, zeroes one random rectangle of (H, W, C): torchvision's RandomErasing
    defaults (an area of 2-33 % of the image, a height/width ratio log-uniform in [0.3, 3.3],
    value 0), except that a side longer than the image is clipped to it instead of redrawn."""
    h, w, _ = image.shape
    apply_key, area_key, ratio_key, top_key, left_key = jax.random.split(key, 5)
    area = jax.random.uniform(area_key, (), minval=0.02, maxval=0.33) * (h * w)
    ratio = jnp.exp(jax.random.uniform(ratio_key, (), minval=math.log(0.3), maxval=math.log(3.3)))
    height = jnp.clip(jnp.round(jnp.sqrt(area * ratio)), 1, h).astype(jnp.int32)
    width = jnp.clip(jnp.round(jnp.sqrt(area / ratio)), 1, w).astype(jnp.int32)
    top = jax.random.randint(top_key, (), 0, h - height + 1)
    left = jax.random.randint(left_key, (), 0, w - width + 1)
    rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
    inside = (rows >= top) & (rows < top + height) & (cols >= left) & (cols < left + width)
    inside = inside & jax.random.bernoulli(apply_key, probability)
    return jnp.where(inside[:, :, None], jnp.zeros((), image.dtype), image)


def _check_images(images: jax.Array) -> None:
    if images.ndim != 4:
        raise ValueError(f"images: expected (batch, height, width, channels); got {images.shape}")
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(
            f"images: expected floating-point values (see jaxnn.data.to_float); got {images.dtype}"
        )


def _unknown_options(options: Mapping[str, Any]) -> str | None:
    """The error message for the first key of ``options`` that is not an option, or None."""
    names = [field.name for field in dataclasses.fields(AugmentConfig)]
    unknown = [key for key in options if key not in names]
    if not unknown:
        return None
    return f"augment: unknown option {unknown[0]!r}; expected one of {names}"


def augment(rng: jax.Array, images: jax.Array, **options: Any) -> jax.Array:
    """Augments a float batch ``(B, H, W, C)``, each example with its own randomness.

    The per-example keys are ``jax.random.split(rng, B)``, so two equal images in a batch are
    augmented differently, and the same key gives the same result. Shape and dtype are kept.

    Args:
      rng: a key; the same key gives the same augmentation.
      images: floating-point images ``(B, H, W, C)``.
      **options: the fields of ``AugmentConfig`` (all off by default), which documents them:
        ``hflip``, ``crop_padding``, ``width_shift``, ``height_shift``, ``rotation``,
        ``brightness``, ``contrast``, ``erasing``.

    Returns:
      The augmented batch; ``images`` itself when every option is off.

    Raises:
      ValueError: a batch that is not 4-D floating point, or an option out of range.
      TypeError: an option that ``AugmentConfig`` does not have (like any unknown keyword).

    Example::

        x = augment(jax.random.key(0), images, hflip=True, crop_padding=4)
    """
    _check_images(images)  # before the options, as the batch is the first thing a caller checks
    message = _unknown_options(options)
    if message:
        raise TypeError(message)
    return AugmentConfig(**options)(rng, images)


def _augment_one(
    config: AugmentConfig, pad_y: int, pad_x: int, key: jax.Array, image: jax.Array
) -> jax.Array:
    """One image ``(H, W, C)`` through the options of ``config`` that are on, in a fixed order."""
    flip_key, crop_key, rotate_key, brightness_key, contrast_key = jax.random.split(key, 5)
    dtype = image.dtype
    if config.hflip:
        image = jnp.where(jax.random.bernoulli(flip_key), image[:, ::-1], image)
    if pad_y or pad_x:
        image = _shift_crop(crop_key, image, pad_y, pad_x)
    if config.rotation:
        rotation = config.rotation
        degrees = jax.random.uniform(rotate_key, (), minval=-rotation, maxval=rotation)
        image = _rotate_by(image, jnp.deg2rad(degrees))
    if config.brightness:
        brightness = config.brightness
        delta = jax.random.uniform(brightness_key, (), minval=-brightness, maxval=brightness)
        image = image + delta
    if config.contrast:
        contrast = config.contrast
        factor = jax.random.uniform(contrast_key, (), minval=1 - contrast, maxval=1 + contrast)
        mean = image.mean()
        image = (image - mean) * factor + mean
    if config.erasing:
        # A key of its own (not a sixth split), so the other options draw what they drew before.
        image = _erase(jax.random.fold_in(key, 5), image, config.erasing)
    return image.astype(dtype)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """The augmentation options, their defaults and their ranges; calling it augments a batch.

    The one list of options: ``augment``'s keywords, ``default_augment_options`` (a run config's
    ``augment`` block) and ``from_options`` all come from these fields. Every option off (the
    defaults) is the identity.

    Attributes:
      hflip: flip left-right with probability 1/2 (Keras ``RandomFlip("horizontal")``).
      crop_padding: pad by this many zero pixels on each side, then crop a random H x W window
        (Keras ``RandomCrop`` after padding; pad 4 is the CIFAR recipe). An int >= 0.
      width_shift, height_shift: random integer translation of up to ``ceil(fraction * W)`` /
        ``ceil(fraction * H)`` pixels, zero fill (``RandomTranslation``), fractions in [0, 1).
        Crop and shift are one window of the image padded by the larger of the two amounts.
      rotation: random rotation in [-rotation, rotation] degrees, rotation in [0, 180] (bilinear,
        zero fill; like ImageDataGenerator's ``rotation_range``).
      brightness: add one random delta in [-brightness, brightness] per image, brightness >= 0
        (no clipping: the images may already be standardised).
      contrast: scale each image's deviation from its mean by a factor in [1 - c, 1 + c],
        c in [0, 1].
      erasing: with this probability in [0, 1], set one random rectangle of each image to 0,
        applied last (torchvision ``RandomErasing(p)`` with its defaults: 2-33 % of the area,
        height/width ratio in [0.3, 3.3]; Keras ``RandomErasing``).

    Example::

        cifar = AugmentConfig(hflip=True, crop_padding=4)
        x = jax.jit(cifar)(jax.random.key(0), images)
    """

    hflip: bool = False
    crop_padding: int = 0
    width_shift: float = 0.0
    height_shift: float = 0.0
    rotation: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    erasing: float = 0.0

    def __post_init__(self) -> None:
        crop_padding = self.crop_padding
        if not isinstance(crop_padding, numbers.Integral) or crop_padding < 0:
            raise ValueError(f"crop_padding: expected an int >= 0; got {crop_padding!r}")
        for name in ("width_shift", "height_shift"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(
                    f"{name}: expected a fraction of the image in [0, 1); got {value!r}"
                )
        if not 0 <= self.rotation <= 180:
            raise ValueError(f"rotation: expected degrees in [0, 180]; got {self.rotation!r}")
        if self.brightness < 0:
            raise ValueError(f"brightness: expected >= 0; got {self.brightness!r}")
        if not 0 <= self.contrast <= 1:
            raise ValueError(f"contrast: expected a factor range in [0, 1]; got {self.contrast!r}")
        if not 0 <= self.erasing <= 1:
            raise ValueError(f"erasing: expected a probability in [0, 1]; got {self.erasing!r}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> AugmentConfig:
        """The config from a mapping of option names to values (a run config's ``augment`` block,
        e.g. ``AugmentConfig.from_options(config.augment.to_dict())``); missing keys keep their
        defaults.

        Raises:
          ValueError: a key that is not an option (the message lists the options), or a value
            out of range.
        """
        message = _unknown_options(options)
        if message:
            raise ValueError(message)
        return cls(**options)

    @property
    def enabled(self) -> bool:
        """Whether any option is on (otherwise calling the config returns the batch itself)."""
        return any(getattr(self, field.name) for field in dataclasses.fields(self))

    def __call__(self, rng: jax.Array, images: jax.Array) -> jax.Array:
        """``augment(rng, images, **options)`` with these options (see ``augment``)."""
        _check_images(images)
        _, h, w, _ = images.shape
        pad_y = max(self.crop_padding, math.ceil(self.height_shift * h))
        pad_x = max(self.crop_padding, math.ceil(self.width_shift * w))
        if not self.enabled:
            return images
        one = functools.partial(_augment_one, self, pad_y, pad_x)
        return jax.vmap(one)(jax.random.split(rng, images.shape[0]), images)


def default_augment_options() -> dict[str, Any]:
    """Every option of ``AugmentConfig`` with its default (all off), for a run config's
    ``augment`` block: ``config.augment = ConfigDict(default_augment_options())``."""
    return {field.name: field.default for field in dataclasses.fields(AugmentConfig)}
