"""Synthetic labelled-cargo time courses for the worked model comparison fits/secretion_mechanism
(generating values and design in truth.toml; generated from the acts_on_ilv variant).

Experiment: cells take up a labelled membrane cargo continuously from t = 0 (none inside before);
wells are harvested at each time and two readouts are taken: label released in exosomes
(cumulative, `exosomes_released`) and label still inside the cells (`intracellular_cargo` =
early endosomes + MVBs). Conditions: control, GW4869 and bafilomycin A1 (pre-treated).

The biogenesis model is affine-linear; it is solved here with scipy's matrix exponential of the
augmented system (no kinetics code):

    d EE  / dt = s - (k_rec + k_escrt + k_cer) EE
    d MVB / dt = (k_escrt + k_cer) EE - (k_deg + k_sec) MVB
    d REL / dt = k_sec MVB

Noise: proportional Gaussian, numpy seed in truth.toml.
Run:  .venv/bin/python fits/secretion_mechanism/generate_data.py   (rewrites data.csv)
"""

import tomllib
from pathlib import Path

import numpy as np
from scipy.linalg import expm

HERE = Path(__file__).resolve().parent
TRUTH = tomllib.loads((HERE / "truth.toml").read_text())


def rates(truth, condition):
    r = {k: truth[k] for k in ("endocytosis_rate", "recycling_rate", "escrt_ilv_rate", "ceramide_ilv_rate",
                               "degradation_rate", "secretion_rate")}
    if condition == "gw4869":
        r["ceramide_ilv_rate"] *= truth["gw4869_ceramide_factor"]
    elif condition == "bafilomycin":
        r["degradation_rate"] *= truth["bafilomycin_factor"]
    return r


def simulate(truth, condition, times):
    """Rows (released, intracellular cargo) at `times`, from an empty start."""
    r = rates(truth, condition)
    ilv = r["escrt_ilv_rate"] + r["ceramide_ilv_rate"]
    # augmented state (EE, MVB, REL, 1): the constant source rides on the last column
    M = np.zeros((4, 4))
    M[0, 0] = -(r["recycling_rate"] + ilv)
    M[0, 3] = r["endocytosis_rate"]
    M[1, 0] = ilv
    M[1, 1] = -(r["degradation_rate"] + r["secretion_rate"])
    M[2, 1] = r["secretion_rate"]
    x0 = np.array([0.0, 0.0, 0.0, 1.0])
    out = []
    for t in times:
        ee, mvb, rel, _ = expm(M * t) @ x0
        out.append({"exosomes_released": rel, "intracellular_cargo": ee + mvb})
    return out


def generate(truth=TRUTH, seed=None):
    design = truth["design"]
    rng = np.random.default_rng(design["seed"] if seed is None else seed)
    lines = ["time,condition,observable,value"]
    for condition in design["conditions"]:
        means = simulate(truth, condition, design["times_h"])
        for t, mean in zip(design["times_h"], means):
            for observable in design["observables"]:
                for _ in range(design["replicates"]):
                    value = mean[observable] * (1.0 + design["cv"] * rng.standard_normal())
                    lines.append(f"{t:g},{condition},{observable},{value:.5g}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    text = generate()
    (HERE / "data.csv").write_text(text)
    print(f"wrote {HERE / 'data.csv'}: {text.count(chr(10)) - 1} rows")
    for condition in TRUTH["design"]["conditions"]:
        end = simulate(TRUTH, condition, [24.0])[0]
        print(f"  {condition:<12} at 24 h: released {end['exosomes_released']:.1f}, "
              f"intracellular {end['intracellular_cargo']:.1f}")
