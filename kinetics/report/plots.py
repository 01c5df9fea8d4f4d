"""Plots of fits (fitted curves with uncertainty bands, residuals, likelihood profiles, MCMC
corner) and :func:`save_result`, which writes a fit folder. Only reads FitResults."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..io.files import RESULT_FILES, atomic_folder, csv_safe_frame
from ..io.results import curves_table, prediction_grid

__all__ = ["plot_fit", "plot_residuals", "plot_profiles", "plot_corner", "plot_steady", "plot_pk", "save_result",
           "save_figure", "condition_colours", "unit_label", "CHI2_95", "DPI", "FIGURE_FORMATS"]

#: resolution of saved raster figures (journals ask for 300 dpi)
DPI = 300
#: image formats a fit folder's figures can be written in (PNG always, the others on request)
FIGURE_FORMATS = ("png", "svg", "pdf")

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


def condition_colours(names) -> dict:
    """One colour per condition name, the same in every figure of a fit (matplotlib's colour
    cycle in the order of ``names``)."""
    import matplotlib
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    return {name: cycle[i % len(cycle)] for i, name in enumerate(names)}


def unit_of(model, name):
    """The unit of a compartment, observable or parameter of ``model`` (None when not declared)."""
    for table in ("observables", "compartments", "parameters"):
        entry = getattr(model, table, {}).get(name)
        if entry is not None and getattr(entry, "unit", None):
            return entry.unit
    return None


def unit_label(name, unit):
    """An axis label: ``name [unit]``, or the name alone when the unit is unknown."""
    return f"{name} [{unit}]" if unit else name


def readable_log_axis(axis, which="x", low=None, high=None):
    """Few, non-overlapping tick labels on a logarithmic axis: decades when the data span at
    least one, else three or four plain numbers (matplotlib would otherwise label every minor
    tick as 2x10^0, 3x10^0, ..., which collide)."""
    from matplotlib import ticker
    target = axis.xaxis if which == "x" else axis.yaxis
    if low is None or high is None:
        low, high = (axis.get_xlim() if which == "x" else axis.get_ylim())
    span = math.log10(high / low) if low > 0 and high > 0 else 0.0
    if span >= 2.0:
        target.set_major_locator(ticker.LogLocator(base=10, numticks=6))
        target.set_major_formatter(ticker.LogFormatterSciNotation())
    elif span >= 1.0:   # one or two decades: 1, 2, 5 x 10^k (decades alone would give one or two ticks)
        target.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        target.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
    else:
        target.set_major_locator(ticker.MaxNLocator(nbins=4, min_n_ticks=2))
        target.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
    target.set_minor_formatter(ticker.NullFormatter())


def save_figure(figure, path, formats=("png",), dpi=DPI) -> list:
    """Write ``figure`` as ``path`` with each suffix of ``formats`` (png at ``dpi``; svg and pdf
    are vector); returns the paths written."""
    path = Path(path)
    written = []
    for image_format in formats:
        if image_format not in FIGURE_FORMATS:
            from ..errors import KineticsError
            raise KineticsError(f"figure format '{image_format}': use one of {', '.join(FIGURE_FORMATS)}")
        target = path.with_suffix("." + image_format)
        figure.savefig(target, dpi=dpi, format=image_format)
        written.append(target)
    return written


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
    p = result.problem
    observables = p.data.observables
    if ax is None:
        fig, axes = new_figure(figure, (5.2 * len(observables), 4.2), 1, len(observables))
        axes = axes[0]
    else:
        axes = np.atleast_1d(ax)
        fig = axes[0].figure
    colours = condition_colours(p.condition_names)
    for condition in p.condition_names:
        colour = colours[condition]
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
        axis.set_ylabel(unit_label(obs, unit_of(p.model, obs)))
        if logy:
            axis.set_yscale("log")
            readable_log_axis(axis, "y")
        else:   # x10^7 written as mathtext at the axis top instead of a bare "1e7"
            axis.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4), useMathText=True)
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    fig.suptitle(f"{p.model.name}: data and fit" + (" (band: 95 % parameter uncertainty)" if band else ""),
                 fontsize="medium")
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
    conditions = np.concatenate([np.full(len(plan["rows"]), plan["name"], dtype=object) for plan in p.plans])
    observables = np.concatenate([plan["rows"]["observable"].to_numpy(object) for plan in p.plans])
    colours = condition_colours(p.condition_names)
    markers = dict(zip(dict.fromkeys(observables), "osD^vP*X"))
    for condition in p.condition_names:
        for obs, marker in markers.items():
            sel = (conditions == condition) & (observables == obs)
            if sel.any():
                ax.plot(times[sel], r[sel] / s, marker, color=colours[condition], ms=4, ls="none",
                        label=f"{condition}: {obs}" if len(markers) > 1 else condition)
    ax.axhline(0, color="k", lw=0.8)
    for y in (-2, 2):
        ax.axhline(y, color="k", lw=0.5, ls="--")
    ax.set_xlabel(f"time [{p.model.time_unit}]")
    ax.set_ylabel("standardized residual [sigma]")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_profiles(result, figure=None):
    """Likelihood profiles with the 95 % threshold and interval, one panel per parameter, the
    parameter's unit on the x axis and a few readable ticks (log10-fitted parameters on a log axis)."""
    names = list(result.profiles)
    if not names:
        return None
    p = result.problem
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = new_figure(figure, (4.2 * cols, 3.4 * rows), rows, cols)
    for ax, name in zip(axes.flat, names):
        prof = result.profiles[name]
        values = np.asarray(prof["values"], dtype=float)
        ax.plot(values, prof["delta"], "o-", ms=3, color="tab:blue", label="profile")
        ax.axhline(CHI2_95, color="tab:red", ls="--", lw=0.8, label="95 % threshold")
        j = p.free.index(name)
        ax.axvline(result.values[j], color="k", lw=0.8, label="estimate")
        for end in (prof.get("lower"), prof.get("upper")):
            if end is not None:
                ax.axvline(end, color="tab:red", ls=":", lw=0.8)
        if p.log_mask[j]:
            ax.set_xscale("log")
            finite = values[np.isfinite(values) & (values > 0)]
            if finite.size:
                readable_log_axis(ax, "x", finite.min(), finite.max())
        else:
            from matplotlib import ticker
            ax.xaxis.set_major_locator(ticker.MaxNLocator(nbins=4))
        title = name + ("  (not identifiable)" if result.identifiable.get(name) is False else "")
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel(unit_label(name, unit_of(p.model, name)))
        ax.set_ylabel("2 \u0394(\u2212log L)")
        ax.grid(alpha=0.3)
    list(axes.flat)[0].legend(fontsize="x-small", loc="lower right")
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
    units = [unit_of(result.problem.model, n) for n in names]
    labels = [unit_label(f"log10 {n}" if lg else n, unit) for n, lg, unit in zip(names, log, units)]
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


