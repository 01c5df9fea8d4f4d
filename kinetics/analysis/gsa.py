"""Global sensitivity analysis: Sobol' and Morris indices of one model output over parameter
ranges, with SALib (optional extra ``[gsa]``) for the designs and estimators and
:func:`~kinetics.simulate_many` for the simulations (all sets in one batched call).

The output is one number per parameter set:

* ``"NAME@T"``: a compartment or observable at time T (e.g. ``"plasma_conc@24"``);
* ``"auc:NAME"``, ``"max:NAME"``, ``"tmax:NAME"``: a PK figure of a simulated curve on
  ``times`` (trapezoidal AUC over the grid, peak value, time of the peak);
* ``"steady:NAME"``: the steady value of a bounded compartment, or the steady inflow rate of a
  sink (one exact/Newton steady state per set, :func:`kinetics.analysis.steady.steady_state`);
* a callable ``f(ensemble) -> array (n_sets,)`` for anything else.

Ranges are ``{parameter: (low, high)}``; with ``log=True`` (the default, as rates span decades)
parameters are sampled uniformly in log10 between the bounds, so the indices apportion the
variance to log-parameters.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..errors import KineticsError

__all__ = ["sobol", "morris", "SensitivityIndices"]


class SensitivityIndices(pd.DataFrame):
    """A DataFrame of indices, one row per parameter (Sobol': ``S1``, ``S1_conf``, ``ST``,
    ``ST_conf``; Morris: ``mu_star``, ``mu_star_conf``, ``mu``, ``sigma``), whose
    :meth:`plot` draws them as bars. ``attrs`` holds the method, the output and the number of
    simulations."""

    @property
    def _constructor(self):
        return pd.DataFrame

    def plot(self, ax=None):  # noqa: D401 - replaces pandas' plot accessor on this table only
        """Bar chart of the indices with their confidence intervals; returns the Axes."""
        import matplotlib.pyplot as plt
        if ax is None:
            _, ax = plt.subplots(figsize=(7, 0.45 * len(self) + 1.8))
        y = np.arange(len(self))
        if self.attrs.get("method") == "sobol":
            h = 0.38
            ax.barh(y - h / 2, self["S1"], h, xerr=self["S1_conf"], label="first order S1", capsize=2)
            ax.barh(y + h / 2, self["ST"], h, xerr=self["ST_conf"], label="total ST", capsize=2)
            ax.set_xlabel("Sobol' index (share of output variance)")
        else:
            ax.barh(y, self["mu_star"], 0.6, xerr=self["mu_star_conf"], label="mu* (mean |elementary effect|)", capsize=2)
            ax.plot(self["sigma"], y, "kd", label="sigma (interactions, nonlinearity)")
            ax.set_xlabel("Morris elementary effects")
        ax.set_yticks(y, list(self.index))
        ax.invert_yaxis()
        ax.set_title(f"{self.attrs.get('model', '')}: sensitivity of {self.attrs.get('output', '')}", fontsize="medium")
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3, axis="x")
        return ax


def _salib():
    try:
        from SALib.analyze import morris as morris_analyze
        from SALib.analyze import sobol as sobol_analyze
        from SALib.sample import morris as morris_sample
        from SALib.sample import sobol as sobol_sample
    except ImportError:
        raise KineticsError("global sensitivity analysis needs SALib: install it with `pip install SALib` "
                            "or the `kinetics[gsa]` extra") from None
    return sobol_sample, sobol_analyze, morris_sample, morris_analyze


def _salib_problem(compiled, ranges, log):
    if not isinstance(ranges, dict) or not ranges:
        raise KineticsError("ranges must be a non-empty dict {parameter: (low, high)}")
    from ..errors import suggest_name
    bounds = []
    for name, bound in ranges.items():
        if name not in compiled.parameter_names:
            raise KineticsError(f"ranges: '{name}' is not a parameter of model '{compiled.name}'"
                                f"{suggest_name(str(name), compiled.parameter_names)}")
        try:
            low, high = (float(v) for v in bound)
        except (TypeError, ValueError):
            raise KineticsError(f"ranges: '{name}' needs (low, high), got {bound!r}") from None
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise KineticsError(f"ranges: '{name}' = ({low:g}, {high:g}) needs finite low < high")
        if log and low <= 0:
            raise KineticsError(f"ranges: '{name}' = ({low:g}, {high:g}) must be positive for log sampling "
                                "(or pass log=False)")
        bounds.append([math.log10(low), math.log10(high)] if log else [low, high])
    return {"num_vars": len(ranges), "names": list(ranges), "bounds": bounds}


def _output_function(compiled, output, times):
    """(times to simulate, f(ensemble, values) -> (n_sets,)) for an output spec."""
    names = list(compiled.state_names) + list(compiled.observable_names)

    def check(name):
        if name not in names:
            from ..errors import suggest_name
            raise KineticsError(f"output: '{name}' is not a compartment or observable of model '{compiled.name}'"
                                f"{suggest_name(name, names)}")
        return name

    if callable(output):
        if times is None:
            raise KineticsError("output: a callable output needs times= (the output times it reads)")
        return times, lambda ensemble, values: np.asarray(output(ensemble), dtype=float).reshape(-1)
    if not isinstance(output, str):
        raise KineticsError(f"output must be 'NAME@TIME', 'auc:NAME', 'max:NAME', 'tmax:NAME', 'steady:NAME' or a "
                            f"callable of an Ensemble, got {output!r}")
    kind, sep, name = output.partition(":")
    if sep and kind in ("auc", "max", "tmax"):
        check(name)
        if times is None:
            raise KineticsError(f"output '{output}' needs times= (the grid the curve is computed on)")

        def figure(ensemble, values):
            curve = ensemble[name]
            if kind == "auc":
                return np.trapezoid(curve, ensemble.times, axis=1)
            if kind == "max":
                return curve.max(axis=1)
            return ensemble.times[np.argmax(curve, axis=1)]
        return times, figure
    if sep and kind == "steady":
        return None, ("steady", name)
    name, at, when = output.rpartition("@")
    if at:
        check(name)
        try:
            t = float(when)
        except ValueError:
            raise KineticsError(f"output '{output}': '{when}' is not a time") from None
        grid = np.array([0.0, t]) if times is None else np.asarray(times, dtype=float)
        if not np.any(np.isclose(grid, t, rtol=0, atol=1e-12 * max(1.0, abs(t)))):
            raise KineticsError(f"output '{output}': time {t:g} is not among times=")
        column = int(np.argmin(np.abs(grid - t)))
        return grid, lambda ensemble, values: ensemble[name][:, column]
    raise KineticsError(f"output '{output}': expected 'NAME@TIME', 'auc:NAME', 'max:NAME', 'tmax:NAME', "
                        "'steady:NAME' or a callable")


def _evaluate(model, output, problem, X, log, times, doses, events, initial):
    from ..simulation.compiled import compile_model
    from ..simulation.ensemble import simulate_many
    compiled = compile_model(model)
    values = 10.0 ** X if log else X
    sets = pd.DataFrame(values, columns=problem["names"])
    grid, fn = _output_function(compiled, output, times)
    if isinstance(fn, tuple):
        from .steady import steady_state
        name = fn[1]
        y = np.empty(len(sets))
        for s, row in enumerate(sets.to_dict("records")):
            ss = steady_state(model, row)
            if name in ss.values:
                y[s] = ss.values[name]
            elif name in ss.sinks:
                y[s] = ss.sinks[name]
            else:
                raise KineticsError(f"output 'steady:{name}': not a bounded compartment or sink of model "
                                    f"'{compiled.name}' (bounded: {', '.join(ss.values)}; sinks: {', '.join(ss.sinks)})")
        return y
    ensemble = simulate_many(compiled, grid, sets, doses=doses, events=events, initial=initial)
    if ensemble.failed.any():
        first = min(ensemble.messages)
        raise KineticsError(f"{int(ensemble.failed.sum())} of {len(sets)} parameter sets could not be simulated "
                            f"(the first: {ensemble.messages[first]}); narrow the ranges")
    y = fn(ensemble, values)
    if y.shape != (len(sets),) or not np.isfinite(y).all():
        raise KineticsError(f"output {output!r} must give one finite number per parameter set "
                            f"(got shape {y.shape}, {int((~np.isfinite(y)).sum())} not finite)")
    return y


def _model(model):
    from ..model.core import Model, load_model
    from ..model.library import resolve_model_path
    if isinstance(model, Model):
        return model
    return load_model(resolve_model_path(model))


def sobol(model, output, ranges, n=1024, seed=0, *, times=None, doses=(), events=(), initial=None, log=True,
          conf_level=0.95) -> SensitivityIndices:
    """First-order and total Sobol' indices (Saltelli/Jansen estimators, SALib) of ``output``
    over ``ranges``: ``n * (k + 2)`` simulations for k parameters (``n`` a power of 2).
    Returns a :class:`SensitivityIndices` (S1, S1_conf, ST, ST_conf; bootstrap intervals)."""
    sobol_sample, sobol_analyze, _, _ = _salib()
    model = _model(model)
    from ..simulation.compiled import compile_model
    problem = _salib_problem(compile_model(model), ranges, log)
    X = sobol_sample.sample(problem, int(n), calc_second_order=False, seed=seed)
    y = _evaluate(model, output, problem, X, log, times, doses, events, initial)
    result = sobol_analyze.analyze(problem, y, calc_second_order=False, conf_level=conf_level, seed=seed)
    table = SensitivityIndices({key: result[key] for key in ("S1", "S1_conf", "ST", "ST_conf")}, index=problem["names"])
    table.index.name = "parameter"
    table.attrs.update(method="sobol", output=str(output), n_simulations=len(X), model=model.name)
    return table


def morris(model, output, ranges, n=64, seed=0, *, levels=4, times=None, doses=(), events=(), initial=None, log=True,
           conf_level=0.95) -> SensitivityIndices:
    """Morris elementary effects (SALib) of ``output`` over ``ranges``: ``n`` trajectories,
    ``n * (k + 1)`` simulations. Returns a :class:`SensitivityIndices` (mu_star, mu_star_conf,
    mu, sigma), on the sampled (log10 with ``log``) scale of the parameters."""
    _, _, morris_sample, morris_analyze = _salib()
    model = _model(model)
    from ..simulation.compiled import compile_model
    problem = _salib_problem(compile_model(model), ranges, log)
    X = morris_sample.sample(problem, int(n), num_levels=levels, seed=seed)
    y = _evaluate(model, output, problem, X, log, times, doses, events, initial)
    result = morris_analyze.analyze(problem, X, y, num_levels=levels, conf_level=conf_level, seed=seed)
    table = SensitivityIndices({key: np.asarray(result[key], dtype=float) for key in ("mu_star", "mu_star_conf", "mu", "sigma")},
                               index=problem["names"])
    table.index.name = "parameter"
    table.attrs.update(method="morris", output=str(output), n_simulations=len(X), model=model.name)
    return table
