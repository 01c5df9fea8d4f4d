"""Fit the PEtab benchmark problems in ../shared/conformance/petab-benchmark with kinetics, and
(``--peer``) with AMICI + pyPESTO from the same starts, in the same run.

    python bench/petab_fits.py [NAME ...] [--starts 20] [--seed 0 [1 ...]] [--executor serial|auto]
        [--engine auto|lmfit]
    KINETICS_AMICI_PYTHON=../amici-venv/bin/python python bench/petab_fits.py --peer
    python bench/petab_fits.py Perelson_Science1996 Boehm_JProteomeRes2014 --profiles [--figures DIR]
    python bench/petab_fits.py --evaluations 30 [--peer]       # one evaluation each, no fit

For each problem: the log-likelihood at the nominal values (and the reference value), then a
multi-start fit (the first start at the nominal values, the rest a Latin hypercube over the
bounds on each parameter's scale), reporting wall time, model evaluations, the best negative
log-likelihood and how many starts reached it (within 1e-3). Prints one JSON line per problem
(and seed: ``--seed 0 1 2 3`` fits each problem once per seed of the start design).

With ``--peer``, ``peer_pypesto_petab.py`` runs in the AMICI interpreter (``KINETICS_AMICI_PYTHON``,
see ``amici_peer.find_amici_python``) on the same PEtab file with the same starts (natural values,
which it puts on the PEtab scales; bounds and scales are the problem's own), right after
kinetics' fit of that problem: pyPESTO's default optimizer (L-BFGS-B) and, where the likelihood
is a sum of squares, its ``ls_trf``; AMICI's default tolerances unless ``--rtol/--atol``. Each
tool's optimum is also scored by the other (kinetics' likelihood at pyPESTO's best point and
AMICI's at kinetics'). A table of both tools follows the JSON lines.

With ``--profiles``, the profile likelihood of every free parameter follows each fit
(``FitResult.compute_profiles``, serial; timed apart from the fit): the 95 % intervals (twice the
log-likelihood drop crossing chi2(1) 0.95 = 3.84), why each side ended, and, with ``--figures``,
one PNG of the profiles per problem.

With ``--evaluations N``, no fit: the median time of N evaluations of the negative
log-likelihood at the nominal values, without and with the gradient (forward sensitivities),
kinetics then (``--peer``) AMICI through pyPESTO's objective, problem by problem.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

BENCHMARK = Path(os.environ.get("KINETICS_PETAB_BENCHMARK", BENCH.parent.parent / "shared/conformance/petab-benchmark"))
REFERENCE_LLH = {"Perelson_Science1996": -432.0385498, "Bruno_JExpBot2016": 46.6881815,
                 "Boehm_JProteomeRes2014": -138.2219978, "Crauste_CellSystems2017": -190.9639785}
PEER = BENCH / "peer_pypesto_petab.py"


def petab_ids(problem) -> list:
    """The PEtab parameterId of each free parameter of a problem read by ``load_petab``."""
    back = {kname: pid for pid, kname in problem.petab.names.items()}
    return [back.get(name, name) for name in problem.free]


def run_peer(python, yaml_path, starts, ids, cross_check, optimizers, rtol, atol, timeout, time_evaluations=0):
    """Figures of ``peer_pypesto_petab.py`` (see its docstring), or None with the reason printed."""
    from amici_peer import _env
    spec = {"yaml": str(yaml_path), "starts": [dict(zip(ids, map(float, s))) for s in starts],
            "cross_check": [dict(zip(ids, map(float, c))) for c in cross_check], "optimizers": optimizers,
            "rtol": rtol, "atol": atol, "time_evaluations": time_evaluations,
            "cache_dir": os.environ.get("KINETICS_AMICI_CACHE") or str(Path(tempfile.gettempdir()) / "kinetics_amici_cache")}
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="petab_peer_", delete=False) as f:
        json.dump(spec, f)
        path = f.name
    try:
        proc = subprocess.run([python, str(PEER), path], capture_output=True, text=True, env=_env(python),
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"AMICI + pyPESTO: {Path(yaml_path).stem} did not finish within {timeout:.0f} s", file=sys.stderr)
        return None
    finally:
        os.unlink(path)
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        print(f"AMICI + pyPESTO failed (exit {proc.returncode}): {tail}", file=sys.stderr)
        return None
    return json.loads(proc.stdout)


def fit_problem(name, args, seed):
    """kinetics' multi-start fit of one problem: a dict of figures and the starts (natural values)."""
    import numpy as np
    from kinetics.fitting.optimize import fit, latin_starts
    from kinetics.fitting.problem import load_petab
    from kinetics.io.petab import evaluate
    t0 = time.perf_counter()
    problem = load_petab(BENCHMARK / name / f"{name}.yaml")
    nominal = evaluate(problem)["llh"]
    problem.negative_loglik(problem.start(), gradient=True)     # compilation, outside the fit's time
    t1 = time.perf_counter()
    result = fit(problem, multistart=args.starts, seed=seed, profiles=False, progress=False,
                 executor=None if args.executor == "serial" else "auto", engine=args.engine)
    seconds = time.perf_counter() - t1
    profiles = None
    if args.profiles:
        n0, t2 = problem.nfev, time.perf_counter()
        result.compute_profiles()
        profiles = {"seconds": round(time.perf_counter() - t2, 3), "nfev": problem.nfev - n0,
                    "intervals": {n: {"estimate": result.best_values[n], "lower": prof["lower"], "upper": prof["upper"],
                                      "lower_stop": prof["lower_stop"], "upper_stop": prof["upper_stop"],
                                      "identifiable": result.identifiable[n]}
                                  for n, prof in result.profiles.items()}}
        if args.figures:
            from matplotlib.figure import Figure
            from kinetics.report.plots import plot_profiles, save_figure
            Path(args.figures).mkdir(parents=True, exist_ok=True)
            save_figure(plot_profiles(result, figure=Figure()), Path(args.figures) / f"profiles_{name}", dpi=args.dpi)
    starts = [problem.to_natural(x) for x in latin_starts(problem, args.starts, seed)]
    figures = {
        "problem": name, "seed": seed, "llh_nominal": nominal, "llh_reference": REFERENCE_LLH.get(name),
        "nll_nominal": -nominal, "nll_best": -result.loglik, "starts": result.n_starts,
        "starts_at_best": result.n_at_best, "seconds": round(seconds, 3), "setup_seconds": round(t1 - t0, 2),
        "nfev": result.nfev, "njev": result.njev, "method": result.method,
        "estimates": {n: result.best_values[n] for n in problem.free},
        "nll_per_start": [float(v) for v in result.start_nll],
    }
    if profiles is not None:
        figures["profiles"] = profiles
    best = np.array([result.best_values[n] for n in problem.free])
    return problem, figures, starts, best


