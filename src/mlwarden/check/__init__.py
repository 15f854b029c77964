"""`mlwarden check`: the detector's drift and data-quality checks on two data sets, offline.

For a training or batch pipeline's CI: compare the data a model is about to see (or was
trained on) with a reference. The checks, the code and the defaults are the detector's
(`detector/checks.py`); this package reads, runs and renders, calculation apart from
rendering:

    columns.py  the forms a column takes (`DataColumn`, `Encoded`), read by the detector's rules
    read.py     data files into columns: CSV, Parquet, JSON Lines, local or http(s)
    files.py    `run_check` (two files): reads both while the checks' code loads
    run.py      `check_columns` (in-memory columns): the calculation
    result.py   `CheckReport`, `FeatureCheck`: the result model and its JSON form (docs/check.md)
    render.py   text, JSON, and HTML (drawn by `mlwarden.report`)

Names are imported from their module when first used (PEP 562), so that `mlwarden check`
can start reading its files before the checks' code (the detector's modules, the
statistics) has loaded: `from mlwarden.check import run_check` loads the reader only.

Exit status of the command: 0 when the report is produced and nothing selected by
`--fail-on` was found; 1 when findings match `--fail-on`; 2 on bad input.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlwarden.check.columns import CheckError, ColumnValues, DataColumn, Encoded, Progress
    from mlwarden.check.files import run_check
    from mlwarden.check.read import DEFAULT_LIMIT, read_columns
    from mlwarden.check.render import render, render_text
    from mlwarden.check.result import FAIL_ON, SCHEMA_ID, CheckReport, FeatureCheck
    from mlwarden.check.run import check_columns, settings_of

_MODULE_OF = {
    "CheckError": "columns", "ColumnValues": "columns", "DataColumn": "columns",
    "Encoded": "columns", "Progress": "columns", "run_check": "files",
    "DEFAULT_LIMIT": "read", "read_columns": "read", "render": "render",
    "render_text": "render", "FAIL_ON": "result", "SCHEMA_ID": "result",
    "CheckReport": "result", "FeatureCheck": "result", "check_columns": "run",
    "settings_of": "run",
}  # fmt: skip

__all__ = [
    "DEFAULT_LIMIT",
    "FAIL_ON",
    "SCHEMA_ID",
    "CheckError",
    "CheckReport",
    "ColumnValues",
    "DataColumn",
    "Encoded",
    "FeatureCheck",
    "Progress",
    "check_columns",
    "read_columns",
    "render",
    "render_text",
    "run_check",
    "settings_of",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
