"""The readable text report of a fit (:func:`fit_report`). Only reads FitResults."""

from __future__ import annotations

import math

import numpy as np

from ..io.results import failed_starts

__all__ = ["fit_report"]


def _fmt(v, digits=5):
    if v is None:
        return "open"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return f"{v:.{digits}g}"


def _method_text(result) -> str:
    if result.method.startswith("L-BFGS-B"):
        return f"{result.method}  (scipy, on the exact negative log-likelihood)"
    if result.method.startswith("least_squares ("):     # sigma residuals, a profiled noise scale
        return f"{result.method}  (compiled trust-region steps on the exact negative log-likelihood)"
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
            flag = "  NOT IDENTIFIABLE" if result.identifiable.get(name) is False else (
                "  PROFILE CUT SHORT (simulation failed)" if name in result.profile_failures else "")
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
    cut = [n for n in result.profile_failures if n in result.profiles]
    if cut:
        if not bad:
            lines.append("[[Warnings]]")
        for name in cut:
            for reason in result.profile_failures[name]:
                lines.append(f"    {name}: its likelihood profile was cut short, {reason}. The open side of its interval "
                             "reflects the failed simulation, not the data; narrow its bounds or check the model there.")
    if result.n_starts > 1:
        spread = np.sort(result.start_nll - result.start_nll.min())
        finite = spread[np.isfinite(spread)]
        if len(finite) > result.n_at_best:
            others = finite[result.n_at_best:]
            lines.append(f"[[Multi-start]] other optima: {len(others)} starts ended between {others.min():.3g} and "
                         f"{others.max():.3g} above the best -log-likelihood")
        failed = failed_starts(result)
        if failed:
            lines.append(f"    {len(failed)} start(s) failed (listed in result.json under failed_starts); first: "
                         f"start {failed[0]['start']}: {failed[0]['message']}")
    if result.mcmc:
        lines.append(f"[[MCMC]] {len(result.mcmc['samples'])} samples, acceptance {result.mcmc['acceptance']:.2f}")
        for k, name in enumerate(result.mcmc["names"]):
            q = np.percentile(result.mcmc["samples"][:, k], [2.5, 50, 97.5])
            lines.append(f"    {name:<{width}} median {q[1]:.5g}, 95% [{q[0]:.5g}, {q[2]:.5g}]")
    return "\n".join(lines)
