"""Measured time courses: loading and validating tidy data from a CSV file or a pandas DataFrame.

This module owns the data contract of DESIGN.md ("Data file"): one row per measurement with the
columns ``time``, ``observable`` and ``value`` (required), ``condition`` and ``sigma``
(optional), and every check on those rows that can be made before fitting. All problems found
are reported together in one :class:`DataError` whose message names the file (or "DataFrame"),
the row numbers, the offending text and the fix. Nothing is dropped silently: ``drop_missing``
removes rows whose value is missing, warns, and lists them in :attr:`Dataset.dropped`.

Row numbers are those a user sees: in a CSV file, the line number with the header as row 1
(so the first measurement is row 2, as in a spreadsheet); in a DataFrame, the position + 1.
Every loaded row keeps its number in the ``row`` column, so later errors can name it too.
"""

from __future__ import annotations

import csv
import decimal
import difflib
import hashlib
import io
import math
import numbers
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from ..errors import DataError, KineticsWarning
from .files import DATA_SIZE_LIMIT, decode_utf8, read_regular_file, sanitize_excerpt

__all__ = ["NOISE_MODELS", "REQUIRED_COLUMNS", "OPTIONAL_COLUMNS", "Dataset", "load_data", "describe_rows"]

NOISE_MODELS = ("constant", "proportional", "combined", "data")
REQUIRED_COLUMNS = ("time", "observable", "value")
OPTIONAL_COLUMNS = ("condition", "sigma")
ALLOWED_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
TABLE_COLUMNS = ("time", "observable", "value", "condition", "sigma", "row")
MAX_LISTED = 10            # rows named in one message before "and N more"
# Beyond this magnitude (or, for values and sigmas, below its inverse) a number's square or
# reciprocal overflows double precision in the residuals and weights: no measurement is that size.
MAX_MAGNITUDE = 1e150

_ALLOWED_TEXT = "time, observable, value (required); condition, sigma (optional)"
_ESTIMATING_NOISE = 'noise = "constant", "proportional" or "combined"'

# Cell texts that mean "no measurement" in a CSV file (compared case-insensitively).
_MISSING_TEXT = {"", "na", "nan", "n/a", "null", "none", "#n/a"}

# Column names people commonly use instead of ours; difflib alone misses most of these.
_COLUMN_ALIASES = {
    **dict.fromkeys(["t", "times", "timepoint", "time_point", "hours", "hour", "hrs", "h", "minutes", "min",
                     "days", "day", "tp"], "time"),
    **dict.fromkeys(["obs", "observables", "species", "variable", "var", "quantity", "readout", "measure",
                     "output", "name", "compartment", "analyte", "target"], "observable"),
    **dict.fromkeys(["y", "val", "values", "measurement", "measurements", "mean", "signal", "concentration",
                     "conc", "amount", "data", "count", "counts", "intensity", "level"], "value"),
    **dict.fromkeys(["cond", "conditions", "group", "groups", "treatment", "experiment", "exp", "arm",
                     "perturbation"], "condition"),
    **dict.fromkeys(["sd", "std", "stdev", "stddev", "std_dev", "s.d.", "error", "err", "se", "sem",
                     "uncertainty", "sigmas", "noise", "std_error"], "sigma"),
}


# ----------------------------------------------------------------------------- messages
def describe_rows(rows, texts=None, limit: int = MAX_LISTED) -> str:
    """``"row 3"``, ``"rows 3, 7 and 12 more"`` or, with ``texts``, ``"rows 3 ('1h'), 7 ('x')"``.

    Public so that later stages (fitting) name rows the same way.
    """
    rows = list(rows)
    texts = list(texts) if texts is not None else [None] * len(rows)
    shown = [str(r) if t is None else f"{r} ({_quote(t)})" for r, t in zip(rows[:limit], texts[:limit])]
    head = ("row " if len(rows) == 1 else "rows ") + ", ".join(shown)
    return head + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def _quote(text) -> str:
    text = str(text)
    return repr(text if len(text) <= 30 else text[:27] + "...")


