"""Fitting: lmfit optimization of a :class:`~kinetics.problem.FitProblem`, multi-start over an
executor, honest uncertainty (covariance, profile likelihood, optional MCMC), and the
:class:`FitResult` users read, save and plot.

The objective is the Gaussian negative log-likelihood. For the constant, data and proportional
noise models the noise scale has a closed-form optimum, so minimizing the sum of squares of
:meth:`~kinetics.problem.FitProblem.likelihood_residuals` *is* maximum likelihood (for
proportional noise including the weights' dependence on the curve), and the analytic Jacobian
from the model's forward sensitivities is handed to the optimizer. Local fits take ``weights``:
None for that exact likelihood, or an array of fixed weights (combined noise at given a, b; the
classic 1/|y| of ``reweight=False``).
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
import warnings
from concurrent.futures import Executor, ProcessPoolExecutor

import lmfit
import numpy as np
from scipy.optimize import minimize
from scipy.stats import chi2, qmc

from ..errors import FitError, KineticsWarning, SolverError
from .conventions import LmfitConventions

__all__ = ["fit", "FitResult", "CHI2_95"]

#: 95 % threshold of the profile likelihood ratio (chi-square, 1 degree of freedom).
CHI2_95 = float(chi2.ppf(0.95, 1))
_LOCAL_METHODS = ("least_squares", "leastsq")
_ENGINES = ("auto", "lmfit")
_PENALTY = 1e10          # residual returned where the model cannot be simulated
_MAX_ROUNDS = 50         # alternation rounds of combined noise (rates, then a and b)
_GLOBAL_METHODS = ("differential_evolution", "basinhopping", "dual_annealing", "shgo", "ampgo")


def _evaluate(problem, x, weights, jacobian=True):
    """(r, J) a local fit minimizes at internal x: the exact likelihood residuals (weights None)
    or w (y - f) at fixed weights; J is None without ``jacobian``."""
    if weights is None:
        return problem.likelihood_residuals(x, jacobian=jacobian)
    if jacobian:
        return problem.residuals_and_jacobian(x, weights)
    return problem.residuals(x, weights), None


def _loglik(problem, rss, weights):
    """Log-likelihood of a local fit's sum of squares rss (see :func:`_evaluate`)."""
    if not np.isfinite(rss):
        return -math.inf
    return problem.objective_loglik(rss) if weights is None else problem.loglik(rss, weights)


class _Objective:
    """Residuals (and the Jacobian from the same simulation) for lmfit (see :func:`_evaluate`)."""

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
            r, J = _evaluate(self.problem, x, self.weights, self.use_jacobian)
            if self.use_jacobian:
                self._key, self._J, self._r = key, J, r
        except SolverError:
            # a failed simulation in a trial step is a bad step, not the end of the fit
            self.failed = True
            return np.full(self.problem.n_data, _PENALTY)
        self.failed = False
        if self.first is None:
            self.first = (x, float(r @ r))
        return r

    def jacobian(self, params):
        x = self.vector(params)
        if self._key != x.tobytes():
            try:
                self._r, self._J = _evaluate(self.problem, x, self.weights)
            except SolverError:
                return np.zeros((self.problem.n_data, sum(params[n].vary for n in self.names)))
            self._key = x.tobytes()
        vary = [i for i, n in enumerate(self.names) if params[n].vary]
        return self._J[:, vary]


def _params(problem, x, fixed=None):
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


def _local_fit(problem, x0, weights=None, fixed=None, method="least_squares", use_jacobian=True, max_nfev=None,
               engine="auto"):
    """One local optimization; returns (x_best, rss, result) where result has ``success`` and
    ``message``. With the analytic Jacobian, ``least_squares`` runs on kinetics' compiled port of
    scipy's trust-region reflective method (the algorithm lmfit's least_squares calls, without
    its per-iteration Python cost); ``engine="lmfit"`` or any other method goes through lmfit."""
    if weights is None and getattr(problem, "scalar_objective", False):
        k = problem.profiled_scale
        if k is not None and not (fixed and k in fixed) and use_jacobian and engine != "lmfit":
            return _profiled_scale_fit(problem, x0, fixed, max_nfev)
        return _scalar_fit(problem, x0, fixed, max_nfev)
    if weights is None and problem.noise == "proportional":
        return _proportional_fit(problem, x0, fixed, method, use_jacobian, max_nfev, engine)
    return _engine_fit(problem, x0, weights, fixed, method, use_jacobian, max_nfev, engine)


def _engine_fit(problem, x0, weights, fixed, method, use_jacobian, max_nfev, engine):
    """One local optimization on the engine's optimizer (see :func:`_local_fit`)."""
    if engine != "lmfit" and method == "least_squares" and use_jacobian:
        return _trf_fit(problem, x0, weights, fixed, max_nfev)
    return _lmfit_fit(problem, x0, weights, fixed, method, use_jacobian, max_nfev)


def _proportional_fit(problem, x0, fixed, method, use_jacobian, max_nfev, engine):
    """:func:`_local_fit` of the exact proportional-noise likelihood from a start that may be far
    off: far from the data the weights 1/|f_i| swing by orders of magnitude and the exact
    objective is slow to cross that terrain, so the fit first minimizes with the measurements'
    weights 1/|y_i| (a nearby, better-behaved objective), then the exact likelihood from there.
    That detour must not cost the start its own merit: if the exact fit ends above the start's
    likelihood, the exact fit is run from the start itself and the better end is kept."""
    def exact(x):
        return _engine_fit(problem, x, None, fixed, method, use_jacobian, max_nfev, engine)
    x1, rss1, _ = _engine_fit(problem, x0, problem.weights, fixed, method, use_jacobian, max_nfev, engine)
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


