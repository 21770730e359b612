"""Bulk decoding of tfds' serialized examples (``tf.train.Example`` protos) with numpy.

Our builders write ``{"image": uint8 bytes, "label": int64}`` examples. When every record of a
split has the same length and the same bytes outside the image and label values — true for our
builders, and checked here, not assumed — the values sit at the same offsets in every record,
and a whole split decodes as slices of one ``(N, record_length)`` byte table. Anything else falls
back to tfds' own per-record decoder, so the result never depends on the fast path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["decode_examples", "example_layout"]


class _Malformed(Exception):
    """The record is not the simple Example layout the fast path understands."""


def _varint(buffer: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buffer) or shift > 63:
            raise _Malformed
        byte = buffer[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _length_fields(buffer: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """(field number, start, end) of each length-delimited field in buffer[start:end]."""
    fields, pos = [], start
    while pos < end:
        key, pos = _varint(buffer, pos)
        if key & 7 != 2:  # only length-delimited fields occur in the layout we accept
            raise _Malformed
        length, pos = _varint(buffer, pos)
        if pos + length > end:
            raise _Malformed
        fields.append((key >> 3, pos, pos + length))
        pos += length
    return fields


def example_layout(record: bytes) -> dict[str, tuple[str, int, int]]:
    """Where each feature's value lies in one serialized ``tf.train.Example``.

    Returns:
      feature name -> (``"bytes"`` or ``"int64"``, start, end): the single bytes value's byte
      range, or the byte range of a packed int64 list. Empty when the record has another layout
      (several values in a bytes list, float lists, unpacked ints, unknown fields).
    """
    layout: dict[str, tuple[str, int, int]] = {}
    try:
        (features,) = [f for f in _length_fields(record, 0, len(record)) if f[0] == 1]
        for number, start, end in _length_fields(record, features[1], features[2]):
            entry = dict((n, (s, e)) for n, s, e in _length_fields(record, start, end))
            if number != 1 or set(entry) != {1, 2}:
                raise _Malformed
            name = record[slice(*entry[1])].decode()
            ((kind, list_start, list_end),) = _length_fields(record, *entry[2])
            ((value_number, value_start, value_end),) = _length_fields(record, list_start, list_end)
            if value_number != 1 or kind not in (1, 3):
                raise _Malformed
            layout[name] = ("bytes" if kind == 1 else "int64", value_start, value_end)
    except (_Malformed, ValueError, UnicodeDecodeError):
        return {}
    return layout


def _fast_decode(
    records: Sequence[bytes], shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray] | None:
    lengths = set(map(len, records))
    if len(lengths) != 1:
        return None
    layout = example_layout(records[0])
    image, label = layout.get("image"), layout.get("label")
    if image is None or label is None or image[0] != "bytes" or label[0] != "int64":
        return None
    if image[2] - image[1] != int(np.prod(shape)) or label[2] - label[1] != 1:
        return None
    (length,) = lengths
    table = np.frombuffer(b"".join(records), np.uint8).reshape(len(records), length)
    structure = np.ones(length, bool)
    structure[image[1] : image[2]] = False
    structure[label[1]] = False
    # Same structure bytes everywhere => same parse everywhere; a one-byte varint is < 0x80.
    if not (table[:, structure] == table[0, structure]).all() or (table[:, label[1]] >= 0x80).any():
        return None
    images = table[:, image[1] : image[2]].reshape(len(records), *shape).copy()
    return images, table[:, label[1]].astype(np.int64)


def decode_examples(
    records: Sequence[bytes],
    shape: tuple[int, ...],
    decode_one: Callable[[bytes], dict],
) -> tuple[np.ndarray, np.ndarray]:
    """Decodes serialized ``{"image", "label"}`` examples into ``(images, labels)`` arrays.

    Args:
      records: the serialized examples, in order.
      shape: one image's shape (uint8 values).
      decode_one: tfds' decoder for one record (``features.deserialize_example_np``); the
        fallback, and the cross-check of the first and last record on the fast path.

    Returns:
      uint8 images ``(N, *shape)`` and int64 labels ``(N,)``.
    """
    if not records:
        return np.zeros((0, *shape), np.uint8), np.zeros((0,), np.int64)
    fast = _fast_decode(records, shape)
    if fast is not None:
        for i in (0, len(records) - 1):
            example = decode_one(records[i])
            if not (
                np.array_equal(example["image"], fast[0][i]) and example["label"] == fast[1][i]
            ):
                fast = None
                break
    if fast is not None:
        return fast
    examples = [decode_one(r) for r in records]
    images = np.stack([np.asarray(e["image"], np.uint8) for e in examples])
    labels = np.fromiter((e["label"] for e in examples), np.int64, len(examples))
    return images.reshape(len(examples), *shape), labels
