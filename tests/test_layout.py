"""The package layout (issue 9): no import cycles (counting imports inside functions), no
module importing another module's private names, and the old import paths still work."""

import ast
from pathlib import Path

import pytest

import kinetics

PACKAGE = Path(kinetics.__file__).parent


def _modules():
    mods = {}
    for f in PACKAGE.rglob("*.py"):
        rel = f.relative_to(PACKAGE.parent).with_suffix("")
        mods[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = f
    return mods


def _imports(mods, name, tree):
    """(target module, imported names) of every import in a module, relative ones resolved."""
    base = name.split(".") if mods[name].name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else (node.module or "")
            for alias in node.names:
                full = f"{target}.{alias.name}"
                yield (full if full in mods else target), alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None


def _graph():
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        edges = set()
        for target, _ in _imports(mods, name, ast.parse(path.read_text(encoding="utf-8"))):
            while target and target not in mods:
                target = target.rpartition(".")[0]
            if target and target != name and not (mods[name].name == "__init__.py" and target.startswith(name + ".")):
                edges.add(target)
        graph[name] = edges
    return mods, graph


def test_no_import_cycles():
    _, graph = _graph()
    cycles = []
    for start in graph:                     # a module reachable from itself is on a cycle
        seen, stack = set(), list(graph[start])
        while stack:
            m = stack.pop()
            if m == start:
                cycles.append(start)
                break
            if m not in seen:
                seen.add(m)
                stack.extend(graph.get(m, ()))
    assert not cycles, f"modules on import cycles: {sorted(cycles)}"


def test_no_module_imports_another_modules_private_names():
    mods = _modules()
    offenders = []
    for name, path in mods.items():
        for target, imported in _imports(mods, name, ast.parse(path.read_text(encoding="utf-8"))):
            if imported and imported.startswith("_") and not imported.startswith("__") and target.startswith("kinetics"):
                offenders.append(f"{name} imports {target}.{imported}")
    assert not offenders, offenders


def test_numerics_knows_nothing_of_sympy_or_models():
    """numerics/ is arrays in, arrays out: no module there imports sympy, and none reaches (even
    through other kinetics modules, imports inside functions included) sympy or the layers that
    know models (model, codegen, simulation, fitting, analysis)."""
    mods, graph = _graph()
    numerics = sorted(m for m in mods if m.startswith("kinetics.numerics"))
    assert {"kinetics.numerics.rosenbrock", "kinetics.numerics.jit", "kinetics.numerics.tape_machine"} <= set(numerics)
    offenders = []
    for start in numerics:
        seen, stack = set(), [start]
        while stack:
            m = stack.pop()
            if m in seen:
                continue
            seen.add(m)
            stack.extend(graph.get(m, ()))
        for m in seen:
            if not (m == "kinetics.errors" or m.startswith("kinetics.numerics")):
                offenders.append(f"{start} reaches {m}")
            tree = ast.parse(mods[m].read_text(encoding="utf-8"))
            if any(target.split(".")[0] == "sympy" for target, _ in _imports(mods, m, tree)):
                offenders.append(f"{start} reaches sympy through {m}")
    assert not offenders, offenders


def test_one_numba_shim():
    """numba is imported in one module (numerics/jit.py) and nowhere else in the package."""
    mods = _modules()
    importers = sorted(name for name, path in mods.items()
                       if any(target.split(".")[0] == "numba"
                              for target, _ in _imports(mods, name, ast.parse(path.read_text(encoding="utf-8")))))
    assert importers == ["kinetics.numerics.jit"]


@pytest.mark.parametrize("old, names", [("kinetics.fit", ["fit", "FitResult", "CHI2_95"]),
                                        ("kinetics.problem", ["FitProblem", "Condition", "load_fit_spec"]),
                                        ("kinetics.steady", ["steady_state", "steady_plan"]),
                                        ("kinetics.compare", ["compare", "akaike_weights"]),
                                        ("kinetics.pk", ["pk_summary"]),
                                        ("kinetics.report", ["fit_report", "read_result", "plot_fit"]),
                                        ("kinetics.model", ["Model", "load_model"])])
def test_old_import_paths_still_work(old, names):
    import importlib
    module = importlib.import_module(old)
    assert all(callable(getattr(module, n)) or n == "CHI2_95" for n in names)


def test_profile_threshold_is_one_number():
    from scipy.stats import chi2

    from kinetics.fitting import CHI2_95
    from kinetics.report.plots import CHI2_95 as plotted
    assert CHI2_95 == plotted == float(chi2.ppf(0.95, 1))


def test_compile_model_is_cached_until_the_model_changes():
    m = kinetics.Model("decay")
    m.add_compartment("P", initial=10)
    m.add_parameter("k", 0.5)
    m.add_flow("out", "k * P", source="P")
    first = kinetics.compile_model(m)
    assert kinetics.compile_model(m) is first
    m.add_parameter("k2", 1.0)
    m.add_flow("out2", "k2 * P", source="P")
    second = kinetics.compile_model(m)
    assert second is not first and second.parameter_names == ["k", "k2"]
