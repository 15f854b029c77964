"""Data files (a reference, or data to check): CSV, JSON Lines, Parquet, read into raw columns.

Formats, by file extension (or `fmt`):
- CSV with a header row; empty cells are missing; cells that parse as numbers
  are numbers, everything else is text (the column's declared type decides
  later whether text in a numeric column is a type error).
- JSON Lines: one object per line, either a flat row (`{"amount": 1, ...}`) or
  a record in the ingest format (`{"features": {...}, "outputs": {...}}`).
- Parquet: through pyarrow, when it is installed (`pip install pyarrow`); the
  error says so when it is not.

The result is `{column: values}`; `load_reference_bytes` is the pure part,
`read_reference` adds the file or URL fetch. `parse_cell` is the one rule for a text
cell (CSV): empty is missing, a number is a number, anything else is text; `mlwarden
check` reads CSV cells by it too.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from mlwarden.records import Value

MAX_REFERENCE_BYTES = 512 << 20


class DataFileError(ValueError):
    """The file could not be read; the message names the file and the place."""


def parse_cell(text: str) -> Value:
    """A text cell's value: None when empty, an int or float when it reads as one, else the text."""
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def load_reference_bytes(data: bytes, *, fmt: str, name: str, limit: int) -> dict[str, list[Value]]:
    """Columns from one reference file's bytes; at most `limit` rows are read."""
    if fmt == "csv":
        return _csv(data, name, limit)
    if fmt == "jsonl":
        return _jsonl(data, name, limit)
    if fmt == "parquet":
        return _parquet(data, name, limit)
    raise DataFileError(f"{name}: unknown format {fmt!r}; use csv, jsonl or parquet")


def _csv(data: bytes, name: str, limit: int) -> dict[str, list[Value]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataFileError(f"{name}: not UTF-8 at byte {exc.start}") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise DataFileError(f"{name}: empty CSV (a header row naming the columns is required)")
    columns: dict[str, list[Value]] = {h: [] for h in header}
    for lineno, row in enumerate(reader, start=2):
        if len(columns[header[0]]) >= limit:
            break
        if not row:
            continue
        if len(row) != len(header):
            raise DataFileError(
                f"{name}: line {lineno} has {len(row)} cells, the header has {len(header)}"
            )
        for h, cell in zip(header, row, strict=True):
            columns[h].append(parse_cell(cell.strip()))
    return columns


def _jsonl(data: bytes, name: str, limit: int) -> dict[str, list[Value]]:
    columns: dict[str, list[Value]] = {}
    n = 0
    for lineno, line in enumerate(data.splitlines(), start=1):
        if n >= limit:
            break
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataFileError(f"{name}: line {lineno} is not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise DataFileError(f"{name}: line {lineno} must be a JSON object")
        row: dict[str, Any] = obj
        if isinstance(obj.get("features"), dict):
            row = {**obj["features"], **(obj.get("outputs") or {})}
        for key, value in row.items():
            if isinstance(value, dict | list):
                continue
            column = columns.setdefault(key, [None] * n)
            column.extend([None] * (n - len(column)))
            column.append(value)
        n += 1
    for column in columns.values():
        column.extend([None] * (n - len(column)))
    return columns


def _parquet(data: bytes, name: str, limit: int) -> dict[str, list[Value]]:
    try:
        import pyarrow.parquet as pq  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise DataFileError(
            f"{name}: reading Parquet needs pyarrow, which is not installed "
            "(pip install pyarrow), or convert the reference to CSV or JSON Lines"
        ) from None
    table = pq.read_table(io.BytesIO(data)).slice(0, limit)
    return {str(k): list(v) for k, v in table.to_pydict().items()}


def format_of(location: str) -> str:
    lower = location.lower().split("?", 1)[0]
    for suffix, fmt in (
        (".csv", "csv"),
        (".jsonl", "jsonl"),
        (".ndjson", "jsonl"),
        (".parquet", "parquet"),
        (".pq", "parquet"),
    ):
        if lower.endswith(suffix):
            return fmt
    raise DataFileError(
        f"{location}: cannot tell the format from the name; use .csv, .jsonl or .parquet"
    )


def read_reference(location: str, *, limit: int) -> dict[str, list[Value]]:
    """Read a reference from a path or an http(s) URL (blocking: call it off the event loop)."""
    fmt = format_of(location)
    if location.startswith(("http://", "https://")):
        import urllib.request  # reason: ssl and http load only for a reference given by URL

        try:
            with urllib.request.urlopen(location, timeout=60) as resp:
                data = resp.read(MAX_REFERENCE_BYTES + 1)
        except OSError as exc:
            raise DataFileError(f"{location}: cannot fetch: {exc}") from None
    else:
        try:
            with Path(location).open("rb") as f:
                data = f.read(MAX_REFERENCE_BYTES + 1)
        except OSError as exc:
            raise DataFileError(f"{location}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_REFERENCE_BYTES:
        raise DataFileError(f"{location}: larger than {MAX_REFERENCE_BYTES >> 20} MiB")
    return load_reference_bytes(data, fmt=fmt, name=location, limit=limit)
