"""The AMICI + pyPESTO peer of the fit benchmark, measured in the same run as kinetics.

    OMP_NUM_THREADS=1 /path/to/amici-venv/bin/python bench/peer_amici.py problem.json

Runs in a Python that has amici and pypesto (not kinetics); ``amici_peer.run_amici_peer`` writes
``problem.json`` (``amici_peer.task_spec``: SBML, free parameters with log10 bounds, the other
parameters' values, data rows, starts, repetitions, tolerances, cache folder) and reads the one
JSON object this prints on stdout (everything else goes to stderr).

What it does, as a user of these tools would:
- imports the SBML with AMICI once (observables = the measured states; the other parameters
  fixed, i.e. excluded from sensitivities) into the cache folder, reusing a model compiled from
  the same SBML; the compile time is reported apart from the fits;
- objective: AMICI's negative log-likelihood with normal noise, sigma_i = noise_rel * |y_i| fixed
  at the data (the ``ExpData`` noise scales), i.e. the weighted sum of squares with weights
  1/|y_i| up to a constant factor and offset, as kinetics and the libRoadRunner peer minimize;
  forward sensitivities, CVODES at the given rtol/atol, parameters on log10 scale within bounds;
- optimizers, through ``pypesto.optimize.minimize`` (serial): ``default``, what it uses when
  given none (``ScipyOptimizer()``: scipy L-BFGS-B on the negative log-likelihood and its
  gradient, pyPESTO's default options), and ``ls_trf`` (``ScipyOptimizer(method="ls_trf")``:
  scipy least_squares 'trf' on AMICI's residuals and their Jacobian); the spec's optional
  ``optimizers`` list picks among them;
- single start (the spec's start): median wall time of ``reps_single`` runs after one untimed
  warm-up; 20 starts (the given design) in one ``minimize`` call: median of ``reps_multi`` runs.

Evaluation counts: pyPESTO's ``n_fval``/``n_grad``/``n_res``/``n_sres`` and the AMICI simulations
actually run (``with_sensitivities`` of them with forward sensitivities). Final sums of squares
sum(((y - f)/|y|)^2) come from a fresh simulation at each optimum (not timed), the formula kinetics
reports; "at best" counts starts within 1e-3 relative of the best of them.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import hashlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
# amici_peer (beside this script) uses only the standard library at import
from amici_peer import print_json_only  # noqa: E402


def load_model(spec, observables):
    """The compiled AMICI model (compiled into the cache folder unless already there)."""
    import amici
    from amici.importers.sbml import SbmlImporter
    from amici.importers.utils import MeasurementChannel

    key = json.dumps([spec["sbml"], observables, sorted(spec["fixed"]), amici.__version__])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    name = f"{spec['model_name']}_{digest}"
    out = Path(spec["cache_dir"]) / name
    done = out / "COMPILED"
    t0 = time.perf_counter()
    compiled = False
    if not done.exists():
        channels = [MeasurementChannel(f"obs_{o}", formula=o, noise_distribution="normal", sigma=1.0)
                    for o in observables]       # sigma: overridden per data point by the ExpData
        SbmlImporter(spec["sbml"], from_file=False).sbml2amici(
            name, out, fixed_parameters=sorted(spec["fixed"]), observation_model=channels)
        done.write_text(key)
        compiled = True
    module = amici.import_model_module(name, out)
    return module.get_model(), time.perf_counter() - t0, compiled


def main(path):
    spec = json.loads(Path(path).read_text())
    import amici
    import amici.sim.sundials as asd
    import pypesto
    import pypesto.optimize
    import scipy

    rows = spec["data"]
    observables = sorted({r["observable"] for r in rows})
    times = np.array(sorted({r["time"] for r in rows}))
    ti = np.searchsorted(times, [r["time"] for r in rows])
    oi = np.array([observables.index(r["observable"]) for r in rows])
    y = np.array([r["value"] for r in rows])

    model, t_compile, compiled = load_model(spec, observables)
    for name, value in spec["fixed"].items():
        model.set_fixed_parameter_by_id(name, value)
    model.set_parameter_scale(asd.ParameterScaling_log10)   # before the objective reads it
    model.set_timepoints(times)
    solver = model.create_solver()
    solver.set_sensitivity_method(asd.SensitivityMethod_forward)
    solver.set_relative_tolerance(spec["rtol"])
    solver.set_absolute_tolerance(spec["atol"])

    edata = asd.ExpData(model)
    edata.set_timepoints(times)
    my = np.full((len(times), len(observables)), np.nan)
    sd = np.full_like(my, np.nan)
    my[ti, oi] = y
    sd[ti, oi] = spec["noise_rel"] * np.abs(y)
    edata.set_measurements(my.ravel())
    edata.set_noise_scales(sd.ravel())

    # optimization vector in fit.toml's order; AMICI's own order of free parameters may differ
    x_ids = list(spec["free"])
    if sorted(x_ids) != sorted(model.get_free_parameter_ids()):
        raise SystemExit(f"free parameters {x_ids} != AMICI's {list(model.get_free_parameter_ids())}")
    counts = {"sim": 0, "sim_sensi": 0}

    class CountingObjective(pypesto.AmiciObjective):
        def call_unprocessed(self, x, sensi_orders, mode, *args, **kwargs):
            counts["sim_sensi" if max(sensi_orders, default=0) > 0 else "sim"] += 1
            return super().call_unprocessed(x, sensi_orders, mode, *args, **kwargs)

    objective = CountingObjective(model, solver, edata, max_sensi_order=1, x_ids=x_ids)
    lb, ub = np.array(spec["lower_log10"]), np.array(spec["upper_log10"])

    def rss(x):
        """sum(((y - f)/|y|)^2) at log10 parameters x (one simulation, no sensitivities)."""
        m = model.clone()
        for name, v in zip(x_ids, x):
            m.set_free_parameter_by_id(name, float(v))       # scaled (log10) values
        s = solver.clone()
        s.set_sensitivity_order(asd.SensitivityOrder_none)
        rdata = asd.run_simulation(m, s, edata)
        if rdata.status != asd.AMICI_SUCCESS:
            return float("inf")
        f = np.asarray(rdata.y)[ti, oi]
        return float(np.sum(((y - f) / np.abs(y)) ** 2))

    def run(starts, optimizer):
        """One ``minimize`` call from the given starts; wall time, AMICI simulations, results."""
        problem = pypesto.Problem(objective, lb, ub, x_names=x_ids, x_guesses=np.clip(starts, lb, ub))
        for k in counts:
            counts[k] = 0
        t0 = time.perf_counter()
        result = pypesto.optimize.minimize(problem, optimizer=optimizer, n_starts=len(starts),
                                           progress_bar=False)
        dt = time.perf_counter() - t0
        return dt, dict(counts), result.optimize_result.list

    def summary(runs, sims):
        out = {k: int(sum(getattr(r, k) for r in runs)) for k in ("n_fval", "n_grad", "n_res", "n_sres")}
        out.update(amici_simulations=sims["sim"] + sims["sim_sensi"], with_sensitivities=sims["sim_sensi"])
        return out

    def measure(optimizer):
        start = np.array([spec["start_log10"]])
        run(start, optimizer)                                # warm-up: not timed
        t_single = []
        for _ in range(max(1, spec["reps_single"])):
            dt, sims, runs = run(start, optimizer)
            t_single.append(dt)
        r0 = runs[0]
        x0 = np.asarray(r0.x, dtype=float)
        single = {"seconds": t_single, "median_s": float(np.median(t_single)), **summary(runs, sims),
                  "fval": float(r0.fval), "rss": rss(x0), "values": (10.0 ** x0).tolist(),
                  "exitflag": int(r0.exitflag), "message": str(r0.message)}

        starts = np.array(spec["starts_log10"], dtype=float)
        if not len(starts) or spec["reps_multi"] < 1:
            return {"optimizer": repr(optimizer), "single": single, "multi": None}
        t_multi = []
        for _ in range(spec["reps_multi"]):
            dt, sims, runs = run(starts, optimizer)
            t_multi.append(dt)
        rss_runs = [rss(np.asarray(r.x, dtype=float)) if r.x is not None else float("inf") for r in runs]
        best = min(rss_runs)
        multi = {"n_starts": len(starts), "seconds": t_multi, "median_s": float(np.median(t_multi)),
                 **summary(runs, sims), "best_rss": best,
                 "n_at_best": int(sum(r - best < 1e-3 * best for r in rss_runs)),
                 "rss_per_start": rss_runs,
                 "best_values": (10.0 ** np.asarray(runs[int(np.argmin(rss_runs))].x)).tolist(),
                 "n_failed": int(sum(not np.isfinite(r.fval) for r in runs))}
        return {"optimizer": repr(optimizer), "single": single, "multi": multi}

    # pyPESTO's default optimizer (what minimize() uses when given none: ScipyOptimizer(), i.e.
    # L-BFGS-B on the negative log-likelihood and its gradient), and its least-squares variant
    # (scipy least_squares 'trf' on AMICI's residuals and their Jacobian)
    optimizers = {"default": pypesto.optimize.ScipyOptimizer(),
                  "ls_trf": pypesto.optimize.ScipyOptimizer(method="ls_trf")}
    results = {name: measure(optimizers[name]) for name in spec.get("optimizers", list(optimizers))}

    return {
        "tool": "AMICI (forward sensitivities) + pyPESTO",
        "versions": {"amici": amici.__version__, "pypesto": pypesto.__version__, "scipy": scipy.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "free": x_ids,
        "rtol": spec["rtol"], "atol": spec["atol"],
        "compile_s": t_compile, "compiled_now": compiled,
        **results,
    }


if __name__ == "__main__":
    print_json_only(main, sys.argv, __doc__)
