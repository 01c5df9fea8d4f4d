"""Fit problems: a model, data, conditions, free parameters and a noise model, turned into
weighted residuals and their analytic Jacobian.

Parameters live on three levels:

* **fit parameters** phi: every model parameter plus any new fit-level parameter (for example a
  knock-down factor), with values and bounds from the model, overridden by the fit spec;
* **free parameters** theta: the subset being estimated, optimized on log10 scale when
  positive-bounded (``log_scale``), else linearly;
* **model parameters per condition** p_c = g_c(phi): a condition may override any model
  parameter with an expression of fit parameters (``Vmax = "Vmax * f_depleted"``).

The residual of data point i is w_i (y_i - f_i) with weights fixed by the noise model
(constant: 1, proportional: 1/|f_i| at the fitted curve; data: 1/sigma_i); the common noise
scale s is estimated in closed form, s^2 = RSS / N, so that the Gaussian log-likelihood is exact
(see :meth:`FitProblem.loglik`). What the fits minimize is :meth:`FitProblem.likelihood_residuals`,
whose sum of squares is an increasing function of the exact negative log-likelihood; for
proportional noise that includes the weights' dependence on the curve (the residuals are
(y_i - f_i) G / |f_i| with G the geometric mean of |f_i|). The "combined" model,
sigma_i = sqrt(a^2 + b^2 y_i^2), has two noise parameters, estimated jointly with the rates
(:mod:`kinetics.fit`).

Per-observable likelihoods (``noise = "per-observable"``, or any ``[observables.NAME]`` with
noise, sigma, transformation or distribution, or a prior): each row has a transformation t
(lin, log, log10), a distribution (normal, Laplace) and sigma_i, a compiled expression of the fit
parameters (times |f_i| for proportional noise, or the data's sigma); noise parameters are
ordinary fit parameters. :meth:`FitProblem.negative_loglik` is PEtab's negative log-likelihood
with all normalising terms, and its gradient from the sensitivities. With every sigma fixed and
normal noise it is a sum of squares (``likelihood_residuals``: e_i / sigma_i); otherwise
``scalar_objective`` is set. One noise parameter shared by every row (``profiled_scale``) has a
closed-form optimum; other normal likelihoods with estimated sigmas are still a sum of squares
once each row adds a "sigma residual" sqrt(2 log sigma_i + C_i) (``sigma_residuals``); Laplace
noise and non-Gaussian priors are minimized as the scalar ``negative_loglik``. Conditions may be
pre-equilibrated (simulated to steady state first, sensitivities included).
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import os
import pickle
import threading
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sympy as sp

from ..io.data import Dataset, load_data
from ..codegen.lambdify import lambdify_plain
from ..errors import DataError, ExpressionError, ModelError, SolverError
from ..model.expressions import parse_expression
from ..io.files import sanitize_excerpt
from ..io.fit_spec import FitSpec, parse_fit_spec, read_fit_spec
from ..io.fit_spec import MAX_MULTISTART, MAX_NFEV_LIMIT, MAX_SEED  # noqa: F401  (limits shared with cli and optimize)
from ..model.core import load_model
from ..simulation.compiled import compile_model
from ..simulation.schedule import Schedule, as_event, as_input

_LN10 = math.log(10.0)

__all__ = ["Condition", "FitProblem", "load_fit_spec", "parse_prior"]

#: [observables.NAME] keys that give an observable its own noise model
_NOISE_KEYS = {"noise", "sigma", "transformation", "distribution"}
_TRANSFORMATIONS = ("lin", "log", "log10")
_DISTRIBUTIONS = ("normal", "laplace")
#: output times of a pre-equilibration run: the state must have stopped changing between the last two
_PREEQ_TIMES = np.array([1e3, 1e4, 1e5, 1e6])
_PRIOR_TYPES = ("normal", "laplace", "logNormal", "logLaplace", "parameterScaleNormal", "parameterScaleLaplace",
                "uniform", "parameterScaleUniform")



class _EvaluationCounts(threading.local):
    """Model evaluations counted per thread, so that starts run in a thread pool each count
    their own (a shared counter would credit every start with its neighbours' evaluations)."""
    nfev = 0
    njev = 0


@dataclass
class Condition:
    """One experiment: its doses/infusions, initial values, events and parameter overrides."""
    name: str
    doses: list = field(default_factory=list)
    initial: dict = field(default_factory=dict)
    events: list = field(default_factory=list)
    overrides: dict = field(default_factory=dict)
    description: str = ""
    #: a Condition simulated to steady state first; this one starts from its end state (its own
    #: ``initial`` entries re-initialize those pools), as PEtab's pre-equilibration
    preequilibration: "Condition | None" = None


class FitProblem:
    """Residuals and Jacobian of a model against a dataset over all conditions."""

    def __init__(self, model, data, free, *, conditions=None, parameters=None, noise="proportional",
                 log_scale=True, observables=None, origin="fit", settings=None):
        # noise = "per-observable" (or any observable with noise/sigma/transformation/distribution
        # keys): the likelihood is assembled per observable, see _setup_likelihood
        from ..errors import suggest_name
        from ..model.core import Model
        if not isinstance(model, Model):
            raise TypeError("model must be a kinetics.Model")
        # everything needed to rebuild this problem in another process (see __reduce__)
        self._recipe = dict(model=(model.to_dict(), model.source, model.sha256), free=list(free),
                            conditions=conditions, parameters=parameters, noise=noise, log_scale=log_scale,
                            observables=observables, origin=origin, settings=settings)
        observables = dict(observables or {})
        per_observable = noise == "per-observable" or any(
            isinstance(e, dict) and set(e) & _NOISE_KEYS for e in observables.values()) or any(
            isinstance(e, dict) and "prior" in e for e in (parameters or {}).values())
        self.model = model
        self.origin = origin
        self.settings = dict(settings or {})
        self.noise = "per-observable" if per_observable else noise
        #: the noise model of observables whose [observables] entry names none (per-observable mode)
        self.default_noise = "constant" if noise == "per-observable" else noise
        if noise not in ("constant", "proportional", "combined", "data", "per-observable"):
            raise DataError(f"{origin}: noise '{noise}' is not one of constant, proportional, combined, data")
        if per_observable and self.default_noise == "combined":
            raise DataError(f"{origin}: noise = \"combined\" cannot be combined with per-observable noise models "
                            "([observables.NAME] noise, sigma, transformation, distribution) or priors; give "
                            "each observable its own noise")
        self.log_scale = bool(log_scale)
        self.conditions = {c.name: c for c in (conditions or [Condition("default")])}
        self.observable_spec = dict(observables or {})
        compiled = compile_model(model)
        self.compiled = compiled
        if isinstance(free, str):      # checked before the data, as it always was
            raise DataError(f"{origin}: [fit] free must be a list of names, e.g. free = [\"{free}\"]")
        # ---- data (before the parameters: per-observable noise parameters take defaults from it)
        if not isinstance(data, Dataset):
            data = load_data(data, observables=self._measurable_names(), conditions=list(self.conditions),
                             noise=None if per_observable else noise)
        self.data = data
        # ---- fit parameters: model parameters + new fit-level ones
        values, bounds = {}, {}
        scales, priors = {}, {}
        defaults = model.parameter_values()  # values given as expressions evaluated
        for name in compiled.parameter_names:  # (parameters with a rate rule are states, not fitted)
            p = model.parameters[name]
            values[name] = defaults[name]
            bounds[name] = (float(p.min), float(p.max))
        for name, entry in (parameters or {}).items():
            where = f"{origin}: [parameters.{name}]"
            if not isinstance(entry, dict):
                entry = {"value": entry}
            unknown = set(entry) - {"value", "min", "max", "description", "unit", "scale", "prior"}
            if unknown:
                raise DataError(f"{where} unknown key(s) {', '.join(sorted(unknown))}; allowed: value, min, max, "
                                "scale, prior")
            if "scale" in entry:
                if entry["scale"] not in ("lin", "log", "log10"):
                    raise DataError(f"{where} scale = {sanitize_excerpt(str(entry['scale']))!r} must be \"lin\", "
                                    "\"log\" or \"log10\"")
                scales[name] = entry["scale"]
            if "prior" in entry:
                priors[name] = parse_prior(entry["prior"], where)
            if name not in values and "value" not in entry:
                raise DataError(f"{where} is a new fit-level parameter and needs a 'value'")
            lo, hi = bounds.get(name, (-math.inf, math.inf))
            try:
                value = float(entry.get("value", values.get(name)))
                lo, hi = float(entry.get("min", lo)), float(entry.get("max", hi))
            except (TypeError, ValueError):
                raise DataError(f"{where} value, min and max must be numbers") from None
            if lo > hi:
                raise DataError(f"{where} min ({lo:g}) is greater than max ({hi:g})")
            if not lo <= value <= hi:
                raise DataError(f"{where} value {value:g} is outside its bounds [{lo:g}, {hi:g}]")
            values[name], bounds[name] = value, (lo, hi)
        free = list(free) if not isinstance(free, str) else free
        if per_observable and not isinstance(free, str):
            self._add_noise_parameters(observables, parameters or {}, values, bounds, free)
        self.fit_names = list(values)
        self.fit_values = np.array([values[n] for n in self.fit_names])
        self.fit_bounds = np.array([bounds[n] for n in self.fit_names])
        # ---- free parameters
        if isinstance(free, str):
            raise DataError(f"{origin}: [fit] free must be a list of names, e.g. free = [\"{free}\"]")
        free = list(free)
        if not free:
            raise DataError(f"{origin}: [fit] free is empty: name the parameters to estimate")
        computed = set(compiled.computed_parameters)
        for name in [*free, *(n for n, e in (parameters or {}).items() if isinstance(e, dict) and "value" in e or not isinstance(e, dict))]:
            if name in computed:
                raise DataError(f"{origin}: [fit] '{name}' is computed from its value expression in the model "
                                f"('{model.parameters[name].value}'), so it cannot be estimated or given a value; "
                                "free or set the parameters it is computed from")
        for name in free:
            if name not in values:
                raise DataError(f"{origin}: [fit] free names '{name}', which is neither a model parameter nor in [parameters]"
                                f"{suggest_name(name, values)}")
        if len(set(free)) != len(free):
            raise DataError(f"{origin}: [fit] free lists a parameter twice")
        self.free = free
        self.free_index = np.array([self.fit_names.index(n) for n in free], dtype=int)
        lo, hi = self.fit_bounds[self.free_index].T
        for name, scale in scales.items():
            if scale != "lin" and name in free and not self.fit_bounds[self.fit_names.index(name)][0] > 0:
                raise DataError(f"{origin}: [parameters.{name}] scale = \"{scale}\" needs a positive min")
        # log and log10 scales are both optimized as log10 (the same parameterization up to a factor)
        self.log_mask = np.array([scales[n] != "lin" if n in scales else (self.log_scale and l > 0)
                                  for n, l in zip(free, lo)])
        self.scales = {n: scales.get(n, "log10" if m else "lin") for n, m in zip(free, self.log_mask)}
        self.priors = priors
        self._all_log = bool(self.log_mask.all())
        # ---- symbols for override / scale expressions
        self._symbols = {n: sp.Symbol(n, real=True) for n in self.fit_names}
        phi = [self._symbols[n] for n in self.fit_names]
        unknown_obs = set(data.observables) - set(self._measurable_names())
        if unknown_obs:
            raise DataError(f"{origin}: the data measure {', '.join(sorted(unknown_obs))}, which the model "
                            f"'{model.name}' neither observes nor has as a compartment")
        unknown_cond = set(data.conditions) - set(self.conditions)
        if unknown_cond:
            raise DataError(f"{origin}: the data name condition(s) {', '.join(sorted(unknown_cond))} that the fit spec "
                            f"does not define; add [conditions.NAME] or fix the data")
        if noise == "data" and not per_observable and not data.has_sigma:
            raise DataError(f"{origin}: noise = \"data\" needs a sigma column in the data")
        # ---- per-condition plans
        self._plans = []
        series_names = compiled.state_names + compiled.observable_names
        for cname, cond in self.conditions.items():
            if cname not in data.conditions:
                continue  # a condition without measurements contributes nothing to the fit
            rows = data.for_condition(cname)
            if rows.empty:
                continue
            where = f"{origin}: [conditions.{cname}]"
            parameter_map = self._parameter_map(cond, phi, where)
            try:
                schedule = Schedule(compiled, np.unique(rows["time"].to_numpy(float)), cond.doses, cond.events,
                                    cond.initial, where=where)
            except ModelError as exc:
                raise DataError(str(exc)) from None
            t_index = np.searchsorted(schedule.times, rows["time"].to_numpy(float))
            s_index = np.array([series_names.index(o) for o in rows["observable"]])
            preequilibration = None
            if cond.preequilibration is not None:
                pre = cond.preequilibration
                if compiled.time_dependent:
                    raise DataError(f"{where} pre-equilibration needs a model whose rates do not depend on time t")
                try:
                    pre_schedule = Schedule(compiled, _PREEQ_TIMES, pre.doses, pre.events, pre.initial,
                                            where=f"{where} pre-equilibration {pre.name}")
                except ModelError as exc:
                    raise DataError(str(exc)) from None
                preequilibration = {"name": pre.name, "schedule": pre_schedule,
                                    **self._parameter_map(pre, phi, f"{where} pre-equilibration {pre.name}")}
            self._plans.append({
                "name": cname, "schedule": schedule, "rows": rows, **parameter_map,
                "t_index": t_index, "s_index": s_index, "preequilibration": preequilibration,
                "row_evaluator": None if preequilibration else schedule.row_evaluator(t_index, s_index),
            })
        # ---- observable scale/offset (expressions of fit parameters)
        self._obs_maps = {}
        for oname, entry in self.observable_spec.items():
            if oname not in series_names:
                raise DataError(f"{origin}: [observables.{oname}] is not an observable or compartment of the model")
            if not isinstance(entry, dict):
                raise DataError(f"{origin}: [observables.{oname}] must be a table like {{ scale = \"gain\", offset = \"background\" }}")
            unknown = set(entry) - {"scale", "offset"} - _NOISE_KEYS
            if unknown:
                raise DataError(f"{origin}: [observables.{oname}] unknown key(s) {', '.join(sorted(unknown))}; allowed: "
                                "scale, offset, noise, sigma, transformation, distribution")
            maps = {}
            for key in ("scale", "offset"):
                if key in entry:
                    try:
                        e = parse_expression(entry[key], self._symbols, allow_time=False)
                    except ExpressionError as exc:
                        raise DataError(f"{origin}: [observables.{oname}] {key} '{entry[key]}' {exc}") from None
                    maps[key] = (lambdify_plain([phi], e, "math"), lambdify_plain([phi], [e.diff(s) for s in phi], "math"))
            if maps:
                self._obs_maps[oname] = maps
        # ---- data vectors in plan order
        self.y = np.concatenate([p["rows"]["value"].to_numpy(float) for p in self._plans])
        self.rows = np.concatenate([p["rows"]["row"].to_numpy() for p in self._plans])
        if per_observable:
            self.weights = np.ones_like(self.y)
        elif noise == "data":
            self.weights = 1.0 / np.concatenate([p["rows"]["sigma"].to_numpy(float) for p in self._plans])
        elif noise == "proportional":
            self.weights = 1.0 / np.abs(self.y)
        else:
            self.weights = np.ones_like(self.y)
        self._recipe["data"] = data
        self.n_data = len(self.y)
        # per-observable noise parameters are ordinary fit parameters (counted in n_free)
        self.n_noise = 0 if per_observable else {"constant": 1, "proportional": 1, "combined": 2, "data": 0}[noise]
        self.scalar_objective = False
        self.has_sigma_residuals = False
        self.sigma_residual_offset = math.nan
        if per_observable:
            self._setup_likelihood()
        self._counts = _EvaluationCounts()
        P = compiled.n_params
        #: whether predict() takes the one-call shortcut for data rows (see Schedule.row_evaluator):
        #: every condition has one and no observable scale/offset applies. Setting it False forces
        #: the general path (same results to rounding; the tests compare the two).
        self.row_shortcut = not self._obs_maps and all(p["row_evaluator"] is not None for p in self._plans)
        self._no_directions = np.zeros((P, 0))
        self._identity_D = np.zeros((P, len(self.free)))
        for k, i in enumerate(self.free_index):
            if i < P:
                self._identity_D[i, k] = 1.0
        #: indices (in ``free``) of the parameters the predictions can depend on, or None for all:
        #: the others (noise parameters, which PEtab problems make model parameters that no rate
        #: uses) have sensitivities that are zero by construction, so the model runs without their
        #: directions (each costs as much as a state per model state) and their columns of the
        #: Jacobian are filled with zeros
        live = [k for k, name in enumerate(self.free) if self._used_by_model(name)]
        self._live = None if len(live) == len(self.free) else np.array(live, dtype=int)

    @property
    def free_directions(self) -> np.ndarray:
        """dp/d(theta) for unit steps of the free parameters: (P model parameters, K free), the
        directions a condition without overrides passes to its row evaluator (a copy)."""
        return self._identity_D.copy()

    @property
    def plans(self) -> list:
        """One entry per condition, in data order: its name and its data rows (``rows``)."""
        return self._plans

    def _measurable_names(self):
        return self.compiled.state_names + self.compiled.observable_names

    # --------------------------------------------------------------- scales
    @property
    def nfev(self) -> int:
        """Model evaluations (simulations) made by the calling thread."""
        return self._counts.nfev

    @nfev.setter
    def nfev(self, value):
        self._counts.nfev = value

    @property
    def njev(self) -> int:
        """Evaluations with sensitivities (Jacobian) made by the calling thread."""
        return self._counts.njev

    @njev.setter
    def njev(self, value):
        self._counts.njev = value

    @property
    def n_free(self) -> int:
        return len(self.free)

    def to_internal(self, natural):
        natural = np.asarray(natural, dtype=float)
        return np.where(self.log_mask, np.log10(np.where(self.log_mask, natural, 1.0)), natural)

    def to_natural(self, internal):
        internal = np.asarray(internal, dtype=float)
        if self._all_log:
            return 10.0 ** internal
        return np.where(self.log_mask, 10.0 ** internal, internal)

    def internal_bounds(self):
        lo, hi = self.fit_bounds[self.free_index].T
        with np.errstate(divide="ignore"):
            ilo = np.where(self.log_mask, np.log10(np.where(self.log_mask, lo, 1.0)), lo)
            ihi = np.where(self.log_mask, np.log10(np.where(self.log_mask & (hi > 0), hi, 1.0)), hi)
        ihi = np.where(self.log_mask & ~np.isfinite(hi), np.inf, ihi)
        return ilo, ihi

    def internal_names(self):
        return [f"log10_{n}" if m else n for n, m in zip(self.free, self.log_mask)]

    def start(self):
        """Internal start vector (the spec's values)."""
        return self.to_internal(self.fit_values[self.free_index])

    def phi(self, internal):
        phi = self.fit_values.copy()
        phi[self.free_index] = self.to_natural(internal)
        return phi

    # ------------------------------------------------------------ evaluation
    def predict(self, internal, jacobian=False):
        """Predictions f (N,) at the data points, and df/d(internal theta) (N, K) if asked."""
        phi = self.phi(internal)
        natural = phi[self.free_index]
        # d phi_free / d internal
        dphi = natural * _LN10 if self._all_log else np.where(self.log_mask, natural * _LN10, 1.0)
        phil = phi.tolist()
        if self.row_shortcut:
            out = self._predict_rows(phi, phil, dphi, jacobian)
            if out is not None:
                return out
        preds, jacs = [], []
        for plan in self._plans:
            p, D = self._plan_parameters(plan, phi, phil, dphi, jacobian)
            X, Y, S, dY = plan["schedule"].run(p, D, start=self._preequilibrate(plan, phi, phil, dphi, jacobian))
            series = np.hstack([X, Y]) if Y.shape[1] else X
            f = series[plan["t_index"], plan["s_index"]]
            if jacobian:
                dseries = np.concatenate([S, dY], axis=1) if dY is not None and dY.shape[1] else S
                J = self._all_directions(dseries[plan["t_index"], plan["s_index"], :])
            for oname, maps in self._obs_maps.items():
                names = self._measurable_names()
                rows = plan["s_index"] == names.index(oname)
                if not rows.any():
                    continue
                scale = maps["scale"][0](phil) if "scale" in maps else 1.0
                offset = maps["offset"][0](phil) if "offset" in maps else 0.0
                raw = f[rows].copy()
                f[rows] = scale * raw + offset
                if jacobian:
                    J[rows] = scale * J[rows]
                    for key, factor in (("scale", raw), ("offset", np.ones_like(raw))):
                        if key in maps:
                            grad = np.asarray(maps[key][1](phil), dtype=float)[self.free_index] * dphi
                            J[rows] += factor[:, None] * grad[None, :]
            preds.append(f)
            if jacobian:
                jacs.append(J)
        self.nfev += 1
        if jacobian:
            self.njev += 1
        if len(preds) == 1:     # (new arrays already: the data rows picked out of the series)
            return preds[0], (jacs[0] if jacobian else None)
        return np.concatenate(preds), (np.concatenate(jacs, axis=0) if jacobian else None)

    def _parameter_map(self, cond, phi, where):
        """The model parameters of a condition as functions of the fit parameters phi."""
        from ..errors import suggest_name
        compiled = self.compiled
        g = list(phi[: compiled.n_params])  # model parameters are the first P fit parameters
        for pname, expr in cond.overrides.items():
            if pname not in compiled.parameter_names:
                raise DataError(f"{where} overrides '{pname}', which is not a model parameter{suggest_name(pname, compiled.parameter_names)}")
            try:
                g[compiled.parameter_names.index(pname)] = parse_expression(expr, self._symbols, allow_time=False)
            except ExpressionError as exc:
                raise DataError(f"{where} override {pname} = '{expr}' {exc}") from None
        G = sp.Matrix(g)
        dG = G.jacobian(phi)
        dg = lambdify_plain([phi], dG, "numpy")
        # dp/dphi of the free parameters, when it is a constant matrix (overrides linear in phi,
        # as PEtab's parameter mappings): evaluated once, by the same generated code
        dg_free = None if dG.free_symbols else np.asarray(dg(self.fit_values.tolist()), dtype=float)[:, self.free_index]
        return {"g": lambdify_plain([phi], list(G), "math"), "dg": dg, "dg_free": dg_free, "identity": not cond.overrides}

    def _preequilibrate(self, plan, phi, phil, dphi, jacobian):
        """(x, S) at the steady state of the plan's pre-equilibration condition, or None."""
        pre = plan.get("preequilibration")
        if pre is None:
            return None
        p, D = self._plan_parameters(pre, phi, phil, dphi, jacobian)
        X, _, S, _ = pre["schedule"].run(p, D)
        change = np.abs(X[-1] - X[-2])
        if not np.all(change <= 1e-7 * np.abs(X[-1]) + 1e-12):
            worst = int(np.argmax(change - 1e-7 * np.abs(X[-1])))
            raise SolverError(f"pre-equilibration {pre['name']} of condition {plan['name']}: no steady state by "
                              f"t = {_PREEQ_TIMES[-1]:g} ({self.compiled.state_names[worst]} still changes by "
                              f"{change[worst]:.3g})")
        return X[-1], (S[-1] if jacobian else None)

    def _plan_parameters(self, plan, phi, phil, dphi, jacobian):
        """Model parameters p of a condition and, with ``jacobian``, D = dp/d(internal theta)
        along the live directions (see ``_live``)."""
        if plan["identity"]:  # no overrides: model parameters are the first P fit parameters
            p = phi[:self.compiled.n_params]
            if not jacobian:
                return p, None
            D = self._identity_D * dphi
        else:
            p = np.array(plan["g"](phil), dtype=float)
            if not jacobian:
                return p, None
            dg_free = plan["dg_free"]
            if dg_free is None:
                dg_free = np.asarray(plan["dg"](phil), dtype=float)[:, self.free_index]
            D = dg_free * dphi
        return p, (D if self._live is None else np.ascontiguousarray(D[:, self._live]))

    def _all_directions(self, J):
        """Sensitivities along the live directions (..., K live) as (..., K), zeros elsewhere."""
        if self._live is None:
            return J
        full = np.zeros(J.shape[:-1] + (len(self.free),))
        full[..., self._live] = J
        return full

    def _predict_rows(self, phi, phil, dphi, jacobian):
        """:meth:`predict` by the one-call row evaluators; None if one declines (ill-conditioned)."""
        preds, jacs = [], []
        for plan in self._plans:
            p, D = self._plan_parameters(plan, phi, phil, dphi, jacobian)
            out = plan["row_evaluator"](p, D if jacobian else self._no_directions)
            if out is None:
                return None
            preds.append(out[0])
            jacs.append(self._all_directions(out[1]) if jacobian else out[1])
        self.nfev += 1
        if jacobian:
            self.njev += 1
        if len(preds) == 1:
            return preds[0], (jacs[0] if jacobian else None)
        return np.concatenate(preds), (np.concatenate(jacs, axis=0) if jacobian else None)

    def residuals(self, internal, noise_weights=None):
        """Weighted residuals w (y - f)."""
        f, _ = self.predict(internal)
        w = self.weights if noise_weights is None else noise_weights
        return w * (self.y - f)

    def residuals_and_jacobian(self, internal, noise_weights=None):
        if self.noise == "per-observable":
            return self.fisher_rows(internal)
        f, J = self.predict(internal, jacobian=True)
        w = self.weights if noise_weights is None else noise_weights
        return w * (self.y - f), -w[:, None] * J

    def fisher_rows(self, internal):
        """Per-observable mode: (z, F) with F^T F the Fisher information of the likelihood in
        internal theta (rows dz/dtheta, then sqrt(2) dlog sigma (normal) or dlog sigma (Laplace),
        then the curvature of normal priors), for the covariance."""
        e, de, sigma, dls = self._likelihood_terms(internal, True)
        rows = [de / sigma[:, None], np.where(self._laplace, 1.0, math.sqrt(2.0))[:, None] * dls]
        for k, name in enumerate(self.free):
            prior = self.priors.get(name)
            if prior and prior[0] in ("normal", "parameterScaleNormal") and self.scales[name] == "lin":
                row = np.zeros(len(self.free))
                row[k] = 1.0 / prior[2]
                rows.append(row[None, :])
        F = np.vstack(rows)
        return np.concatenate([e / sigma, np.zeros(F.shape[0] - len(e))]), F

    def prediction_floor(self):
        """Smallest |f_i| a proportional-noise weight 1/|f_i| uses: 1e-9 of the largest |y|. It
        depends on the data only, so the likelihood stays one smooth function of the parameters."""
        return 1e-9 * max(float(np.max(np.abs(self.y))) if self.n_data else 0.0, 1e-300)

    def weights_from_prediction(self, f):
        """Proportional-noise weights 1/|f_i| at the predictions f (floored, see prediction_floor)."""
        return 1.0 / np.maximum(np.abs(f), self.prediction_floor())

    def likelihood_residuals(self, internal, jacobian=False):
        """Residuals r (N,) whose sum of squares is an increasing function of the negative
        log-likelihood (noise scale at its optimum), and dr/d(internal theta) if asked: what the
        fits minimize, see :meth:`objective_loglik`. Constant and data noise: w (y - f) with the
        fixed weights. Proportional noise (sigma_i = s |f_i|): with s profiled out,
        -loglik = N/2 log(sum ((y_i - f_i)/f_i)^2) + sum log |f_i| + const
        = N/2 log(sum r_i^2) + const for r_i = (y_i - f_i) G / |f_i|, G the geometric mean of |f_i|;
        its Jacobian includes the dependence of the weights (and G) on theta. Not for "combined"
        noise, whose weights depend on (a, b): pass them to :meth:`residuals_and_jacobian`."""
        if self.noise == "combined":
            raise ValueError("combined noise has no fixed-weight likelihood: pass weights from (a, b)")
        if self.noise == "per-observable":
            if self.scalar_objective:
                raise ValueError("this likelihood is not a sum of squares: use negative_loglik")
            e, de, sigma, _ = self._likelihood_terms(internal, jacobian)
            return e / sigma, (de / sigma[:, None] if jacobian else None)
        f, J = self.predict(internal, jacobian=jacobian)
        e = self.y - f
        if self.noise != "proportional":
            w = self.weights
            return w * e, (-w[:, None] * J if jacobian else None)
        floor = self.prediction_floor()
        scale = np.abs(f)
        live = None if scale.min() > floor else scale > floor    # floored points have constant weights
        if live is not None:
            scale = np.where(live, scale, floor)
        log_scale = np.log(scale)
        w = np.exp(np.mean(log_scale) - log_scale)     # G / |f_i|; prod w_i = 1
        r = w * e
        if not jacobian:
            return r, None
        # d log|f_i| = J_i / f_i (0 where floored); d log G = mean_j d log|f_j|
        inverse = 1.0 / f if live is None else np.where(live, 1.0 / np.where(live, f, 1.0), 0.0)
        dlog = inverse[:, None] * J
        Jr = w[:, None] * (e[:, None] * (dlog.mean(axis=0) - dlog) - J)
        return r, Jr

    def objective_loglik(self, rss):
        """The log-likelihood at a point where :meth:`likelihood_residuals` has sum of squares rss."""
        if self.noise == "per-observable":
            return self.loglik(rss)
        if self.noise == "proportional":   # the weights G/|f_i| have sum log w_i = 0
            return self.loglik(rss, np.ones(self.n_data))
        return self.loglik(rss)

    def likelihood_weights(self, f):
        """Weights 1/sigma_i (up to the common scale s) at predictions f: 1/|f_i| for
        proportional noise, else the fixed weights."""
        return self.weights_from_prediction(f) if self.noise == "proportional" else self.weights

    def combined_weights(self, a, b):
        """Weights 1/sigma_i for the combined noise model sigma_i = sqrt(a^2 + b^2 y_i^2)."""
        return 1.0 / np.sqrt(a * a + b * b * self.y * self.y)

    def loglik(self, rss, noise_weights=None):
        """Gaussian log-likelihood with the noise scale at its maximum-likelihood value.

        With sigma_i = s / w_i: -2 loglik = N log(2 pi s^2) - 2 sum log w_i + RSS / s^2, and
        s^2 = RSS / N (constant, proportional); s = 1 for "data" and "combined" (whose weights
        already are 1/sigma_i)."""
        if self.noise == "per-observable":
            # rss: the sum of squares of likelihood_residuals (sigma fixed), else 2 x the
            # negative log-likelihood (scalar_objective; _ls_constant is then 0)
            return -0.5 * rss - self._ls_constant
        N = self.n_data
        w = self.weights if noise_weights is None else noise_weights
        log_w = float(np.sum(np.log(w)))
        if self.noise in ("constant", "proportional"):
            s2 = rss / N
            if not s2 > 0:
                # a perfect fit (exact synthetic data): the likelihood grows without bound as
                # s -> 0; s is taken at the rounding level of the data so every figure stays finite
                s2 = (np.finfo(float).eps * max(float(np.sqrt(np.mean(self.y ** 2))), 1e-300)) ** 2
            return -0.5 * (N * math.log(2 * math.pi * s2) + N) + log_w
        return -0.5 * (N * math.log(2 * math.pi) + rss) + log_w

    def noise_scale(self, rss):
        return math.sqrt(rss / self.n_data) if self.noise in ("constant", "proportional") else 1.0

    # ------------------------------------------------------- per-observable likelihood
    def _add_noise_parameters(self, observables, parameters, values, bounds, free):
        """Read each measured observable's noise model; noise = "constant" / "proportional" add
        the fit parameter sigma_NAME / sigma_rel_NAME (estimated unless the spec says otherwise)."""
        origin = self.origin
        self.noise_entries = {}
        y_all = self.data.table
        for name in self.data.observables:
            entry = observables.get(name, {})
            where = f"{origin}: [observables.{name}]"
            if not isinstance(entry, dict):
                raise DataError(f"{where} must be a table like {{ noise = \"constant\", transformation = \"log10\" }}")
            transformation = entry.get("transformation", "lin")
            distribution = entry.get("distribution", "normal")
            if transformation not in _TRANSFORMATIONS:
                raise DataError(f"{where} transformation = {sanitize_excerpt(str(transformation))!r} must be one of "
                                + ", ".join(f'"{t}"' for t in _TRANSFORMATIONS))
            if distribution not in _DISTRIBUTIONS:
                raise DataError(f"{where} distribution = {sanitize_excerpt(str(distribution))!r} must be \"normal\" or "
                                "\"laplace\"")
            y = y_all.loc[y_all["observable"] == name, "value"].to_numpy(float)
            if transformation != "lin" and not np.all(y > 0):
                row = y_all.loc[(y_all["observable"] == name) & ~(y_all["value"] > 0), "row"].iloc[0]
                raise DataError(f"{where} transformation = \"{transformation}\" needs positive measurements, but data "
                                f"row {row} is {y[~(y > 0)][0]:g}; use transformation = \"lin\" or drop the row")
            if "sigma" in entry:
                if entry.get("noise", "constant") not in ("constant", "proportional"):
                    raise DataError(f"{where} gives sigma with noise = {sanitize_excerpt(str(entry['noise']))!r}; with "
                                    "sigma, noise is \"constant\" (sigma itself) or \"proportional\" (sigma x |f|)")
                kind = "proportional" if entry.get("noise") == "proportional" else "expression"
                sigma = entry["sigma"]
            else:
                kind = entry.get("noise", self.default_noise)
                if kind not in ("constant", "proportional", "data"):
                    raise DataError(f"{where} noise = {sanitize_excerpt(str(kind))!r} must be \"constant\", "
                                    "\"proportional\" or \"data\" (or give sigma = \"expression\")")
                sigma = None
                if kind == "data":
                    if not self.data.has_sigma or not np.all(
                            y_all.loc[y_all["observable"] == name, "sigma"].to_numpy(float) > 0):
                        raise DataError(f"{where} noise = \"data\" needs a positive sigma column value on every row "
                                        f"measuring {name}")
                else:
                    sigma = f"sigma_{name}" if kind == "constant" else f"sigma_rel_{name}"
                    if sigma not in values:     # (a value in [parameters] or the model wins)
                        given = {}
                        t = {"lin": y, "log": np.log(np.abs(y) + 1e-300), "log10": np.log10(np.abs(y) + 1e-300)}[transformation]
                        size = float(np.max(np.abs(t))) if kind == "constant" and transformation == "lin" and len(t) else 1.0
                        size = size if size > 0 else 1.0
                        lo, hi = float(given.get("min", 1e-8 * size)), float(given.get("max", 1e2 * size))
                        values[sigma] = float(given.get("value", 0.1 * size))
                        bounds[sigma] = (lo, hi)
                    if sigma not in free:
                        free.append(sigma)
            self.noise_entries[name] = {"kind": kind, "sigma": sigma, "transformation": transformation,
                                         "distribution": distribution}

    def _setup_likelihood(self):
        """Per-row transformation, distribution and sigma (compiled expressions of the fit
        parameters) of the per-observable likelihood, and whether it is a sum of squares."""
        phi = [self._symbols[n] for n in self.fit_names]
        free_symbols = {self._symbols[n] for n in self.free}
        row_obs = np.concatenate([p["rows"]["observable"].to_numpy() for p in self._plans])
        N = len(row_obs)
        self._tcode = np.zeros(N, dtype=int)
        self._laplace = np.zeros(N, dtype=bool)
        self._sigma_groups = []
        data_sigma = np.concatenate([p["rows"]["sigma"].to_numpy(float) for p in self._plans])
        depends = False
        sigma_exprs = []    # the parsed sigma of each non-data group, in group order
        for name, entry in self.noise_entries.items():
            idx = np.flatnonzero(row_obs == name)
            if not len(idx):
                continue
            self._tcode[idx] = _TRANSFORMATIONS.index(entry["transformation"])
            self._laplace[idx] = entry["distribution"] == "laplace"
            if entry["kind"] == "data":
                self._sigma_groups.append((idx, "data", data_sigma[idx]))
                continue
            try:
                expr = parse_expression(entry["sigma"], self._symbols, allow_time=False)
            except ExpressionError as exc:
                raise DataError(f"{self.origin}: [observables.{name}] sigma '{sanitize_excerpt(str(entry['sigma']))}' "
                                f"{exc}; it may use fit parameters only") from None
            depends = depends or bool(expr.free_symbols & free_symbols) or entry["kind"] == "proportional"
            # (the gradients of the varying sigmas: one generated function, _setup_sigma_evaluation)
            self._sigma_groups.append((idx, entry["kind"], lambdify_plain([phi], expr, "math")))
            sigma_exprs.append(expr)
        self._setup_sigma_evaluation(phi, free_symbols, sigma_exprs)
        self._transformed = bool(self._tcode.any())
        #: masks of the rows with log or log10 transformation, with ln, with log10
        self._transformed_rows = (self._tcode > 0, self._tcode == 1, self._tcode == 2)
        y = self.y
        self._y_t = np.where(self._tcode == 1, np.log(np.where(self._tcode == 1, y, 1.0)),
                             np.where(self._tcode == 2, np.log10(np.where(self._tcode == 2, y, 1.0)), y))
        # the density of y from that of t(y): log |dt/dy| = -log y (log), -log(y ln 10) (log10)
        self._jacobian_terms = float(np.sum(np.where(self._tcode == 1, np.log(np.where(self._tcode == 1, y, 1.0)), 0.0))
                                     + np.sum(np.where(self._tcode == 2, np.log(np.where(self._tcode == 2, y, 1.0) * _LN10), 0.0)))
        active_priors = {n: p for n, p in self.priors.items() if n in self.free and not p[0].endswith("niform")}
        self.scalar_objective = bool(depends or self._laplace.any() or active_priors)
        self._ls_constant = 0.0
        #: index (in free) of a noise parameter that is the sigma of every row (normal noise, used
        #: nowhere else, no priors): its optimum is sqrt(mean e^2) in closed form, so the rates
        #: are a least-squares problem (see kinetics.fitting.optimize._profiled_scale_fit)
        self.profiled_scale = None
        exprs = [g for g in self._sigma_groups]
        if self.scalar_objective and not active_priors and not self._laplace.any() and exprs and all(
                g[1] in ("expression", "constant") for g in exprs):
            sigmas = {parse_expression(entry["sigma"], self._symbols, allow_time=False)
                      for entry in self.noise_entries.values() if entry["kind"] in ("expression", "constant")}
            if len(sigmas) == 1 and next(iter(sigmas)).is_Symbol:
                name = str(sigmas.pop())
                if name in self.free and not self._used_by_model(name):
                    self.profiled_scale = self.free.index(name)
        if not self.scalar_objective:   # sigma fixed: -loglik = rss / 2 + this constant
            sigma, _ = self._sigma(self.fit_values.tolist(), None, None, None)
            self._ls_constant = float(np.sum(np.log(sigma)) + 0.5 * N * math.log(2 * math.pi) + self._jacobian_terms)
        self._setup_sigma_residuals(sigma_exprs, active_priors)

    def _setup_sigma_residuals(self, sigma_exprs, active_priors):
        """Whether the scalar likelihood can be written as a sum of squares with "sigma
        residuals" (see :meth:`sigma_residuals`), and its constants. It can when every row is
        normal, every active prior Gaussian, and a positive lower bound sigma_lo,i of each sigma
        that depends on the free parameters is known over the bounds: interval arithmetic on its
        expression (sympy's AccumBounds, free parameters over their bounds, the others at their
        values; an enclosure, so its minimum is a true lower bound), times the prediction floor
        for proportional noise. C_i = 1 - 2 log sigma_lo,i then keeps the radicand
        2 log sigma_i + C_i >= 1 everywhere inside the bounds. (AMICI's ``sigma_res`` uses one
        user-set C, 50 by default, and leaves positivity to the user.) The smallest safe C is
        taken because the Gauss-Newton curvature of s_i^2 / 2 in log sigma is 1 / s_i^2: the
        larger C, the less of the true curvature (2 z_i^2) the sigma residuals carry."""
        #: whether sigma_residuals applies (else a scalar likelihood is fitted with L-BFGS-B)
        self.has_sigma_residuals = False
        #: 2 nll = |sigma_residuals|^2 + sigma_residual_offset
        self.sigma_residual_offset = math.nan
        self._sigma_rows = np.zeros(0, dtype=int)
        self._sigma_constants = np.zeros(0)
        self._gaussian_priors = []
        if not self.scalar_objective or self._laplace.any():
            return
        for name, (kind, a, b) in active_priors.items():
            if kind not in ("normal", "parameterScaleNormal"):
                return      # log-normal priors add log x, Laplace |u - a|: no exact square
            self._gaussian_priors.append((self.free.index(name), kind, a, b))
        box = {}
        for k, name in enumerate(self.free):
            lo, hi = self.fit_bounds[self.free_index[k]]
            box[self._symbols[name]] = sp.AccumBounds(lo, hi) if lo < hi else lo
        values = {self._symbols[n]: v for n, v in zip(self.fit_names, self.fit_values)}
        free_symbols = set(box)
        fixed_log_sigma = 0.0
        rows, constants = [], []
        exprs = iter(sigma_exprs)
        for idx, kind, fn in self._sigma_groups:
            if kind == "data":
                fixed_log_sigma += float(np.sum(np.log(fn)))
                continue
            expr = next(exprs)
            if kind != "proportional" and not expr.free_symbols & free_symbols:
                fixed_log_sigma += len(idx) * math.log(float(fn(self.fit_values.tolist())))
                continue
            lower = _interval_minimum(expr, box, values)
            if kind == "proportional":
                lower *= self.prediction_floor()
            if not (lower > 0 and math.isfinite(lower)):
                return      # positivity over the bounds cannot be guaranteed: the scalar path
            rows.append(idx)
            constants.append(np.full(len(idx), 1.0 - 2.0 * math.log(lower)))
        self._sigma_rows = np.concatenate(rows) if rows else np.zeros(0, dtype=int)
        self._sigma_constants = np.concatenate(constants) if constants else np.zeros(0)
        prior_constant = sum(2.0 * math.log(b * math.sqrt(2 * math.pi)) for _, _, _, b in self._gaussian_priors)
        self.sigma_residual_offset = float(self.n_data * math.log(2 * math.pi) + 2.0 * self._jacobian_terms
                                           + 2.0 * fixed_log_sigma - np.sum(self._sigma_constants) + prior_constant)
        self.has_sigma_residuals = True

    def sigma_residuals(self, internal, jacobian=False):
        """The negative log-likelihood of normal noise with estimated sigma as a sum of squares:
        r = [e_i / sigma_i (every row), s_i = sqrt(2 log sigma_i + C_i) (rows whose sigma depends
        on the free parameters), (u_k - a_k) / b_k (Gaussian priors)] with
        |r|^2 + ``sigma_residual_offset`` = 2 nll exactly (C_i: see _setup_sigma_residuals), and
        dr/d(internal theta) if asked, exact: ds_i = d log sigma_i / s_i. Only where
        ``has_sigma_residuals``."""
        if not self.has_sigma_residuals:
            raise ValueError("this likelihood has no sigma-residual form (Laplace noise, non-Gaussian priors or "
                             "sigma not bounded away from 0): use negative_loglik")
        e, de, sigma, dls = self._likelihood_terms(internal, jacobian)
        radicand = 2.0 * np.log(sigma[self._sigma_rows]) + self._sigma_constants
        if not np.all(radicand > 0):    # excluded by the choice of C inside the bounds
            raise SolverError("a sigma residual's radicand 2 log sigma + C is not positive (sigma below the lower "
                              "bound its expression has over the parameter bounds)")
        s = np.sqrt(radicand)
        z = e / sigma
        parts = [z, s]
        if self._gaussian_priors:
            u, du = self._prior_arguments(internal)
            parts.append(u)
        r = np.concatenate(parts)
        if not jacobian:
            return r, None
        blocks = [de / sigma[:, None] - z[:, None] * dls, dls[self._sigma_rows] / s[:, None]]
        if self._gaussian_priors:
            blocks.append(du)
        return r, np.vstack(blocks)

    @property
    def sigma_residual_rows(self) -> np.ndarray:
        """Data rows (indices into ``y``) that have a sigma residual in :meth:`sigma_residuals`,
        in the order of those residuals (they follow the n_data rows e_i / sigma_i)."""
        return self._sigma_rows.copy()

    def _prior_arguments(self, internal):
        """(u_k - a_k) / b_k of the Gaussian priors (u: the natural value or, parameterScale,
        the value on its scale) and their derivatives in internal theta, one row per prior."""
        natural = self.to_natural(np.asarray(internal, dtype=float))
        u = np.empty(len(self._gaussian_priors))
        du = np.zeros((len(self._gaussian_priors), len(self.free)))
        for row, (k, kind, a, b) in enumerate(self._gaussian_priors):
            x = float(natural[k])
            if kind == "normal":
                value, slope = x, (x * _LN10 if self.log_mask[k] else 1.0)
            else:       # parameterScaleNormal: on the parameter's own scale (lin, log or log10)
                scale = self.scales[self.free[k]]
                if scale == "lin":
                    value, slope = x, (x * _LN10 if self.log_mask[k] else 1.0)
                elif scale == "log":
                    value, slope = math.log(x), _LN10     # internal is log10 x
                else:
                    value, slope = math.log10(x), 1.0
            u[row] = (value - a) / b
            du[row, k] = slope / b
        return u, du

    def _used_by_model(self, name) -> bool:
        """Whether a fit parameter enters the predictions (rates, observables, initial values,
        computed parameters, the model's events, condition overrides, initial values, events and
        doses, observable scale/offset): the names all these read, collected once."""
        names = self.__dict__.get("_names_used_by_model")
        if names is None:
            import re
            c = self.compiled
            names = set()
            for matrix in (c.rhs_symbolic, c.observables_symbolic):
                for e in matrix:
                    names |= {str(v) for v in e.free_symbols}
            texts = [str(p.initial) for p in self.model.compartments.values()]
            texts += [str(getattr(p, "volume", "")) for p in self.model.compartments.values()]
            texts += [str(v) for p in self.model.parameters.values() for v in (p.value,) if isinstance(v, str)]
            for event in self.model.events.values():
                texts += [str(event.trigger), *map(str, event.assign.values())]
            for cond in self.conditions.values():
                for item in (cond, cond.preequilibration):
                    if item is not None:
                        texts += [str(v) for v in (*item.overrides.values(), *item.initial.values())]
                        # (events and doses as given: objects or the tables they come from;
                        # their text names at most a few field names besides the parameters)
                        texts += [str(e) for e in item.events] + [str(d) for d in item.doses]
            for entry in self.observable_spec.values():
                if isinstance(entry, dict):
                    texts += [str(entry.get("scale", "")), str(entry.get("offset", ""))]
            identifier = re.compile(r"(?<![\w.])[A-Za-z_]\w*")
            for text in texts:
                names |= set(identifier.findall(text))
            self._names_used_by_model = names
        return name in names

    def _setup_sigma_evaluation(self, phi, free_symbols, sigma_exprs):
        """What :meth:`_sigma` needs at each evaluation, prepared once: the sigmas that no free
        parameter changes (data sigmas; expressions of fixed parameters only, which always see
        their fixed values), and one generated function each for the values and gradients of
        the others, with the row -> group maps to spread them (one call instead of two per
        group: PEtab problems have a noise group per observable)."""
        fixed_values = self.fit_values.tolist()
        self._sigma_fixed = np.ones(self.n_data)
        self._sigma_fixed_error = None      # (group position, message) of the first invalid fixed sigma
        varying, exprs, positions = [], iter(sigma_exprs), []
        for position, (idx, kind, fn) in enumerate(self._sigma_groups):
            if kind == "data":
                self._sigma_fixed[idx] = fn
                continue
            expr = next(exprs)
            if kind == "proportional" or expr.free_symbols & free_symbols:
                varying.append((idx, kind, expr))
                positions.append(position)
                continue
            value = float(fn(fixed_values))
            if (not value > 0 or not math.isfinite(value)) and self._sigma_fixed_error is None:
                self._sigma_fixed_error = (position, f"the noise sigma of {self.rows[idx[0]]} is {value:g}, not positive")
            self._sigma_fixed[idx] = value
        #: group positions (in _sigma_groups) of the varying sigmas, for error messages in group order
        self._sigma_varying_positions = positions
        self._sigma_varying_first_rows = [idx[0] for idx, _, _ in varying]
        # each row's entry in [fixed sigmas (N), varying values (G)] and in [0, gradients (G)]
        self._sigma_slot = np.arange(self.n_data)
        self._sigma_gradient_slot = np.zeros(self.n_data, dtype=int)
        for g, (idx, _, _) in enumerate(varying):
            self._sigma_slot[idx] = self.n_data + g
            self._sigma_gradient_slot[idx] = 1 + g
        self._sigma_proportional_rows = np.concatenate([idx for idx, kind, _ in varying if kind == "proportional"]) \
            if any(kind == "proportional" for _, kind, _ in varying) else np.zeros(0, dtype=int)
        self._sigma_varying_values = self._sigma_varying_gradients = None
        if varying:
            free_phi = [phi[i] for i in self.free_index]
            self._sigma_varying_values = lambdify_plain([phi], [e for _, _, e in varying], "math")
            self._sigma_varying_gradients = lambdify_plain([phi], [[e.diff(v) for v in free_phi] for _, _, e in varying],
                                                           "math")

    def _sigma(self, phil, f, J, dphi):
        """sigma (N,) and, with J, d log sigma / d internal theta (N, K)."""
        error = self._sigma_fixed_error
        if error is not None and not any(position < error[0] for position in self._sigma_varying_positions):
            raise SolverError(error[1])
        if self._sigma_varying_values is None:
            return self._sigma_fixed.copy(), (None if J is None else np.zeros((self.n_data, len(self.free))))
        values = self._sigma_varying_values(phil)
        for g, value in enumerate(values):      # the first invalid sigma, in group order
            if not value > 0 or not math.isfinite(value):
                if error is not None and error[0] < self._sigma_varying_positions[g]:
                    break
                raise SolverError(f"the noise sigma of {self.rows[self._sigma_varying_first_rows[g]]} is {value:g}, "
                                  "not positive")
        if error is not None:
            raise SolverError(error[1])
        values = np.array(values, dtype=float)
        sigma = np.concatenate((self._sigma_fixed, values)).take(self._sigma_slot)
        proportional = self._sigma_proportional_rows
        if len(proportional):
            sigma[proportional] *= np.maximum(np.abs(f[proportional]), self.prediction_floor())
        if J is None:
            return sigma, None
        grads = np.array(self._sigma_varying_gradients(phil), dtype=float) * dphi / values[:, None]
        dls = np.concatenate((np.zeros((1, len(self.free))), grads)).take(self._sigma_gradient_slot, axis=0)
        if len(proportional):
            fp = f[proportional]
            live = np.abs(fp) > self.prediction_floor()
            dls[proportional] += np.where(live, 1.0 / np.where(live, fp, 1.0), 0.0)[:, None] * J[proportional]
        return sigma, dls

    def _likelihood_terms(self, internal, jacobian):
        """(e, de, sigma, dlog sigma): transformed residuals e = t(y) - t(f) and the row sigmas."""
        f, J = self.predict(internal, jacobian=jacobian)
        tf, dt = f, J
        if self._transformed:
            logged, ln_rows, log10_rows = self._transformed_rows
            if not (f[logged] > 0).all():
                raise SolverError("a log-transformed observable is not positive at these parameters")
            safe = np.where(logged, f, 1.0)
            tf = np.where(ln_rows, np.log(safe), np.where(log10_rows, np.log10(safe), f))
            if jacobian:
                factor = np.where(ln_rows, 1.0 / safe, np.where(log10_rows, 1.0 / (safe * _LN10), 1.0))
                dt = factor[:, None] * J
        if self._sigma_varying_values is None:      # every sigma fixed: no parameter values needed
            sigma, dls = self._sigma(None, f, J, None)
        else:
            phi = self.phi(internal)
            dphi = np.where(self.log_mask, phi[self.free_index] * _LN10, 1.0)
            sigma, dls = self._sigma(phi.tolist(), f, J, dphi)
        return self._y_t - tf, (-dt if jacobian else None), sigma, dls

    def negative_loglik(self, internal, gradient=False, priors=True):
        """The exact negative log-likelihood (plus the negative log-priors of free parameters with
        ``priors``) at internal theta, and its gradient if asked (from the sensitivities)."""
        e, de, sigma, dls = self._likelihood_terms(internal, gradient)
        z = e / sigma
        lap = self._laplace
        terms = np.where(lap, np.abs(z) + np.log(2 * sigma), 0.5 * z * z + np.log(sigma) + 0.5 * math.log(2 * math.pi))
        value = float(np.sum(terms)) + self._jacobian_terms
        grad = None
        if gradient:
            dz_coef = np.where(lap, np.sign(z), z) / sigma          # d term / d e
            ds_coef = np.where(lap, 1.0 - np.abs(z), 1.0 - z * z)   # d term / d log sigma
            grad = dz_coef @ de + ds_coef @ dls
        if priors and self.priors:
            pv, pg = self._prior_terms(internal)
            value += pv
            if gradient:
                grad = grad + pg
        return value, grad

    def _prior_terms(self, internal):
        """Negative log-prior of the free parameters and its gradient in internal theta."""
        internal = np.asarray(internal, dtype=float)
        natural = self.to_natural(internal)
        value, grad = 0.0, np.zeros(len(internal))
        for k, name in enumerate(self.free):
            if name not in self.priors:
                continue
            kind, a, b = self.priors[name]
            x = float(natural[k])
            dx = x * _LN10 if self.log_mask[k] else 1.0      # d natural / d internal
            scale = self.scales[name]
            if kind.startswith("parameterScale"):
                u = {"lin": x, "log": math.log(x) if x > 0 else -math.inf, "log10": math.log10(x) if x > 0 else -math.inf}[scale]
                du = {"lin": 1.0, "log": 1.0 / x if x else 0.0, "log10": 1.0 / (x * _LN10) if x else 0.0}[scale]
                kind = kind[len("parameterScale"):].lower()
                extra, dextra = 0.0, 0.0
            elif kind.startswith("log"):
                u, du = math.log(x), 1.0 / x
                kind = kind[3:].lower()
                extra, dextra = math.log(x), 1.0 / x     # density of x from that of log x
            else:
                u, du, extra, dextra = x, 1.0, 0.0, 0.0
            if kind == "normal":
                value += 0.5 * ((u - a) / b) ** 2 + math.log(b * math.sqrt(2 * math.pi)) + extra
                grad[k] += ((u - a) / b ** 2 * du + dextra) * dx
            elif kind == "laplace":
                value += abs(u - a) / b + math.log(2 * b) + extra
                grad[k] += (math.copysign(1.0, u - a) / b * du + dextra) * dx
        return value, grad

    def scale_residuals(self, internal, jacobian=False):
        """Transformed residuals e = t(y) - t(f) (sigma left out) and de/d(internal theta): the
        least-squares problem of the rates when ``profiled_scale`` is set."""
        e, de, _, _ = self._likelihood_terms(internal, jacobian)
        return e, de

    def chi2(self, internal):
        """Sum of squared transformed residuals over sigma (PEtab's chi2)."""
        e, _, sigma, _ = self._likelihood_terms(internal, False)
        return float(np.sum((e / sigma) ** 2))

    def simulated_values(self, internal):
        """Model predictions at the data rows, untransformed, in the order of ``self.rows``."""
        return self.predict(internal)[0]

    # ------------------------------------------------------------ curves
    def curves(self, phi, times, condition):
        """Fitted series (states and observables, with scale/offset) of one condition on a grid."""
        plan = next(p for p in self._plans if p["name"] == condition)
        cond = self.conditions[condition]
        schedule = Schedule(self.compiled, times, cond.doses, cond.events, cond.initial)
        phil = list(map(float, phi))
        p = np.array(plan["g"](phil), dtype=float)
        X, Y, _, _ = schedule.run(p, start=self._preequilibrate(plan, np.asarray(phi, dtype=float), phil, None, False))
        out = dict(zip(self._measurable_names(), np.hstack([X, Y]).T))
        for oname, maps in self._obs_maps.items():
            scale = maps["scale"][0](list(phi)) if "scale" in maps else 1.0
            offset = maps["offset"][0](list(phi)) if "offset" in maps else 0.0
            out[oname] = scale * out[oname] + offset
        return out

    def observation_maps(self, phi):
        """{observable: (scale, offset)} of the observables the fit spec rescales, at fit values ``phi``."""
        pl = list(map(float, phi))
        return {oname: (maps["scale"][0](pl) if "scale" in maps else 1.0, maps["offset"][0](pl) if "offset" in maps else 0.0)
                for oname, maps in self._obs_maps.items()}

    def plan_parameters(self, phi, condition) -> np.ndarray:
        """The model parameter vector of ``condition`` (its overrides applied) at fit values ``phi``."""
        plan = next(p for p in self._plans if p["name"] == condition)
        return np.array(plan["g"](list(map(float, phi))), dtype=float)

    @property
    def condition_names(self):
        return [p["name"] for p in self._plans]

    def recipe_key(self) -> str:
        """Content hash of what builds this problem (model, data, spec): equal keys, equal problems."""
        key = self.__dict__.get("_recipe_key")
        if key is None:
            key = self._recipe_key = hashlib.sha256(pickle.dumps(self._recipe, protocol=5)).hexdigest()
        return key

    def __reduce__(self):
        # compiled callables do not pickle: worker processes rebuild the problem from its recipe
        # (model text and arrays), once per process (see _rebuild)
        key = self.recipe_key()
        _PICKLED_HERE[key] = self
        return (_rebuild, (self._recipe, key, _process_identity()))

    def _clone(self):
        """A problem of its own that shares this one's compiled (read-only) parts: what reading
        back a pickle of it in this process gives, at no cost."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.__dict__.pop("_lmfit_params", None)      # per-problem caches and counters start afresh
        clone._counts = _EvaluationCounts()
        clone.settings = dict(self.settings)
        return clone


def _interval_minimum(expr, box, values) -> float:
    """A lower bound of ``expr`` with its symbols in ``box`` (intervals) or at ``values``: the
    minimum of sympy's interval enclosure; nan where that cannot be evaluated."""
    try:
        value = expr.subs({**{v: values[v] for v in expr.free_symbols if v not in box}, **box})
        value = value.min if isinstance(value, sp.AccumBounds) else value
        return float(value)
    except (TypeError, ValueError, AttributeError):
        return math.nan


def parse_prior(value, where="prior"):
    """A prior as (type, a, b): from "normal(0, 1)", a list ["normal", 0, 1] or a table
    {type = "normal", parameters = [0, 1]}. Types are PEtab's: normal, laplace, logNormal,
    logLaplace, parameterScaleNormal, parameterScaleLaplace, uniform, parameterScaleUniform."""
    import re
    kind, args = None, None
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\w+)\s*\(\s*([^,()]+)\s*,\s*([^,()]+)\s*\)\s*", value)
        if match:
            kind, args = match.group(1), [match.group(2), match.group(3)]
    elif isinstance(value, (list, tuple)) and len(value) == 3:
        kind, args = value[0], list(value[1:])
    elif isinstance(value, dict) and set(value) == {"type", "parameters"}:
        kind, args = value["type"], list(value["parameters"])
    try:
        a, b = (float(v) for v in args)
    except (TypeError, ValueError):
        kind = None
    if kind not in _PRIOR_TYPES or not (math.isfinite(a) and math.isfinite(b)):
        raise DataError(f"{where} prior {sanitize_excerpt(str(value))!r} must be like \"normal(0.5, 0.1)\" with a type "
                        f"among {', '.join(_PRIOR_TYPES)} and two finite numbers")
    if not kind.endswith("niform") and not b > 0:
        raise DataError(f"{where} prior {sanitize_excerpt(str(value))!r}: the second number (the scale) must be positive")
    return (kind, a, b)


