"""Profile likelihood of a :class:`~kinetics.fitting.optimize.FitResult`, one task per
parameter and side, optionally over a ``concurrent.futures.Executor``.

Each side of each profile is an independent walk from the estimate (the other free
parameters re-optimized at each step), so the sides run as separate tasks: serially in this
process, or on any executor (thread or process pool, a dask client's ``get_executor()``). A
task carries the problem (which pickles as its recipe: model text and arrays, rebuilt once per
worker process, see :func:`kinetics.fitting.problem.rebuild_stats`) and plain numbers, never
the result itself; the walks are deterministic, so every executor gives the serial intervals.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2

from ..errors import KineticsWarning
from .executors import check_executor, progress_bar, run_tasks
from .local import Failed, combined_fit, local_fit, local_loglik

__all__ = ["compute_profiles", "profile_point", "CHI2_95"]

#: 95 % threshold of the profile likelihood ratio (chi-square, 1 degree of freedom).
CHI2_95 = float(chi2.ppf(0.95, 1))
#: a step whose drop exceeds this many thresholds is retaken at half length (see _walk)
_JUMP = 4.0
_MAX_HALVINGS = 8


@dataclass(frozen=True)
class _Side:
    """Everything one side of one profile needs, as picklable values."""
    problem: object          # a FitProblem (pickles as its recipe)
    x: np.ndarray            # the estimate (internal scale)
    loglik: float            # its log-likelihood
    j: int                   # index of the profiled parameter among the free ones
    direction: int           # -1 (towards the lower bound) or +1
    step0: float
    max_distance: float
    bound: float
    threshold: float
    max_steps: int
    noise_ab: tuple | None   # (sigma_abs, sigma_rel) for combined noise, else None
    weights: np.ndarray | None   # the local fits' fixed weights (None: the exact likelihood)
    use_jacobian: bool
    engine: str
    name: str


def profile_point(problem, x, j, loglik_best, *, noise_ab=None, weights=None, use_jacobian=True, engine="auto"):
    """Re-optimize every free parameter but j (and, for combined noise, a and b too) with
    parameter j held at x[j]; returns (x, -2 * drop of the log-likelihood from ``loglik_best``,
    None), or (x, None, why) where the model cannot be simulated."""
    why = "the model cannot be simulated there"
    if problem.noise == "combined":
        x, rss, weights, _, _ = combined_fit(problem, x, {j}, noise_ab, use_jacobian, None, engine)
        loglik = problem.loglik(rss, weights)
    else:
        x, rss, res = local_fit(problem, x, weights, fixed={j}, use_jacobian=use_jacobian, engine=engine)
        loglik = local_loglik(problem, rss, weights)
        if isinstance(res, Failed):
            why = str(res.message)
    if not np.isfinite(rss):   # a local fit that could not simulate reports rss = inf
        return x, None, why
    return x, -2 * (loglik - loglik_best), None


def _walk(side: _Side):
    """One side of one profile: step away from the estimate until twice the log-likelihood
    drop crosses the threshold (refined), a bound, max_steps, or a failed simulation.
    Returns (points [(value, delta)], end or None, stop reason).

    Each point re-optimizes the others from the last point below the threshold. A step whose
    drop overshoots the threshold many times over (the first step comes from the covariance,
    which is poor when parameters sit at bounds; or the re-optimization fell into another
    basin) is retaken at half length, so that the crossing is bracketed by nearby points of
    the same branch of the profile before it is refined."""
    p, j, direction, threshold = side.problem, side.j, side.direction, side.threshold
    x0 = side.x

    def natural(v):
        return float(10 ** v if p.log_mask[j] else v)

    def point(xs):
        return profile_point(p, xs, j, side.loglik, noise_ab=side.noise_ab, weights=side.weights,
                             use_jacobian=side.use_jacobian, engine=side.engine)

    bound = side.bound
    prev_x = x0.copy()      # the last point below the threshold: where re-optimizations start
    step, prev_v, prev_d = side.step0, x0[j], 0.0
    points = []
    stop = "max_steps"
    taken = halvings = 0
    while taken < side.max_steps:
        v = prev_v + direction * step
        # never wander further than max_distance from the estimate (an unbounded flat profile)
        limit = x0[j] + direction * side.max_distance
        if direction * (limit - bound) < 0:
            bound = limit
        at_bound = (direction < 0 and v <= bound) or (direction > 0 and v >= bound)
        if at_bound:
            v = bound
        xs = prev_x.copy()
        xs[j] = v
        xs, d, why = point(xs)
        if d is None:
            # the model cannot be simulated out here: the side stays open, for a reason
            # that says nothing about what the data determine
            return points, None, f"simulation failed at {side.name} = {natural(v):.6g}: {why}"
        if d > _JUMP * threshold and halvings < _MAX_HALVINGS:
            step = 0.5 * abs(v - prev_v)
            halvings += 1
            continue
        taken += 1
        halvings = 0
        points.append((v, d))
        if d >= threshold:
            # refine the crossing: interpolate sqrt(delta), linear in the parameter near the optimum
            for _ in range(3):
                a, b = math.sqrt(max(prev_d, 0)), math.sqrt(d)
                guess = prev_v + (v - prev_v) * (math.sqrt(threshold) - a) / (b - a) if b > a else 0.5 * (prev_v + v)
                xg = prev_x.copy()
                xg[j] = guess
                xg, dg, _ = point(xg)
                if dg is None:
                    break
                points.append((guess, dg))
                if abs(dg - threshold) < 0.02:
                    v, d = guess, dg
                    break
                if dg < threshold:
                    prev_v, prev_d, prev_x = guess, dg, xg
                else:
                    v, d = guess, dg
            end = v if abs(d - threshold) < 0.02 else prev_v + (v - prev_v) * \
                (math.sqrt(threshold) - math.sqrt(max(prev_d, 0))) / max(math.sqrt(d) - math.sqrt(max(prev_d, 0)), 1e-12)
            return points, end, "threshold"
        if at_bound:
            return points, None, "bound"
        grow = 1.6 if d - prev_d < 0.5 else 1.0
        step = abs(v - prev_v) * grow
        prev_v, prev_d, prev_x = v, d, xs
    return points, None, stop


def _sides(result, names, threshold, max_steps):
    """The tasks: for each name, its lower then its upper side."""
    p = result.problem
    lo_b, hi_b = p.internal_bounds()
    combined = p.noise == "combined"
    noise_ab = (result.noise_params["sigma_abs"], result.noise_params["sigma_rel"]) if combined else None
    weights = None if combined else result.objective_weights
    tasks = []
    for name in names:
        j = p.free.index(name)
        var = result.covariance_internal[j, j]
        sd = math.sqrt(max(var, 0)) if np.isfinite(var) else 0.1
        step0 = min(max(sd, 1e-3), 0.5) if p.log_mask[j] else max(sd, 1e-6 * (abs(result.x[j]) + 1))
        # log10 parameters: 6 decades either side; linear ones: a million standard errors
        max_distance = 6.0 if p.log_mask[j] else 1e6 * max(sd, 1e-6 * (abs(result.x[j]) + 1))
        for direction in (-1, 1):
            tasks.append(_Side(p, result.x.copy(), float(result.loglik), j, direction, step0, max_distance,
                               float(lo_b[j] if direction < 0 else hi_b[j]), threshold, max_steps, noise_ab,
                               weights, result.use_jacobian, result.engine, name))
    return tasks


def compute_profiles(result, params=None, threshold=CHI2_95, max_steps=40, progress=False, executor=None):
    """Profile likelihood of each free parameter of ``result`` (a FitResult, updated in place:
    ``profiles``, ``ci95``, ``identifiable``, ``profile_failures``); returns ``result.profiles``.

    Re-optimizes the others along a path and finds where twice the log-likelihood drops by
    ``threshold``. A side that stays below it up to the bound flags non-identifiability; a side
    cut short because the model cannot be simulated further out leaves identifiability
    undetermined (``identifiable`` None) and says so. Each profile records why each side ended
    (``lower_stop``, ``upper_stop``): "threshold" (the interval closes), "bound" (flat up to the
    parameter's bound, or six decades / a million standard errors away), "max_steps", or
    "simulation failed at VALUE: reason".

    executor : None or "auto" (serial, in this process), "process" (a process pool of this
    machine's cores, closed afterwards), or any ``concurrent.futures.Executor``: one task per
    parameter and side. Every executor gives the same intervals as the serial run.
    """
    p = result.problem
    names = list(params or p.free)
    executor = check_executor(executor, p.origin, "compute_profiles")
    tasks = _sides(result, names, threshold, max_steps)
    bar = progress_bar(len(tasks), progress, "profiles", "side")
    try:
        walks = run_tasks(_walk, tasks, executor, bar)
    finally:
        if bar:
            bar.close()
    for k, name in enumerate(names):
        j = p.free.index(name)
        (lower_points, lower_end, lower_stop), (upper_points, upper_end, upper_stop) = walks[2 * k], walks[2 * k + 1]

        def natural(v, j=j):
            return None if v is None else float(10 ** v if p.log_mask[j] else v)
        pts = sorted([(result.x[j], 0.0)] + lower_points + upper_points)
        lower, upper = natural(lower_end), natural(upper_end)
        stops = (lower_stop, upper_stop)
        result.profiles[name] = {
            "values": [float(10 ** v) if p.log_mask[j] else float(v) for v, _ in pts],
            "delta": [float(d) for _, d in pts], "lower": lower, "upper": upper,
            "lower_stop": lower_stop, "upper_stop": upper_stop,
        }
        result.ci95[name] = (lower, upper)
        failed = [stop for stop in stops if stop.startswith("simulation failed")]
        if lower is not None and upper is not None:
            result.identifiable[name] = True
        elif any(stop in ("bound", "max_steps") for stop in stops):
            result.identifiable[name] = False
        else:   # open only where simulations failed: undetermined, not "not identifiable"
            result.identifiable[name] = None
        result.profile_failures.pop(name, None)
        if failed:
            result.profile_failures[name] = failed
    bad = [n for n in names if result.identifiable[n] is False]
    if bad:
        warnings.warn(f"{p.origin}: parameter(s) {', '.join(bad)} are not identifiable from these data: their "
                      "likelihood profile stays flat up to a bound, so the data do not pin them down. Fix them, "
                      "add measurements that depend on them, or report only their supported range.",
                      KineticsWarning, stacklevel=3)
    cut = [n for n in names if n in result.profile_failures]
    if cut:
        details = "; ".join(f"{n}: {'; '.join(result.profile_failures[n])}" for n in cut)
        warnings.warn(f"{p.origin}: the likelihood profile of {', '.join(cut)} was cut short because the model "
                      f"cannot be simulated further out ({details}). The interval stays open on that side, which "
                      "says nothing about identifiability; narrow the parameter's bounds to where the model can "
                      "be simulated, or check the model there.", KineticsWarning, stacklevel=3)
    return result.profiles
