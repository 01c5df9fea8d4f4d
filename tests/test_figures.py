"""Every figure renders with labelled axes that carry units (issue 13): fit, residuals,
profiles (readable ticks that do not overlap), corner-free fit folders with 300 dpi PNG and
SVG on request, steady fluxes, PK curve, comparison, Simulation.plot; one colour per
condition across the fit figures; report.html."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.figure import Figure

import kinetics
from kinetics.report import plots

from polish_helpers import two_condition_fit, unit_model


@pytest.fixture(scope="module")
def result():
    return two_condition_fit(profiles=True)


def _labelled(ax):
    assert ax.get_xlabel().strip(), f"axis '{ax.get_title()}' has no x label"
    assert ax.get_ylabel().strip(), f"axis '{ax.get_title()}' has no y label"


def _tick_labels_do_not_overlap(fig, ax, which="x"):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    labels = [t for t in (ax.get_xticklabels() if which == "x" else ax.get_yticklabels()) if t.get_text() and t.get_visible()]
    boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0 if which == "x" else b.y0)
    for a, b in zip(boxes, boxes[1:]):
        gap = (b.x0 - a.x1) if which == "x" else (b.y0 - a.y1)
        assert gap > 0, f"tick labels overlap: {[t.get_text() for t in labels]}"
    return [t.get_text() for t in labels]


def test_fit_figure_has_time_and_observable_units(result):
    fig = plots.plot_fit(result, figure=Figure())
    for ax in fig.axes:
        _labelled(ax)
        assert ax.get_xlabel() == "time [h]"
        assert ax.get_ylabel() == "conc [particles/mL]"


def test_one_colour_per_condition_across_fit_figures(result):
    colours = plots.condition_colours(result.problem.condition_names)
    fit_fig = plots.plot_fit(result, figure=Figure())
    residual_fig = plots.plot_residuals(result, figure=Figure())
    fitted = {line.get_label(): line.get_color() for line in fit_fig.axes[0].get_lines() if line.get_label() in colours}
    residual = {line.get_label(): line.get_color() for line in residual_fig.axes[0].get_lines() if line.get_label() in colours}
    assert fitted == residual == colours
    assert len(set(colours.values())) == 2
    _labelled(residual_fig.axes[0])


def test_profile_axes_have_units_and_readable_ticks(result):
    fig = plots.plot_profiles(result, figure=Figure())
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.lines]
    assert len(axes) == 3
    units = {"k_el": "[1/h]", "V": "[mL]", "kd": "kd"}
    for ax in axes:
        _labelled(ax)
        name = ax.get_title().split()[0]
        assert units[name] in ax.get_xlabel()
        shown = _tick_labels_do_not_overlap(fig, ax, "x")
        assert 2 <= len(shown) <= 7, shown


def test_readable_log_axis_narrow_range_has_few_plain_labels():
    # the defect: a log axis within one decade labelled every minor tick (2x10^0, 3x10^0, ...)
    fig = Figure(figsize=(4, 3))
    ax = fig.subplots()
    ax.plot([1.5, 2.1], [0, 1])
    ax.set_xscale("log")
    plots.readable_log_axis(ax, "x", 1.5, 2.1)
    shown = _tick_labels_do_not_overlap(fig, ax, "x")
    assert 2 <= len(shown) <= 5 and not any("times" in s or "^" in s for s in shown), shown


def test_fit_folder_png_300_dpi_svg_and_report_html(result, tmp_path):
    from PIL import Image
    written = {p.name for p in result.save(tmp_path / "out", formats=("png", "svg"))}
    assert {"fit.png", "fit.svg", "residuals.svg", "profiles.svg", "report.html", "result.json"} <= written
    dpi = Image.open(tmp_path / "out" / "fit.png").info["dpi"]
    assert round(dpi[0]) == 300
    assert (tmp_path / "out" / "fit.svg").read_text(encoding="utf-8").lstrip().startswith("<?xml")
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert page.count("<svg") == 3 and "k_el" in page and "95 % lower" in page and "knockdown" in page
    data = json.loads((tmp_path / "out" / "result.json").read_text())
    assert data["model"]["time_unit"] == "h" and data["model"]["units"] == {"conc": "particles/mL"}
    with pytest.raises(kinetics.KineticsError, match="tiff"):
        result.save(tmp_path / "bad", formats=("tiff",))


def test_report_html_lists_warnings(result):
    from kinetics.report.html import fit_report_html, fit_warnings
    assert fit_warnings(result) == []          # converged, identifiable, one start
    unprofiled = two_condition_fit(profiles=False)
    warnings = fit_warnings(unprofiled)
    assert any("profile" in w for w in warnings)
    assert "class='warning'" in fit_report_html(unprofiled)


def test_steady_flux_plot_labels_and_fate_split():
    from kinetics.model.library import resolve_model_path
    steady = kinetics.steady_state("lifecycle")
    model = kinetics.load_model(resolve_model_path("lifecycle"))
    fig = plots.plot_steady(steady, model, figure=Figure())
    bars, split = fig.axes
    _labelled(bars)
    assert bars.get_xlabel() == "steady flux [particles/h]"
    assert "%" in split.get_xlabel()
    # the MVB fate: degradation and secretion shares sum to 100 %
    mvb = [name for name, f in model.flows.items() if f.source == "mvb"]
    total = sum(steady.fluxes[n] for n in mvb)
    shares = sorted(100 * steady.fluxes[n] / total for n in mvb)
    widths = sorted(p.get_width() for p in split.patches if abs(p.get_y() + p.get_height() / 2 - 1) < 1e-9)
    np.testing.assert_allclose(widths, shares, rtol=1e-12)


def test_pk_plot_shades_auc_and_marks_half_lives():
    from kinetics.model.library import resolve_model_path
    model = kinetics.load_model(resolve_model_path("circulation_2c"))
    summary = kinetics.pk_summary(model, {"compartment": "plasma", "amount": 1e10}, "plasma_conc")
    fig = plots.plot_pk(summary, model, figure=Figure())
    linear, logarithmic = fig.axes
    for ax in (linear, logarithmic):
        _labelled(ax)
        assert ax.get_xlabel() == "time [h]" and "[particles/mL]" in ax.get_ylabel()
    legend = [t.get_text() for t in logarithmic.get_legend().get_texts()]
    for half_life in summary.phase_half_lives:
        assert any(f"{half_life:.3g} h" in text for text in legend), legend
    assert any("AUC" in t.get_text() for t in linear.get_legend().get_texts())
    assert linear.collections, "the AUC is shaded"


def test_simulation_plot_labels_units():
    sim = kinetics.simulate(unit_model(), np.linspace(0, 4, 9), doses=[{"compartment": "plasma", "amount": 100}])
    fig = Figure()
    ax = sim.plot(names=["conc"], ax=fig.subplots())
    assert ax.get_xlabel() == "time [h]" and ax.get_ylabel() == "conc [particles/mL]"
    ax = sim.plot(names=["plasma", "conc"], ax=Figure().subplots())
    assert ax.get_ylabel() == "value [unit in the legend]"


def test_comparison_plot_has_axis_labels(result, tmp_path):
    folder = tmp_path / "a"
    result.save(folder)
    comparison = kinetics.compare([folder, result], labels=["saved", "live"])
    fig = comparison.plot_fits(figure=Figure())
    for ax in [a for a in fig.axes if a.lines]:
        assert ax.get_xlabel() == "time [h]" and ax.get_ylabel() == "conc [particles/mL]"
    weights = comparison.plot_weights(figure=Figure())
    _labelled(weights.axes[0])


@pytest.mark.parametrize("t_end", [2.5, 5.0])   # under one decade, then between one and two
def test_simulation_log_axis_labels_a_narrow_range(t_end):
    # the defect: a log axis spanning under two decades got one decade label or none
    sim = kinetics.simulate(unit_model(), np.linspace(0.1, t_end, 30), doses=[{"compartment": "plasma", "amount": 100}])
    fig = Figure(figsize=(6, 4))
    ax = sim.plot(names=["conc"], ax=fig.subplots(), logy=True)
    shown = _tick_labels_do_not_overlap(fig, ax, "y")
    assert len(shown) >= 2, shown
