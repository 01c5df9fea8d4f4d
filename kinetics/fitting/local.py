"""Local optimization of a :class:`~kinetics.fitting.problem.FitProblem`: one fit from one start
(the compiled trust-region port or lmfit), the exact proportional-noise likelihood, and the
alternation of rates and combined-noise parameters. :mod:`.optimize` (multi-start, FitResult),
:mod:`.profile` and :mod:`.sample` build on these; they hold no state beyond the problem.
"""

from __future__ import annotations

import math
import threading
import warnings

import lmfit
import numpy as np
from scipy.optimize import minimize

from ..errors import SolverError

__all__ = ["LOCAL_METHODS", "MAX_ROUNDS", "PENALTY", "TOLERANCE", "SCREENING_TOLERANCE", "PROGRESS_WINDOW",
           "WARM_UP_PER_PARAMETER", "LEAVING_BOUND",
           "CannotReach", "Objective", "Failed", "KeptStart", "evaluate", "local_loglik",
           "lmfit_params", "local_fit", "engine_fit", "lmfit_fit", "trf_fit", "sigma_residual_fit", "scalar_fit", "combined_fit",
           "combined_noise_bounds", "combined_noise_parameters"]

LOCAL_METHODS = ("least_squares", "leastsq")
PENALTY = 1e10          # residual returned where the model cannot be simulated
MAX_ROUNDS = 50         # alternation rounds of combined noise (rates, then a and b)
#: ftol, xtol and gtol of the least-squares local fits (100 times tighter than scipy's default)
TOLERANCE = 1e-10
#: the same for the starts of a multi-start whose best start lmfit finishes at TOLERANCE
#: (kinetics.fitting.optimize.fit): scipy's default. A start in a slow valley far from the best
#: (a large-residual local optimum, where Gauss-Newton steps converge linearly) otherwise
#: crawls at the tighter tolerance up to its evaluation budget: on the PEtab problem Crauste,
#: 5652 evaluations for 20 starts at TOLERANCE, 2121 at this one, the same optimum
SCREENING_TOLERANCE = 1e-8
#: evaluations over which a start's rate of progress is measured (see CannotReach)
PROGRESS_WINDOW = 20
#: CannotReach is checked from this many evaluations per free parameter on. Replayed on traces
#: of the PEtab benchmark fits (bench/abandon_study.py, 4 problems x 4 seeds), checking from
#: 2n on saves as much as checking from the first full window on, and 5n (the value before
#: the bound guard below) spent on Crauste's later starts 32 % more evaluations
WARM_UP_PER_PARAMETER = 2
#: a parameter whose distance to its nearest bound grew more than this factor over the
#: PROGRESS_WINDOW is leaving that bound: CannotReach then waits (see there)
LEAVING_BOUND = 2.0


