"""Compilation: a validated :class:`~kinetics.model.Model` becomes fast numerical callables.

Owns the symbolic-to-numeric step (done once per model and cached on the model):

* dx/dt = N v(x, p, t) assembled from the flows (in :mod:`kinetics.model`), then classified:
  **affine-linear** (dx/dt = A(p) x + b(p), no explicit time) or general.
* Affine systems: A, b and their parameter derivatives as generated code; solved exactly by
  :mod:`kinetics.numerics.linear`.
* General systems: the right-hand side and its analytic Jacobian (common subexpressions
  eliminated) for a stiff solver: the compiled Rosenbrock integrator of
  :mod:`kinetics.numerics.rosenbrock` when numba is installed, otherwise scipy's LSODA.
* Forward sensitivities along K parameter directions D (dp/dtheta, P x K) on both paths:
  s' = J s + (df/dp) D, s(0) = (dx0/dp) D.

Simulation with doses, infusions and events (:mod:`kinetics.simulate`) calls
:meth:`CompiledModel.solve` once per constant-input segment.
"""

from __future__ import annotations

import math

import numpy as np
import sympy as sp

from ..codegen.lambdify import lambdify as _lambdify
from ..codegen.lambdify import step_safe_jacobian as _jacobian
from ..errors import ModelError, SolverError
from ..model.expressions import TIME, shorten
from ..numerics.linear import solve_affine

__all__ = ["CompiledModel", "DEFAULT_RTOL", "DEFAULT_ATOL", "NonFiniteError", "first_nonfinite"]

#: Default relative and absolute tolerances of the numerical path (tight enough for fitting).
DEFAULT_RTOL = 1e-8
DEFAULT_ATOL = 1e-10


class NonFiniteError(SolverError):
    """A simulated value is infinite or NaN (a quantity outgrew the floating-point range).

    ``series`` names the first such state (or observable), ``time`` is the first output
    time where it is not finite (None if unknown) and ``value`` its value there."""

    def __init__(self, message, series=None, time=None, value=None):
        super().__init__(message)
        self.series, self.time, self.value = series, time, value


def first_nonfinite(values) -> tuple[int, int] | None:
    """(row, column) of the first non-finite entry of ``values`` (m, k, ...) in row (time)
    order, or None when every entry is finite. Trailing axes (sensitivity directions) are
    folded into the column."""
    values = np.asarray(values)
    if values.size == 0 or np.isfinite(values).all():
        return None
    bad = ~np.isfinite(values.reshape(len(values), -1))
    row = int(np.argmax(bad.any(axis=1)))
    per_column = bad.shape[1] // values.shape[1] if values.ndim > 1 and values.shape[1] else 1
    return row, int(np.argmax(bad[row])) // per_column

    def _print_Float(self, expr):  # every bit of the double (sympy prints 15 digits)
        return repr(float(expr))

    def _print_factorial(self, expr):  # of a real number, as SBML defines it
        return f"math.gamma({self._print(expr.args[0])} + 1)"


def nonfinite_value(entry) -> float:
    """The first non-finite number in ``entry`` (a number or an array of them)."""
    flat = np.ravel(entry)
    return float(flat[~np.isfinite(flat)][0])


def lambdify(args, exprs):
    """Scalar generated code for a list of sympy expressions (common subexpressions shared):
    the one conversion other modules use for their own expressions."""
    return _lambdify(args, exprs)


class _SparseArray:
    """A numeric array whose nonzero entries are expressions of scalar arguments. ``label``
    says what it is in the message if an entry cannot be evaluated (exp of a huge argument,
    a division by zero)."""

    def __init__(self, args, array=None, *, shape=None, entries=None, label="an expression of the parameters"):
        self.label = label
        if array is not None:
            shape = array.shape
            flat = array.reshape(-1)
            entries = {i: e for i, e in enumerate(flat) if e != 0}
        self.shape = tuple(shape)
        self.size = int(np.prod(self.shape))
        self.index = np.array(sorted(entries), dtype=np.intp)
        exprs = [entries[i] for i in self.index]
        self.const = all(not sp.sympify(e).free_symbols for e in exprs)
        self._fn = _lambdify(args, exprs)
        self._cached = None

    def __call__(self, *args) -> np.ndarray:
        if self.const and self._cached is not None:
            return self._cached.copy()
        out = np.zeros(self.size)
        if len(self.index):
            try:
                out[self.index] = self._fn(*args)
            except (ArithmeticError, ValueError) as exc:   # math.exp overflow, x / 0, log(-1)
                raise SolverError(f"{self.label} cannot be evaluated at these parameter values ({exc})") from None
        out = out.reshape(self.shape)
        if self.const:
            self._cached = out.copy()
        return out


