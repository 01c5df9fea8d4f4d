"""What the steady-state modules share: limits, small numeric helpers and message pieces.

Used by :mod:`.steady` (entry points and results) and the jobs of :class:`~.steady.SteadyPlan`:
:mod:`.steady_affine` (the exact path of affine models), :mod:`.steady_symbolic` (symbolic
candidates), :mod:`.steady_newton` (generated callables, Newton and simulation) and
:mod:`.steady_messages` (why there is no steady state).
"""

from __future__ import annotations

import math

import numpy as np
import sympy as sp
from scipy.linalg.lapack import dgeev as _dgeev

from ..errors import ModelError

__all__ = ["SINGULAR_RCOND", "MAX_SYMBOLIC_BLOCK", "MAX_SYMBOLIC_DEGREE", "MAX_EXPRESSION_LENGTH", "MAX_CANDIDATES",
           "MAX_LINEAR_BLOCK", "quoted_names", "strongly_connected_blocks", "eigenvalues", "find_root",
           "factor_or_keep", "is_unstable", "raise_parameters_not_finite"]

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


def quoted_names(items):
    """'a', 'b' and 'c': names for a message."""
    items = list(items)
    if len(items) <= 1:
        return "".join(f"'{i}'" for i in items)
    return ", ".join(f"'{i}'" for i in items[:-1]) + f" and '{items[-1]}'"


def strongly_connected_blocks(n, edges):
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


def eigenvalues(M) -> np.ndarray:
    """Eigenvalues of a real square matrix (real array when all are real); LAPACK directly."""
    if M.shape[0] == 0:
        return np.zeros(0)
    wr, wi, _, _, info = _dgeev(np.asfortranarray(M), compute_vl=0, compute_vr=0)
    if info != 0:
        return np.linalg.eigvals(M)
    return wr + 1j * wi if wi.any() else wr


def find_root(f, a, b, xtol=0.0, maxiter=200):
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


def factor_or_keep(expr):
    """``sympy.factor`` of ``expr``, or ``expr`` itself when sympy cannot factor it."""
    try:
        return sp.factor(expr)
    except (sp.PolynomialError, NotImplementedError, ValueError, TypeError):
        return expr


def is_unstable(ev) -> bool:
    """Whether eigenvalues ``ev`` have a real part above rounding (relative to their size)."""
    if not len(ev):
        return False
    scale = max(float(np.abs(ev).max()), 1e-300)
    return bool(np.real(ev).max() > 1e-10 * scale)


def raise_parameters_not_finite(compiled, p):
    """A ModelError naming the parameters of ``compiled`` whose values ``p`` are not finite."""
    bad = [n for n, v in zip(compiled.parameter_names, p) if not math.isfinite(v)]
    raise ModelError(f"model '{compiled.name}': parameter values must be finite numbers; got {', '.join(f'{n}={p[compiled.parameter_names.index(n)]}' for n in bad)}")
