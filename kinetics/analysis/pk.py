"""Pharmacokinetic summary of a bolus dose: the figures pharmacology papers report (AUC, Cmax,
tmax, half-lives of each phase, clearance, volume at steady state, mean residence time),
computed from the model rather than from sampled data.

The curve summarised is the dose *response* of the observable: the observable with the dose
minus the observable without it (the "baseline"; identical to the plain curve for the usual
models that start empty and have no constant input). With ``y(t)`` that response:

* ``auc_inf = integral_0^inf y dt``, ``aumc_inf = integral_0^inf t y dt``,
  ``mrt = aumc_inf / auc_inf``, ``clearance = dose / auc_inf`` and ``vss = clearance * mrt``
  (clearance and Vss only for a concentration observable: one whose unit is the dose's unit
  per volume), ``auc_last`` to ``t_last``, ``cmax``/``tmax`` the global maximum of y.
* Phases: y(t) = sum_i C_i exp(lambda_i t) over the eigenvalues lambda_i of the bounded
  subsystem (compartments that are not sinks; see :mod:`kinetics.steady`) that the dose
  excites and the observable sees, sorted fast to slow; ``phase_half_lives`` are
  ln 2 / |Re lambda_i| and ``terminal_half_life`` the slowest.

**Exact** for affine-linear models with an observable linear in the compartments: with A the
bounded subsystem's matrix, d the dose vector and c the observable's gradient,
auc_inf = c^T (-A)^-1 d, aumc_inf = c^T A^-2 d, auc_last from the exponential of the augmented
matrix [[A, 0, 0], [c^T, 0, 0], [0, 1, 0]] (scipy's Padé ``expm``), Cmax by root-finding on the
exact derivative, and the phases from the eigendecomposition of A.

**Numeric** otherwise (saturable clearance, observables nonlinear in the states): a dense
simulation on a log-spaced grid (Simpson's rule) to a horizon where the response has fallen
below 1e-7 of its peak, plus log-linear extrapolation of the terminal phase; the phases are those
of the linearisation at the baseline (the low-dose limit). ``method`` and ``notes`` say which.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import sympy as sp
from scipy.linalg import expm

from ..codegen.lambdify import lambdify_plain
from ..errors import ModelError, SolverError
from ..model.expressions import TIME
from ..numerics.linear import eigen_decomposition, solve_affine
from .steady import eigenvalues, find_root, steady_plan

__all__ = ["pk_summary", "PKSummary"]

LN2 = math.log(2.0)


@dataclass
class PKSummary:
    """Pharmacokinetic figures of a bolus dose (see the module docstring). Times are in the
    model's time unit; ``units`` gives the unit of each figure where it can be derived."""
    model_name: str
    observable: str
    dose_compartment: str
    dose: float
    method: str                          # "exact" or "numeric"
    auc_inf: float
    aumc_inf: float
    mrt: float
    cmax: float
    tmax: float
    terminal_half_life: float | None
    phase_half_lives: list = field(default_factory=list)
    phases: list = field(default_factory=list)   # [{"rate", "half_life", "coefficient"}], fast to slow
    t_last: float | None = None
    auc_last: float | None = None
    auc_extrapolated_percent: float | None = None
    clearance: float | None = None
    vss: float | None = None
    time_unit: str = "h"
    units: dict = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
        return out

    def _repr_html_(self) -> str:
        """The PK figures as a table (for notebooks)."""
        import html
        keys = ["cmax", "tmax", "auc_last", "auc_inf", "aumc_inf", "mrt", "terminal_half_life", "clearance", "vss"]
        rows = "".join(f"<tr><td>{k}</td><td>{'' if getattr(self, k) is None else f'{getattr(self, k):.5g}'}</td>"
                       f"<td>{html.escape(str(self.units.get(k) or (self.time_unit if k in ('tmax', 'mrt', 'terminal_half_life') else '')))}</td></tr>"
                       for k in keys)
        return (f"<p><b>PK summary of {html.escape(self.model_name)}</b>: bolus of {self.dose:.4g} into "
                f"{html.escape(self.dose_compartment)}, observable {html.escape(self.observable)} ({self.method})</p>"
                f"<table><tr><th>figure</th><th>value</th><th>unit</th></tr>{rows}</table>")

    def report(self) -> str:
        u = self.units
        tu = self.time_unit

        def row(label, value, unit_key=None, unit=None):
            unit = unit if unit is not None else (u.get(unit_key) if unit_key else None)
            if value is None:
                return f"  {label:<34} {'-':>14}"
            return f"  {label:<34} {value:>14.6g}  {unit or ''}".rstrip()

        lines = [f"PK summary of '{self.model_name}': bolus of {self.dose:.6g} {u.get('dose') or ''} into "
                 f"'{self.dose_compartment}', observable '{self.observable}' (method: {self.method})".replace("  ", " "), ""]
        lines.append(row("Cmax", self.cmax, "cmax"))
        lines.append(row("tmax", self.tmax, unit=tu))
        if self.t_last is not None:
            lines.append(row(f"AUC(0-{self.t_last:g} {tu})", self.auc_last, "auc"))
        lines.append(row("AUC(0-inf)", self.auc_inf, "auc"))
        if self.auc_extrapolated_percent is not None:
            lines.append(row("AUC extrapolated beyond t_last (%)", self.auc_extrapolated_percent, unit="%"))
        lines.append(row("AUMC(0-inf)", self.aumc_inf, "aumc"))
        lines.append(row("MRT", self.mrt, unit=tu))
        lines.append(row("clearance (dose/AUC)", self.clearance, "clearance"))
        lines.append(row("Vss (CL x MRT)", self.vss, "vss"))
        lines.append(row("terminal half-life", self.terminal_half_life, unit=tu))
        if self.phases:
            lines += ["", "  phases (fast to slow): y(t) = sum of C_i exp(-k_i t)"]
            per_min = _minutes(tu)
            for i, ph in enumerate(self.phases, 1):
                text = f"    {i}: k = {ph['rate']:.6g} per {tu}, half-life {ph['half_life']:.6g} {tu}"
                if per_min not in (None, 1.0):
                    text += f" ({ph['half_life'] * per_min:.4g} min)"
                if ph.get("coefficient") is not None:
                    text += f", C = {ph['coefficient']:.6g}"
                lines.append(text)
        if self.notes:
            lines.append("")
            lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def _minutes(time_unit):
    return {"h": 60.0, "hr": 60.0, "hour": 60.0, "hours": 60.0, "min": 1.0, "s": 1 / 60.0, "d": 1440.0, "day": 1440.0,
            "days": 1440.0}.get(str(time_unit).strip())


