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
from scipy.linalg.lapack import dgeev as _dgeev
from scipy.linalg.lapack import dgesv as _dgesv

from ..codegen.lambdify import lambdify as _lambdify
from ..simulation.compiled import CompiledModel, compile_model
from ..errors import ModelError, SolverError
from ..model.expressions import TIME
from ..numerics.linear import solve_affine
from ..model.core import Model, load_model

__all__ = ["steady_state", "SteadyState", "compare_scenarios", "steady_plan", "SteadyPlan"]

#: Below this ratio of the smallest to the largest LU pivot the bounded subsystem's matrix counts as singular.
SINGULAR_RCOND = 1e-13
#: Largest nonlinear block (number of states) handed to ``sympy.solve``, and its Bezout bound.
MAX_SYMBOLIC_BLOCK = 3
MAX_SYMBOLIC_DEGREE = 2
#: Longer symbolic expressions are not reported (the values still come from them).
MAX_EXPRESSION_LENGTH = 600
MAX_CANDIDATES = 16
#: Larger linear blocks get no symbolic expression (the numeric solution is unaffected).
MAX_LINEAR_BLOCK = 8

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


def _names(items):
    items = list(items)
    if len(items) <= 1:
        return "".join(f"'{i}'" for i in items)
    return ", ".join(f"'{i}'" for i in items[:-1]) + f" and '{items[-1]}'"


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, complex):
        return f"{value.real:.4g}{value.imag:+.4g}i"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.6g}"


