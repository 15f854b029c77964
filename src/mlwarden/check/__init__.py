"""`mlwarden check`: the detector's drift and data-quality checks on two data sets, offline.

For a training or batch pipeline's CI: compare the data a model is about to see (or was
trained on) with a reference. The checks, the code and the defaults are the detector's
(`detector/checks.py`); this package reads, runs and renders, calculation apart from
rendering:

    columns.py  the forms a column takes (`DataColumn`, `Encoded`), read by the detector's rules
    read.py     data files into columns: CSV, Parquet, JSON Lines, local or http(s)
    run.py      `check_columns` (in-memory columns) and `run_check` (two files): the calculation
    result.py   `CheckReport`, `FeatureCheck`: the result model and its JSON form (docs/check.md)
    render.py   text, JSON, and HTML (drawn by `mlwarden.report`)

Exit status of the command: 0 when the report is produced and nothing selected by
`--fail-on` was found; 1 when findings match `--fail-on`; 2 on bad input.
"""

from mlwarden.check.columns import CheckError, ColumnValues, DataColumn, Encoded
from mlwarden.check.read import DEFAULT_LIMIT, read_columns
from mlwarden.check.render import render, render_text
from mlwarden.check.result import FAIL_ON, SCHEMA_ID, CheckReport, FeatureCheck
from mlwarden.check.run import Progress, check_columns, run_check, settings_of

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