def _suggest(name: str, candidates) -> str | None:
    """The candidate ``name`` most likely meant: a case-insensitive match, else a close spelling."""
    candidates = list(candidates)
    folded = {c.casefold(): c for c in candidates}
    if name.casefold() in folded:
        return folded[name.casefold()]
    hint = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if not hint:
        hint = difflib.get_close_matches(name.casefold(), list(folded), n=1, cutoff=0.6)
        hint = [folded[h] for h in hint]
    return hint[0] if hint else None


def _did_you_mean(name: str, candidates) -> str:
    hint = _suggest(name, candidates)
    return f" (did you mean '{hint}'?)" if hint else ""


def _column_hint(name: str) -> str | None:
    """The allowed column a misspelled header most likely means ('Time', 'obs', 'val', 'sd')."""
    key = name.strip().casefold()
    if key in ALLOWED_COLUMNS:
        return key
    if key in _COLUMN_ALIASES:
        return _COLUMN_ALIASES[key]
    for column in ALLOWED_COLUMNS:        # 'time (h)', 'time_h', 'value_mean', 'obs'
        if key.startswith(column) or (len(key) >= 3 and column.startswith(key)):
            return column
    head = key.replace("(", " ").replace("_", " ").replace("[", " ").split()
    if head and head[0] in _COLUMN_ALIASES:   # 'hours (post injection)', 'sd [particles/mL]'
        return _COLUMN_ALIASES[head[0]]
    return _suggest(key, ALLOWED_COLUMNS)


class _Problems:
    """Collects every problem found in one data source so that one error lists them all."""

    def __init__(self, origin: str):
        self.origin = origin
        self.items: list[str] = []

    def add(self, message: str):
        self.items.append(message)

    def raise_if_any(self):
        if len(self.items) == 1:
            raise DataError(f"{self.origin}: {self.items[0]}")
        if self.items:
            raise DataError(f"{self.origin}: {len(self.items)} problems:\n  - " + "\n  - ".join(self.items))


# ----------------------------------------------------------------------------- cells
def _is_missing_scalar(cell) -> bool:
    if cell is None:
        return True
    try:
        return bool(pd.isna(cell))
    except (TypeError, ValueError):
        return False


def _parse_number(cell) -> tuple[str, float, str]:
    """Read one cell as a number: ``(status, number, text)`` with status 'ok', 'missing' or 'bad'.

    Texts are parsed strictly (no units, no thousands separators, '.' as decimal point); an
    infinite number is returned as 'ok' and checked by the caller.
    """
    if isinstance(cell, str):
        text = cell.strip()
        if text.casefold() in _MISSING_TEXT:
            return "missing", math.nan, text
        if "_" in text:                       # float() would accept '1_000'
            return "bad", math.nan, text
        try:
            number = float(text)
        except ValueError:
            return "bad", math.nan, text
        return ("missing" if math.isnan(number) else "ok"), number, text
    if isinstance(cell, (bool, np.bool_)):
        return "bad", math.nan, str(cell)
    if isinstance(cell, (numbers.Real, decimal.Decimal)):
        number = float(cell)
        return ("missing" if math.isnan(number) else "ok"), number, str(cell)
    if _is_missing_scalar(cell):
        return "missing", math.nan, str(cell)
    return "bad", math.nan, str(cell)


def _parse_name(cell) -> str:
    """Read one cell as a name (observable or condition): text stripped of surrounding blanks;
    a number in a DataFrame becomes its text ('1', not '1.0'); a missing cell becomes ''."""
    if isinstance(cell, str):
        return cell.strip()
    if isinstance(cell, (bool, np.bool_)):
        return str(bool(cell))
    if isinstance(cell, numbers.Integral):
        return str(int(cell))
    if isinstance(cell, numbers.Real):
        number = float(cell)
        if math.isnan(number):
            return ""
        return str(int(number)) if number.is_integer() else repr(number)
    if _is_missing_scalar(cell):
        return ""
    return str(cell).strip()