class CannotReach:
    """Stop rule of a multi-start's later starts (``least_squares_trf(stop=...)``): abandon a
    start whose cost, at its rate of progress over the last PROGRESS_WINDOW evaluations, cannot
    get below ``reference`` (the first start's end plus the tolerance within which a start
    counts as reaching the best, in the trust region's cost units) within the evaluations its
    budget has left: cost - rate x (max_nfev - nfev) > reference. Such a
    start is crawling down a valley far above an optimum already found (linear convergence of
    Gauss-Newton at a large-residual local optimum), and its end cannot become the fit's best
    unless its progress speeds up many times over. Checked only after ``warm_up`` evaluations,
    never while the start is below the reference, and never while a parameter is leaving a
    bound (``lower``/``upper``, the solver's bounds: its distance to the nearest one grew more
    than LEAVING_BOUND-fold over the window). A start that leaves a bound it ran into speeds up
    by orders of magnitude once it is away from it: the PEtab problem Bruno, seed 0, start 6
    crawls at 1e-3 per evaluation 38 times above the reference from evaluation 20 to 39 while
    one rate moves off its upper bound (distance 0.004 to 0.19 of its range), then falls to the
    best optimum by evaluation 55; the trust region's own Gauss-Newton model had its minimum
    above 1200 until then, so only the bound tells."""

    def __init__(self, reference, warm_up, lower=None, upper=None):
        if (lower is None) != (upper is None):
            raise ValueError("CannotReach: give both bounds (lower and upper) or neither")
        self.reference = float(reference)
        self.warm_up = int(warm_up)
        self.lower = None if lower is None else np.asarray(lower, dtype=float)
        self.upper = None if upper is None else np.asarray(upper, dtype=float)
        self.costs = []         # the current point's cost before each trial evaluation
        self.to_bound = []      # and each parameter's distance to its nearest bound there

    def __call__(self, nfev, max_nfev, cost, x=None):
        self.costs.append(cost)
        if self.lower is not None and x is not None:
            self.to_bound.append(np.minimum(x - self.lower, self.upper - x))
        if nfev < self.warm_up or len(self.costs) <= PROGRESS_WINDOW or cost <= self.reference:
            return False
        if self.leaving_bound():
            return False
        rate = (self.costs[-1 - PROGRESS_WINDOW] - cost) / PROGRESS_WINDOW
        return cost - rate * (max_nfev - nfev) > self.reference

    def leaving_bound(self):
        """Whether a parameter's distance to its nearest bound grew more than LEAVING_BOUND-fold
        over the last PROGRESS_WINDOW evaluations (False without bounds)."""
        if len(self.to_bound) <= PROGRESS_WINDOW:
            return False
        now, before = self.to_bound[-1], self.to_bound[-1 - PROGRESS_WINDOW]
        with np.errstate(invalid="ignore"):     # inf x 0 where LEAVING_BOUND is infinite (no guard)
            return bool(np.any(np.isfinite(now) & (now > LEAVING_BOUND * before)))


def evaluate(problem, x, weights, jacobian=True):
    """(r, J) a local fit minimizes at internal x: the exact likelihood residuals (weights None)
    or w (y - f) at fixed weights; J is None without ``jacobian``."""
    if weights is None:
        return problem.likelihood_residuals(x, jacobian=jacobian)
    if jacobian:
        return problem.residuals_and_jacobian(x, weights)
    return problem.residuals(x, weights), None


def local_loglik(problem, rss, weights):
    """Log-likelihood of a local fit's sum of squares rss (see :func:`evaluate`)."""
    if not np.isfinite(rss):
        return -math.inf
    return problem.objective_loglik(rss) if weights is None else problem.loglik(rss, weights)


class Objective:
    """Residuals (and the Jacobian from the same simulation) for lmfit (see :func:`evaluate`)."""

    def __init__(self, problem, weights=None, use_jacobian=True):
        self.problem = problem
        self.weights = weights
        self.use_jacobian = use_jacobian
        self.names = problem.internal_names()
        self._key = None
        self._J = None
        self._r = None
        self.failed = False     # whether the last residual evaluation could not simulate
        self.first = None       # (x, rss) of the first evaluation that simulated: the start

    def vector(self, params):
        return np.array([params[n].value for n in self.names])

    def residual(self, params):
        x = self.vector(params)
        key = x.tobytes()
        if key == self._key and self._r is not None:
            self.failed = False
            return self._r  # lmfit re-evaluates the final point: it is already known
        try:
            r, J = evaluate(self.problem, x, self.weights, self.use_jacobian)
            if self.use_jacobian:
                self._key, self._J, self._r = key, J, r
        except SolverError:
            # a failed simulation in a trial step is a bad step, not the end of the fit
            self.failed = True
            return np.full(self.problem.n_data, PENALTY)
        self.failed = False
        if self.first is None:
            self.first = (x, float(r @ r))
        return r

    def jacobian(self, params):
        x = self.vector(params)
        if self._key != x.tobytes():
            try:
                self._r, self._J = evaluate(self.problem, x, self.weights)
            except SolverError:
                return np.zeros((self.problem.n_data, sum(params[n].vary for n in self.names)))
            self._key = x.tobytes()
        vary = [i for i, n in enumerate(self.names) if params[n].vary]
        return self._J[:, vary]


