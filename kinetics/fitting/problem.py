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
from ..errors import DataError, ExpressionError, ModelError
from ..model.expressions import parse_expression
from ..io.files import sanitize_excerpt
from ..simulation.compiled import compile_model
from ..simulation.schedule import Schedule, as_event, as_input

_LN10 = math.log(10.0)

__all__ = ["Condition", "FitProblem", "load_fit_spec"]

_FIT_KEYS = {"free", "log_scale", "noise", "multistart", "seed", "method", "profiles", "mcmc", "max_nfev", "reweight",
             "engine"}
_SPEC_KEYS = {"model", "data", "fit", "parameters", "conditions", "observables", "description", "title"}
_COND_KEYS = {"doses", "overrides", "initial", "events", "description"}


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


class FitProblem:
    """Residuals and Jacobian of a model against a dataset over all conditions."""

    def __init__(self, model, data, free, *, conditions=None, parameters=None, noise="proportional",
                 log_scale=True, observables=None, origin="fit", settings=None):
        from ..errors import suggest_name
        from ..model.core import Model
        if not isinstance(model, Model):
            raise TypeError("model must be a kinetics.Model")
        # everything needed to rebuild this problem in another process (see __reduce__)
        self._recipe = dict(model=(model.to_dict(), model.source, model.sha256), free=list(free),
                            conditions=conditions, parameters=parameters, noise=noise, log_scale=log_scale,
                            observables=observables, origin=origin, settings=settings)
        self.model = model
        self.origin = origin
        self.settings = dict(settings or {})
        self.noise = noise
        if noise not in ("constant", "proportional", "combined", "data"):
            raise DataError(f"{origin}: noise '{noise}' is not one of constant, proportional, combined, data")
        self.log_scale = bool(log_scale)
        self.conditions = {c.name: c for c in (conditions or [Condition("default")])}
        self.observable_spec = dict(observables or {})
        compiled = compile_model(model)
        self.compiled = compiled
        # ---- fit parameters: model parameters + new fit-level ones
        values, bounds = {}, {}
        defaults = model.parameter_values()  # values given as expressions evaluated
        for name in compiled.parameter_names:  # (parameters with a rate rule are states, not fitted)
            p = model.parameters[name]
            values[name] = defaults[name]
            bounds[name] = (float(p.min), float(p.max))
        for name, entry in (parameters or {}).items():
            where = f"{origin}: [parameters.{name}]"
            if not isinstance(entry, dict):
                entry = {"value": entry}
            unknown = set(entry) - {"value", "min", "max", "description", "unit"}
            if unknown:
                raise DataError(f"{where} unknown key(s) {', '.join(sorted(unknown))}; allowed: value, min, max")
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
        self.log_mask = np.array([self.log_scale and l > 0 for l in lo])
        self._all_log = bool(self.log_mask.all())
        # ---- symbols for override / scale expressions
        self._symbols = {n: sp.Symbol(n, real=True) for n in self.fit_names}
        phi = [self._symbols[n] for n in self.fit_names]
        # ---- data
        if not isinstance(data, Dataset):
            data = load_data(data, observables=self._measurable_names(), conditions=list(self.conditions),
                             noise=noise)
        self.data = data
        unknown_obs = set(data.observables) - set(self._measurable_names())
        if unknown_obs:
            raise DataError(f"{origin}: the data measure {', '.join(sorted(unknown_obs))}, which the model "
                            f"'{model.name}' neither observes nor has as a compartment")
        unknown_cond = set(data.conditions) - set(self.conditions)
        if unknown_cond:
            raise DataError(f"{origin}: the data name condition(s) {', '.join(sorted(unknown_cond))} that the fit spec "
                            f"does not define; add [conditions.NAME] or fix the data")
        if noise == "data" and not data.has_sigma:
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
            g = list(phi[: compiled.n_params])  # model parameters are the first P fit parameters
            for pname, expr in cond.overrides.items():
                if pname not in compiled.parameter_names:
                    raise DataError(f"{where} overrides '{pname}', which is not a model parameter{suggest_name(pname, compiled.parameter_names)}")
                try:
                    g[compiled.parameter_names.index(pname)] = parse_expression(expr, self._symbols, allow_time=False)
                except ExpressionError as exc:
                    raise DataError(f"{where} override {pname} = '{expr}' {exc}") from None
            G = sp.Matrix(g)
            identity = not cond.overrides
            try:
                schedule = Schedule(compiled, np.unique(rows["time"].to_numpy(float)), cond.doses, cond.events,
                                    cond.initial, where=where)
            except ModelError as exc:
                raise DataError(str(exc)) from None
            t_index = np.searchsorted(schedule.times, rows["time"].to_numpy(float))
            s_index = np.array([series_names.index(o) for o in rows["observable"]])
            self._plans.append({
                "name": cname, "schedule": schedule, "rows": rows,
                "g": lambdify_plain([phi], list(G), "math"), "dg": lambdify_plain([phi], G.jacobian(phi), "numpy"),
                "identity": identity,
                "t_index": t_index, "s_index": s_index,
                "row_evaluator": schedule.row_evaluator(t_index, s_index),
            })
        # ---- observable scale/offset (expressions of fit parameters)
        self._obs_maps = {}
        for oname, entry in self.observable_spec.items():
            if oname not in series_names:
                raise DataError(f"{origin}: [observables.{oname}] is not an observable or compartment of the model")
            if not isinstance(entry, dict):
                raise DataError(f"{origin}: [observables.{oname}] must be a table like {{ scale = \"gain\", offset = \"background\" }}")
            unknown = set(entry) - {"scale", "offset"}
            if unknown:
                raise DataError(f"{origin}: [observables.{oname}] unknown key(s) {', '.join(sorted(unknown))}; allowed: scale, offset")
            maps = {}
            for key in ("scale", "offset"):
                if key in entry:
                    try:
                        e = parse_expression(entry[key], self._symbols, allow_time=False)
                    except ExpressionError as exc:
                        raise DataError(f"{origin}: [observables.{oname}] {key} '{entry[key]}' {exc}") from None
                    maps[key] = (lambdify_plain([phi], e, "math"), lambdify_plain([phi], [e.diff(s) for s in phi], "math"))
            self._obs_maps[oname] = maps
        # ---- data vectors in plan order
        self.y = np.concatenate([p["rows"]["value"].to_numpy(float) for p in self._plans])
        self.rows = np.concatenate([p["rows"]["row"].to_numpy() for p in self._plans])
        if noise == "data":
            self.weights = 1.0 / np.concatenate([p["rows"]["sigma"].to_numpy(float) for p in self._plans])
        elif noise == "proportional":
            self.weights = 1.0 / np.abs(self.y)
        else:
            self.weights = np.ones_like(self.y)
        self._recipe["data"] = data
        self.n_data = len(self.y)
        self.n_noise = {"constant": 1, "proportional": 1, "combined": 2, "data": 0}[noise]
        self._counts = _EvaluationCounts()
        P = compiled.n_params
        # the one-call shortcut for data rows (see Schedule.row_evaluator), when every condition
        # has one and no observable scale/offset applies
        self._row_evaluators = not self._obs_maps and all(p["row_evaluator"] is not None for p in self._plans)
        self._no_directions = np.zeros((P, 0))
        self._identity_D = np.zeros((P, len(self.free)))
        for k, i in enumerate(self.free_index):
            if i < P:
                self._identity_D[i, k] = 1.0

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
        if self._row_evaluators:
            out = self._predict_rows(phi, phil, dphi, jacobian)
            if out is not None:
                return out
        preds, jacs = [], []
        for plan in self._plans:
            p, D = self._plan_parameters(plan, phi, phil, dphi, jacobian)
            X, Y, S, dY = plan["schedule"].run(p, D)
            series = np.hstack([X, Y]) if Y.shape[1] else X
            f = series[plan["t_index"], plan["s_index"]]
            if jacobian:
                dseries = np.concatenate([S, dY], axis=1) if dY is not None and dY.shape[1] else S
                J = dseries[plan["t_index"], plan["s_index"], :]
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
            return np.concatenate(preds), np.concatenate(jacs, axis=0)
        return np.concatenate(preds), None

    def _plan_parameters(self, plan, phi, phil, dphi, jacobian):
        """Model parameters p of a condition and, with ``jacobian``, D = dp/d(internal theta)."""
        if plan["identity"]:  # no overrides: model parameters are the first P fit parameters
            p = phi[:self.compiled.n_params]
            return p, (self._identity_D * dphi if jacobian else None)
        p = np.array(plan["g"](phil), dtype=float)
        return p, (np.asarray(plan["dg"](phil), dtype=float)[:, self.free_index] * dphi if jacobian else None)

    def _predict_rows(self, phi, phil, dphi, jacobian):
        """:meth:`predict` by the one-call row evaluators; None if one declines (ill-conditioned)."""
        preds, jacs = [], []
        for plan in self._plans:
            p, D = self._plan_parameters(plan, phi, phil, dphi, jacobian)
            out = plan["row_evaluator"](p, D if jacobian else self._no_directions)
            if out is None:
                return None
            preds.append(out[0])
            jacs.append(out[1])
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
        f, J = self.predict(internal, jacobian=True)
        w = self.weights if noise_weights is None else noise_weights
        return w * (self.y - f), -w[:, None] * J

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
        N = self.n_data
        w = self.weights if noise_weights is None else noise_weights
        log_w = float(np.sum(np.log(w)))
        if self.noise in ("constant", "proportional"):
            s2 = rss / N
            return -0.5 * (N * math.log(2 * math.pi * s2) + N) + log_w
        return -0.5 * (N * math.log(2 * math.pi) + rss) + log_w

    def noise_scale(self, rss):
        return math.sqrt(rss / self.n_data) if self.noise in ("constant", "proportional") else 1.0

    # ------------------------------------------------------------ curves
    def curves(self, phi, times, condition):
        """Fitted series (states and observables, with scale/offset) of one condition on a grid."""
        plan = next(p for p in self._plans if p["name"] == condition)
        cond = self.conditions[condition]
        schedule = Schedule(self.compiled, times, cond.doses, cond.events, cond.initial)
        p = np.array(plan["g"](list(map(float, phi))), dtype=float)
        X, Y, _, _ = schedule.run(p)
        out = dict(zip(self._measurable_names(), np.hstack([X, Y]).T))
        for oname, maps in self._obs_maps.items():
            scale = maps["scale"][0](list(phi)) if "scale" in maps else 1.0
            offset = maps["offset"][0](list(phi)) if "offset" in maps else 0.0
            out[oname] = scale * out[oname] + offset
        return out

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


