"""The forms a column of data takes in `mlwarden check`, and the detector's rules on them.

A column arrives as a numpy array, a list of JSON scalars, a pyarrow array or an `Encoded`
column (CSV text: distinct values and a code per row), and is normalised once into a
`DataColumn`. The functions here read a whole column the way the detector reads values one
record at a time (`detector.core.to_numeric`, `to_categorical`, `infer_type`), so the
sketches built from them equal the detector's.

Not to be confused with `detector.checks.Column`, which describes an observed column
(its name, kind and type), not its values.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa

from mlwarden.records import Value

# (step, done, total): "reading ref.csv" 0 of 1 ... 1 of 1; "checking columns" i of n.
Progress: TypeAlias = Callable[[str, int, int], None]

# detector.core (and the detector's modules it loads) is imported in the functions that use
# it: `check/read.py` imports this module, and `mlwarden check` starts reading the files
# before the checks' code loads (`check/files.py`).


class CheckError(ValueError):
    """Input `mlwarden check` cannot judge; the message names the file or column and why."""


@dataclass(frozen=True)
class Encoded:
    """A column as its distinct values, in the order they first appear, and a code per row.

    Code -1 is a missing value. CSV text columns arrive like this: their distinct cells
    are parsed by the detector's rules once each, not once per row.
    """

    uniques: list[Value]
    codes: np.ndarray

    def __len__(self) -> int:
        return int(self.codes.size)


ColumnValues: TypeAlias = Sequence[Any] | np.ndarray | pa.Array | pa.ChunkedArray | Encoded
# A column once normalised: an arrow array (not dictionary, not nested), an Encoded column,
# or a plain list of values (mixed types: judged value by value with the detector's code).
DataColumn: TypeAlias = pa.Array | Encoded | list[Value]


def normalise(name: str, values: ColumnValues, side: str) -> DataColumn:
    """Any supported column form as an arrow array, an Encoded column or a list of values."""
    if isinstance(values, Encoded):
        return values
    if isinstance(values, pa.Array | pa.ChunkedArray):
        array = combine(values)
    else:
        if isinstance(values, np.ndarray) and values.ndim != 1:
            raise CheckError(f"{side} column {name!r}: expected one dimension, got {values.ndim}")
        try:
            array = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
            return list(values)  # mixed types: value by value, as the detector does
        array = combine(array)
    if pa.types.is_nested(array.type):
        return list(array.to_pylist())
    return array


def combine(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_large_string(array.type) or str(array.type) == "string_view":
        array = array.cast(pa.string())
    return array


# numpy's form of arrow's fixed-width numbers: their values are read as views of the
# arrays' buffers. (`Array.to_numpy` would import pandas when it is installed, and
# `Array.cast` pyarrow.compute: a fifth of a second of `mlwarden check`'s start.)
_NUMPY_OF: dict[pa.DataType, type[np.number[Any]]] = {
    pa.int8(): np.int8, pa.int16(): np.int16, pa.int32(): np.int32, pa.int64(): np.int64,
    pa.uint8(): np.uint8, pa.uint16(): np.uint16, pa.uint32(): np.uint32,
    pa.uint64(): np.uint64, pa.float16(): np.float16, pa.float32(): np.float32,
    pa.float64(): np.float64,
}  # fmt: skip


def number_view(array: pa.Array) -> np.ndarray:
    """The values of a fixed-width number array (`_NUMPY_OF`), without a copy; what a
    missing slot holds is undefined (see `valid_mask`)."""
    dtype = np.dtype(_NUMPY_OF[array.type])
    data = array.buffers()[1]
    if data is None:
        return np.zeros(len(array), dtype=dtype)
    return np.frombuffer(data, dtype=dtype, count=len(array), offset=array.offset * dtype.itemsize)


def valid_mask(array: pa.Array) -> np.ndarray | None:
    """Per row, whether a value is present; None when none is missing."""
    if not array.null_count:
        return None
    bitmap = array.buffers()[0]
    if bitmap is None:  # the null type: nothing is present
        return np.zeros(len(array), dtype=bool)
    bits = np.unpackbits(
        np.frombuffer(bitmap, dtype=np.uint8), count=array.offset + len(array), bitorder="little"
    )
    out: np.ndarray = bits[array.offset :].astype(bool)
    return out


def _is_number_type(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t))


def inferred_type(column: DataColumn) -> str:
    """`detector.core.infer_type`, read from the column's form instead of every value."""
    from mlwarden.detector.core import infer_type  # reason: see the imports

    if isinstance(column, pa.Array):
        numeric = _is_number_type(column.type) and column.null_count < len(column)
        return "numeric" if numeric else "categorical"
    if isinstance(column, Encoded):
        return infer_type(column.uniques)
    return infer_type(column)


