"""Ensembles: one model simulated for many parameter sets at once (:func:`simulate_many`).

Virtual populations, prediction bands and global sensitivity need thousands to 1e5
simulations of one model under one plan (times, doses, events). A Python loop over
:func:`~kinetics.simulate` costs 100-600 µs per set; here the plan (:class:`Schedule`: doses,
infusions, fixed-time events as exact segment boundaries) is built once and applied to every
set, and the work per segment is batched:

* **affine models** (the exact path): the matrices A(p), b(p) and initial values of every set
  are evaluated in one vectorized call, then one compiled call solves all sets in parallel
  (:func:`kinetics.numerics.linear_batch.solve_sets`: dgeev and the eigen kernel a single
  simulation uses). Sets whose eigenvectors are too ill-conditioned for the eigen path are
  solved by the matrix exponential, as a single simulation would, in one more compiled call
  over those sets (:func:`kinetics.numerics.linear_batch.solve_sets_expm`); when the eigen
  path declines all of the first 32 sets, the rest go to the matrix exponential directly.
* **nonlinear models**: the compiled Rosenbrock integrator over all sets of a segment in one
  compiled call, in lock-step blocks of sets (one register file per set, every instruction
  applied to the whole block) and in parallel over the cores
  (:func:`kinetics.numerics.rosenbrock_lanes.integrate_many`): per set the same operations
  as a single simulation, so the same values to the last bit.
* **models with triggered events** (and nonlinear models without numba): a loop over the sets
  (root finding on the dense output runs in Python).

A set that fails (non-finite values, a solver failure) does not lose the others: its rows are
NaN, :attr:`Ensemble.failed` marks it, :attr:`Ensemble.messages` says why, and a warning
counts the failures.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .compiled import DEFAULT_ATOL, DEFAULT_RTOL, compile_model
from .schedule import Dose, Infusion, Schedule
from ..codegen.lambdify import lambdify
from ..errors import KineticsWarning, ModelError, SolverError, suggest_name
from ..model.expressions import TIME

__all__ = ["Ensemble", "simulate_many"]


class Ensemble:
    """Simulations of one model for many parameter sets.

    ``values`` (n_sets, n_times, n_outputs) along ``names`` (compartments, then observables);
    ``parameters`` a DataFrame of every model parameter per set; ``failed`` a boolean mask of
    sets that could not be simulated (their values NaN) with ``messages`` {set index: why}."""

    def __init__(self, model_name, times, values, names, parameters, failed, messages, time_unit="", units=None,
                 method="", observable_names=()):
        self.model_name = model_name
        self.times = np.asarray(times, dtype=float)
        self.values = values
        self.names = list(names)
        self.parameters = parameters
        self.failed = np.asarray(failed, dtype=bool)
        self.messages = dict(messages)
        self.time_unit = time_unit
        self.units = dict(units or {})
        self.method = method
        self.observable_names = [n for n in observable_names if n in self.names]

    def __len__(self):
        return self.values.shape[0]

    def __getitem__(self, name) -> np.ndarray:
        """Values of one output, shape (n_sets, n_times)."""
        try:
            return self.values[:, :, self.names.index(name)]
        except ValueError:
            raise KeyError(f"'{name}' is not an output of model '{self.model_name}'{suggest_name(str(name), self.names)} "
                           f"(outputs: {', '.join(self.names)})") from None

    def _names(self, names):
        if names is None:
            return list(self.names)
        names = [names] if isinstance(names, str) else list(names)
        for name in names:
            self[name]   # raises KeyError naming the outputs
        return names

    def quantiles(self, qs=(0.025, 0.5, 0.975), names=None):
        """Tidy table of quantiles over the sets that succeeded: ``time``, ``name``,
        ``quantile``, ``value``."""
        import pandas as pd
        qs = np.atleast_1d(np.asarray(qs, dtype=float))
        if ((qs < 0) | (qs > 1)).any():
            raise ValueError(f"quantiles must lie in [0, 1], got {qs.tolist()}")
        names = self._names(names)
        index = [self.names.index(n) for n in names]
        ok = self.values[~self.failed][:, :, index]
        if len(ok):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)   # an all-NaN column (noise on a NaN) stays NaN
                q = np.nanquantile(ok, qs, axis=0)            # (n_q, n_times, n_names)
        else:
            q = np.full((len(qs), len(self.times), len(names)), np.nan)
        n_q, m, k = q.shape
        return pd.DataFrame({"time": np.tile(np.repeat(self.times, k), n_q), "name": np.tile(names, n_q * m),
                             "quantile": np.repeat(qs, m * k), "value": q.reshape(-1)})

    def to_frame(self, names=None):
        """Tidy table: ``set``, ``time``, ``name``, ``value`` (failed sets included, as NaN)."""
        import pandas as pd
        names = self._names(names)
        index = [self.names.index(n) for n in names]
        v = self.values[:, :, index]
        n, m, k = v.shape
        return pd.DataFrame({"set": np.repeat(np.arange(n), m * k), "time": np.tile(np.repeat(self.times, k), n),
                             "name": np.tile(names, n * m), "value": v.reshape(-1)})

    def plot(self, names=None, ax=None, band=(0.025, 0.975), logy=False):
        """Median and a band (quantiles ``band``) of the named outputs (default: the observables
        if any, else the compartments) against time; returns the Axes."""
        import matplotlib.pyplot as plt
        if names is None:
            names = self.observable_names or self.names
        names = self._names(names)
        if ax is None:
            _, ax = plt.subplots(figsize=(7, 4.5))
        lo, hi = band
        table = self.quantiles([lo, 0.5, hi], names)
        for name in names:
            rows = table[table["name"] == name]
            curve = {q: rows[rows["quantile"] == q]["value"].to_numpy() for q in (lo, 0.5, hi)}
            unit = self.units.get(name)
            line, = ax.plot(self.times, curve[0.5], label=f"{name} [{unit}]" if unit else name)
            ax.fill_between(self.times, curve[lo], curve[hi], color=line.get_color(), alpha=0.25, lw=0)
        ax.set_xlabel(f"time [{self.time_unit}]" if self.time_unit else "time")
        units = {self.units.get(name) for name in names}
        label = names[0] if len(names) == 1 else "value"
        ax.set_ylabel(f"{label} [{units.pop()}]" if len(units) == 1 and None not in units else label)
        ax.set_title(f"{self.model_name}: median and {100 * (hi - lo):g}% band of {int((~self.failed).sum())} sets")
        if logy:
            ax.set_yscale("log")
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
        return ax

    def __repr__(self):
        n, m, k = self.values.shape
        failed = f", {int(self.failed.sum())} failed" if self.failed.any() else ""
        return f"<Ensemble of '{self.model_name}': {n} sets{failed}, {m} times, {k} outputs>"

    def _repr_html_(self):
        n, m, k = self.values.shape
        return (f"<p><b>Ensemble</b> of model <code>{self.model_name}</code>: {n} parameter sets "
                f"({int(self.failed.sum())} failed), {m} output times, outputs {', '.join(self.names)}</p>")


# ---------------------------------------------------------------------------------- inputs

def _parameter_matrix(compiled, parameter_sets):
    """(N, P) parameter vectors: the model's values where a set does not name a parameter."""
    import pandas as pd
    if isinstance(parameter_sets, pd.DataFrame):
        columns = {str(c): parameter_sets[c].to_numpy() for c in parameter_sets.columns}
    elif isinstance(parameter_sets, dict):
        columns = dict(parameter_sets)
    else:
        raise ModelError("simulate_many: parameter_sets must be a pandas DataFrame (a row per set, a column per "
                         f"parameter) or a dict of parameter name -> array, got {type(parameter_sets).__name__}")
    index = {name: i for i, name in enumerate(compiled.parameter_names)}
    computed = set(compiled.computed_parameters)
    arrays, n = {}, None
    for name, values in columns.items():
        if name not in index:
            raise ModelError(f"simulate_many: parameter_sets names '{name}', which is not a parameter of model "
                             f"'{compiled.name}'{suggest_name(str(name), index)}; its parameters are "
                             f"{', '.join(compiled.parameter_names)}")
        if name in computed:
            raise ModelError(f"simulate_many: parameter '{name}' of model '{compiled.name}' is computed from other "
                             "parameters, so an ensemble cannot set it; vary the parameters it is computed from")
        try:
            array = np.asarray(values, dtype=float)
        except (TypeError, ValueError):
            raise ModelError(f"simulate_many: the values of parameter '{name}' are not all numbers "
                             "(give one number per set)") from None
        if array.ndim != 1:
            raise ModelError(f"simulate_many: parameter '{name}' needs a 1-D array (one value per set), got shape {array.shape}")
        if n is not None and len(array) != n:
            raise ModelError(f"simulate_many: parameter '{name}' has {len(array)} values but other parameters have {n}; "
                             "give every parameter one value per set")
        n = len(array)
        arrays[name] = array
    if n is None:
        raise ModelError("simulate_many: parameter_sets names no parameter; give at least one column")
    if n == 0:
        raise ModelError("simulate_many: parameter_sets has no rows (no parameter set to simulate)")
    P = np.tile(compiled.default_parameters, (n, 1))
    for name, array in arrays.items():
        P[:, index[name]] = array
    if computed:
        P = np.array([compiled.resolve_parameters(row)[0] for row in P])
    return P