class _VectorArray:
    """Expressions of (t, states, parameters) evaluated for m time points at once: (m, *shape)."""

    def __init__(self, args, array: np.ndarray):
        self.shape = array.shape
        flat = array.reshape(-1)
        self.index = [i for i, e in enumerate(flat) if e != 0]
        self.size = flat.size
        #: the nonzero entries' expressions, in ``index`` order
        self.exprs = [flat[i] for i in self.index]
        self._fn = _lambdify(args, self.exprs, vector=True)

    def __call__(self, m, *args) -> np.ndarray:
        out = np.zeros((m, self.size))
        if self.index:
            for i, value in zip(self.index, self._fn(*args)):
                out[:, i] = value
        return out.reshape((m, *self.shape))


class _ObservableTapes:
    """The observables h(t, x, p) and their nonzero derivatives in x and p (the expressions of
    the model's ``_VectorArray``s) as compiled tapes with inputs [t, x, p], evaluated at all m
    output times in one call: the numpy code of ``_VectorArray`` costs a call per operation
    per expression (about 0.1 ms per evaluation with derivatives for Boehm_JProteomeRes2014's
    three observables, a tenth of that here). The same expressions, so the same values up to
    rounding (the tape's own common subexpressions and operation order)."""

    def __init__(self, x, p, obs, dobs_dx, dobs_dp):
        from ..codegen.tape import Tape, eval_tape_many
        from ..numerics.compile_notice import announce_compilation
        announce_compilation(eval_tape_many, "the stiff-integrator")     # its tape interpreter, many rows
        inputs = [TIME, *x, *p]
        self.n, self.o, self.P = len(x), len(obs), len(p)
        self.dx_index = np.array(dobs_dx.index, dtype=np.intp)
        self.dp_index = np.array(dobs_dp.index if dobs_dp is not None else [], dtype=np.intp)
        self.values = Tape.from_exprs(list(obs), inputs)
        self.with_derivatives = Tape.from_exprs(
            [*obs, *dobs_dx.exprs, *(dobs_dp.exprs if dobs_dp is not None else [])], inputs)

    def __call__(self, times, X, p, derivatives):
        """(Y (m, o), dY/dx (m, o, n), dY/dp (m, o, P)); the derivatives None unless asked."""
        from ..codegen.tape import eval_tape_many
        m, n, o = len(times), self.n, self.o
        inputs = np.empty((m, 1 + n + self.P))
        inputs[:, 0] = times
        inputs[:, 1:1 + n] = X
        inputs[:, 1 + n:] = p
        tape = self.with_derivatives if derivatives else self.values
        out = np.empty((m, tape.n_outputs))
        eval_tape_many(tape.prog, tape.consts, inputs, out)
        if not derivatives:
            return out, None, None
        kx = len(self.dx_index)
        dx = np.zeros((m, o * n))
        dx[:, self.dx_index] = out[:, o:o + kx]
        dp = None
        if len(self.dp_index):
            dp = np.zeros((m, o * self.P))
            dp[:, self.dp_index] = out[:, o + kx:]
            dp = dp.reshape(m, o, self.P)
        return np.ascontiguousarray(out[:, :o]), dx.reshape(m, o, n), dp


class _AffineSeries:
    """The measurable series (states, then observables) where every observable is affine in
    the states with no explicit time, h = C(p) x + e(p) (the usual case): their coefficients
    as numbers at p, so that fitting reads data points straight from the states."""

    @classmethod
    def build(cls, args, obs, x, p):
        xs = set(x)
        if TIME in obs.free_symbols:
            return None
        C = obs.jacobian(x) if len(obs) else sp.zeros(0, len(x))
        if any(e.free_symbols & xs for e in C):
            return None
        e = sp.Matrix([sp.expand(h - sum((C[i, j] * x[j] for j in range(len(x))), sp.S.Zero)) for i, h in enumerate(obs)])
        if any(v.free_symbols & xs for v in e):
            return None
        return cls(args, C, e, p)

    def __init__(self, args, C, e, p):
        n, o, P = C.shape[1], C.shape[0], len(p)
        self.n, self.size = n, n + o
        full_C = sp.Matrix.vstack(sp.eye(n), C) if o else sp.eye(n)
        full_e = list(sp.zeros(n, 1)) + list(e)
        self._C = _SparseArray(args, np.array(full_C, dtype=object).reshape(n + o, n))
        self._e = _SparseArray(args, np.array(full_e, dtype=object))
        #: True when no coefficient depends on a parameter
        self.constant = self._C.const and self._e.const
        if self.constant or not P:
            self._dC = self._de = None
        else:
            self._dC = _SparseArray(args, np.array([full_C.diff(q) for q in p], dtype=object).reshape(P, n + o, n))
            self._de = _SparseArray(args, np.array([[v.diff(q) for v in full_e] for q in p], dtype=object).reshape(P, n + o))

    def coefficients(self, pl):
        """(C (s, n), e (s,)) of all s series at parameter list ``pl``."""
        return self._C(pl), self._e(pl)

    def derivatives(self, pl):
        """(dC (P, s, n), de (P, s)); empty (0, s, n), (0, s) when nothing depends on p."""
        if self._dC is None:
            return np.zeros((0, self.size, self.n)), np.zeros((0, self.size))
        return self._dC(pl), self._de(pl)