# problems rebuilt in this (worker) process, by recipe key: building one (sympy, lambdify,
# compilation) costs far more than a local fit, and every task sent to a worker (a start, a
# profile side, a chain) carries the same problem
_BUILT: dict = {}
_BUILT_MAX = 4
_build_stats = {"builds": 0, "reused": 0, "cloned": 0}
# problems this process pickled, by recipe key: a pickle read back here (a deep copy; a dask
# scheduler running in the client's process reads every task) becomes a clone of its original
_PICKLED_HERE: "weakref.WeakValueDictionary" = weakref.WeakValueDictionary()
# who this process is, for pickles to tell whether they are read where they were written: a
# random token (another machine, a spawned process) plus the pid (a forked child keeps the token)
_PROCESS_TOKEN = uuid.uuid4().hex


def _process_identity():
    return (_PROCESS_TOKEN, os.getpid())


def rebuild_stats() -> dict:
    """How many problems this process has rebuilt from pickles ("builds"), how many it reused
    (read again in a process that did not write them), and how many pickles it read back as
    clones of problems it had pickled itself ("cloned")."""
    return dict(_build_stats)


def _rebuild(recipe, key=None, written_by=None):
    # a problem read in another process than the one that pickled it (a pool's worker, a dask
    # worker on any machine) is shared by every task there that carries the same recipe; read
    # back in its own process (a deep copy) it must stay a problem of its own. Pickles without
    # the writer's identity (older ones) fall back to "am I a multiprocessing child".
    if written_by is not None and tuple(written_by) == _process_identity():
        original = _PICKLED_HERE.get(key)
        if original is not None:
            _build_stats["cloned"] += 1
            return original._clone()
        shared = False
    elif written_by is not None:
        shared = key is not None
    else:
        shared = key is not None and multiprocessing.parent_process() is not None
    if shared and key in _BUILT:
        _build_stats["reused"] += 1
        return _BUILT[key]
    problem = _build(recipe)
    _build_stats["builds"] += 1
    if key is not None:
        problem._recipe_key = key       # the same recipe (re-pickling it need not give the same bytes)
    if shared:
        while len(_BUILT) >= _BUILT_MAX:
            _BUILT.pop(next(iter(_BUILT)))
        _BUILT[key] = problem
    return problem


