"""Other model formats, one module per file format.

- :mod:`kinetics.io.sbml`: SBML Level 2 version 4 to Level 3 version 2, read into the general
  model form and written from any kinetics model (needs the optional ``python-libsbml``).
"""
