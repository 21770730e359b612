"""Image classification data from a folder with one sub-folder of images per class.

``load_image_folder(path)`` reads ``path/<class_name>/*.png|jpg|jpeg`` (extensions in any case),
labels the classes 0..K-1 in the sorted order of their folder names, and splits the images by
seed into train / validation / test ``Splits`` of float32 ``(N, H, W, C)`` in [0, 1].

Decoding happens once: the uint8 images, labels and class names are cached in
``<cache_dir>/image_folder-<key>.npz`` (``cache_dir`` defaults to ``<path>/.jaxnn_cache``). The
key is a sha256 of the file list (relative names, sizes, modification times in ns), the decoding
options (``image_size``, ``grayscale``), the cache format and Pillow's version: a folder that
gains, loses or changes a file is decoded again into a new cache file. Cache files are written
to a temporary file and renamed into place, so a killed run never leaves a partial one.

Pillow is imported on first use only, so ``import jaxnn`` stays cheap.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from jaxnn.data import preprocess
from jaxnn.data.tabular import Splits

__all__ = [
    "CACHE_DIR_NAME",
    "IMAGE_EXTENSIONS",
    "check_image_size",
    "load_image_folder",
    "read_image_folder",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
CACHE_DIR_NAME = ".jaxnn_cache"  # inside the data folder; hidden, so never a class folder
_CACHE_FORMAT = 1  # bump when the cache's content changes: old files are then never read
# Pillow's modes whose pixels are one gray value ("LA": gray with alpha, which is dropped).
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def load_image_folder(
    path: str | os.PathLike,
    *,
    image_size: Sequence[int] | None = None,
    grayscale: bool | None = None,
    validation_split: float = 0.1,
    test_split: float = 0.1,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> Splits:
    """Loads ``path/<class_name>/<image>`` as train / validation / test splits.

    Classes are the sub-folders (sorted by name: labels 0..K-1, ``class_names`` their names);
    images are the ``.png``, ``.jpg`` and ``.jpeg`` files directly inside them (any case; other
    files, hidden files and folders, and files in ``path`` itself are ignored). The test split is
    carved first from the whole set, validation from the rest::

        order = default_rng(seed).permutation(N)
        test = sort(order[:round(N * test_split)])
        rest = the other rows, in order
        train, val = train_validation_split(rest, validation_split, seed)

    so ``validation_split`` is a fraction of what the test split leaves (like the tfds datasets,
    whose validation set is carved from train). Each part keeps the folder order (classes, then
    file names).

    Args:
      path: the folder of class folders.
      image_size: ``(height, width)`` to resize every image to (Pillow's bilinear, antialiased
        when shrinking); None: every image must already have the same size.
      grayscale: True: one channel; False: RGB; None: one channel when every image is grayscale,
        else RGB. Alpha channels are dropped.
      validation_split, test_split: fractions in [0, 1); 0 gives no validation set (None) or an
        empty test set.
      seed: the permutations' seed; the same seed gives the same splits.
      cache_dir: where the decoded images are cached (default ``<path>/.jaxnn_cache``); see
        ``read_image_folder``.

    Returns:
      ``Splits`` of float32 images ``(N, H, W, C)`` in [0, 1] (C = 1 or 3), int64 labels, the
      class names, and no ``mean``/``std`` (standardise with ``channel_stats`` and ``normalize``).

    Raises:
      ValueError: a missing folder, fewer than 2 class folders, an empty class folder, a file
        that cannot be decoded, images of different sizes without ``image_size``, or a split
        that leaves an empty part; the message names the folder or file.

    Example::

        splits = load_image_folder("flowers", image_size=(64, 64), seed=1)
        trainer.fit(splits.x_train, splits.y_train, validation_data=(splits.x_val, splits.y_val))
    """
    for name, value in (("validation_split", validation_split), ("test_split", test_split)):
        if not isinstance(value, int | float) or not 0 <= value < 1:
            raise ValueError(f"{name}: expected a float in [0, 1); got {value!r}")
    images, labels, class_names = read_image_folder(
        path, image_size=image_size, grayscale=grayscale, cache_dir=cache_dir
    )
    return _split(images, labels, class_names, validation_split, test_split, seed)


def _split(
    images: np.ndarray,
    labels: np.ndarray,
    class_names: tuple[str, ...],
    validation_split: float,
    test_split: float,
    seed: int,
) -> Splits:
    """The test rows first (a permutation of all rows), then validation from the rest."""
    n = len(images)
    num_test = int(round(n * test_split))
    if test_split > 0 and not 0 < num_test < n:
        raise ValueError(
            f"test_split: {test_split} of {n} examples leaves {n - num_test} for training and "
            f"{num_test} for testing; both must be > 0"
        )
    order = np.random.default_rng(seed).permutation(n)
    test, rest = np.sort(order[:num_test]), np.sort(order[num_test:])
    x, y, x_val, y_val = preprocess.train_validation_split(
        images[rest], labels[rest], validation_split, seed
    )
    return Splits(
        x_train=preprocess.to_float(x),
        y_train=y,
        x_val=preprocess.to_float(x_val) if validation_split > 0 else None,
        y_val=y_val if validation_split > 0 else None,
        x_test=preprocess.to_float(images[test]),
        y_test=labels[test],
        class_names=class_names,
    )


def read_image_folder(
    path: str | os.PathLike,
    *,
    image_size: Sequence[int] | None = None,
    grayscale: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Every image of ``path/<class_name>/`` as uint8, decoded once and then read from a cache.

    The arguments are ``load_image_folder``'s. The cache is
    ``<cache_dir>/image_folder-<key>.npz`` (``cache_dir`` defaults to ``<path>/.jaxnn_cache``),
    with ``key`` the sha256 of the file list (names, sizes, mtimes) and the decoding options; a
    cache that cannot be written (a read-only folder) is skipped with a warning, one that cannot
    be read is decoded again and replaced.

    Returns:
      ``(images, labels, class_names)``: uint8 ``(N, H, W, C)``, int64 ``(N,)`` and the sorted
      class folder names; rows in folder order (classes, then file names).

    Example::

        images, labels, class_names = read_image_folder("flowers", image_size=(64, 64))
    """
    image_size = check_image_size(image_size, "image_size")
    if grayscale not in (None, True, False):
        raise ValueError(f"grayscale: expected None, True or False; got {grayscale!r}")
    root = _check_folder(path)
    class_names, files, labels = _list_images(root)
    options = {"image_size": image_size, "grayscale": grayscale}
    cache = Path(cache_dir) if cache_dir is not None else root / CACHE_DIR_NAME
    cache_file = cache / f"image_folder-{_fingerprint(root, files, options)}.npz"
    cached = _read_cache(cache_file)
    if cached is not None:
        return cached
    images = _decode_files(files, image_size, grayscale)
    labels = np.asarray(labels, np.int64)
    _write_cache(cache_file, images, labels, class_names)
    return images, labels, class_names