def plot_steady(steady, model, figure=None):
    """Steady fluxes as horizontal bars (one colour per source compartment) and, for every
    compartment with two or more outflows (the MVB: lysosome or secretion), the split of its
    outflow as a 100 % bar with each fate's percentage."""
    fluxes = steady.fluxes
    if not fluxes:
        return None
    flows = getattr(model, "flows", {})
    sources = {name: getattr(flows.get(name), "source", None) for name in fluxes}
    splits = {}
    for name, source in sources.items():
        if source is not None:
            splits.setdefault(source, []).append(name)
    splits = {c: names for c, names in splits.items() if len(names) >= 2}
    fig, axes = new_figure(figure, (11.5 if splits else 6.5, max(3.2, 0.42 * len(fluxes) + 1.6)), 1, 2 if splits else 1)
    ax = axes[0, 0]
    source_names = list(dict.fromkeys("(outside)" if s is None else str(s) for s in sources.values()))
    colours = condition_colours(source_names)
    names = list(fluxes)
    values = [fluxes[n] for n in names]
    bar_colours = [colours["(outside)" if sources[n] is None else str(sources[n])] for n in names]
    ax.barh(range(len(names)), values, color=bar_colours)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()     # file order, top to bottom
    amount = next((unit_of(model, c) for c in getattr(model, "compartments", {}) if unit_of(model, c)), None)
    rate_unit = f"{amount}/{steady.time_unit}" if amount else f"amount/{steady.time_unit}"
    ax.set_xlabel(f"steady flux [{rate_unit}]")
    ax.set_ylabel("flow")
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_xscale("log")
        ax.set_xlim(min(positive) / 3, max(positive) * 60)     # room for the values and the legend
        readable_log_axis(ax, "x", min(positive) / 3, max(positive) * 60)
    else:
        ax.set_xlim(0, max(values + [0]) * 1.6 or 1)
    for row, value in enumerate(values):
        ax.text(value, row, f" {value:.3g}", va="center", fontsize="x-small")
    from matplotlib.patches import Patch
    ax.legend(handles=[Patch(color=colours[n], label=f"from {n}") for n in source_names], fontsize="x-small",
              loc="lower right", title="source", title_fontsize="x-small")
    ax.grid(alpha=0.3, axis="x")
    ax.set_title(f"{steady.model_name}: steady fluxes", fontsize="medium")
    if splits:
        ax2 = axes[0, 1]
        fates = list(splits)
        for row, compartment in enumerate(fates):
            outs = splits[compartment]
            total = sum(max(fluxes[n], 0.0) for n in outs) or 1.0
            left = 0.0
            small = []
            for k, name in enumerate(outs):
                share = 100.0 * max(fluxes[name], 0.0) / total
                ax2.barh(row, share, left=left, height=0.6, color=f"C{k % 10}", edgecolor="white")
                if share >= max(12.0, 1.4 * len(name)):   # the label fits inside the segment
                    ax2.text(left + share / 2, row, f"{name}\n{share:.3g} %", ha="center", va="center",
                             fontsize="small", color="white")
                else:
                    small.append(f"{name} {share:.2g} %")
                left += share
            if small:   # too thin for a label inside: written under the bar
                ax2.text(100, row + 0.32, ", ".join(small), ha="right", va="top", fontsize="small")
        ax2.set_yticks(range(len(fates)), [f"{c}\noutflow" for c in fates])
        ax2.invert_yaxis()
        ax2.set_xlim(0, 100)
        ax2.set_ylim(len(fates) - 0.3, -0.5)
        ax2.set_xlabel("share of the compartment's outflow [%]")
        ax2.set_ylabel("compartment")
        ax2.set_title("fate of each compartment's outflow", fontsize="medium")
    fig.tight_layout()
    return fig


