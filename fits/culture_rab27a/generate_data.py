"""Synthetic NTA time courses of exosomes in conditioned medium, control vs Rab27a knock-down,
for fits/culture_rab27a (generating values in truth.toml).

The cells have been producing for days before the medium change at t = 0 (stable knock-down
line), so their early-endosome and MVB pools sit at steady state and the medium receives a
constant flux  R = production * cells * k_rel / (k_rel + k_deg)  (k_rel multiplied by the
knock-down factor in the knock-down line); medium exosomes are lost at L = reuptake + decay:

    medium(t) = R / L * (1 - exp(-L t)),     concentration = medium / volume

This closed form is evaluated here without any kinetics code. Noise: proportional Gaussian,
numpy seed in truth.toml.  Run:  .venv/bin/python fits/culture_rab27a/generate_data.py  (rewrites data.csv)
"""

import math
import tomllib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
truth = tomllib.loads((HERE / "truth.toml").read_text())
design = truth.pop("design")


def medium_conc(t, condition):
    k_rel = truth["release_rate"] * (truth["rab27a_kd"] if condition == "rab27a_kd" else 1.0)
    flux = truth["production_per_cell"] * truth["cell_number"] * k_rel / (k_rel + truth["degradation_rate"])
    loss = truth["reuptake_rate"] + truth["medium_decay_rate"]
    return flux / loss * (1.0 - math.exp(-loss * t)) / truth["medium_volume"]


rng = np.random.default_rng(design["seed"])
lines = ["time,condition,observable,value"]
for condition in design["conditions"]:
    for t in design["times_h"]:
        mean = medium_conc(t, condition)
        for _ in range(design["replicates"]):
            value = mean * (1.0 + design["cv"] * rng.standard_normal())
            lines.append(f"{t:g},{condition},medium_conc,{value:.5g}")
(HERE / "data.csv").write_text("\n".join(lines) + "\n")
print(f"wrote {HERE / 'data.csv'}: {len(lines) - 1} rows")
for condition in design["conditions"]:
    print(f"  {condition}: {medium_conc(48, condition):.4g} particles/mL at 48 h")