def _unit_text(expr):
    from ..model.units import format_unit
    try:
        return format_unit(expr)  # units are monomials: sympy combines their powers itself
    except Exception:  # noqa: BLE001 - units are a courtesy
        return None


def _units(model, dose_comp, obs_unit):
    from ..errors import UnitError
    from ..model.units import DIMENSIONLESS, parse_unit
    tu = model.time_unit
    dose_unit = model.compartments[dose_comp].unit
    out = {"dose": dose_unit, "cmax": obs_unit, "time": tu}
    concentration, why = None, None
    try:
        T = parse_unit(tu)
        O = parse_unit(obs_unit) if obs_unit else None
        D = parse_unit(dose_unit) if dose_unit else None
    except UnitError:
        return out, None, None
    if O is not None:
        out["auc"] = _unit_text(O * T)
        out["aumc"] = _unit_text(O * T ** 2)
    if O is not None and D is not None:
        ratio = D / O
        out["clearance"] = _unit_text(ratio / T)
        out["vss"] = _unit_text(ratio)
        if ratio == DIMENSIONLESS:
            concentration, why = False, "it has the dose's unit (an amount)"
        elif ratio.free_symbols & D.free_symbols:
            concentration, why = False, f"its unit '{obs_unit}' is not the dose's unit '{dose_unit}' per volume"
        else:
            concentration = True
    return out, concentration, why


