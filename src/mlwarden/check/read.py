"""Data files into columns for `mlwarden check`: CSV, Parquet, JSON Lines, local or http(s).

Files are read by pyarrow's columnar readers with the detector's reading rules
(`detector/datafile.py`): only an empty cell is missing, a CSV cell that reads as a number
is a number (`parse_cell`, applied once per distinct cell), anything else is text. A JSON
Lines file whose column mixes numbers and text is read row by row as the detector reads
it, so the mixed values become type errors.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mlwarden.check.columns import (
    CheckError,
    DataColumn,
    Encoded,
    combine,
    number_view,
    valid_mask,
)
from mlwarden.detector.datafile import (
    MAX_REFERENCE_BYTES,
    DataFileError,
    format_of,
    parse_cell,
    read_reference,
)

DEFAULT_LIMIT = 50_000_000


def read_columns(
    path: str,
    *,
    limit: int = DEFAULT_LIMIT,
    types: Mapping[str, pa.DataType] | None = None,
    on_types: Callable[[dict[str, pa.DataType]], None] | None = None,
) -> dict[str, DataColumn]:
    """A data file's columns (CSV, Parquet or JSON Lines, by extension); CheckError if unusable.

    `on_types`: called with a CSV file's column types (arrow's) as soon as they are known,
    before its columns are converted. `types`: those of another file (the reference's): a
    CSV file's columns of the same names are first read as those types (`_csv_hints`),
    which spares the reader its type inference; where a cell does not fit, the file is
    read again with inferred types. Either way the columns are the same.
    """
    try:
        fmt = format_of(path)
    except DataFileError as exc:
        raise CheckError(str(exc)) from None
    source: Any = path
    if path.startswith(("http://", "https://")):
        source = pa.BufferReader(_fetch(path))
    else:
        try:
            with Path(path).open("rb") as f:
                empty = not f.read(1)
        except IsADirectoryError:
            raise CheckError(f"{path}: cannot read: is a directory") from None
        except OSError as exc:
            raise CheckError(f"{path}: cannot read: {exc.strerror or exc}") from None
        if empty:
            raise CheckError(f"{path}: the file is empty (no columns, no rows)")
    try:
        if fmt == "csv":
            columns = _read_csv(source, path, _csv_hints(types or {}), on_types)
        elif fmt == "parquet":
            columns = _read_parquet(source, path)
        else:
            columns = _read_jsonl(source, path, limit)
    except (pa.ArrowException, OSError, ValueError) as exc:
        if isinstance(exc, CheckError):
            raise
        what = {"csv": "CSV", "parquet": "Parquet", "jsonl": "JSON Lines"}[fmt]
        raise CheckError(f"{path}: not a readable {what} file: {_first_line(exc)}") from None
    if not columns:
        raise CheckError(f"{path}: no columns")
    n = len(next(iter(columns.values())))
    if n == 0:
        raise CheckError(f"{path}: no rows (the columns are there, the data is not)")
    if n > limit:
        columns = {k: _head(v, limit) for k, v in columns.items()}
    return columns


def _fetch(url: str) -> bytes:
    import urllib.request  # reason: ssl and http load only for a file given by URL

    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            data: bytes = resp.read(MAX_REFERENCE_BYTES + 1)
    except OSError as exc:
        raise CheckError(f"{url}: cannot fetch: {exc}") from None
    if len(data) > MAX_REFERENCE_BYTES:
        raise CheckError(f"{url}: larger than {MAX_REFERENCE_BYTES >> 20} MiB; download it first")
    if not data:
        raise CheckError(f"{url}: the file is empty (no columns, no rows)")
    return data


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _head(column: DataColumn, n: int) -> DataColumn:
    if isinstance(column, Encoded):
        return Encoded(column.uniques, column.codes[:n])
    return column[:n]


_TEXT = pa.dictionary(pa.int32(), pa.string())


def _is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or t == _TEXT)


_PLAIN = (pa.types.is_integer, pa.types.is_floating, _is_text, pa.types.is_null)
# A text column is read dictionary-encoded (distinct cells and a code per row) while a block
# of the file holds at most this many distinct cells; beyond, arrow reads it as plain text.
_DICTIONARY_CELLS = 4096
_HINTED = (pa.int64(), pa.float64(), _TEXT, pa.string())


def _csv_hints(types: Mapping[str, pa.DataType]) -> dict[str, pa.DataType]:
    """The arrow types to read a CSV file's columns as, from another file's (`on_types`).

    Only types whose reading equals inference's wherever it succeeds: int64 (a column of
    integers infers as int64); float64 (integers read as floats are the same numbers, and
    the same categories below 2**53, where floats hold every integer: `_category` writes
    3.0 as "3"); text (a cell is read by `parse_cell`, the rule inferred numbers follow).
    A column that is empty in the other file (the null type) is left to inference.
    """
    return {n: t for n, t in types.items() if t in _HINTED}


def _read_csv(
    source: Any,
    path: str,
    hints: Mapping[str, pa.DataType],
    on_types: Callable[[dict[str, pa.DataType]], None] | None,
) -> dict[str, DataColumn]:
    import pyarrow.csv as pcsv  # reason: load only the reader of this format

    # The detector's CSV rules: only an empty cell is missing, no booleans, no dates.
    convert = pcsv.ConvertOptions(
        null_values=[""], strings_can_be_null=True, true_values=[], false_values=[],
        timestamp_parsers=[], auto_dict_encode=True, auto_dict_max_cardinality=_DICTIONARY_CELLS,
    )  # fmt: skip
    table = None
    if hints:
        convert.column_types = dict(hints)
        try:
            table = _csv_table(pcsv, source, convert)
        except pa.ArrowInvalid:  # a cell that does not fit its hinted type: infer them all
            convert.column_types = {}
    if table is None:
        table = _csv_table(pcsv, source, convert)
    odd = [f.name for f in table.schema if not any(t(f.type) for t in _PLAIN)]
    if odd:  # dates and the like: read those columns again as text
        convert.column_types = {**convert.column_types, **dict.fromkeys(odd, _TEXT)}
        table = _csv_table(pcsv, source, convert)
    if on_types is not None:
        on_types({f.name: f.type for f in table.schema})
    _unique_names(table.column_names, path)
    out: dict[str, DataColumn] = {}
    for name, chunked in zip(table.column_names, table.columns, strict=True):
        out[name] = _csv_text(chunked) if _is_text(chunked.type) else combine(chunked)
    return out


def _csv_table(pcsv: Any, source: Any, convert: Any) -> pa.Table:
    if isinstance(source, pa.BufferReader):
        source.seek(0)
    table: pa.Table = pcsv.read_csv(source, convert_options=convert)
    return table


def _csv_text(chunked: pa.ChunkedArray) -> Encoded:
    """A CSV text column, each distinct cell read once by the detector's rules.

    Its distinct cells are in the order they first appear: each block's dictionary is
    (arrow adds a cell to it when first seen, as `dictionary_encode` does), and a block's
    cells not seen in earlier blocks are added in that order.
    """
    chunks = chunked.chunks
    if not pa.types.is_dictionary(chunked.type):  # too many distinct cells for arrow's reader
        chunks = [combine(chunked).dictionary_encode()]
    code_of: dict[str, int] = {}
    parts = []
    for chunk in chunks:
        cells = chunk.dictionary.to_pylist()
        # The chunk's codes to the column's; a missing cell (code -1) reads the last slot.
        to_column = np.array([code_of.setdefault(c, len(code_of)) for c in cells] + [-1])
        indices = chunk.indices
        at = number_view(indices).astype(np.intp)
        valid = valid_mask(indices)
        if valid is not None:
            at[~valid] = -1
        parts.append(to_column[at])
    codes = np.concatenate(parts) if parts else np.zeros(0, dtype=np.intp)
    return Encoded([parse_cell(str(c).strip()) for c in code_of], codes.astype(np.intp, copy=False))


def _read_parquet(source: Any, path: str) -> dict[str, DataColumn]:
    import pyarrow.parquet as pq  # reason: load only the reader of this format

    table = pq.read_table(source)
    _unique_names(table.column_names, path)
    return _flat(table)


def _read_jsonl(source: Any, path: str, limit: int) -> dict[str, DataColumn]:
    import pyarrow.json as pjson  # reason: load only the reader of this format

    try:
        table = pjson.read_json(source)
    except pa.ArrowInvalid as exc:
        if "changed from" not in str(exc) and "type" not in str(exc).lower():
            raise
        # A column mixes numbers and text (arrow wants one type per column): read it
        # row by row as the detector does; the mixed values become type errors.
        try:
            raw = read_reference(path, limit=limit)
        except DataFileError as error:
            raise CheckError(str(error)) from None
        return {name: list(values) for name, values in raw.items()}
    names = table.column_names
    if "features" in names and pa.types.is_struct(table.schema.field("features").type):
        # The ingest format: {"features": {...}, "outputs": {...}} per line.
        parts = [table.column("features").combine_chunks()]
        if "outputs" in names and pa.types.is_struct(table.schema.field("outputs").type):
            parts.append(table.column("outputs").combine_chunks())
        fields = {
            part.type.field(i).name: part.field(i)
            for part in parts
            for i in range(part.type.num_fields)
        }
        table = pa.table(fields)
    return _flat(table)


def _flat(table: pa.Table) -> dict[str, DataColumn]:
    out: dict[str, DataColumn] = {}
    for name, chunked in zip(table.column_names, table.columns, strict=True):
        array = combine(chunked)
        if pa.types.is_nested(array.type):
            continue  # lists and objects are not features (the detector skips them too)
        out[name] = array
    return out


def _unique_names(names: list[str], path: str) -> None:
    twice = sorted(n for n, c in Counter(names).items() if c > 1)
    if twice:
        raise CheckError(f"{path}: column name(s) used more than once: {', '.join(twice)}")
