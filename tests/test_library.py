"""The bundled model library in ``models/``: every file loads cleanly, simulates sensibly, and
the solver path (exact affine vs numerical) matches what models/README.md says."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from kinetics import KineticsWarning, compile_model, load_model, simulate
from kinetics.model.library import bundled_models, models_dir, resolve_model_path

from conftest import MODELS_DIR

MODEL_FILES = sorted(MODELS_DIR.glob("*.toml"))
README = (MODELS_DIR / "README.md").read_text(encoding="utf-8")


def readme_linear_table() -> dict[str, bool]:
    """name -> linear? from the table in models/README.md (rows like | `x.toml` | ... | yes |)."""
    table = {}
    for line in README.splitlines():
        match = re.match(r"\|\s*`([\w-]+)\.toml`\s*\|.*\|\s*(.+?)\s*\|\s*$", line)
        if match:
            verdict = match.group(2).strip("* ").lower()
            assert verdict.startswith(("yes", "no")), f"unreadable 'linear?' cell in: {line}"
            table[match.group(1)] = verdict.startswith("yes")
    return table


LINEAR = readme_linear_table()


@pytest.fixture(scope="module")
def loaded():
    """Every bundled model, loaded once with KineticsWarning as an error."""
    models = {}
    for path in MODEL_FILES:
        with warnings.catch_warnings():
            warnings.simplefilter("error", KineticsWarning)
            models[path.stem] = load_model(path)
    return models


def test_there_are_bundled_models():
    assert len(MODEL_FILES) >= 8
    for required in ("biogenesis", "circulation_1c", "circulation_2c", "circulation_saturable", "lifecycle",
                     "injection", "culture", "microvesicles", "exo_linear", "exo_sat"):
        assert (MODELS_DIR / f"{required}.toml").exists(), required


def test_library_finds_the_models_folder():
    assert models_dir().resolve() == MODELS_DIR.resolve()
    assert sorted(bundled_models()) == [p.stem for p in MODEL_FILES]
    assert resolve_model_path("exo_linear").resolve() == (MODELS_DIR / "exo_linear.toml").resolve()


@pytest.mark.filterwarnings("error::kinetics.errors.KineticsWarning")
@pytest.mark.parametrize("path", MODEL_FILES, ids=[p.stem for p in MODEL_FILES])
def test_bundled_model_loads_without_warnings(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = load_model(path)
    assert model.name == path.stem, "the model's name should equal its file name"
    assert model.description
    assert model.compartments and model.flows
    assert model.validate() == []


@pytest.mark.parametrize("name", [p.stem for p in MODEL_FILES])
def test_bundled_model_simulates_to_48_with_finite_nonnegative_amounts(loaded, name):
    model = loaded[name]
    times = np.linspace(0.0, 48.0, 49)
    sim = simulate(model, times)
    X = sim.states
    assert X.shape == (49, len(model.compartments))
    assert np.isfinite(X).all()
    scale = max(1.0, float(np.abs(X).max()))
    assert X.min() >= -1e-9 * scale, f"negative amount {X.min()} (scale {scale})"
    assert np.isfinite(sim.observables).all()
    # initial state honoured at t = 0
    x0 = compile_model(model).initial_state(compile_model(model).parameter_vector())
    np.testing.assert_allclose(X[0], x0, rtol=1e-9, atol=1e-9 * scale)


def test_readme_table_lists_every_bundled_model():
    assert set(LINEAR) == {p.stem for p in MODEL_FILES}


@pytest.mark.parametrize("name", [p.stem for p in MODEL_FILES])
def test_affine_detection_matches_the_readme(loaded, name):
    compiled = compile_model(loaded[name])
    assert compiled.affine == LINEAR[name], (
        f"{name}: compile().affine is {compiled.affine} but models/README.md says linear = {LINEAR[name]}")
    assert compiled.method == ("exact" if LINEAR[name] else "numerical")


def test_reference_models_are_classified_as_expected(loaded):
    assert compile_model(loaded["exo_linear"]).affine is True
    assert compile_model(loaded["exo_sat"]).affine is False
    assert compile_model(loaded["circulation_saturable"]).affine is False
