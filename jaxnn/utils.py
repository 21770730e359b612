"""Small helpers shared by several modules: pytree paths and digests, rounding up, a writable-folder
probe.

Nothing here knows about training; every other jaxnn module may import it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

__all__ = ["ceil_div", "last_key", "path_str", "probe_writable", "round_up", "tree_digest"]


def ceil_div(n: int, d: int) -> int:
    """``⌈n / d⌉`` for integers, without floating point: ``ceil_div(7, 2) == 4``."""
    return -(-n // d)


def round_up(n: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is ``>= n``: ``round_up(7, 4) == 8``."""
    return ceil_div(n, multiple) * multiple


def _key_str(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def path_str(path: Sequence[Any]) -> str:
    """A pytree key path as orbax names it on disk: ``(DictKey('params'), DictKey('Dense_0'),
    ...)`` -> ``"params/Dense_0/..."``; sequence and NamedTuple entries by index or field name."""
    return "/".join(_key_str(key) for key in path)


def last_key(path: Sequence[Any]) -> str | None:
    """The last component of a pytree key path as a string (``"kernel"``), None for the root."""
    return _key_str(path[-1]) if path else None


def probe_writable(directory: str | os.PathLike) -> None:
    """Creates ``directory`` if needed and writes and removes a probe file in it.

    Raises:
      OSError: when the folder cannot be created or written (callers word the message).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    probe = directory / f".write_test_{os.getpid()}"  # one per process
    probe.write_text("ok")
    probe.unlink()


def tree_digest(tree: Any, *, name: Any = jax.tree_util.keystr) -> str:
    """sha256 over every leaf's path, dtype, shape and bytes, in sorted path order.

    Two pytrees have the same digest exactly when they are bitwise identical (leaves on devices
    are fetched to the host first). ``name`` turns a key path into the string hashed:
    ``path_str`` gives the same digest to a dataclass and to the dict of its fields (what a
    checkpoint read without a template holds).
    """
    leaves = [
        (name(path), leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
    ]
    digest = hashlib.sha256()
    for path, leaf in sorted(leaves, key=lambda item: item[0]):
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{path}|{array.dtype}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