def check_image_size(image_size: Sequence[int] | None, name: str) -> tuple[int, int] | None:
    """``image_size`` as ``(height, width)`` of positive ints, or None.

    Raises:
      ValueError: anything else, under ``name`` (e.g. ``"dataset.image_size"``).

    Example::

        check_image_size([32, 32], "image_size")  # (32, 32)
    """
    if image_size is None:
        return None
    ok = isinstance(image_size, Sequence) and not isinstance(image_size, str)
    ok = ok and len(image_size) == 2
    ok = ok and all(
        isinstance(d, int | np.integer) and not isinstance(d, bool) and d > 0 for d in image_size
    )
    if not ok:
        raise ValueError(
            f"{name}: expected None or (height, width), two ints > 0; got {image_size!r}"
        )
    return int(image_size[0]), int(image_size[1])


def _check_folder(path: str | os.PathLike) -> Path:
    root = Path(path)
    if not root.exists():
        raise ValueError(f"path: expected a folder of class folders; got {str(root)!r}, not found")
    if not root.is_dir():
        raise ValueError(f"path: expected a folder of class folders; got {str(root)!r}, a file")
    return root


def _list_images(root: Path) -> tuple[tuple[str, ...], list[Path], list[int]]:
    """The class names and every image file with its label, in sorted order."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(folders) < 2:
        found = f"{len(folders)} ({', '.join(p.name for p in folders)})" if folders else "none"
        raise ValueError(
            f"path: expected at least 2 class folders (one per class) in {str(root)!r}; got {found}"
        )
    files, labels = [], []
    for label, folder in enumerate(folders):
        images = sorted(
            p
            for p in folder.iterdir()
            if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
        )
        if not images:
            raise ValueError(
                f"class folder {folder.name!r}: expected .png, .jpg or .jpeg images in "
                f"{str(folder)!r}; got none"
            )
        files += images
        labels += [label] * len(images)
    return tuple(p.name for p in folders), files, labels


def _fingerprint(root: Path, files: list[Path], options: dict) -> str:
    """sha256 (first 20 hex digits) of what the decoded arrays depend on."""
    import PIL

    listing = []
    for file in files:
        stat = file.stat()
        listing.append([file.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns])
    text = json.dumps(
        {"format": _CACHE_FORMAT, "pillow": PIL.__version__, "options": options, "files": listing}
    )
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _decode_files(
    files: list[Path], image_size: tuple[int, int] | None, grayscale: bool | None
) -> np.ndarray:
    """Decodes every file with Pillow into one uint8 ``(N, H, W, C)`` array."""
    from PIL import Image

    headers = [_read_header(file) for file in files]  # (mode, (width, height)), header only
    if grayscale is None:
        grayscale = all(mode in _GRAY_MODES for mode, _ in headers)
    if image_size is None:
        for file, (_, size) in zip(files, headers, strict=True):
            if size != headers[0][1]:
                raise ValueError(
                    "image_size: expected every image to have the same size when image_size is "
                    f"None (or pass image_size=(height, width)); got {_hw(headers[0][1])} for "
                    f"{str(files[0])!r} and {_hw(size)} for {str(file)!r}"
                )
        image_size = headers[0][1][::-1]
    mode = "L" if grayscale else "RGB"
    out = np.empty((len(files), *image_size, 1 if grayscale else 3), np.uint8)
    for i, file in enumerate(files):
        with _decoding(file), Image.open(file) as image:
            image = image.convert(mode)
            if image.size != image_size[::-1]:
                image = image.resize(image_size[::-1], Image.Resampling.BILINEAR)
            out[i] = np.asarray(image).reshape(out.shape[1:])
    return out


def _read_header(file: Path) -> tuple[str, tuple[int, int]]:
    from PIL import Image

    with _decoding(file), Image.open(file) as image:
        return image.mode, image.size


@contextlib.contextmanager
def _decoding(file: Path) -> Iterator[None]:
    """Turns Pillow's errors while reading ``file`` into one ValueError that names the file."""
    from PIL import Image

    try:
        yield
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(
            f"{str(file)!r}: expected a PNG or JPEG image; got a file that cannot be decoded "
            f"({type(error).__name__}: {error})"
        ) from None


def _hw(size: tuple[int, int]) -> str:
    return f"{size[1]}x{size[0]} (height x width)"


def _read_cache(file: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]] | None:
    """The cached arrays, or None when there are none or they cannot be read."""
    try:
        # An open file, not a path: np.load leaks its own handle when the zip is damaged.
        with open(file, "rb") as f, np.load(f, allow_pickle=False) as cached:
            images, labels = cached["images"], cached["labels"]
            class_names = tuple(str(name) for name in cached["class_names"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # damaged: decoded again and replaced
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(labels):
        return None
    return images, labels, class_names


def _write_cache(
    file: Path, images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...]
) -> None:
    """Writes the cache atomically: a temporary file in the same folder, then os.replace."""
    temp = None
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=file.parent, prefix=f".{file.stem}-", suffix=".tmp", delete=False
        ) as f:
            temp = f.name
            np.savez(f, images=images, labels=labels, class_names=np.asarray(class_names, str))
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, file)
    except OSError as error:
        warnings.warn(
            f"cache_dir: cannot write the decoded images to {str(file)!r} ({error}); they will "
            "be decoded again next time (pass a writable cache_dir)",
            stacklevel=3,
        )
        if temp is not None and os.path.exists(temp):
            os.unlink(temp)