# ----------------------------------------------------------------------------- sources
def _read_csv_file(path: Path) -> tuple[list[str], int, list[tuple[int, list]], bytes, _Problems]:
    """Read a CSV file into (header, header row, [(row, fields)], raw bytes, problems so far)."""
    origin = str(path)
    raw = read_regular_file(path, what="data file", error=DataError, limit=DATA_SIZE_LIMIT,
                            not_found_hint=f" (looked for {path.absolute()}); check the file name and the "
                                           f"folder it is given relative to",
                            folder_fix="give the path of the CSV file")
    if not raw.strip():
        raise DataError(f"{origin}: the data file is empty; it needs a header row 'time,observable,value' "
                        f"and then one row per measurement")
    if raw.startswith(b"PK\x03\x04"):
        raise DataError(f"{origin}: not a CSV text file (it looks binary, e.g. an Excel workbook); "
                        f"export it from the spreadsheet as 'CSV UTF-8 (comma delimited)'")
    text = decode_utf8(raw, origin, what="data file", error=DataError, line_word="row", save_as="'CSV UTF-8'")

    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    header_row = 1
    records: list[tuple[int, list]] = []
    previous_line = 0
    try:
        for fields in reader:
            start = previous_line + 1
            previous_line = reader.line_num
            if not any(f.strip() for f in fields):       # blank line or only separators: no data
                continue
            if header is None:
                header, header_row = fields, start
            else:
                records.append((start, fields))
    except csv.Error as exc:
        raise DataError(f"{origin}: row {reader.line_num}: cannot be read as CSV ({exc}); "
                        f"check for an unclosed quote (\") near this row") from None
    problems = _Problems(origin)
    if len(header) == 1 and any(sep in header[0] for sep in ";\t|"):
        sep = next(s for s in ";\t|" if s in header[0])
        raise DataError(f"{origin}: row {header_row} (header): the columns are separated by {sep!r}, "
                        f"not by commas; save the file as comma-separated CSV "
                        f"(or read it with pandas.read_csv(sep={sep!r}) and pass the DataFrame)")
    width = len(header)
    wrong = [(row, len(fields)) for row, fields in records if len(fields) != width]
    if wrong:
        problems.add(f"wrong number of fields in {describe_rows([r for r, _ in wrong], [f'{n} fields' for _, n in wrong])}: "
                     f"the header (row {header_row}) has {width}; quote values that contain a comma, close any "
                     f"open quote (\"), and remove extra or add missing separators")
        bad = {r for r, _ in wrong}
        records = [(row, fields) for row, fields in records if row not in bad]
    return header, header_row, records, raw, problems


def _read_dataframe(frame: pd.DataFrame) -> tuple[list[str], int, list[tuple[int, list]], bytes, _Problems]:
    """The same shape as :func:`_read_csv_file` for a DataFrame (row = position + 1)."""
    header = [str(c) for c in frame.columns]
    records = [(i + 1, list(values)) for i, values in enumerate(frame.itertuples(index=False, name=None))]
    canonical = frame.to_csv(index=False, lineterminator="\n").encode("utf-8")
    return header, 0, records, canonical, _Problems("DataFrame")


