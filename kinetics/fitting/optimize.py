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
import time
import warnings
from concurrent.futures import Executor

import lmfit
import numpy as np
from scipy.stats import qmc

from ..errors import FitError, KineticsWarning, SolverError
from .conventions import LmfitConventions
# the local fits, and the executors' checks, live in their own modules (profiles and sampling use
# them too); the old private names stay for this module's code
from . import local
from .executors import check_executor as _check_executor
from .executors import progress_bar, run_tasks
from .local import LOCAL_METHODS as _LOCAL_METHODS
from .local import Objective as _Objective
from .local import combined_fit as _combined_fit
from .local import combined_noise_bounds as _combined_noise_bounds
from .local import lmfit_fit as _lmfit_fit
from .local import lmfit_params as _params
from .local import local_fit as _local_fit
from .local import local_loglik as _loglik
from .profile import CHI2_95

__all__ = ["fit", "FitResult", "CHI2_95"]

_ENGINES = ("auto", "lmfit")
_GLOBAL_METHODS = ("differential_evolution", "basinhopping", "dual_annealing", "shgo", "ampgo")


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
    problem, x0, weights, method, use_jacobian, max_nfev, engine = args[:7]
    tolerance = args[7] if len(args) > 7 else local.TOLERANCE
    reference = args[8] if len(args) > 8 else None
    t = time.perf_counter()
    n0, j0 = problem.nfev, problem.njev
    try:
        x, rss, res = _local_fit(problem, x0, weights, None, method, use_jacobian, max_nfev, engine, tolerance,
                                 reference)
        out = {"x": x, "rss": rss, "success": bool(res.success) and np.isfinite(rss), "message": str(res.message),
               "loglik": _loglik(problem, rss, weights)}
    except Exception as exc:  # noqa: BLE001 - a failed start is reported, not fatal
        out = {"x": x0, "rss": math.inf, "success": False, "message": f"{type(exc).__name__}: {exc}",
               "loglik": -math.inf}
    out.update(nfev=problem.nfev - n0, njev=problem.njev - j0, seconds=time.perf_counter() - t)
    return out


#: starts within this much -log L (plus 1e-6 relative) of the best count as reaching it (FitResult.n_at_best)
AT_BEST_TOLERANCE = 1e-3


def _reach_threshold(problem, rss, weights):
    """The "rss" a later start must be able to reach not to be abandoned: the first start's
    rss plus the at-best tolerance of -log L (so a start that could still count as reaching the
    best optimum is never abandoned), or None where the first start has no finite value."""
    if not np.isfinite(rss) or not rss > 0:
        return None
    loglik = _loglik(problem, rss, weights)
    tolerance = AT_BEST_TOLERANCE + 1e-6 * abs(loglik)
    step = 1e-6 * rss      # -log L is an increasing function of the rss: its slope, numerically
    slope = (loglik - _loglik(problem, rss + step, weights)) / step
    return rss + tolerance / slope if slope > 0 and np.isfinite(slope) else None


