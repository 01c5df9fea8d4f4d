"""lmfit's and pandas' names on :class:`~kinetics.fitting.optimize.FitResult`.

A user coming from lmfit finds ``params``, ``nvarys``, ``ndata``, ``nfree``, ``var_names``,
``covar``, ``residual``, ``best_fit``, ``init_values``, ``success``, ``message``, ``aic``, ``bic``,
``chisqr``, ``redchi``, ``eval()``, ``summary()`` and ``conf_interval()``; parameter tables are
pandas DataFrames (:meth:`parameters_frame`), and a notebook shows a FitResult as tables
(``_repr_html_``). These are views of the FitResult's own attributes (``n_free``, ``covariance``,
``values``, ``ci95``, ...), which keep their names.

Where lmfit and kinetics differ: ``aic``/``bic`` here are the likelihood-based figures
(2k - 2 log L with the noise parameters counted), not lmfit's N ln(chisqr/N) + 2k; ``covar`` is
on the natural scale of the parameters (lmfit's, too, is in the parameters' own units) even
when kinetics fits a parameter as log10; ``conf_interval()`` returns the 95 % profile-likelihood
interval (the only one kinetics computes) in lmfit's ``{name: [(prob, value), ...]}`` layout.
"""

from __future__ import annotations

import html

import numpy as np

__all__ = ["LmfitConventions", "CI_PROBABILITY"]

#: probability of the profile-likelihood intervals (chi-square 1 dof at 3.84)
CI_PROBABILITY = 0.95