def _observable(compiled, plan, name):
    """(sympy expression of the observable, its unit)."""
    model = compiled.model
    if name in compiled.state_names:
        entry = model.compartments.get(name) or model.parameters[name]  # a parameter with a rate rule is a state too
        return compiled.symbolic.states[compiled.state_names.index(name)], entry.unit
    if name in compiled.observable_names:
        return compiled.observables_symbolic[compiled.observable_names.index(name)], model.observables[name].unit
    from ..errors import suggest_name
    names = compiled.state_names + compiled.observable_names
    raise ModelError(f"model '{compiled.name}' has no compartment or observable '{name}'{suggest_name(name, names)}; "
                     f"choose one of {', '.join(names)}")


def _dose(compiled, dose):
    from ..simulation.schedule import Dose
    if isinstance(dose, Dose):
        comp, amount, time = dose.compartment, dose.amount, dose.time
    elif isinstance(dose, dict):
        unknown = set(dose) - {"compartment", "amount", "time"}
        if unknown or "compartment" not in dose or "amount" not in dose:
            raise ModelError(f"dose: expected {{'compartment': ..., 'amount': ...}} (a bolus at t=0), got {dose!r}")
        comp, amount, time = dose["compartment"], dose["amount"], dose.get("time", 0.0)
    else:
        raise ModelError(f"dose: expected a dict like {{'compartment': 'plasma', 'amount': 1e10}} or a Dose, got {dose!r}")
    if comp not in compiled.state_names:
        from ..errors import suggest_name
        raise ModelError(f"dose into unknown compartment '{comp}'{suggest_name(str(comp), compiled.state_names)}; "
                         f"compartments of '{compiled.name}' are {', '.join(compiled.state_names)}")
    if isinstance(amount, bool) or not isinstance(amount, (int, float, np.floating, np.integer)) or not amount > 0 or not math.isfinite(amount):
        raise ModelError(f"dose amount must be a positive number, got {amount!r}")
    if float(time) != 0.0:
        raise ModelError("pk_summary summarises a bolus at t=0; shift the time axis instead of dosing at t={time}")
    return comp, float(amount)


def pk_summary(model, dose, observable: str, parameters=None, t_last: float | None = None, *,
               method: str = "auto") -> PKSummary:
    """PK figures of a bolus ``dose`` (``{"compartment": "plasma", "amount": 1e10}``, at t=0)
    seen in ``observable`` (a compartment or observable name).

    ``t_last``: end of the AUC(0-t_last) window (for example the last sampling time); None
    leaves ``auc_last`` out. ``method``: "auto" (exact where the model is affine-linear and the
    observable linear in the compartments, else numeric), "exact" or "numeric".
    """
    if method not in ("auto", "exact", "numeric"):
        raise ValueError(f"method must be 'auto', 'exact' or 'numeric', not {method!r}")
    plan = steady_plan(model)
    c = plan.compiled
    p = c.parameter_vector(parameters)
    comp, amount = _dose(c, dose)
    if t_last is not None and not (isinstance(t_last, (int, float)) and t_last > 0 and math.isfinite(t_last)):
        raise ModelError(f"t_last must be a positive time, got {t_last!r}")
    key = ("pk", comp, observable)
    prepared = plan.cache.get(key)
    if prepared is None:
        prepared = plan.cache[key] = _prepare(plan, comp, observable)
    expr, linear_obs, units, concentration, why = prepared
    exact = c.affine and linear_obs and not c.events  # triggered events: through the simulation schedule
    if method == "exact" and not exact:
        raise ModelError(f"model '{c.name}': the exact PK path needs an affine-linear model and an observable linear in the "
                         "compartments; use method='auto' or 'numeric'")
    summary = (_exact if exact and method != "numeric" else _numeric)(plan, p, comp, amount, expr, t_last)
    summary.update(model_name=c.name, observable=observable, dose_compartment=comp, dose=amount,
                   time_unit=c.model.time_unit, units=units, t_last=None if t_last is None else float(t_last),
                   parameters=dict(zip(c.parameter_names, p.tolist())))
    notes = summary.setdefault("notes", [])
    auc = summary["auc_inf"]
    if concentration is False:
        summary["clearance"] = summary["vss"] = None
        notes.append(f"'{observable}' is not a concentration ({why}), so clearance and Vss are not reported; "
                     "summarise a concentration observable (amount per volume) for them")
    else:
        summary["clearance"] = amount / auc if auc > 0 else None
        summary["vss"] = summary["clearance"] * summary["mrt"] if summary["clearance"] is not None else None
        if concentration is None:
            notes.append("units not declared: clearance = dose/AUC and Vss = CL x MRT assume a concentration observable")
    if summary.get("auc_last") is not None and auc > 0:
        summary["auc_extrapolated_percent"] = 100.0 * (auc - summary["auc_last"]) / auc
    return PKSummary(**summary)


