"""Steady states: what a model settles to, how fast, and how the settled values move with the
parameters.

Sinks and the bounded subsystem
    A *sink* is a compartment that only accumulates: no flow leaves it and no flow rate depends
    on its amount (its column of the Jacobian is zero). Sinks (cumulative counters such as
    "degraded in lysosomes") have no steady value; they report their steady *inflow rate*. The
    remaining compartments form the *bounded subsystem*, which is what is solved. Tools that
    solve the full system fail on such models ("Jacobian matrix singular").

Methods (``SteadyState.method``)
    ``"exact-linear"``
        Affine-linear models: A x = -b on the bounded subsystem (LAPACK ``dgesv``). The
        per-call work is one generated function giving A, b (and the sinks' rows) at the new
        parameters, one solve and a compartmental-matrix stability test (eigenvalues only when
        that test is inconclusive); see :func:`steady_plan` for the bare fast path.
    ``"symbolic"``
        Nonlinear models that sympy can solve: the bounded subsystem is split into strongly
        connected blocks (solved one after the other, earlier ones substituted); linear blocks
        by LU, small polynomial blocks (at most 3 states, Bezout number at most 2: quadratics) by
        ``sympy.solve``. The candidate solutions are evaluated at the parameter values and the
        one that is real, non-negative, a root to rounding and stable is taken. Where more
        than one qualifies (or a candidate cannot be evaluated), the Newton path decides: the
        steady state reached from the model's initial state wins, and its expression is the
        candidate it matches.
    ``"newton"``
        Otherwise: simulate from the model's initial state to a horizon set by the slowest
        eigenvalue of the linearisation (growing tenfold until done), then damped Newton on the
        analytic Jacobian of the bounded subsystem from the simulation's end state.

    Affine models always have symbolic expressions too (``SteadyState.expressions``), built
    once per model on first request.

Stability, settling time, fluxes, sensitivities
    Eigenvalues of the bounded subsystem's Jacobian at the steady state (sorted slowest
    first). ``time_to_95pct``: the earliest time after which every bounded compartment stays
    within 5 % of its steady value, starting from the model's initial state; for a compartment
    whose steady value is smaller than its largest distance from it along the way (for example
    a steady value of 0), within 5 % of that largest distance instead. For one compartment
    filling from zero at rate constant k this is ln(20)/k exactly. Exact (root-finding on the
    exact solution) for affine models, from a dense simulation for nonlinear ones;
    ``settling_times`` gives the time per compartment.
    Sensitivities d ln x / d ln p by the implicit function theorem: dx/dp = -J^-1 df/dp at the
    steady state (for sinks, the derivative of their inflow rate).

Refusals (:class:`~kinetics.errors.SolverError`, or :class:`~kinetics.errors.ModelError` for
time-dependent models) name the model, the compartments concerned and what to change: no steady
state (inflow that nothing removes, saturable outflow below the inflow), no unique steady state
(a closed subsystem whose total is conserved), an unstable steady state.
"""

from __future__ import annotations

import math
import weakref
from functools import cached_property

import numpy as np
import pandas as pd
import sympy as sp

from ..simulation.compiled import CompiledModel, compile_model
from ..errors import ModelError, SolverError
from ..model.expressions import TIME
from ..numerics.linear import solve_affine
from ..model.core import Model, load_model
from .steady_affine import AffineSteady
from .steady_common import (MAX_CANDIDATES, MAX_EXPRESSION_LENGTH, MAX_LINEAR_BLOCK, MAX_SYMBOLIC_BLOCK,  # noqa: F401
                            MAX_SYMBOLIC_DEGREE, SINGULAR_RCOND, eigenvalues, find_root, is_unstable, quoted_names,
                            raise_parameters_not_finite)
from .steady_messages import SteadyMessages
from .steady_newton import NewtonSteady
from .steady_symbolic import SymbolicSteady

__all__ = ["steady_state", "SteadyState", "compare_scenarios", "steady_plan", "SteadyPlan"]