class _Failures:
    def __init__(self, n):
        self.mask = np.zeros(n, dtype=bool)
        self.messages = {}

    def mark(self, s, message):
        if not self.mask[s]:
            self.mask[s] = True
            self.messages[int(s)] = message


# ------------------------------------------------------------------------------ affine path

def _vector_functions(compiled):
    """Vectorized A(p), b(p), x0(p) and observables h(t, x, p) (built once per model)."""
    cache = compiled.model.cache
    built = cache.get("ensemble_functions")
    if built is not None:
        return built
    x, p = compiled.state_symbols, compiled.parameter_symbols
    n = compiled.n_states
    built = {"obs": lambdify([TIME, x, p], list(compiled.observables_symbolic), vector=True)
             if compiled.observable_names else None,
             "x0": lambdify([p], list(compiled.symbolic.initial), vector=True)}
    if compiled.affine:
        A = compiled.jacobian_symbolic
        b = compiled.rhs_symbolic.xreplace({s: 0 for s in x})
        entries = [(i, j, A[i, j]) for i in range(n) for j in range(n) if A[i, j] != 0]
        built["A_index"] = (np.array([e[0] for e in entries], dtype=np.intp), np.array([e[1] for e in entries], dtype=np.intp))
        built["A"] = lambdify([p], [e[2] for e in entries], vector=True)
        built["b"] = lambdify([p], list(b), vector=True)
    cache["ensemble_functions"] = built
    return built


