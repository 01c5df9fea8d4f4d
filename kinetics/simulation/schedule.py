"""Simulation: doses, infusions and parameter switches over a compiled model.

A simulation is split into segments at every discontinuity (bolus dose, start or end of an
infusion, event). Within a segment inputs and parameters are constant, so the exact affine
solution or the stiff integrator applies unchanged, and each discontinuity is met exactly.
States are right-continuous: an output time equal to a dose time shows the state just after
the dose. Sensitivities follow through every segment by the chain rule, and through triggered
events by the jump conditions (:mod:`kinetics.simulation.events`).

:class:`Schedule` is the reusable plan (fitting builds one per condition and runs it for
every new parameter vector); :func:`simulate` is the one-call interface.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from .compiled import DEFAULT_ATOL, DEFAULT_RTOL, NonFiniteError, compile_model, first_nonfinite, nonfinite_value
from ..codegen.lambdify import lambdify_plain
from ..errors import ExpressionError, ModelError, SolverError, suggest_name
from ..model.expressions import parse_expression, shorten
from ..io.files import atomic_path
from ..numerics.linear import affine_rows

__all__ = ["Dose", "Infusion", "Event", "Schedule", "Simulation", "simulate"]


@dataclass(frozen=True)
class Dose:
    """A bolus: ``amount`` added to ``compartment`` at ``time``."""
    compartment: str
    amount: float
    time: float = 0.0


@dataclass(frozen=True)
class Infusion:
    """A constant ``rate`` (amount per time unit) into ``compartment`` from ``start`` to ``end``."""
    compartment: str
    rate: float
    start: float = 0.0
    end: float = math.inf


@dataclass(frozen=True)
class Event:
    """At ``time``, set parameters to expressions of the values in force just before
    (e.g. ``{"k_sec": "k_sec * 0.5"}`` halves secretion from then on)."""
    time: float
    set: dict = field(default_factory=dict)

    def __hash__(self):
        return hash((self.time, tuple(sorted((k, str(v)) for k, v in self.set.items()))))


def _number(value, what, allow_inf=False, check=True):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ModelError(f"{what} must be a number, got {shorten(value, 40)}")
    value = float(value)
    if not check:
        return value
    if math.isnan(value):
        raise ModelError(f"{what} is NaN; give a finite number")
    if math.isinf(value) and not (allow_inf and value > 0):
        raise ModelError(f"{what} is infinite; give a finite number")
    return value


def _describe_input(item) -> str:
    if isinstance(item, Dose):
        return f"bolus into '{shorten(item.compartment, 40)}'"
    return f"infusion into '{shorten(item.compartment, 40)}'"


def _check_input(item, where):
    """Every number of a dose or infusion finite (an infusion may last forever: end = inf)."""
    where = f"{where} ({_describe_input(item)})"
    if isinstance(item, Dose):
        _number(item.amount, f"{where}: amount")
        _number(item.time, f"{where}: time")
    else:
        _number(item.rate, f"{where}: rate")
        start = _number(item.start, f"{where}: start")
        end = _number(item.end, f"{where}: end", allow_inf=True)
        if not end > start:
            raise ModelError(f"{where}: ends (end = {end:g}) before it starts (start = {start:g}); "
                             "an infusion needs end > start")


def as_input(item, where="dose"):
    """A Dose or Infusion from an object or a dict as written in a fit spec, checked."""
    if isinstance(item, (Dose, Infusion)):
        _check_input(item, where)
        return item
    if not isinstance(item, dict):
        raise ModelError(f"{where}: expected a table like {{ compartment = \"P\", amount = 1e10, time = 0 }}, got {shorten(item, 60)}")
    keys = set(item)
    if "amount" in keys:
        unknown = keys - {"compartment", "amount", "time"}
        if unknown:
            raise ModelError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} for a bolus dose (compartment, amount, time)")
        dose = Dose(str(item.get("compartment")), _number(item["amount"], f"{where}: amount", check=False),
                    _number(item.get("time", 0.0), f"{where}: time", check=False))
        _check_input(dose, where)
        return dose
    if "rate" in keys:
        unknown = keys - {"compartment", "rate", "start", "end"}
        if unknown:
            raise ModelError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} for an infusion (compartment, rate, start, end)")
        infusion = Infusion(str(item.get("compartment")), _number(item["rate"], f"{where}: rate", check=False),
                            _number(item.get("start", 0.0), f"{where}: start", check=False),
                            _number(item.get("end", math.inf), f"{where}: end", check=False))
        _check_input(infusion, where)
        return infusion
    raise ModelError(f"{where}: needs 'amount' (a bolus) or 'rate' (an infusion); got keys {', '.join(sorted(keys)) or 'none'}")


def as_event(item, where="event"):
    if isinstance(item, Event):
        _number(item.time, f"{where}: time")
        return item
    if not isinstance(item, dict) or "time" not in item or "set" not in item or set(item) - {"time", "set"}:
        raise ModelError(f"{where}: expected a table like {{ time = 24, set = {{ k_sec = \"k_sec * 0.5\" }} }}, got {shorten(item, 60)}")
    if not isinstance(item["set"], dict) or not item["set"]:
        raise ModelError(f"{where}: 'set' must be a non-empty table of parameter = expression")
    return Event(_number(item["time"], f"{where}: time"), dict(item["set"]))


class Schedule:
    """A simulation plan: output times, doses, infusions, events and initial overrides, checked
    against a compiled model once and run for any parameter vector."""

    def __init__(self, compiled, times, doses=(), events=(), initial=None, t0=0.0, where="simulation"):
        self.compiled = c = compiled
        times = np.asarray(times, dtype=float).reshape(-1)
        if times.size == 0:
            raise ModelError(f"{where}: no output times")
        if not np.isfinite(times).all():
            raise ModelError(f"{where}: output times must be finite numbers")
        if np.any(np.diff(times) < 0):
            raise ModelError(f"{where}: output times must be sorted in increasing order")
        if times[0] < t0:
            raise ModelError(f"{where}: output time {times[0]:g} is before the start time {t0:g}")
        self.times, self.t0 = times, float(t0)
        self.inputs = [as_input(d, f"{where}: dose {i + 1}") for i, d in enumerate(doses or ())]
        self.events = sorted((as_event(e, f"{where}: event {i + 1}") for i, e in enumerate(events or ())), key=lambda e: e.time)
        state_index = {name: i for i, name in enumerate(c.state_names)}
        for i, item in enumerate(self.inputs):
            if not isinstance(item.compartment, str) or item.compartment not in state_index:
                raise ModelError(f"{where}: dose {i + 1} goes into the unknown compartment '{shorten(item.compartment, 40)}'"
                                 f"{suggest_name(str(item.compartment), state_index)}; compartments are {', '.join(c.state_names)}")
            if isinstance(item, Dose) and item.time < t0:
                raise ModelError(f"{where}: dose {i + 1} ({_describe_input(item)}) at time {item.time:g} is before the start time {t0:g}")
        # events: parsed into functions of the parameter vector in force before them
        symbols = {name: sp.Symbol(name, real=True) for name in c.parameter_names}
        psyms = [symbols[n] for n in c.parameter_names]
        self._event_maps = []
        for event in self.events:
            g = list(psyms)
            for name, expr in event.set.items():
                if name not in symbols:
                    raise ModelError(f"{where}: event at t={event.time:g} sets unknown parameter '{shorten(name, 40)}'{suggest_name(str(name), symbols)}")
                try:
                    g[c.parameter_names.index(name)] = parse_expression(expr, symbols, allow_time=False)
                except ExpressionError as exc:
                    raise ModelError(f"{where}: event at t={event.time:g}, {name} = '{shorten(expr)}' {exc}") from None
            G = sp.Matrix(g)
            self._event_maps.append((lambdify_plain([psyms], list(G), "math"), lambdify_plain([psyms], G.jacobian(psyms), "numpy")))
        # initial overrides: number or expression of parameters per compartment
        self._initial = []
        for name, value in (initial or {}).items():
            if name not in state_index:
                raise ModelError(f"{where}: initial value for unknown compartment '{shorten(name, 40)}'{suggest_name(str(name), state_index)}")
            try:
                expr = parse_expression(value, symbols, allow_time=False)
            except ExpressionError as exc:
                raise ModelError(f"{where}: initial value of {name} '{shorten(value)}' {exc}") from None
            self._initial.append((state_index[name], lambdify_plain([psyms], expr, "math"),
                                  lambdify_plain([psyms], [expr.diff(s) for s in psyms], "math")))
        # breakpoints after t0 where something changes
        t_end = float(times[-1])
        cuts = set()
        for item in self.inputs:
            for tb in ((item.time,) if isinstance(item, Dose) else (item.start, item.end)):
                if t0 < tb <= t_end:
                    cuts.add(float(tb))
        for event in self.events:
            if t0 < event.time <= t_end:
                cuts.add(float(event.time))
        self.breakpoints = sorted(cuts)
        self._state_index = state_index
        self._simple = not self.inputs and not self.events
        #: (time, event name) of the triggered events fired in the last run, in order
        self.fired: list = []

    # ------------------------------------------------------------------
    def _apply_discontinuities(self, tb, x, p, D, u):
        """Doses, events and infusion switches at time tb; returns new (x, p, D, u)."""
        x = x.copy()
        for item in self.inputs:
            if isinstance(item, Dose) and item.time == tb:
                x[self._state_index[item.compartment]] += item.amount
        for event, (g, dg) in zip(self.events, self._event_maps):
            if event.time == tb:
                pl = list(map(float, p))
                try:
                    if D is not None:
                        D = np.asarray(dg(pl), dtype=float) @ D
                    p = np.array(g(pl), dtype=float)
                except (ArithmeticError, ValueError) as exc:   # math.exp overflow, x / 0
                    raise SolverError(f"the event at t={tb:g} cannot be evaluated ({exc})") from None
                if not np.isfinite(p).all():
                    raise SolverError(f"the event at t={tb:g} sets a parameter to a value that is not finite")
        u = self._inflow(tb)
        return x, p, D, u

    def event_parameters(self, tb, p):
        """The parameter vector after the fixed-time events at ``tb`` (``p`` unchanged when
        none is at tb); raises SolverError where an event cannot be evaluated. Ensembles
        apply the events set by set with it."""
        if not any(event.time == tb for event in self.events):
            return p
        return self._apply_discontinuities(tb, np.zeros(self.compiled.n_states), p, None, None)[1]

    def _inflow(self, t):
        u = None
        for item in self.inputs:
            if isinstance(item, Infusion) and item.start <= t < item.end:
                if u is None:
                    u = np.zeros(self.compiled.n_states)
                u[self._state_index[item.compartment]] += item.rate
        return u

    def initial_conditions(self, p, D=None, start=None):
        """Initial state (and its sensitivities along D): the model's, or ``start`` = (x0, S0)
        given by the caller (a pre-equilibrated state), then this plan's initial overrides."""
        c = self.compiled
        if start is not None:
            x0 = np.array(start[0], dtype=float)
            S0 = None if D is None else np.array(start[1], dtype=float)
        else:
            x0 = c.initial_state(p)
            S0 = c.initial_sensitivity(p, D) if D is not None else None
        pl = list(map(float, p)) if self._initial else None
        for i, fn, dfn in self._initial:
            try:
                x0[i] = fn(pl)
                if S0 is not None:
                    S0[i] = np.asarray(dfn(pl), dtype=float) @ D
            except (ArithmeticError, ValueError) as exc:   # math.exp overflow, x / 0
                raise SolverError(f"the initial value of {self.compiled.state_names[i]} cannot be evaluated ({exc})") from None
        return x0, S0

    def run(self, p, D=None, rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL, method="auto", start=None):
        """Run the plan at model parameters ``p``. Returns (X, Y, S, dY) with states (m, n),
        observables (m, o) and, when D (P, K) is given, their sensitivities (m, n, K), (m, o, K).
        ``start`` = (x0, S0) replaces the model's initial state (and its sensitivities along D),
        e.g. by a pre-equilibrated one (with triggered events too: their triggers start from it)."""
        c = self.compiled
        p = np.asarray(p, dtype=float)
        if not np.isfinite(p).all():
            raise SolverError(self._failure("parameter values are not finite", p))
        p, D = c.resolve_parameters(p, D)  # parameters given as expressions of others
        if c.events:
            return self._run_triggered(p, D, rtol, atol, method, start_state=start)
        try:
            x, S = self.initial_conditions(p, D, start)
        except SolverError as exc:
            raise SolverError(self._failure(str(exc), p)) from None
        if self._simple:
            # no dose, infusion or event: one segment (the fitting inner loop's common case)
            try:
                X, S = c.solve(p, x, self.times, self.t0, None, S, D, rtol, atol, method)
            except NonFiniteError as exc:
                raise SolverError(self._not_finite(str(exc), p)) from None
            except SolverError as exc:
                raise SolverError(self._failure(str(exc), p)) from None
            Y, dY = c.observe(X, self.times, p, S, D)
            self._check_observables(Y, dY, p)
            return X, Y, S, dY
        try:
            x, p_seg, D_seg, u = self._apply_discontinuities(self.t0, x, p, D, None)
        except SolverError as exc:
            raise SolverError(self._failure(str(exc), p)) from None
        times = self.times
        m = len(times)
        X = np.empty((m, c.n_states))
        Y = np.empty((m, len(c.observable_names)))
        SS = np.empty((m, c.n_states, D.shape[1])) if D is not None else None
        dY = np.empty((m, len(c.observable_names), D.shape[1])) if D is not None else None
        start, seg_t0 = 0, self.t0
        for tb in [*self.breakpoints, math.inf]:
            stop = int(np.searchsorted(times, tb, side="left")) if tb != math.inf else m
            seg_times = times[start:stop]
            need_end = tb != math.inf
            solve_times = np.append(seg_times, tb) if need_end else seg_times
            if len(solve_times):
                try:
                    Xs, Ss = c.solve(p_seg, x, solve_times, seg_t0, u, S, D_seg, rtol, atol, method)
                except NonFiniteError as exc:
                    raise SolverError(self._not_finite(f"{exc} (between t={seg_t0:g} and t={solve_times[-1]:g})", p_seg)) from None
                except SolverError as exc:
                    raise SolverError(self._failure(f"{exc} (between t={seg_t0:g} and t={solve_times[-1]:g})", p_seg)) from None
                k = len(seg_times)
                if k:
                    X[start:stop] = Xs[:k]
                    Yk, dYk = c.observe(Xs[:k], seg_times, p_seg, None if Ss is None else Ss[:k], D_seg)
                    Y[start:stop] = Yk
                    if D is not None:
                        SS[start:stop] = Ss[:k]
                        if dYk is not None:
                            dY[start:stop] = dYk
                if need_end:
                    x = Xs[-1]
                    S = None if Ss is None else Ss[-1]
            if not need_end:
                break
            try:
                x, p_seg, D_seg, u = self._apply_discontinuities(tb, x, p_seg, D_seg, u)
            except SolverError as exc:
                raise SolverError(self._failure(str(exc), p_seg)) from None
            start, seg_t0 = stop, tb
        self._check_observables(Y, dY, p)
        return X, Y, SS, dY

    def _check_observables(self, Y, dY, p):
        """States are checked by the solver; observables (exp(P), P / V at V = 0) here."""
        if np.isfinite(Y).all() and (dY is None or np.isfinite(dY).all()):
            return
        names = self.compiled.observable_names
        for values, what in ((Y, "observable {}"), (dY, "the sensitivity of observable {}")):
            where = None if values is None else first_nonfinite(values)
            if where is not None:
                row, col = where
                raise SolverError(self._not_finite(
                    f"{what.format(names[col])} is {nonfinite_value(values[row, col])} at t={self.times[row]:g} "
                    "(the first output time where it is)", p))

    def _run_triggered(self, p, D, rtol, atol, method="auto", start_state=None):
        """:meth:`run` for a model with triggered events (see :mod:`kinetics.simulation.events`).

        The states are run first, locating and firing the events (the event runner logs what
        fired when). With directions D, the run is then replayed with the sensitivities
        (:meth:`_replay_with_sensitivities`): the state-and-sensitivity system is integrated
        from event to event and carried through each by the jump conditions."""
        from .events import event_runner
        c = self.compiled
        runner = event_runner(c)
        x, _ = self.initial_conditions(p, start=None if start_state is None else (start_state[0], None))
        x, p_seg, _, u = self._apply_discontinuities(self.t0, x, p, None, None)
        try:
            memory, x, p_seg = runner.start(self.t0, x, p_seg)
        except SolverError as exc:
            raise SolverError(self._failure(str(exc), p)) from None
        times = self.times
        m = len(times)
        X = np.empty((m, c.n_states))
        P = np.empty((m, c.n_params))
        start, seg_t0 = 0, self.t0
        for tb in [*self.breakpoints, math.inf]:
            stop = int(np.searchsorted(times, tb, side="left")) if tb != math.inf else m
            seg_end = tb if tb != math.inf else float(times[-1])
            try:
                X[start:stop], P[start:stop], x, p_seg = runner.advance(memory, x, p_seg, u, seg_t0, seg_end,
                                                                        times[start:stop], rtol, atol, method)
                if tb == math.inf:
                    break
                memory.log.append(("break", tb))
                x, p_seg, _, u = self._apply_discontinuities(tb, x, p_seg, None, u)
                x, p_seg = runner.recheck(memory, tb, x, p_seg)
            except SolverError as exc:
                raise SolverError(self._failure(f"{exc} (between t={seg_t0:g} and t={seg_end:g})", p_seg)) from None
            start, seg_t0 = stop, tb
        self.fired = list(memory.fired)
        if not np.isfinite(X).all():
            raise SolverError(self._failure("the solution is not finite", p))
        if D is not None:
            return self._replay_with_sensitivities(runner, memory.log, p, D, rtol, atol, method, start_state)
        # observables with the parameters in force at each output time (events may change them)
        Y = np.empty((m, len(c.observable_names)))
        i = 0
        while i < m:
            j = i + 1
            while j < m and np.array_equal(P[j], P[i]):
                j += 1
            Y[i:j] = c.observe(X[i:j], times[i:j], P[i])[0]
            i = j
        self._check_observables(Y, None, p)
        return X, Y, None, None

    def _replay_with_sensitivities(self, runner, log, p, D, rtol, atol, method, start_state=None):
        """States and sensitivities of a model with triggered events, replaying the ``log`` of
        a run of the states (what fired when, and the schedule's breaks).

        Between two instants the state-and-sensitivity system is solved by the compiled model
        (exactly for affine models). At an instant tau the sensitivities S = dx/dtheta and the
        parameter directions D = dp/dtheta jump. With the crossing atom's root function
        g(t, x, p) (none at a fixed time: dtau = 0) and f- = dx/dt just before,

            dtau = -(g_x S- + g_p D) / (g_x f- + g_t)

        (differentiate g(tau, x(tau), p) = 0). The total derivatives of the values at the
        instant, Xt = S- + f- dtau and Pt = D, go through each event's assignments v = h(t, x, p)
        in firing order (dv = h_x Xt + h_p Pt + h_t dtau) and through the schedule's doses and
        fixed-time changes (p = g(p): Pt = g_p Pt). After the instant the trajectory moves with
        f+ = dx/dt at the new values, so S+ = Xt - f+ dtau and D+ = Pt: for one event with
        x+ = h(x-, p), S+ = h_x S- + h_p D + (h_x f- - f+) dtau."""
        c = self.compiled
        times = self.times
        m, n, K = len(times), c.n_states, D.shape[1]
        X = np.empty((m, n))
        SS = np.empty((m, n, K))
        pieces = []    # (first row, stop row, parameters, directions) for the observables
        x, S = self.initial_conditions(p, D, start_state)
        x, p_seg, D_seg, u = self._apply_discontinuities(self.t0, x, p, D, None)
        instants = []
        for entry in log:
            if instants and instants[-1][0] == entry[1]:
                instants[-1][1].append(entry)
            else:
                instants.append((entry[1], [entry]))
        t_cur, k = self.t0, 0
        for t_next, entries in [*instants, (None, ())]:
            final = t_next is None
            stop = m if final else int(np.searchsorted(times, t_next, side="left"))
            seg_times = times[k:stop]
            solve_times = seg_times if final else np.append(seg_times, t_next)
            if len(seg_times) or (not final and t_next > t_cur):
                try:
                    Xs, Ss = c.solve(p_seg, x, solve_times, t_cur, u, S, D_seg, rtol, atol, method)
                except NonFiniteError as exc:
                    raise SolverError(self._not_finite(f"{exc} (between t={t_cur:g} and t={solve_times[-1]:g})", p_seg)) from None
                except SolverError as exc:
                    raise SolverError(self._failure(f"{exc} (between t={t_cur:g} and t={solve_times[-1]:g})", p_seg)) from None
                X[k:stop], SS[k:stop] = Xs[:stop - k], Ss[:stop - k]
                pieces.append((k, stop, p_seg, D_seg))
                if not final:
                    x, S = Xs[-1], Ss[-1]
            k = stop
            if final:
                break
            try:
                x, S, p_seg, D_seg, u = self._jump(runner, t_next, entries, x, S, p_seg, D_seg, u)
            except SolverError as exc:
                raise SolverError(self._failure(str(exc), p_seg)) from None
            t_cur = t_next
            stop = int(np.searchsorted(times, t_cur, side="right"))   # output times at the instant: values after
            if stop > k:
                X[k:stop], SS[k:stop] = x, S
                pieces.append((k, stop, p_seg, D_seg))
                k = stop
        Y = np.empty((m, len(c.observable_names)))
        dY = np.empty((m, len(c.observable_names), K))
        for first, last, p_piece, D_piece in pieces:
            Y[first:last], dY[first:last] = c.observe(X[first:last], times[first:last], p_piece, SS[first:last], D_piece)
        where = first_nonfinite(SS)
        if where is not None:
            row, col = where
            raise SolverError(self._not_finite(f"the sensitivity of {c.state_names[col]} is "
                                               f"{nonfinite_value(SS[row, col])} at t={times[row]:g}", p))
        self._check_observables(Y, dY, p)
        return X, Y, SS, dY

    def _jump(self, runner, t, entries, x, S, p, D, u):
        """Values and sensitivities through one instant (see :meth:`_replay_with_sensitivities`):
        returns (x, S, p, D, u) after it."""
        first = entries[0]
        dtau = None
        if first[0] == "fire" and first[3] is not None:
            dtau, f_before = runner.crossing_derivative(first[3], t, x, S, p, D, u)
            Xt = S + np.outer(f_before, dtau)
        else:
            Xt = S
        x, p = np.asarray(x, dtype=float), np.asarray(p, dtype=float)
        for entry in entries:
            if entry[0] == "fire":
                x, p, Xt, D = runner.assign_with_sensitivities(entry[2], t, x, p, Xt, D, dtau)
            else:
                x, p, D, u = self._apply_discontinuities(t, x, p, D, u)
        S = Xt if dtau is None else Xt - np.outer(runner.rhs(t, x, p, u), dtau)
        return x, S, p, D, u

    def row_evaluator(self, t_index, s_index):
        """The fitting inner loop's shortcut, or None where it does not apply: a callable
        ``(p, D) -> (f, J) or None`` giving the values (N,) and sensitivities (N, K) of data rows
        that read series ``s_index`` (states, then observables) at output times ``t_index``.

        It applies to affine models whose observables are affine in the states (amounts,
        concentrations, sums, fractions), simulated in one segment (doses at the start only),
        and does in one compiled call what :meth:`run` does in a dozen. A call returns None
        where the exact eigen path declines (ill-conditioned, not finite): use :meth:`run`."""
        c = self.compiled
        if not (c.affine and c.affine_observables is not None) or c.events or c.computed_parameters:
            return None
        if self.breakpoints or self.events or any(not isinstance(item, Dose) for item in self.inputs):
            return None
        return _RowEvaluator(self, np.asarray(s_index, dtype=np.intp), np.asarray(t_index, dtype=np.intp))

    def _failure(self, message, p):
        values = ", ".join(f"{n}={v:.6g}" for n, v in zip(self.compiled.parameter_names, p))
        return (f"simulation of model '{self.compiled.name}' failed: {message}. Parameter values: {values}. "
                "Check that these values are plausible (bounds in the model or fit spec), or loosen --rtol/--atol.")

    def _not_finite(self, message, p):
        values = ", ".join(f"{n}={v:.6g}" for n, v in zip(self.compiled.parameter_names, p))
        doses = ", the doses" if self.inputs else ""
        return (f"simulation of model '{self.compiled.name}' is not finite: {message}. Parameter values: {values}. "
                f"Infinite or NaN values come from growth beyond the floating-point range (about 1e308) or from an "
                f"expression undefined at these values (a division by zero, sqrt or log of 0): check the rates{doses}, "
                f"the observables and these parameter values, or simulate a shorter time (the last output time is {self.times[-1]:g})."
                + self._fractional_power_hint())

    def _fractional_power_hint(self) -> str:
        pools = self.compiled.pools_under_fractional_powers
        if not pools:
            return ""
        return (f" The rates take a fractional power of {', '.join(pools)}: a flow with such a rate (X**h, h < 1, or "
                f"sqrt(X)) empties its pool in finite time, and a step then ends slightly below 0, where the power "
                f"is undefined; write max(X, 0)**h (or sqrt(max(X, 0))) for a pool that can empty.")