def plot_pk(summary, model, parameters=None, figure=None, points=400):
    """The dose response of a PK summary: the curve with AUC(0-t) shaded and Cmax marked (linear
    axis), and on a log axis the curve with each phase C_i exp(-k_i t) dashed and its half-life."""
    from ..simulation.schedule import simulate
    horizon = max(summary.t_last or 0.0, 5.0 * (summary.terminal_half_life or 0.0), 3.0 * summary.tmax, 1e-9)
    times = np.linspace(0.0, horizon, points)
    values = dict(summary.parameters)
    if parameters:
        values.update(parameters)
    dose = [{"compartment": summary.dose_compartment, "amount": summary.dose, "time": 0.0}]
    response = simulate(model, times, parameters=values, doses=dose)[summary.observable] \
        - simulate(model, times, parameters=values)[summary.observable]
    unit = summary.units.get("cmax") or unit_of(model, summary.observable)
    auc_unit = summary.units.get("auc")
    fig, axes = new_figure(figure, (10.5, 4.0), 1, 2)
    ax, ax_log = axes[0]
    ax.plot(times, response, color="tab:blue", label=summary.observable)
    shade_end = summary.t_last or horizon
    sel = times <= shade_end
    ax.fill_between(times[sel], 0, response[sel], color="tab:blue", alpha=0.2,
                    label=f"AUC(0-inf) = {summary.auc_inf:.3g}" + (f" {auc_unit}" if auc_unit else ""))
    ax.plot([summary.tmax], [summary.cmax], "v", color="tab:red", label=f"Cmax {summary.cmax:.3g} at {summary.tmax:.3g} {summary.time_unit}")
    ax_log.plot(times, response, color="tab:blue", label=summary.observable)
    positive = response[response > 0]
    for k, phase in enumerate(summary.phases):
        if phase.get("coefficient") and phase["coefficient"] > 0:
            ax_log.plot(times, phase["coefficient"] * np.exp(-phase["rate"] * times), "--", color=f"C{k + 1}",
                        label=f"phase {k + 1}: t\u00bd = {phase['half_life']:.3g} {summary.time_unit}")
        elif phase.get("half_life"):
            ax_log.plot([], [], "--", color=f"C{k + 1}", label=f"phase {k + 1}: t\u00bd = {phase['half_life']:.3g} {summary.time_unit}")
    ax_log.set_yscale("log")
    if positive.size:
        low, high = max(positive.min(), positive.max() * 1e-6), positive.max() * 1.5
        ax_log.set_ylim(low, high)
        readable_log_axis(ax_log, "y", low, high)
    for axis in (ax, ax_log):
        axis.set_xlabel(f"time [{summary.time_unit}]")
        axis.set_ylabel(unit_label(summary.observable, unit))
        axis.grid(alpha=0.3)
        axis.legend(fontsize="x-small")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4), useMathText=True)
    ax.set_ylim(bottom=0)
    ax.set_title(f"{summary.model_name}: bolus of {summary.dose:.3g} into {summary.dose_compartment}", fontsize="medium")
    ax_log.set_title("phases (log scale)", fontsize="medium")
    fig.tight_layout()
    return fig


