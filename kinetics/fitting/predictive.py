"""Posterior-predictive ensembles of a fit: parameter draws (MCMC samples, or the covariance as a
multivariate normal on the fit's internal scale, log10 for log-scaled parameters), simulated
together with :func:`~kinetics.simulate_many` under one condition's doses, events and
overrides, plus measurement-noise realisations from the fit's noise model.

:meth:`FitResult.predict_ensemble <kinetics.fitting.optimize.FitResult.predict_ensemble>` and
``kinetics predict`` use it.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import FitError, KineticsWarning

__all__ = ["parameter_draws", "ensemble_from_draws", "add_noise"]


def parameter_draws(problem, x, covariance_internal, mcmc, n_samples, source="auto", seed=0) -> np.ndarray:
    """(n_samples, n_free) natural-scale values of the free parameters: rows of the MCMC samples
    (``source="mcmc"``, the default when samples exist) or draws from N(x, covariance) on the
    internal scale (``source="covariance"``)."""
    if source not in ("auto", "covariance", "mcmc"):
        raise FitError(f"source must be 'auto', 'covariance' or 'mcmc', not {source!r}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise FitError(f"n_samples must be a positive whole number, got {n_samples!r}")
    rng = np.random.default_rng(seed)
    samples = None if not mcmc else np.asarray(mcmc["samples"], dtype=float)
    if source == "auto":
        source = "mcmc" if samples is not None and len(samples) else "covariance"
    if source == "mcmc":
        if samples is None or not len(samples):
            raise FitError("the fit has no MCMC samples: run fit(..., mcmc={'steps': ...}) (kinetics fit --mcmc N) "
                           "or use source='covariance'")
        return samples[rng.integers(0, len(samples), int(n_samples))]
    cov = np.asarray(covariance_internal, dtype=float)
    if not np.isfinite(cov).all():
        raise FitError("the fit's covariance is not finite (a parameter is not identifiable), so no parameter "
                       "set can be drawn from it; run MCMC (kinetics fit --mcmc N) and use source='mcmc'")
    internal = rng.multivariate_normal(np.asarray(x, dtype=float), cov, size=int(n_samples), check_valid="ignore")
    with np.errstate(over="ignore"):
        return problem.to_natural(internal)


def add_noise(ensemble, names, noise_model, noise_params, seed=0):
    """Measurement-noise realisations added in place to outputs ``names`` of ``ensemble``:
    constant (sigma), proportional (sigma_rel |f|) or combined (sqrt(sigma_abs^2 + sigma_rel^2 f^2)).
    Data-given sigmas are known only at the data points: no noise is added then (a warning says so)."""
    if noise_model == "data":
        warnings.warn("the fit's noise is given per data point (noise = \"data\"), so no noise realisation can be made "
                      "at new times: the ensemble shows parameter uncertainty only", KineticsWarning, stacklevel=3)
        return ensemble
    rng = np.random.default_rng(seed)
    for name in names:
        k = ensemble.names.index(name)
        f = ensemble.values[:, :, k]
        if noise_model == "constant":
            sigma = np.full_like(f, float(noise_params["sigma"]))
        elif noise_model == "proportional":
            sigma = float(noise_params["sigma_rel"]) * np.abs(f)
        elif noise_model == "combined":
            sigma = np.hypot(float(noise_params["sigma_abs"]), float(noise_params["sigma_rel"]) * f)
        else:
            raise FitError(f"unknown noise model {noise_model!r}")
        ensemble.values[:, :, k] = f + sigma * rng.standard_normal(f.shape)
    return ensemble


def ensemble_from_draws(problem, free_values, times, condition=None, noise_model=None, noise_params=None,
                        noise=True, seed=0):
    """Simulate ``condition`` (default: the first) for every row of ``free_values`` (natural
    scale, one column per free parameter); observables carry the fit spec's scale and offset.
    With ``noise``, the measured series get noise realisations from ``noise_model``."""
    from ..simulation.ensemble import simulate_many
    import pandas as pd
    condition = condition or problem.condition_names[0]
    if condition not in problem.condition_names:
        raise FitError(f"unknown condition '{condition}'; the fit's conditions are {', '.join(problem.condition_names)}")
    compiled = problem.compiled
    free_values = np.atleast_2d(np.asarray(free_values, dtype=float))
    phis = np.tile(problem.fit_values, (len(free_values), 1))
    phis[:, problem.free_index] = free_values
    P = np.array([problem.plan_parameters(phi, condition) for phi in phis])
    computed = set(compiled.computed_parameters)
    columns = [i for i, name in enumerate(compiled.parameter_names) if name not in computed]
    sets = pd.DataFrame(P[:, columns], columns=[compiled.parameter_names[i] for i in columns])
    cond = problem.conditions[condition]
    ensemble = simulate_many(compiled, np.asarray(times, dtype=float), sets, doses=cond.doses, events=cond.events,
                             initial=cond.initial or None)
    for s, phi in enumerate(phis):
        for name, (scale, offset) in problem.observation_maps(phi).items():
            k = ensemble.names.index(name)
            ensemble.values[s, :, k] = scale * ensemble.values[s, :, k] + offset
    ensemble.condition = condition
    ensemble.noise = None
    if noise and noise_model is not None:
        measured = [name for name in problem.data.observables if name in ensemble.names]
        add_noise(ensemble, measured, noise_model, noise_params or {}, seed=seed + 1)
        ensemble.noise = noise_model if noise_model != "data" else None
    return ensemble
