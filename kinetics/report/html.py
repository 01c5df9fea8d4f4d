"""``report.html``: a one-page, self-contained report of a fit (estimates with intervals, fit
statistics, warnings, the figures as inline SVG, the text report) that opens in any browser.
Only reads FitResults."""

from __future__ import annotations

import html
import io
import math

from ..io.results import failed_starts

__all__ = ["fit_report_html", "fit_warnings", "figure_svg"]

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.92em; } td, th { padding: 0.25em 0.7em; border-bottom: 1px solid #eee; }
th { text-align: left; background: #f6f6f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.warning { background: #fff4e5; border-left: 4px solid #f0a020; padding: 0.5em 0.8em; margin: 0.4em 0; }
.ok { color: #2a7a2a; } .bad { color: #b22; } figure { margin: 1em 0; } svg { max-width: 100%; height: auto; }
pre { background: #f8f8f8; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def figure_svg(figure) -> str:
    """A matplotlib Figure as inline SVG markup (the XML prologue dropped)."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def fit_warnings(result) -> list:
    """What a reader of the fit should know: no convergence, non-identifiable parameters,
    profiles cut short, failed starts, an optimum found by one start only."""
    out = []
    if not result.success:
        out.append(f"The optimizer did not report convergence: {result.message}")
    bad = [n for n, ok in result.identifiable.items() if ok is False]
    if bad:
        out.append(f"Not identifiable from these data (flat likelihood profile up to a bound): {', '.join(bad)}.")
    for name, reasons in result.profile_failures.items():
        out.append(f"The profile of {name} was cut short where the model cannot be simulated: {'; '.join(reasons)}.")
    failed = failed_starts(result)
    if failed:
        out.append(f"{len(failed)} of {result.n_starts} starts produced no optimum (see result.json, failed_starts).")
    if result.n_starts > 1 and result.n_at_best == 1:
        out.append(f"Only 1 of {result.n_starts} starts reached the best optimum: run more starts to be sure it is global.")
    if not result.profiles:
        out.append("No profile-likelihood intervals were computed (fitted with --no-profiles); the intervals below are "
                   "missing.")
    return out


def _number(value):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.5g}"


def fit_report_html(result, figures=None) -> str:
    """The report page of ``result``; ``figures`` maps a name (fit, residuals, profiles, corner)
    to a matplotlib Figure embedded as inline SVG."""
    from .text import fit_report
    p = result.problem
    esc = html.escape
    rows = []
    for name, row in result.parameters_frame().iterrows():
        status = {True: '<span class="ok">yes</span>', False: '<span class="bad">no</span>'}.get(row["identifiable"], "")
        rows.append(
            f"<tr><td>{esc(name)}</td><td class='num'>{_number(row['value'])}</td>"
            f"<td class='num'>{_number(row['stderr'])}</td><td class='num'>{_number(row['ci95_lower'])}</td>"
            f"<td class='num'>{_number(row['ci95_upper'])}</td><td>{'free' if row['free'] else 'fixed'}"
            f"{' (log10)' if row['log_scale'] else ''}</td><td>{status}</td>"
            f"<td>{esc(str(getattr(p.model.parameters.get(name), 'unit', '') or ''))}</td></tr>")
    stats = [("data points", result.n_data), ("free parameters", result.n_free), ("noise parameters", result.n_noise),
             ("log-likelihood", result.loglik), ("AIC", result.aic), ("AICc", result.aicc), ("BIC", result.bic),
             ("chi-square (weighted)", result.chisqr), ("reduced chi-square", result.redchi),
             ("starts (at the best optimum)", f"{result.n_starts} ({result.n_at_best})"),
             ("model evaluations", result.nfev), ("seconds", result.seconds)]
    noise = ", ".join(f"{k} = {v:.4g}" for k, v in result.noise_params.items())
    parts = [
        "<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>Fit of {esc(p.model.name)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Fit of {esc(p.model.name)}</h1>",
        f"<p>{p.n_data} data points from <code>{esc(str(p.data.path or 'a table'))}</code>; conditions: "
        f"{esc(', '.join(p.condition_names))}; noise model: {esc(p.noise)}" + (f" ({esc(noise)})" if noise else "")
        + f"; method {esc(str(result.method))}. "
        + ('<span class="ok">Converged</span>' if result.success else '<span class="bad">Not converged</span>')
        + f": {esc(str(result.message))}</p>",
    ]
    warnings = fit_warnings(result)
    if warnings:
        parts.append("<h2>Warnings</h2>" + "".join(f"<div class='warning'>{esc(w)}</div>" for w in warnings))
    parts.append("<h2>Estimates</h2><table><tr><th>parameter</th><th>value</th><th>std. error</th>"
                 "<th>95 % lower</th><th>95 % upper</th><th></th><th>identifiable</th><th>unit</th></tr>"
                 + "".join(rows) + "</table><p>Intervals: profile likelihood (2 &Delta; log L = 3.84); "
                 "standard errors from the covariance at the optimum.</p>")
    parts.append("<h2>Statistics</h2><table>" + "".join(
        f"<tr><td>{esc(k)}</td><td class='num'>{v if isinstance(v, str) else _number(float(v))}</td></tr>"
        for k, v in stats) + "</table>")
    captions = {"fit": "Data and fitted curves (band: 95 % parameter uncertainty)",
                "residuals": "Standardized residuals", "profiles": "Likelihood profiles (dashed: the 95 % threshold)",
                "corner": "Posterior samples (MCMC)"}
    for name, figure in (figures or {}).items():
        if figure is not None:
            parts.append(f"<h2>{esc(captions.get(name, name))}</h2><figure>{figure_svg(figure)}</figure>")
    parts.append(f"<h2>Text report</h2><details><summary>report.txt</summary><pre>{esc(fit_report(result))}</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
