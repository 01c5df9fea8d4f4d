"""The one place sympy expressions become Python callables.

Two conventions, both here so that every caller gets the same printers and namespaces:

* :func:`lambdify`: the house convention for model code (right-hand sides, Jacobians,
  observables, steady-state systems): a list of expressions in, a list out, common
  subexpressions shared (``cse=True``), fully qualified ``math.``/``numpy.`` names,
  ``Heaviside`` / ``Min`` / ``Max`` printed as the helpers below; ``vector=True`` for numpy
  arrays of points, ``complex_math=True`` to evaluate with :mod:`cmath` (roots written with I).
* :func:`lambdify_plain`: sympy's standard printer for a module (``"math"`` or ``"numpy"``),
  no CSE: the small per-event and initial-value maps and the PK derivatives, which were
  written that way and keep their exact floating-point results.
"""

from __future__ import annotations

import cmath
import math

import numpy as np
import sympy as sp
from sympy.printing.numpy import NumPyPrinter
from sympy.printing.pycode import PythonCodePrinter

__all__ = ["lambdify", "lambdify_plain", "step_safe_jacobian", "power_safe_derivatives", "heaviside", "ScalarPrinter",
           "VectorPrinter"]


def heaviside(x, h0=1.0):
    """Scalar Heaviside step with value ``h0`` at 0 (what generated scalar code calls)."""
    return 1.0 if x > 0 else (h0 if x == 0 else 0.0)


class ScalarPrinter(PythonCodePrinter):
    """Python printer for scalar code: ``Heaviside`` as :func:`heaviside`."""

    def _print_Heaviside(self, expr):
        h0 = expr.args[1] if len(expr.args) > 1 else sp.Rational(1, 2)
        return f"_heaviside({self._print(expr.args[0])}, {self._print(h0)})"

    def _print_Float(self, expr):  # every bit of the double (sympy prints 15 digits)
        return repr(float(expr))

    def _print_factorial(self, expr):  # of a real number, as SBML defines it
        return f"math.gamma({self._print(expr.args[0])} + 1)"


class VectorPrinter(NumPyPrinter):
    """numpy printer for code over arrays of points: ``Min``/``Max`` elementwise."""

    def _print_Min(self, expr):
        return "_vmin(" + ", ".join(self._print(a) for a in expr.args) + ")"

    def _print_Max(self, expr):
        return "_vmax(" + ", ".join(self._print(a) for a in expr.args) + ")"

    def _print_Heaviside(self, expr):
        h0 = expr.args[1] if len(expr.args) > 1 else sp.Rational(1, 2)
        return f"numpy.heaviside({self._print(expr.args[0])}, {self._print(h0)})"

    def _print_Float(self, expr):  # every bit of the double (sympy prints 15 digits)
        return repr(float(expr))

    def _print_factorial(self, expr):  # of a real number, as SBML defines it
        return f"scipy.special.gamma({self._print(expr.args[0])} + 1)"


def _vmin(*args):
    return np.minimum.reduce(np.broadcast_arrays(*args))


def _vmax(*args):
    return np.maximum.reduce(np.broadcast_arrays(*args))


def lambdify(args, exprs, vector=False, *, complex_math=False):
    """Generated Python code for a list of expressions (common subexpressions shared)."""
    exprs = list(exprs)
    if not exprs:
        return lambda *a: []
    printer = (VectorPrinter if vector else ScalarPrinter)({"fully_qualified_modules": True, "allow_unknown_functions": False})
    import scipy.special

    modules = [{"_heaviside": heaviside, "_vmin": _vmin, "_vmax": _vmax, "math": cmath if complex_math else math,
                "numpy": np, "scipy": scipy}, "numpy" if vector else "math"]
    return sp.lambdify(args, exprs, modules=modules, printer=printer, cse=True, docstring_limit=0)


def lambdify_plain(args, expr, module):
    """``sympy.lambdify(args, expr, module)``: sympy's standard printer, no CSE."""
    return sp.lambdify(args, expr, module)


_STEP_FUNCTIONS = (sp.floor, sp.ceiling, sp.sign, sp.Heaviside)