_PLANS: "weakref.WeakKeyDictionary[CompiledModel, SteadyPlan]" = weakref.WeakKeyDictionary()


# --------------------------------------------------------------------------------- helpers
def _as_compiled(model) -> CompiledModel:
    if isinstance(model, CompiledModel):
        return model
    if isinstance(model, Model):
        return compile_model(model)
    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        from ..model.library import resolve_model_path
        return compile_model(load_model(resolve_model_path(model)))
    raise TypeError(f"expected a Model, a CompiledModel or a model file path, got {type(model).__name__}")


def steady_plan(model) -> "SteadyPlan":
    """The cached :class:`SteadyPlan` of a model (built once per compiled model)."""
    compiled = model if type(model) is CompiledModel else _as_compiled(model)
    plan = _PLANS.get(compiled)
    if plan is None:
        plan = _PLANS[compiled] = SteadyPlan(compiled)
    return plan


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, complex):
        return f"{value.real:.4g}{value.imag:+.4g}i"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.6g}"


# ------------------------------------------------------------------------------------ plan
class SteadyPlan(AffineSteady, SymbolicSteady, NewtonSteady, SteadyMessages):
    """What a model's steady state needs that does not depend on parameter values: the split
    into sinks and the bounded subsystem, generated code for A and b (affine models) or for
    the right-hand side and Jacobian (nonlinear ones), symbolic solutions. Built once per
    compiled model (:func:`steady_plan`).

    Fast path (affine models): ``x, r = plan.solve(p)`` gives the bounded compartments'
    steady values and the sinks' inflow rates at the model parameter vector ``p``.

    Its jobs live in their own modules: the affine path (:mod:`.steady_affine`), symbolic
    candidates (:mod:`.steady_symbolic`), generated callables and Newton
    (:mod:`.steady_newton`) and the messages (:mod:`.steady_messages`).
    """

    def __init__(self, compiled: CompiledModel):
        c = self.compiled = compiled
        model = c.model
        sym = c.symbolic
        self.name = c.name
        self.state_names = list(c.state_names)
        self.parameter_names = list(c.parameter_names)
        self.time_unit = model.time_unit
        self.units = {n: comp.unit for n, comp in model.compartments.items()}
        self.units.update({n: model.parameters[n].unit for n in sym.rate_rule_names})
        x, p = list(sym.states), list(sym.parameters)
        self._x, self._p = x, p
        f, J = c.rhs_symbolic, c.jacobian_symbolic
        # boundary pools are held at their initial values: constants of the steady state
        held = {x[i]: sym.initial[i] for i, name in enumerate(sym.state_names) if name in sym.boundary}
        if held:
            f = f.xreplace(held)
            J = f.jacobian(x)
        n = len(x)
        #: flows and reactions (:class:`~kinetics.symbolic.SymbolicReaction`) by name
        self.flows = dict(sym.reactions)
        self.flow_names = list(sym.reactions)
        self.rate_exprs = [r.rate.xreplace(held) for r in sym.reactions.values()]
        # a pool that a reaction consumes is not a sink (boundary pools are never consumed)
        sources = {name for r in sym.reactions.values() for name, change in r.net.items()
                   if change < 0 and name not in sym.boundary}
        sinks = [i for i in range(n) if x[i].name not in sources and all(J[r, i] == 0 for r in range(n))]
        self.S = np.array(sinks, dtype=np.intp)
        self.B = np.array([i for i in range(n) if i not in set(sinks)], dtype=np.intp)
        self.bounded_names = [self.state_names[i] for i in self.B]
        self.sink_names = [self.state_names[i] for i in self.S]
        self.time_dependent = c.time_dependent
        self.time_flows = [k for k, r in sym.rates.items() if TIME in r.free_symbols]
        self.affine = c.affine
        self._xB = [x[i] for i in self.B]
        self._fB = [f[i] for i in self.B]
        self._fS = [f[i] for i in self.S]
        self._JBB = J.extract(list(self.B), list(self.B)) if len(self.B) else sp.zeros(0, 0)
        self._JSB = J.extract(list(self.S), list(self.B)) if len(self.S) and len(self.B) else sp.zeros(len(self.S), len(self.B))
        self.state_symbols, self.bounded_symbols, self.parameter_symbols = self._x, self._xB, self._p  # public views
        # incidence of flows on bounded compartments (for residual scales and messages)
        index = {name: i for i, name in enumerate(self.bounded_names)}
        self._incidence = np.zeros((len(self.B), len(self.flow_names)))
        for k, name in enumerate(self.flow_names):
            for end in sym.reactions[name].net:
                if end in index:
                    self._incidence[index[end], k] = 1.0
        #: derived per-model artefacts of other modules (e.g. :mod:`kinetics.pk`), keyed by them
        self.cache: dict = {}
        if self.affine and not self.time_dependent:
            self._build_affine()


