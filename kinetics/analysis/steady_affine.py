"""The exact steady state of an affine model: one generated function of the parameters gives
A and b of the bounded subsystem and the sinks, solved by one LU (a job of
:class:`~kinetics.analysis.steady.SteadyPlan`).
"""

from __future__ import annotations

import math

import numpy as np
import sympy as sp
from scipy.linalg.lapack import dgesv as _dgesv

from ..codegen.lambdify import lambdify
from .steady_common import SINGULAR_RCOND, eigenvalues, is_unstable

__all__ = ["AffineSteady"]


class AffineSteady:
    """The fast exact path of :class:`~kinetics.analysis.steady.SteadyPlan` (affine models)."""

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
        self._fast = lambdify([self._p], exprs)
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
            ev = eigenvalues(self.matrices(p)[0])
            if is_unstable(ev):
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
            x += 0.0  # a zero inflow solves to -0.0, which reports would print as "-0"
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