def _evaluate(fn, columns, N):
    """A list of generated expressions over the parameter columns, as an (N, k) array."""
    values = fn(columns) if not isinstance(columns, tuple) else fn(*columns)
    out = np.empty((N, len(values)))
    for k, v in enumerate(values):
        out[:, k] = v
    return out


def _observe(functions, compiled, X, times, P):
    """Observables (N, m, o) of states X (N, m, n) under parameters P (N, params)."""
    N, m, _ = X.shape
    o = len(compiled.observable_names)
    if not o:
        return np.empty((N, m, 0))
    columns = (np.asarray(times, dtype=float)[None, :], [X[:, :, i] for i in range(X.shape[2])],
               [P[:, k:k + 1] for k in range(P.shape[1])])
    Y = np.empty((N, m, o))
    for k, value in enumerate(functions["obs"](*columns)):
        Y[:, :, k] = value
    return Y


def _inputs_at(schedule, state_index, tb):
    """Bolus amounts at tb and the infusion rate in force from tb on (n,) each."""
    n = len(state_index)
    dose, rate = np.zeros(n), np.zeros(n)
    for item in schedule.inputs:
        if isinstance(item, Dose) and item.time == tb:
            dose[state_index[item.compartment]] += item.amount
        elif isinstance(item, Infusion) and item.start <= tb < item.end:
            rate[state_index[item.compartment]] += item.rate
    return dose, rate


