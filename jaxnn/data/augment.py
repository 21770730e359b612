"""Image augmentation in JAX: jit-compatible, random per example, a pure function of the key.

What the tutorials do with Keras' ImageDataGenerator / RandomFlip / RandomCrop / RandomTranslation
/ RandomRotation: horizontal flips, random crops of a zero-padded image, integer translations,
rotations (bilinear, zero fill), and brightness / contrast jitter. Every option off is the
identity; the Trainer applies it to training batches only.

Example::

    x = augment(jax.random.key(0), images, hflip=True, crop_padding=4)
    # or, bundled:
    cifar = AugmentConfig(hflip=True, crop_padding=4)
    x = cifar(jax.random.key(0), images)
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import jax
import jax.numpy as jnp

__all__ = ["AugmentConfig", "augment"]


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


def _check_options(
    crop_padding: int,
    width_shift: float,
    height_shift: float,
    rotation: float,
    brightness: float,
    contrast: float,
) -> None:
    if not isinstance(crop_padding, numbers.Integral) or crop_padding < 0:
        raise ValueError(f"crop_padding: expected an int >= 0; got {crop_padding!r}")
    for name, value in (("width_shift", width_shift), ("height_shift", height_shift)):
        if not 0 <= value < 1:
            raise ValueError(f"{name}: expected a fraction of the image in [0, 1); got {value!r}")
    if not 0 <= rotation <= 180:
        raise ValueError(f"rotation: expected degrees in [0, 180]; got {rotation!r}")
    if brightness < 0:
        raise ValueError(f"brightness: expected >= 0; got {brightness!r}")
    if not 0 <= contrast <= 1:
        raise ValueError(f"contrast: expected a factor range in [0, 1]; got {contrast!r}")


def augment(
    rng: jax.Array,
    images: jax.Array,
    *,
    hflip: bool = False,
    crop_padding: int = 0,
    width_shift: float = 0.0,
    height_shift: float = 0.0,
    rotation: float = 0.0,
    brightness: float = 0.0,
    contrast: float = 0.0,
) -> jax.Array:
    """Augments a float batch ``(B, H, W, C)``, each example with its own randomness.

    The per-example keys are ``jax.random.split(rng, B)``, so two equal images in a batch are
    augmented differently, and the same key gives the same result. Shape and dtype are kept.

    Args:
      rng: a key; the same key gives the same augmentation.
      images: floating-point images ``(B, H, W, C)``.
      hflip: flip left-right with probability 1/2 (Keras ``RandomFlip("horizontal")``).
      crop_padding: pad by this many zero pixels on each side, then crop a random H x W window
        (Keras ``RandomCrop`` after padding; pad 4 is the CIFAR recipe).
      width_shift, height_shift: random integer translation of up to ``ceil(fraction * W)`` /
        ``ceil(fraction * H)`` pixels, zero fill (``RandomTranslation``). Crop and shift are one
        window of the image padded by the larger of the two amounts.
      rotation: random rotation in [-rotation, rotation] degrees (bilinear, zero fill; like
        ImageDataGenerator's ``rotation_range``).
      brightness: add one random delta in [-brightness, brightness] per image (no clipping:
        the images may already be standardised).
      contrast: scale each image's deviation from its mean by a factor in [1 - c, 1 + c].

    Returns:
      The augmented batch; ``images`` itself when every option is off.

    Raises:
      ValueError: a batch that is not 4-D floating point, or an option out of range.
    """
    if images.ndim != 4:
        raise ValueError(f"images: expected (batch, height, width, channels); got {images.shape}")
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(
            f"images: expected floating-point values (see jaxnn.data.to_float); got {images.dtype}"
        )
    _check_options(crop_padding, width_shift, height_shift, rotation, brightness, contrast)
    _, h, w, _ = images.shape
    pad_y = max(crop_padding, math.ceil(height_shift * h))
    pad_x = max(crop_padding, math.ceil(width_shift * w))
    if not (hflip or pad_y or pad_x or rotation or brightness or contrast):
        return images

    def one(key: jax.Array, image: jax.Array) -> jax.Array:
        flip_key, crop_key, rotate_key, brightness_key, contrast_key = jax.random.split(key, 5)
        if hflip:
            image = jnp.where(jax.random.bernoulli(flip_key), image[:, ::-1], image)
        if pad_y or pad_x:
            image = _shift_crop(crop_key, image, pad_y, pad_x)
        if rotation:
            degrees = jax.random.uniform(rotate_key, (), minval=-rotation, maxval=rotation)
            image = _rotate_by(image, jnp.deg2rad(degrees))
        if brightness:
            delta = jax.random.uniform(brightness_key, (), minval=-brightness, maxval=brightness)
            image = image + delta
        if contrast:
            factor = jax.random.uniform(contrast_key, (), minval=1 - contrast, maxval=1 + contrast)
            mean = image.mean()
            image = (image - mean) * factor + mean
        return image.astype(images.dtype)

    return jax.vmap(one)(jax.random.split(rng, images.shape[0]), images)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """The options of ``augment`` bundled; calling it augments a batch.

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

    def __post_init__(self) -> None:
        _check_options(
            self.crop_padding,
            self.width_shift,
            self.height_shift,
            self.rotation,
            self.brightness,
            self.contrast,
        )

    def __call__(self, rng: jax.Array, images: jax.Array) -> jax.Array:
        """``augment(rng, images, **options)``."""
        return augment(rng, images, **dataclasses.asdict(self))