class _RowEvaluator:
    """See :meth:`Schedule.row_evaluator`."""

    def __init__(self, schedule, s_index, t_index):
        c = schedule.compiled
        self.schedule = schedule
        self.series = c.affine_observables
        self.s_index, self.t_index = s_index, t_index
        self.taus = np.ascontiguousarray(schedule.times - schedule.t0)
        self.doses = np.zeros(c.n_states)
        for item in schedule.inputs:            # all bolus doses, at t0 (no breakpoints)
            if item.time == schedule.t0:
                self.doses[schedule._state_index[item.compartment]] += item.amount
        # what depends on no parameter (the usual case) is computed once
        self.fixed_start = not c.initial_depends_on_parameters and not schedule._initial
        defaults = c.default_parameters.tolist()
        self._fixed_series = None
        if self.series.constant:
            self._fixed_series = (*self.series.coefficients(defaults), *self.series.derivatives(defaults), s_index)
        # dA, db are constant when A, b are linear in the parameters (mass action)
        self._A_of, self._b_of, self._dA_of, self._db_of = c.affine_parts()
        self._dA = self._dA_of(defaults) if self._dA_of.const else None
        self._db = self._db_of(defaults) if self._db_of.const else None

    def __call__(self, p, D):
        c = self.schedule.compiled
        pl = p.tolist()
        if not all(map(math.isfinite, pl)):
            return None        # run() reports it
        if self.fixed_start:
            x0, S0 = c.initial_state(pl), np.zeros((c.n_states, D.shape[1]))
        else:
            x0, S0 = self.schedule.initial_conditions(p, D)
        series = self._fixed_series or (*self.series.coefficients(pl), *self.series.derivatives(pl), self.s_index)
        dA = self._dA if self._dA is not None else self._dA_of(pl)
        db = self._db if self._db is not None else self._db_of(pl)
        return affine_rows(self._A_of(pl), self._b_of(pl), x0 + self.doses, self.taus, dA, db,
                           np.ascontiguousarray(D), np.ascontiguousarray(S0), series, self.t_index)