# ----------------------------------------------------------------------------- the dataset
@dataclass
class Dataset:
    """Validated measurements in tidy form.

    ``table`` has the columns time (float), observable (str), value (float), condition (str),
    sigma (float, NaN without a sigma column) and row (the row number named in messages), in
    the order of the source. ``dropped`` lists rows removed by ``drop_missing`` with a
    ``reason`` column (empty otherwise).
    """
    table: pd.DataFrame
    path: str | None = None
    sha256: str | None = None
    dropped: pd.DataFrame = field(default_factory=lambda: _empty_table(with_reason=True))
    has_sigma: bool = False

    @property
    def origin(self) -> str:
        """The file the data came from, or 'DataFrame' (the prefix of every message)."""
        return self.path if self.path is not None else "DataFrame"

    @property
    def n_points(self) -> int:
        return int(len(self.table))

    @property
    def conditions(self) -> list[str]:
        """Condition names in order of first appearance."""
        return list(dict.fromkeys(self.table["condition"]))

    @property
    def observables(self) -> list[str]:
        """Observable names in order of first appearance."""
        return list(dict.fromkeys(self.table["observable"]))

    def for_condition(self, name: str) -> pd.DataFrame:
        """The rows of one condition, sorted by time (stable: replicates keep their order)."""
        if name not in set(self.table["condition"]):
            raise DataError(f"{self.origin}: no rows for condition '{name}'{_did_you_mean(name, self.conditions)}; "
                            f"the data has conditions: {', '.join(self.conditions)}")
        rows = self.table[self.table["condition"] == name]
        return rows.sort_values("time", kind="mergesort").reset_index(drop=True)

    def summary(self) -> str:
        """Points per condition and observable, with time ranges, as readable text."""
        t = self.table
        lines = [f"{self.origin}: {self.n_points} points, {len(self.conditions)} condition(s), "
                 f"{len(self.observables)} observable(s), time {t['time'].min():g} to {t['time'].max():g}; "
                 f"sigma column: {'yes' if self.has_sigma else 'no'}"]
        groups = [(c, o, g) for (c, o), g in t.groupby(["condition", "observable"], sort=False)]
        wc = max([len("condition")] + [len(c) for c, _, _ in groups])
        wo = max([len("observable")] + [len(o) for _, o, _ in groups])
        lines.append(f"  {'condition':<{wc}}  {'observable':<{wo}}  points  time range")
        for c, o, g in groups:
            times = g["time"]
            lines.append(f"  {c:<{wc}}  {o:<{wo}}  {len(g):>6}  {times.min():g} to {times.max():g}"
                         f" ({times.nunique()} distinct times)")
        if len(self.dropped):
            lines.append(f"  dropped {len(self.dropped)} row(s) with a missing value: "
                         f"{describe_rows(self.dropped['row'])}")
        return "\n".join(lines)


def _empty_table(with_reason: bool = False) -> pd.DataFrame:
    return _build_table([], with_reason=with_reason)


def _build_table(records: list[tuple], with_reason: bool = False) -> pd.DataFrame:
    """records: (time, observable, value, condition, sigma, row[, reason]) tuples."""
    cols = list(zip(*records)) if records else [()] * (7 if with_reason else 6)
    data = {
        "time": np.asarray(cols[0], dtype=float),
        "observable": pd.Series(list(cols[1]), dtype=str),
        "value": np.asarray(cols[2], dtype=float),
        "condition": pd.Series(list(cols[3]), dtype=str),
        "sigma": np.asarray(cols[4], dtype=float),
        "row": np.asarray(cols[5], dtype=np.int64),
    }
    if with_reason:
        data["reason"] = pd.Series(list(cols[6]), dtype=str)
    return pd.DataFrame(data)