def time_evaluations(name, n):
    """Median seconds of n evaluations of kinetics' negative log-likelihood at the nominal
    values, without and with the gradient (after one untimed call with it: compilation)."""
    import numpy as np
    from kinetics.fitting.problem import load_petab
    problem = load_petab(BENCHMARK / name / f"{name}.yaml")
    x = problem.start()
    problem.negative_loglik(x, gradient=True)
    out = {}
    for key, gradient in (("value_s", False), ("value_and_gradient_s", True)):
        seconds = []
        for _ in range(n):
            t = time.perf_counter()
            problem.negative_loglik(x, gradient=gradient)
            seconds.append(time.perf_counter() - t)
        out[key] = float(np.median(seconds))
    return problem, out


def kinetics_nll(problem, natural):
    """kinetics' negative log-likelihood at natural values of the free parameters (inf if it
    cannot simulate there)."""
    import numpy as np
    from kinetics.errors import SolverError
    x = problem.to_internal(np.asarray(natural, dtype=float))
    lo, hi = problem.internal_bounds()
    try:
        return float(problem.negative_loglik(np.clip(x, lo, hi), priors=False)[0])
    except SolverError:
        return float("inf")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", default=sorted(REFERENCE_LLH))
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--seed", type=int, nargs="+", default=[0], help="seeds of the start design, one fit each")
    parser.add_argument("--executor", choices=["serial", "auto"], default="serial")
    parser.add_argument("--engine", choices=["auto", "lmfit"], default="auto",
                        help="kinetics' local fits: auto (compiled trust region where the likelihood is a sum of "
                             "squares, sigma residuals included) or lmfit (L-BFGS-B for scalar likelihoods)")
    parser.add_argument("--peer", action="store_true", help="also AMICI + pyPESTO (KINETICS_AMICI_PYTHON)")
    parser.add_argument("--optimizers", default="default,ls_trf", help="pyPESTO optimizers: default, ls_trf")
    parser.add_argument("--rtol", type=float, default=None, help="AMICI's rtol (default: AMICI's own, 1e-8)")
    parser.add_argument("--atol", type=float, default=None, help="AMICI's atol (default: AMICI's own, 1e-16)")
    parser.add_argument("--peer-timeout", type=float, default=7200)
    parser.add_argument("--profiles", action="store_true", help="profile likelihoods after each fit")
    parser.add_argument("--figures", default=None, help="folder for one PNG of the profiles per problem")
    parser.add_argument("--dpi", type=int, default=100, help="resolution of those PNGs")
    parser.add_argument("--evaluations", type=int, default=0,
                        help="no fit: time this many evaluations at the nominal values (each tool)")
    args = parser.parse_args(argv)
    if not BENCHMARK.is_dir():
        sys.exit(f"{BENCHMARK}: the PEtab benchmark problems are not there (set KINETICS_PETAB_BENCHMARK)")
    python = None
    if args.peer:
        from amici_peer import find_amici_python
        python = find_amici_python()
        if not python:
            sys.exit("--peer: no AMICI interpreter (set KINETICS_AMICI_PYTHON to a Python with amici and pypesto)")
    from kinetics.errors import KineticsWarning
    warnings.simplefilter("ignore", KineticsWarning)
    if args.evaluations:
        print("| problem | kinetics: value | kinetics: value + gradient | AMICI: value | AMICI: value + gradient "
              "| AMICI / kinetics, with gradient | load |")
        print("|---|---|---|---|---|---|---|")
        for name in args.names:
            problem, mine = time_evaluations(name, args.evaluations)
            theirs = {}
            if python:
                peer = run_peer(python, BENCHMARK / name / f"{name}.yaml", [], petab_ids(problem), [], [], args.rtol,
                                args.atol, args.peer_timeout, time_evaluations=args.evaluations)
                theirs = (peer or {}).get("evaluation", {})
            ratio = (f"{theirs['value_and_gradient_s'] / mine['value_and_gradient_s']:.1f}"
                     if theirs else "")
            ms = {k: f"{v * 1e3:.2f} ms" for k, v in theirs.items()}
            print(f"| {name} | {mine['value_s'] * 1e3:.2f} ms | {mine['value_and_gradient_s'] * 1e3:.2f} ms | "
                  f"{ms.get('value_s', '')} | {ms.get('value_and_gradient_s', '')} | {ratio} | "
                  f"{os.getloadavg()[0]:.1f} |", flush=True)
        return
    rows = []
    for name, seed in ((name, seed) for name in args.names for seed in args.seed):
        load = os.getloadavg()[0]
        problem, figures, starts, best = fit_problem(name, args, seed)
        figures["load_before"] = load
        if python:
            peer = run_peer(python, BENCHMARK / name / f"{name}.yaml", starts, petab_ids(problem), [best],
                            args.optimizers.split(","), args.rtol, args.atol, args.peer_timeout)
            if peer is not None:
                for key in ("default", "ls_trf"):
                    run = peer.get(key)
                    if run and run.get("applies"):
                        point = [run["best"][pid] for pid in petab_ids(problem)]
                        run["kinetics_nll_at_best"] = kinetics_nll(problem, point)
                        run["ratio"] = figures["seconds"] / run["seconds"]
            figures["peer"] = peer
        figures["load_after"] = os.getloadavg()[0]
        print(json.dumps(figures), flush=True)
        rows.append(figures)
    print_table(rows)


