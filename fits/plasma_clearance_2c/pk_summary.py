"""Pharmacokinetic figures derived from a circulation_1c or circulation_2c fit, set beside the
published ranges (Kim et al. 2019, Pharmaceutics 11(12):649, Table 1).

    .venv/bin/python fits/plasma_clearance_2c/pk_summary.py /tmp/plasma_clearance_2c /tmp/plasma_clearance_1c

reads each folder's result.json (written by `kinetics fit`). Intervals are 95 % delta-method
intervals from the fit's covariance (stderr and correlation in result.json), propagated on the
log scale; they are approximate. This is a stopgap until the library's own PK summary (issue 4,
item 5) exists; it uses only the closed forms of the 1- and 2-compartment models:

    alpha, beta = roots of  x^2 - (k10 + k12 + k21) x + k10 k21      (1/h)
    CL = k10 V1,   Vss = V1 (1 + k12/k21),   MRT = Vss / CL,   AUC(0-inf) = dose / CL
"""

import json
import math
import sys

import numpy as np

PUBLISHED = {  # Kim et al. 2019, Table 1 (fluorophore-exosomes, CD-1 mice; 125I study for Vss, MRT)
    "t_half_alpha_min": "6.85-8.79",
    "t_half_beta_min": "149-792",
    "CL_mL_per_min": "0.0054-0.0154 (125I study: 0.016)",
    "Vss_mL": "Vd 2.43-8.48 (125I study: Vss 3.15)",
    "MRT_h": "3.40 (125I study, MRT inf)",
}


TRUTH = {  # the generating values of data.csv (truth.toml), through the same closed forms
    "t_half_alpha_min": 7.751, "t_half_beta_min": 225.4, "CL_mL_per_min": 0.0100, "Vss_mL": 3.00, "MRT_h": 5.00,
}


def figures(p):
    k10, V1 = p["clearance_rate"], p["plasma_volume"]
    k12, k21 = p.get("distribution_rate", 0.0), p.get("return_rate", 1.0)
    s, q = k10 + k12 + k21, k10 * k21
    root = math.sqrt(max(s * s - 4 * q, 0.0))
    alpha, beta = 0.5 * (s + root), 0.5 * (s - root)
    out = {}
    if "distribution_rate" in p:
        out["t_half_alpha_min"] = 60 * math.log(2) / alpha
        out["t_half_beta_min"] = 60 * math.log(2) / beta
    else:
        out["t_half_alpha_min"] = float("nan")
        out["t_half_beta_min"] = 60 * math.log(2) / k10   # the single phase
    cl = k10 * V1
    vss = V1 * (1 + k12 / k21) if "distribution_rate" in p else V1
    out["CL_mL_per_min"] = cl / 60
    out["Vss_mL"] = vss
    out["MRT_h"] = vss / cl
    return out


def summarize(folder):
    res = json.load(open(f"{folder}/result.json"))
    params = res["parameters"]
    free = res["correlation"]["names"]
    value = {n: params[n]["value"] for n in params}
    base = figures(value)
    # covariance of log(parameters) from stderr and correlation (delta method to log scale)
    sd_log = np.array([params[n]["stderr"] / params[n]["value"] for n in free])
    corr = np.array(res["correlation"]["matrix"], dtype=float)
    cov_log = corr * np.outer(sd_log, sd_log)
    rows = {}
    for key, v in base.items():
        if not math.isfinite(v):
            rows[key] = (v, None, None)
            continue
        grad = np.empty(len(free))
        for i, n in enumerate(free):   # d log(figure) / d log(parameter), central differences
            h = 1e-5
            up, dn = dict(value), dict(value)
            up[n] *= math.exp(h)
            dn[n] *= math.exp(-h)
            grad[i] = (math.log(figures(up)[key]) - math.log(figures(dn)[key])) / (2 * h)
        sd = math.sqrt(max(grad @ cov_log @ grad, 0.0))
        rows[key] = (v, v * math.exp(-1.96 * sd), v * math.exp(1.96 * sd))
    return res["model"]["name"], res["statistics"], rows


def main(folders):
    for folder in folders:
        name, stats, rows = summarize(folder)
        print(f"{name} ({folder}): AICc {stats['aicc']:.2f}, log-likelihood {stats['loglik']:.2f}")
        print(f"    {'figure':<18} {'fit':>9}  {'95% (delta method)':<22} {'truth':>7}  published (Kim et al. 2019, Table 1)")
        for key, (v, lo, hi) in rows.items():
            ci = f"[{lo:.4g}, {hi:.4g}]" if lo is not None else ""
            print(f"    {key:<18} {v:9.4g}  {ci:<22} {TRUTH[key]:7.4g}  {PUBLISHED[key]}")
        print()


if __name__ == "__main__":
    main(sys.argv[1:] or ["/tmp/plasma_clearance_2c", "/tmp/plasma_clearance_1c"])