def _scalar_fit(problem, x0, fixed=None, max_nfev=None):
    """:func:`_local_fit` of a likelihood that is not a sum of squares (sigma estimated with
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
        return base, math.inf, _Failed(f"the model cannot be simulated at the start: {exc}")
    x = base.copy()
    x[free] = res.x
    message = res.message if isinstance(res.message, str) else str(res.message)
    res.message = f"L-BFGS-B: {message}"
    return _no_worse_than_start(x, 2.0 * float(res.fun), res, start[0] if start else None)


def _profiled_scale_fit(problem, x0, fixed=None, max_nfev=None):
    """:func:`_local_fit` when one noise parameter s is the sigma of every row (normal noise):
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
        return base, math.inf, _Failed(f"the model cannot be simulated at the start: {exc}")
    x = base.copy()
    x[free] = res.x
    s_hat = math.sqrt(float(res.fun @ res.fun) / problem.n_data)
    if s_hat > 0:
        x[k] = math.log10(s_hat) if problem.log_mask[k] else s_hat
    else:       # a perfect fit: the likelihood is unbounded; sigma at its lower bound
        x[k] = lo[k]
    if not lo[k] <= x[k] <= hi[k]:
        return _scalar_fit(problem, np.clip(x, lo, hi), fixed, max_nfev)
    try:
        value = problem.negative_loglik(x)[0]
    except SolverError as exc:
        return base, math.inf, _Failed(f"the model cannot be simulated at the fitted point: {exc}")
    return _no_worse_than_start(x, 2.0 * value, res, start[0] if start else None)


class _Failed:
    success = False

    def __init__(self, message):
        self.message = message


class _KeptStart(_Failed):
    """The outcome of a local fit that ended above its start (or where the model cannot be
    simulated): the start is kept, but it is not known to be an optimum."""

    def __init__(self, message):
        self.message = message


def _no_worse_than_start(x, rss, result, start):
    """A local fit never ends above the point it started from: if the optimizer's end is worse
    than ``start`` = (x0, rss0) (or could not be simulated), return the start instead."""
    if start is not None and np.isfinite(start[1]) and not rss <= start[1]:
        return start[0], start[1], _KeptStart(f"the optimizer ended above its start ({result.message}); "
                                               "kept the start")
    return x, rss, result


def _trf_fit(problem, x0, weights=None, fixed=None, max_nfev=None):
    """:func:`_local_fit` on :mod:`kinetics.trust_region` (same settings as the lmfit path)."""
    from ..numerics.trust_region import least_squares_trf
    lo, hi = problem.internal_bounds()
    base = np.clip(np.asarray(x0, dtype=float), lo, hi)
    free = np.array([i for i in range(len(base)) if not (fixed and i in fixed)], dtype=int)
    start = []      # the first evaluation (at the start, moved inside the bounds)
    if len(free) == len(base):
        def fun_and_jac(z):
            r, J = _evaluate(problem, z, weights)
            if not start:
                start.append((z.copy(), float(r @ r)))
            return r, J
    else:
        def fun_and_jac(z):
            x = base.copy()
            x[free] = z
            r, J = _evaluate(problem, x, weights)
            if not start:
                start.append((x, float(r @ r)))
            return r, J[:, free]
    try:
        res = least_squares_trf(fun_and_jac, base[free], lo[free], hi[free], x_scale="jac",
                                ftol=1e-10, xtol=1e-10, gtol=1e-10, max_nfev=max_nfev)
    except SolverError as exc:   # at the start point: no fit from here
        return base, math.inf, _Failed(f"the model cannot be simulated at the start: {exc}")
    x = base.copy()
    x[free] = res.x
    return _no_worse_than_start(x, float(res.fun @ res.fun), res, start[0] if start else None)