def figure_files(formats=("png",)):
    """The file names of a fit folder's figures in ``formats``."""
    return [f"{stem}.{image_format}" for stem in ("fit", "residuals", "profiles", "corner") for image_format in formats]


def save_result(result, folder, formats=("png",), dpi=DPI) -> list:
    """Write result.json, report.txt, report.html, curves.csv and the plots (PNG at ``dpi``,
    plus SVG/PDF when ``formats`` asks) into ``folder`` as a whole: the folder ends up holding
    this result only, or (after any failure or kill) its old content only. A folder holding files
    kinetics does not write is refused, not replaced. Figures are drawn on detached Figure
    objects: matplotlib's backend and pyplot state are untouched."""
    from matplotlib.figure import Figure

    from .html import fit_report_html
    formats = tuple(dict.fromkeys(("png",) + tuple(f.lower().lstrip(".") for f in formats)))
    unknown = [f for f in formats if f not in FIGURE_FORMATS]
    if unknown:
        from ..errors import KineticsError
        raise KineticsError(f"figure format {', '.join(unknown)}: use png, svg or pdf (e.g. --figure-format svg)")

    names = []
    figures = {}
    with atomic_folder(folder, RESULT_FILES) as stage:
        def save(stem, figure):
            if figure is not None:
                figures[stem] = figure
                names.extend(p.name for p in save_figure(figure, stage / stem, formats, dpi))

        (stage / "result.json").write_text(result.to_json() + "\n", encoding="utf-8")
        (stage / "report.txt").write_text(result.fit_report() + "\n", encoding="utf-8")
        names += ["result.json", "report.txt"]
        y = result.problem.y
        logy = bool((y > 0).all() and y.max() / max(y.min(), 1e-300) > 100)
        save("fit", plot_fit(result, logy=logy, figure=Figure()))
        save("residuals", plot_residuals(result, figure=Figure()))
        csv_safe_frame(curves_table(result)).to_csv(stage / "curves.csv", index=False, float_format="%.10g")
        names.append("curves.csv")
        save("profiles", plot_profiles(result, figure=Figure()))
        save("corner", plot_corner(result, figure=Figure()))
        (stage / "report.html").write_text(fit_report_html(result, figures), encoding="utf-8")
        names.append("report.html")
    folder = Path(folder)
    return [folder / name for name in names]
