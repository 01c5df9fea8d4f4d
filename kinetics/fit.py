"""Moved to :mod:`kinetics.fitting.optimize`; this old import path stays as a re-export.

``kinetics.fit`` is the function :func:`kinetics.fitting.optimize.fit`. Importing this module
(``import kinetics.fit``, ``from kinetics.fit import fit``) makes Python set the package
attribute ``kinetics.fit`` to the module, so the module itself is callable too: ``kinetics.fit(...)``
fits whichever of the two the attribute holds."""

import inspect
import sys
import types

from .fitting.optimize import CHI2_95, FitResult, fit

__all__ = ["fit", "FitResult", "CHI2_95"]


class CallableModule(types.ModuleType):
    """This module, callable as :func:`fit`."""

    def __call__(self, *args, **kwargs):
        return fit(*args, **kwargs)


sys.modules[__name__].__class__ = CallableModule
__signature__ = inspect.signature(fit)
