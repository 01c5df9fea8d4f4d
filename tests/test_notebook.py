"""examples/quickstart.ipynb runs as written: its code cells are executed in order in one
namespace (no Jupyter kernel needed), from the repository root as the notebook says."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook test needs nbformat (the 'test' extra)")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"


def test_quickstart_notebook_runs(monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(ROOT)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    assert code, "the notebook has no code cells"
    namespace = {}
    try:
        for index, source in enumerate(code):
            exec(compile(source, f"{NOTEBOOK.name}[cell {index}]", "exec"), namespace)  # noqa: S102 - our own example
    finally:
        plt.close("all")
    # what the notebook shows: a fit, its table and the steady state of the bundled model
    assert namespace["result"].success
    assert list(namespace["result"].parameters_frame().index[:2]) == ["clearance_rate", "plasma_volume"]
    assert namespace["steady"].stable
    assert "<table" in namespace["steady"]._repr_html_()
