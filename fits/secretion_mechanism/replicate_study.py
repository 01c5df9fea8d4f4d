"""How reliably does this design pick the generating mechanism? Regenerates the data with seeds
FIRST..LAST-1 (same truth and design as data.csv, see generate_data.py), fits all three variants
to each replicate (4 starts, no profiles) and counts which variant gets the largest Akaike
weight (AICc). Prints one JSON line per replicate and a summary.

    OMP_NUM_THREADS=1 .venv/bin/python fits/secretion_mechanism/replicate_study.py 0 50

(about 3-4 minutes of CPU for 50 replicates)
"""

import io
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import generate_data  # noqa: E402

from kinetics.fitting.optimize import fit  # noqa: E402
from kinetics.fitting.problem import FitProblem, load_fit_spec  # noqa: E402

VARIANTS = ["acts_on_ilv", "acts_on_docking", "acts_on_degradation"]


def problem_on(template, frame):
    """The template's fit problem (model, conditions, parameters, noise) on other data."""
    spec = template.spec
    return FitProblem(template.model, frame, template.free, conditions=list(template.conditions.values()),
                      parameters=spec.get("parameters", {}), noise=template.noise, log_scale=template.log_scale,
                      observables=spec.get("observables", {}), settings=template.settings)


def main(first, last):
    warnings.simplefilter("ignore")
    templates = {v: load_fit_spec(HERE / v) for v in VARIANTS}
    wins = dict.fromkeys(VARIANTS, 0)
    for seed in range(first, last):
        frame = pd.read_csv(io.StringIO(generate_data.generate(seed=seed)))
        aicc = {}
        for name, template in templates.items():
            result = fit(problem_on(template, frame), multistart=4, seed=1, executor=None, progress=False, profiles=False)
            aicc[name] = result.aicc
        a = np.array([aicc[v] for v in VARIANTS])
        w = np.exp(-0.5 * (a - a.min()))
        w /= w.sum()
        best = VARIANTS[int(np.argmax(w))]
        wins[best] += 1
        print(json.dumps({"seed": seed, "aicc": aicc, "weights": dict(zip(VARIANTS, w.round(6).tolist())), "best": best}),
              flush=True)
    n = last - first
    print(f"largest Akaike weight over {n} replicates: " + ", ".join(f"{v} {k}/{n}" for v, k in wins.items()))


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]] or [0, 50]
    main(*args) if len(args) == 2 else main(0, args[0])