def _prepare(plan, comp, observable):
    """Symbolic work per (model, dose compartment, observable), cached on the plan."""
    c = plan.compiled
    expr, obs_unit = _observable(c, plan, observable)
    sinks = [plan.state_symbols[i] for i in plan.S]
    used_sinks = [s.name for s in sinks if s in expr.free_symbols]
    if used_sinks:
        raise ModelError(f"observable '{observable}' of model '{c.name}' depends on {', '.join(used_sinks)}, which only "
                         "accumulate(s) (a cumulative sink): its dose response never returns to baseline, so AUC and "
                         "half-lives are not defined. Use an observable of a circulating compartment (e.g. plasma).")
    linear_obs = (TIME not in expr.free_symbols
                  and all(not (sp.diff(expr, s).free_symbols & set(c.symbolic.states)) for s in plan.bounded_symbols))
    units, concentration, why = _units(c.model, comp, obs_unit)
    return expr, linear_obs, units, concentration, why


# ----------------------------------------------------------------------------- exact path
def _gradient(plan, expr, p):
    key = ("pk-gradient", expr)
    fn = plan.cache.get(key)
    if fn is None:
        fn = plan.cache[key] = lambdify_plain([plan.parameter_symbols], [sp.diff(expr, s) for s in plan.bounded_symbols], "math")
    return np.array(fn(list(map(float, p))), dtype=float).reshape(-1)


def _phases(A, cvec, d):
    """[(lambda, coefficient or None)] of y(t) = c^T exp(A t) d, excited modes only."""
    eig = eigen_decomposition(A) if A.shape[0] else None
    if eig is None:
        return [(lam, None) for lam in eigenvalues(A)], False
    lam, V, Vinv = eig
    coef = (cvec @ V) * (Vinv @ d)
    total = np.abs(coef).sum()
    out = []
    for i in range(len(lam)):
        if abs(coef[i]) <= 1e-10 * total:
            continue
        li = complex(lam[i])
        if li.imag < 0:
            continue
        ci = complex(coef[i])
        out.append((li, 2 * ci.real if li.imag > 0 else ci.real))
    return out, True


def _phase_list(modes):
    phases = []
    for lam, coef in sorted(modes, key=lambda m: m[0].real if isinstance(m[0], complex) else m[0]):
        re = float(np.real(lam))
        if re >= 0:
            continue
        phases.append({"rate": -re, "half_life": LN2 / -re, "coefficient": None if coef is None else float(coef)})
    return phases


