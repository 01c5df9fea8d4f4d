"""``make demo`` / ``kinetics demo``: the main job end to end on bundled data: fit the worked
culture case (control vs Rab27a knock-down), write report, result.json and plots, and show
the steady state the fitted model predicts."""

from __future__ import annotations

from pathlib import Path

CASE = "culture_rab27a"


def run(out: Path) -> int:
    from .fitting.optimize import fit
    from .model.library import models_dir
    from .fitting.problem import load_fit_spec

    case = models_dir().parent / "fits" / CASE
    problem = load_fit_spec(case)
    print(f"Fitting {problem.model.name} to {case / 'data.csv'}: {problem.data.summary()}\n")
    result = fit(problem)
    print(result.fit_report())
    written = result.save(out)
    print("\nwrote " + ", ".join(str(p) for p in written))
    from .analysis.steady import steady_state
    values = {k: v for k, v in result.best_values.items() if k in problem.model.parameters}
    print("\n" + steady_state(problem.model, values).report())
    return 0