def _multistart(problem, starts, weights, method, use_jacobian, executor, progress, max_nfev, engine,
                tolerance=local.TOLERANCE, abandon=False):
    """Local fits from ``starts``, the first one in this process; with ``abandon`` the others may
    be abandoned where they cannot get below the first one's end (local.CannotReach): a rule that
    does not depend on the order or the executor of the later starts."""
    bar = progress_bar(len(starts), progress, "multi-start", "start")
    results = []
    try:
        first = _run_start((problem, starts[0], weights, method, use_jacobian, max_nfev, engine, tolerance))
        results.append(first)
        if bar:
            bar.update(1)
        rest = starts[1:]
        reference = _reach_threshold(problem, first["rss"], weights) if abandon else None
        if executor == "auto":
            # a process pool pays ~1 s to start and rebuild the model: only worth it for slow fits.
            # The first start may include one-off compilation, so time a second one before deciding.
            if rest:
                second = _run_start((problem, rest[0], weights, method, use_jacobian, max_nfev, engine, tolerance,
                                     reference))
                results.append(second)
                if bar:
                    bar.update(1)
                rest = rest[1:]
                per_start = min(first["seconds"], second["seconds"])
            else:
                per_start = first["seconds"]
            executor = "process" if per_start * len(rest) > 5.0 and (os.cpu_count() or 1) > 1 else None
        jobs = [(problem, x, weights, method, use_jacobian, max_nfev, engine, tolerance, reference) for x in rest]
        results += run_tasks(_run_start, jobs, executor, bar)
    finally:
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
        else is a FitError. It runs the starts of ``least_squares``/``leastsq``, the profiles (one
        task per parameter and side) and the MCMC chains (``"auto"`` runs those two serially); the
        global methods run serially (a warning says so if an executor is given). Each start counts its own model
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
        # the best start is finished by lmfit at the full tolerance (below): the starts may stop
        # at scipy's default, the screening tolerance
        compiled = engine != "lmfit" and use_jacobian and method == "least_squares"
        polished = compiled and (not problem.scalar_objective or _sigma_residual_path(problem))
        tolerance = local.SCREENING_TOLERANCE if polished else local.TOLERANCE
        runs = _multistart(problem, starts, weights, method, use_jacobian, executor, progress, max_nfev, engine,
                           tolerance, abandon=polished)
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
    if engine != "lmfit" and use_jacobian and local_method == "least_squares" and _sigma_residual_path(problem):
        # the sigma-residual starts stopped at the screening tolerance: the best one goes on
        # at the full tolerance on the same path (lmfit has no such objective)
        x_fin, rss_fin, res_fin = _local_fit(problem, x_best, None, None, "least_squares", use_jacobian, max_nfev,
                                             engine, local.TOLERANCE)
        if rss_fin < rss_best:
            x_best, rss_best, success = x_fin, rss_fin, bool(res_fin.success)
            notes.append(f"finished at tolerance {local.TOLERANCE:g}: {res_fin.message}")
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
                compiled = use_jacobian and engine != "lmfit"
                result.method = ("least_squares (noise scale in closed form)" if problem.profiled_scale is not None
                                 and compiled else "least_squares (sigma residuals)"
                                 if problem.has_sigma_residuals and compiled else "L-BFGS-B")
    # profiles and sampling chains run on the executor given (or a process pool for "process");
    # under "auto" they stay in this process
    tasks_executor = executor if isinstance(executor, Executor) or executor == "process" else None
    if profiles:
        result.compute_profiles(progress=progress, executor=tasks_executor)
    if mcmc:
        result.sample(**{"executor": tasks_executor, **(mcmc if isinstance(mcmc, dict) else {})})
    result.seconds = time.perf_counter() - t_start
    return result


def _sigma_residual_path(problem) -> bool:
    """Whether least_squares local fits of ``problem`` run on its sigma residuals (see
    kinetics.fitting.local.local_fit): a scalar likelihood with that form and no profiled scale."""
    return bool(problem.scalar_objective and problem.has_sigma_residuals and problem.profiled_scale is None)


def _fit_combined_noise(problem, use_jacobian, max_nfev, engine="auto"):
    """Weights and noise parameters of the combined model, from the spec's start."""
    _, _, weights, (a, b), _ = _combined_fit(problem, problem.start(), None, None, use_jacobian, max_nfev, engine)
    return weights, {"sigma_abs": float(a), "sigma_rel": float(b)}


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
    message = (f"the alternation of rates and combined-noise parameters stopped after {local.MAX_ROUNDS} rounds "
               "without converging; the reported point is the best one reached, possibly not the optimum")
    warnings.warn(f"{problem.origin}: {message}", KineticsWarning, stacklevel=3)
    return message


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
        self.n_at_best = int(np.sum(nll - nll.min() < AT_BEST_TOLERANCE + 1e-6 * abs(nll.min())))
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

    def compute_profiles(self, params=None, threshold=CHI2_95, max_steps=40, progress=False, executor=None):
        """Profile likelihood of each free parameter (see :func:`kinetics.fitting.profile.compute_profiles`;
        ``executor`` runs one task per parameter and side)."""
        from .profile import compute_profiles
        return compute_profiles(self, params=params, threshold=threshold, max_steps=max_steps, progress=progress,
                                executor=executor)

    def sample(self, steps=2000, walkers=None, burn=None, thin=1, seed=0, chains=1, executor=None):
        """MCMC with lmfit's emcee interface (needs the ``mcmc`` extra: pip install emcee); see
        :func:`kinetics.fitting.sample.sample` (``chains`` independent ensembles, run over ``executor``)."""
        from .sample import sample
        return sample(self, steps=steps, walkers=walkers, burn=burn, thin=thin, seed=seed, chains=chains,
                      executor=executor)

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