def _lmfit_fit(problem, x0, weights=None, fixed=None, method="least_squares", use_jacobian=True, max_nfev=None):
    """:func:`_local_fit` through lmfit's Minimizer; the result is lmfit's MinimizerResult."""
    objective = _Objective(problem, weights, use_jacobian)
    params = _params(problem, x0, fixed)
    kws = {}
    if use_jacobian and method in _LOCAL_METHODS:
        kws["Dfun" if method == "leastsq" else "jac"] = objective.jacobian
    if method == "least_squares":
        kws.update(x_scale="jac", ftol=1e-10, xtol=1e-10, gtol=1e-10)
    minimizer = lmfit.Minimizer(objective.residual, params, max_nfev=max_nfev, nan_policy="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = minimizer.minimize(method=method, **kws)
    x = objective.vector(result.params)
    r = objective.residual(result.params)  # cached when the optimizer's last point is the result
    if objective.failed:    # penalty residuals: the model cannot be simulated here, not an optimum
        if objective.first is not None:
            x0, rss0 = objective.first
            return x0, rss0, _KeptStart("the optimizer ended where the model cannot be simulated; kept the start")
        return x, math.inf, _Failed("the model cannot be simulated at the start or at the optimizer's end")
    return _no_worse_than_start(x, float(r @ r), result, objective.first)


def _global_minimize(objective, params, method, seed):
    """lmfit's global ``method`` on the residuals, seeded: the same seed gives the same search."""
    if method == "shgo":         # deterministic (simplicial sampling): nothing to seed
        return lmfit.minimize(objective.residual, params, method=method)
    if method == "ampgo":        # lmfit's AMPGO draws from numpy's global generator: seed it, then restore it
        state = np.random.get_state()
        np.random.seed(seed)
        try:
            return lmfit.minimize(objective.residual, params, method=method)
        finally:
            np.random.set_state(state)
    # differential_evolution, basinhopping, dual_annealing take the seed
    return lmfit.minimize(objective.residual, params, method=method, seed=seed)


def latin_starts(problem, n, seed):
    x0 = problem.start()
    if n <= 1:
        return [x0]
    lo, hi = problem.internal_bounds()
    lo = np.where(np.isfinite(lo), lo, x0 - 2.0)
    hi = np.where(np.isfinite(hi), hi, x0 + 2.0)
    sample = qmc.LatinHypercube(d=len(x0), seed=seed).random(n - 1)
    return [x0] + list(qmc.scale(sample, lo, hi)) if np.all(hi > lo) else [x0] * n


def _run_start(args):
    problem, x0, weights, method, use_jacobian, max_nfev, engine = args
    t = time.perf_counter()
    n0, j0 = problem.nfev, problem.njev
    try:
        x, rss, res = _local_fit(problem, x0, weights, None, method, use_jacobian, max_nfev, engine)
        out = {"x": x, "rss": rss, "success": bool(res.success) and np.isfinite(rss), "message": str(res.message),
               "loglik": _loglik(problem, rss, weights)}
    except Exception as exc:  # noqa: BLE001 - a failed start is reported, not fatal
        out = {"x": x0, "rss": math.inf, "success": False, "message": f"{type(exc).__name__}: {exc}",
               "loglik": -math.inf}
    out.update(nfev=problem.nfev - n0, njev=problem.njev - j0, seconds=time.perf_counter() - t)
    return out


def _progress(total, enabled):
    if not enabled or total <= 1:
        return None
    try:
        from tqdm.auto import tqdm
        return tqdm(total=total, desc="multi-start", unit="start", leave=False, file=sys.stderr)
    except ImportError:
        return None


_EXECUTOR_CHOICES = '"auto", None (serial), "process", or a concurrent.futures.Executor'


def _check_executor(executor, origin):
    """The executor as given, or FitError: anything else (a multiprocessing.Pool, "threads")
    would otherwise run the starts serially without a word."""
    if executor is None or isinstance(executor, Executor) or (isinstance(executor, str) and executor in ("auto", "process")):
        return executor
    what = repr(executor) if isinstance(executor, str) else f"a {type(executor).__module__}.{type(executor).__qualname__}"
    hint = ""
    if executor in ("thread", "threads"):
        hint = " For threads pass concurrent.futures.ThreadPoolExecutor(n)."
    elif hasattr(executor, "imap") or hasattr(executor, "apply_async"):
        hint = " A multiprocessing.Pool is not an Executor: pass concurrent.futures.ProcessPoolExecutor(n) instead."
    raise FitError(f"{origin}: fit(executor=...) got {what}; it must be {_EXECUTOR_CHOICES} "
                   f"(ThreadPoolExecutor, ProcessPoolExecutor, or e.g. a dask client's get_executor()).{hint}")


def _multistart(problem, starts, weights, method, use_jacobian, executor, progress, max_nfev, engine):
    bar = _progress(len(starts), progress)
    results = []
    own_pool = None
    try:
        first = _run_start((problem, starts[0], weights, method, use_jacobian, max_nfev, engine))
        results.append(first)
        if bar:
            bar.update(1)
        rest = starts[1:]
        if executor == "auto":
            # a process pool pays ~1 s to start and rebuild the model: only worth it for slow fits.
            # The first start may include one-off compilation, so time a second one before deciding.
            if rest:
                second = _run_start((problem, rest[0], weights, method, use_jacobian, max_nfev, engine))
                results.append(second)
                if bar:
                    bar.update(1)
                rest = rest[1:]
                per_start = min(first["seconds"], second["seconds"])
            else:
                per_start = first["seconds"]
            executor = "process" if per_start * len(rest) > 5.0 and (os.cpu_count() or 1) > 1 else None
        if executor == "process":
            executor = own_pool = ProcessPoolExecutor(max_workers=os.cpu_count())
        if isinstance(executor, Executor) and rest:
            jobs = [(problem, x, weights, method, use_jacobian, max_nfev, engine) for x in rest]
            for out in executor.map(_run_start, jobs):
                results.append(out)
                if bar:
                    bar.update(1)
        else:
            for x in rest:
                out = _run_start((problem, x, weights, method, use_jacobian, max_nfev, engine))
                results.append(out)
                if bar:
                    bar.update(1)
    finally:
        if own_pool is not None:
            own_pool.shutdown()
        if bar:
            bar.close()
    return results


def fit(problem, *, multistart=None, seed=None, method=None, executor="auto", progress=True, profiles=True,
        use_jacobian=True, mcmc=None, max_nfev=None, reweight=None, engine=None) -> "FitResult":
    """Fit ``problem`` (a FitProblem, or a fit folder / fit.toml path) and return a FitResult.

    multistart : number of starts (the first from the given values, the rest a Latin hypercube in
        the internal (log10) space of the bounds); default from the spec, else 1.
    seed : seed of the start design and of the global methods' random search (same seed, same result).
    method : ``"least_squares"`` (default, trust-region with bounds), ``"leastsq"``, or a global
        method lmfit offers (``"differential_evolution"``, ``"basinhopping"``, ...), which is
        polished by least_squares afterwards.
    executor : ``"auto"`` (serial unless the starts are slow), ``None`` (serial), ``"process"``, or any
        ``concurrent.futures.Executor`` (thread or process pool, a dask client's executor); anything
        else is a FitError. It runs the starts of ``least_squares``/``leastsq``; the global methods
        run serially (a warning says so if an executor is given). Each start counts its own model
        evaluations, so ``nfev`` is the same serial, in threads or in processes.
    profiles : compute profile-likelihood intervals (recommended; costs a few fits per parameter).
    mcmc : None, or a dict ``{"steps": 2000, "walkers": 32, "burn": 500}`` for lmfit's emcee sampler.
    reweight : proportional noise only: True (the default) maximizes the exact likelihood of
        sigma_i = s |f_i|, weights at the fitted curve included (unbiased); False keeps the
        classic weights 1/|y| of the measurements (the likelihood of sigma_i = s |y_i|; biased by
        a few per cent at 10 % noise, but the objective most other tools minimize).
    engine : ``"auto"`` (default): with ``least_squares`` and the analytic Jacobian, the starts
        and profile fits run on :mod:`kinetics.trust_region`, a compiled port of the
        trust-region reflective algorithm that lmfit's least_squares calls in scipy, and the best
        start is finished by lmfit; ``"lmfit"``: every local fit through lmfit's Minimizer.
    """
    from .problem import MAX_MULTISTART, FitProblem, load_fit_spec
    if not isinstance(problem, FitProblem):
        problem = load_fit_spec(problem)
    settings = problem.settings
    multistart = int(multistart if multistart is not None else settings.get("multistart", 1))
    seed = seed if seed is not None else settings.get("seed", 0)
    method = method or settings.get("method", "least_squares")
    max_nfev = max_nfev or settings.get("max_nfev")
    engine = engine or settings.get("engine", "auto")
    if engine not in _ENGINES:
        raise FitError(f"{problem.origin}: unknown engine '{engine}'; use one of {', '.join(_ENGINES)}")
    if method not in _LOCAL_METHODS + _GLOBAL_METHODS:
        raise FitError(f"{problem.origin}: unknown optimization method '{method}'; use one of "
                       f"{', '.join(_LOCAL_METHODS + _GLOBAL_METHODS)}")
    if multistart < 1:
        raise FitError(f"{problem.origin}: multistart must be at least 1")
    if multistart > MAX_MULTISTART:       # the start design alone would exhaust memory
        raise FitError(f"{problem.origin}: multistart = {multistart:,} is more than the limit of "
                       f"{MAX_MULTISTART:,} starts; use fewer (a few dozen are usually enough)")
    executor = _check_executor(executor, problem.origin)
    if mcmc and problem.noise == "per-observable":
        raise FitError(f"{problem.origin}: MCMC is not available for per-observable likelihoods (noise, sigma, "
                       "transformation or distribution under [observables], priors, PEtab problems) yet; fit "
                       "without --mcmc and read the profile-likelihood intervals")
    t_start = time.perf_counter()
    problem.nfev = problem.njev = 0
    noise_params = {}
    notes = []      # what the stages after the starts did, for the result's message
    reweight = settings.get("reweight", True) if reweight is None else reweight
    # None: the local fits minimize the exact likelihood (FitProblem.likelihood_residuals)
    weights = problem.weights if problem.noise == "proportional" and not reweight else None
    if problem.noise == "combined":
        weights, noise_params = _fit_combined_noise(problem, use_jacobian, max_nfev, engine)
    if method in _GLOBAL_METHODS:
        if problem.scalar_objective:
            raise FitError(f"{problem.origin}: method '{method}' needs a sum-of-squares likelihood; this one (noise "
                           "parameters estimated, Laplace noise or priors) is fitted with least_squares starts")
        lo, hi = problem.internal_bounds()
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise FitError(f"{problem.origin}: method '{method}' needs finite bounds (min and max) on every free parameter")
        if executor is not None and executor != "auto":
            warnings.warn(f"{problem.origin}: method '{method}' runs serially in this process; the executor is used "
                          "only to run the starts of least_squares/leastsq in parallel", KineticsWarning, stacklevel=2)
        objective = _Objective(problem, weights, use_jacobian=False)
        n0, j0, t0 = problem.nfev, problem.njev, time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = _global_minimize(objective, _params(problem, problem.start()), method, seed)
        n_global, j_global, t_global = problem.nfev - n0, problem.njev - j0, time.perf_counter() - t0
        polished = _run_start((problem, objective.vector(res.params), weights, "least_squares", use_jacobian, max_nfev, engine))
        # the global search's evaluations belong to this run
        polished.update(nfev=polished["nfev"] + n_global, njev=polished["njev"] + j_global,
                        seconds=polished["seconds"] + t_global)
        runs = [polished]
        local_method = f"{method} + least_squares"
    else:
        starts = latin_starts(problem, multistart, seed)
        runs = _multistart(problem, starts, weights, method, use_jacobian, executor, progress, max_nfev, engine)
        local_method = method
    finite = [r for r in runs if np.isfinite(r["rss"])]
    if not finite:
        raise FitError(f"{problem.origin}: every start failed; first message: {runs[0]['message']}. "
                       "Check the bounds and starting values in the fit spec.")
    best = min(finite, key=lambda r: r["rss"])
    x_best, rss_best = best["x"], best["rss"]
    success = bool(best["success"])
    extra = (problem.nfev, problem.njev)
    if engine != "lmfit" and use_jacobian and local_method.endswith("least_squares") and not problem.scalar_objective:
        # the best start is finished by lmfit itself: from a converged point its least_squares
        # confirms the optimum in a few evaluations (and would take over if it found better)
        try:
            x_lm, rss_lm, res_lm = _lmfit_fit(problem, x_best, weights, None, "least_squares", use_jacobian, max_nfev)
        except Exception as exc:  # noqa: BLE001 - the best start stands; say why it was not polished
            notes.append(f"the final lmfit polish failed ({type(exc).__name__}: {exc}); the best start is reported")
        else:
            if rss_lm < rss_best:
                x_best, rss_best = x_lm, rss_lm
                success = bool(res_lm.success)
                notes.append(f"improved by the final lmfit polish: {res_lm.message}")
    if problem.noise == "combined":
        # the starts ran at the noise estimate from the spec's start: re-estimate a, b jointly
        # with the rates from the best start
        ab = (noise_params["sigma_abs"], noise_params["sigma_rel"])
        x_best, rss_best, weights, ab, converged = _combined_fit(problem, x_best, None, ab, use_jacobian, max_nfev,
                                                                 engine)
        noise_params = {"sigma_abs": float(ab[0]), "sigma_rel": float(ab[1])}
        if not converged:
            success = False
            notes.append(_combined_not_converged(problem))
        _warn_collapsed_absolute_noise(problem, ab)
    if weights is None and problem.noise != "per-observable":
        # report sigma_i = s / w_i with the weights 1/sigma at the optimum (the likelihood is the same)
        f, _ = problem.predict(x_best)
        weights = problem.likelihood_weights(f)
        rss_best = float(np.sum((weights * (problem.y - f)) ** 2))
    extra = (problem.nfev - extra[0], problem.njev - extra[1])
    result = FitResult(problem, x_best, rss_best, weights, noise_params, runs, local_method,
                       time.perf_counter() - t_start, use_jacobian, engine)
    # success and message describe the reported optimum: its start, then what followed
    result.success = success and np.isfinite(result.loglik)
    result.message = "; ".join([str(best["message"])] + notes)
    # the local fits' own objective, for profile points (None: the exact likelihood)
    result.objective_weights = None if problem.noise != "combined" and not (
        problem.noise == "proportional" and not reweight) else weights
    result.nfev += extra[0]
    result.njev += extra[1]
    if problem.noise == "per-observable":
        # per-observable noise: chi2 is sum ((t(y) - t(f)) / sigma)^2, not the objective's "rss"
        result.chisqr = problem.chi2(result.x)
        result.redchi = result.chisqr / (result.n_data - result.n_free) if result.n_data > result.n_free else math.inf
        if problem.scalar_objective:
            if method in _LOCAL_METHODS:
                result.method = ("least_squares (noise scale in closed form)" if problem.profiled_scale is not None
                                 and use_jacobian and engine != "lmfit" else "L-BFGS-B")
    if profiles:
        result.compute_profiles(progress=progress)
    if mcmc:
        result.sample(**(mcmc if isinstance(mcmc, dict) else {}))
    result.seconds = time.perf_counter() - t_start
    return result


def _fit_combined_noise(problem, use_jacobian, max_nfev, engine="auto"):
    """Weights and noise parameters of the combined model, from the spec's start."""
    _, _, weights, (a, b), _ = _combined_fit(problem, problem.start(), None, None, use_jacobian, max_nfev, engine)
    return weights, {"sigma_abs": float(a), "sigma_rel": float(b)}


def _combined_noise_bounds(problem):
    """Bounds of log a and log b for sigma_i = sqrt(a^2 + b^2 y_i^2)."""
    scale = max(float(np.max(np.abs(problem.y))), 1e-300)
    return [(math.log(1e-10 * scale), math.log(10 * scale)), (math.log(1e-8), math.log(10.0))]


def _warn_collapsed_absolute_noise(problem, ab):
    """The combined likelihood is unbounded when a -> 0 while points are fitted exactly (typically
    measured zeros the model reproduces): a then sits on its lower bound, an arbitrary number, and
    so do the log-likelihood and the information criteria. Say so."""
    lower = math.exp(_combined_noise_bounds(problem)[0][0])
    zeros = int(np.sum(problem.y == 0))     # where sigma_i = a: without them the limit a -> 0 is finite
    if ab[0] <= lower * (1 + 1e-6) and zeros:
        why = f" ({zeros} data value(s) are exactly 0 and the model fits them (almost) exactly)"
        warnings.warn(f"{problem.origin}: combined noise: the absolute term sigma_abs collapsed to its lower bound "
                      f"{ab[0]:.3g} (1e-10 of the largest |y|){why}. The likelihood grows without limit as it "
                      "shrinks, so the log-likelihood, AIC/AICc/BIC and comparisons with other models are "
                      "arbitrary. Drop or censor those points, give them a sigma column (noise = \"data\"), or "
                      "use noise = \"proportional\" or \"constant\".", KineticsWarning, stacklevel=3)


def _combined_not_converged(problem):
    message = (f"the alternation of rates and combined-noise parameters stopped after {_MAX_ROUNDS} rounds "
               "without converging; the reported point is the best one reached, possibly not the optimum")
    warnings.warn(f"{problem.origin}: {message}", KineticsWarning, stacklevel=3)
    return message


def _combined_noise_parameters(problem, residual, ab0):
    """(a, b) of sigma_i = sqrt(a^2 + b^2 y_i^2) that maximize the Gaussian likelihood of fixed
    residuals y - f: a two-parameter problem with an analytic gradient, no simulation."""
    y2, e2 = problem.y ** 2, residual ** 2
    bounds = _combined_noise_bounds(problem)

    def nll_and_gradient(log_ab):
        a2, b2 = np.exp(2 * log_ab)
        s2 = a2 + b2 * y2
        common = (s2 - e2) / (s2 * s2)
        return 0.5 * float(np.sum(e2 / s2 + np.log(s2))), np.array([a2 * np.sum(common), b2 * np.sum(common * y2)])

    start = np.clip(np.log(ab0), [lo for lo, _ in bounds], [hi for _, hi in bounds])
    res = minimize(nll_and_gradient, start, jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"ftol": 1e-14, "gtol": 1e-10})
    return tuple(np.exp(res.x))


