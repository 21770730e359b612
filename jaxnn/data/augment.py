"""Image augmentation in JAX: jit-compatible, random per example, a function of the key.

What the tutorials do with Keras' ImageDataGenerator / RandomFlip / RandomCrop / RandomTranslation
/ RandomRotation: horizontal flips, random crops of a zero-padded image, integer translations,
rotations (bilinear, zero fill), and brightness / contrast jitter. Every option off is the
identity; the Trainer applies it to training batches only.

Example::

    x = augment(jax.random.key(0), images, hflip=True, crop_padding=4)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["augment"]


def _shift_crop(key, image, pad_y: int, pad_x: int):
    """A random window of the image zero-padded by (pad_y, pad_x): a translation in pixels."""
    h, w, _ = image.shape
    padded = jnp.pad(image, ((pad_y, pad_y), (pad_x, pad_x), (0, 0)))
    ky, kx = jax.random.split(key)
    dy = jax.random.randint(ky, (), 0, 2 * pad_y + 1)
    dx = jax.random.randint(kx, (), 0, 2 * pad_x + 1)
    return jax.lax.dynamic_slice(padded, (dy, dx, 0), image.shape)


def _rotate(key, image, degrees: float):
    h, w, c = image.shape
    angle = jnp.deg2rad(jax.random.uniform(key, (), minval=-degrees, maxval=degrees))
    cy, cx = (h - 1) / 2, (w - 1) / 2
    yy, xx = jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij")
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    src_y = cos * (yy - cy) - sin * (xx - cx) + cy
    src_x = sin * (yy - cy) + cos * (xx - cx) + cx
    rotate = lambda channel: jax.scipy.ndimage.map_coordinates(  # noqa: E731
        channel, [src_y, src_x], order=1, mode="constant", cval=0.0
    )
    return jax.vmap(rotate, in_axes=2, out_axes=2)(image)


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

    Args:
      rng: a key; the same key gives the same augmentation.
      hflip: flip left-right with probability 1/2.
      crop_padding: pad by this many zero pixels, then crop a random H×W window (pad 4 is the
        CIFAR recipe).
      width_shift, height_shift: random integer translation up to this fraction of W / H.
      rotation: random rotation in [−rotation, rotation] degrees (bilinear, zero fill).
      brightness: add a random delta in [−brightness, brightness].
      contrast: scale the deviation from the image mean by a factor in [1 − c, 1 + c].
    """
    if images.ndim != 4:
        raise ValueError(f"images: expected (batch, height, width, channels); got {images.shape}")
    _, h, w, _ = images.shape
    pad_y = max(crop_padding, math.ceil(height_shift * h))
    pad_x = max(crop_padding, math.ceil(width_shift * w))

    def one(key, image):
        keys = jax.random.split(key, 5)
        if hflip:
            image = jnp.where(jax.random.bernoulli(keys[0]), image[:, ::-1], image)
        if pad_y or pad_x:
            image = _shift_crop(keys[1], image, pad_y, pad_x)
        if rotation:
            image = _rotate(keys[2], image, rotation)
        if brightness:
            image = image + jax.random.uniform(keys[3], (), minval=-brightness, maxval=brightness)
        if contrast:
            factor = jax.random.uniform(keys[4], (), minval=1 - contrast, maxval=1 + contrast)
            mean = image.mean()
            image = (image - mean) * factor + mean
        return image.astype(images.dtype)

    if not (hflip or pad_y or pad_x or rotation or brightness or contrast):
        return images
    return jax.vmap(one)(jax.random.split(rng, images.shape[0]), images)