# ----------------------------------------------------------------------------- loading
def load_data(source, *, observables: Iterable[str] | None = None, conditions: Iterable[str] | None = None,
              default_condition: str = "default", noise: str | None = None,
              drop_missing: bool = False) -> Dataset:
    """Load and validate tidy time-course data from a CSV file (path) or a pandas DataFrame.

    observables: the names the model can predict (observables and compartments); rows naming
        anything else are an error. None skips this check.
    conditions: the condition names of the fit spec; rows naming anything else are an error.
        Without a ``condition`` column every row gets ``default_condition``, or the single
        name given here; naming two or more conditions then is an error. None (or empty)
        skips the check.
    noise: the noise model the data will be fitted with (one of :data:`NOISE_MODELS`);
        "data" needs a sigma column, "proportional" needs every value > 0. None skips these.
    drop_missing: drop rows whose value is missing (empty, NA, NaN) instead of failing; they
        are listed in ``Dataset.dropped`` and a :class:`KineticsWarning` says which.

    Raises :class:`DataError` listing every problem found (file, rows, offending text, fix).
    """
    if noise is not None and noise not in NOISE_MODELS:
        raise DataError(f"unknown noise model {noise!r}{_did_you_mean(str(noise), NOISE_MODELS)}; "
                        f"choose one of {', '.join(repr(n) for n in NOISE_MODELS)}")
    if isinstance(source, pd.DataFrame):
        path = None
        header, header_row, records, raw, problems = _read_dataframe(source)
    elif isinstance(source, (str, Path)):
        path = str(source)
        header, header_row, records, raw, problems = _read_csv_file(Path(source))
    else:
        raise DataError(f"data must be a path to a CSV file or a pandas DataFrame, got {type(source).__name__}")
    origin = problems.origin
    where_header = f"row {header_row} (header)" if path is not None else "columns"
    observables = _name_list(observables)
    conditions = _name_list(conditions) or None

    # -- columns: all column problems together, before looking at any row
    names = [h.strip() for h in header]
    index = _check_columns(names, where_header, problems)
    if not records and not problems.items:
        problems.add(f"no data rows after the header; add one row per measurement "
                     f"(time, observable, value)")
    problems.raise_if_any()

    has_condition = "condition" in index
    has_sigma = "sigma" in index
    if not has_condition and conditions is not None and len(conditions) > 1:
        problems.add(f"the fit names {len(conditions)} conditions ({', '.join(conditions)}) but the data has no "
                     f"'condition' column ({where_header}); add a 'condition' column naming each row's condition")
    if noise == "data" and not has_sigma:
        problems.add(f"noise = \"data\" needs a 'sigma' column, and the data has none ({where_header}); add a "
                     f"'sigma' column with each measurement's standard deviation, or choose {_ESTIMATING_NOISE}")
    fixed_condition = conditions[0] if conditions is not None and len(conditions) == 1 else default_condition

    # -- cells
    kinds: dict[str, list[tuple[int, str | None]]] = {}

    def note(kind, row, text=None):
        kinds.setdefault(kind, []).append((row, text))

    kept, dropped = [], []
    for row, fields in records:
        time_status, time, time_text = _parse_number(fields[index["time"]])
        value_status, value, value_text = _parse_number(fields[index["value"]])
        observable = _parse_name(fields[index["observable"]])
        condition = _parse_name(fields[index["condition"]]) if has_condition else fixed_condition
        sigma_status, sigma, sigma_text = (_parse_number(fields[index["sigma"]]) if has_sigma
                                           else ("ok", math.nan, ""))
        if value_status == "missing" and drop_missing:
            reason = f"missing value ({_quote(value_text)})" if value_text else "missing value (empty cell)"
            dropped.append((time, observable, math.nan, condition, sigma, row, reason))
            continue
        for column, status, number, text in (("time", time_status, time, time_text),
                                             ("value", value_status, value, value_text),
                                             ("sigma", sigma_status, sigma, sigma_text)):
            if column == "sigma" and not has_sigma:
                continue
            if status == "bad":
                note(f"bad {column}", row, text)
            elif status == "missing":
                note(f"missing {column}", row, text or None)
            elif math.isinf(number):
                note(f"infinite {column}", row, text)
            elif abs(number) > MAX_MAGNITUDE or (column != "time" and 0 < abs(number) < 1 / MAX_MAGNITUDE):
                note(f"absurd {column}", row, text)
        if time_status == "ok" and time < 0:
            note("negative time", row, time_text)
        if has_sigma and sigma_status == "ok" and sigma <= 0:
            note("non-positive sigma", row, sigma_text)
        if noise == "proportional" and value_status == "ok" and value <= 0:
            note("proportional", row, value_text)
        if not observable:
            note("empty observable", row)
        elif observables is not None and observable not in observables:
            note(f"observable:{observable}", row)
        if not condition:
            note("empty condition", row)
        elif has_condition and conditions is not None and condition not in conditions:
            note(f"condition:{condition}", row)
        kept.append((time, observable, value, condition, sigma, row))

    _report_cells(kinds, problems, observables, conditions)
    if not kept and not problems.items:
        problems.add(f"no data rows left: every row's value is missing "
                     f"({describe_rows([d[5] for d in dropped])}); fill in the measurements")
    problems.raise_if_any()

    if dropped:
        warnings.warn(f"{origin}: dropped {len(dropped)} row(s) with a missing value "
                      f"({describe_rows([d[5] for d in dropped])}) because drop_missing=True; "
                      f"they are listed in Dataset.dropped", KineticsWarning, stacklevel=2)
    return Dataset(table=_build_table(kept), path=path, sha256=hashlib.sha256(raw).hexdigest(),
                   dropped=_build_table(dropped, with_reason=True), has_sigma=has_sigma)