def _tarjan(n, edges):
    """Strongly connected components of a directed graph (i -> j in edges[i]), each emitted
    after every component reachable from it (dependencies first)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    for v in range(n):
        if v not in index:
            visit(v)
    return out


def _eigvals(M) -> np.ndarray:
    if M.shape[0] == 0:
        return np.zeros(0)
    wr, wi, _, _, info = _dgeev(np.asfortranarray(M), compute_vl=0, compute_vr=0)
    if info != 0:
        return np.linalg.eigvals(M)
    return wr + 1j * wi if wi.any() else wr


def _find_root(f, a, b, xtol=0.0, maxiter=200):
    """A root of the continuous function f in [a, b] where f(a), f(b) differ in sign:
    regula falsi with the Illinois modification (superlinear), to ``xtol`` or rounding.
    (Own code so that steady states do not need scipy.optimize, slow to import.)"""
    fa, fb = f(a), f(b)
    if fa == 0:
        return a
    if fb == 0:
        return b
    if (fa > 0) == (fb > 0):
        raise ValueError("f(a) and f(b) must differ in sign")
    side = 0
    c_old = a
    for _ in range(maxiter):
        c = (a * fb - b * fa) / (fb - fa)
        if not (min(a, b) <= c <= max(a, b)) or not math.isfinite(c):
            c = 0.5 * (a + b)
        fc = f(c)
        if fc == 0 or abs(c - c_old) <= max(xtol, 4 * np.finfo(float).eps * abs(c)):
            return c
        c_old = c
        if (fc > 0) == (fb > 0):
            b, fb = c, fc
            if side == -1:
                fa *= 0.5
            side = -1
        else:
            a, fa = c, fc
            if side == 1:
                fb *= 0.5
            side = 1
    return c


def _simplify(expr):
    try:
        return sp.factor(expr)
    except (sp.PolynomialError, NotImplementedError, ValueError, TypeError):
        return expr


# ------------------------------------------------------------------------------------ plan
#: Public names of the helpers above (used by :mod:`kinetics.analysis.pk`).
eigenvalues = _eigvals
find_root = _find_root


class SteadyPlan:
    """What a model's steady state needs that does not depend on parameter values: the split
    into sinks and the bounded subsystem, generated code for A and b (affine models) or for
    the right-hand side and Jacobian (nonlinear ones), symbolic solutions. Built once per
    compiled model (:func:`steady_plan`).

    Fast path (affine models): ``x, r = plan.solve(p)`` gives the bounded compartments'
    steady values and the sinks' inflow rates at the model parameter vector ``p``.
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

    # ------------------------------------------------------------- affine fast path
    def _build_affine(self):
        """One generated function of p returning, flat: A_BB (dense, column-major), -b_B,
        A_SB (dense, row-major), b_S, then the off-diagonal entries and the column sums of
        A_BB (simplified symbolically) for the stability test."""
        nb, ns = len(self.B), len(self.S)
        zero = {s: 0 for s in self._x}
        AB, ASB = self._JBB, self._JSB
        bB = [e.xreplace(zero) for e in self._fB]
        bS = [e.xreplace(zero) for e in self._fS]
        offdiag = [AB[i, j] for j in range(nb) for i in range(nb) if i != j and AB[i, j] != 0]
        colsums = [sp.expand(sum(AB[i, j] for i in range(nb))) for j in range(nb)]
        exprs = ([AB[i, j] for j in range(nb) for i in range(nb)] + [-e for e in bB]
                 + [ASB[i, j] for i in range(ns) for j in range(nb)] + bS + offdiag + colsums)
        self._fast = _lambdify([self._p], exprs)
        k1 = nb * nb
        k2 = k1 + nb
        k3 = k2 + ns * nb
        k4 = k3 + ns
        k5 = k4 + len(offdiag)
        self._cut = (k1, k2, k3, k4, k5)

    def matrices(self, p):
        """(A_BB, b_B, A_SB, b_S) of the bounded subsystem and the sinks at parameters ``p``."""
        nb, ns = len(self.B), len(self.S)
        v = np.array(self._fast(list(map(float, p))), dtype=float)
        k1, k2, k3, k4, _ = self._cut
        return (v[:k1].reshape((nb, nb), order="F").copy(), -v[k1:k2], v[k2:k3].reshape((ns, nb)).copy(),
                v[k3:k4].copy())

    def solve(self, p, *, check=True):
        """Exact steady state of an affine model at the parameter vector ``p``: returns
        ``(x_bounded, sink_rates)`` as arrays ordered like :attr:`bounded_names` and
        :attr:`sink_names`. Raises :class:`SolverError` when A is singular; with ``check``,
        also when the steady state is unstable. (The per-call work of the fast path.)"""
        x, r, stable = self._solve_linear(p)
        if check and stable is None:
            ev = _eigvals(self.matrices(p)[0])
            if _unstable(ev):
                self._raise_unstable(p, x, ev)
        return x, r

    def _solve_linear(self, p):
        """(x_B, r_S, stable): stable is True when the compartmental-matrix test proves it
        (off-diagonal entries >= 0, column sums <= 0, nonsingular) and None when eigenvalues
        are needed to tell. Kept to a handful of numpy calls: at this size their fixed cost,
        not the arithmetic, is the time."""
        vals = self._fast(p.tolist() if isinstance(p, np.ndarray) else list(map(float, p)))
        k1, k2, k3, k4, k5 = self._cut
        nb = k2 - k1
        if not math.isfinite(sum(vals[:k4])):
            self._raise_not_finite(p)
        stable = True
        if nb:
            v = np.array(vals[:k2])
            A = v[:k1].reshape((nb, nb), order="F")
            lu, _, x, info = _dgesv(A, v[k1:])
            d = [abs(e) for e in lu.diagonal().tolist()]
            if info != 0 or not min(d) > SINGULAR_RCOND * max(d):
                self._raise_singular(A.copy(), -v[k1:], p)
            off, sums = vals[k4:k5], vals[k5:]
            if not ((not off or min(off) >= 0) and max(sums) <= 0):
                stable = None
        else:
            x = np.zeros(0)
        ns = k4 - k3
        if not ns:
            return x, np.zeros(0), stable
        if ns * nb <= 64:
            xl = x.tolist()
            r = [vals[k3 + i] + sum(a * b for a, b in zip(vals[k2 + i * nb:k2 + (i + 1) * nb], xl)) for i in range(ns)]
            return x, np.array(r), stable
        return x, np.array(vals[k2:k3]).reshape((ns, nb)) @ x + np.array(vals[k3:k4]), stable

    # --------------------------------------------------------- generated callables
    @cached_property
    def _num(self):
        """Lambdified f_B, J_BB, f_S, J_SB, flow rates and df/dp (args: x_B list, p list)."""
        xB, p = self._xB, self._p
        P = len(p)
        f_all = sp.Matrix(self._fB + self._fS)
        Fp = f_all.jacobian(p) if P and len(f_all) else sp.zeros(len(f_all), P)
        return {
            "fB": _lambdify([xB, p], self._fB),
            "JBB": _lambdify([xB, p], list(self._JBB)),
            "fS": _lambdify([xB, p], self._fS),
            "JSB": _lambdify([xB, p], list(self._JSB)),
            "rates": _lambdify([xB, p], self.rate_exprs),
            "Fp": _lambdify([xB, p], list(Fp)),
        }

    def f_bounded(self, xB, p) -> np.ndarray:
        return np.asarray(self._num["fB"](list(map(float, xB)), list(map(float, p))), dtype=float).reshape(-1)

    def jacobian_bounded(self, xB, p) -> np.ndarray:
        nb = len(self.B)
        if not nb:
            return np.zeros((0, 0))
        return np.asarray(self._num["JBB"](list(map(float, xB)), list(map(float, p))), dtype=float).reshape(nb, nb)

    def sink_rates(self, xB, p) -> np.ndarray:
        return np.asarray(self._num["fS"](list(map(float, xB)), list(map(float, p))), dtype=float).reshape(-1)

    def rates(self, xB, p) -> np.ndarray:
        return np.asarray(self._num["rates"](list(map(float, xB)), list(map(float, p))), dtype=float).reshape(-1)

    def _flow_scale(self, xB, p) -> np.ndarray:
        """Per bounded compartment: the sum of |rates| of the flows entering or leaving it."""
        if not len(self.flow_names):
            return np.zeros(len(self.B))
        with np.errstate(invalid="ignore", over="ignore"):
            return self._incidence @ np.abs(self.rates(xB, p))

    def _eigen_at(self, xB, p) -> np.ndarray:
        return _eigvals(self.jacobian_bounded(xB, p))

    # ---------------------------------------------------------------- symbolic
    @cached_property
    def _blocks(self):
        nb = len(self.B)
        J = self._JBB
        edges = [[j for j in range(nb) if j != i and J[i, j] != 0] for i in range(nb)]
        return _tarjan(nb, edges)

    @cached_property
    def symbolic_candidates(self):
        """Candidate symbolic steady states: a list of lists of expressions (bounded states, in
        order) of the parameters, or None when sympy cannot (or should not try to) solve."""
        if self.time_dependent:
            return None
        xB = self._xB
        partial = [dict()]
        try:
            for block in self._blocks:
                u = [xB[i] for i in block]
                eqs = [self._fB[i] for i in block]
                solutions = self._solve_block(eqs, u)
                if not solutions:
                    return None
                merged = []
                for known in partial:
                    for sol in solutions:
                        new = dict(known)
                        for s in u:
                            new[s] = sol[s].xreplace(known)
                        merged.append(new)
                if len(merged) > MAX_CANDIDATES:
                    return None
                partial = merged
        except (NotImplementedError, ValueError, TypeError, ZeroDivisionError, sp.PolynomialError,
                sp.polys.polyerrors.PolificationFailed, RecursionError):
            return None
        return [[cand[s] for s in xB] for cand in partial]

    @staticmethod
    def _solve_block(eqs, u):
        M = sp.Matrix(eqs).jacobian(u)
        uset = set(u)
        if all(not (e.free_symbols & uset) for e in M) and not any(e.has(TIME) for e in eqs):
            if len(u) > MAX_LINEAR_BLOCK:
                return None
            rhs = sp.Matrix(eqs).xreplace({s: 0 for s in u})
            if M.det() == 0:
                return None
            sol = M.LUsolve(-rhs)
            return [{s: _simplify(e) for s, e in zip(u, sol)}]
        if len(u) > MAX_SYMBOLIC_BLOCK:
            return None
        bezout = 1
        for e in eqs:
            num, _ = sp.fraction(sp.together(e))
            poly = sp.Poly(sp.expand(num), *u)  # raises PolynomialError when not polynomial
            if any(not c.is_finite and c.is_finite is not None for c in poly.coeffs()):
                return None
            bezout *= max(poly.total_degree(), 1)
        if bezout > MAX_SYMBOLIC_DEGREE:
            return None
        sols = sp.solve(eqs, u, dict=True, check=False, simplify=False)
        out = []
        for sol in sols:
            if not all(s in sol for s in u):
                return None  # a family of solutions
            out.append({s: sol[s] for s in u})
        return out

    @cached_property
    def _candidate_fns(self):
        cands = self.symbolic_candidates
        if not cands:
            return []
        # evaluated with cmath: roots written with I (casus irreducibilis) can still be real
        return [_lambdify([self._p], list(exprs), complex_math=True) for exprs in cands]

    @cached_property
    def _candidate_strings(self):
        """For each candidate: {compartment: expression string} including sinks' inflow rates."""
        out = []
        for exprs in self.symbolic_candidates or []:
            out.append(self._expression_strings(exprs))
        return out

    def _expression_strings(self, exprs):
        sub = dict(zip(self._xB, exprs))
        strings = {}
        items = list(zip(self.bounded_names, exprs)) + [(n, e.xreplace(sub)) for n, e in zip(self.sink_names, self._fS)]
        for name, e in items:
            e = _simplify(e)
            text = str(e)
            if not e.has(sp.I) and len(text) <= MAX_EXPRESSION_LENGTH:
                strings[name] = text
        return strings

    @cached_property
    def linear_expressions(self) -> dict:
        """Symbolic steady values and sink rates of an affine model (cached)."""
        cands = self.symbolic_candidates
        if not cands or len(cands) != 1:
            return {}
        return self._candidate_strings[0]

    def _symbolic_admissible(self, p):
        """Indices and values of symbolic candidates that are real, finite, non-negative,
        roots to rounding and not unstable at ``p``."""
        out = []
        self._last_complete = True
        pl = list(map(float, p))
        for k, fn in enumerate(self._candidate_fns):
            try:
                with np.errstate(all="ignore"):
                    vals = fn(pl)
                z = np.array([complex(v) for v in vals])
            except (ValueError, ZeroDivisionError, TypeError, OverflowError):
                self._last_complete = False
                continue
            if not np.isfinite(z).all() or (np.abs(z.imag) > 1e-9 * (1 + np.abs(z.real))).any():
                continue
            x = z.real.astype(float)
            scale = max(1.0, float(np.abs(x).max(initial=0.0)))
            if (x < -1e-9 * scale).any():
                continue
            x = np.where(x < 0, 0.0, x)
            x = self._polish(x, p)
            if x is None:
                continue
            ev = self._eigen_at(x, p)
            if _unstable(ev):
                continue
            out.append((k, x, ev))
        return out

    def _residual_ok(self, x, p, F=None):
        if F is None:
            F = self.f_bounded(x, p)
        if not np.isfinite(F).all():
            return False
        scale = self._flow_scale(x, p)
        return bool((np.abs(F) <= 1e-9 * scale + 1e-300).all())

    def _polish(self, x, p):
        """A root to rounding: Newton steps from x when its residual is not already tiny."""
        F = self.f_bounded(x, p)
        if np.isfinite(F).all() and (np.abs(F) <= 1e-12 * self._flow_scale(x, p) + 1e-300).all():
            return x
        return self._newton(x, p)

    # ------------------------------------------------------------------ Newton
    def _newton(self, x, p, maxiter=100):
        """Damped Newton on the bounded subsystem from x; the root or None."""
        x = np.array(x, dtype=float)
        with np.errstate(all="ignore"):
            F = self.f_bounded(x, p)
        if not np.isfinite(F).all():
            return None
        floor = 1e-13 * float(np.max(np.abs(x), initial=0.0))
        for _ in range(maxiter):
            if not np.any(F):
                return x
            Jm = self.jacobian_bounded(x, p)
            try:
                with np.errstate(all="ignore"):
                    dx = np.linalg.solve(Jm, -F)
            except np.linalg.LinAlgError:
                return None
            if not np.isfinite(dx).all():
                return None
            norm0 = float(np.linalg.norm(F))
            lam = 1.0
            while True:
                xn = x + lam * dx
                with np.errstate(all="ignore"):
                    Fn = self.f_bounded(xn, p)
                if np.isfinite(Fn).all() and np.linalg.norm(Fn) <= (1 - 1e-4 * lam) * norm0:
                    break
                lam *= 0.5
                if lam < 1e-10:
                    # no decrease possible: at the root to rounding, or stuck
                    return x if self._residual_ok(x, p, F) else None
            x, F = xn, Fn
            step = float(np.max(np.abs(lam * dx), initial=0.0))
            if step <= 1e-13 * float(np.max(np.abs(x), initial=0.0)) + floor:
                return x if self._residual_ok(x, p, F) else None
        return x if self._residual_ok(x, p, F) else None

    def _horizon(self, xB, p):
        """1 / (slowest nonzero decay rate) of the linearisation at xB, or None."""
        try:
            ev = self._eigen_at(xB, p)
        except (ValueError, ZeroDivisionError, OverflowError):
            return None
        if not len(ev) or not np.isfinite(ev).all():
            return None
        re = -np.real(ev)
        big = float(np.abs(ev).max(initial=0.0))
        good = re[re > 1e-10 * max(big, 1e-300)]
        return 1.0 / float(good.min()) if len(good) else None

    def newton_from_simulation(self, p, x0):
        """Simulate from x0 to growing horizons, then Newton from the end state; returns the
        bounded steady state. Raises :class:`SolverError` when none is reached."""
        c = self.compiled
        B = self.B
        x = np.array(x0, dtype=float)
        tau = self._horizon(x[B], p) or 1.0
        t = 0.0
        history = [(0.0, x[B].copy())]
        rounds = 6
        for k in range(rounds):
            t_end = t + 10.0 * tau * 10.0 ** k if k else 10.0 * tau
            try:
                X, _ = c.solve(p, x, np.array([t_end]), t0=t)
            except SolverError as exc:
                raise SolverError(self._divergence_message(p, history, detail=str(exc))) from None
            x, t = X[-1], t_end
            history.append((t, x[B].copy()))
            root = self._newton(x[B], p)
            if root is not None:
                scale = max(1.0, float(np.abs(root).max(initial=0.0)))
                if (root >= -1e-9 * scale).all() and not _unstable(self._eigen_at(root, p)):
                    return np.where(root < 0, 0.0, root)
            if k == 0:
                tau = self._horizon(x[B], p) or tau
        raise SolverError(self._divergence_message(p, history))

    # ----------------------------------------------------------------- messages
    def _params_text(self, p):
        return ", ".join(f"{n}={v:.6g}" for n, v in zip(self.parameter_names, p))

    def _divergence_message(self, p, history, detail=None):
        t1, x1 = history[-1]
        t0, x0 = history[-2] if len(history) >= 3 else history[0]
        with np.errstate(all="ignore"):
            growth = np.abs(x1 - x0) / np.maximum(np.abs(x0), 1e-300)
        picked = [i for i in range(len(growth)) if growth[i] > 1e-3]
        if not picked and len(growth):
            picked = [int(np.argmax(growth))]
        culprits = [self.bounded_names[i] for i in sorted(picked)]
        if detail:
            observed = f" The simulation from the initial state failed ({detail})."
        elif culprits and t1 > t0:
            i = self.bounded_names.index(culprits[0])
            rate = (x1[i] - x0[i]) / (t1 - t0)
            observed = (f" Simulated from the initial state, {culprits[0]} reaches {x1[i]:.4g} at t={t1:.4g} {self.time_unit} "
                        f"and still grows by about {rate:.4g} per {self.time_unit}.")
        else:
            observed = ""
        one = len(culprits) == 1
        return (f"model '{self.name}' has no steady state at these parameter values: {_names(culprits)} "
                f"{'grows' if one else 'grow'} without bound, so no stable steady state is reached.{observed} "
                f"The inflow into {'it' if one else 'them'} exceeds what the flows out can remove; raise the capacity of "
                f"those outflows (a rate constant, or the Vmax of a saturable flow) or lower the inflow. "
                f"Parameter values: {self._params_text(p)}.")

    def _raise_not_finite(self, p):
        if not np.isfinite(np.asarray(p, dtype=float)).all():
            _raise_not_finite(self.compiled, np.asarray(p, dtype=float))
        raise SolverError(f"model '{self.name}': the steady-state equations are not finite at these parameter values "
                          f"(a rate divides by zero or overflows); check the values: {self._params_text(p)}")

    def _raise_singular(self, A, b, p):
        """A x = -b has no unique solution: no steady state, or a family of them."""
        nb = len(self.B)
        if not (np.isfinite(A).all() and np.isfinite(b).all()):
            self._raise_not_finite(p)
        U, s, Vt = np.linalg.svd(A)
        tol = max(s.max(initial=0.0), 1e-300) * 1e-10
        zero = s <= tol
        if not zero.any():
            zero[-1] = True
        left, right = U[:, zero], Vt[zero].T

        def support(M):
            w = np.abs(M).max(axis=1)
            return {i for i in range(nb) if w[i] > 1e-8 * max(w.max(), 1e-300)}

        trap = support(left) & support(right) or support(right)
        members = [self.bounded_names[i] for i in sorted(trap)]
        one = len(members) == 1
        grows = np.linalg.norm(left.T @ b) > 1e-9 * (np.abs(left).T @ np.abs(b)).max(initial=0.0) and np.abs(b).max(initial=0.0) > 0
        if grows:
            why = ""
            lonely = [m for m in members if not any(r.net.get(m, 0) < 0 for r in self.flows.values())]
            if lonely:
                users = sorted({k for k, e in zip(self.flow_names, self.rate_exprs)
                                for m in lonely if self._x[self.state_names.index(m)] in e.free_symbols})
                if users:
                    why = (f" {_names(lonely)} {'is' if len(lonely) == 1 else 'are'} not a sink because "
                           f"{'flow' if len(users) == 1 else 'flows'} {_names(users)} depend{'s' if len(users) == 1 else ''} on "
                           f"{'it' if len(lonely) == 1 else 'them'}.")
            raise SolverError(
                f"model '{self.name}' has no steady state: {_names(members)} {'accumulates' if one else 'accumulate'} "
                f"without bound (material keeps entering and nothing removes it at a rate that depends on "
                f"{'its' if one else 'their'} amount).{why} Add an outflow from {_names(members)} "
                f"(or check for a rate constant set to 0). Parameter values: {self._params_text(p)}.")
        raise SolverError(
            f"model '{self.name}' has no unique steady state: {_names(members)} exchange material without losing any, "
            f"so their total is conserved and the level they settle to depends on the initial amounts. "
            f"Add an outflow from {_names(members)} (or check for a rate constant set to 0). "
            f"Parameter values: {self._params_text(p)}.")

    def _raise_unstable(self, p, xB, ev):
        J = self.jacobian_bounded(xB, p)
        w, V = np.linalg.eig(J)
        k = int(np.argmax(w.real))
        v = np.abs(V[:, k])
        members = [self.bounded_names[i] for i in range(len(v)) if v[i] > 0.1 * v.max()]
        self_feeding = []
        for name in members:
            s = self._x[self.state_names.index(name)]
            for fname, e in zip(self.flow_names, self.rate_exprs):
                if self.flows[fname].net.get(name, 0) > 0 and s in e.free_symbols:
                    self_feeding.append(fname)
        lam = w[k]
        lam_text = f"{lam.real:+.4g}" if abs(lam.imag) < 1e-12 else f"{lam.real:+.4g}{lam.imag:+.4g}i"
        hint = (f" Flow{'s' if len(self_feeding) > 1 else ''} {_names(self_feeding)} feed{'s' if len(self_feeding) == 1 else ''} "
                f"a compartment in proportion to its own amount (autocatalytic growth) faster than it is removed."
                if self_feeding else "")
        raise SolverError(
            f"model '{self.name}': the steady state is unstable: the Jacobian of the bounded subsystem has an eigenvalue "
            f"with positive real part ({lam_text} per {self.time_unit}), so a small deviation in {_names(members)} grows "
            f"exponentially instead of settling.{hint} Make the outflows of {_names(members)} faster than their self-feeding "
            f"(lower the growth rate or raise a removal rate). Parameter values: {self._params_text(p)}.")


def _unstable(ev) -> bool:
    if not len(ev):
        return False
    scale = max(float(np.abs(ev).max()), 1e-300)
    return bool(np.real(ev).max() > 1e-10 * scale)


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
            ev = self._eigenvalues = _eigvals(self.jacobian)
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
    v = float(v)
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
            out[name] = float(_find_root(g, t_lo, t_hi, xtol=1e-14 * t_hi))
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
        _raise_not_finite(compiled, p)
    return p


def _raise_not_finite(compiled, p):
    bad = [n for n, v in zip(compiled.parameter_names, p) if not math.isfinite(v)]
    raise ModelError(f"model '{compiled.name}': parameter values must be finite numbers; got {', '.join(f'{n}={p[compiled.parameter_names.index(n)]}' for n in bad)}")


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
                         f"{'flow' if len(plan.time_flows) == 1 else 'flows'} {_names(plan.time_flows)} depends on the time t. "
                         "Replace the time dependence by a constant (or a parameter) to ask for a steady state.")
    if fast:
        x, r, stable = plan._solve_linear(p)
        ev = None
        if stable is None:
            ev = _eigvals(plan.matrices(p)[0])
            if _unstable(ev) and not allow_unstable:
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
    if _unstable(ev) and not allow_unstable:
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