class Simulation:
    """A simulation result: states and observables at the output times, with views as pandas
    tables (:attr:`wide`, :meth:`to_frame`), sensitivities, and :meth:`plot`."""

    def __init__(self, compiled, times, states, observables, parameters, sensitivities=None,
                 observable_sensitivities=None, sensitivity_parameters=()):
        self.model_name = compiled.name
        self.method = compiled.method
        self.time_unit = compiled.model.time_unit
        self.times = times
        self.states = states
        self.observables = observables
        self.state_names = list(compiled.state_names)
        self.observable_names = list(compiled.observable_names)
        self.parameters = dict(zip(compiled.parameter_names, map(float, parameters)))
        self.sensitivities = sensitivities
        self.observable_sensitivities = observable_sensitivities
        self.sensitivity_parameters = list(sensitivity_parameters)
        self._units = {**{n: c.unit for n, c in compiled.model.compartments.items()},
                       **{n: o.unit for n, o in compiled.model.observables.items()}}

    @property
    def names(self):
        return self.state_names + [n for n in self.observable_names if n not in self.state_names]

    def __getitem__(self, name) -> np.ndarray:
        if name in self.observable_names:
            return self.observables[:, self.observable_names.index(name)]
        if name in self.state_names:
            return self.states[:, self.state_names.index(name)]
        raise KeyError(f"'{name}' is neither a compartment nor an observable of model '{self.model_name}' "
                       f"(names: {', '.join(self.names)})")

    def sensitivity(self, name, parameter) -> np.ndarray:
        """d name / d parameter at the output times (simulate with ``sensitivities=``)."""
        if self.sensitivities is None:
            raise ValueError("no sensitivities were computed: pass sensitivities=True or a list of parameter names to simulate()")
        if parameter not in self.sensitivity_parameters:
            raise KeyError(f"no sensitivity for parameter '{parameter}' (computed: {', '.join(self.sensitivity_parameters)})")
        k = self.sensitivity_parameters.index(parameter)
        if name in self.observable_names:
            return self.observable_sensitivities[:, self.observable_names.index(name), k]
        if name in self.state_names:
            return self.sensitivities[:, self.state_names.index(name), k]
        raise KeyError(f"unknown name '{name}'")

    @property
    def wide(self):
        """One row per time: ``time``, then a column per compartment and per observable."""
        import pandas as pd
        data = {"time": self.times}
        for name in self.names:
            data[name] = self[name]
        return pd.DataFrame(data)

    def to_frame(self):
        """Tidy (long) table: ``time``, ``name``, ``kind`` (compartment/observable), ``value``."""
        import pandas as pd
        frames = []
        for name in self.names:
            kind = "observable" if name in self.observable_names else "compartment"
            frames.append(pd.DataFrame({"time": self.times, "name": name, "kind": kind, "value": self[name]}))
        return pd.concat(frames, ignore_index=True)

    def to_csv(self, path) -> None:
        """Write the wide table atomically."""
        with atomic_path(path) as tmp:
            self.wide.to_csv(tmp, index=False, float_format="%.10g")

    def unit(self, name):
        """The declared unit of a compartment or observable (None when the model gives none)."""
        return self._units.get(name)

    def plot(self, names=None, ax=None, logy=False, **kwargs):
        """Plot the named curves (default: observables if any, else compartments) against time;
        the y axis carries the unit (the curves' common unit, else each curve's in its label)."""
        if names is None:
            names = self.observable_names or self.state_names
        elif isinstance(names, str):
            names = [names]
        if ax is None:
            import matplotlib.pyplot as plt
            _, ax = plt.subplots(figsize=(7, 4.5))
        units = {self._units.get(name) for name in names}
        common = units.pop() if len(units) == 1 else None
        for name in names:
            unit = self._units.get(name)
            ax.plot(self.times, self[name], label=f"{name} [{unit}]" if unit and not common else name, **kwargs)
        ax.set_xlabel(f"time [{self.time_unit}]")
        if len(names) == 1:
            ax.set_ylabel(f"{names[0]} [{common}]" if common else names[0])
        else:
            kind = "amount" if all(name in self.state_names for name in names) else "value"
            ax.set_ylabel(f"{kind} [{common}]" if common else f"{kind} [unit in the legend]")
        ax.set_title(f"{self.model_name} ({self.method})")
        if logy:
            ax.set_yscale("log")
            from matplotlib import ticker
            low, high = ax.get_ylim()
            span = math.log10(high / low) if low > 0 else 0.0
            if span >= 2:    # decades
                ax.yaxis.set_major_locator(ticker.LogLocator(base=10, numticks=6))
            elif span >= 1:  # 1, 2, 5 x 10^k
                ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
            else:    # within a decade: a few plain numbers, not every minor tick labelled (or none)
                ax.yaxis.set_major_locator(ticker.MaxNLocator(nbins=4, min_n_ticks=2))
                ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
            ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        else:
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4), useMathText=True)
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
        return ax

    def _repr_html_(self) -> str:
        import html
        head = (f"<p><b>Simulation of {html.escape(self.model_name)}</b> ({html.escape(self.method)}): "
                f"{len(self.times)} times from {self.times[0]:g} to {self.times[-1]:g} {html.escape(str(self.time_unit))}, "
                f"{len(self.names)} series</p>")
        return head + self.wide.to_html(max_rows=12, index=False, float_format=lambda v: f"{v:.5g}")

    def __repr__(self):
        return f"<Simulation of '{self.model_name}' ({self.method}): {len(self.times)} times, {len(self.names)} series>"


