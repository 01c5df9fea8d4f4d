"""AMICI + pyPESTO on the PEtab benchmark problems, the peer of ``bench/petab_fits.py --peer``.

    OMP_NUM_THREADS=1 /path/to/amici-venv/bin/python bench/peer_pypesto_petab.py spec.json

Runs in a Python that has amici, pypesto and petab (not kinetics); ``petab_fits.py`` writes
``spec.json`` and reads the one JSON object this prints on stdout (everything else goes to
stderr). The spec: ``yaml`` (the PEtab problem), ``starts`` (the multi-start design as natural
parameter values, one dict {PEtab parameterId: value} per start, the estimated parameters
only), ``optimizers`` (names among ``default``, ``ls_trf``), ``cache_dir`` (compiled AMICI
models), optional ``rtol``/``atol`` (AMICI's defaults otherwise) and ``cross_check`` (natural
parameter dicts to evaluate, e.g. kinetics' optimum) and ``time_evaluations`` (N: the median
time of N evaluations of the objective at the nominal values, without and with the gradient;
then no fit runs unless ``optimizers`` is given too).

What it does, as a user of these tools would: ``pypesto.petab.PetabImporter`` compiles the
problem with AMICI (once, into the cache; the compile time is reported apart), and
``importer.create_problem()`` gives pyPESTO's objective: AMICI's negative log-likelihood with
forward sensitivities, parameters on the PEtab scales within the PEtab bounds. The starts,
converted to those scales, are the problem's ``x_guesses`` (every start is one of them: no
start is resampled), and ``pypesto.optimize.minimize`` runs them serially:

- ``default``: what ``minimize`` uses when given no optimizer, ``ScipyOptimizer()`` (scipy
  L-BFGS-B on the value and gradient, pyPESTO's default options: ``maxfun`` 1000);
- ``ls_trf``: ``ScipyOptimizer(method="ls_trf")``, scipy ``least_squares`` on AMICI's residuals
  and their Jacobian. It only minimizes the likelihood when no estimated parameter enters a
  noise formula (AMICI's residuals (y - f)/sigma leave out the log sigma terms); otherwise it is
  skipped and reported as not applicable.

Evaluation counts: pyPESTO's ``n_fval``/``n_grad``/``n_res``/``n_sres`` and the AMICI
simulations actually run (``with_sensitivities`` of them with forward sensitivities). Each
start's final value is AMICI's negative log-likelihood at its end point (a fresh evaluation, not
timed); "at best" counts the starts within 1e-3 (+ 1e-6 relative) of the best, kinetics' rule.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
# amici_peer (beside this script) uses only the standard library at import
from amici_peer import print_json_only  # noqa: E402


def to_scale(value, scale):
    return {"lin": value, "log": math.log(value), "log10": math.log10(value)}[scale]


def from_scale(value, scale):
    return {"lin": value, "log": math.exp(value), "log10": 10.0 ** value}[scale]


def noise_estimated(petab_problem) -> bool:
    """Whether an estimated parameter appears in a noise formula or a noiseParameters cell."""
    import re
    estimated = set(petab_problem.parameter_df.index[petab_problem.parameter_df["estimate"] == 1])
    texts = [str(v) for v in petab_problem.observable_df["noiseFormula"]]
    if "noiseParameters" in petab_problem.measurement_df:
        texts += [str(v) for v in petab_problem.measurement_df["noiseParameters"]]
    names = {n for text in texts for n in re.findall(r"[A-Za-z_]\w*", text)}
    return bool(names & estimated)


def main(path):
    spec = json.loads(Path(path).read_text())
    import amici
    import petab.v1 as petab
    import pypesto
    import pypesto.optimize
    import pypesto.petab
    import scipy

    logging.getLogger("amici").setLevel(logging.CRITICAL)   # one line per failed simulation otherwise
    petab_problem = petab.Problem.from_yaml(spec["yaml"])
    name = Path(spec["yaml"]).stem
    t0 = time.perf_counter()
    out_dir = Path(spec["cache_dir"]) / f"{name}_amici{amici.__version__}"
    importer = pypesto.petab.PetabImporter(petab_problem, output_folder=str(out_dir), model_name=name)
    problem = importer.create_problem()
    compile_s = time.perf_counter() - t0
    objective = problem.objective
    solver = objective.amici_solver
    if spec.get("rtol") is not None:
        solver.set_relative_tolerance(float(spec["rtol"]))
    if spec.get("atol") is not None:
        solver.set_absolute_tolerance(float(spec["atol"]))

    scales = dict(zip(problem.x_names, petab_problem.parameter_df.loc[problem.x_names, "parameterScale"]))
    free = [problem.x_names[i] for i in problem.x_free_indices]
    full_nominal = np.array(petab_problem.x_nominal_scaled, dtype=float)

    def full_vector(natural: dict):
        x = full_nominal.copy()
        for pid, value in natural.items():
            x[problem.x_names.index(pid)] = to_scale(float(value), scales[pid])
        return x

    counts = {"sim": 0, "sim_sensi": 0}
    original = type(objective).call_unprocessed

    def counting(self, x, sensi_orders, mode, *args, **kwargs):
        counts["sim_sensi" if max(sensi_orders, default=0) > 0 else "sim"] += 1
        return original(self, x, sensi_orders, mode, *args, **kwargs)
    type(objective).call_unprocessed = counting

    def fval(x_free):
        """AMICI's negative log-likelihood at the free parameters (scaled), not counted."""
        saved = dict(counts)
        try:
            value = float(objective(np.asarray(x_free, dtype=float)))
        except Exception:  # noqa: BLE001 - a point AMICI cannot simulate
            value = math.inf
        counts.update(saved)
        return value if np.isfinite(value) else math.inf

    guesses = np.array([full_vector(s) for s in spec["starts"]]).reshape(-1, len(problem.x_names))
    lb, ub = problem.lb_full, problem.ub_full
    guesses = np.clip(guesses, lb, ub)
    if len(guesses):
        problem.set_x_guesses(guesses)
    nominal = fval(full_nominal[problem.x_free_indices])

    results = {}
    if spec.get("time_evaluations"):
        x = full_nominal[problem.x_free_indices]
        objective(x, sensi_orders=(0, 1))          # warm-up
        timing = {}
        for key, orders in (("value_s", (0,)), ("value_and_gradient_s", (0, 1))):
            seconds = []
            for _ in range(int(spec["time_evaluations"])):
                t = time.perf_counter()
                objective(x, sensi_orders=orders)
                seconds.append(time.perf_counter() - t)
            timing[key] = float(np.median(seconds))
        results["evaluation"] = timing
    optimizers = {"default": pypesto.optimize.ScipyOptimizer(),
                  "ls_trf": pypesto.optimize.ScipyOptimizer(method="ls_trf")}
    ls_applies = not noise_estimated(petab_problem)
    for key in spec.get("optimizers", [] if spec.get("time_evaluations") else list(optimizers)):
        if key == "ls_trf" and not ls_applies:
            results[key] = {"applies": False,
                            "why": "an estimated parameter is a noise parameter: AMICI's residuals leave out log sigma"}
            continue
        for k in counts:
            counts[k] = 0
        t = time.perf_counter()
        result = pypesto.optimize.minimize(problem, optimizer=optimizers[key], n_starts=len(guesses),
                                           progress_bar=False)
        seconds = time.perf_counter() - t
        sims = dict(counts)
        runs = sorted(result.optimize_result.list, key=lambda r: int(str(r.id)))   # start order
        finals = [fval(np.asarray(r.x, dtype=float)[problem.x_free_indices]) if r.x is not None else math.inf
                  for r in runs]
        best = min(finals)
        best_run = runs[int(np.argmin(finals))]
        x_best = np.asarray(best_run.x, dtype=float)
        results[key] = {
            "applies": True, "optimizer": repr(optimizers[key]), "seconds": seconds,
            **{k: int(sum(getattr(r, k) for r in runs)) for k in ("n_fval", "n_grad", "n_res", "n_sres")},
            "amici_simulations": sims["sim"] + sims["sim_sensi"], "with_sensitivities": sims["sim_sensi"],
            "nll_per_start": finals, "nll_best": best,
            "n_at_best": int(sum(f - best < 1e-3 + 1e-6 * abs(best) for f in finals)) if np.isfinite(best) else 0,
            "n_failed": int(sum(not np.isfinite(f) for f in finals)),
            "best": {pid: from_scale(float(x_best[problem.x_names.index(pid)]), scales[pid]) for pid in free},
            "messages": [str(r.message)[:100] for r in runs],
        }
    cross = [fval(full_vector(point)[problem.x_free_indices]) for point in spec.get("cross_check", [])]
    return {
        "tool": "AMICI (forward sensitivities) + pyPESTO",
        "problem": name,
        "versions": {"amici": amici.__version__, "pypesto": pypesto.__version__, "petab": petab.__version__,
                     "scipy": scipy.__version__, "numpy": np.__version__, "python": platform.python_version()},
        "rtol": solver.get_relative_tolerance(), "atol": solver.get_absolute_tolerance(),
        "max_steps": solver.get_max_steps(),
        "sensitivity_method": {0: "none", 1: "forward", 2: "adjoint"}.get(int(solver.get_sensitivity_method()),
                                                                         str(solver.get_sensitivity_method())),
        "compile_s": compile_s, "free": free, "nll_nominal": nominal, "cross_check": cross,
        **results,
    }


if __name__ == "__main__":
    print_json_only(main, sys.argv, __doc__)
