"""Symbolic steady states: the bounded subsystem split into strongly connected blocks, each
solved by sympy when small (linear blocks exactly, polynomial ones of low Bezout degree),
the candidates evaluated and checked at given parameters (a job of
:class:`~kinetics.analysis.steady.SteadyPlan`).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import sympy as sp

from ..codegen.lambdify import lambdify
from ..model.expressions import TIME
from .steady_common import (MAX_CANDIDATES, MAX_EXPRESSION_LENGTH, MAX_LINEAR_BLOCK, MAX_SYMBOLIC_BLOCK,
                            MAX_SYMBOLIC_DEGREE, factor_or_keep, is_unstable, strongly_connected_blocks)

__all__ = ["SymbolicSteady"]


class SymbolicSteady:
    """Symbolic candidates of :class:`~kinetics.analysis.steady.SteadyPlan`."""

    # ---------------------------------------------------------------- symbolic
    @cached_property
    def _blocks(self):
        nb = len(self.B)
        J = self._JBB
        edges = [[j for j in range(nb) if j != i and J[i, j] != 0] for i in range(nb)]
        return strongly_connected_blocks(nb, edges)

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
            return [{s: factor_or_keep(e) for s, e in zip(u, sol)}]
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
        return [lambdify([self._p], list(exprs), complex_math=True) for exprs in cands]

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
            e = factor_or_keep(e)
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
            if is_unstable(ev):
                continue
            out.append((k, x, ev))
        return out
