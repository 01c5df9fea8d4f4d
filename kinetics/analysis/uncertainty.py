"""Uncertainty of predictions from a fit: steady states and PK figures with 95 % intervals,
by the delta method (covariance and derivatives) and by sampling parameter sets (from MCMC
samples when the fit has them, else from the covariance on the scale the fit used: log10
for log-scaled parameters, so draws stay positive)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..errors import KineticsError

__all__ = ["FitSummary", "load_fit_summary", "predict_with_uncertainty", "steady_state_uncertainty", "pk_uncertainty",
           "condition_values"]


class FitSummary:
    """What prediction uncertainty needs from a fit: best values, free names, covariance."""

    def __init__(self, model_name, values, free, covariance, log_scale, samples=None, conditions=None,
                 overrides=None, origin="the fit"):
        self.model_name = model_name
        # the fit's conditions and each one's parameter overrides (name -> expression text over
        # the fit parameters); None: not recorded (a result.json of an older kinetics)
        self.conditions = list(conditions or [])
        self.overrides = overrides
        self.origin = origin
        self.values = dict(values)              # every fit parameter -> best value
        self.free = list(free)
        self.covariance = np.asarray(covariance, dtype=float)   # natural scale, free x free
        self.log_scale = np.asarray(log_scale, dtype=bool)
        self.samples = samples                  # (n, len(free)) natural-scale draws, or None

    def draws(self, n, seed=0):
        """Parameter sets (dicts) for sampling: MCMC samples if present, else the covariance."""
        rng = np.random.default_rng(seed)
        if self.samples is not None and len(self.samples):
            rows = self.samples[rng.integers(0, len(self.samples), n)]
        else:
            best = np.array([self.values[name] for name in self.free])
            jac = np.where(self.log_scale, best * math.log(10.0), 1.0)    # d natural / d internal
            cov_internal = self.covariance / np.outer(jac, jac)
            centre = np.where(self.log_scale, np.log10(np.where(self.log_scale, best, 1.0)), best)
            internal = rng.multivariate_normal(centre, cov_internal, size=n, check_valid="ignore")
            with np.errstate(over="ignore"):
                rows = np.where(self.log_scale, 10.0 ** np.clip(internal, -300, 300), internal)
        out = []
        for row in rows:
            values = dict(self.values)
            values.update(zip(self.free, map(float, row)))
            out.append(values)
        return out


def condition_values(summary, values, condition):
    """The model's parameter values in ``condition`` of a fit, from the fit parameters ``values``
    (the condition's overrides evaluated; ``condition`` None: ``values`` unchanged)."""
    if condition is None:
        return values
    if condition not in summary.conditions:
        raise KineticsError(f"{summary.origin}: no condition '{condition}' in this fit; its conditions are "
                            f"{', '.join(summary.conditions) or '(none recorded)'}. Use --condition with one of them "
                            "(condition= in Python)")
    if summary.overrides is None:
        if len(summary.conditions) == 1:
            return values
        raise KineticsError(f"{summary.origin}: this result.json does not record the conditions' parameter overrides "
                            "(written by an older kinetics); run the fit again to select a condition")
    import sympy as sp

    from ..model.expressions import parse_expression
    symbols = {name: sp.Symbol(name) for name in values}
    out = dict(values)
    for name, expr in summary.overrides.get(condition, {}).items():
        parsed = parse_expression(str(expr), symbols, allow_time=False)
        out[name] = float(parsed.subs({symbols[k]: v for k, v in values.items()}))
    return out


def load_fit_summary(fit) -> FitSummary:
    """From a :class:`~kinetics.fit.FitResult` or a fit folder (``result.json``)."""
    from ..fitting.optimize import FitResult
    if isinstance(fit, FitResult):
        p = fit.problem
        samples = fit.mcmc["samples"] if fit.mcmc else None
        return FitSummary(p.model.name, fit.best_values, p.free, fit.covariance, p.log_mask, samples,
                          conditions=p.condition_names,
                          overrides={name: {k: str(v) for k, v in c.overrides.items()} for name, c in p.conditions.items()},
                          origin=f"the fit of {p.origin}")
    from ..io.results import read_result
    path, data = read_result(fit)
    params = data["parameters"]
    free = [n for n, e in params.items() if e.get("free")]
    sd = np.array([params[n]["stderr"] if params[n]["stderr"] is not None else np.nan for n in free])
    corr = np.array(data.get("correlation", {}).get("matrix") or np.eye(len(free)), dtype=float)
    corr = np.where(np.isfinite(corr), corr, 0.0)
    np.fill_diagonal(corr, 1.0)
    if not np.isfinite(sd).all():
        raise KineticsError(f"{path}: some free parameters have no standard error, so no interval can be propagated")
    cov = corr * np.outer(sd, sd)
    log_scale = [bool(params[n].get("log_scale", True)) for n in free]
    conditions = data.get("conditions") if isinstance(data.get("conditions"), list) else []
    overrides = data.get("condition_overrides") if isinstance(data.get("condition_overrides"), dict) else None
    return FitSummary(data["model"]["name"], {n: e["value"] for n, e in params.items()}, free, cov, log_scale,
                      conditions=conditions, overrides=overrides, origin=str(path))


def predict_with_uncertainty(quantities, fit, n_samples=300, seed=0, relative_step=1e-6) -> pd.DataFrame:
    """95 % intervals of the numbers ``quantities(values_dict) -> {name: number}`` computes.

    Delta method: central finite differences along each free parameter (step relative to its
    value), propagated through the covariance; the interval is taken on the log scale for
    positive quantities (so it stays positive). Sampling: percentiles over parameter draws;
    draws whose prediction fails are counted, not hidden."""
    summary = fit if isinstance(fit, FitSummary) else load_fit_summary(fit)
    base = quantities(summary.values)
    names = list(base)
    grads = np.zeros((len(names), len(summary.free)))
    for k, pname in enumerate(summary.free):
        h = relative_step * max(abs(summary.values[pname]), 1e-12)
        up, down = dict(summary.values), dict(summary.values)
        up[pname] += h
        down[pname] -= h
        qu, qd = quantities(up), quantities(down)
        grads[:, k] = [(qu[n] - qd[n]) / (2 * h) for n in names]
    sd = np.sqrt(np.clip(np.einsum("qk,kl,ql->q", grads, summary.covariance, grads), 0, None))
    samples = {n: [] for n in names}
    failed = 0
    for values in summary.draws(n_samples, seed):
        try:
            q = quantities(values)
        except Exception:  # noqa: BLE001 - a parameter draw without a prediction (e.g. unstable)
            failed += 1
            continue
        for n in names:
            samples[n].append(q[n])
    rows = []
    for i, n in enumerate(names):
        est = float(base[n])
        if est > 0:
            rel = sd[i] / est
            lo, hi = est * math.exp(-1.96 * rel), est * math.exp(1.96 * rel)
        else:
            lo, hi = est - 1.96 * sd[i], est + 1.96 * sd[i]
        s = np.array(samples[n], dtype=float)
        slo, shi = (np.percentile(s, [2.5, 97.5]) if len(s) > 10 else (np.nan, np.nan))
        rows.append({"quantity": n, "estimate": est, "stderr": float(sd[i]), "delta_lo": lo, "delta_hi": hi,
                     "sample_lo": float(slo), "sample_hi": float(shi), "n_samples": int(len(s))})
    table = pd.DataFrame(rows)
    table.attrs["failed_samples"] = failed
    return table


def _model_for(model, summary):
    from ..model.library import resolve_model_path
    from ..model.core import Model, load_model
    if not isinstance(model, Model):
        model = load_model(resolve_model_path(model))
    if summary.model_name != model.name:
        raise KineticsError(f"the fit is of model '{summary.model_name}', not '{model.name}'")
    return model


def steady_state_uncertainty(model, fit, n_samples=300, seed=0, condition=None) -> pd.DataFrame:
    """Steady values (bounded compartments), sink inflow rates and fluxes with 95 % intervals
    (``condition``: of that condition of a multi-condition fit, its overrides applied)."""
    from .steady import steady_state
    summary = fit if isinstance(fit, FitSummary) else load_fit_summary(fit)
    model = _model_for(model, summary)
    names = set(model.parameters)
    condition_values(summary, summary.values, condition)     # an unknown condition fails here, once

    def quantities(values):
        values = condition_values(summary, values, condition)
        ss = steady_state(model, {k: v for k, v in values.items() if k in names})
        out = {f"{k}": v for k, v in ss.values.items()}
        out.update({f"{k} (inflow rate)": v for k, v in ss.sinks.items()})
        out.update({f"flux {k}": v for k, v in ss.fluxes.items()})
        return out

    return predict_with_uncertainty(quantities, summary, n_samples, seed)


def pk_uncertainty(model, fit, dose, observable, n_samples=300, seed=0, t_last=None, condition=None) -> pd.DataFrame:
    """PK figures (AUC, CL, Vss, MRT, half-lives, ...) with 95 % intervals from a fit
    (``condition``: of that condition of a multi-condition fit, its overrides applied)."""
    from .pk import pk_summary
    summary = fit if isinstance(fit, FitSummary) else load_fit_summary(fit)
    model = _model_for(model, summary)
    names = set(model.parameters)
    condition_values(summary, summary.values, condition)

    def quantities(values):
        values = condition_values(summary, values, condition)
        d = pk_summary(model, dose, observable, {k: v for k, v in values.items() if k in names}, t_last=t_last).to_dict()
        out = {}
        for key, value in d.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out[key] = float(value)
        return out

    return predict_with_uncertainty(quantities, summary, n_samples, seed)