def lmfit_params(problem, x, fixed=None):
    """lmfit Parameters at internal values ``x`` (those in ``fixed`` held). Building Parameters
    costs about a millisecond (an asteval interpreter each), so one set per problem is kept and
    only its values and flags are renewed; lmfit copies it into each fit's result."""
    lo, hi = problem.internal_bounds()
    names = problem.internal_names()
    cache = problem.__dict__.setdefault("_lmfit_params", {})   # per thread: executors may be thread pools
    params = cache.get(threading.get_ident())
    if params is None or list(params) != names:
        params = lmfit.Parameters()
        for i, name in enumerate(names):
            params.add(name, value=float(np.clip(x[i], lo[i], hi[i])), min=lo[i], max=hi[i])
        cache[threading.get_ident()] = params
    for i, name in enumerate(names):
        par = params[name]
        par.set(value=float(np.clip(x[i], lo[i], hi[i])), min=lo[i], max=hi[i],
                vary=not (fixed is not None and i in fixed))
    return params


def local_fit(problem, x0, weights=None, fixed=None, method="least_squares", use_jacobian=True, max_nfev=None,
               engine="auto", tolerance=TOLERANCE, reference=None):
    """One local optimization; returns (x_best, rss, result) where result has ``success`` and
    ``message``. With the analytic Jacobian, ``least_squares`` runs on kinetics' compiled port of
    scipy's trust-region reflective method (the algorithm lmfit's least_squares calls, without
    its per-iteration Python cost); ``engine="lmfit"`` or any other method goes through lmfit.
    ``tolerance``: ftol, xtol and gtol of the compiled least-squares path. ``reference``: the
    "rss" of an optimum already found (another start's); the compiled path on the exact
    likelihood then abandons this fit where it cannot get below it (:class:`CannotReach`)."""
    if weights is None and getattr(problem, "scalar_objective", False):
        k = problem.profiled_scale
        if k is not None and not (fixed and k in fixed) and use_jacobian and engine != "lmfit":
            return profiled_scale_fit(problem, x0, fixed, max_nfev)
        if problem.has_sigma_residuals and use_jacobian and engine != "lmfit":
            return sigma_residual_fit(problem, x0, fixed, max_nfev, tolerance, reference=reference)
        return scalar_fit(problem, x0, fixed, max_nfev)
    if weights is None and problem.noise == "proportional":
        return proportional_fit(problem, x0, fixed, method, use_jacobian, max_nfev, engine, tolerance)
    return engine_fit(problem, x0, weights, fixed, method, use_jacobian, max_nfev, engine, tolerance,
                      reference if weights is None else None)


def engine_fit(problem, x0, weights, fixed, method, use_jacobian, max_nfev, engine, tolerance=TOLERANCE,
               reference=None):
    """One local optimization on the engine's optimizer (see :func:`local_fit`)."""
    if engine != "lmfit" and method == "least_squares" and use_jacobian:
        return trf_fit(problem, x0, weights, fixed, max_nfev, tolerance, reference)
    return lmfit_fit(problem, x0, weights, fixed, method, use_jacobian, max_nfev)


def proportional_fit(problem, x0, fixed, method, use_jacobian, max_nfev, engine, tolerance=TOLERANCE):
    """:func:`local_fit` of the exact proportional-noise likelihood from a start that may be far
    off: far from the data the weights 1/|f_i| swing by orders of magnitude and the exact
    objective is slow to cross that terrain, so the fit first minimizes with the measurements'
    weights 1/|y_i| (a nearby, better-behaved objective), then the exact likelihood from there.
    That detour must not cost the start its own merit: if the exact fit ends above the start's
    likelihood, the exact fit is run from the start itself and the better end is kept."""
    def exact(x):
        return engine_fit(problem, x, None, fixed, method, use_jacobian, max_nfev, engine, tolerance)
    x1, rss1, _ = engine_fit(problem, x0, problem.weights, fixed, method, use_jacobian, max_nfev, engine, tolerance)
    if not np.isfinite(rss1):
        return exact(x0)
    x, rss, res = exact(x1)
    try:
        lo, hi = problem.internal_bounds()
        r0, _ = problem.likelihood_residuals(np.clip(np.asarray(x0, dtype=float), lo, hi))
        rss0 = float(r0 @ r0)
    except SolverError:
        return x, rss, res
    if not rss <= rss0:
        x2, rss2, res2 = exact(x0)
        if rss2 < rss or not np.isfinite(rss):
            return x2, rss2, res2
    return x, rss, res