def _exact(plan, p, comp, amount, expr, t_last):
    A, _, _, _ = plan.matrices(p)
    nb = A.shape[0]
    cvec = _gradient(plan, expr, p)
    d = np.zeros(nb)
    if comp in plan.bounded_names:
        d[plan.bounded_names.index(comp)] = amount
    y0 = float(cvec @ d)
    ev = eigenvalues(A)
    if nb == 0 or not np.any(cvec) or not np.any(d):
        raise ModelError(f"model '{plan.name}': the observable does not respond to a dose into '{comp}'"
                         + (" (a sink: material there never comes back)" if comp in plan.sink_names else ""))
    modes, resolved = _phases(A, cvec, d)
    if not modes:
        raise ModelError(f"model '{plan.name}': the observable does not respond to a dose into '{comp}'")
    if any(np.real(lam) >= 0 for lam, _ in modes):
        raise SolverError(f"model '{plan.name}': the dose response does not decay (an excited mode has eigenvalue "
                          f"{max(np.real(lam) for lam, _ in modes):+.4g} per {plan.time_unit}), so AUC to infinity and "
                          "half-lives are not defined; the observable sees a compartment without outflow or with growth")
    w = np.linalg.solve(A, d)
    auc_inf = float(-cvec @ w)
    aumc_inf = float(cvec @ np.linalg.solve(A, w))
    rates = np.array([-np.real(lam) for lam, _ in modes])
    slow, fast = rates.min(), rates.max()

    def y_at(times):
        X = solve_affine(A, np.zeros(nb), d, np.asarray(times, dtype=float))[0]
        return X @ cvec

    def dy_at(t):
        X = solve_affine(A, np.zeros(nb), d, np.array([t]))[0]
        return float(cvec @ (A @ X[0]))

    grid = np.concatenate([[0.0], np.geomspace(1e-4 / fast, 40.0 / slow, 2000)])
    ys = y_at(grid)
    k = int(np.argmax(ys))
    tmax, cmax = 0.0, float(ys[0])
    if k > 0:
        lo, hi = grid[k - 1], grid[min(k + 1, len(grid) - 1)]
        if dy_at(lo) > 0 > dy_at(hi):
            tmax = float(find_root(dy_at, lo, hi, xtol=1e-15 * hi))
        else:
            tmax = float(grid[k])
        cmax = float(y_at([tmax])[0])
    if y0 >= cmax:
        tmax, cmax = 0.0, y0
    auc_last = None
    if t_last is not None:
        M = np.zeros((nb + 2, nb + 2))
        M[:nb, :nb] = A
        M[nb, :nb] = cvec
        M[nb + 1, nb] = 1.0
        z = expm(M * float(t_last)) @ np.concatenate([d, [0.0, 0.0]])
        auc_last = float(z[nb])
    phases = _phase_list(modes)
    notes = [] if resolved else ["the eigenvector matrix is ill-conditioned: phases listed without coefficients"]
    return {
        "method": "exact", "auc_inf": auc_inf, "aumc_inf": aumc_inf, "mrt": aumc_inf / auc_inf,
        "cmax": cmax, "tmax": tmax, "auc_last": auc_last,
        "terminal_half_life": phases[-1]["half_life"] if phases else None,
        "phase_half_lives": [ph["half_life"] for ph in phases], "phases": phases, "notes": notes,
    }


