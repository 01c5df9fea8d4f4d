"""PK summary against closed forms: one- and two-compartment i.v. bolus (AUC = dose/CL,
Vss = CL x MRT, half-lives from the eigenvalues, Cmax at t=0), the bundled circulation_2c
(alpha ~7.8 min, beta ~225 min), the numeric path against the exact one, and mass balance
for saturable clearance."""

import math

import numpy as np
import pytest

from kinetics import Model, ModelError, load_model, simulate
from kinetics.model.library import bundled_models
from kinetics.analysis.pk import PKSummary, pk_summary

BUNDLED = bundled_models()
DOSE = 1e10


def bundled(name):
    return load_model(BUNDLED[name]["path"])


def two_compartment_closed_form(k12, k21, k10, V1, dose):
    s, prod = k12 + k21 + k10, k21 * k10
    alpha = (s + math.sqrt(s * s - 4 * prod)) / 2
    beta = (s - math.sqrt(s * s - 4 * prod)) / 2
    A = dose / V1 * (alpha - k21) / (alpha - beta)
    B = dose / V1 * (k21 - beta) / (alpha - beta)
    auc = A / alpha + B / beta
    aumc = A / alpha ** 2 + B / beta ** 2
    return {"alpha": alpha, "beta": beta, "A": A, "B": B, "auc": auc, "aumc": aumc,
            "cl": k10 * V1, "vss": V1 * (1 + k12 / k21), "mrt": aumc / auc}


def test_one_compartment_closed_forms():
    model = bundled("circulation_1c")
    k, V = 5.4, 1.0
    s = pk_summary(model, {"compartment": "plasma", "amount": DOSE}, "plasma_conc", t_last=0.5)
    assert isinstance(s, PKSummary) and s.method == "exact"
    assert s.auc_inf == pytest.approx(DOSE / (k * V), rel=1e-12)
    assert s.clearance == pytest.approx(k * V, rel=1e-12)
    assert s.mrt == pytest.approx(1 / k, rel=1e-12)
    assert s.vss == pytest.approx(V, rel=1e-12)
    assert s.vss == pytest.approx(s.clearance * s.mrt, rel=1e-14)
    assert s.cmax == pytest.approx(DOSE / V) and s.tmax == 0.0
    assert s.terminal_half_life == pytest.approx(math.log(2) / k, rel=1e-12)
    assert s.phase_half_lives == pytest.approx([math.log(2) / k])
    assert s.auc_last == pytest.approx(DOSE / (k * V) * (1 - math.exp(-k * 0.5)), rel=1e-12)
    assert s.auc_extrapolated_percent == pytest.approx(100 * math.exp(-k * 0.5), rel=1e-9)
    assert s.units["clearance"] == "mL/h" and s.units["vss"] == "mL" and s.units["cmax"] == "particles/mL"


def test_two_compartment_closed_forms_and_bundled_half_lives():
    model = bundled("circulation_2c")
    ref = two_compartment_closed_form(3.3, 1.65, 0.6, 1.0, DOSE)
    s = pk_summary(model, {"compartment": "plasma", "amount": DOSE}, "plasma_conc", t_last=24)
    assert s.auc_inf == pytest.approx(ref["auc"], rel=1e-12)
    assert s.auc_inf == pytest.approx(DOSE / s.clearance, rel=1e-14)     # AUC = dose / CL
    assert s.clearance == pytest.approx(ref["cl"], rel=1e-12)
    assert s.vss == pytest.approx(ref["vss"], rel=1e-12)                 # 3 mL
    assert s.vss == pytest.approx(s.clearance * s.mrt, rel=1e-14)        # Vss = CL x MRT
    assert s.mrt == pytest.approx(ref["mrt"], rel=1e-12)
    alpha_half, beta_half = math.log(2) / ref["alpha"], math.log(2) / ref["beta"]
    assert s.phase_half_lives == pytest.approx([alpha_half, beta_half], rel=1e-12)
    assert s.terminal_half_life == pytest.approx(beta_half, rel=1e-12)
    assert [ph["coefficient"] for ph in s.phases] == pytest.approx([ref["A"], ref["B"]], rel=1e-10)
    # Kim et al. 2019 as collected in the model: alpha ~7.8 min, beta ~225 min (hours in the model)
    assert s.phase_half_lives[0] * 60 == pytest.approx(7.8, abs=0.1)
    assert s.phase_half_lives[1] * 60 == pytest.approx(225, abs=1)
    assert s.clearance / 60 == pytest.approx(0.01)                       # mL/min
    assert s.cmax == pytest.approx(DOSE) and s.tmax == 0.0
    t = 24.0
    auc_last = ref["A"] / ref["alpha"] * (1 - math.exp(-ref["alpha"] * t)) + ref["B"] / ref["beta"] * (1 - math.exp(-ref["beta"] * t))
    assert s.auc_last == pytest.approx(auc_last, rel=1e-10)
    d = s.to_dict()
    assert d["auc_inf"] == s.auc_inf and d["method"] == "exact" and "225" in s.report()


