"""Model comparison: information criteria, Akaike weights and likelihood-ratio tests over fits
of several model variants to the same data.

Works from :class:`~kinetics.fit.FitResult` objects or from saved fit folders (``result.json``
and ``curves.csv`` written by ``kinetics fit``). Refuses fits whose likelihoods are not
comparable: different data (hash) or different noise models.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import chi2

from ..errors import KineticsError
from ..io.results import curves_table

__all__ = ["compare", "Comparison", "akaike_weights"]


def akaike_weights(criterion) -> np.ndarray:
    """exp(-delta/2) normalized, from AIC or AICc values."""
    c = np.asarray(criterion, dtype=float)
    delta = c - np.min(c)
    w = np.exp(-0.5 * delta)
    return w / w.sum()


def _entry(item, label=None):
    """(label, result dict, curves DataFrame or None, folder or None)."""
    from ..fitting.optimize import FitResult
    if isinstance(item, FitResult):
        curves = curves_table(item)
        return label or item.problem.model.name, item.to_dict(), curves, None
    from ..io.results import read_result
    path, data = read_result(item)
    return label or path.parent.name, data, _read_curves(path.parent / "curves.csv"), path.parent


def _read_curves(path):
    """A saved curves.csv (text cells restored from their spreadsheet-safe form), or None when
    missing or unreadable (the comparison itself does not need it, only the plot)."""
    from ..io.files import csv_unsafe_text
    if not path.is_file():
        return None
    try:
        curves = pd.read_csv(path, dtype={"condition": str, "observable": str})
    except (ValueError, OSError, UnicodeDecodeError):
        return None
    if not {"condition", "observable", "time", "value"} <= set(curves.columns):
        return None
    for column in ("condition", "observable"):
        curves[column] = curves[column].map(lambda v: csv_unsafe_text(v) if isinstance(v, str) else v)
    return curves


class Comparison:
    """The outcome of :func:`compare`: ``table`` (one row per model), ``tests`` (nested LRTs)."""

    def __init__(self, entries, table, tests):
        self._entries = entries
        self.table = table
        self.tests = tests

    def report(self) -> str:
        cols = ["model", "model_name", "n_free", "n_data", "loglik", "aic", "aicc", "bic", "delta_aicc", "weight"]
        shown = self.table[cols].rename(columns={"model": "fit", "model_name": "model"})
        text = shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")
        lines = ["[[Model comparison]] (same data, same noise model; AICc weights)", text]
        best = self.table.iloc[0]
        lines.append(f"\nBest supported: {best['model']} (model '{best['model_name']}', Akaike weight {best['weight']:.3f}).")
        if not self.tests.empty:
            lines.append("\n[[Likelihood-ratio tests]] (nested pairs)")
            lines.append(self.tests.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        return "\n".join(lines)

    def to_dict(self):
        return {"models": self.table.to_dict(orient="records"), "likelihood_ratio_tests": self.tests.to_dict(orient="records")}

    def _repr_html_(self) -> str:
        """The comparison and the likelihood-ratio tests as tables (for notebooks)."""
        html = "<p><b>Model comparison</b> (same data, same noise model; AICc weights)</p>" + self.table.to_html(
            index=False, float_format=lambda v: f"{v:.4g}")
        if not self.tests.empty:
            html += "<p><b>Likelihood-ratio tests</b></p>" + self.tests.to_html(index=False, float_format=lambda v: f"{v:.4g}")
        return html

    def plot_weights(self, ax=None, figure=None):
        """Akaike weights as bars; on ``ax``, else on ``figure`` (a detached Figure), else on a
        new pyplot figure."""
        from ..report.plots import new_figure
        if ax is None:
            _, axes = new_figure(figure, (6, 3.5))
            ax = axes[0, 0]
        from ..report.plots import condition_colours
        colours = condition_colours([entry[0] for entry in self._entries])   # the curves' colours (plot_fits)
        ax.bar(self.table["model"], self.table["weight"], color=[colours.get(m, "tab:blue") for m in self.table["model"]])
        for x, weight in enumerate(self.table["weight"]):
            ax.text(x, weight + 0.02, f"{weight:.3g}", ha="center", va="bottom", fontsize="small")
        ax.set_ylabel("Akaike weight (AICc)")
        ax.set_xlabel("model variant")
        ax.set_ylim(0, 1.12)     # room for the value above a bar of weight 1
        ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        ax.tick_params(axis="x", rotation=20)
        ax.grid(alpha=0.3, axis="y")
        ax.figure.tight_layout()
        return ax.figure

    def plot_fits(self, figure=None):
        """Fitted curves of every variant over the data, one panel per observable and condition
        (on ``figure``, a detached Figure, when given)."""
        from ..report.plots import condition_colours, new_figure, readable_log_axis, unit_label
        data_table = self._data_table()
        colours = condition_colours([name for name, _, c, _ in self._entries])
        model_info = self._entries[0][1].get("model", {}) if isinstance(self._entries[0][1], dict) else {}
        time_unit = model_info.get("time_unit")
        units = model_info.get("units") if isinstance(model_info.get("units"), dict) else {}
        panels = []
        for _, _, c, _ in self._entries:
            if c is not None:
                panels += [tuple(x) for x in c[["condition", "observable"]].drop_duplicates().to_numpy()]
        panels = list(dict.fromkeys(panels))
        if not panels:
            return None
        cols = min(3, len(panels))
        rows = math.ceil(len(panels) / cols)
        fig, axes = new_figure(figure, (4.8 * cols, 3.6 * rows), rows, cols)
        for ax, (cond, obs) in zip(axes.flat, panels):
            if data_table is not None:
                sel = data_table[(data_table["condition"] == cond) & (data_table["observable"] == obs)]
                ax.plot(sel["time"], sel["value"], "ko", ms=3.5, alpha=0.7, label="data")
            for name, _, c, _ in self._entries:
                if c is None:
                    continue
                sel = c[(c["condition"] == cond) & (c["observable"] == obs)]
                ax.plot(sel["time"], sel["value"], "-", color=colours[name], label=name)
            ax.set_title(f"{cond}: {obs}", fontsize="medium")
            ax.set_xlabel(f"time [{time_unit}]" if time_unit else "time")
            ax.set_ylabel(unit_label(obs, units.get(obs)))
            shown = np.concatenate([line.get_ydata() for line in ax.get_lines()]).astype(float) if ax.get_lines() else np.array([])
            if shown.size and (shown > 0).all() and shown.max() / shown.min() > 100:   # decades: a log axis shows them
                ax.set_yscale("log")
                readable_log_axis(ax, "y")
            else:
                ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4), useMathText=True)
            ax.grid(alpha=0.3)
            ax.legend(fontsize="x-small")
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        fig.tight_layout()
        return fig

    def _data_table(self):
        """The measurements the fits share, with the fits' own condition names (a data file
        without a condition column has its rows under the fit's single condition), or None
        when the file is gone or has changed since the fits."""
        import warnings

        from ..io.data import load_data
        from ..errors import KineticsWarning
        _, data, _, folder = self._entries[0]
        recorded = data["data"].get("path")
        if not isinstance(recorded, str):
            return None
        candidates = [Path(recorded)] + ([folder / recorded] if folder is not None else [])
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            return None
        conditions = data.get("conditions") if isinstance(data.get("conditions"), list) else None
        try:
            dataset = load_data(str(path), conditions=conditions)
        except KineticsError as exc:
            warnings.warn(f"compare plot: the data are not shown ({exc})", KineticsWarning, stacklevel=3)
            return None
        if data["data"].get("sha256") and dataset.sha256 and dataset.sha256 != data["data"]["sha256"]:
            warnings.warn(f"compare plot: {path} has changed since the fits, so the data are not shown",
                          KineticsWarning, stacklevel=3)
            return None
        return dataset.table


def compare(fits, labels=None, nested=None) -> Comparison:
    """Compare fits (FitResults or fit folders) of model variants to the same data.

    ``nested`` maps a smaller model's label to the label of the model it is nested in; pairs are
    also detected automatically when two fits use the same model file and one's free parameters
    are a strict subset of the other's (the smaller is the larger with parameters fixed)."""
    fits = list(fits)
    if len(fits) < 2:
        raise KineticsError("compare needs at least two fits")
    labels = list(labels) if labels else [None] * len(fits)
    entries = [_entry(f, l) for f, l in zip(fits, labels)]
    names = [e[0] for e in entries]
    if len(set(names)) != len(names):
        entries = [(f"{e[0]}#{i + 1}", *e[1:]) for i, e in enumerate(entries)]
        names = [e[0] for e in entries]
    ref_name, ref = entries[0][0], entries[0][1]
    for name, res, _, _ in entries[1:]:
        if res["data"].get("sha256") != ref["data"].get("sha256"):
            raise KineticsError(
                f"cannot compare '{name}' with '{ref_name}': they were fitted to different data (data hashes differ: "
                f"{str(res['data'].get('sha256'))[:12]} vs {str(ref['data'].get('sha256'))[:12]}). Likelihoods, and so AIC/BIC, "
                "are only comparable on the same data: refit the variants to one data file.")
        if res.get("noise", {}).get("model") != ref.get("noise", {}).get("model"):
            raise KineticsError(
                f"cannot compare '{name}' (noise '{res.get('noise', {}).get('model')}') with '{ref_name}' (noise "
                f"'{ref.get('noise', {}).get('model')}'): different noise models give likelihoods on different scales. "
                "Refit with the same [fit] noise setting.")
    rows = []
    for name, res, _, _ in entries:
        st = res["statistics"]
        rows.append({"model": name, "model_name": res["model"]["name"], "n_free": st["n_free"], "n_noise": st.get("n_noise", 0),
                     "n_data": st["n_data"], "loglik": st["loglik"], "aic": st["aic"],
                     "aicc": st["aicc"] if st["aicc"] is not None else math.inf, "bic": st["bic"]})
    table = pd.DataFrame(rows)
    table["delta_aicc"] = table["aicc"] - table["aicc"].min()
    table["weight"] = akaike_weights(table["aicc"])
    table["delta_bic"] = table["bic"] - table["bic"].min()
    table = table.sort_values("aicc").reset_index(drop=True)
    # nested pairs
    pairs = set()
    by_name = {name: res for name, res, _, _ in entries}
    for small, big in (nested or {}).items():
        for label in (small, big):
            if label not in by_name:
                raise KineticsError(f"nested: unknown fit label '{label}' (labels: {', '.join(names)})")
        pairs.add((small, big))
    for a, ra, _, _ in entries:
        for b, rb, _, _ in entries:
            if a == b or ra["model"].get("sha256") != rb["model"].get("sha256"):
                continue
            free_a = {n for n, v in ra["parameters"].items() if v.get("free")}
            free_b = {n for n, v in rb["parameters"].items() if v.get("free")}
            if free_a < free_b:
                pairs.add((a, b))
    tests = []
    for small, big in sorted(pairs):
        rs, rb = by_name[small]["statistics"], by_name[big]["statistics"]
        df = (rb["n_free"] + rb.get("n_noise", 0)) - (rs["n_free"] + rs.get("n_noise", 0))
        if df <= 0:
            raise KineticsError(f"nested: '{big}' must have more free parameters than '{small}'")
        stat = max(2 * (rb["loglik"] - rs["loglik"]), 0.0)
        tests.append({"smaller": small, "larger": big, "df": df, "statistic": stat, "p_value": float(chi2.sf(stat, df))})
    return Comparison(entries, table, pd.DataFrame(tests, columns=["smaller", "larger", "df", "statistic", "p_value"]))