# Sane limits on sizes a fit spec sets: beyond them memory or time runs out before any result.
MAX_MULTISTART = 10_000
MAX_NFEV_LIMIT = 10_000_000
MAX_SEED = 2 ** 63 - 1


def load_fit_spec(path) -> FitProblem:
    """Read a fit spec (``fit.toml``) and everything it names; every name is checked here."""
    from ..io.files import read_toml_file
    path = Path(path)
    if path.is_dir():
        path = path / "fit.toml"
    if not path.exists() and not path.is_symlink():
        raise DataError(f"{path}: fit spec not found (a fit folder holds fit.toml, the data CSV and a README)")
    spec, _ = read_toml_file(path, what="fit spec", error=DataError)
    return problem_from_spec(spec, path)


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


def problem_from_spec(spec: dict, path: Path) -> FitProblem:
    from ..errors import suggest_name
    from ..model.core import load_model
    origin = str(path)
    if not isinstance(spec, dict):
        raise DataError(f"{origin}: a fit spec must be a TOML table of model, data, [fit], [parameters], [conditions]")
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise DataError(f"{origin}: unknown top-level key '{key}'{suggest_name(key, _SPEC_KEYS)}; allowed: {', '.join(sorted(_SPEC_KEYS))}")
    for key in ("model", "data"):
        if key not in spec:
            raise DataError(f"{origin}: missing '{key} = \"...\"' (a path relative to the fit spec)")
    _check_spec_types(spec, origin)
    base = path.parent
    from ..model.library import resolve_model_path
    model_path = base / spec["model"]
    if not model_path.exists():
        try:
            model_path = resolve_model_path(spec["model"])
        except ModelError:
            raise DataError(f"{origin}: model file '{sanitize_excerpt(spec['model'], 200)}' not found (paths are relative to the fit spec)") from None
    model = load_model(model_path)
    fit = spec.get("fit", {})
    unknown = set(fit) - _FIT_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise DataError(f"{origin}: [fit] unknown key '{key}'{suggest_name(key, _FIT_KEYS)}; allowed: {', '.join(sorted(_FIT_KEYS))}")
    _check_fixed_parameters(model, fit.get("free", []), spec.get("parameters", {}), origin)
    # "fixed" in the spec only grants the permission checked above; FitProblem knows value/min/max
    parameters = {name: ({k: v for k, v in entry.items() if k != "fixed"} if isinstance(entry, dict) else entry)
                  for name, entry in spec.get("parameters", {}).items()}
    conditions = []
    for cname, centry in spec.get("conditions", {}).items():
        where = f"{origin}: [conditions.{cname}]"
        if not isinstance(centry, dict):
            raise DataError(f"{where} must be a table")
        unknown = set(centry) - _COND_KEYS
        if unknown:
            key = sorted(unknown)[0]
            raise DataError(f"{where} unknown key '{key}'{suggest_name(key, _COND_KEYS)}; allowed: {', '.join(sorted(_COND_KEYS))}")
        try:
            doses = [as_input(d, f"{where} dose {i + 1}") for i, d in enumerate(centry.get("doses", []))]
            events = [as_event(e, f"{where} event {i + 1}") for i, e in enumerate(centry.get("events", []))]
        except ModelError as exc:
            raise DataError(str(exc)) from None
        conditions.append(Condition(cname, doses, dict(centry.get("initial", {})), events,
                                    dict(centry.get("overrides", {})), str(centry.get("description", ""))))
    if not conditions:
        conditions = [Condition("default")]
    noise = fit.get("noise", "proportional")
    data_path = Path(os.path.normpath(base / spec["data"]))
    # data are loaded with the model's names known, so errors name unknown observables at once
    names = compile_model(model).state_names + compile_model(model).observable_names
    default_condition = conditions[0].name if len(conditions) == 1 else "default"
    data = load_data(data_path, observables=names, conditions=[c.name for c in conditions],
                     default_condition=default_condition, noise=noise)
    problem = FitProblem(model, data, fit.get("free", []), conditions=conditions, parameters=parameters,
                         noise=noise, log_scale=fit.get("log_scale", True), observables=spec.get("observables", {}),
                         origin=origin, settings=fit)
    problem.spec_path = path
    problem.spec = spec
    return problem