def present(column: DataColumn) -> int:
    if isinstance(column, pa.Array):
        return int(len(column) - column.null_count)
    if isinstance(column, Encoded):
        return int(np.count_nonzero(column.codes >= 0))
    return sum(v is not None for v in column)


def numeric_values(column: DataColumn) -> tuple[np.ndarray, int]:
    """`detector.core.to_numeric` of a whole column: floats (NaN missing), type errors."""
    from mlwarden.detector.core import to_numeric  # reason: see the imports

    if isinstance(column, list):
        return to_numeric(column)
    if isinstance(column, Encoded):
        table, errors = to_numeric(column.uniques)
        wrong = np.array([v is not None and not isinstance(v, int | float) for v in column.uniques])
        lookup = np.append(table, np.nan)  # code -1 (missing) reads the last slot
        x = lookup[column.codes]
        n_errors = 0
        if errors:
            counts = np.bincount(column.codes[column.codes >= 0], minlength=len(column.uniques))
            n_errors = int(counts[wrong].sum())
        return x, n_errors
    t = column.type
    if t in _NUMPY_OF:
        x = number_view(column).astype(np.float64, copy=False)
        valid = valid_mask(column)
        return (x if valid is None else np.where(valid, x, np.nan)), 0
    if _is_number_type(t) or pa.types.is_boolean(t) or pa.types.is_null(t):
        floats = column.cast(pa.float64())
        return floats.to_numpy(zero_copy_only=False).astype(np.float64, copy=False), 0
    # Text, dates, bytes where a number belongs: every present value is a type error.
    return np.full(len(column), np.nan), present(column)


def category_counts(column: DataColumn) -> tuple[dict[str, int], int]:
    """`to_categorical` of a whole column, tallied: counts in first-appearance order, missing."""
    from mlwarden.detector.core import to_categorical  # reason: see the imports

    if isinstance(column, list):
        tally = Counter(to_categorical(column))
        missing = tally.pop(None, 0)
        return {k: v for k, v in tally.items() if k is not None}, missing
    if isinstance(column, Encoded):
        counts = np.bincount(column.codes[column.codes >= 0], minlength=len(column.uniques))
        labels: list[str | None] = to_categorical(column.uniques)
        tallies = counts.tolist()
        missing = int(np.count_nonzero(column.codes < 0))
    else:
        import pyarrow.compute as pc  # reason: only numbers checked as categories need it

        vc = pc.value_counts(column)
        values = vc.field("values")
        tallies = vc.field("counts").to_pylist()
        if pa.types.is_string(values.type):
            labels = values.to_pylist()
        else:
            labels = to_categorical(values.to_pylist())
        missing = 0
    out: dict[str, int] = {}
    for label, c in zip(labels, tallies, strict=True):
        if label is None:
            missing += c
        elif c:
            out[label] = out.get(label, 0) + c
    return out, missing


def kind_name(column: DataColumn) -> str:
    if isinstance(column, pa.Array):
        t = column.type
        if pa.types.is_null(t) or column.null_count == len(column):
            return "empty"
        if _is_number_type(t):
            return "numbers"
        if pa.types.is_string(t):
            return "text"
        return str(t)
    values = column.uniques if isinstance(column, Encoded) else column
    present = [v for v in values if v is not None]
    if not present:
        return "empty"
    numbers = sum(isinstance(v, int | float) and not isinstance(v, bool) for v in present)
    if numbers == len(present):
        return "numbers"
    return "numbers and text" if numbers else "text"