class _Power(sp.Function):
    """``a**b`` while it is differentiated: ``b * a**(b - 1) * a'``, plus ``a**b * log(a) * b'``
    only where ``b`` depends on the variable (sympy's chain rule for functions skips an argument
    whose derivative is 0).

    sympy differentiates ``a**b`` as ``a**b * (b / a * a' + log(a) * b')``: 0/0 and 0 * -inf
    where ``a`` = 0 (a Hill term ``(x/K)**h`` of a species that starts at 0, differentiated by
    ``x``, ``K`` or ``h``), although the derivative is finite there for ``b >= 1``. Two more
    limits are kept: ``b * a**(b - 1)`` is 0 where ``b`` = 0 (``a**0`` is the constant 1; else
    0 * inf at a = 0, e.g. the second derivative of ``a**h`` at h = 1 in the sensitivity
    system's Jacobian), and ``a**b * log(a)`` is 0 where ``a`` = 0 (its limit for b > 0). Both
    by replacing the offending argument, not by choosing between results, so that numpy code,
    which evaluates every branch of a piecewise, computes no inf or NaN on the way."""

    nargs = 2

    def fdiff(self, argindex=1):
        base, exponent = self.args
        if argindex == 1:
            # b = 0: b * 1**(b - 1) = 0 (numeric exponents: the Piecewise collapses to a)
            safe_base = sp.Piecewise((sp.S.One, sp.Eq(exponent, 0)), (base, True))
            return exponent * _Power(safe_base, exponent - 1)
        if argindex == 2:
            # a = 0: a**b * log(1) = 0 (constant bases: collapses to log(a))
            return self * sp.log(sp.Piecewise((sp.S.One, sp.Eq(base, 0)), (base, True)))
        raise sp.ArgumentIndexError(self, argindex)


def _wrap_powers(expr, variables):
    """``expr`` with each power that depends on ``variables`` and has a non-integer exponent
    held as :class:`_Power` (integer powers already differentiate as ``n a**(n-1) a'``)."""
    if not expr.has(sp.Pow):
        return expr
    return expr.replace(lambda e: e.is_Pow and not e.exp.is_Integer and bool(e.free_symbols & variables),
                        lambda e: _Power(*e.args))


def _unwrap_powers(expr):
    return expr.replace(lambda e: isinstance(e, _Power), lambda e: sp.Pow(*e.args)) if expr.has(_Power) else expr


def power_safe_derivatives(exprs, variables):
    """Rows ``[d e / d v for v in variables]`` for each ``e`` in ``exprs``, with powers
    ``a**b`` differentiated as ``b * a**(b - 1) * a' + a**b * log(a) * b'`` (finite at ``a`` = 0
    for ``b >= 1``; the log term only where ``b`` depends on ``v``, 0 where ``a`` = 0), see
    :class:`_Power`; entries are sympy expressions, 0 where ``e`` does not contain ``v``."""
    variables = list(variables)
    wanted = set(variables)
    rows = []
    for e in exprs:
        e = sp.sympify(e)
        free = e.free_symbols
        wrapped = _wrap_powers(e, wanted & free)
        rows.append([_unwrap_powers(sp.diff(wrapped, v)) if v in free else sp.S.Zero for v in variables])
    return rows


def step_safe_jacobian(f, v):
    """``f.jacobian(v)`` with powers differentiated by :func:`power_safe_derivatives` and the
    derivatives of step functions (floor, ceiling, sign, Heaviside), which sympy leaves
    unevaluated, set to their value almost everywhere: 0."""
    f = sp.Matrix(f)
    J = sp.Matrix(power_safe_derivatives(list(f), v)) if len(f) and len(v) else sp.zeros(len(f), len(v))

    def is_step_derivative(e):
        if isinstance(e, sp.Subs):
            e = e.expr
        return (isinstance(e, sp.Derivative) and isinstance(e.expr, _STEP_FUNCTIONS)) or isinstance(e, sp.DiracDelta)

    def zero_steps(e):
        found = {a: sp.Integer(0) for a in e.atoms(sp.Subs, sp.Derivative, sp.DiracDelta) if is_step_derivative(a)}
        return e.xreplace(found) if found else e

    if any(e.has(sp.Derivative, sp.DiracDelta) for e in J):
        J = J.applyfunc(zero_steps)
    return J