class Failed:
    success = False

    def __init__(self, message):
        self.message = message


class KeptStart(Failed):
    """The outcome of a local fit that ended above its start (or where the model cannot be
    simulated): the start is kept, but it is not known to be an optimum."""

    def __init__(self, message):
        self.message = message


def no_worse_than_start(x, rss, result, start):
    """A local fit never ends above the point it started from: if the optimizer's end is worse
    than ``start`` = (x0, rss0) (or could not be simulated), return the start instead."""
    if start is not None and np.isfinite(start[1]) and not rss <= start[1]:
        return start[0], start[1], KeptStart(f"the optimizer ended above its start ({result.message}); "
                                               "kept the start")
    return x, rss, result


def trf_fit(problem, x0, weights=None, fixed=None, max_nfev=None, tolerance=TOLERANCE, reference=None):
    """:func:`local_fit` on :mod:`kinetics.trust_region` (same settings as the lmfit path)."""
    return _compiled_trf(problem, x0, fixed, max_nfev, tolerance, lambda x: evaluate(problem, x, weights),
                         reference=reference, residuals=lambda x: evaluate(problem, x, weights, jacobian=False)[0])


def sigma_residual_fit(problem, x0, fixed=None, max_nfev=None, tolerance=TOLERANCE, curvature=True,
                       reference=None):
    """:func:`local_fit` of normal noise with estimated sigmas as a least-squares problem: the
    compiled trust-region on :meth:`FitProblem.sigma_residuals` (z_i = e_i / sigma_i and the
    sigma residuals s_i = sqrt(2 log sigma_i + C_i)), whose sum of squares is 2 nll up to a
    constant. Returns (x, 2 nll, result), as :func:`scalar_fit`.

    ``curvature``: the Gauss-Newton model J^T J lacks most of the curvature in the noise
    parameters: in u = log sigma_i, z_i^2 / 2 + log sigma_i has second derivative 2 z_i^2, of
    which the residual z_i = e_i e^-u carries z_i^2 (its second-order term z_i d^2z_i/du^2 =
    z_i^2 is dropped) and s_i only 1 / s_i^2 (about 0.04 for sigma near 1 when C_i is 24, as
    for a sigma bounded below by 1e-5). The model then overshoots in log sigma and the trust
    region crawls (Boehm_JProteomeRes2014: 7745 evaluations for 20 starts, against 1911 for
    L-BFGS-B). So the trust region's model gets that dropped term back: one row z_i d log
    sigma_i per sigma residual, with residual 0, appended to (r, J). The cost |r|^2, its
    gradient J^T r and hence every stopping test are unchanged (the extra residuals are 0);
    only the quadratic model, and so the step, becomes J^T J + sum z_i^2 dls_i dls_i^T (2146
    evaluations)."""
    offset = problem.sigma_residual_offset
    if not curvature:
        return _compiled_trf(problem, x0, fixed, max_nfev, tolerance,
                             lambda x: problem.sigma_residuals(x, jacobian=True), offset, reference,
                             lambda x: problem.sigma_residuals(x)[0])
    n, rows = problem.n_data, problem.sigma_residual_rows
    m = len(rows)

    def with_curvature(x):
        r, J = problem.sigma_residuals(x, jacobian=True)
        z, s = r[:n], r[n:n + m]
        dls = J[n:n + m] * s[:, None]       # the sigma residuals' rows are d log sigma_i / s_i
        return np.concatenate([r, np.zeros(m)]), np.vstack([J, z[rows, None] * dls])

    def residuals(x):
        return np.concatenate([problem.sigma_residuals(x)[0], np.zeros(m)])
    return _compiled_trf(problem, x0, fixed, max_nfev, tolerance, with_curvature, offset, reference, residuals)