def _name_list(names) -> list[str] | None:
    if names is None:
        return None
    if isinstance(names, str):
        names = [names]
    return [str(n).strip() for n in names]


def _check_columns(names: list[str], where: str, problems: _Problems) -> dict[str, int]:
    """Map each allowed column to its position; report unnamed, duplicate, unknown, missing ones."""
    index: dict[str, int] = {}
    unknown: list[tuple[str, str | None]] = []
    for position, name in enumerate(names, start=1):
        if not name or name.startswith("Unnamed:"):
            problems.add(f"{where}: column {position} has no name (a saved pandas index, or trailing commas "
                         f"from a spreadsheet?); delete the column (write CSVs with index=False) or name it "
                         f"one of: {_ALLOWED_TEXT}")
        elif name in index:
            problems.add(f"{where}: column '{sanitize_excerpt(name, 30)}' appears twice (columns {index[name] + 1} and {position}); "
                         f"keep one")
        elif name in ALLOWED_COLUMNS:
            index[name] = position - 1
        else:
            unknown.append((name, _column_hint(name)))
    if unknown and not index and not any(h for _, h in unknown):
        # nothing in the first line is a column of ours: the file is not a data table at all (maybe
        # not the file meant, e.g. a system file); show only a short, sanitised excerpt of it
        excerpt = sanitize_excerpt(",".join(names))
        problems.add(f"{where}: this does not look like a data table: its first line ('{excerpt}') names "
                     f"none of the columns {_ALLOWED_TEXT}; check that the path names the right file, "
                     f"and that its first line is the header 'time,observable,value'")
        return index
    if unknown:
        listed = ", ".join(f"'{sanitize_excerpt(n, 30)}'" + (f" (did you mean '{h}'?)" if h else "")
                           for n, h in unknown[:MAX_LISTED])
        if len(unknown) > MAX_LISTED:
            listed += f" and {len(unknown) - MAX_LISTED} more"
        problems.add(f"{where}: unknown column{'s' if len(unknown) > 1 else ''} {listed}; column names are "
                     f"case-sensitive: rename {'them' if len(unknown) > 1 else 'it'} or delete columns the "
                     f"fit does not use. Allowed columns: {_ALLOWED_TEXT}")
    hinted = {h for _, h in unknown if h}
    missing = [c for c in REQUIRED_COLUMNS if c not in index]
    if missing:
        quoted = ", ".join(f"'{c}'" for c in missing)
        fix = ("rename the column suggested above" if set(missing) <= hinted
               else "add it: every row needs its time, observable name and measured value")
        problems.add(f"{where}: missing required column{'s' if len(missing) > 1 else ''} {quoted}; {fix}")
    return index


_NUMBER_FIX = {
    "time": "write times as plain numbers in the model's time unit (e.g. 2.5, not '2.5 h'), "
            "with '.' as the decimal point",
    "value": "write each measurement as a plain number (e.g. 1.2e9: '.' as the decimal point, no units or "
             "thousands separators), or leave the cell empty if the measurement is missing",
    "sigma": "write each standard deviation as a plain positive number (e.g. 0.15, '.' as the decimal point)",
}


