"""The model layer: what a reaction network *is*, before any numerics.

Owns the model objects (:class:`Model` and its compartments, parameters, flows, observables),
the safe expression language (:mod:`.expressions`), units (:mod:`.units`) and the bundled model
library (:mod:`.library`). Everything downstream (code generation, simulation, fitting,
analysis) consumes a model through its public methods; nothing here imports those layers.
Model files are read through :mod:`kinetics.io.model_toml` (the format) and built here.
"""

from .core import Compartment, Flow, Model, Observable, Parameter, load_model, load_sbml
from .library import bundled_models, models_dir, resolve_model_path

__all__ = ["Model", "Compartment", "Parameter", "Flow", "Observable", "load_model", "load_sbml",
           "bundled_models", "models_dir", "resolve_model_path"]
