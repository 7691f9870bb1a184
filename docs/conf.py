#!/usr/bin/env python3

r"""Sphinx configuration: API reference from docstrings (``sphinx-build -W``)."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "captum_tracin_we"
author = "captum_tracin_we developers"
copyright = "2026, captum_tracin_we developers"
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_member_order = "bysource"
autodoc_typehints = "none"
autodoc_inherit_docstrings = False
exclude_patterns = ["_build", "jupyter_execute"]
html_theme = "alabaster"

# The tutorial notebook lives in tutorials/; it is copied here for myst-nb, which
# renders it with the outputs stored in the file (CI executes it in the tests).
import shutil  # noqa: E402

extensions.append("myst_nb")
nb_execution_mode = "off"
_here = os.path.dirname(os.path.abspath(__file__))
shutil.copy(
    os.path.join(_here, "..", "tutorials", "TracInWE_Tutorial.ipynb"),
    os.path.join(_here, "tutorial.ipynb"),
)
