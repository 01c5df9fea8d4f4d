"""The fit spec format (``fit.toml``): reading it, checking every key and type, resolving paths.

:func:`read_fit_spec` turns a fit spec file (or a fit folder holding ``fit.toml``) into a
:class:`FitSpec`: plain, validated tables and resolved paths, nothing built from them. Turning a
spec into a :class:`~kinetics.fitting.problem.FitProblem` (loading the model and the data,
conditions, the fixed-parameter check) is :func:`kinetics.fitting.problem.load_fit_spec`'s job:
fitting imports this module, never the reverse. Every problem raises a
:class:`~kinetics.errors.DataError` naming the file, the key and the fix.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError, ModelError, suggest_name
from ..model.library import resolve_model_path
from .files import read_toml_file, sanitize_excerpt

__all__ = ["FitSpec", "read_fit_spec", "parse_fit_spec", "FIT_KEYS", "SPEC_KEYS", "CONDITION_KEYS",
           "MAX_MULTISTART", "MAX_NFEV_LIMIT", "MAX_SEED"]

FIT_KEYS = {"free", "log_scale", "noise", "multistart", "seed", "method", "profiles", "mcmc", "max_nfev", "reweight",
            "engine"}
SPEC_KEYS = {"model", "data", "fit", "parameters", "conditions", "observables", "description", "title"}
CONDITION_KEYS = {"doses", "overrides", "initial", "events", "description", "preequilibration"}

# Sane limits on sizes a fit spec sets: beyond them memory or time runs out before any result.
MAX_MULTISTART = 10_000
MAX_NFEV_LIMIT = 10_000_000
MAX_SEED = 2 ** 63 - 1


@dataclass
class FitSpec:
    """A validated fit spec: the raw table (``spec``) and its parts, paths resolved.

    ``model_path`` is the model file (relative to the spec, else a bundled model's name),
    ``data_path`` the data CSV (relative to the spec, normalized); ``fit``, ``parameters``
    (entries as written, ``fixed`` included), ``conditions`` and ``observables`` are the tables
    of the same names, empty when absent."""
    path: Path
    spec: dict
    model_path: Path
    data_path: Path
    fit: dict = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)
    conditions: dict = field(default_factory=dict)
    observables: dict = field(default_factory=dict)

    @property
    def origin(self) -> str:
        return str(self.path)


def read_fit_spec(path) -> FitSpec:
    """Read a fit spec (``fit.toml``, or a folder holding one) and check every key and type."""
    path = Path(path)
    if path.is_dir():
        path = path / "fit.toml"
    if not path.exists() and not path.is_symlink():
        raise DataError(f"{path}: fit spec not found (a fit folder holds fit.toml, the data CSV and a README)")
    spec, _ = read_toml_file(path, what="fit spec", error=DataError)
    return parse_fit_spec(spec, path)


def parse_fit_spec(spec: dict, path) -> FitSpec:
    """Check a parsed fit spec (keys, types, the model file exists) read from ``path``."""
    path = Path(path)
    origin = str(path)
    if not isinstance(spec, dict):
        raise DataError(f"{origin}: a fit spec must be a TOML table of model, data, [fit], [parameters], [conditions]")
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise DataError(f"{origin}: unknown top-level key '{key}'{suggest_name(key, SPEC_KEYS)}; allowed: {', '.join(sorted(SPEC_KEYS))}")
    for key in ("model", "data"):
        if key not in spec:
            raise DataError(f"{origin}: missing '{key} = \"...\"' (a path relative to the fit spec)")
    _check_spec_types(spec, origin)
    base = path.parent
    model_path = base / spec["model"]
    if not model_path.exists():
        try:
            model_path = resolve_model_path(spec["model"])
        except ModelError:
            raise DataError(f"{origin}: model file '{sanitize_excerpt(spec['model'], 200)}' not found (paths are relative to the fit spec)") from None
    fit = spec.get("fit", {})
    unknown = set(fit) - FIT_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise DataError(f"{origin}: [fit] unknown key '{key}'{suggest_name(key, FIT_KEYS)}; allowed: {', '.join(sorted(FIT_KEYS))}")
    for cname, centry in spec.get("conditions", {}).items():
        unknown = set(centry) - CONDITION_KEYS
        if unknown:
            key = sorted(unknown)[0]
            raise DataError(f"{origin}: [conditions.{cname}] unknown key '{key}'{suggest_name(key, CONDITION_KEYS)}; "
                            f"allowed: {', '.join(sorted(CONDITION_KEYS))}")
    return FitSpec(path, spec, model_path, Path(os.path.normpath(base / spec["data"])), fit,
                   spec.get("parameters", {}), spec.get("conditions", {}), spec.get("observables", {}))


def _type_name(value) -> str:
    return {bool: "true/false", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)


def _is_number(value) -> bool:
    """A finite number that fits a float (not a boolean, not a 400-digit integer)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _check_spec_types(spec: dict, origin: str):
    """Every value of the spec has the type its key needs, so later code never meets a number where
    a table is (which used to end in a traceback); one DataError names the key and the type."""
    def wrong(key, value, expected):
        if isinstance(value, bool):
            shown = "true" if value else "false"
        elif isinstance(value, int) and len(str(abs(value))) <= 20:
            shown = str(value)
        elif isinstance(value, (float, str)):
            shown = repr(sanitize_excerpt(value) if isinstance(value, str) else value)
        else:
            kind = f"a {len(str(abs(value)))}-digit number" if isinstance(value, int) else _type_name(value)
            raise DataError(f"{origin}: {key} is {kind}, but must be {expected}; correct it in the fit spec")
        raise DataError(f"{origin}: {key} = {shown} must be {expected}; correct it in the fit spec")

    for key, expected in (("model", "a path in quotes, e.g. model = \"model.toml\""),
                          ("data", "a path in quotes, e.g. data = \"data.csv\""),
                          ("description", "a string"), ("title", "a string")):
        if key in spec and not isinstance(spec[key], str):
            wrong(key, spec[key], expected)
    for key in ("fit", "parameters", "conditions", "observables"):
        if key in spec and not isinstance(spec[key], dict):
            wrong(f"[{key}]", spec[key], f"a table ([{key}] followed by key = value lines)")
    fit = spec.get("fit", {})
    if "free" in fit:
        free = fit["free"]
        if not isinstance(free, list) or not all(isinstance(n, str) for n in free):
            shown = free if isinstance(free, str) else None
            if shown is not None:
                raise DataError(f"{origin}: [fit] free must be a list of names, e.g. free = [\"{shown}\"]")
            wrong("[fit] free", free, 'a list of parameter names in quotes, e.g. free = ["k_cl", "V"]')
    for key, low, high in (("multistart", 1, MAX_MULTISTART), ("seed", 0, MAX_SEED), ("max_nfev", 1, MAX_NFEV_LIMIT)):
        if key not in fit:
            continue
        value = fit[key]
        if isinstance(value, bool) or not isinstance(value, int):
            wrong(f"[fit] {key}", value, f"a whole number from {low} to {high:,}")
        if not low <= value <= high:
            shown = f"{value:,}" if len(str(abs(value))) <= 20 else "a number of more than 20 digits"
            raise DataError(f"{origin}: [fit] {key} = {shown} is outside the allowed range {low} to {high:,}"
                            + ("; more starts would exhaust memory and time: use at most "
                               f"{high:,} (a few dozen are usually enough)" if key == "multistart" else ""))
    for key in ("log_scale", "profiles", "reweight"):
        if key in fit and not isinstance(fit[key], bool):
            wrong(f"[fit] {key}", fit[key], "true or false")
    for key, expected in (("noise", "one of \"constant\", \"proportional\", \"combined\", \"data\""),
                          ("method", "an optimizer name in quotes, e.g. \"least_squares\""),
                          ("engine", '"auto" or "lmfit"')):
        if key in fit and not isinstance(fit[key], str):
            wrong(f"[fit] {key}", fit[key], expected)
    if "engine" in fit and fit["engine"] not in ("auto", "lmfit"):
        raise DataError(f"{origin}: [fit] engine = {sanitize_excerpt(fit['engine'])!r} must be \"auto\" or \"lmfit\"")
    for name, entry in spec.get("parameters", {}).items():
        where = f"[parameters.{name}]"
        if isinstance(entry, dict):
            for key, value in entry.items():
                # bounds may be +-inf (TOML inf), a value must be finite
                bound = key in ("min", "max") and isinstance(value, float) and not math.isnan(value)
                if key in ("value", "min", "max") and not (_is_number(value) or bound):
                    wrong(f"{where} {key}", value, "a finite number" if key == "value" else "a number")
                if key == "fixed" and not isinstance(value, bool):
                    wrong(f"{where} fixed", value, "true or false")
                if key in ("description", "unit") and not isinstance(value, str):
                    wrong(f"{where} {key}", value, "a string")
        elif not _is_number(entry):
            wrong(where, entry, "a finite number or a table like { value = 1.0, min = 0.01, max = 100 }")
    for cname, centry in spec.get("conditions", {}).items():
        where = f"[conditions.{cname}]"
        if not isinstance(centry, dict):
            wrong(where, centry, "a table with doses, initial, overrides, events")
        for key in ("doses", "events"):
            if key in centry:
                if not isinstance(centry[key], list):
                    wrong(f"{where} {key}", centry[key], "a list of tables, e.g. "
                          + ('[ { compartment = "P", amount = 100, time = 0 } ]' if key == "doses"
                             else '[ { time = 24, set = { k = "k * 0.5" } } ]'))
                for i, item in enumerate(centry[key]):
                    if not isinstance(item, dict):
                        wrong(f"{where} {key[:-1]} {i + 1}", item, "a table")
                    for field_name, value in item.items():
                        if field_name in ("amount", "time", "rate", "start") and not _is_number(value):
                            wrong(f"{where} {key[:-1]} {i + 1} {field_name}", value, "a finite number")
        for key in ("initial", "overrides"):
            if key in centry:
                if not isinstance(centry[key], dict):
                    wrong(f"{where} {key}", centry[key], "a table of name = number or expression")
                for name, value in centry[key].items():
                    if not (isinstance(value, str) or _is_number(value)):
                        wrong(f"{where} {key}.{name}", value, "a finite number or an expression in quotes")
        if "description" in centry and not isinstance(centry["description"], str):
            wrong(f"{where} description", centry["description"], "a string")
    for oname, entry in spec.get("observables", {}).items():
        if isinstance(entry, dict):
            for key, value in entry.items():
                if not (isinstance(value, str) or _is_number(value)):
                    wrong(f"[observables.{oname}] {key}", value, "an expression in quotes or a number")