#: Sets of a segment tried on the eigen path before the others (see _AffineSegments.solve).
EIGEN_PROBE = 32


class _AffineSegments:
    """Exact solutions of a segment for many sets: the batched eigen kernel, the matrix
    exponential for sets whose eigenvectors are too ill-conditioned."""

    def __init__(self, compiled):
        self.functions = _vector_functions(compiled)
        self.n = compiled.n_states

    def set_parameters(self, P):
        rows, cols = self.functions["A_index"]
        columns = [P[:, k] for k in range(P.shape[1])]
        N = len(P)
        self.A = np.zeros((N, self.n, self.n))
        with np.errstate(all="ignore"):
            self.A[:, rows, cols] = _evaluate(self.functions["A"], columns, N)
            self.b = _evaluate(self.functions["b"], columns, N)

    def finite(self):
        return np.isfinite(self.A).all(axis=(1, 2)) & np.isfinite(self.b).all(axis=1)

    def solve(self, sel, x, rate, solve_times, seg_t0, out, messages):
        from ..numerics.linear import MAX_EIGEN_CONDITION
        from ..numerics.linear_batch import solve_sets, solve_sets_expm
        taus = np.ascontiguousarray(solve_times - seg_t0)
        every = len(sel) == len(self.A)
        A = self.A if every else self.A[sel]
        b = np.ascontiguousarray((self.b if every else self.b[sel]) + rate)
        x = np.ascontiguousarray(x)
        ok = np.zeros(len(sel), dtype=bool)
        # A probe first: when the eigen path declines every one of its sets (a model whose
        # eigenvectors are ill-conditioned everywhere, e.g. a long non-normal chain), the others
        # go straight to the matrix exponential instead of paying a decomposition to be declined
        # (both paths are exact, so the choice only changes the cost).
        probe = min(len(sel), EIGEN_PROBE)
        solve_sets(A[:probe], b[:probe], x[:probe], taus, MAX_EIGEN_CONDITION, out[:probe], ok[:probe])
        if probe < len(sel) and ok[:probe].any():
            solve_sets(A[probe:], b[probe:], x[probe:], taus, MAX_EIGEN_CONDITION, out[probe:], ok[probe:])
        declined = np.flatnonzero(~ok)
        if len(declined):                 # ill-conditioned eigenvectors: the matrix exponential
            part = np.empty((len(declined), len(taus), self.n))
            solve_sets_expm(A[declined], b[declined], x[declined], taus, part)
            out[declined] = part
        at_start = taus == 0
        if at_start.any():                # as solve_affine: the initial values exactly
            out[:, at_start] = x[:, None, :]


class _NumericSegments:
    """The compiled Rosenbrock integrator over many sets, in lock-step blocks, in parallel on the cores."""

    def __init__(self, compiled, rtol, atol):
        self.tapes = compiled.integrator_tapes()
        self.rtol, self.atol = float(rtol), float(atol)

    def set_parameters(self, P):
        self.P = P

    def finite(self):
        return np.isfinite(self.P).all(axis=1)

    def solve(self, sel, x, rate, solve_times, seg_t0, out, messages):
        from ..numerics.rosenbrock import STATUS_MESSAGES
        from ..numerics.rosenbrock_lanes import integrate_many
        rhs, jac, dfdt = self.tapes
        consts = np.hstack([self.P[sel], np.tile(rate, (len(sel), 1))])
        Y, status, _ = integrate_many(rhs, jac, x, consts, seg_t0, solve_times, self.rtol, self.atol, dfdt=dfdt)
        out[...] = Y
        for i in np.flatnonzero(status != 0):
            messages[int(sel[i])] = (f"the integrator failed between t={seg_t0:g} and t={solve_times[-1]:g}: "
                                     f"{STATUS_MESSAGES.get(int(status[i]), f'status {int(status[i])}')}")