# ------------------------------------------------------------------------- the result
class SteadyState:
    """A model's steady state at given parameter values (see the module docstring).

    Attributes: ``model_name``, ``parameters`` (dict), ``values`` (bounded compartments),
    ``sinks`` (sink -> steady inflow rate), ``expressions`` (symbolic steady values and sink
    rates, as strings, where sympy finds them), ``stable``, ``eigenvalues`` (slowest first),
    ``time_to_95pct``, ``fluxes`` (flow -> steady rate), ``sensitivities`` (DataFrame of
    d ln x / d ln p: rows compartments, sinks' rows are their inflow rates; columns
    parameters), ``method``. The costly ones are computed on first access.
    """

    def __init__(self, plan: SteadyPlan, p: np.ndarray, xB: np.ndarray, rS: np.ndarray, method: str,
                 stable=None, eigenvalues=None, candidate=None):
        self._plan = plan
        self._p = p
        self._x = xB
        self._r = rS
        self.method = method
        self.model_name = plan.name
        self.time_unit = plan.time_unit
        self.values = dict(zip(plan.bounded_names, xB.tolist()))
        self.sinks = dict(zip(plan.sink_names, rS.tolist()))
        self._stable = stable
        self._eigenvalues = eigenvalues
        self._candidate = candidate

    # ---------------------------------------------------------------- lazy parts
    @cached_property
    def parameters(self) -> dict:
        """The parameter values used (after ``parameters`` and ``scale``)."""
        return dict(zip(self._plan.parameter_names, self._p.tolist()))

    @property
    def x_bounded(self) -> np.ndarray:
        """Steady values of the bounded compartments as an array (order of ``values``)."""
        return self._x

    @cached_property
    def jacobian(self) -> np.ndarray:
        """Jacobian of the bounded subsystem at the steady state."""
        return self._plan.jacobian_bounded(self._x, self._p)

    @property
    def eigenvalues(self) -> list:
        ev = self._eigenvalues
        if ev is None:
            ev = self._eigenvalues = eigenvalues(self.jacobian)
        ev = sorted(np.asarray(ev).tolist(), key=lambda z: (-complex(z).real, complex(z).imag))
        return [complex(z) if isinstance(z, complex) and z.imag != 0 else float(complex(z).real) for z in ev]

    @property
    def stable(self) -> bool:
        if self._stable is None:
            ev = np.asarray(self.eigenvalues, dtype=complex)
            scale = max(float(np.abs(ev).max(initial=0.0)), 1e-300)
            self._stable = bool(len(ev) == 0 or np.real(ev).max() < -1e-10 * scale)
        return self._stable

    @cached_property
    def expressions(self) -> dict:
        plan = self._plan
        if self._candidate is not None:
            return dict(plan._candidate_strings[self._candidate])
        if plan.affine:
            return dict(plan.linear_expressions)
        # a numeric steady state: take a symbolic candidate that matches it, if any
        for k, fn in enumerate(plan._candidate_fns):
            try:
                with np.errstate(all="ignore"):
                    z = np.array([complex(v) for v in fn(list(map(float, self._p)))])
            except (ValueError, ZeroDivisionError, TypeError, OverflowError):
                continue
            if np.allclose(z, self._x, rtol=1e-6, atol=1e-9 * max(1.0, float(np.abs(self._x).max(initial=0.0)))):
                self._candidate = k
                return dict(plan._candidate_strings[k])
        return {}

    @cached_property
    def fluxes(self) -> dict:
        plan = self._plan
        return dict(zip(plan.flow_names, plan.rates(self._x, self._p).tolist()))

    @cached_property
    def derivatives(self) -> pd.DataFrame:
        """dx/dp (rows: compartments, sinks' inflow rates; columns: parameters)."""
        plan = self._plan
        nb, ns, P = len(plan.B), len(plan.S), len(plan.parameter_names)
        xl, pl = list(map(float, self._x)), list(map(float, self._p))
        Fp = np.asarray(plan._num["Fp"](xl, pl), dtype=float).reshape(nb + ns, P)
        try:
            dx = -np.linalg.solve(self.jacobian, Fp[:nb]) if nb else np.zeros((0, P))
        except np.linalg.LinAlgError:
            state = ", ".join(f"{k}={v:.4g}" for k, v in self.values.items())
            raise SolverError(
                f"model '{self.model_name}': the steady state found ({state}) is degenerate: the Jacobian of the bounded "
                "subsystem is singular (an eigenvalue 0), so it does not attract nearby states and its sensitivities are "
                "undefined; the model may have no steady state reachable from its initial state. Check that every "
                f"compartment has an outflow that grows with its amount. Parameter values: {plan._params_text(self._p)}.") from None
        JSB = np.asarray(plan._num["JSB"](xl, pl), dtype=float).reshape(ns, nb) if ns and nb else np.zeros((ns, nb))
        dr = JSB @ dx + Fp[nb:]
        rows = {}
        for name in plan.state_names:
            if name in self.values:
                rows[name] = dx[plan.bounded_names.index(name)]
            else:
                rows[name] = dr[plan.sink_names.index(name)]
        return pd.DataFrame.from_dict(rows, orient="index", columns=plan.parameter_names)

    @cached_property
    def sensitivities(self) -> pd.DataFrame:
        """Normalized sensitivities d ln x / d ln p (NaN where a steady value is 0)."""
        D = self.derivatives
        level = np.array([self.values.get(n, self.sinks.get(n)) for n in D.index], dtype=float)
        pv = np.array([self.parameters[n] for n in D.columns], dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = D.to_numpy() * pv[None, :] / level[:, None]
        out[level == 0, :] = np.nan
        frame = pd.DataFrame(out, index=D.index, columns=D.columns)
        frame.index.name = "compartment"
        return frame

    @cached_property
    def settling_times(self) -> dict | None:
        """Per bounded compartment, the time to come (and stay) within 5 % of its steady value
        from the model's initial state (see the module docstring); None if undetermined."""
        try:
            return _settling_times(self)
        except SolverError:
            return None

    @property
    def time_to_95pct(self) -> float | None:
        """The time after which every bounded compartment stays within 5 % of its steady
        value (the largest of :attr:`settling_times`)."""
        times = self.settling_times
        if times is None:
            return None
        return max(times.values(), default=0.0)

    # ---------------------------------------------------------------- output
    def to_dict(self) -> dict:
        """DESIGN.md's ``steady --json`` shape, plus ``sensitivities`` and ``method``."""
        expressions = self.expressions
        compartments = {}
        for name in self._plan.state_names:
            if name in self.values:
                entry = {"value": _json_float(self.values[name])}
                if name in expressions:
                    entry["expression"] = expressions[name]
                entry["sink"] = False
            else:
                entry = {"sink": True, "rate": _json_float(self.sinks[name])}
                if name in expressions:
                    entry["expression"] = expressions[name]
            compartments[name] = entry
        eig = []
        for z in self.eigenvalues:
            eig.append([_json_float(z.real), _json_float(z.imag)] if isinstance(z, complex) else _json_float(z))
        t95 = self.time_to_95pct
        sens = self.sensitivities
        return {
            "model": self.model_name,
            "compartments": compartments,
            "stable": bool(self.stable),
            "eigenvalues": eig,
            "time_to_95pct": None if t95 is None else _json_float(t95),
            "fluxes": {k: _json_float(v) for k, v in self.fluxes.items()},
            "sensitivities": {row: {col: _json_float(sens.at[row, col]) for col in sens.columns} for row in sens.index},
            "method": self.method,
        }

    def to_frame(self) -> pd.DataFrame:
        """Steady values of the compartments and inflow rates of the sinks, one row each
        (columns kind, value), indexed by name."""
        rows = [{"name": n, "kind": "compartment", "value": v} for n, v in self.values.items()]
        rows += [{"name": n, "kind": "sink (inflow rate)", "value": v} for n, v in self.sinks.items()]
        return pd.DataFrame(rows, columns=["name", "kind", "value"]).set_index("name")

    def fluxes_frame(self) -> pd.DataFrame:
        """Steady rate of every flow, indexed by flow name."""
        return pd.DataFrame({"flux": self.fluxes}).rename_axis("flow")

    def _repr_html_(self) -> str:
        """Steady values, fluxes and stability as tables (for notebooks)."""
        fmt = lambda v: f"{v:.5g}"   # noqa: E731
        return (f"<p><b>Steady state of {self.model_name}</b> ({self.method}; "
                f"{'stable' if self.stable else 'NOT stable'})</p>" + self.to_frame().to_html(float_format=fmt)
                + "<p><b>steady fluxes</b> (per " + str(self.time_unit) + ")</p>" + self.fluxes_frame().to_html(float_format=fmt))

    def report(self, sensitivities: bool = True) -> str:
        """A readable text table."""
        plan = self._plan
        tu = plan.time_unit
        expressions = self.expressions
        lines = [f"Steady state of '{self.model_name}' (method: {self.method})", ""]
        rows = []
        for name in plan.state_names:
            unit = plan.units.get(name)
            if name in self.values:
                rows.append((name, _fmt(self.values[name]), unit or "", expressions.get(name, "")))
        sink_rows = []
        for name in plan.sink_names:
            unit = plan.units.get(name)
            sink_rows.append((name, _fmt(self.sinks[name]), f"{unit}/{tu}" if unit else f"per {tu}", expressions.get(name, "")))
        w = max([len(r[0]) for r in rows + sink_rows] + [11])
        wv = max([len(r[1]) for r in rows + sink_rows] + [5])
        wu = max([len(r[2]) for r in rows + sink_rows] + [4])
        if rows:
            lines.append(f"{'compartment':<{w}}  {'value':>{wv}}  {'unit':<{wu}}  expression")
            lines += [f"{a:<{w}}  {b:>{wv}}  {c:<{wu}}  {d}".rstrip() for a, b, c, d in rows]
        if sink_rows:
            lines += ([""] if rows else []) + [f"{'sink':<{w}}  {'rate':>{wv}}  {'unit':<{wu}}  expression  (accumulates: steady inflow rate)"]
            lines += [f"{a:<{w}}  {b:>{wv}}  {c:<{wu}}  {d}".rstrip() for a, b, c, d in sink_rows]
        ev = ", ".join(_fmt(z) for z in self.eigenvalues) or "none"
        lines += ["", f"stable: {'yes' if self.stable else 'no'} (eigenvalues per {tu}: {ev})"]
        t95 = self.time_to_95pct
        if t95 is not None:
            per = ", ".join(f"{k} {_fmt(v)}" for k, v in (self.settling_times or {}).items())
            lines.append(f"time to 95 % of steady state from the initial state: {_fmt(t95)} {tu}"
                         + (f" (per compartment: {per})" if len(self.settling_times or {}) > 1 else ""))
        else:
            lines.append("time to 95 % of steady state: not determined")
        if self.fluxes:
            lines += ["", "steady fluxes:"]
            wf = max(len(k) for k in self.fluxes)
            for k, v in self.fluxes.items():
                fl = plan.flows[k]
                end = next(iter(fl.reactants or fl.products), None)
                unit = plan.units.get(end)
                route = fl.route()
                lines.append(f"  {k:<{wf}}  {_fmt(v):>12}  {(unit + '/' + tu) if unit else '':<16} {route}")
        if sensitivities and len(self.sensitivities.columns):
            lines += ["", "sensitivities d ln(value) / d ln(parameter) (sinks: of their inflow rate):"]
            with pd.option_context("display.width", 200, "display.max_columns", 50):
                lines.append(self.sensitivities.to_string(float_format=lambda v: f"{v:.3g}", na_rep="-"))
        return "\n".join(lines)

    def __repr__(self):
        vals = ", ".join(f"{k}={_fmt(v)}" for k, v in self.values.items())
        sinks = ", ".join(f"{k}: {_fmt(v)}/{self.time_unit}" for k, v in self.sinks.items())
        parts = [p for p in (vals, f"sinks {sinks}" if sinks else "") if p]
        return f"<SteadyState of '{self.model_name}' ({self.method}): {'; '.join(parts) or 'no compartments'}>"


def _json_float(v):
    v = float(v) + 0.0  # no "-0.0": a zero sensitivity or flux has no sign
    return v if math.isfinite(v) else None


# ------------------------------------------------------------------- settling time
_FRACTION = 0.05


def _settling_times(ss: SteadyState) -> dict | None:
    """Per bounded compartment: the earliest time after which it stays within 5 % of its
    steady value (or of its largest distance from it, when that is larger)."""
    plan = ss._plan
    c = plan.compiled
    p = ss._p
    B = plan.B
    x_star = ss._x
    if not len(B):
        return {}
    x0_full = c.initial_state(p)
    x0 = x0_full[B]
    ev = np.asarray(ss.eigenvalues, dtype=complex)
    rates = -ev.real
    if not len(rates) or rates.min() <= 0:
        return None
    slow, fast = float(rates.min()), float(rates.max())
    if plan.affine:
        A, b, _, _ = plan.matrices(p)

        def states(times):
            return solve_affine(A, b, x0, np.asarray(times, dtype=float))[0]
    else:
        def states(times):
            X, _ = c.solve(p, x0_full, np.asarray(times, dtype=float), t0=0.0)
            return X[:, B]

    horizon = 12.0 * math.log(20.0) / slow
    for _ in range(8):
        times = np.unique(np.concatenate([np.linspace(0.0, horizon, 3001),
                                          np.geomspace(min(1e-3 / fast, horizon * 1e-6), horizon, 1000)]))
        X = states(times)
        dev = np.abs(X - x_star[None, :])
        tol = _FRACTION * np.maximum(np.abs(x_star), dev.max(axis=0))
        with np.errstate(divide="ignore", invalid="ignore"):
            margin = np.where(tol > 0, dev / np.where(tol > 0, tol, 1.0), 0.0) - 1.0
        last = [int(np.nonzero(margin[:, i] > 0)[0][-1]) if (margin[:, i] > 0).any() else -1 for i in range(len(B))]
        if max(last) < len(times) - 1 - 100:
            break
        horizon *= 4.0
    else:
        return None
    out = {}
    for i, name in enumerate(plan.bounded_names):
        k = last[i]
        if k < 0:
            out[name] = 0.0
            continue
        t_lo, t_hi = float(times[k]), float(times[k + 1])
        if plan.affine:
            def g(t, i=i):
                return float(abs(states([t])[0, i] - x_star[i]) / tol[i] - 1.0)
            out[name] = float(find_root(g, t_lo, t_hi, xtol=1e-14 * t_hi))
        else:
            # a fine grid across the crossing, then linear interpolation of the margin
            fine = np.linspace(t_lo, t_hi, 201)
            hf = np.abs(states(fine)[:, i] - x_star[i]) / tol[i] - 1.0
            bad = np.nonzero(hf > 0)[0]
            j = int(bad[-1]) if len(bad) else 0
            if j >= len(fine) - 1:
                out[name] = float(fine[-1])
            else:
                h0, h1 = hf[j], hf[j + 1]
                out[name] = float(fine[j] + (fine[j + 1] - fine[j]) * h0 / (h0 - h1))
    return out


# -------------------------------------------------------------------------- entry points
def _parameter_vector(compiled, parameters, scale, check=True):
    if type(parameters) is np.ndarray and parameters.shape == (compiled.n_params,) and parameters.dtype == np.float64:
        p = parameters.copy()
    else:
        p = compiled.parameter_vector(parameters)
    if scale:
        index = {name: i for i, name in enumerate(compiled.parameter_names)}
        p = p.copy()
        for name, factor in scale.items():
            if name not in index:
                from ..errors import suggest_name
                raise ModelError(f"model '{compiled.name}': cannot scale unknown parameter '{name}'{suggest_name(name, index)}; "
                                 f"its parameters are {', '.join(compiled.parameter_names)}")
            p[index[name]] *= float(factor)
    if check and not np.isfinite(p).all():
        raise_parameters_not_finite(compiled, p)
    return p


def steady_state(model, parameters=None, *, scale=None, method: str = "auto", allow_unstable: bool = False) -> SteadyState:
    """The steady state of ``model`` (a Model, CompiledModel, model file or bundled model name).

    Parameters
    ----------
    parameters : dict, lmfit.Parameters or array, optional
        Values overriding the model's defaults (``--set name=value``).
    scale : dict name -> factor, optional
        Multiply parameters after ``parameters`` is applied (``--scale name=factor``).
    method : "auto", "exact-linear", "symbolic" or "newton"
        "auto": exact linear solve for affine models; for nonlinear ones the symbolic solution
        where sympy finds a unique admissible one, else Newton from a simulation's end state.
    allow_unstable : bool
        Return an unstable steady state (``stable`` False) instead of raising.

    Raises :class:`SolverError` when there is no (unique, stable) steady state and
    :class:`ModelError` for time-dependent models or unknown parameter names.
    """
    plan = steady_plan(model)
    c = plan.compiled
    fast = plan.affine and method in ("auto", "exact-linear")
    p = _parameter_vector(c, parameters, scale, check=not fast)
    if method not in ("auto", "exact-linear", "symbolic", "newton"):
        raise ValueError(f"method must be 'auto', 'exact-linear', 'symbolic' or 'newton', not {method!r}")
    if plan.time_dependent:
        raise ModelError(f"model '{plan.name}' has no time-invariant steady state: the rate of "
                         f"{'flow' if len(plan.time_flows) == 1 else 'flows'} {quoted_names(plan.time_flows)} depends on the time t. "
                         "Replace the time dependence by a constant (or a parameter) to ask for a steady state.")
    if fast:
        x, r, stable = plan._solve_linear(p)
        ev = None
        if stable is None:
            ev = eigenvalues(plan.matrices(p)[0])
            if is_unstable(ev) and not allow_unstable:
                plan._raise_unstable(p, x, ev)
        return SteadyState(plan, p, x, r, "exact-linear", stable=stable, eigenvalues=ev)
    if method == "exact-linear":
        raise ModelError(f"model '{plan.name}' is not affine-linear (some flow rate is nonlinear in the amounts), so "
                         "method='exact-linear' does not apply; use 'auto', 'symbolic' or 'newton'")
    candidate = None
    x = ev = None
    used = "newton"
    if method in ("auto", "symbolic"):
        admissible = plan._symbolic_admissible(p)
        if len(admissible) == 1 and (plan._last_complete or method == "symbolic"):
            candidate, x, ev = admissible[0]
            used = "symbolic"
        elif method == "symbolic" and not admissible:
            if plan.symbolic_candidates is None:
                raise SolverError(f"model '{plan.name}': sympy finds no symbolic steady state for this model (or the system is "
                                  "too large to try); use method='auto' or 'newton'")
            raise SolverError(f"model '{plan.name}': none of the {len(plan.symbolic_candidates)} symbolic steady state(s) is real, "
                              f"non-negative and stable at these parameter values ({plan._params_text(p)}); "
                              "use method='newton' to search from the initial state")
    if x is None:
        x = plan.newton_from_simulation(p, c.initial_state(p))
    if ev is None:
        ev = plan._eigen_at(x, p) if len(plan.B) else np.zeros(0)
    if is_unstable(ev) and not allow_unstable:
        plan._raise_unstable(p, x, ev)
    r = plan.sink_rates(x, p) if len(plan.S) else np.zeros(0)
    ss = SteadyState(plan, p, x, r, used, eigenvalues=ev, candidate=candidate)
    return ss


# ------------------------------------------------------------------------------ what-if
def _split_scenario(spec, where):
    if spec is None:
        return {}, {}
    if hasattr(spec, "valuesdict"):
        return dict(spec.valuesdict()), {}
    if not isinstance(spec, dict):
        raise ModelError(f"{where}: expected a dict of parameter values or {{'set': {{...}}, 'scale': {{...}}}}, got {spec!r}")
    if spec and set(spec) <= {"set", "scale"} and all(isinstance(v, dict) for v in spec.values()):
        return dict(spec.get("set", {})), dict(spec.get("scale", {}))
    return dict(spec), {}


def compare_scenarios(model, baseline: dict | None, scenarios: dict) -> pd.DataFrame:
    """What-if table: steady values, sinks' inflow rates and flow rates under each scenario,
    side by side with the baseline, with the absolute change and the fold change.

    ``baseline`` and each scenario are parameter values (``{"k_sec": 0.3}``) or
    ``{"set": {...}, "scale": {...}}``; a scenario applies on top of the baseline (its ``set``
    first, then its ``scale`` multiplies). Returns a DataFrame indexed by quantity, with a
    ``kind`` column ("value", "sink rate" or "flux"), ``baseline``, and per scenario NAME the
    columns ``NAME``, ``NAME change`` (scenario - baseline) and ``NAME fold`` (scenario /
    baseline; NaN where the baseline is 0).
    """
    plan = steady_plan(model)
    c = plan.compiled
    if "baseline" in (scenarios or {}):
        raise ModelError("a scenario may not be called 'baseline' (that column is the baseline itself); rename it")
    base_set, base_scale = _split_scenario(baseline, "baseline")
    p_base = _parameter_vector(c, base_set, base_scale)
    results = {"baseline": steady_state(c, p_base)}
    for name, spec in (scenarios or {}).items():
        s_set, s_scale = _split_scenario(spec, f"scenario '{name}'")
        values = dict(zip(c.parameter_names, p_base.tolist()))
        try:
            for k, v in s_set.items():
                if k not in values:
                    c.parameter_vector({k: v})  # raises the standard unknown-parameter error
                values[k] = float(v)
            results[name] = steady_state(c, values, scale=s_scale)
        except (SolverError, ModelError) as exc:
            raise type(exc)(f"scenario '{name}': {exc}") from None
    index, kinds = [], []
    columns = {key: [] for key in results}
    for comp in plan.bounded_names:
        index.append(comp)
        kinds.append("value")
        for key, ss in results.items():
            columns[key].append(ss.values[comp])
    for comp in plan.sink_names:
        index.append(comp)
        kinds.append("sink rate")
        for key, ss in results.items():
            columns[key].append(ss.sinks[comp])
    for flow in plan.flow_names:
        label = flow if flow not in index else f"flow {flow}"
        index.append(label)
        kinds.append("flux")
        for key, ss in results.items():
            columns[key].append(ss.fluxes[flow])
    frame = pd.DataFrame({"kind": kinds}, index=pd.Index(index, name="quantity"))
    base = np.array(columns["baseline"], dtype=float)
    frame["baseline"] = base
    for key in results:
        if key == "baseline":
            continue
        vals = np.array(columns[key], dtype=float)
        frame[key] = vals
        frame[f"{key} change"] = vals - base
        with np.errstate(divide="ignore", invalid="ignore"):
            frame[f"{key} fold"] = np.where(base != 0, vals / np.where(base != 0, base, 1.0), np.nan)
    return frame