def _compiled_trf(problem, x0, fixed, max_nfev, tolerance, residuals_and_jacobian, offset=0.0, reference=None,
                  residuals=None):
    """The compiled trust-region from x0 (those in ``fixed`` held) on (r, J) =
    residuals_and_jacobian(x); returns (x, |r|^2 + offset, result). With ``reference`` (an
    "rss" in the same units), :class:`CannotReach` may abandon the fit, after
    WARM_UP_PER_PARAMETER evaluations per free parameter. ``residuals(x)``: r alone (a
    simulation without sensitivities), which the trust region evaluates first at each trial
    point, asking for the Jacobian only where the step is accepted
    (``least_squares_trf(residuals=...)``)."""
    from ..numerics.trust_region import least_squares_trf
    lo, hi = problem.internal_bounds()
    base = np.clip(np.asarray(x0, dtype=float), lo, hi)
    free = np.array([i for i in range(len(base)) if not (fixed and i in fixed)], dtype=int)
    start = []      # the first evaluation (at the start, moved inside the bounds)
    def full(z):
        if len(free) == len(base):
            return z
        x = base.copy()
        x[free] = z
        return x

    def fun_and_jac(z):
        x = full(z)
        r, J = residuals_and_jacobian(x)
        if not start:
            start.append((x.copy(), float(r @ r) + offset))
        return r, (J if len(free) == len(base) else J[:, free])
    trial_residuals = None if residuals is None else (lambda z: residuals(full(z)))
    stop = None
    if reference is not None and np.isfinite(reference):
        stop = CannotReach(0.5 * (reference - offset), warm_up=WARM_UP_PER_PARAMETER * len(free),
                           lower=lo[free], upper=hi[free])
    try:
        res = least_squares_trf(fun_and_jac, base[free], lo[free], hi[free], x_scale="jac",
                                ftol=tolerance, xtol=tolerance, gtol=tolerance, max_nfev=max_nfev, stop=stop,
                                residuals=trial_residuals)
    except SolverError as exc:   # at the start point: no fit from here
        return base, math.inf, Failed(f"the model cannot be simulated at the start: {exc}")
    if res.status == -3:
        res.message = ("abandoned: at its rate of progress this start could not get below the first start's "
                       "optimum within its evaluation budget")
    x = base.copy()
    x[free] = res.x
    return no_worse_than_start(x, float(res.fun @ res.fun) + offset, res, start[0] if start else None)


