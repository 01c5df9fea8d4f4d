"""Numeric steady states: generated callables of the bounded subsystem (right-hand side,
Jacobian, sink inflows, flow rates), damped Newton, and Newton from a simulated state after
growing horizons (a job of :class:`~kinetics.analysis.steady.SteadyPlan`).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import sympy as sp

from ..codegen.lambdify import lambdify
from ..errors import SolverError
from .steady_common import eigenvalues, is_unstable

__all__ = ["NewtonSteady"]


class NewtonSteady:
    """Generated callables, Newton and continuation of :class:`~kinetics.analysis.steady.SteadyPlan`."""

    # --------------------------------------------------------- generated callables
    @cached_property
    def _num(self):
        """Lambdified f_B, J_BB, f_S, J_SB, flow rates and df/dp (args: x_B list, p list)."""
        xB, p = self._xB, self._p
        P = len(p)
        f_all = sp.Matrix(self._fB + self._fS)
        Fp = f_all.jacobian(p) if P and len(f_all) else sp.zeros(len(f_all), P)
        return {
            "fB": lambdify([xB, p], self._fB),
            "JBB": lambdify([xB, p], list(self._JBB)),
            "fS": lambdify([xB, p], self._fS),
            "JSB": lambdify([xB, p], list(self._JSB)),
            "rates": lambdify([xB, p], self.rate_exprs),
            "Fp": lambdify([xB, p], list(Fp)),
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
        return eigenvalues(self.jacobian_bounded(xB, p))

    # ------------------------------------------------------------------ Newton
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
                if (root >= -1e-9 * scale).all() and not is_unstable(self._eigen_at(root, p)):
                    return np.where(root < 0, 0.0, root)
            if k == 0:
                tau = self._horizon(x[B], p) or tau
        raise SolverError(self._divergence_message(p, history))