def compile_model(model) -> "CompiledModel":
    """The :class:`CompiledModel` of ``model``: built once, kept in ``model.cache`` (which the
    model clears on any change), so every caller shares one compiled form and its generated code."""
    compiled = model.cache.get("compiled")
    if compiled is None:
        compiled = model.cache["compiled"] = CompiledModel(model)
    return compiled


def _fractional_powers(expr, states) -> bool:
    """Whether ``expr`` (an expression or matrix) has a power with a non-integer exponent of a
    base that depends on ``states`` (x**h, x**0.5: possibly infinite derivatives at x = 0)."""
    states = set(states)
    return any(_is_fractional_power(q, states) for q in expr.atoms(sp.Pow))


def _is_fractional_power(q, states) -> bool:
    """Whether ``q`` is a power with a non-integer exponent of a base that depends on ``states`` (a set)."""
    return q.is_Pow and not q.exp.is_Integer and bool(q.base.free_symbols & states)


def _singular_powers_as_zero(expr, states):
    """``expr`` with each power ``a**e`` of a state-dependent base and non-integer exponent taken
    as 0 where ``a`` = 0 and ``e`` < 0, where it is infinite (the derivative of a Hill term
    x**h with h < 1, or of sqrt(x), at an empty pool). For the integrator's Jacobian only, which
    enters the iteration matrix W = I - gamma dt J: its finite remainder keeps W solvable on a
    step that starts at exactly 0, and the step-size control keeps the accuracy (a W with an
    inexact Jacobian); the right-hand side, which sets the solution, is not changed."""
    states = set(states)
    if not _fractional_powers(expr, states):
        return expr
    return expr.replace(lambda q: _is_fractional_power(q, states),
                        lambda q: sp.Piecewise((sp.S.Zero, sp.And(sp.Eq(q.base, 0), q.exp < 0)), (q, True)))


def _times_zero_where_zero(a, s, states):
    """``a * s``, as 0 where ``s`` = 0 if ``a`` has a fractional power of a state (infinite at an
    empty pool, x**(h - 1) with h < 1): the sensitivities of a pool that starts at 0 start at 0,
    and the product's limit there is 0, not inf * 0 = NaN."""
    if a == 0:
        return sp.S.Zero
    return sp.Piecewise((sp.S.Zero, sp.Eq(s, 0)), (a * s, True)) if _fractional_powers(a, states) else a * s