def print_table(rows):
    """A markdown table of both tools, one row per problem and tool."""
    print("\n| problem | tool | wall time | evaluations | best -llh | starts at best | kinetics / tool |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        label = f"{r['problem']}, seed {r['seed']}"
        print(f"| {label} | kinetics | {r['seconds']:.2f} s | {r['nfev']} ({r['njev']} with sensitivities) | "
              f"{r['nll_best']:.6f} | {r['starts_at_best']}/{r['starts']} | 1 |")
        peer = r.get("peer") or {}
        for key in ("default", "ls_trf"):
            run = peer.get(key)
            if not run:
                continue
            tool = f"AMICI + pyPESTO, {key}"
            if not run.get("applies"):
                print(f"| {label} | {tool} | not applicable: {run.get('why')} | | | | |")
                continue
            print(f"| {label} | {tool} | {run['seconds']:.2f} s | {run['amici_simulations']} "
                  f"({run['with_sensitivities']} with sensitivities) | {run['nll_best']:.6f} "
                  f"(kinetics: {run['kinetics_nll_at_best']:.6f}) | {run['n_at_best']}/{len(run['nll_per_start'])} | "
                  f"{run['ratio']:.3f} |")
        if peer.get("cross_check"):
            print(f"|  | AMICI's -llh at kinetics' best | {peer['cross_check'][0]:.6f} | | | | |")
    profiled = [r for r in rows if r.get("profiles")]
    if profiled:
        print("\n| problem | parameter | estimate | 95 % interval (profile likelihood) | sides ended by |")
        print("|---|---|---|---|---|")
        for r in profiled:
            for name, iv in r["profiles"]["intervals"].items():
                lower = "open" if iv["lower"] is None else f"{iv['lower']:.4g}"
                upper = "open" if iv["upper"] is None else f"{iv['upper']:.4g}"
                print(f"| {r['problem']} | {name} | {iv['estimate']:.4g} | [{lower}, {upper}] | "
                      f"{iv['lower_stop'][:40]} / {iv['upper_stop'][:40]} |")
            print(f"| {r['problem']} | (all profiles) | | {r['profiles']['seconds']:.2f} s, "
                  f"{r['profiles']['nfev']} evaluations | |")


if __name__ == "__main__":
    main()