class LmfitConventions:
    """Mixin for FitResult: lmfit's MinimizerResult/ModelResult names, pandas tables, HTML."""

    # ------------------------------------------------------------- lmfit names
    @property
    def nvarys(self) -> int:
        """Number of free (varied) model parameters (= ``n_free``)."""
        return int(self.n_free)

    @property
    def ndata(self) -> int:
        """Number of data points (= ``n_data``)."""
        return int(self.n_data)

    @property
    def nfree(self) -> int:
        """Degrees of freedom, ndata - nvarys (lmfit's meaning; not ``n_free``)."""
        return int(self.n_data - self.n_free)

    @property
    def var_names(self) -> list:
        """Names of the free parameters, in the order of ``covar``."""
        return list(self.problem.free)

    @property
    def covar(self) -> np.ndarray:
        """Covariance of the free parameters on their natural scale (= ``covariance``)."""
        return self.covariance

    @property
    def errorbars(self) -> bool:
        """Whether standard errors could be estimated (a finite covariance)."""
        return bool(np.isfinite(self.covariance).all())

    @property
    def aborted(self) -> bool:
        """Always False: an interrupted kinetics fit raises instead of returning a result."""
        return False

    @property
    def uvars(self) -> dict:
        """The free parameters as correlated ``uncertainties`` ufloats (value, stderr, covariance),
        as lmfit gives them; plain values where the covariance is not finite."""
        from uncertainties import correlated_values, ufloat
        if self.errorbars:
            try:
                return dict(zip(self.var_names, correlated_values(self.values, self.covariance)))
            except (ValueError, np.linalg.LinAlgError):
                pass
        return {name: ufloat(v, sd if np.isfinite(sd) else np.nan) for name, v, sd in zip(self.var_names, self.values, self.stderr)}

    @property
    def init_values(self) -> dict:
        """Start values of the free parameters (the fit spec's; natural scale)."""
        p = self.problem
        return {name: float(v) for name, v in zip(p.free, p.fit_values[p.free_index])}

    @property
    def init_vals(self) -> list:
        """Start values as a list in ``var_names`` order (lmfit's MinimizerResult.init_vals)."""
        return list(self.init_values.values())

    @property
    def residual(self) -> np.ndarray:
        """Weighted residuals w (y - f) at the best fit, data rows in condition order;
        ``chisqr`` is their sum of squares."""
        return self.problem.residuals(self.x, self.weights)

    @property
    def data(self) -> np.ndarray:
        """The measured values, in the order of ``residual`` and ``best_fit``."""
        return np.asarray(self.problem.y, dtype=float)

    @property
    def best_fit(self) -> np.ndarray:
        """The fitted model at the data points (scale and offset of observables applied)."""
        return self.problem.predict(self.x)[0]

    @property
    def flatchain(self):
        """MCMC samples as a DataFrame (one column per free parameter), or None before sampling."""
        if not self.mcmc:
            return None
        import pandas as pd
        return pd.DataFrame(self.mcmc["samples"], columns=self.mcmc["names"])

    def eval(self, params=None, times=None, condition=None) -> dict:
        """The model's curves (dict name -> array) of one condition (default: the first) at
        ``times`` (default: the data's times of that condition), with ``params`` (a dict or
        lmfit Parameters of fit parameters; default: the best fit)."""
        p = self.problem
        condition = self._condition(condition)
        if times is None:
            times = np.unique(p.data.for_condition(condition)["time"].to_numpy(float))
        phi = None
        if params is not None:
            values = {name: (params[name].value if hasattr(params[name], "value") else params[name])
                      for name in params}
            unknown = sorted(set(values) - set(p.fit_names))
            if unknown:
                from ..errors import FitError
                raise FitError(f"eval(params=...): {', '.join(unknown)} are not parameters of this fit; "
                               f"it has {', '.join(p.fit_names)}")
            phi = np.array([values.get(name, current) for name, current in zip(p.fit_names, p.phi(self.x))])
        return self.predict(times, condition, params=phi)

    def conf_interval(self, p_names=None) -> dict:
        """Profile-likelihood intervals in lmfit's layout: ``{name: [(0.95, lower), (0.0, best),
        (0.95, upper)]}`` (None where a side stays open; profiles computed if missing)."""
        names = list(p_names or self.problem.free)
        missing = [n for n in names if n not in self.profiles]
        if missing:
            self.compute_profiles(missing)
        best = dict(zip(self.problem.free, self.values))
        return {name: [(CI_PROBABILITY, self.ci95[name][0]), (0.0, float(best[name])),
                       (CI_PROBABILITY, self.ci95[name][1])] for name in names}

    def summary(self) -> dict:
        """The main statistics and estimates as a dict (like lmfit's ModelResult.summary())."""
        return {"method": self.method, "success": bool(self.success), "message": str(self.message),
                "nfev": int(self.nfev), "ndata": self.ndata, "nvarys": self.nvarys, "nfree": self.nfree,
                "chisqr": float(self.chisqr), "redchi": float(self.redchi), "loglik": float(self.loglik),
                "aic": float(self.aic), "aicc": float(self.aicc), "bic": float(self.bic),
                "var_names": self.var_names, "init_values": self.init_values,
                "best_values": self.best_values, "errorbars": self.errorbars,
                "params": self.parameters_frame().reset_index().to_dict(orient="records"),
                "noise": {"model": self.problem.noise, **{k: float(v) for k, v in self.noise_params.items()}}}

    # ------------------------------------------------------------ pandas tables
    def parameters_frame(self):
        """One row per fit parameter: value, stderr, relative stderr, 95 % interval, start,
        bounds, free, log_scale, identifiable (a pandas DataFrame indexed by name)."""
        import pandas as pd
        p = self.problem
        rows = []
        for i, name in enumerate(p.fit_names):
            lo, hi = p.fit_bounds[i]
            row = {"name": name, "value": float(p.fit_values[i]), "stderr": np.nan, "rel_stderr": np.nan,
                   "ci95_lower": np.nan, "ci95_upper": np.nan, "init_value": float(p.fit_values[i]),
                   "min": lo, "max": hi, "free": False, "log_scale": False, "identifiable": None}
            if name in p.free:
                j = p.free.index(name)
                value, sd = float(self.values[j]), float(self.stderr[j])
                lower, upper = self.ci95.get(name, (None, None))
                row.update(value=value, stderr=sd, rel_stderr=sd / abs(value) if value else np.nan,
                           ci95_lower=np.nan if lower is None else lower, ci95_upper=np.nan if upper is None else upper,
                           free=True, log_scale=bool(p.log_mask[j]), identifiable=self.identifiable.get(name))
            rows.append(row)
        return pd.DataFrame(rows).set_index("name")

    @property
    def params_frame(self):
        """:meth:`parameters_frame` as a property."""
        return self.parameters_frame()

    def correlation_frame(self):
        """Correlation of the free parameters as a DataFrame."""
        import pandas as pd
        return pd.DataFrame(self.correlation, index=self.var_names, columns=self.var_names)

    def statistics_frame(self):
        """Fit statistics (one column 'value') as a DataFrame."""
        import pandas as pd
        keys = ("ndata", "nvarys", "nfree", "chisqr", "redchi", "loglik", "aic", "aicc", "bic", "nfev")
        return pd.DataFrame({"value": [getattr(self, k) for k in keys]}, index=list(keys))

    def _condition(self, condition):
        names = self.problem.condition_names
        if condition is None:
            return names[0]
        if condition not in names:
            from ..errors import FitError
            raise FitError(f"condition '{condition}' is not in this fit ({self.problem.origin}); "
                           f"its conditions are: {', '.join(names)}")
        return condition

    # --------------------------------------------------------------- notebooks
    def _repr_html_(self) -> str:
        p = self.problem
        title = (f"<h4>FitResult: {html.escape(p.model.name)}</h4><p>{p.n_data} points, "
                 f"{html.escape(', '.join(p.condition_names))}; noise {html.escape(p.noise)}; "
                 f"{'converged' if self.success else 'NOT converged'}: {html.escape(str(self.message))}</p>")
        table = self.parameters_frame()[["value", "stderr", "ci95_lower", "ci95_upper", "free", "identifiable"]]
        return (title + table.to_html(float_format=lambda v: f"{v:.5g}", na_rep="")
                + self.statistics_frame().T.to_html(float_format=lambda v: f"{v:.5g}", index=False))