class CompiledModel:
    """The numerical form of a model. Build with :func:`compile_model` (cached on the model)."""

    def __init__(self, model):
        sym = model.symbolic()
        self.symbolic = sym
        self.model = model
        self.name = model.name
        self.state_names = list(sym.state_names)
        self.parameter_names = list(sym.parameter_names)
        self.observable_names = list(sym.observables)
        self.n_states = n = len(self.state_names)
        self.n_params = P = len(self.parameter_names)
        x = list(sym.states)
        p = list(sym.parameters)
        self._x_syms, self._p_syms = x, p
        #: the model's triggered events (:class:`~kinetics.symbolic.SymbolicEvent`)
        self.events = list(sym.events)
        # parameters whose value is an expression of the others, recomputed at every start
        self._derived = None
        if sym.parameter_expressions:
            exprs = list(sym.parameter_expressions.values())
            self._derived = (np.array([self.parameter_names.index(k) for k in sym.parameter_expressions], dtype=np.intp),
                             _lambdify([p], exprs), _lambdify([p], list(sp.Matrix(exprs).jacobian(p))), sym.parameter_expressions)
        f = sp.Matrix(sym.rhs)
        self.rhs_symbolic = f
        self.time_dependent = any(TIME in e.free_symbols for e in f)
        J = _jacobian(f, x)
        self.jacobian_symbolic = J
        xset = set(x)
        # affine: constant Jacobian and a constant remainder f - J x (a state inside a piecewise
        # condition or a floor has a zero derivative but is not affine)
        self.affine = (not self.time_dependent) and all(not (e.free_symbols & xset) for e in J) and all(
            not (e.free_symbols & xset) for e in (f - J * sp.Matrix(x)).applyfunc(sp.expand))
        self._p_args = [p]
        # initial values x0(p) and their derivatives
        x0 = sp.Matrix(sym.initial)
        self._x0 = _SparseArray(self._p_args, np.array(list(x0), dtype=object), label="the initial values")
        self._dx0 = (_SparseArray(self._p_args, np.array(_jacobian(x0, p), dtype=object).reshape(n, P), label="the derivatives of the initial values")
                     if P and any(x0) else None)
        # observables h(t, x, p)
        obs = sp.Matrix(list(sym.observables.values())) if self.observable_names else sp.zeros(0, 1)
        self.observables_symbolic = obs
        vec_args = [TIME, x, p]
        self._obs = _VectorArray(vec_args, np.array(list(obs), dtype=object))
        self._dobs_dx = _VectorArray(vec_args, np.array(_jacobian(obs, x), dtype=object).reshape(len(obs), n)) if len(obs) else None
        self._dobs_dp = _VectorArray(vec_args, np.array(_jacobian(obs, p), dtype=object).reshape(len(obs), P)) if len(obs) and P else None
        self._obs_tapes = None  # built on first use (see _observable_tapes)
        self.affine_observables = _AffineSeries.build(self._p_args, obs, x, p)
        if self.affine:
            zero = {s: 0 for s in x}
            A = J
            b = f.xreplace(zero)
            self._A = _SparseArray(self._p_args, np.array(A, dtype=object).reshape(n, n), label="the rate coefficients")
            self._b = _SparseArray(self._p_args, np.array(list(b), dtype=object), label="the constant inflows")
            # derivatives only where an entry depends on a parameter (large models: P x n x n is huge)
            index = {pk: k for k, pk in enumerate(p)}
            dA, db = {}, {}
            for (i, j), entry in A.todok().items():
                for sym in entry.free_symbols & index.keys():
                    dA[(index[sym] * n + i) * n + j] = entry.diff(sym)
            for i, entry in enumerate(b):
                for sym in entry.free_symbols & index.keys():
                    db[index[sym] * n + i] = entry.diff(sym)
            self._dA = _SparseArray(self._p_args, shape=(P, n, n), entries={k: v for k, v in dA.items() if v != 0},
                                    label="the derivatives of the rate coefficients")
            self._db = _SparseArray(self._p_args, shape=(P, n), entries={k: v for k, v in db.items() if v != 0},
                                    label="the derivatives of the constant inflows")
        self._numeric = None  # built on first use (tapes or lambdified callables)
        self._sens_systems = {}
        # with triggered events too: an affine model is solved exactly between events, whose
        # times are located on the exact solution (kinetics.simulation.events)
        self.method = "exact" if self.affine else "numerical"

    # ------------------------------------------------------------ parameters
    @property
    def pools_under_fractional_powers(self) -> list[str]:
        """The states that are the base of a power with a non-integer exponent in the
        right-hand side (``X**h``, ``sqrt(X)``). A flow with such a rate (h < 1) empties its pool
        in finite time, and a step may then end slightly below 0, where the power is undefined."""
        states = set(self._x_syms)
        found = set()
        for q in sp.Matrix(self.rhs_symbolic).atoms(sp.Pow):
            if _is_fractional_power(q, states):
                found |= q.base.free_symbols & states
        return [name for name, x in zip(self.state_names, self._x_syms) if x in found]

    @property
    def default_parameters(self) -> np.ndarray:
        """The model's parameter values as they are now: read at each call, so that setting
        ``model.parameters["k"].value`` after compiling takes effect."""
        parameters = self.model.parameters
        computed = set(self.computed_parameters)
        values = []
        for name in self.parameter_names:
            entry = parameters.get(name)
            value = getattr(entry, "value", None)
            if name in computed and isinstance(value, (str, sp.Basic)):
                values.append(0.0)     # an expression of the others: evaluated below
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
                what = "was removed from the model" if entry is None else f"has the value {shorten(value, 40)}"
                raise ModelError(f"model '{self.name}': parameter '{name}' {what}; "
                                 "parameter values must be finite numbers (set model.parameters[name].value = number)")
            values.append(value)
        return self.resolve_parameters(np.array(values, dtype=float))[0]

    def parameter_vector(self, values=None) -> np.ndarray:
        """Model parameter vector from a dict / lmfit.Parameters (missing names: defaults)."""
        p = self.default_parameters.copy()
        if values is None:
            return p
        if hasattr(values, "valuesdict"):
            values = values.valuesdict()
        if isinstance(values, dict):
            index = {name: i for i, name in enumerate(self.parameter_names)}
            for name, value in values.items():
                if name not in index:
                    from ..errors import suggest_name
                    from ..errors import ModelError
                    raise ModelError(f"model '{self.name}' has no parameter '{name}'{suggest_name(name, index)}; its parameters are {', '.join(self.parameter_names)}")
                p[index[name]] = float(value)
            resolved = self.resolve_parameters(p)[0]
            for name in self.computed_parameters:
                given, value = p[index[name]], resolved[index[name]]
                if name in values and not abs(given - value) <= 1e-9 * max(abs(value), 1e-300):
                    from ..errors import ModelError
                    raise ModelError(f"model '{self.name}': parameter '{name}' is computed from its value expression "
                                     f"'{self._derived[3][name]}' (= {value:g} here), so it cannot be set to {given:g}; "
                                     "set the parameters it is computed from instead")
            return resolved
        p = np.asarray(values, dtype=float)
        if p.shape != (self.n_params,):
            raise ValueError(f"expected {self.n_params} parameter values, got shape {p.shape}")
        return p

    @property
    def computed_parameters(self) -> list[str]:
        """Parameters whose value is an expression of others (recomputed at every start)."""
        return [] if self._derived is None else list(self._derived[3])

    def resolve_parameters(self, p, D=None):
        """``p`` with the computed parameters re-evaluated from the others (and the directions
        ``D`` (P, K) carried through by the chain rule); unchanged when there are none."""
        if self._derived is None:
            return p, D
        index, fn, jac, _ = self._derived
        pl = list(map(float, p))
        p = np.array(pl)
        p[index] = fn(pl)
        if D is not None:
            G = np.asarray(jac(pl), dtype=float).reshape(len(index), self.n_params)
            D = np.array(D, dtype=float)
            D[index] = G @ D
        return p, D

    def initial_state(self, p) -> np.ndarray:
        return self._x0(list(map(float, p)))

    def initial_sensitivity(self, p, D) -> np.ndarray:
        """d x0 / d theta = (dx0/dp) D, shape (n, K)."""
        if self._dx0 is None:
            return np.zeros((self.n_states, D.shape[1]))
        return self._dx0(list(map(float, p))) @ D

    @property
    def state_symbols(self) -> list:
        """The sympy symbols of the states, in :attr:`state_names` order."""
        return self._x_syms

    @property
    def parameter_symbols(self) -> list:
        """The sympy symbols of the parameters, in :attr:`parameter_names` order."""
        return self._p_syms

    @property
    def numerical_engine(self) -> str:
        """The integrator of the numerical path: ``"rosenbrock"`` (the compiled Rodas5P, with
        numba) or ``"lsoda"`` (scipy's, without); the path's code is generated on first use."""
        return self._build_numeric()["engine"]

    @property
    def initial_depends_on_parameters(self) -> bool:
        """Whether some initial value x0(p) depends on a parameter."""
        return self._dx0 is not None

    def affine_parts(self):
        """(A, b, dA, db) of an affine model as generated callables of the parameter list
        (each with ``.const``: True when it depends on no parameter), for hot loops that
        evaluate them without :meth:`affine_matrices`' conversions."""
        return self._A, self._b, self._dA, self._db

    def affine_matrices(self, p):
        """(A, b) of dx/dt = A x + b at parameters p (affine models only)."""
        pl = list(map(float, p))
        return self._A(pl), self._b(pl)

    # -------------------------------------------------------------- solving
    def solve(self, p, x0, times, t0=0.0, inflow=None, S0=None, D=None,
              rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL, method="auto"):
        """States (m, n) at ``times`` (sorted, >= t0) from x(t0) = x0 under constant parameters
        ``p`` and a constant extra ``inflow`` (amount per time into each compartment).

        With ``D`` (P, K), also the sensitivities dx/dtheta (m, n, K) from ``S0`` (n, K).
        ``method="numerical"`` forces the integrator on an affine model (for cross-checks).
        Raises :class:`SolverError` on failure."""
        times = np.asarray(times, dtype=float)
        if self.affine and method != "numerical":
            pl = list(map(float, p))
            A, b = self._A(pl), self._b(pl)
            if inflow is not None:
                b = b + inflow
            # (no memory of which method worked last time: results must not depend on call history)
            if D is None:
                X, _, _ = solve_affine(A, b, x0, times - t0)
                S = None
            else:
                dA_full, db_full = self._dA(pl), self._db(pl)
                dA = np.einsum("lij,lk->kij", dA_full, D)
                db = (db_full.T @ D).T
                X, S, _ = solve_affine(A, b, x0, times - t0, dA, db, S0)
            self._check_finite(X, S, times, "the exact solution overflowed")
            return X, S
        return self._solve_numeric(p, x0, times, t0, inflow, S0, D, rtol, atol)

    def _check_finite(self, X, S, times, cause):
        """Raise :class:`NonFiniteError` naming the first state (or its sensitivity) that is
        not finite, and the time."""
        for values, what in ((X, "{}"), (S, "the sensitivity of {}")):
            where = None if values is None else first_nonfinite(values)
            if where is not None:
                row, col = where
                name = what.format(self.state_names[col])
                value = nonfinite_value(values[row, col])
                raise NonFiniteError(f"{name} is {value} at t={times[row]:g} ({cause})", name, float(times[row]), value)

    def scipy_functions(self):
        """(f(t, x, p, u) -> list of n, J(t, x, p) -> flat n*n list): the right-hand side with a
        constant inflow u and its Jacobian as plain Python callables (built once), for
        integrators that drive their own stepping (triggered events)."""
        if getattr(self, "_scipy_functions", None) is None:
            u = [sp.Symbol(f"_inflow_{i}") for i in range(self.n_states)]
            f = self.rhs_symbolic + sp.Matrix(u)
            self._scipy_functions = (_lambdify([TIME, self._x_syms, self._p_syms, u], list(f)),
                                     _lambdify([TIME, self._x_syms, self._p_syms],
                                               [_singular_powers_as_zero(d, self._x_syms) for d in self.jacobian_symbolic]))
        return self._scipy_functions

    # ---------------------------------------------------------- observables
    def observe(self, X, times, p, S=None, D=None):
        """Observables (m, o) of states X (m, n) and, with S, D, their sensitivities (m, o, K)."""
        m = X.shape[0]
        if not self.observable_names:
            return np.empty((m, 0)), (None if S is None else np.empty((m, 0, S.shape[2])))
        times = np.asarray(times, dtype=float)
        tapes = self._observable_tapes()
        if tapes is not None:
            Y, dYdx, dYdp = tapes(times, X, p, S is not None)
        else:
            args = (times, list(X.T), list(map(float, p)))
            Y = self._obs(m, *args)
            if S is not None:
                dYdx = self._dobs_dx(m, *args)
                dYdp = None if self._dobs_dp is None else self._dobs_dp(m, *args)
        if S is None:
            return Y, None
        dY = np.matmul(dYdx, S)     # (m, o, n) @ (m, n, K), time by time
        if dYdp is not None:
            dY = dY + dYdp @ D
        return Y, dY

    def _observable_tapes(self):
        """The observables' compiled tapes (:class:`_ObservableTapes`), built on first use; None
        without numba or for an expression the tape does not support (the numpy code then)."""
        if self._obs_tapes is None:
            from ..numerics.jit import numba_available   # here, not at import: numba is slow to import
            self._obs_tapes = False
            if numba_available():
                try:
                    self._obs_tapes = _ObservableTapes(self._x_syms, self._p_syms, self.observables_symbolic,
                                                       self._dobs_dx, self._dobs_dp)
                except ValueError:      # a node the tape does not know
                    pass
        return self._obs_tapes or None

    # ------------------------------------------------------- numerical path
    def _build_numeric(self):
        if self._numeric is not None:
            return self._numeric
        x, p = self._x_syms, self._p_syms
        n = self.n_states
        u = [sp.Symbol(f"_inflow_{i}") for i in range(n)]
        f = self.rhs_symbolic + sp.Matrix(u)
        num = {"u": u}
        from ..numerics.jit import numba_available   # here, not at import: numba is slow to import
        if numba_available():
            from ..codegen.tape import build_tapes, jacobian_rows
            jacobian = None     # differentiated by build_tapes, unless a power needs the guard
            if _fractional_powers(self.jacobian_symbolic, x):
                jacobian = [[_singular_powers_as_zero(d, x) for d in row]
                            for row in jacobian_rows(list(f), x, [TIME, *x, *p, *u])]
            num["rhs_tape"], num["jac_tape"], num["dfdt_tape"] = build_tapes(list(f), TIME, x, [*p, *u], jacobian=jacobian)
            num["engine"] = "rosenbrock"
        else:
            num["f"] = _lambdify([TIME, x, p, u], list(f))
            num["J"] = _lambdify([TIME, x, p], [_singular_powers_as_zero(d, x) for d in self.jacobian_symbolic])
            num["engine"] = "lsoda"
        self._numeric = num
        return num

    def integrator_tapes(self):
        """(rhs, jac, dfdt) tapes of dx/dt = f(t, x, p) + u for the compiled integrator, with
        inputs [t, x, p, u] (u: a constant inflow per state), or None without numba."""
        num = self._build_numeric()
        if num["engine"] != "rosenbrock":
            return None
        return num["rhs_tape"], num["jac_tape"], num["dfdt_tape"]

    def _sens_system(self, K, selection=None):
        """Augmented (state + K sensitivity directions) system, built once per K, or once per
        ``selection`` (a tuple of K parameter indices l_k): directions with one nonzero entry
        each, D[l_k, k], as fits on the free parameters give. Then dS_k = J S_k + df/dp_{l_k}
        D[l_k, k] and the tapes carry only those K products instead of all P x K of a general
        D (half the instructions of a stage of the integrator for a dozen parameters)."""
        key = K if selection is None else tuple(selection)
        system = self._sens_systems.get(key)
        if system is not None:
            return system
        num = self._build_numeric()
        x, p, u = self._x_syms, self._p_syms, num["u"]
        n, P = self.n_states, self.n_params
        S = sp.Matrix(n, K, lambda i, k: sp.Symbol(f"_s_{i}_{k}"))
        if selection is None:
            D = sp.Matrix(P, K, lambda l, k: sp.Symbol(f"_d_{l}_{k}"))
            inputs_D = list(D)          # row-major, as D.reshape(-1)
        else:
            D = sp.zeros(P, K)
            inputs_D = []               # D[l_k, k] in the order of the directions
            for k, l in enumerate(selection):
                D[l, k] = sp.Symbol(f"_d_{l}_{k}")
                inputs_D.append(D[l, k])
        f = self.rhs_symbolic + sp.Matrix(u)
        Fp = _jacobian(self.rhs_symbolic, p) if P else sp.zeros(n, 0)
        J = self.jacobian_symbolic
        FpD = Fp * D if P else sp.zeros(n, K)
        system = {}
        if num["engine"] == "rosenbrock":
            from ..codegen.tape import sensitivity_tapes
            params = [*p, *u, *inputs_D]
            if K:
                # the parts (f, J, F_p D and the coupling's derivatives) from which the
                # integrator forms the system (see kinetics.numerics.rosenbrock.product_plan)
                (system["rhs_tape"], system["jac_tape"], system["dfdt_tape"],
                 system["products"]) = sensitivity_tapes(
                    f, J, FpD, TIME, x, list(S), params, guarded=lambda e: _fractional_powers(e, x),
                    singular_as_zero=lambda e: _singular_powers_as_zero(e, x))
            else:   # no directions: the state's own system
                system["rhs_tape"], system["jac_tape"], system["dfdt_tape"] = self.integrator_tapes()
        else:
            fractional = _fractional_powers(J, x)
            JS = (sp.Matrix(n, K, lambda i, k: sum((_times_zero_where_zero(J[i, j], S[j, k], x) for j in range(n)),
                                                   sp.S.Zero))
                  if fractional else J * S)
            y = [*x, *list(S)]  # S flattened row-major: index n + i*K + k
            system["f"] = _lambdify([TIME, y, p, u, inputs_D], list(f) + list(JS + FpD))
            system["fractional"] = fractional
        self._sens_systems[key] = system
        return system

    @staticmethod
    def _selection(D):
        """The parameter index of each direction when every column of D has exactly one nonzero
        entry (see :meth:`_sens_system`), else None."""
        columns, rows = np.nonzero(D.T)     # column by column
        K = D.shape[1]
        if K == 0 or len(columns) != K or not (columns == np.arange(K)).all():
            return None
        return tuple(rows.tolist())

    def _solve_numeric(self, p, x0, times, t0, inflow, S0, D, rtol, atol):
        num = self._build_numeric()
        n = self.n_states
        u = np.zeros(n) if inflow is None else np.asarray(inflow, dtype=float)
        p = np.asarray(p, dtype=float)
        K = 0 if D is None else D.shape[1]
        y0 = np.asarray(x0, dtype=float) if D is None else np.concatenate([x0, np.asarray(S0, dtype=float).reshape(-1)])
        if D is None:
            consts, system = np.concatenate([p, u]), num
        else:
            D = np.asarray(D, dtype=float)
            selection = self._selection(D)
            system = self._sens_system(K, selection)
            # the entries of D the system reads, row-major (only the selected ones for a selection)
            d = D.reshape(-1) if selection is None else D[list(selection), np.arange(K)]
            consts = np.concatenate([p, u, d])
        if num["engine"] == "rosenbrock":
            from ..numerics.rosenbrock import STATUS_NONFINITE, integrate
            # with sensitivities: one factorization of the states' block per step, the
            # directions by block substitution (see kinetics.numerics.rosenbrock)
            Y, status, _, _ = integrate(system["rhs_tape"], system["jac_tape"], y0, consts, float(t0), times, rtol, atol,
                                        dfdt=system["dfdt_tape"], n_base=None if D is None else n,
                                        products=system.get("products"))
            if status == STATUS_NONFINITE:
                # rows the integrator did not reach are NaN: the first one brackets the blow-up
                reached = int(np.isfinite(Y).all(axis=1).sum())
                after = f" after t={times[reached - 1]:g}" if reached else ""
                raise NonFiniteError(f"the solution became infinite or NaN{after}, before t={times[min(reached, len(times) - 1)]:g} "
                                     "(the integrator stopped)", None, float(times[min(reached, len(times) - 1)]))
            if status != 0:
                raise SolverError(_STATUS.get(status, f"the integrator failed (status {status})"))
        else:
            Y = self._solve_lsoda(system, num, y0, p, u, None if D is None else d, times, t0, rtol, atol)
        X = Y[:, :n]
        S = None if D is None else Y[:, n:].reshape(len(times), n, K)
        if not np.isfinite(Y).all():
            self._check_finite(X, S, times, "the solution overflowed")
        return X, S

    def _solve_lsoda(self, system, num, y0, p, u, D, times, t0, rtol, atol):
        from scipy.integrate import solve_ivp  # only this fallback needs it (slow to import)
        pl, ul = list(p), list(u)
        if D is None:
            f, J = num["f"], num["J"]
            n = self.n_states

            def fun(t, y):
                return f(t, y, pl, ul)

            def jac(t, y):
                return np.reshape(J(t, y, pl), (n, n))
        else:      # D: the entries of the directions the system reads (see _solve_numeric)
            f, dl = system["f"], list(np.asarray(D))

            def fun(t, y):
                return f(t, y, pl, ul, dl)
            if system["fractional"]:
                plain = fun

                def fun(t, y):
                    # the products J S, taken as 0 where S = 0, compute J first: infinite at an
                    # empty pool (x**(h-1), h < 1); a NaN that is kept still fails the finite check
                    with np.errstate(divide="ignore", invalid="ignore"):
                        return plain(t, y)
            jac = None
        mask = times > t0
        out = np.empty((len(times), len(y0)))
        out[~mask] = y0
        if mask.any():
            try:
                sol = solve_ivp(fun, (t0, float(times[-1])), y0, method="LSODA", t_eval=times[mask], rtol=rtol,
                                atol=atol, jac=jac)
            except (ArithmeticError, ValueError) as exc:   # math.exp overflow in the generated code
                raise NonFiniteError(f"the right-hand side cannot be evaluated ({exc}); the solution overflowed") from None
            if not sol.success:
                raise SolverError(f"scipy's LSODA failed: {sol.message}")
            out[mask] = sol.y.T
        return out


