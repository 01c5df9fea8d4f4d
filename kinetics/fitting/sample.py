"""Posterior sampling of a :class:`~kinetics.fitting.optimize.FitResult` with emcee (through
lmfit), as one or several independent ensembles ("chains") that run as tasks on any
``concurrent.futures.Executor``.

Chain i is seeded with ``seed + i``, so chain 0 is the single-chain run of the same seed, and
the pooled samples (chains in order) are the same serially, in threads, in processes or on a
dask cluster. A task carries the problem (pickled as its recipe, rebuilt once per worker
process) and arrays, never the result.
"""

from __future__ import annotations

import math
import warnings

import lmfit
import numpy as np

from ..errors import FitError
from .executors import check_executor, run_tasks
from .local import Objective, lmfit_params

__all__ = ["sample", "run_chain"]


def run_chain(problem, x, weights, rss, steps, walkers, burn, thin, seed):
    """One emcee ensemble started around the estimate x; returns (flat samples on the internal
    scale, columns in ``problem.internal_names()`` order, mean acceptance fraction)."""
    objective = Objective(problem, weights, use_jacobian=False)
    params = lmfit_params(problem, x)
    known_sigma = problem.noise in ("data", "combined")
    if not known_sigma:
        # the bounds are a flat prior on log(sigma): centred on the estimate, so that they never
        # bind whatever the data's units (fixed bounds cut the posterior of particle counts short)
        ln_sigma = math.log(max(problem.noise_scale(rss), 1e-300))
        params.add("__lnsigma", value=ln_sigma, min=ln_sigma - 30.0, max=ln_sigma + 30.0)
    walkers = walkers or max(4 * (len(params)), 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = lmfit.Minimizer(objective.residual, params, nan_policy="omit").emcee(
            steps=steps, nwalkers=walkers, burn=burn, thin=thin, is_weighted=known_sigma, seed=seed, progress=False)
    chain = res.flatchain[list(problem.internal_names())].to_numpy()
    return chain, float(np.mean(res.acceptance_fraction))


def _chain_task(args):
    return run_chain(*args)


def sample(result, steps=2000, walkers=None, burn=None, thin=1, seed=0, chains=1, executor=None):
    """MCMC of ``result`` (a FitResult; sets and returns ``result.mcmc``: ``samples`` on the
    natural scale, ``names``, ``acceptance``, ``chains``). Needs emcee (the ``mcmc`` extra).

    chains : independent ensembles of ``walkers`` walkers and ``steps`` steps each (``burn``
        dropped from each, default a quarter); chain i uses seed ``seed + i``.
    executor : None or "auto" (serial), "process" (a process pool, closed afterwards) or any
        ``concurrent.futures.Executor``: one task per chain, same samples as the serial run.
    """
    try:
        import emcee  # noqa: F401
    except ImportError:
        raise FitError("MCMC needs emcee: pip install 'kinetics[mcmc]' (or pip install emcee)") from None
    p = result.problem
    chains = int(chains)
    if chains < 1:
        raise FitError(f"{p.origin}: sample(chains={chains}): at least one chain is needed")
    executor = check_executor(executor, p.origin, "sample")
    burn = steps // 4 if burn is None else burn
    tasks = [(p, result.x, result.weights, result.rss, steps, walkers, burn, thin,
              None if seed is None else seed + i) for i in range(chains)]
    outs = run_tasks(_chain_task, tasks, executor)
    internal = np.concatenate([chain for chain, _ in outs], axis=0)
    result.mcmc = {"samples": p.to_natural(internal), "names": list(p.free),
                   "acceptance": float(np.mean([acc for _, acc in outs])), "chains": chains}
    return result.mcmc
