"""Triggered events: integration that stops where a trigger turns true, fires, and goes on.

A trigger is a boolean combination of comparisons ("atoms") ``lhs OP rhs``; each atom has the
root function g = lhs - rhs of (t, x, p). The states are advanced until some g changes sign;
the crossing is located by Brent's method (to about 1e-13 in t), the state there is taken, and
the triggers are re-evaluated with the crossed atoms on their new side. Events whose trigger
went from false to true fire in file order, each computing its assignments from the values
just before it; triggers made true by those assignments fire in the same instant (a cascade,
bounded by :data:`MAX_CASCADE`). Output times at the event time report the values after the
event.

How the states are advanced between events, in order of preference:

* **Clock atoms** (every atom linear in t and in states that move at a constant rate, as in
  ``t >= 5`` or ``t - reset >= 0.01``): each crossing time is computed from the atom's value
  and slope, no root is searched for, and the states are advanced to it by the model's own
  solver (exact for affine models). Models that fire thousands of timed events (SBML test
  00953: 10 000) run in a fraction of a second this way.
* **Affine models** (dx/dt = A(p) x + b(p) + u): the exact solution
  (:func:`~kinetics.numerics.linear.solve_affine`). The atoms are watched on a grid that
  resolves every mode of A while it matters (:func:`sample_offsets`), and a sign change is
  located by Brent's method on the exact solution: a one-pool decay k from x0 crosses thr at
  ln(x0 / thr) / k to rounding.
* **Other models**: the compiled Rodas5P integrator watching the atoms
  (:func:`~kinetics.numerics.rosenbrock.integrate_watching`): it stops after the first step
  over which an atom changes sign, and the root is located on that step's dense output (order
  4, well inside the integrator's tolerance). Without numba, scipy's Radau stepped from here
  with its dense output plays that part (about 100 times slower).

**Sensitivities** (fits of parameters in triggers, assignments and dynamics; ``simulate(...,
sensitivities=...)``) are exact forward sensitivities carried through each event by the jump
conditions. The run of the states logs what fired when (:attr:`_Memory.log`); the schedule
then replays it with the state-and-sensitivity system integrated from event to event
(exactly for affine models) and, at each event time tau located on the crossing of atom g,

    dtau/dtheta = -(g_x S- + g_p D) / (g_x f- + g_t)          (0 at a fixed time)
    S+ = h_x S- + h_p D + (h_x f- + h_t - f+) dtau/dtheta
    D+ = hp_x S- + hp_p D + (hp_x f- + hp_t) dtau/dtheta

with S = dx/dtheta, D = dp/dtheta (parameters changed by events carry their own), x+ = h(t,
x-, p) and p+ = hp(t, x-, p) the event's assignments (identity for what it does not assign),
f-, f+ = dx/dt just before and after; cascades compose these maps in firing order at one
tau (:meth:`EventRunner.crossing_derivative`, :meth:`EventRunner.assign_with_sensitivities`,
``Schedule._replay_with_sensitivities``). A trigger that reaches its threshold with zero rate
of change (g_x f- + g_t = 0) has no event-time derivative: that run raises SolverError.
Derivatives of step functions in triggers or assignments are taken as 0; a ``piecewise`` in a
*rate* whose condition switches between events is not an event, and the sensitivities do not
jump there (as without events).

Semantics follow DESIGN.md "The general form": a trigger already true at the start does not
fire unless the event has ``fire_at_start``; a non-persistent event whose trigger is false
again when its turn comes (after earlier events of the same instant) is skipped.
"""

from __future__ import annotations

import bisect
import math
import weakref

import numpy as np
import sympy as sp

from ..codegen.lambdify import lambdify
from ..errors import SolverError
from ..model.expressions import TIME

__all__ = ["EventRunner", "event_runner", "MAX_CASCADE"]

#: Firings allowed at one instant before the events are declared to trigger each other forever.
MAX_CASCADE = 1000

_RUNNERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_OPS = {"<": float.__lt__, "<=": float.__le__, ">": float.__gt__, ">=": float.__ge__, "==": float.__eq__, "!=": float.__ne__}


def event_runner(compiled) -> "EventRunner":
    """The cached :class:`EventRunner` of a compiled model with triggered events."""
    runner = _RUNNERS.get(compiled)
    if runner is None:
        runner = _RUNNERS[compiled] = EventRunner(compiled)
    return runner


#: Points per grid chunk of the exact affine path (the atoms are evaluated chunk by chunk up to
#: the first crossing).
_GRID_CHUNK = 512
#: Grid spacing per mode, in units of the mode's time scale 1/|lambda|: e^{lambda t} changes
#: by at most a factor e^0.25 = 1.28 (or turns by 0.25 rad) from one point to the next.
_GRID_THETA = 0.25
#: A decaying mode is resolved for 40 of its time scales (e^-40 = 4e-18, below rounding).
_DECAY_REACH = 40.0
#: Every segment is also sampled at this many evenly spaced points.
_MIN_SAMPLES = 32
#: More points than this in one segment (a fast undamped oscillation over a long span): the
#: segment is integrated numerically instead.
_MAX_SAMPLES = 2_000_000


