"""Reports of a fit for people: :mod:`.text` (:func:`fit_report`) and :mod:`.plots`
(``plot_*``, matplotlib imported on first use). The saved-result file format lives in
:mod:`kinetics.io.results`.
"""