def lmfit_fit(problem, x0, weights=None, fixed=None, method="least_squares", use_jacobian=True, max_nfev=None):
    """:func:`local_fit` through lmfit's Minimizer; the result is lmfit's MinimizerResult."""
    objective = Objective(problem, weights, use_jacobian)
    params = lmfit_params(problem, x0, fixed)
    kws = {}
    if use_jacobian and method in LOCAL_METHODS:
        kws["Dfun" if method == "leastsq" else "jac"] = objective.jacobian
    if method == "least_squares":
        kws.update(x_scale="jac", ftol=TOLERANCE, xtol=TOLERANCE, gtol=TOLERANCE)
    minimizer = lmfit.Minimizer(objective.residual, params, max_nfev=max_nfev, nan_policy="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = minimizer.minimize(method=method, **kws)
    x = objective.vector(result.params)
    r = objective.residual(result.params)  # cached when the optimizer's last point is the result
    if objective.failed:    # penalty residuals: the model cannot be simulated here, not an optimum
        if objective.first is not None:
            x0, rss0 = objective.first
            return x0, rss0, KeptStart("the optimizer ended where the model cannot be simulated; kept the start")
        return x, math.inf, Failed("the model cannot be simulated at the start or at the optimizer's end")
    return no_worse_than_start(x, float(r @ r), result, objective.first)


def scalar_fit(problem, x0, fixed=None, max_nfev=None):
    """:func:`local_fit` of a likelihood that is not a sum of squares (sigma estimated with
    its log terms, Laplace noise, priors): scipy's L-BFGS-B on the exact negative
    log-likelihood with its analytic gradient from the sensitivities. Returns (x, 2 nll, result):
    the "rss" of this objective is twice its negative log-likelihood (see FitProblem.loglik)."""
    lo, hi = problem.internal_bounds()
    base = np.clip(np.asarray(x0, dtype=float), lo, hi)
    free = np.array([i for i in range(len(base)) if not (fixed and i in fixed)], dtype=int)
    start = []

    def value_and_gradient(z):
        x = base.copy()
        x[free] = z
        try:
            value, grad = problem.negative_loglik(x, gradient=True)
        except SolverError:
            if not start:
                raise
            return math.inf, np.zeros(len(free))     # a failed trial step: L-BFGS-B backtracks
        if not start:
            start.append((x.copy(), 2.0 * value))
        if not np.isfinite(value):
            return math.inf, np.zeros(len(free))
        return value, grad[free]

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = minimize(value_and_gradient, base[free], jac=True, method="L-BFGS-B",
                           bounds=list(zip(lo[free], hi[free])),
                           options={"maxiter": max_nfev or 10000, "maxfun": max_nfev or 15000,
                                    "ftol": 1e-13, "gtol": 1e-9, "maxcor": 20})
    except SolverError as exc:   # at the start point: no fit from here
        return base, math.inf, Failed(f"the model cannot be simulated at the start: {exc}")
    x = base.copy()
    x[free] = res.x
    message = res.message if isinstance(res.message, str) else str(res.message)
    res.message = f"L-BFGS-B: {message}"
    return no_worse_than_start(x, 2.0 * float(res.fun), res, start[0] if start else None)


def profiled_scale_fit(problem, x0, fixed=None, max_nfev=None):
    """:func:`local_fit` when one noise parameter s is the sigma of every row (normal noise):
    -log L = N log s + sum e_i^2 / (2 s^2) + const has its optimum over s at s^2 = mean e^2, so
    the other parameters minimize sum e_i^2 (the compiled trust-region path with the analytic
    Jacobian) and s is set in closed form. If that s lies outside its bounds the joint optimum is
    not the profiled one: the fit continues on L-BFGS-B from there. Returns (x, 2 nll, result)."""
    from ..numerics.trust_region import least_squares_trf
    k = problem.profiled_scale
    lo, hi = problem.internal_bounds()
    base = np.clip(np.asarray(x0, dtype=float), lo, hi)
    held = set(fixed or ()) | {k}
    free = np.array([i for i in range(len(base)) if i not in held], dtype=int)
    start = []

    def fun_and_jac(z):
        x = base.copy()
        x[free] = z
        e, de = problem.scale_residuals(x, jacobian=True)
        if not start:
            start.append((x, 2.0 * problem.negative_loglik(x)[0]))
        return e, de[:, free]
    try:
        res = least_squares_trf(fun_and_jac, base[free], lo[free], hi[free], x_scale="jac",
                                ftol=1e-10, xtol=1e-10, gtol=1e-10, max_nfev=max_nfev)
    except SolverError as exc:
        return base, math.inf, Failed(f"the model cannot be simulated at the start: {exc}")
    x = base.copy()
    x[free] = res.x
    s_hat = math.sqrt(float(res.fun @ res.fun) / problem.n_data)
    if s_hat > 0:
        x[k] = math.log10(s_hat) if problem.log_mask[k] else s_hat
    else:       # a perfect fit: the likelihood is unbounded; sigma at its lower bound
        x[k] = lo[k]
    if not lo[k] <= x[k] <= hi[k]:
        return scalar_fit(problem, np.clip(x, lo, hi), fixed, max_nfev)
    try:
        value = problem.negative_loglik(x)[0]
    except SolverError as exc:
        return base, math.inf, Failed(f"the model cannot be simulated at the fitted point: {exc}")
    return no_worse_than_start(x, 2.0 * value, res, start[0] if start else None)


def combined_noise_bounds(problem):
    """Bounds of log a and log b for sigma_i = sqrt(a^2 + b^2 y_i^2)."""
    scale = max(float(np.max(np.abs(problem.y))), 1e-300)
    return [(math.log(1e-10 * scale), math.log(10 * scale)), (math.log(1e-8), math.log(10.0))]


def combined_noise_parameters(problem, residual, ab0):
    """(a, b) of sigma_i = sqrt(a^2 + b^2 y_i^2) that maximize the Gaussian likelihood of fixed
    residuals y - f: a two-parameter problem with an analytic gradient, no simulation."""
    y2, e2 = problem.y ** 2, residual ** 2
    bounds = combined_noise_bounds(problem)

    def nll_and_gradient(log_ab):
        a2, b2 = np.exp(2 * log_ab)
        s2 = a2 + b2 * y2
        common = (s2 - e2) / (s2 * s2)
        return 0.5 * float(np.sum(e2 / s2 + np.log(s2))), np.array([a2 * np.sum(common), b2 * np.sum(common * y2)])

    start = np.clip(np.log(ab0), [lo for lo, _ in bounds], [hi for _, hi in bounds])
    res = minimize(nll_and_gradient, start, jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"ftol": 1e-14, "gtol": 1e-10})
    return tuple(np.exp(res.x))