def sample_offsets(A, span) -> np.ndarray | None:
    """Offsets in [0, span] at which to watch the atoms along x(t) = e^{A t} x0 + ...: sorted,
    starting at 0 and ending at span. At offset s the spacing is ``0.25 / |lambda|`` for the
    fastest mode e^{lambda t} of A that still matters there (a decaying mode for 40 time scales
    1/|Re lambda|, a growing or undamped one for the whole span), at most span / 32: between
    two points every mode that matters changes by at most a factor 1.28 or turns by a quarter
    radian. A trigger crossing its threshold and back between two points needs a turn within
    a quarter of the fastest active time scale: that is what this bracketing can miss (an
    integrator's step-end check misses the same, on coarser steps). The spacing is constant
    between the times where a mode stops mattering, so the exact solution's matrix
    exponentials (non-diagonalizable A) repeat. None when it takes more than
    :data:`_MAX_SAMPLES` points."""
    span = float(span)
    if not span > 0:
        return np.zeros(1)
    coarse = span / _MIN_SAMPLES
    modes = {}    # reach -> fastest rate among the modes that matter until then
    if A.size:
        for v in np.linalg.eigvals(A):
            rate = float(abs(v))
            if not rate * coarse > _GRID_THETA:
                continue   # slow on the scale of the span: the even points resolve it
            reach = min(span, _DECAY_REACH / -float(v.real)) if v.real < 0 else span
            modes[reach] = max(modes.get(reach, 0.0), rate)
    pieces, s, total = [], 0.0, 0
    for reach in sorted(modes):
        if reach <= s:
            continue
        rate = max(r for until, r in modes.items() if until >= reach)
        h = _GRID_THETA / rate
        count = math.ceil((reach - s) / h)
        total += count
        if total > _MAX_SAMPLES:
            return None
        pieces.append(s + h * np.arange(count, dtype=float))
        s = s + count * h
    if s < span:
        pieces.append(s + coarse * np.arange(math.ceil((span - s) / coarse), dtype=float))
    grid = np.concatenate([*pieces, [span]]) if pieces else np.array([0.0, span])
    return grid[grid <= span]


def _brent(f, a, b, fa, fb, xtol):
    """Root of f in [a, b] (fa, fb of opposite signs) by Brent's method. fa, fb may come from
    another evaluation of the same function (an array of points, the integrator's tape); where
    f itself disagrees in the last bits right at a root, the end already on fb's side is it."""
    if fa == 0:
        return a
    if fb == 0:
        return b
    fa, fb_own = f(a), f(b)
    if fa == 0 or (fa > 0) == (fb > 0):
        return a
    if fb_own == 0 or (fb_own > 0) != (fb > 0):
        return b
    return _brentq(f, a, b, fa, fb_own, xtol)


def _brentq(f, a, b, fa, fb, xtol, rtol=4 * np.finfo(float).eps, maxiter=200):
    """Brent's method (R. P. Brent, *Algorithms for Minimization without Derivatives*, 1973,
    ch. 4: inverse quadratic interpolation, secant or bisection, always bracketing) in the form
    of scipy's ``brentq``, here so that the first event simulation does not import
    scipy.optimize (0.5-0.8 s). f(a) = fa and f(b) = fb have opposite signs; returns x with the
    root within xtol + rtol |x|."""
    x_pre, x_cur, f_pre, f_cur = a, b, fa, fb
    x_blk = f_blk = s_pre = s_cur = 0.0
    for _ in range(maxiter):
        if f_pre != 0 and f_cur != 0 and (f_pre > 0) != (f_cur > 0):
            x_blk, f_blk = x_pre, f_pre       # the bracket is [x_cur, x_blk]
            s_pre = s_cur = x_cur - x_pre
        if abs(f_blk) < abs(f_cur):           # x_cur: the better end
            x_pre, x_cur, x_blk = x_cur, x_blk, x_cur
            f_pre, f_cur, f_blk = f_cur, f_blk, f_cur
        delta = (xtol + rtol * abs(x_cur)) / 2
        s_bis = (x_blk - x_cur) / 2
        if f_cur == 0 or abs(s_bis) < delta:
            return x_cur
        if abs(s_pre) > delta and abs(f_cur) < abs(f_pre):
            if x_pre == x_blk:                # secant
                s_try = -f_cur * (x_cur - x_pre) / (f_cur - f_pre)
            else:                             # inverse quadratic interpolation
                d_pre = (f_pre - f_cur) / (x_pre - x_cur)
                d_blk = (f_blk - f_cur) / (x_blk - x_cur)
                s_try = -f_cur * (f_blk * d_blk - f_pre * d_pre) / (d_blk * d_pre * (f_blk - f_pre))
            if 2 * abs(s_try) < min(abs(s_pre), 3 * abs(s_bis) - delta):
                s_pre, s_cur = s_cur, s_try   # accept the interpolation
            else:
                s_pre = s_cur = s_bis         # bisect
        else:
            s_pre = s_cur = s_bis
        x_pre, f_pre = x_cur, f_cur
        x_cur += s_cur if abs(s_cur) > delta else (delta if s_bis > 0 else -delta)
        f_cur = f(x_cur)
    return x_cur