def _run_batched(compiled, schedule, P, initial, failures, segments):
    """Every set through the schedule's segments (doses, infusion switches, fixed-time events),
    each segment solved for all live sets in one call of ``segments``."""
    functions = _vector_functions(compiled)
    N, n = P.shape[0], compiled.n_states
    times = schedule.times
    m = len(times)
    # np.empty: rows of failed sets are set to NaN at the end
    X = np.empty((N, m, n))
    Y = np.empty((N, m, len(compiled.observable_names)))
    state_index = {name: i for i, name in enumerate(compiled.state_names)}
    with np.errstate(all="ignore"):
        x = _evaluate(functions["x0"], [P[:, k] for k in range(P.shape[1])], N)
    if initial:
        for s in range(N):
            try:
                x[s] = schedule.initial_conditions(P[s])[0]
            except SolverError as exc:
                failures.mark(s, str(exc))
    P_seg = P.copy()

    def apply_events(tb):
        for s in range(N):
            if not failures.mask[s]:
                try:
                    P_seg[s] = schedule.event_parameters(tb, P_seg[s])
                except SolverError as exc:
                    failures.mark(s, f"{exc}")
        segments.set_parameters(P_seg)

    dose, rate = _inputs_at(schedule, state_index, schedule.t0)
    x = x + dose
    segments.set_parameters(P_seg)
    if schedule.events:
        apply_events(schedule.t0)
    start, seg_t0 = 0, schedule.t0
    for tb in [*schedule.breakpoints, math.inf]:
        stop = int(np.searchsorted(times, tb, side="left")) if tb != math.inf else m
        need_end = tb != math.inf
        seg_times = times[start:stop]
        solve_times = np.append(seg_times, tb) if need_end else seg_times
        if len(solve_times):
            in_place = start == 0 and not need_end      # one segment: straight into X
            Xs = X if in_place else np.empty((N, len(solve_times), n))
            finite_input = segments.finite() & np.isfinite(x).all(axis=1)
            for s in np.flatnonzero(~failures.mask & ~finite_input):
                failures.mark(s, f"the rate coefficients, inflows or state are not finite at t={seg_t0:g}")
            live = ~failures.mask
            sel = np.flatnonzero(live)
            messages = {}
            if len(sel) == N:
                segments.solve(sel, np.ascontiguousarray(x), rate, solve_times, seg_t0, Xs, messages)
            elif len(sel):
                part = np.empty((len(sel), len(solve_times), n))
                segments.solve(sel, np.ascontiguousarray(x[sel]), rate, solve_times, seg_t0, part, messages)
                Xs[sel] = part
            for s, message in messages.items():
                failures.mark(s, message)
            Xs[~live] = np.nan
            bad = ~np.isfinite(Xs).all(axis=(1, 2)) & ~failures.mask
            for s in np.flatnonzero(bad):
                row = int(np.argmax(~np.isfinite(Xs[s]).all(axis=1)))
                failures.mark(s, f"the solution is not finite at t={solve_times[row]:g} (it overflowed)")
            k = len(seg_times)
            if k:
                if not in_place:
                    X[:, start:stop] = Xs[:, :k]
                with np.errstate(all="ignore"):
                    Y[:, start:stop] = _observe(functions, compiled, Xs[:, :k], seg_times, P_seg)
            if need_end:
                x = Xs[:, -1]
        if not need_end:
            break
        dose, rate = _inputs_at(schedule, state_index, tb)
        x = x + dose
        if any(event.time == tb for event in schedule.events):
            apply_events(tb)
        start, seg_t0 = stop, tb
    bad = ~np.isfinite(Y).all(axis=(1, 2)) & ~failures.mask
    for s in np.flatnonzero(bad):
        row, col = np.argwhere(~np.isfinite(Y[s]))[0]
        failures.mark(s, f"observable {compiled.observable_names[col]} is not finite at t={times[row]:g}")
    return X, Y


# ------------------------------------------------------------------------------ other paths

def _run_sets(schedule, P, indices, X, Y, failures, rtol, atol):
    for s in indices:
        try:
            Xs, Ys, _, _ = schedule.run(P[s], None, rtol, atol)
        except SolverError as exc:
            failures.mark(s, str(exc))
            continue
        X[s], Y[s] = Xs, Ys


