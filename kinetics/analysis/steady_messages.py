"""Why a model has no (unique, stable) steady state: the messages of
:class:`~kinetics.analysis.steady.SteadyPlan`, naming the compartments, the flows and the fix.
"""

from __future__ import annotations

import numpy as np

from ..errors import SolverError
from .steady_common import quoted_names, raise_parameters_not_finite

__all__ = ["SteadyMessages"]


class SteadyMessages:
    """Diagnostics of :class:`~kinetics.analysis.steady.SteadyPlan`."""

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
        return (f"model '{self.name}' has no steady state at these parameter values: {quoted_names(culprits)} "
                f"{'grows' if one else 'grow'} without bound, so no stable steady state is reached.{observed} "
                f"The inflow into {'it' if one else 'them'} exceeds what the flows out can remove; raise the capacity of "
                f"those outflows (a rate constant, or the Vmax of a saturable flow) or lower the inflow. "
                f"Parameter values: {self._params_text(p)}.")

    def _raise_not_finite(self, p):
        if not np.isfinite(np.asarray(p, dtype=float)).all():
            raise_parameters_not_finite(self.compiled, np.asarray(p, dtype=float))
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
                    why = (f" {quoted_names(lonely)} {'is' if len(lonely) == 1 else 'are'} not a sink because "
                           f"{'flow' if len(users) == 1 else 'flows'} {quoted_names(users)} depend{'s' if len(users) == 1 else ''} on "
                           f"{'it' if len(lonely) == 1 else 'them'}.")
            raise SolverError(
                f"model '{self.name}' has no steady state: {quoted_names(members)} {'accumulates' if one else 'accumulate'} "
                f"without bound (material keeps entering and nothing removes it at a rate that depends on "
                f"{'its' if one else 'their'} amount).{why} Add an outflow from {quoted_names(members)} "
                f"(or check for a rate constant set to 0). Parameter values: {self._params_text(p)}.")
        raise SolverError(
            f"model '{self.name}' has no unique steady state: {quoted_names(members)} exchange material without losing any, "
            f"so their total is conserved and the level they settle to depends on the initial amounts. "
            f"Add an outflow from {quoted_names(members)} (or check for a rate constant set to 0). "
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
        hint = (f" Flow{'s' if len(self_feeding) > 1 else ''} {quoted_names(self_feeding)} feed{'s' if len(self_feeding) == 1 else ''} "
                f"a compartment in proportion to its own amount (autocatalytic growth) faster than it is removed."
                if self_feeding else "")
        raise SolverError(
            f"model '{self.name}': the steady state is unstable: the Jacobian of the bounded subsystem has an eigenvalue "
            f"with positive real part ({lam_text} per {self.time_unit}), so a small deviation in {quoted_names(members)} grows "
            f"exponentially instead of settling.{hint} Make the outflows of {quoted_names(members)} faster than their self-feeding "
            f"(lower the growth rate or raise a removal rate). Parameter values: {self._params_text(p)}.")
