"""Reports of fits: the readable text report, the result.json dictionary, and plots (fitted
curves with uncertainty bands, residuals, likelihood profiles). Only reads FitResults."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from ..io.files import atomic_path, atomic_write

__all__ = ["fit_report", "result_dict", "read_result", "plot_fit", "plot_residuals", "plot_profiles", "plot_corner", "save_result"]


def _fmt(v, digits=5):
    if v is None:
        return "open"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return f"{v:.{digits}g}"


def _method_text(result) -> str:
    compiled = (getattr(result, "engine", "lmfit") == "auto" and result.method.endswith("least_squares")
                and result.use_jacobian)
    return f"{result.method}  ({'compiled trust-region steps, finished by lmfit' if compiled else 'lmfit'})"


def fit_report(result) -> str:
    """lmfit-style text report, plus likelihood statistics and profile intervals."""
    p = result.problem
    lines = [
        f"[[Fit of model '{p.model.name}' to {p.data.path or 'a DataFrame'}]]",
        f"    noise model        = {p.noise}" + "".join(f"\n    {k:<18} = {v:.5g}" for k, v in result.noise_params.items()),
        f"    conditions         = {', '.join(p.condition_names)}",
        f"    method             = {_method_text(result)}",
        f"    starts             = {result.n_starts} ({result.n_at_best} reached the best optimum)",
        f"    model evaluations  = {result.nfev} ({result.njev} with sensitivities)",
        f"    data points        = {result.n_data}",
        f"    Jacobian rank      = {result.jacobian_rank} of {result.n_free}" + ("  (some parameters are not determined by the data)" if result.jacobian_rank < result.n_free else ""),
        f"    free parameters    = {result.n_free} (+{result.n_noise} noise)",
        f"    success            = {result.success}  ({result.message})",
        "[[Statistics]]",
        f"    chi-square         = {result.chisqr:.6g}" + {"proportional": "  (sum of squared relative residuals; see sigma_rel)",
                                                          "constant": "  (sum of squared residuals; see sigma)"}.get(p.noise, ""),
        f"    reduced chi-square = {result.redchi:.6g}",
        f"    log-likelihood     = {result.loglik:.6g}",
        f"    AIC                = {result.aic:.6g}",
        f"    AICc               = {result.aicc:.6g}",
        f"    BIC                = {result.bic:.6g}",
        "    (AIC/AICc/BIC from the full Gaussian log-likelihood, noise parameters counted; lmfit's own",
        "     aic = N ln(chisqr/N) + 2 k differs from these by a constant for a given data set.)",
        "[[Variables]]",
    ]
    width = max(len(n) for n in p.fit_names)
    for name in p.fit_names:
        if name in p.free:
            j = p.free.index(name)
            value, err = result.values[j], result.stderr[j]
            rel = f" ({100 * err / abs(value):.2f}%)" if value and np.isfinite(err) else ""
            lo, hi = result.ci95.get(name, (None, None))
            ci = f"  95% profile CI [{_fmt(lo)}, {_fmt(hi)}]" if name in result.profiles else ""
            flag = "  NOT IDENTIFIABLE" if result.identifiable.get(name) is False else ""
            scale = " (log10 fitted)" if p.log_mask[j] else ""
            lines.append(f"    {name:<{width}} = {value:.6g} +/- {err:.3g}{rel}{ci}{flag}{scale}")
        else:
            value = p.fit_values[p.fit_names.index(name)]
            lines.append(f"    {name:<{width}} = {value:.6g} (fixed)")
    corr = []
    for a in range(result.n_free):
        for b in range(a + 1, result.n_free):
            c = result.correlation[a, b]
            if np.isfinite(c) and abs(c) > 0.5:
                corr.append((abs(c), f"    C({p.free[a]}, {p.free[b]}) = {c:+.4f}"))
    if corr:
        lines.append("[[Correlations]] (|C| > 0.5)")
        lines.extend(text for _, text in sorted(corr, reverse=True))
    bad = [n for n, ok in result.identifiable.items() if ok is False]
    if bad:
        lines.append("[[Warnings]]")
        for name in bad:
            lo, hi = result.ci95[name]
            side = "both sides" if lo is None and hi is None else ("below" if lo is None else "above")
            lines.append(f"    {name}: the data do not bound it {side} (its likelihood profile stays within the 95% "
                         "threshold up to the parameter bound). Treat its estimate as a range, fix it, or add data that depend on it.")
    if result.n_starts > 1:
        spread = np.sort(result.start_nll - result.start_nll.min())
        finite = spread[np.isfinite(spread)]
        if len(finite) > result.n_at_best:
            others = finite[result.n_at_best:]
            lines.append(f"[[Multi-start]] other optima: {len(others)} starts ended between {others.min():.3g} and "
                         f"{others.max():.3g} above the best -log-likelihood")
        failed = int(np.sum(~np.isfinite(spread)))
        if failed:
            lines.append(f"    {failed} start(s) failed")
    if result.mcmc:
        lines.append(f"[[MCMC]] {len(result.mcmc['samples'])} samples, acceptance {result.mcmc['acceptance']:.2f}")
        for k, name in enumerate(result.mcmc["names"]):
            q = np.percentile(result.mcmc["samples"][:, k], [2.5, 50, 97.5])
            lines.append(f"    {name:<{width}} median {q[1]:.5g}, 95% [{q[0]:.5g}, {q[2]:.5g}]")
    return "\n".join(lines)


def read_result(folder):
    """(path, content) of a saved ``result.json`` (a fit folder or the file itself), checked."""
    import json

    from ..errors import KineticsError
    folder = Path(folder)
    path = folder / "result.json" if folder.is_dir() else folder
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KineticsError(f"{path}: no result.json here; run 'kinetics fit CASE --out {folder}' first") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise KineticsError(f"{path}: not a valid result.json ({exc})") from None
    for key in ("model", "data", "statistics", "parameters"):
        if key not in data:
            raise KineticsError(f"{path}: result.json lacks '{key}'; was it written by kinetics fit?")
    return path, data


def _finite(v):
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def result_dict(result) -> dict:
    """The result.json content (DESIGN.md contract)."""
    from .. import __version__
    p = result.problem
    params = {}
    for name in p.fit_names:
        if name in p.free:
            j = p.free.index(name)
            lo, hi = result.ci95.get(name, (None, None))
            params[name] = {"value": float(result.values[j]), "stderr": _finite(result.stderr[j]),
                            "ci95": [_finite(lo), _finite(hi)] if name in result.profiles else None,
                            "free": True, "identifiable": result.identifiable.get(name),
                            "log_scale": bool(p.log_mask[j])}
        else:
            params[name] = {"value": float(p.fit_values[p.fit_names.index(name)]), "stderr": None, "ci95": None,
                            "free": False, "identifiable": None}
    model_sha = p.model.sha256 or hashlib.sha256(repr(p.model.to_dict()).encode()).hexdigest()
    return {
        "kinetics_version": __version__,
        "model": {"name": p.model.name, "sha256": model_sha, "path": p.model.source},
        "data": {"path": p.data.path, "sha256": p.data.sha256, "n_points": int(p.n_data)},
        "noise": {"model": p.noise, **{k: float(v) for k, v in result.noise_params.items()}},
        "conditions": p.condition_names,
        "parameters": params,
        "statistics": {"chisqr": float(result.chisqr), "redchi": _finite(result.redchi), "loglik": float(result.loglik),
                       "aic": float(result.aic), "aicc": _finite(result.aicc), "bic": float(result.bic),
                       "n_data": int(result.n_data), "n_free": int(result.n_free), "n_noise": int(result.n_noise)},
        "optimizer": {"method": result.method, "success": bool(result.success), "message": str(result.message),
                      "n_starts": int(result.n_starts), "n_at_best": int(result.n_at_best), "nfev": int(result.nfev),
                      "njev": int(result.njev), "analytic_jacobian": bool(result.use_jacobian),
                      "engine": getattr(result, "engine", "auto"),
                      "seconds": float(result.seconds)},
        "correlation": {"names": list(p.free), "matrix": [[_finite(v) for v in row] for row in result.correlation]},
        "profiles": result.profiles,
    }


def _grid(result, condition):
    times = result.problem.data.for_condition(condition)["time"].to_numpy(float)
    t_max = times.max() if len(times) else 1.0
    positive = times[times > 0]
    if len(positive) and positive.min() < t_max / 50:
        grid = np.unique(np.concatenate([[0.0], np.geomspace(positive.min() / 2, t_max, 150), np.linspace(0, t_max, 60)]))
    else:
        grid = np.linspace(0, t_max, 200)
    return grid


def _band(result, grid, condition, names, n_samples=100):
    """95 % band of the fitted curves: percentiles over MCMC draws when sampled, else the delta
    method (linear propagation of the covariance; stable for correlated, weakly identified
    parameters where drawing parameter sets from the covariance is not)."""
    p = result.problem
    if result.mcmc is not None:
        rng = np.random.default_rng(0)
        draws = result.mcmc["samples"][rng.integers(0, len(result.mcmc["samples"]), n_samples)]
        curves = {n: [] for n in names}
        for x in p.to_internal(draws):
            try:
                out = p.curves(p.phi(x), grid, condition)
            except Exception:  # noqa: BLE001 - a draw that fails to simulate is skipped
                continue
            for n in names:
                curves[n].append(out[n])
        return {n: np.percentile(np.array(v), [2.5, 97.5], axis=0) for n, v in curves.items() if len(v) > 5}
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


def plot_fit(result, ax=None, logy=False, band=True):
    """Data and fitted curves, one panel per observable, one colour per condition."""
    import matplotlib.pyplot as plt
    p = result.problem
    observables = p.data.observables
    if ax is None:
        fig, axes = plt.subplots(1, len(observables), figsize=(5.2 * len(observables), 4.2), squeeze=False)
        axes = axes[0]
    else:
        axes = np.atleast_1d(ax)
        fig = axes[0].figure
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for c_i, condition in enumerate(p.condition_names):
        colour = colours[c_i % len(colours)]
        grid = _grid(result, condition)
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


def plot_residuals(result, ax=None):
    """Standardized residuals against time, per observable and condition."""
    import matplotlib.pyplot as plt
    p = result.problem
    r = p.residuals(result.x, result.weights)
    s = p.noise_scale(result.rss)
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4))
    else:
        fig = ax.figure
    times = np.concatenate([plan["rows"]["time"].to_numpy(float) for plan in p._plans])
    labels = np.concatenate([(plan["name"] + ": " + plan["rows"]["observable"]).to_numpy(str) for plan in p._plans])
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


def plot_profiles(result):
    """Likelihood profiles with the 95 % threshold."""
    import matplotlib.pyplot as plt
    from ..fitting.optimize import CHI2_95
    names = list(result.profiles)
    if not names:
        return None
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
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


def plot_corner(result, bins=30):
    """Corner-style plot of MCMC samples: histograms on the diagonal, pair scatter below."""
    import matplotlib.pyplot as plt
    if not result.mcmc:
        return None
    samples, names = result.mcmc["samples"], result.mcmc["names"]
    k = len(names)
    log = result.problem.log_mask
    data = np.where(log, np.log10(np.clip(samples, 1e-300, None)), samples)
    labels = [f"log10 {n}" if lg else n for n, lg in zip(names, log)]
    fig, axes = plt.subplots(k, k, figsize=(2.2 * k + 1, 2.2 * k + 1), squeeze=False)
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


def _save_figure(fig, path):
    import matplotlib.pyplot as plt
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def save_result(result, folder) -> list:
    import matplotlib
    matplotlib.use("Agg")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = [result.to_json(folder / "result.json") and folder / "result.json"]
    written.append(atomic_write(folder / "report.txt", result.fit_report() + "\n"))
    logy = bool((result.problem.y > 0).all() and result.problem.y.max() / max(result.problem.y.min(), 1e-300) > 100)
    _save_figure(result.plot_fit(logy=logy), folder / "fit.png")
    _save_figure(result.plot_residuals(), folder / "residuals.png")
    written += [folder / "fit.png", folder / "residuals.png"]
    from ..analysis.compare import _curves_table
    with atomic_path(folder / "curves.csv") as tmp:
        _curves_table(result).to_csv(tmp, index=False, float_format="%.10g")
    written.append(folder / "curves.csv")
    fig = result.plot_profiles()
    if fig is not None:
        _save_figure(fig, folder / "profiles.png")
        written.append(folder / "profiles.png")
    fig = plot_corner(result)
    if fig is not None:
        _save_figure(fig, folder / "corner.png")
        written.append(folder / "corner.png")
    return written