def _run_each(compiled, schedule, P, failures, rtol, atol):
    N = P.shape[0]
    m = len(schedule.times)
    X = np.full((N, m, compiled.n_states), np.nan)
    Y = np.full((N, m, len(compiled.observable_names)), np.nan)
    _run_sets(schedule, P, np.flatnonzero(~failures.mask), X, Y, failures, rtol, atol)
    return X, Y


def simulate_many(model, times, parameter_sets, *, doses=(), events=(), initial=None, observables=None,
                  rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL, t0=0.0) -> Ensemble:
    """Simulate ``model`` (a Model, a CompiledModel or a model-file path) at ``times`` for every
    parameter set in ``parameter_sets``.

    Parameters
    ----------
    parameter_sets : pandas DataFrame (a row per set, a column per parameter) or dict of
        parameter name -> 1-D array (one value per set). Parameters not named keep the model's values.
    doses, events, initial : as in :func:`~kinetics.simulate`, the same for every set
        (fixed-time events may set parameters from expressions of each set's values).
    observables : list of observable names to return (default: all); compartments are always returned.
    rtol, atol : tolerances of the numerical path (the affine path is exact).

    Returns
    -------
    Ensemble
        Values of every set at ``times``. Sets that fail are NaN and marked in
        ``Ensemble.failed`` (with a :class:`~kinetics.KineticsWarning`); they never stop the others.
    """
    from ..model.core import Model, load_model

    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        model = load_model(model)
    compiled = compile_model(model) if isinstance(model, Model) else model
    if isinstance(times, (int, float)):
        times = np.linspace(t0, float(times), 201)
    schedule = Schedule(compiled, times, doses, events, initial, t0=t0, where="simulate_many")
    P = _parameter_matrix(compiled, parameter_sets)
    keep = list(compiled.observable_names)
    if observables is not None:
        keep = [observables] if isinstance(observables, str) else list(observables)
        for name in keep:
            if name not in compiled.observable_names:
                raise ModelError(f"simulate_many: '{name}' is not an observable of model '{compiled.name}'"
                                 f"{suggest_name(str(name), compiled.observable_names)}; its observables are "
                                 f"{', '.join(compiled.observable_names) or 'none'}")
    N = P.shape[0]
    failures = _Failures(N)
    for s in np.flatnonzero(~np.isfinite(P).all(axis=1)):
        bad = [name for name, v in zip(compiled.parameter_names, P[s]) if not math.isfinite(v)]
        failures.mark(s, f"parameter values are not finite ({', '.join(bad)})")
    from ..numerics.rosenbrock import numba_available
    if compiled.affine and not compiled.events and numba_available():
        X, Y = _run_batched(compiled, schedule, P, initial, failures, _AffineSegments(compiled))
        method = "exact (batched)"
    elif not compiled.events and numba_available():
        X, Y = _run_batched(compiled, schedule, P, initial, failures, _NumericSegments(compiled, rtol, atol))
        method = "numerical (batched)"
    else:   # triggered events (root finding in Python) or no numba: one set after another
        X, Y = _run_each(compiled, schedule, P, failures, rtol, atol)
        method = compiled.method
    obs_index = [compiled.observable_names.index(name) for name in keep]
    values = np.concatenate([X, Y[:, :, obs_index]], axis=2)
    values[failures.mask] = np.nan
    names = list(compiled.state_names) + [n for n in keep]
    if failures.mask.any():
        first = min(failures.messages)
        warnings.warn(f"simulate_many: {int(failures.mask.sum())} of {N} parameter sets of model '{compiled.name}' "
                      f"failed (their values are NaN; see Ensemble.failed and .messages); the first, set {first}: "
                      f"{failures.messages[first]}", KineticsWarning, stacklevel=2)
    import pandas as pd
    model_obj = compiled.model
    units = {**{k: c.unit for k, c in model_obj.compartments.items()}, **{k: o.unit for k, o in model_obj.observables.items()}}
    return Ensemble(compiled.name, schedule.times, values, names, pd.DataFrame(P, columns=compiled.parameter_names),
                    failures.mask, failures.messages, model_obj.time_unit, units, method, keep)