# --------------------------------------------------------------------------- numeric path
def _numeric(plan, p, comp, amount, expr, t_last):
    from scipy.integrate import simpson
    c = plan.compiled
    B = plan.B
    x0 = c.initial_state(p)
    xd = x0.copy()
    xd[c.state_names.index(comp)] += amount
    key = ("pk-numeric", expr)
    if key not in plan.cache:
        plan.cache[key] = (lambdify_plain([TIME, c.symbolic.states, plan.parameter_symbols], expr, "numpy"),
                           lambdify_plain([TIME, c.symbolic.states, plan.parameter_symbols], [sp.diff(expr, s) for s in plan.bounded_symbols], "math"))
    obs_fn, grad = plan.cache[key]
    pl = list(map(float, p))
    rtol, atol = 1e-10, 1e-12 * max(1.0, float(np.abs(xd).max()))

    def observe(times, X):
        return np.broadcast_to(np.asarray(obs_fn(times, list(X.T), pl), dtype=float), times.shape).copy()

    needs_baseline = bool(np.any(x0[B]) or c.time_dependent or TIME in expr.free_symbols
                          or (len(B) and np.any(plan.f_bounded(x0[B], p)))
                          or float(observe(np.zeros(1), x0[None, :])[0]) != 0.0)

    def solve(x_start, times):
        if not c.events:
            return c.solve(p, x_start, times, rtol=rtol, atol=atol)[0]
        from ..simulation.schedule import Dose, Schedule  # triggered events fire on the way
        doses = [Dose(name, float(v)) for name, v in zip(c.state_names, x_start - x0) if v != 0]
        return Schedule(c, times, doses=doses).run(p, rtol=rtol, atol=atol)[0]

    def response(times):
        Xd = solve(xd, times)
        y = observe(times, Xd)
        if needs_baseline:
            Xb = solve(x0, times)
            y = y - observe(times, Xb)
        return y

    # linearisation at the baseline: time scales and the low-dose phases
    J = plan.jacobian_bounded(x0[B], p)
    cvec = np.array(grad(0.0, list(map(float, x0)), pl), dtype=float).reshape(-1)
    d = np.zeros(len(B))
    if comp in plan.bounded_names:
        d[plan.bounded_names.index(comp)] = amount
    modes, _ = _phases(J, cvec, d) if len(B) and np.any(d) and np.any(cvec) else ([], False)
    rates = np.array([-np.real(lam) for lam, _ in modes if np.real(lam) < 0])
    fast = float(rates.max()) if len(rates) else 1.0
    slow = float(rates.min()) if len(rates) else 1.0
    horizon = 40.0 / slow
    if t_last is not None:
        horizon = max(horizon, float(t_last))
    for _ in range(10):
        grid = np.unique(np.concatenate([[0.0], np.geomspace(1e-4 / fast, horizon, 4000),
                                         [] if t_last is None else [float(t_last)]]))
        try:
            y = response(grid)
        except SolverError as exc:
            raise SolverError(f"PK summary of '{plan.name}': {exc}") from None
        peak = float(np.abs(y).max())
        if peak == 0.0:
            raise ModelError(f"model '{plan.name}': the observable does not respond to a dose into '{comp}'")
        if abs(y[-1]) <= 1e-7 * peak:
            break
        horizon *= 4.0
    else:
        raise SolverError(f"PK summary of '{plan.name}': the dose response has not decayed below 1e-7 of its peak "
                          f"by t={horizon:.4g} {plan.time_unit}, so AUC to infinity is not defined")
    # cut where the response falls below 1e-6 of its peak for good (beyond, it is at the level of the
    # integration error); the rest is the extrapolated terminal phase, fitted log-linearly
    above = np.nonzero(np.abs(y) > 1e-6 * peak)[0]
    end = int(above[-1]) + 1 if len(above) else len(grid)
    if t_last is not None:
        end = max(end, int(np.searchsorted(grid, float(t_last))) + 1)
    end = min(max(end, 3), len(grid))
    H = float(grid[end - 1])
    yH = float(y[end - 1])
    tail = (grid[:end] >= 0.6 * H) & (y[:end] > 0)
    notes = ["numeric: dense simulation (rtol 1e-10) with Simpson's rule on a log-spaced grid and log-linear "
             "extrapolation of the terminal phase; phases are those of the linearisation at the baseline (low-dose limit)"]
    if needs_baseline:
        notes.append("baseline-corrected: the response is the observable with the dose minus without it")
    lam_z = None
    if tail.sum() >= 5:
        slope = np.polyfit(grid[:end][tail], np.log(y[:end][tail]), 1)[0]
        lam_z = -float(slope) if slope < 0 else None
    auc_h = float(simpson(y[:end], x=grid[:end]))
    aumc_h = float(simpson(grid[:end] * y[:end], x=grid[:end]))
    if lam_z:
        auc_inf = auc_h + yH / lam_z
        aumc_inf = aumc_h + yH * H / lam_z + yH / lam_z ** 2
    else:
        auc_inf, aumc_inf = auc_h, aumc_h
    k = int(np.argmax(y))
    tmax, cmax = float(grid[k]), float(y[k])
    if 0 < k < len(grid) - 1:
        fine = np.linspace(grid[k - 1], grid[k + 1], 401)
        yf = response(fine)
        j = int(np.argmax(yf))
        tmax, cmax = float(fine[j]), float(yf[j])
        if 0 < j < len(fine) - 1:  # vertex of the parabola through the three best points
            t3, y3 = fine[j - 1:j + 2], yf[j - 1:j + 2]
            a, b, _ = np.polyfit(t3 - t3[1], y3, 2)
            if a < 0:
                shift = -b / (2 * a)
                tmax = float(t3[1] + shift)
                cmax = float(np.polyval([a, b, y3[1]], shift))
    auc_last = None
    if t_last is not None:
        m = int(np.searchsorted(grid, float(t_last))) + 1
        auc_last = float(simpson(y[:m], x=grid[:m]))
    phases = _phase_list(modes)
    return {
        "method": "numeric", "auc_inf": auc_inf, "aumc_inf": aumc_inf, "mrt": aumc_inf / auc_inf,
        "cmax": cmax, "tmax": tmax, "auc_last": auc_last,
        "terminal_half_life": LN2 / lam_z if lam_z else None,
        "phase_half_lives": [ph["half_life"] for ph in phases], "phases": phases, "notes": notes,
    }