def _combined_fit(problem, x0, fixed, ab0, use_jacobian, max_nfev, engine="auto", max_rounds=None):
    """Maximum likelihood over the free parameters (those in ``fixed`` held) *and* the combined
    model's a, b: alternate a weighted least-squares fit at fixed (a, b) with the exact optimum of
    (a, b) at fixed residuals. Neither step can lower the likelihood (a local fit never ends above
    its start), so the rounds stop when it no longer rises, and the best point reached is returned.
    Returns (x, weighted rss, weights, (a, b), converged); rss is inf if x0 cannot be simulated;
    converged is False when the rounds ran out while the likelihood still rose."""
    max_rounds = _MAX_ROUNDS if max_rounds is None else max_rounds
    if ab0 is None:     # unweighted fit first: its residual scale starts a, and b at 5 %
        x, rss, _ = _local_fit(problem, x0, np.ones(problem.n_data), fixed, "least_squares", use_jacobian, max_nfev, engine)
        if not np.isfinite(rss):
            return x, rss, np.ones(problem.n_data), (1.0, 0.05), True
        ab0 = (max(math.sqrt(rss / problem.n_data) * 0.5, 1e-300), 0.05)
    x, ab = np.asarray(x0, dtype=float), tuple(ab0)
    best = None         # (loglik, x, rss, weights, ab)
    converged = False
    for _ in range(max_rounds):
        weights = problem.combined_weights(*ab)
        x, rss, _ = _local_fit(problem, x, weights, fixed, "least_squares", use_jacobian, max_nfev, engine)
        if not np.isfinite(rss):   # a local fit that could not simulate reports rss = inf
            break
        if best is None or problem.loglik(rss, weights) > best[0]:
            best = (problem.loglik(rss, weights), x, rss, weights, ab)
        try:
            residual = problem.y - problem.predict(x)[0]
        except SolverError:     # cannot happen at a point just simulated, unless the model is flaky
            break
        ab = _combined_noise_parameters(problem, residual, ab)
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


