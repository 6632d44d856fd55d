"""The built-in app's model on the wire: one Array per dtype, not one per tensor.

Flower moves a message as a tree of objects, each pulled or pushed in its own request, and an
ArrayRecord is one object per tensor and one per 5 MB chunk of it. Every request is TLS through
the front proxy, signed by the SuperNode, and handled by the SuperLink; the ClientApp repeats them
with its SuperNode. For the digits model that was about 37 object requests per message, against
5 for everything else. Packed, the model is one flat Array per dtype (a float32 model: one), with
its layout (names, dtypes, shapes) in a ConfigRecord beside it; that is lossless, so the strategy,
the checkpoints and the final model see the same per-tensor ArrayRecord, and the same numbers.

Both ends read either form (a message without a layout is per-tensor), and a client answers in the
form it was asked in. The server checks a reply's model against the one it sent: the same names
and shapes, numbers only, or the reply is a failure (a client is not trusted to send a model that
fits). Dtypes may differ: a strategy's float64 model comes back as the client model's float32.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from kubeflower_workload.messages import ARRAYS, LAYOUT

NAMES, DTYPES, NDIMS, DIMS = "names", "dtypes", "ndims", "dims"
"""The layout record's keys: tensor names in order, each one's dtype and number of dimensions, and
all dimensions one after the other."""
NUMERIC = frozenset(
    np.dtype(code).name for kind in ("Integer", "UnsignedInteger", "Float", "Complex") for code in np.typecodes[kind]
) | {"bool"}
"""The dtypes a packed model may have: numbers (no objects, strings or records)."""
MAX_TENSORS = 100_000
"""More tensors than any model has: a layout claiming more is refused before it is read."""


class WireError(ValueError):
    """Packed arrays and their layout do not fit together (or not the model that was sent)."""


Layout = tuple[tuple[str, str, tuple[int, ...]], ...]
"""(name, dtype, shape) of each tensor, in order."""
Shapes = tuple[tuple[str, tuple[int, ...]], ...]
"""(name, shape) of each tensor, in order."""


def pack(tensors: Mapping[str, np.ndarray]) -> tuple[ArrayRecord, ConfigRecord]:
    """The tensors as one flat Array per dtype (in order of first appearance), and their layout."""
    groups: dict[str, list[np.ndarray]] = {}
    for value in tensors.values():
        groups.setdefault(value.dtype.name, []).append(value.reshape(-1))
    packed = ArrayRecord({dtype: Array(np.concatenate(parts)) for dtype, parts in groups.items()})
    layout = ConfigRecord(
        {
            NAMES: list(tensors),
            DTYPES: [value.dtype.name for value in tensors.values()],
            NDIMS: [value.ndim for value in tensors.values()],
            DIMS: [int(d) for value in tensors.values() for d in value.shape],
        }
    )
    return packed, layout


def pack_record(record: ArrayRecord) -> tuple[ArrayRecord, ConfigRecord]:
    """`pack` of an ArrayRecord's tensors."""
    return pack({name: array.numpy() for name, array in record.items()})


def layout_of(record: ConfigRecord) -> Layout:
    """The layout a record describes, checked to be well formed (types, lengths, sizes)."""
    names, dtypes, ndims, dims = (_list(record, key, kind) for key, kind in _KEYS.items())
    if not len(names) == len(dtypes) == len(ndims) or len(names) > MAX_TENSORS:
        raise WireError(f"layout: {NAMES}, {DTYPES} and {NDIMS} must have one entry per tensor (at most {MAX_TENSORS})")
    if len(set(names)) != len(names):
        raise WireError("layout: a tensor name appears twice")
    if any(n < 0 for n in ndims) or sum(ndims) != len(dims) or any(d < 0 for d in dims):
        raise WireError(f"layout: {NDIMS} and {DIMS} do not describe the shapes (negative, or counts differ)")
    if not set(dtypes) <= NUMERIC:
        raise WireError(f"layout: {DTYPES} must name numeric numpy dtypes ({', '.join(sorted(NUMERIC))})")
    layout, start = [], 0
    for name, dtype, ndim in zip(names, dtypes, ndims, strict=True):
        layout.append((name, dtype, tuple(dims[start : start + ndim])))
        start += ndim
    return tuple(layout)


def unpack(packed: ArrayRecord, layout: Layout) -> dict[str, np.ndarray]:
    """The tensors, by name and in order, from their packed Arrays: every element accounted for."""
    sizes: dict[str, int] = {}
    for _, dtype, shape in layout:
        sizes[dtype] = sizes.get(dtype, 0) + math.prod(shape)
    if set(packed) != set(sizes):
        raise WireError(f"packed arrays: expected one per dtype {sorted(sizes)}, got {len(packed)} others")
    flat: dict[str, np.ndarray] = {}
    for dtype, size in sizes.items():
        flat[dtype] = decode(packed[dtype])
        if flat[dtype].dtype.name != dtype or flat[dtype].shape != (size,):
            raise WireError(f"packed arrays: the {dtype} Array must be flat with {size} elements")
    tensors, offsets = {}, dict.fromkeys(sizes, 0)
    for name, dtype, shape in layout:
        start, offsets[dtype] = offsets[dtype], offsets[dtype] + math.prod(shape)
        tensors[name] = flat[dtype][start : offsets[dtype]].reshape(shape)
    return tensors


def received(content: RecordDict) -> tuple[dict[str, np.ndarray], bool]:
    """The model a message carries, and whether it came packed (a reply should be packed too)."""
    if LAYOUT in content:
        return unpack(content.array_records[ARRAYS], layout_of(content.config_records[LAYOUT])), True
    tensors = {name: decode(array) for name, array in content.array_records[ARRAYS].items()}
    if not {value.dtype.name for value in tensors.values()} <= NUMERIC:
        raise WireError(f"arrays: a tensor's dtype is not numeric ({', '.join(sorted(NUMERIC))})")
    return tensors, False


def decode(array: Array) -> np.ndarray:
    """An Array's numbers; bytes numpy cannot read (a peer's, so untrusted) are a WireError."""
    try:
        return array.numpy()
    except (TypeError, ValueError, EOFError, OSError) as error:
        raise WireError(f"arrays: an Array does not hold a readable numpy array ({type(error).__name__})") from None


def shapes(tensors: Mapping[str, np.ndarray] | ArrayRecord) -> Shapes:
    """The names and shapes of tensors, in order (what a reply's model must share with the one sent)."""
    return tuple((name, tuple(value.shape)) for name, value in tensors.items())


_KEYS: dict[str, type] = {NAMES: str, DTYPES: str, NDIMS: int, DIMS: int}


def _list(record: ConfigRecord, key: str, kind: type) -> list[Any]:
    value = record.get(key)
    if not isinstance(value, list) or not all(type(item) is kind for item in value):
        raise WireError(f"layout: {key!r} must be a list of {kind.__name__}")
    return value
