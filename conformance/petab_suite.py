"""Run the PEtab test suite (v1, SBML cases) through kinetics and judge it by the suite's tolerances.

    python conformance/petab_suite.py CASES_DIR --out OUT_DIR [--cases 1-20]

CASES_DIR holds one folder per case (``NNNN/``: ``_NNNN.yaml`` and its tables,
``_NNNN_solution.yaml`` with the expected ``llh``, ``chi2``, simulation files and tolerances),
directly or under ``cases/``. For every case the runner imports the problem
(:func:`kinetics.load_petab`), evaluates it at the nominal parameters and writes
``OUT_DIR/NNNN.json`` (``llh``, ``chi2``, ``n_measurements``, the outcome) and the simulation
table ``OUT_DIR/NNNN_simulations.tsv`` beside it. A case passes when |llh - expected| <=
tol_llh, |chi2 - expected| <= tol_chi2 and every simulated value is within tol_simulations of
the expected one. ``OUT_DIR/summary.json`` records each case's outcome (``"ok"``,
``"wrong: ..."``, ``"refused: <message>"``, ``"error: ..."``) and the counts.

The suite is at https://github.com/PEtab-dev/petab_test_suite (``petabtests/cases/v1.0.0/sbml``);
the repository's tests use a copy in ``../shared/conformance/petab-suite-v1``.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def list_cases(cases_dir: Path) -> list:
    return sorted(p.name for p in cases_dir.iterdir() if p.is_dir() and (p / f"_{p.name}.yaml").exists())


def run_case(cases_dir: Path, case: str, out: Path) -> str:
    """Evaluate one case, write its JSON and simulation table; returns the outcome."""
    import numpy as np
    import pandas as pd
    import yaml
    from kinetics.errors import KineticsError
    from kinetics.fitting.problem import load_petab
    from kinetics.io.petab import PetabUnsupported, evaluate
    folder = cases_dir / case
    solution = yaml.safe_load((folder / f"_{case}_solution.yaml").read_text())
    record = {"case": case}
    try:
        problem = load_petab(folder / f"_{case}.yaml")
        result = evaluate(problem)
    except PetabUnsupported as exc:
        outcome = f"refused: {exc}"
    except (KineticsError, ValueError, ArithmeticError) as exc:
        outcome = f"error: {type(exc).__name__}: {exc}"
    else:
        simulations = result.pop("simulations")
        simulations.to_csv(out / f"{case}_simulations.tsv", sep="\t", index=False)
        record.update(result)
        problems = []
        for key in ("llh", "chi2"):
            if not abs(result[key] - solution[key]) <= solution[f"tol_{key}"]:
                problems.append(f"{key} {result[key]:.10g}, expected {solution[key]:.10g}")
        expected = pd.concat([pd.read_csv(folder / f, sep="\t") for f in solution.get("simulation_files", [])])
        got = simulations["simulation"].to_numpy(float)
        want = expected["simulation"].to_numpy(float)
        if len(got) != len(want):
            problems.append(f"{len(got)} simulated values, expected {len(want)}")
        else:
            worst = float(np.max(np.abs(got - want))) if len(got) else 0.0
            record["max_simulation_error"] = worst
            if not worst <= solution["tol_simulations"]:
                problems.append(f"simulations differ by up to {worst:.3g}")
        outcome = "ok" if not problems else "wrong: " + "; ".join(problems)
    record["outcome"] = outcome
    (out / f"{case}.json").write_text(json.dumps(record, indent=2) + "\n")
    return outcome


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cases", help="case numbers, e.g. 1-5,9")
    args = parser.parse_args(argv)
    cases_dir = args.cases_dir / "cases" if (args.cases_dir / "cases").is_dir() else args.cases_dir
    if not cases_dir.is_dir():
        parser.error(f"{args.cases_dir}: no such folder")
    cases = list_cases(cases_dir)
    if args.cases:
        wanted = set()
        for part in args.cases.split(","):
            lo, _, hi = part.partition("-")
            wanted.update(range(int(lo), int(hi or lo) + 1))
        cases = [c for c in cases if int(c) in wanted]
    args.out.mkdir(parents=True, exist_ok=True)
    from kinetics.errors import KineticsWarning
    warnings.simplefilter("ignore", KineticsWarning)
    outcomes = {}
    for case in cases:
        outcomes[case] = run_case(cases_dir, case, args.out)
        if outcomes[case] != "ok":
            print(f"{case}: {outcomes[case][:300]}", flush=True)
    counts = {k: sum(1 for o in outcomes.values() if o.split(":")[0] == k) for k in ("ok", "refused", "wrong", "error")}
    summary = {"cases": outcomes, "counts": counts, "n_cases": len(cases)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"kinetics: {counts['ok']}/{len(cases)} PEtab test cases pass "
          f"({counts['wrong']} wrong, {counts['refused']} refused, {counts['error']} errors)")
    return 0 if counts["ok"] == len(cases) else 1


if __name__ == "__main__":
    sys.exit(main())