def _report_cells(kinds, problems: _Problems, observables, conditions):
    """Turn the per-row notes into one message per kind of problem."""
    def rows_of(kind, with_text=True):
        items = kinds.get(kind, [])
        return describe_rows([r for r, _ in items], [t for _, t in items] if with_text else None)

    for column in ("time", "value", "sigma"):
        if f"bad {column}" in kinds:
            problems.add(f"non-numeric {column} in {rows_of(f'bad {column}')}; {_NUMBER_FIX[column]}")
    if "missing time" in kinds:
        problems.add(f"missing time in {rows_of('missing time')}; fill in when each measurement was taken, "
                     f"or delete the row (drop_missing drops only rows whose value is missing)")
    if "missing value" in kinds:
        problems.add(f"missing value in {rows_of('missing value')}; fill in the measurement, delete the row, "
                     f"or load with drop_missing=True to drop such rows deliberately (they are then reported "
                     f"and listed in Dataset.dropped)")
    if "missing sigma" in kinds:
        problems.add(f"missing sigma in {rows_of('missing sigma')}; with a sigma column every row needs its "
                     f"standard deviation: fill it in, or delete the sigma column and choose {_ESTIMATING_NOISE}")
    for column in ("time", "value", "sigma"):
        if f"infinite {column}" in kinds:
            problems.add(f"infinite {column} in {rows_of(f'infinite {column}')}; replace it with a finite "
                         f"number or delete the row")
    for column in ("time", "value", "sigma"):
        if f"absurd {column}" in kinds:
            limit = (f"larger than {MAX_MAGNITUDE:.0e}" if column == "time"
                     else f"larger than {MAX_MAGNITUDE:.0e} or smaller than {1 / MAX_MAGNITUDE:.0e} in magnitude")
            problems.add(f"{column} of absurd magnitude ({limit}) in {rows_of(f'absurd {column}')}: its square or "
                         f"reciprocal would overflow in the fit; check the exponent and the unit, e.g. rescale "
                         f"the data to a sensible unit")
    if "negative time" in kinds:
        problems.add(f"negative time in {rows_of('negative time')}; times count from the start of the "
                     f"experiment (t = 0, usually the first dose): shift the times so none is negative, "
                     f"or fix the sign")
    if "non-positive sigma" in kinds:
        problems.add(f"non-positive sigma in {rows_of('non-positive sigma')}; sigma is the measurement's "
                     f"standard deviation and must be > 0: correct it, or delete the sigma column and choose "
                     f"{_ESTIMATING_NOISE}")
    if "proportional" in kinds:
        problems.add(f"value <= 0 in {rows_of('proportional')} cannot be fitted with noise = \"proportional\": "
                     f"its standard deviation (proportional to the value) would be zero; use "
                     f"noise = \"combined\" (constant plus proportional), or correct or remove these points")
    if "empty observable" in kinds:
        problems.add(f"empty observable name in {rows_of('empty observable', False)}; write which observable "
                     f"or compartment each row measures")
    if "empty condition" in kinds:
        problems.add(f"empty condition in {rows_of('empty condition', False)}; name every row's condition, "
                     f"or delete the condition column if there is only one condition")
    for kind in kinds:
        if kind.startswith("observable:"):
            name = kind.split(":", 1)[1]
            known = ", ".join(observables) if observables else "(none)"
            problems.add(f"unknown observable '{name}' in {rows_of(kind, False)}{_did_you_mean(name, observables)}; "
                         f"rename it to one the model predicts ({known}) or add it to the model")
    for kind in kinds:
        if kind.startswith("condition:"):
            name = kind.split(":", 1)[1]
            problems.add(f"unknown condition '{name}' in {rows_of(kind, False)}{_did_you_mean(name, conditions)}; "
                         f"rename it to one of the fit's conditions ({', '.join(conditions)}) or add "
                         f"[conditions.{name}] to the fit spec")