def _floats(v) -> list:
    """A vector as a list of Python floats (the generated functions are fastest on those)."""
    return v.tolist() if isinstance(v, np.ndarray) else list(v)


def _linear_in(g, variables) -> bool:
    """Whether g is a polynomial of total degree <= 1 in ``variables`` (its other symbols taken
    as constants)."""
    variables = [v for v in variables if v in g.free_symbols]
    if not variables:
        return True
    if not g.is_polynomial(*variables):
        return False
    try:
        return sp.Poly(g, *variables).total_degree() <= 1
    except (sp.PolynomialError, ValueError, TypeError):
        return False


class _Memory:
    """Where a run stands between calls: the side of every atom, the trigger values."""

    def __init__(self, sides, triggers):
        self.sides = sides
        self.triggers = triggers
        self.fired: list[tuple[float, str]] = []  # (time, event name), in firing order
        #: what happened, in order, for the sensitivity replay (:meth:`EventRunner.jump`):
        #: ("fire", t, event index, crossing atom index or None) and ("break", t) for the
        #: schedule's doses and fixed-time changes
        self.log: list[tuple] = []


class EventRunner:
    """Integration of a compiled model with its triggered events (built once per model)."""

    def __init__(self, compiled):
        self.compiled = c = compiled
        sym = c.symbolic
        x, p = list(sym.states), list(sym.parameters)
        self.events = list(c.events)
        atoms = []
        for event in self.events:
            for rel in event.trigger.atoms(sp.core.relational.Relational):
                if rel not in atoms:
                    atoms.append(rel)
        self.atoms = atoms
        self.ops = [rel.rel_op for rel in atoms]
        self._compare = [_OPS[op] for op in self.ops]
        gs = [rel.lhs - rel.rhs for rel in atoms]
        self._g = lambdify([TIME, x, p], gs)
        flags = [sp.Symbol(f"_atom_{j}") for j in range(len(atoms))]
        self._truth = lambdify([flags], [sp.sympify(e.trigger).xreplace(dict(zip(atoms, flags))) for e in self.events])
        state_index = {s.name: i for i, s in enumerate(x)}
        param_index = {s.name: i for i, s in enumerate(p)}
        # every event's assignments in one generated function (one lambdify, not one per event:
        # building is what costs); an event whose own values fail falls back to its own function
        self._assign, self._assign_slices, flat, start = [], [], [], 0
        for e in self.events:
            targets = [(("x", state_index[k]) if k in state_index else ("p", param_index[k])) for k in e.assign]
            self._assign.append((targets, None))
            self._assign_slices.append(slice(start, start + len(e.assign)))
            flat.extend(e.assign.values())
            start += len(e.assign)
        self._assign_all = lambdify([TIME, x, p], flat)
        self._args = (x, p)
        self._f, self._J = c.scipy_functions()
        self.n = c.n_states
        # Clock atoms: g is a polynomial of degree <= 1 in t and in the states it reads that
        # move at a constant rate, and its other states do not move (t >= 5, t - reset >= 0.01,
        # A > 2 with A moved by events only, T > 3 with dT/dt = 1). Between events g moves on a
        # straight line, so its crossing is known in advance; when every atom is one, the states
        # are integrated from crossing to crossing (exactly, or by the compiled integrator) with
        # no root location.
        rhs = [sp.sympify(f) for f in c.rhs_symbolic]
        x_set = set(x) | {TIME}
        self._state_is_still = np.array([f == 0 for f in rhs], dtype=bool)
        constant_rate = [not (f.free_symbols & x_set) for f in rhs]
        u = [sp.Symbol(f"_inflow_{i}") for i in range(len(x))]
        self._clock_states = []   # per atom: the still states it reads (no inflow allowed), or None
        slopes = []
        for g in gs:
            read = [i for i, s in enumerate(x) if s in g.free_symbols]
            moving = [i for i in read if not self._state_is_still[i]]
            if all(constant_rate[i] for i in moving) and _linear_in(g, [TIME, *(x[i] for i in moving)]):
                self._clock_states.append([i for i in read if self._state_is_still[i]])
                # dg/dt along the flow: constant between events
                slopes.append(sp.diff(g, TIME) + sum((sp.diff(g, x[i]) * (rhs[i] + u[i]) for i in moving), sp.Integer(0)))
            else:
                self._clock_states.append(None)
                slopes.append(sp.Integer(0))
        self._slopes = lambdify([TIME, x, p, u], slopes)
        self._gs = gs
        self._g_many = None        # the atoms over arrays of points (exact affine path), built on first use
        self._sensitivity = None   # derivatives of atoms and assignments, built on first use
        self._watch = None         # the atoms as a tape for the compiled integrator, built on first use

    # ----------------------------------------------------------------- triggers
    def _atom_values(self, t, x, p):
        """Root functions of the atoms at (t, x, p), a list of floats."""
        return [float(v) for v in self._g(t, _floats(x), _floats(p))]

    def _atom_truth(self, g, sides, pinned):
        """Truth of each atom: on its side where pinned (just crossed), else by value."""
        if not any(pinned):
            return [compare(v, 0.0) for compare, v in zip(self._compare, g)]
        out = []
        for j, op in enumerate(self.ops):
            if pinned[j]:
                v = sides[j]
                out.append(v > 0 if op in (">", ">=") else v < 0 if op in ("<", "<=") else op == "==")
            else:
                out.append(_OPS[op](g[j], 0.0))
        return out

    def _trigger_values(self, truth):
        return [bool(v) for v in self._truth(truth)]

    def _initial_sides(self, g):
        """Side of each atom: its sign; at exactly 0, the side from which leaving changes it."""
        sides = []
        for j, op in enumerate(self.ops):
            if g[j] != 0:
                sides.append(1.0 if g[j] > 0 else -1.0)
            else:
                sides.append(-1.0 if op in (">", "<=") else 1.0)
        return sides

    # ------------------------------------------------------------------ firing
    def start(self, t0, x, p):
        """Memory at the start; events with ``fire_at_start`` whose trigger holds fire now.
        Returns (memory, x, p)."""
        g = self._atom_values(t0, x, p)
        pinned = [False] * len(self.atoms)
        triggers = self._trigger_values(self._atom_truth(g, None, pinned))
        memory = _Memory(self._initial_sides(g), [v and not e.fire_at_start for v, e in zip(triggers, self.events)])
        x, p = self.fire(memory, t0, np.array(x, dtype=float), np.array(p, dtype=float), pinned)
        return memory, x, p

    def _assignment_values(self, i, t, x, p):
        try:
            return self._assign_all(t, _floats(x), _floats(p))[self._assign_slices[i]]
        except (ArithmeticError, ValueError):
            pass       # another event's expression fails here: evaluate this one's alone
        targets, own = self._assign[i]
        if own is None:
            own = lambdify([TIME, *self._args], list(self.events[i].assign.values()))
            self._assign[i] = (targets, own)
        try:
            return own(t, _floats(x), _floats(p))
        except (ArithmeticError, ValueError) as exc:   # math.exp overflow, x / 0
            raise SolverError(f"the assignments of event '{self.events[i].name}' cannot be evaluated at t={t:g} "
                              f"({exc})") from None

    def fire(self, memory, t, x, p, pinned, crossing=None):
        """Fire every event whose trigger went false -> true at time t (cascades included);
        returns the new (x, p). ``crossing``: the atom whose root is t (None at a fixed time:
        the start, a dose, a schedule change), logged for the sensitivities."""
        g = self._atom_values(t, x, p)
        for _ in range(MAX_CASCADE):
            now = self._trigger_values(self._atom_truth(g, memory.sides, pinned))
            fired = [i for i, (a, b) in enumerate(zip(memory.triggers, now)) if b and not a]
            memory.triggers = now
            if not fired:
                return x, p
            for i in fired:
                event = self.events[i]
                if not event.persistent and i != fired[0]:
                    # the events before it at this instant may have made its trigger false again:
                    # a non-persistent event is then removed from the pending set (SBML L3 4.12.3)
                    if not self._trigger_values(self._atom_truth(g, memory.sides, pinned))[i]:
                        continue
                targets, new = self._assign[i][0], self._assignment_values(i, t, x, p)  # values just before it
                x, p = x.copy(), p.copy()
                for (kind, k), v in zip(targets, new):
                    (x if kind == "x" else p)[k] = float(v)
                memory.fired.append((float(t), event.name))
                memory.log.append(("fire", float(t), i, crossing))
                g_new = self._atom_values(t, x, p)
                for j in range(len(self.atoms)):
                    if g_new[j] != g[j]:      # the assignments moved this atom: judge it by value again
                        pinned[j] = False
                        if g_new[j] != 0:
                            memory.sides[j] = 1.0 if g_new[j] > 0 else -1.0
                g = g_new
        names = sorted({name for _, name in memory.fired[-20:]})
        raise SolverError(f"events {', '.join(names)} keep triggering each other at t={t:g} (more than {MAX_CASCADE} "
                          "firings in one instant); change their triggers or assignments so that a firing does not "
                          "make a trigger true again")

    # --------------------------------------------------------------- advancing
    def advance(self, memory, x, p, u, t_start, t_end, out_times, rtol, atol, method="auto"):
        """Integrate from (t_start, x) to t_end, firing events on the way. Returns (X, P, x_end,
        p_end): states and parameter vectors at ``out_times`` (sorted, in [t_start, t_end),
        values after any event at the same time) and at t_end. ``method="numerical"``
        integrates an affine model instead of solving it exactly (for cross-checks)."""
        still = self._state_is_still if u is None else self._state_is_still & (np.asarray(u) == 0)
        if all(states is not None and still[states].all() for states in self._clock_states):
            return self._advance_clock(memory, x, p, u, t_start, t_end, out_times, rtol, atol, still.all(), method)
        if self.compiled.affine and method != "numerical":
            return self._advance_affine(memory, x, p, u, t_start, t_end, out_times, rtol, atol)
        if self._watch_tape() is not None:
            return self._advance_compiled(memory, x, p, u, t_start, t_end, out_times, rtol, atol)
        return self._advance_numerical(memory, x, p, u, t_start, t_end, out_times, rtol, atol)

    def _watch_tape(self):
        """The atoms' root functions as a tape for the compiled integrator (inputs t, x, p, u),
        or None without numba (or for an expression the tapes cannot hold): then scipy's Radau."""
        if self._watch is None:
            self._watch = False
            try:
                if self.compiled.integrator_tapes() is not None:
                    from ..codegen.tape import Tape
                    x, p = self._args
                    u = [sp.Symbol(f"_inflow_{i}") for i in range(self.n)]
                    self._watch = Tape.from_exprs(self._gs, [TIME, *x, *p, *u], n_varying=1 + self.n)
            except ValueError:   # a function the tapes do not hold
                self._watch = False
        return self._watch or None

    def _output_start(self, out_times, x, p, t_start):
        """The set-up every ``_advance_*`` shares: output times as an array, empty state and
        parameter rows for them, copies of x and p, the start time, and the rows at or before
        it already filled with (x, p). Returns (out_times, X, P, x, p, t, k), k the next row."""
        out_times = np.asarray(out_times, dtype=float)
        x = np.array(x, dtype=float)
        p = np.array(p, dtype=float)
        X = np.empty((len(out_times), self.n))
        P = np.empty((len(out_times), len(p)))
        t = float(t_start)
        k = bisect.bisect_right(out_times.tolist(), t)    # output times are sorted
        X[:k], P[:k] = x, p
        return out_times, X, P, x, p, t, k

    def _advance_compiled(self, memory, x, p, u, t_start, t_end, out_times, rtol, atol):
        """:meth:`advance` by the compiled Rodas5P integrator, which stops after the first step
        over which an atom changes sign (:func:`~kinetics.numerics.rosenbrock.integrate_watching`);
        the crossing is located by Brent's method on that step's dense output, the events fire
        and the integration restarts there."""
        from ..numerics.rosenbrock import STATUS_MESSAGES, STATUS_NONFINITE, dense_state, integrate_watching
        rhs, jac, dfdt = self.compiled.integrator_tapes()
        watch = self._watch_tape()
        out_times, X, P, x, p, t, k = self._output_start(out_times, x, p, t_start)
        m = len(out_times)
        inflow = np.zeros(self.n) if u is None else np.asarray(u, dtype=float)
        while t < t_end:
            times = np.append(out_times[k:], t_end)
            Y, status, crossing = integrate_watching(rhs, jac, x, np.concatenate([p, inflow]), t, times, rtol, atol,
                                                     watch, np.asarray(memory.sides, dtype=float), dfdt=dfdt)
            if status != 0:
                reached = t if crossing is None else crossing[0]
                if status == STATUS_NONFINITE:
                    raise SolverError(f"the solution is not finite (it overflowed) after t={reached:g}")
                raise SolverError(f"the integrator failed after t={reached:g}: {STATUS_MESSAGES.get(status, status)}")
            if crossing is None:
                X[k:], P[k:] = Y[:-1], p
                return X, P, np.array(Y[-1], dtype=float), p
            t_old, t_new, y_old, y_new, stages = crossing
            done = int(np.searchsorted(times, t_old, side="right"))   # rows the integrator filled
            done = min(done, m - k)
            X[k:k + done], P[k:k + done] = Y[:done], p
            k += done
            def interpolate(tt, step=(t_old, t_new, y_old, y_new, stages)):
                return dense_state(tt, *step)
            g_new = self._atom_values(t_new, y_new, p)
            fired = self._fire_first_crossing(memory, p, t_old, t_new, self._atom_values(t_old, y_old, p), g_new,
                                              y_new, interpolate, out_times, k, X, P)
            if fired is None:
                # the tape saw a sign change that the generated functions do not (last bits, at
                # a root): go on from the end of the step
                while k < m and out_times[k] <= t_new:
                    X[k], P[k] = interpolate(out_times[k]), p
                    k += 1
                x, t = np.array(y_new, dtype=float), t_new
                continue
            x, p, t, k = fired
        while k < m:
            X[k], P[k] = x, p
            k += 1
        return X, P, x, p

    def _fire_first_crossing(self, memory, p, t_old, t_new, g_old, g_new, y_new, interpolate, out_times, k, X, P):
        """Within the step (t_old, t_new], whose end has atoms on a side other than ``memory``'s:
        locate each crossing by Brent's method on the step's interpolant ``interpolate(t)``,
        write the output rows before the earliest one, fire the events there and write the
        rows at its time. Returns ``(x, p, t, k)`` after the events (k the next output row), or
        None when no atom's generated function changes sign over the step."""
        xtol = 1e-13 * max(1.0, abs(t_new))
        roots = {}
        for j in range(len(self.atoms)):
            if g_new[j] == 0 or (g_new[j] > 0) == (memory.sides[j] > 0):
                continue
            if g_old[j] != 0 and (g_old[j] > 0) == (g_new[j] > 0):
                roots[j] = t_old  # already on the new side at the start of the step
            else:
                def gj(tt, j=j):
                    return self._atom_values(tt, interpolate(tt), p)[j]
                roots[j] = _brent(gj, t_old, t_new, g_old[j], g_new[j], xtol)
        if not roots:
            return None
        m = len(out_times)
        crossing_atom = min(roots, key=roots.get)
        t_star = roots[crossing_atom]
        while k < m and out_times[k] < t_star - 4 * xtol:
            X[k], P[k] = interpolate(out_times[k]), p
            k += 1
        if k < m and abs(out_times[k] - t_star) <= 4 * xtol:
            t_star = float(out_times[k])   # an output time within the location tolerance is the event time
        x_star = y_new if t_star == t_new else interpolate(t_star)
        pinned = [False] * len(self.atoms)
        for j, r in roots.items():
            if r <= t_star + 4 * xtol:
                pinned[j] = True
                memory.sides[j] = 1.0 if g_new[j] > 0 else -1.0
        x, p = self.fire(memory, t_star, np.array(x_star, dtype=float), p, pinned, crossing_atom)
        while k < m and out_times[k] <= t_star:
            X[k], P[k] = x, p
            k += 1
        return x, p, t_star, k

    def _advance_numerical(self, memory, x, p, u, t_start, t_end, out_times, rtol, atol):
        """:meth:`advance` by scipy's Radau, stepped from here, crossings located on its dense output."""
        from scipy.integrate import Radau
        out_times, X, P, x, p, t, k = self._output_start(out_times, x, p, t_start)   # k: next output row
        m = len(out_times)
        while t < t_end:
            pl, ul = list(p), (list(u) if u is not None else [0.0] * self.n)
            n = self.n

            def fun(tt, y):
                return np.asarray(self._f(tt, list(y), pl, ul), dtype=float)

            def jac(tt, y):
                return np.asarray(self._J(tt, list(y), pl), dtype=float).reshape(n, n)

            solver = Radau(fun, t, x, t_end, rtol=rtol, atol=atol, jac=jac)
            g_prev = self._atom_values(t, x, p)
            t_prev = t
            restarted = False
            while solver.status == "running":
                message = solver.step()
                if solver.status == "failed":
                    raise SolverError(f"the integrator failed near t={solver.t:g}: {message}")
                t_new, y_new = solver.t, solver.y
                if not np.isfinite(y_new).all():
                    raise SolverError(f"the solution is not finite (it overflowed) near t={t_new:g}")
                g_new = self._atom_values(t_new, y_new, p)
                crossed = [j for j in range(len(self.atoms))
                           if g_new[j] != 0 and (g_new[j] > 0) != (memory.sides[j] > 0)]
                if not crossed:
                    dense = None
                    while k < m and out_times[k] <= t_new:
                        if out_times[k] == t_new:
                            X[k] = y_new
                        else:
                            dense = dense or solver.dense_output()
                            X[k] = dense(out_times[k])
                        P[k] = p
                        k += 1
                    for j in range(len(self.atoms)):
                        if g_new[j] != 0:
                            memory.sides[j] = 1.0 if g_new[j] > 0 else -1.0
                    t_prev, g_prev = t_new, g_new
                    continue
                x, p, t, k = self._fire_first_crossing(memory, p, t_prev, t_new, g_prev, g_new, y_new,
                                                       solver.dense_output(), out_times, k, X, P)
                restarted = True
                break
            if not restarted:
                x, t = np.array(solver.y, dtype=float), float(solver.t)
                if solver.status != "finished" or not math.isclose(t, t_end, rel_tol=0, abs_tol=1e-12 * max(1.0, abs(t_end))):
                    raise SolverError(f"the integrator stopped at t={t:g} before t={t_end:g}")
                t = t_end
        while k < m:  # output times at t_end (the caller asks for them before a breakpoint only)
            X[k], P[k] = x, p
            k += 1
        return X, P, x, p

    def _advance_clock(self, memory, x, p, u, t_start, t_end, out_times, rtol, atol, nothing_moves, method="auto"):
        """:meth:`advance` when every atom is a clock atom: the next crossing is computed, not
        searched for, and the states are integrated up to it in one call of the model's own
        solver (exact for affine models); with ``nothing_moves`` no integration at all."""
        out_times, X, P, x, p, t, k = self._output_start(out_times, x, p, t_start)
        m = len(out_times)
        out_list = out_times.tolist()    # bisect on a list: this loop may run once per event, 10^4 times
        same_instant, last_fire = 0, None
        ul = [0.0] * self.n if u is None else [float(v) for v in u]
        while True:
            xl, pl = x.tolist(), p.tolist()
            g = self._g(t, xl, pl)
            slope = [float(a) for a in self._slopes(t, xl, pl, ul)]
            roots = {}
            for j, a in enumerate(slope):
                # heading for the other side: g crosses 0 at t - g / a (at once if it is already there)
                if a != 0 and (a > 0) != (memory.sides[j] > 0) and math.isfinite(a) and math.isfinite(g[j]):
                    roots[j] = max(t, t - float(g[j]) / a)
            crossing = min(roots, key=roots.get, default=None)
            t_star = math.inf if crossing is None else roots[crossing]
            if t_star > t_end:
                t_next = t_end
                stop = m
            else:
                xtol = 1e-13 * max(1.0, abs(t_star))
                stop = bisect.bisect_left(out_list, t_star - 4 * xtol)
                if stop < m and abs(out_list[stop] - t_star) <= 4 * xtol:
                    t_star = out_list[stop]  # an output time within the location tolerance is the event time
                t_next = t_star
            # states from t to t_next, at the output times on the way
            if nothing_moves or t_next == t:
                if stop > k:
                    X[k:stop], P[k:stop] = x, p
                x_next = x
            else:
                solve_times = np.append(out_times[k:stop], t_next)
                Xs, _ = self.compiled.solve(p, x, solve_times, t, u, rtol=rtol, atol=atol, method=method)
                X[k:stop], P[k:stop] = Xs[:-1], p
                x_next = np.array(Xs[-1], dtype=float)
            k = stop
            if t_star > t_end:
                return X, P, x_next, p
            pinned = [False] * len(self.atoms)
            for j, r in roots.items():
                if r <= t_star + 4 * xtol:
                    pinned[j] = True
                    memory.sides[j] = 1.0 if slope[j] > 0 else -1.0
            same_instant = same_instant + 1 if t_star == last_fire else 0
            if same_instant > MAX_CASCADE:
                names = sorted({name for _, name in memory.fired[-20:]})
                raise SolverError(f"events {', '.join(names)} keep triggering each other at t={t_star:g} (more than "
                                  f"{MAX_CASCADE} firings in one instant); change their triggers or assignments so "
                                  "that a firing does not make a trigger true again")
            last_fire = t = t_star
            x, p = self.fire(memory, t, x_next, p, pinned, crossing)
            while k < m and out_list[k] <= t:
                X[k], P[k] = x, p
                k += 1

    def recheck(self, memory, t, x, p):
        """After a dose or a fixed-time change at t: fire what it made true."""
        return self.fire(memory, t, np.array(x, dtype=float), np.array(p, dtype=float), [False] * len(self.atoms))

    # ------------------------------------------------------ exact affine path
    def _atom_values_many(self, times, X, p):
        """Root functions of the atoms at m points: (atoms, m)."""
        if self._g_many is None:
            self._g_many = lambdify([TIME, *self._args], self._gs, vector=True)
        m = len(times)
        with np.errstate(all="ignore"):
            values = self._g_many(times, list(X.T), _floats(p))
        return np.array([np.broadcast_to(np.asarray(v, dtype=float), (m,)) for v in values]).reshape(len(self.atoms), m)

    def _advance_affine(self, memory, x, p, u, t_start, t_end, out_times, rtol, atol):
        """:meth:`advance` for an affine model (dx/dt = A(p) x + b(p) + u between events): the
        states come from the exact solution (:func:`~kinetics.numerics.linear.solve_affine`),
        crossings are bracketed on a grid that resolves every mode of A (:func:`sample_offsets`)
        and located by Brent's method on the exact solution."""
        from ..numerics.linear import affine_solution
        out_times, X, P, x, p, t, k = self._output_start(out_times, x, p, t_start)
        m = len(out_times)
        sides = np.asarray(memory.sides)
        while True:
            A, b = self.compiled.affine_matrices(p)
            if u is not None:
                b = b + np.asarray(u, dtype=float)
            if not (np.isfinite(A).all() and np.isfinite(b).all()):
                raise SolverError(f"the rate coefficients or inflows are not finite after t={t:g}")
            t_seg, solution = t, affine_solution(A, b, x)

            def exact(taus, solution=solution, t_seg=t_seg):
                with np.errstate(all="ignore"):
                    states = solution(taus)
                if not np.isfinite(states).all():
                    raise SolverError(f"the exact solution overflowed after t={t_seg:g}")
                return states

            offsets = sample_offsets(A, t_end - t)
            if offsets is None:
                # a fast undamped (or growing) oscillation over a long span: too many points to
                # watch; the integrator takes over from here
                Xr, Pr, x, p = self._advance_numerical(memory, x, p, u, t, t_end, out_times[k:], rtol, atol)
                X[k:], P[k:] = Xr, Pr
                return X, P, x, p
            bracket = None
            for chunk in range(0, len(offsets), _GRID_CHUNK):
                grid = offsets[max(chunk - 1, 0): chunk + _GRID_CHUNK]   # overlapping by one point
                G = self._atom_values_many(t + grid, exact(grid), p)
                sides = np.asarray(memory.sides)
                other = (G != 0) & (np.sign(G) != sides[:, None])
                other[:, 0] = False      # the first point is the start, or was judged in the last chunk
                hit = other.any(axis=1)
                if hit.any():
                    first = np.where(hit, other.argmax(axis=1), len(grid))
                    i = int(first.min())
                    bracket = (t + grid[i - 1], t + grid[i], G[:, i - 1], G[:, i], np.flatnonzero(first == i))
                    break
            if bracket is None:
                # no crossing up to t_end: outputs and the end state from the exact solution
                if k < m:
                    X[k:], P[k:] = exact(out_times[k:] - t), p
                x_end = exact([t_end - t])[0] if t_end > t else x
                return X, P, x_end, p
            a, b_, ga, gb, crossed = bracket
            xtol = 1e-13 * max(1.0, abs(b_))
            roots = {}
            for j in crossed.tolist():
                def gj(tt, j=j):
                    return self._atom_values(tt, exact([tt - t_seg])[0], p)[j]
                if ga[j] != 0 and (ga[j] > 0) == (gb[j] > 0):
                    roots[j] = a  # already on the new side at the start (just after an event)
                else:
                    roots[j] = _brent(gj, a, b_, float(ga[j]), float(gb[j]), xtol)
            crossing = min(roots, key=roots.get)
            t_star = roots[crossing]
            stop = k
            while stop < m and out_times[stop] < t_star - 4 * xtol:
                stop += 1
            if stop > k:
                X[k:stop], P[k:stop] = exact(out_times[k:stop] - t), p
                k = stop
            if k < m and abs(out_times[k] - t_star) <= 4 * xtol:
                t_star = float(out_times[k])   # an output time within the location tolerance is the event time
            x_star = exact([t_star - t])[0]
            pinned = [False] * len(self.atoms)
            for j, r in roots.items():
                if r <= t_star + 4 * xtol:
                    pinned[j] = True
                    memory.sides[j] = 1.0 if gb[j] > 0 else -1.0
            x, p = self.fire(memory, t_star, np.array(x_star, dtype=float), p, pinned, crossing)
            t = t_star
            while k < m and out_times[k] <= t:
                X[k], P[k] = x, p
                k += 1

    # ---------------------------------------------------------- sensitivities
    def _sensitivity_parts(self):
        """Derivatives of the atoms' root functions g and of the events' assignments h with
        respect to (t, x, p), as generated functions (built on the first sensitivity run)."""
        if self._sensitivity is None:
            from ..codegen.lambdify import step_safe_jacobian
            variables = [TIME, *self._args[0], *self._args[1]]
            grad = step_safe_jacobian(sp.Matrix(self._gs), variables) if self._gs else sp.zeros(0, len(variables))
            self._sensitivity = {"atoms": lambdify([TIME, *self._args], list(grad)), "maps": {}, "variables": variables}
        return self._sensitivity

    def _map_jacobian(self, i):
        """d h_i / d(t, x, p) of event i's assignments: a generated function, built once."""
        parts = self._sensitivity_parts()
        fn = parts["maps"].get(i)
        if fn is None:
            from ..codegen.lambdify import step_safe_jacobian
            exprs = sp.Matrix([sp.sympify(v) for v in self.events[i].assign.values()])
            fn = parts["maps"][i] = lambdify([TIME, *self._args], list(step_safe_jacobian(exprs, parts["variables"])))
        return fn

    def rhs(self, t, x, p, u):
        """dx/dt at (t, x, p) with the constant inflow u (None: no inflow), an array."""
        return np.asarray(self._f(t, _floats(x), _floats(p), [0.0] * self.n if u is None else _floats(u)), dtype=float)

    def crossing_derivative(self, j, t, x, S, p, D, u):
        """Derivative of the event time tau along the K directions where atom j's root
        function g crosses 0 at t: from g(tau(theta), x(tau(theta); theta), p(theta)) = 0,

            dtau/dtheta = -(g_x S + g_p D) / (g_x f + g_t),

        with S = dx/dtheta (n, K) and f = dx/dt just before the event, D = dp/dtheta (P, K).
        Returns (dtau (K,), f (n,))."""
        n, P = self.n, len(p)
        grad = np.asarray(self._sensitivity_parts()["atoms"](t, _floats(x), _floats(p)), dtype=float)
        grad = grad.reshape(len(self.atoms), 1 + n + P)[j]
        g_t, g_x, g_p = grad[0], grad[1:1 + n], grad[1 + n:]
        f = self.rhs(t, x, p, u)
        speed = float(g_x @ f + g_t)
        if not (speed != 0 and math.isfinite(speed)):
            names = [e.name for e in self.events if self.atoms[j] in e.trigger.atoms(sp.core.relational.Relational)]
            raise SolverError(f"the trigger '{self.atoms[j]}' (event {', '.join(names)}) reaches its threshold at "
                              f"t={t:g} without crossing it (its rate of change there is {speed:g}), so the event "
                              "time has no derivative with respect to the parameters; simulate without "
                              "sensitivities, or change the parameter values or the trigger")
        return -(g_x @ S + g_p @ D) / speed, f

    def assign_with_sensitivities(self, i, t, x, p, Xt, Pt, dtau):
        """Event i's assignments at t and the total derivatives of the values along the K
        directions: a target v set to h(t, x, p) gets dv = h_x Xt + h_p Pt + h_t dtau, where
        Xt, Pt (n, K), (P, K) are the total derivatives of x and p at the event (including
        the motion of the event time, see :meth:`jump`) and dtau the event time's (K,) or
        None at a fixed time. Returns new (x, p, Xt, Pt)."""
        targets = self._assign[i][0]
        new = self._assignment_values(i, t, x, p)
        n, P = self.n, len(p)
        H = np.asarray(self._map_jacobian(i)(t, _floats(x), _floats(p)), dtype=float).reshape(len(targets), 1 + n + P)
        rows = H[:, 1:1 + n] @ Xt + H[:, 1 + n:] @ Pt
        if dtau is not None:
            rows = rows + np.outer(H[:, 0], dtau)
        x, p, Xt, Pt = x.copy(), p.copy(), Xt.copy(), Pt.copy()
        for r, ((kind, k), v) in enumerate(zip(targets, new)):
            if kind == "x":
                x[k], Xt[k] = float(v), rows[r]
            else:
                p[k], Pt[k] = float(v), rows[r]
        return x, p, Xt, Pt