class FitResult(LmfitConventions):
    """The outcome of :func:`fit`: estimates, statistics, uncertainty, and ways to show them.

    ``params`` is an :class:`lmfit.Parameters` on the natural scale (stderr from the covariance),
    ``ci95`` the profile-likelihood intervals, ``identifiable`` their closure."""

    def __init__(self, problem, x, rss, weights, noise_params, runs, method, seconds, use_jacobian, engine="auto"):
        self.problem = problem
        self.x = np.asarray(x, dtype=float)
        self.rss = float(rss)
        self.weights = problem.weights if weights is None else weights
        self.noise_params = dict(noise_params)
        self.runs = runs
        self.method = method
        self.seconds = seconds
        self.use_jacobian = use_jacobian
        self.engine = engine
        # model evaluations of the optimization (simulations; those with sensitivities counted in njev)
        self.nfev = int(sum(r["nfev"] for r in runs))
        self.njev = int(sum(r["njev"] for r in runs))
        N, K = problem.n_data, problem.n_free
        if problem.noise in ("constant", "proportional"):
            self.noise_params["sigma" if problem.noise == "constant" else "sigma_rel"] = problem.noise_scale(self.rss)
        self.n_data, self.n_free, self.n_noise = N, K, problem.n_noise
        self.loglik = problem.loglik(self.rss, self.weights)
        k = K + self.n_noise
        self.aic = 2 * k - 2 * self.loglik
        self.aicc = self.aic + (2 * k * (k + 1) / (N - k - 1) if N - k - 1 > 0 else math.inf)
        self.bic = k * math.log(N) - 2 * self.loglik
        # as lmfit reports it: the sum of squared weighted residuals (weights 1, 1/|y| or 1/sigma)
        self.chisqr = self.rss
        self.redchi = self.chisqr / (N - K) if N > K else math.inf
        # best-optimum statistics over starts
        finite = np.array([r["rss"] for r in runs])
        nll = np.array([-r["loglik"] if "loglik" in r else
                        (-problem.loglik(r["rss"], self.weights) if np.isfinite(r["rss"]) else math.inf) for r in runs])
        self.start_nll = nll
        self.n_starts = len(runs)
        self.n_at_best = int(np.sum(nll - nll.min() < 1e-3 + 1e-6 * abs(nll.min())))
        self.success = bool(any(r["success"] for r in runs)) and np.isfinite(self.rss)
        self.message = next((r["message"] for r in runs if r["rss"] == self.rss), runs[0]["message"])
        self._covariance()
        self.profiles = {}
        self.ci95 = {n: (None, None) for n in problem.free}
        self.identifiable = {n: None for n in problem.free}
        # parameter -> reasons its profile was cut short by failed simulations (see compute_profiles)
        self.profile_failures = {}
        self.mcmc = None
        # the weights profile fits minimize with (None: the noise model's exact likelihood, see fit)
        self.objective_weights = self.weights

    # ------------------------------------------------------------ uncertainty
    def _covariance(self):
        p = self.problem
        r, J = p.residuals_and_jacobian(self.x, self.weights)
        N, K = p.n_data, p.n_free
        scale = self.rss / (N - K) if p.noise in ("constant", "proportional") and N > K else 1.0
        try:
            # one thin SVD J = U S V^T (N x K, never N x N) gives both the covariance
            # pinv(J^T J) = V S^-2 V^T (same cut-off as numpy's pinv of J^T J: s^2 > 1e-15 s_max^2)
            # and the rank
            _, sv, vt = np.linalg.svd(J, full_matrices=False)
            s2 = sv * sv
            inv_s2 = np.zeros_like(s2)
            if s2.size:
                kept = s2 > 1e-15 * s2.max()
                inv_s2[kept] = 1.0 / s2[kept]
            cov = (vt.T * inv_s2) @ vt * scale
            rank = int(np.sum(sv > sv.max() * max(J.shape) * np.finfo(float).eps)) if sv.size and sv.max() > 0 else 0
            self._rank = rank
            if vt.shape[0] < K:     # fewer data than parameters: the null space needs the full V (K x K)
                vt = np.linalg.svd(J, full_matrices=True)[2]
            # parameters in the Jacobian's null space are not determined at all: pinv would hide
            # that behind small numbers, so give them infinite variance
            if rank < K:
                undetermined = np.abs(vt[rank:]).max(axis=0) > 1e-6
                cov[undetermined, :] = np.nan
                cov[:, undetermined] = np.nan
                cov[undetermined, undetermined] = np.inf
        except np.linalg.LinAlgError:
            cov = np.full((K, K), np.nan)
            self._rank = 0
        self.covariance_internal = cov
        natural = p.to_natural(self.x)
        deriv = np.where(p.log_mask, natural * math.log(10.0), 1.0)
        self.covariance = cov * np.outer(deriv, deriv)
        with np.errstate(invalid="ignore"):
            sd = np.sqrt(np.clip(np.diag(self.covariance), 0, None))
        with np.errstate(invalid="ignore", divide="ignore"):
            self.correlation = self.covariance / np.outer(sd, sd)
        self.stderr = sd
        self.values = natural
        self.jacobian_rank = int(self._rank) if np.isfinite(J).all() else 0

    @property
    def params(self) -> lmfit.Parameters:
        p = self.problem
        out = lmfit.Parameters()
        for i, name in enumerate(p.fit_names):
            lo, hi = p.fit_bounds[i]
            free = name in p.free
            value = self.values[p.free.index(name)] if free else p.fit_values[i]
            out.add(name, value=float(value), min=lo, max=hi, vary=free)
            if free:
                j = p.free.index(name)
                out[name].stderr = float(self.stderr[j])
                out[name].correl = {other: float(self.correlation[j, k]) for k, other in enumerate(p.free) if k != j}
        return out

    @property
    def best_values(self) -> dict:
        return {n: float(v) for n, v in zip(self.problem.fit_names, self.problem.phi(self.x))}

    def _profile_point(self, x, j):
        """Re-optimize every other free parameter (and, for combined noise, a and b too) with
        parameter j held at x[j]; returns (x, -2 * drop of the log-likelihood, None), or
        (x, None, why) where the model cannot be simulated."""
        p = self.problem
        why = "the model cannot be simulated there"
        if p.noise == "combined":
            ab = (self.noise_params["sigma_abs"], self.noise_params["sigma_rel"])
            x, rss, weights, _, _ = _combined_fit(p, x, {j}, ab, self.use_jacobian, None, self.engine)
            loglik = p.loglik(rss, weights)
        else:
            weights = self.objective_weights
            x, rss, res = _local_fit(p, x, weights, fixed={j}, use_jacobian=self.use_jacobian, engine=self.engine)
            loglik = _loglik(p, rss, weights)
            if isinstance(res, _Failed):
                why = str(res.message)
        if not np.isfinite(rss):   # a local fit that could not simulate reports rss = inf
            return x, None, why
        return x, -2 * (loglik - self.loglik), None

    def compute_profiles(self, params=None, threshold=CHI2_95, max_steps=40, progress=False):
        """Profile likelihood of each free parameter: re-optimize the others along a path and find
        where twice the log-likelihood drops by ``threshold``. A side that stays below it up to the
        bound flags non-identifiability; a side cut short because the model cannot be simulated
        further out leaves identifiability undetermined (``identifiable`` None) and says so.

        Each profile records why each side ended (``lower_stop``, ``upper_stop``): "threshold"
        (the interval closes), "bound" (flat up to the parameter's bound, or six decades / a
        million standard errors away), "max_steps", or "simulation failed at VALUE: reason"."""
        p = self.problem
        names = list(params or p.free)
        lo_b, hi_b = p.internal_bounds()
        bar = _progress(len(names), progress)
        for name in names:
            j = p.free.index(name)

            def natural(v, j=j):
                return None if v is None else float(10 ** v if p.log_mask[j] else v)
            sd = math.sqrt(max(self.covariance_internal[j, j], 0)) if np.isfinite(self.covariance_internal[j, j]) else 0.1
            step0 = min(max(sd, 1e-3), 0.5) if p.log_mask[j] else max(sd, 1e-6 * (abs(self.x[j]) + 1))
            # log10 parameters: 6 decades either side; linear ones: a million standard errors
            max_distance = 6.0 if p.log_mask[j] else 1e6 * max(sd, 1e-6 * (abs(self.x[j]) + 1))
            points = [(self.x[j], 0.0)]
            ends, stops = {}, {}
            for direction in (-1, 1):
                bound = lo_b[j] if direction < 0 else hi_b[j]
                xs = self.x.copy()
                step, prev_v, prev_d = step0, self.x[j], 0.0
                closed = False
                stops[direction] = "max_steps"
                for _ in range(max_steps):
                    v = prev_v + direction * step
                    # never wander further than max_distance from the estimate (an unbounded flat profile)
                    limit = self.x[j] + direction * max_distance
                    if direction * (limit - bound) < 0:
                        bound = limit
                    at_bound = (direction < 0 and v <= bound) or (direction > 0 and v >= bound)
                    if at_bound:
                        v = bound
                    xs[j] = v
                    xs, d, why = self._profile_point(xs, j)
                    if d is None:
                        # the model cannot be simulated out here: the side stays open, for a reason
                        # that says nothing about what the data determine
                        stops[direction] = f"simulation failed at {name} = {natural(v):.6g}: {why}"
                        break
                    points.append((v, d))
                    if d >= threshold:
                        # refine the crossing: interpolate sqrt(delta), linear in the parameter near the optimum
                        for _ in range(3):
                            a, b = math.sqrt(max(prev_d, 0)), math.sqrt(d)
                            guess = prev_v + (v - prev_v) * (math.sqrt(threshold) - a) / (b - a) if b > a else 0.5 * (prev_v + v)
                            xg = xs.copy()
                            xg[j] = guess
                            xg, dg, _ = self._profile_point(xg, j)
                            if dg is None:
                                break
                            points.append((guess, dg))
                            if abs(dg - threshold) < 0.02:
                                v, d = guess, dg
                                break
                            if dg < threshold:
                                prev_v, prev_d = guess, dg
                            else:
                                v, d = guess, dg
                        ends[direction] = v if abs(d - threshold) < 0.02 else prev_v + (v - prev_v) * \
                            (math.sqrt(threshold) - math.sqrt(max(prev_d, 0))) / max(math.sqrt(d) - math.sqrt(max(prev_d, 0)), 1e-12)
                        closed = True
                        stops[direction] = "threshold"
                        break
                    if at_bound:
                        stops[direction] = "bound"
                        break
                    grow = 1.6 if d - prev_d < 0.5 else 1.0
                    prev_v, prev_d = v, d
                    step *= grow
                if not closed:
                    ends[direction] = None
            pts = sorted(points)
            lower, upper = natural(ends[-1]), natural(ends[1])
            self.profiles[name] = {
                "values": [float(10 ** v) if p.log_mask[j] else float(v) for v, _ in pts],
                "delta": [float(d) for _, d in pts], "lower": lower, "upper": upper,
                "lower_stop": stops[-1], "upper_stop": stops[1],
            }
            self.ci95[name] = (lower, upper)
            failed = [stop for stop in stops.values() if stop.startswith("simulation failed")]
            if lower is not None and upper is not None:
                self.identifiable[name] = True
            elif any(stop in ("bound", "max_steps") for stop in stops.values()):
                self.identifiable[name] = False
            else:   # open only where simulations failed: undetermined, not "not identifiable"
                self.identifiable[name] = None
            self.profile_failures.pop(name, None)
            if failed:
                self.profile_failures[name] = failed
            if bar:
                bar.update(1)
        if bar:
            bar.close()
        bad = [n for n in names if self.identifiable[n] is False]
        if bad:
            warnings.warn(f"{p.origin}: parameter(s) {', '.join(bad)} are not identifiable from these data: their "
                          "likelihood profile stays flat up to a bound, so the data do not pin them down. Fix them, "
                          "add measurements that depend on them, or report only their supported range.",
                          KineticsWarning, stacklevel=2)
        cut = [n for n in names if n in self.profile_failures]
        if cut:
            details = "; ".join(f"{n}: {'; '.join(self.profile_failures[n])}" for n in cut)
            warnings.warn(f"{p.origin}: the likelihood profile of {', '.join(cut)} was cut short because the model "
                          f"cannot be simulated further out ({details}). The interval stays open on that side, which "
                          "says nothing about identifiability; narrow the parameter's bounds to where the model can "
                          "be simulated, or check the model there.", KineticsWarning, stacklevel=2)
        return self.profiles

    def sample(self, steps=2000, walkers=None, burn=None, thin=1, seed=0):
        """MCMC with lmfit's emcee interface (needs the ``mcmc`` extra: pip install emcee)."""
        try:
            import emcee  # noqa: F401
        except ImportError:
            raise FitError("MCMC needs emcee: pip install 'kinetics[mcmc]' (or pip install emcee)") from None
        p = self.problem
        objective = _Objective(p, self.weights, use_jacobian=False)
        params = _params(p, self.x)
        known_sigma = p.noise in ("data", "combined")
        if not known_sigma:
            # the bounds are a flat prior on log(sigma): centred on the estimate, so that they never
            # bind whatever the data's units (fixed bounds cut the posterior of particle counts short)
            ln_sigma = math.log(max(p.noise_scale(self.rss), 1e-300))
            params.add("__lnsigma", value=ln_sigma, min=ln_sigma - 30.0, max=ln_sigma + 30.0)
        walkers = walkers or max(4 * (len(params)), 16)
        burn = steps // 4 if burn is None else burn
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = lmfit.Minimizer(objective.residual, params, nan_policy="omit").emcee(
                steps=steps, nwalkers=walkers, burn=burn, thin=thin, is_weighted=known_sigma, seed=seed, progress=False)
        chain = res.flatchain[[n for n in p.internal_names()]].to_numpy()
        natural = p.to_natural(chain)
        self.mcmc = {"samples": natural, "names": list(p.free),
                     "acceptance": float(np.mean(res.acceptance_fraction))}
        return self.mcmc

    # ---------------------------------------------------------------- outputs
    def predict(self, times, condition=None, params=None):
        """Fitted curves (dict name -> array) of one condition on a time grid."""
        condition = condition or self.problem.condition_names[0]
        phi = self.problem.phi(self.x) if params is None else params
        return self.problem.curves(phi, np.asarray(times, dtype=float), condition)

    def predict_ensemble(self, times, n_samples=1000, condition=None, source="auto", noise=True, seed=0):
        """Posterior-predictive :class:`~kinetics.Ensemble` of one condition at ``times``:
        ``n_samples`` parameter sets drawn from the MCMC samples (``source="mcmc"``, the default
        when the fit has them) or from the covariance (``"covariance"``: multivariate normal on
        the internal scale, log10 for log-scaled parameters), simulated together; with ``noise``
        the measured series also carry measurement-noise realisations of the fit's noise model.
        ``ensemble.quantiles([0.025, 0.5, 0.975])`` gives the bands."""
        from .predictive import ensemble_from_draws, parameter_draws
        draws = parameter_draws(self.problem, self.x, self.covariance_internal, self.mcmc, n_samples, source, seed)
        return ensemble_from_draws(self.problem, draws, times, condition, self.problem.noise, self.noise_params,
                                   noise, seed)

    def fit_report(self) -> str:
        from ..report.text import fit_report
        return fit_report(self)

    def to_dict(self) -> dict:
        from ..io.results import result_dict
        return result_dict(self)

    def to_json(self, path=None) -> str:
        import json
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False, default=float)
        if path is not None:
            from ..io.files import atomic_write
            atomic_write(path, text + "\n")
        return text

    def plot_fit(self, ax=None, logy=False, band=True):
        from ..report.plots import plot_fit
        return plot_fit(self, ax=ax, logy=logy, band=band)

    def plot_residuals(self, ax=None):
        from ..report.plots import plot_residuals
        return plot_residuals(self, ax=ax)

    def plot_profiles(self):
        from ..report.plots import plot_profiles
        return plot_profiles(self)

    def plot_corner(self):
        from ..report.plots import plot_corner
        return plot_corner(self)

    def save(self, folder, formats=("png",)) -> list:
        """Write result.json, report.txt, report.html and the plots into ``folder`` (as a whole);
        ``formats``: figure formats besides PNG, e.g. ("png", "svg") or ("png", "pdf")."""
        from ..report.plots import save_result
        return save_result(self, folder, formats=formats)

    def __repr__(self):
        return f"<FitResult {self.problem.model.name}: -2 loglik {-2 * self.loglik:.4g}, AICc {self.aicc:.4g}, {self.n_free} free>"