def _build(recipe):
    from ..model.core import Model
    model_dict, source, sha = recipe["model"]
    model = Model.from_dict(model_dict, source=source)
    model.sha256 = sha
    args = {k: v for k, v in recipe.items() if k not in ("model", "free", "data")}
    return FitProblem(model, recipe["data"], recipe["free"], **args)


def load_fit_spec(path) -> FitProblem:
    """Read a fit spec (``fit.toml``, or a folder holding one; the format is
    :mod:`kinetics.io.fit_spec`) and build its :class:`FitProblem`; every name is checked here."""
    if Path(path).suffix.lower() in (".yaml", ".yml") and Path(path).is_file():
        return load_petab(path)
    return problem_from_spec(read_fit_spec(path))


def load_petab(path) -> FitProblem:
    """A PEtab v1 problem (its YAML file) as a FitProblem (see :mod:`kinetics.io.petab`): the
    nominal values are the start, the per-observable likelihood is PEtab's."""
    from ..io.data import load_data
    from ..io.petab import read_petab
    tr = read_petab(path)

    def condition(spec):
        pre = spec.get("preequilibration")
        return Condition(spec["name"], initial=dict(spec["initial"]), overrides=dict(spec["overrides"]),
                         preequilibration=None if pre is None else condition(pre))
    conditions = [condition(c) for c in tr.conditions]
    names = compile_model(tr.model).state_names + compile_model(tr.model).observable_names
    data = load_data(tr.data, observables=names, conditions=[c.name for c in conditions])
    if not tr.free:
        raise DataError(f"{tr.origin}: the parameter table estimates no parameter (estimate = 1 on none)")
    problem = FitProblem(tr.model, data, tr.free, conditions=conditions, parameters=tr.parameters,
                         noise="per-observable", observables=tr.observables, origin=tr.origin, settings={})
    problem.petab = tr
    problem.spec_path = Path(path)
    return problem


