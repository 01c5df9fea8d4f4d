"""Synthetic plasma clearance data for fits/plasma_clearance_2c and fits/plasma_clearance_1c.

Truth: the two-compartment model (circulation_2c) with the mouse parameters derived in
models/README.md from Kim et al. 2019, Pharmaceutics 11(12):649, Table 1 (see truth.toml).
The bi-exponential curve is computed here in closed form (no kinetics code), so that a fit with
the library that recovers the truth is also an independent check of its solver.

Design: i.v. bolus of 1e10 particles; plasma sampled by terminal bleed of 3 mice per time point at
2, 5, 10, 15, 30 min and 1, 2, 4, 8, 24 h; 10 % proportional Gaussian noise (numpy seed 2019).
Run from anywhere:  .venv/bin/python fits/plasma_clearance_2c/generate_data.py   (rewrites data.csv)
"""

import math
import tomllib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
truth = tomllib.loads((HERE / "truth.toml").read_text())
k12, k21, k10 = truth["distribution_rate"], truth["return_rate"], truth["clearance_rate"]
V1, dose = truth["plasma_volume"], truth["dose"]
design = truth["design"]

# eigenvalues of the two-compartment system (1/h) and the bi-exponential coefficients
s, p = k10 + k12 + k21, k10 * k21
alpha = 0.5 * (s + math.sqrt(s * s - 4 * p))
beta = 0.5 * (s - math.sqrt(s * s - 4 * p))
A = (alpha - k21) / (alpha - beta)          # plasma fraction in the alpha phase
B = (k21 - beta) / (alpha - beta)


def plasma_conc(t_h):
    return dose / V1 * (A * np.exp(-alpha * t_h) + B * np.exp(-beta * t_h))


times_h = np.array(design["times_min"], dtype=float) / 60.0
rng = np.random.default_rng(design["seed"])
lines = ["time,observable,value"]
for t in times_h:
    mean = plasma_conc(t)
    for _ in range(design["replicates"]):
        value = mean * (1.0 + design["cv"] * rng.standard_normal())
        lines.append(f"{t:.10g},plasma_conc,{value:.5g}")
(HERE / "data.csv").write_text("\n".join(lines) + "\n")
print(f"wrote {HERE / 'data.csv'}: {len(lines) - 1} rows")
print(f"alpha = {alpha:.5g} /h (t1/2 {60 * math.log(2) / alpha:.4g} min), "
      f"beta = {beta:.5g} /h (t1/2 {60 * math.log(2) / beta:.4g} min), A = {A:.4f}, B = {B:.4f}")