def simulate(model, times, parameters=None, doses=(), events=(), initial=None, sensitivities=False,
             rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL, t0=0.0, method="auto") -> Simulation:
    """Simulate ``model`` (a Model, a CompiledModel or a model-file path) at ``times``.

    Parameters
    ----------
    parameters : dict, lmfit.Parameters or array, optional
        Values overriding the model's defaults.
    doses : list of Dose / Infusion or dicts (``{"compartment", "amount", "time"}`` or
        ``{"compartment", "rate", "start", "end"}``).
    events : list of Event or dicts (``{"time", "set": {name: expression}}``).
    initial : dict compartment -> number or expression of parameters.
    sensitivities : bool or list of parameter names
        Also compute d(state)/d(parameter) (``Simulation.sensitivity``).
    rtol, atol : tolerances of the numerical path (the affine path is exact).
    method : "auto" (exact for affine-linear models) or "numerical" (always integrate).
    """
    from ..model.core import Model, load_model

    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        model = load_model(model)
    compiled = compile_model(model) if isinstance(model, Model) else model
    p = compiled.parameter_vector(parameters)
    if isinstance(times, (int, float)):
        times = np.linspace(t0, float(times), 201)
    schedule = Schedule(compiled, times, doses, events, initial, t0=t0)
    D, names = None, []
    if sensitivities:
        names = list(compiled.parameter_names) if sensitivities is True else list(sensitivities)
        for name in names:
            if name not in compiled.parameter_names:
                raise ModelError(f"sensitivity requested for unknown parameter '{name}'")
        D = np.zeros((compiled.n_params, len(names)))
        for k, name in enumerate(names):
            D[compiled.parameter_names.index(name), k] = 1.0
    if method not in ("auto", "numerical"):
        raise ValueError(f"method must be 'auto' or 'numerical', not {method!r}")
    X, Y, S, dY = schedule.run(p, D, rtol, atol, method)
    sim = Simulation(compiled, schedule.times, X, Y, p, S, dY, names)
    if method == "numerical":
        sim.method = "numerical"
    return sim