def combined_fit(problem, x0, fixed, ab0, use_jacobian, max_nfev, engine="auto", max_rounds=None):
    """Maximum likelihood over the free parameters (those in ``fixed`` held) *and* the combined
    model's a, b: alternate a weighted least-squares fit at fixed (a, b) with the exact optimum of
    (a, b) at fixed residuals. Neither step can lower the likelihood (a local fit never ends above
    its start), so the rounds stop when it no longer rises, and the best point reached is returned.
    Returns (x, weighted rss, weights, (a, b), converged); rss is inf if x0 cannot be simulated;
    converged is False when the rounds ran out while the likelihood still rose."""
    max_rounds = MAX_ROUNDS if max_rounds is None else max_rounds
    if ab0 is None:     # unweighted fit first: its residual scale starts a, and b at 5 %
        x, rss, _ = local_fit(problem, x0, np.ones(problem.n_data), fixed, "least_squares", use_jacobian, max_nfev, engine)
        if not np.isfinite(rss):
            return x, rss, np.ones(problem.n_data), (1.0, 0.05), True
        ab0 = (max(math.sqrt(rss / problem.n_data) * 0.5, 1e-300), 0.05)
    x, ab = np.asarray(x0, dtype=float), tuple(ab0)
    best = None         # (loglik, x, rss, weights, ab)
    converged = False
    for _ in range(max_rounds):
        weights = problem.combined_weights(*ab)
        x, rss, _ = local_fit(problem, x, weights, fixed, "least_squares", use_jacobian, max_nfev, engine)
        if not np.isfinite(rss):   # a local fit that could not simulate reports rss = inf
            break
        if best is None or problem.loglik(rss, weights) > best[0]:
            best = (problem.loglik(rss, weights), x, rss, weights, ab)
        try:
            residual = problem.y - problem.predict(x)[0]
        except SolverError:     # cannot happen at a point just simulated, unless the model is flaky
            break
        ab = combined_noise_parameters(problem, residual, ab)
        weights = problem.combined_weights(*ab)
        r = weights * residual
        rss = float(r @ r)
        loglik = problem.loglik(rss, weights)
        if loglik <= best[0] + 1e-10 * (1 + abs(loglik)):
            converged = True
            if loglik > best[0]:
                best = (loglik, x, rss, weights, ab)
            break
        best = (loglik, x, rss, weights, ab)
    if best is None:
        return x, math.inf, problem.combined_weights(*ab), ab, True
    _, x, rss, weights, ab = best
    return x, rss, weights, ab, converged