_STATUS = {
    1: "the integrator took too many steps (the system may be extremely stiff or blow up; check the parameter values)",
    2: "the step size became too small (a singularity or blow-up: check the parameter values)",
    3: "the solution became non-finite (it overflowed)",
    4: "a singular matrix was met in the implicit solver",
}


def warm_up() -> float:
    """Compile (or load from numba's disk cache) every compiled kernel on tiny problems: the
    exact affine path (real and complex spectra), the Rosenbrock integrator (also watching
    a trigger, for triggered events) and its tape interpreter, the trust-region solver of the
    fits, and the ensemble kernels of ``simulate_many`` (batched exact solution,
    matrix-exponential fallback, lock-step integrator). Returns the seconds taken. Optional: each
    kernel group otherwise compiles on its first use (with a notice); without numba it only
    warms the numpy paths."""
    import time

    from ..codegen.tape import build_tapes
    from ..numerics import linear, linear_batch, rosenbrock, rosenbrock_lanes, trust_region
    from ..numerics.jit import numba_available
    start = time.perf_counter()
    A = np.array([[-1.0, 0.0], [1.0, -2.0]])
    Ac = np.array([[-1.0, 2.0], [-2.0, -1.0]])  # complex eigenvalues: the other specialization
    # the compiled matrix exponential (defective or ill-conditioned A), states and sensitivities
    linear.solve_affine(A, np.ones(2), np.zeros(2), np.array([0.0, 1.0]), np.ones((1, 2, 2)), np.ones((1, 2)),
                        np.zeros((2, 1)), method="expm")
    for M in (A, Ac):
        linear.solve_affine(M, np.ones(2), np.zeros(2), np.array([0.0, 1.0]))
        linear.solve_affine(M, np.ones(2), np.zeros(2), np.array([0.0, 1.0]), np.ones((1, 2, 2)), np.ones((1, 2)), np.zeros((2, 1)))
        series = (np.eye(2), np.zeros(2), np.zeros((0, 2, 2)), np.zeros((0, 2)), np.array([0, 1], dtype=np.intp))
        linear.affine_rows(M, np.ones(2), np.zeros(2), np.array([0.0, 1.0]), np.ones((1, 2, 2)), np.ones((1, 2)),
                           np.ones((1, 1)), np.zeros((2, 1)), series, np.array([0, 1], dtype=np.intp))
    if not numba_available():
        return time.perf_counter() - start
    t, x, k = sp.symbols("t x k")
    rhs, jac, _ = build_tapes([-k * x], t, [x], [k])
    rosenbrock.integrate(rhs, jac, np.array([1.0]), np.array([1.0]), 0.0, np.array([0.0, 1.0]), 1e-6, 1e-9)
    # the same integrator watching a trigger (models with triggered events): the same compiled kernel
    from ..codegen.tape import Tape
    watch = Tape.from_exprs([x - 0.5], [t, x, k], n_varying=2)
    rosenbrock.integrate_watching(rhs, jac, np.array([1.0]), np.array([1.0]), 0.0, np.array([1.0]), 1e-6, 1e-9, watch,
                                  np.array([1.0]))
    watch.evaluate(np.ones((2, 3)))     # the tape at many rows (observables, CompiledModel.observe)
    rosenbrock_lanes.integrate_many(rhs, jac, np.ones((3, 1)), np.ones((3, 1)), 0.0, np.array([0.5, 1.0]), 1e-6, 1e-9)
    for M in (A, Ac):
        linear_batch.solve_sets(np.repeat(M[None], 3, 0), np.ones((3, 2)), np.zeros((3, 2)), np.array([0.5, 1.0]), 1e5,
                                np.empty((3, 2, 2)), np.zeros(3, dtype=bool))
    linear_batch.solve_sets_expm(np.repeat(A[None], 3, 0), np.ones((3, 2)), np.zeros((3, 2)), np.array([0.5, 1.0]),
                                 np.empty((3, 2, 2)))
    trust_region.compile_kernels()
    return time.perf_counter() - start
