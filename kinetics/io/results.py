"""The saved-fit format: ``result.json`` (the DESIGN.md contract: :func:`result_dict`,
:func:`read_result`) and ``curves.csv`` (fitted curves on a plotting grid: :func:`curves_table`,
:func:`prediction_grid`). Only reads FitResults (duck-typed); writes nothing itself."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["read_result", "result_dict", "failed_starts", "curves_table", "prediction_grid", "RESULT_JSON_LIMIT"]


def read_result(folder):
    """(path, content) of a saved ``result.json`` (a fit folder or the file itself), checked."""
    import json

    from ..errors import KineticsError
    folder = Path(folder)
    path = folder / "result.json" if folder.is_dir() else folder
    try:
        if not path.is_file():   # a FIFO or device would hang or never end
            raise FileNotFoundError(path)
        with open(path, "rb") as handle:
            raw = handle.read(RESULT_JSON_LIMIT + 1)
        if len(raw) > RESULT_JSON_LIMIT:
            raise KineticsError(f"{path}: larger than {RESULT_JSON_LIMIT // 10**6} MB, so not a result.json written by kinetics fit")
        data = json.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise KineticsError(f"{path}: no result.json here; run 'kinetics fit CASE --out {folder}' first") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise KineticsError(f"{path}: not a valid result.json ({exc}); was the fit interrupted? Run the fit again") from None
    _check_result_shape(path, data)
    return path, data


RESULT_JSON_LIMIT = 100 * 10**6


def _check_result_shape(path, data):
    """The entries of result.json that readers (compare, steady/pk --fit) rely on, with their types."""
    from ..errors import KineticsError

    def fail(entry, expected):
        raise KineticsError(f"{path}: '{entry}' must be {expected}; the file was not written by kinetics fit "
                            "or has been edited. Run the fit again")

    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if not isinstance(data, dict):
        fail("the top level", "a JSON object")
    for key in ("model", "data", "statistics", "parameters"):
        if key not in data:
            raise KineticsError(f"{path}: result.json lacks '{key}'; was it written by kinetics fit?")
        if not isinstance(data[key], dict):
            fail(key, "a JSON object")
    if not isinstance(data["model"].get("name"), str):
        fail("model.name", "text")
    statistics = data["statistics"]
    for key in ("loglik", "aic", "bic", "n_data", "n_free"):
        if not number(statistics.get(key)):
            fail(f"statistics.{key}", "a number")
    for key in ("aicc", "n_noise"):
        if statistics.get(key) is not None and not number(statistics[key]):
            fail(f"statistics.{key}", "a number")
    for name, entry in data["parameters"].items():
        if not isinstance(entry, dict) or not number(entry.get("value")):
            fail(f"parameters.{name}", "an object with a numeric 'value'")
        if entry.get("stderr") is not None and not number(entry["stderr"]):
            fail(f"parameters.{name}.stderr", "a number or null")
    if "noise" in data and not isinstance(data["noise"], dict):
        fail("noise", "a JSON object")


def _unit_of(model, name):
    for table in (model.observables, model.compartments):
        if name in table and getattr(table[name], "unit", None):
            return str(table[name].unit)
    return None


def _finite(v):
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def result_dict(result) -> dict:
    """The result.json content (DESIGN.md contract)."""
    from .. import __version__
    p = result.problem
    params = {}
    for name in p.fit_names:
        if name in p.free:
            j = p.free.index(name)
            lo, hi = result.ci95.get(name, (None, None))
            params[name] = {"value": float(result.values[j]), "stderr": _finite(result.stderr[j]),
                            "ci95": [_finite(lo), _finite(hi)] if name in result.profiles else None,
                            "free": True, "identifiable": result.identifiable.get(name),
                            "profile_failures": list(result.profile_failures.get(name, [])),
                            "log_scale": bool(p.log_mask[j])}
        else:
            params[name] = {"value": float(p.fit_values[p.fit_names.index(name)]), "stderr": None, "ci95": None,
                            "free": False, "identifiable": None}
    model_sha = p.model.sha256 or hashlib.sha256(repr(p.model.to_dict()).encode()).hexdigest()
    return {
        "kinetics_version": __version__,
        "model": {"name": p.model.name, "sha256": model_sha, "path": p.model.source, "time_unit": p.model.time_unit,
                  # units of the measured observables (None where the model declares none), for plots
                  "units": {obs: _unit_of(p.model, obs) for obs in p.data.observables}},
        "data": {"path": p.data.path, "sha256": p.data.sha256, "n_points": int(p.n_data)},
        "noise": {"model": p.noise, **{k: float(v) for k, v in result.noise_params.items()}},
        "conditions": p.condition_names,
        # each condition's parameter overrides (expressions over the fit parameters), so that
        # steady/pk --fit DIR --condition NAME can predict for one condition
        "condition_overrides": {name: {k: str(v) for k, v in getattr(p.conditions.get(name), "overrides", {}).items()}
                                for name in p.condition_names},
        "parameters": params,
        "statistics": {"chisqr": float(result.chisqr), "redchi": _finite(result.redchi), "loglik": float(result.loglik),
                       "aic": float(result.aic), "aicc": _finite(result.aicc), "bic": float(result.bic),
                       "n_data": int(result.n_data), "n_free": int(result.n_free), "n_noise": int(result.n_noise)},
        "optimizer": {"method": result.method, "success": bool(result.success), "message": str(result.message),
                      "n_starts": int(result.n_starts), "n_at_best": int(result.n_at_best), "nfev": int(result.nfev),
                      "njev": int(result.njev), "analytic_jacobian": bool(result.use_jacobian),
                      "engine": getattr(result, "engine", "auto"),
                      "seconds": float(result.seconds)},
        "correlation": {"names": list(p.free), "matrix": [[_finite(v) for v in row] for row in result.correlation]},
        "profiles": result.profiles,
        "failed_starts": failed_starts(result),
    }


def failed_starts(result) -> list:
    """The starts that produced no optimum: start index (0 is the spec's start values), the
    values they started from (natural scale) and the failure message."""
    p = result.problem
    out = []
    for index, run in enumerate(result.runs):
        if np.isfinite(run["rss"]):
            continue
        start = np.asarray(p.to_natural(np.asarray(run["x"], dtype=float)), dtype=float)
        out.append({"start": index, "values": {name: _finite(v) for name, v in zip(p.free, start)},
                    "message": str(run["message"])})
    return out


def prediction_grid(result, condition):
    """Times at which fitted curves of ``condition`` are drawn and saved: dense where the data
    are, logarithmic near zero when early samples are close together."""
    times = result.problem.data.for_condition(condition)["time"].to_numpy(float)
    t_max = times.max() if len(times) else 1.0
    positive = times[times > 0]
    if len(positive) and positive.min() < t_max / 50:
        grid = np.unique(np.concatenate([[0.0], np.geomspace(positive.min() / 2, t_max, 150), np.linspace(0, t_max, 60)]))
    else:
        grid = np.linspace(0, t_max, 200)
    return grid


def curves_table(result) -> pd.DataFrame:
    """The ``curves.csv`` table: condition, observable, time, fitted value on :func:`prediction_grid`."""
    frames = []
    p = result.problem
    for condition in p.condition_names:
        grid = prediction_grid(result, condition)
        curves = result.predict(grid, condition)
        for obs in p.data.observables:
            frames.append(pd.DataFrame({"condition": condition, "observable": obs, "time": grid, "value": curves[obs]}))
    return pd.concat(frames, ignore_index=True)
