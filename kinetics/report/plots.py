"""Plots of fits (fitted curves with uncertainty bands, residuals, likelihood profiles, MCMC
corner) and :func:`save_result`, which writes a fit folder. Only reads FitResults."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..io.files import RESULT_FILES, atomic_folder, csv_safe_frame
from ..io.results import curves_table, prediction_grid

__all__ = ["plot_fit", "plot_residuals", "plot_profiles", "plot_corner", "save_result", "CHI2_95"]

#: 95 % quantile of chi-square with 1 degree of freedom: the profile-likelihood threshold
#: (kinetics.fitting.CHI2_95 is this value; computed here so that plots need not import fitting).
CHI2_95 = 3.841458820694124


def _band(result, grid, condition, names, n_samples=100):
    """95 % band of the fitted curves: percentiles over MCMC draws when sampled, else the delta
    method (linear propagation of the covariance; stable for correlated, weakly identified
    parameters where drawing parameter sets from the covariance is not)."""
    p = result.problem
    if result.mcmc is not None:
        import warnings

        from ..errors import KineticsWarning
        from ..fitting.predictive import ensemble_from_draws
        rng = np.random.default_rng(0)
        draws = result.mcmc["samples"][rng.integers(0, len(result.mcmc["samples"]), n_samples)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", KineticsWarning)   # a draw that fails to simulate is left out
            ensemble = ensemble_from_draws(p, draws, grid, condition, noise=False)
        ok = ensemble.values[~ensemble.failed]
        if len(ok) <= 5:
            return {}
        return {n: np.percentile(ok[:, :, ensemble.names.index(n)], [2.5, 97.5], axis=0) for n in names}
    cov = result.covariance_internal
    if not np.isfinite(cov).all():
        return None
    base = p.curves(p.phi(result.x), grid, condition)
    jac = {n: np.empty((len(grid), p.n_free)) for n in names}
    for k in range(p.n_free):
        h = 1e-6 * max(1.0, abs(result.x[k]))
        x = result.x.copy()
        x[k] += h
        out = p.curves(p.phi(x), grid, condition)
        for n in names:
            jac[n][:, k] = (out[n] - base[n]) / h
    bands = {}
    for n in names:
        sd = np.sqrt(np.clip(np.einsum("tk,kl,tl->t", jac[n], cov, jac[n]), 0, None))
        bands[n] = (base[n] - 1.96 * sd, base[n] + 1.96 * sd)
    return bands


def new_figure(figure, figsize, rows=1, cols=1):
    """(figure, axes grid): on ``figure`` when given (a detached matplotlib.figure.Figure, as
    the save paths use, so neither pyplot's state nor its backend is touched), else on a new
    pyplot figure (for interactive use: plt.show(), notebooks)."""
    if figure is None:
        import matplotlib.pyplot as plt
        figure = plt.figure(figsize=figsize)
    else:
        figure.set_size_inches(*figsize)
    return figure, figure.subplots(rows, cols, squeeze=False)


def plot_fit(result, ax=None, logy=False, band=True, figure=None):
    """Data and fitted curves, one panel per observable, one colour per condition."""
    import matplotlib
    p = result.problem
    observables = p.data.observables
    if ax is None:
        fig, axes = new_figure(figure, (5.2 * len(observables), 4.2), 1, len(observables))
        axes = axes[0]
    else:
        axes = np.atleast_1d(ax)
        fig = axes[0].figure
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for c_i, condition in enumerate(p.condition_names):
        colour = colours[c_i % len(colours)]
        grid = prediction_grid(result, condition)
        curves = result.predict(grid, condition)
        bands = _band(result, grid, condition, observables) if band else None
        rows = p.data.for_condition(condition)
        for ax_i, obs in enumerate(observables):
            axis = axes[ax_i % len(axes)]
            sel = rows[rows["observable"] == obs]
            if sel.empty:
                continue
            if "sigma" in sel and p.noise == "data":
                axis.errorbar(sel["time"], sel["value"], yerr=sel["sigma"], fmt="o", color=colour, ms=4, alpha=0.8)
            else:
                axis.plot(sel["time"], sel["value"], "o", color=colour, ms=4, alpha=0.8)
            axis.plot(grid, curves[obs], "-", color=colour, label=condition)
            if bands and obs in bands:
                axis.fill_between(grid, bands[obs][0], bands[obs][1], color=colour, alpha=0.2, lw=0)
    for axis, obs in zip(axes, observables):
        axis.set_title(obs)
        axis.set_xlabel(f"time [{p.model.time_unit}]")
        if logy:
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    fig.suptitle(f"{p.model.name}: data and fit (band: 95% parameter uncertainty)", fontsize="medium")
    fig.tight_layout()
    return fig


def plot_residuals(result, ax=None, figure=None):
    """Standardized residuals against time, per observable and condition."""
    p = result.problem
    r = p.residuals(result.x, result.weights)
    s = p.noise_scale(result.rss)
    if ax is None:
        fig, axes = new_figure(figure, (7, 4))
        ax = axes[0, 0]
    else:
        fig = ax.figure
    times = np.concatenate([plan["rows"]["time"].to_numpy(float) for plan in p.plans])
    labels = np.concatenate([(plan["name"] + ": " + plan["rows"]["observable"]).to_numpy(str) for plan in p.plans])
    for label in dict.fromkeys(labels):
        sel = labels == label
        ax.plot(times[sel], r[sel] / s, "o", ms=4, label=label)
    ax.axhline(0, color="k", lw=0.8)
    for y in (-2, 2):
        ax.axhline(y, color="k", lw=0.5, ls="--")
    ax.set_xlabel(f"time [{p.model.time_unit}]")
    ax.set_ylabel("standardized residual")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_profiles(result, figure=None):
    """Likelihood profiles with the 95 % threshold."""
    names = list(result.profiles)
    if not names:
        return None
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = new_figure(figure, (4.2 * cols, 3.3 * rows), rows, cols)
    for ax, name in zip(axes.flat, names):
        prof = result.profiles[name]
        ax.plot(prof["values"], prof["delta"], "o-", ms=3)
        ax.axhline(CHI2_95, color="r", ls="--", lw=0.8)
        j = result.problem.free.index(name)
        ax.axvline(result.values[j], color="k", lw=0.8)
        if result.problem.log_mask[j]:
            ax.set_xscale("log")
        title = name + ("  (not identifiable)" if result.identifiable.get(name) is False else "")
        ax.set_title(title, fontsize="medium")
        ax.set_ylabel("2 delta(-log L)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_corner(result, bins=30, figure=None):
    """Corner-style plot of MCMC samples: histograms on the diagonal, pair scatter below."""
    if not result.mcmc:
        return None
    samples, names = result.mcmc["samples"], result.mcmc["names"]
    k = len(names)
    log = result.problem.log_mask
    data = np.where(log, np.log10(np.clip(samples, 1e-300, None)), samples)
    labels = [f"log10 {n}" if lg else n for n, lg in zip(names, log)]
    fig, axes = new_figure(figure, (2.2 * k + 1, 2.2 * k + 1), k, k)
    for i in range(k):
        for j in range(k):
            ax = axes[i, j]
            if j > i:
                ax.axis("off")
                continue
            if i == j:
                ax.hist(data[:, i], bins=bins, color="tab:blue", alpha=0.8)
                ax.set_yticks([])
            else:
                ax.plot(data[:, j], data[:, i], ",", alpha=0.3, color="tab:blue")
            if i == k - 1:
                ax.set_xlabel(labels[j], fontsize="small")
            if j == 0 and i > 0:
                ax.set_ylabel(labels[i], fontsize="small")
    fig.suptitle(f"posterior samples ({len(samples)})", fontsize="medium")
    fig.tight_layout()
    return fig


def save_result(result, folder) -> list:
    """Write result.json, report.txt, curves.csv and the plots into ``folder`` as a whole: the
    folder ends up holding this result only, or (after any failure or kill) its old content
    only. A folder holding files kinetics does not write is refused, not replaced. Figures
    are drawn on detached Figure objects: matplotlib's backend and pyplot state are untouched."""
    from matplotlib.figure import Figure

    names = []
    with atomic_folder(folder, RESULT_FILES) as stage:
        def save(name, figure):
            if figure is not None:
                figure.savefig(stage / name, dpi=110, format="png")
                names.append(name)

        (stage / "result.json").write_text(result.to_json() + "\n", encoding="utf-8")
        (stage / "report.txt").write_text(result.fit_report() + "\n", encoding="utf-8")
        names += ["result.json", "report.txt"]
        y = result.problem.y
        logy = bool((y > 0).all() and y.max() / max(y.min(), 1e-300) > 100)
        save("fit.png", plot_fit(result, logy=logy, figure=Figure()))
        save("residuals.png", plot_residuals(result, figure=Figure()))
        csv_safe_frame(curves_table(result)).to_csv(stage / "curves.csv", index=False, float_format="%.10g")
        names.append("curves.csv")
        save("profiles.png", plot_profiles(result, figure=Figure()))
        save("corner.png", plot_corner(result, figure=Figure()))
    folder = Path(folder)
    return [folder / name for name in names]