def test_peripheral_compartment_cmax_tmax_against_closed_form():
    model = bundled("circulation_2c")
    k12, k21, k10 = 3.3, 1.65, 0.6
    ref = two_compartment_closed_form(k12, k21, k10, 1.0, DOSE)
    a, b = ref["alpha"], ref["beta"]
    # tissue(t) = dose k12 (e^-bt - e^-at)/(a - b): maximum where b e^-bt = a e^-at
    tmax = math.log(a / b) / (a - b)
    cmax = DOSE * k12 * (math.exp(-b * tmax) - math.exp(-a * tmax)) / (a - b)
    s = pk_summary(model, {"compartment": "plasma", "amount": DOSE}, "tissue")
    assert s.tmax == pytest.approx(tmax, rel=1e-9)
    assert s.cmax == pytest.approx(cmax, rel=1e-12)
    assert s.auc_inf == pytest.approx(DOSE * k12 / (a * b), rel=1e-12)
    assert s.clearance is None and s.vss is None
    assert any("not a concentration" in note for note in s.notes)


@pytest.mark.parametrize("observable", ["plasma_conc", "tissue"])
def test_numeric_path_agrees_with_exact(observable):
    model = bundled("circulation_2c")
    dose = {"compartment": "plasma", "amount": DOSE}
    exact = pk_summary(model, dose, observable, t_last=6)
    numeric = pk_summary(model, dose, observable, t_last=6, method="numeric")
    assert numeric.method == "numeric" and any("numeric" in n for n in numeric.notes)
    for key in ("auc_inf", "aumc_inf", "mrt", "auc_last", "cmax"):
        assert getattr(numeric, key) == pytest.approx(getattr(exact, key), rel=1e-7), key
    assert numeric.tmax == pytest.approx(exact.tmax, rel=1e-6, abs=1e-12)
    assert numeric.terminal_half_life == pytest.approx(exact.terminal_half_life, rel=1e-6)
    assert numeric.phase_half_lives == pytest.approx(exact.phase_half_lives, rel=1e-10)


def test_saturable_clearance_numeric_auc_by_mass_balance():
    model = bundled("circulation_saturable")
    dose = 3e10
    s = pk_summary(model, {"compartment": "plasma", "amount": dose}, "plasma")
    assert s.method == "numeric"
    # the linear route removes linear_clearance_rate * plasma, so its sink ends at l * AUC
    sim = simulate(model, np.array([0.0, 200.0]), doses=[{"compartment": "plasma", "amount": dose}], rtol=1e-12, atol=1e-3)
    assert 4.0 * s.auc_inf == pytest.approx(sim["other_cleared"][-1], rel=1e-6)
    assert s.cmax == pytest.approx(dose) and s.tmax == 0.0
    # a larger dose saturates the macrophages: slower clearance (larger dose-normalised AUC)
    big = pk_summary(model, {"compartment": "plasma", "amount": 30 * dose}, "plasma")
    assert big.auc_inf / (30 * dose) > s.auc_inf / dose
    # the terminal phase is the linearisation's slowest one
    assert s.terminal_half_life == pytest.approx(s.phase_half_lives[-1], rel=1e-3)


def test_refusals():
    model = bundled("circulation_2c")
    with pytest.raises(ModelError, match="no compartment or observable 'plasma_con'.*did you mean 'plasma_conc'"):
        pk_summary(model, {"compartment": "plasma", "amount": DOSE}, "plasma_con")
    with pytest.raises(ModelError, match="dose into unknown compartment 'plasm'"):
        pk_summary(model, {"compartment": "plasm", "amount": DOSE}, "plasma_conc")
    with pytest.raises(ModelError, match="'cleared'.*never returns to baseline"):
        pk_summary(model, {"compartment": "plasma", "amount": DOSE}, "cleared")
    with pytest.raises(ModelError, match="positive number"):
        pk_summary(model, {"compartment": "plasma", "amount": -1}, "plasma_conc")


def test_baseline_is_subtracted_for_a_model_with_constant_input():
    m = Model("infused", time_unit="h")
    m.add_compartment("P", unit="particles")
    m.add_parameter("s", 100.0, unit="particles/h")
    m.add_parameter("k", 2.0, unit="1/h")
    m.add_flow("infusion", "s", target="P")
    m.add_flow("clearance", "k * P", source="P")
    exact = pk_summary(m, {"compartment": "P", "amount": 50.0}, "P")
    assert exact.auc_inf == pytest.approx(25.0) and exact.cmax == pytest.approx(50.0)
    numeric = pk_summary(m, {"compartment": "P", "amount": 50.0}, "P", method="numeric")
    assert numeric.auc_inf == pytest.approx(25.0, rel=1e-7)
    assert any("baseline-corrected" in n for n in numeric.notes)


def test_pk_summary_follows_triggered_events():
    # clearance halves once plasma falls below 10: AUC = 90 (k = 1 down to 10) + 10 / 0.5
    from kinetics.pk import pk_summary
    base = {"compartments": {"P": {"initial": 0}}, "parameters": {"k": 1.0},
            "flows": {"cl": {"from": "P", "rate": "k * P"}}}
    plain = pk_summary(Model.from_dict(base), {"compartment": "P", "amount": 100.0}, "P")
    slowed = pk_summary(Model.from_dict({**base, "events": {"saturate": {"trigger": "P < 10", "assign": {"k": "k * 0.5"}}}}),
                        {"compartment": "P", "amount": 100.0}, "P")
    assert plain.auc_inf == pytest.approx(100.0, rel=1e-6)
    assert slowed.auc_inf == pytest.approx(110.0, rel=1e-5)