def _check_fixed_parameters(model, free, parameters: dict, origin: str):
    """A parameter the model marks ``fixed = true`` is estimated only when the spec says so in
    its own [parameters] entry (``fixed = false``): freeing it silently would change the model."""
    for name in free:
        parameter = model.parameters.get(name)
        if parameter is None or not parameter.fixed:
            continue
        entry = parameters.get(name)
        if isinstance(entry, dict) and entry.get("fixed") is False:
            continue
        raise DataError(f"{origin}: [fit] free lists '{name}', which the model file {model.source} marks "
                        f"fixed = true; either remove '{name}' from free, remove fixed = true from the model, "
                        f"or estimate it deliberately with {name} = {{ fixed = false }} under [parameters] "
                        f"in the fit spec")


def problem_from_spec(spec, path=None) -> FitProblem:
    """The :class:`FitProblem` of a fit spec: a :class:`~kinetics.io.fit_spec.FitSpec`, or a
    parsed ``fit.toml`` table read from ``path``."""
    if not isinstance(spec, FitSpec):
        spec = parse_fit_spec(spec, path)
    path, origin, fit = spec.path, spec.origin, spec.fit
    model = load_model(spec.model_path)
    _check_fixed_parameters(model, fit.get("free", []), spec.parameters, origin)
    # "fixed" in the spec only grants the permission checked above; FitProblem knows value/min/max
    parameters = {name: ({k: v for k, v in entry.items() if k != "fixed"} if isinstance(entry, dict) else entry)
                  for name, entry in spec.parameters.items()}
    conditions = []
    for cname, centry in spec.conditions.items():
        where = f"{origin}: [conditions.{cname}]"
        try:
            doses = [as_input(d, f"{where} dose {i + 1}") for i, d in enumerate(centry.get("doses", []))]
            events = [as_event(e, f"{where} event {i + 1}") for i, e in enumerate(centry.get("events", []))]
        except ModelError as exc:
            raise DataError(str(exc)) from None
        conditions.append(Condition(cname, doses, dict(centry.get("initial", {})), events,
                                    dict(centry.get("overrides", {})), str(centry.get("description", ""))))
    by_name = {c.name: c for c in conditions}
    for condition in conditions:       # preequilibration = "OTHER": OTHER's steady state is the start
        other = spec.conditions[condition.name].get("preequilibration")
        if other is None:
            continue
        where = f"{origin}: [conditions.{condition.name}] preequilibration"
        if not isinstance(other, str) or other not in by_name or other == condition.name:
            raise DataError(f"{where} = {sanitize_excerpt(str(other))!r} must name another condition of the fit spec")
        if spec.conditions[other].get("preequilibration") is not None:
            raise DataError(f"{where} = {other!r}: that condition is pre-equilibrated itself; chains are not supported")
        condition.preequilibration = by_name[other]
    if not conditions:
        conditions = [Condition("default")]
    noise = fit.get("noise", "proportional")
    data_path = spec.data_path
    # data are loaded with the model's names known, so errors name unknown observables at once
    names = compile_model(model).state_names + compile_model(model).observable_names
    default_condition = conditions[0].name if len(conditions) == 1 else "default"
    per_observable = noise == "per-observable" or any(
        isinstance(e, dict) and set(e) & _NOISE_KEYS for e in spec.observables.values())
    data = load_data(data_path, observables=names, conditions=[c.name for c in conditions],
                     default_condition=default_condition, noise=None if per_observable else noise)
    problem = FitProblem(model, data, fit.get("free", []), conditions=conditions, parameters=parameters,
                         noise=noise, log_scale=fit.get("log_scale", True), observables=spec.observables,
                         origin=origin, settings=fit)
    problem.spec_path = path
    problem.spec = spec.spec
    return problem

