"""File formats, one module each: nothing here does numerics.

:mod:`.files` (atomic writes, safe TOML reading), :mod:`.model_toml` (the model file),
:mod:`.data` (the time-course data CSV), :mod:`.fit_spec`
(the ``fit.toml`` fit specification), :mod:`.results` (``result.json`` / ``curves.csv`` of a
saved fit). SBML (:mod:`.sbml`, needs the optional ``python-libsbml``) reads and writes models; PEtab will join here. Import the submodule you need: the
package itself imports nothing, so that reading one format does not load the others'
dependencies.
"""
