"""Reports of a fit for people: :mod:`.text` (:func:`fit_report`) and :mod:`.plots`
(``plot_*``, :func:`save_result` writing a fit folder; matplotlib is imported on first use).
The saved-result file format (``result.json``, ``curves.csv``) lives in :mod:`kinetics.io.results`;
its readers are re-exported here for the old ``kinetics.report`` import path.
"""

from ..io.results import read_result, result_dict
from .plots import CHI2_95, plot_corner, plot_fit, plot_profiles, plot_residuals, save_result
from .text import fit_report

__all__ = ["fit_report", "plot_fit", "plot_residuals", "plot_profiles", "plot_corner", "save_result",
           "read_result", "result_dict", "CHI2_95"]
