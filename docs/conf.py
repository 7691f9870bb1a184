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

# The tutorial notebooks live in tutorials/; they are copied here for myst-nb, which
# renders them with the outputs stored in the files (CI executes them in the tests).
import shutil  # noqa: E402

extensions.append("myst_nb")
nb_execution_mode = "off"
_here = os.path.dirname(os.path.abspath(__file__))
for _source, _target in (
    ("TracInWE_Tutorial.ipynb", "tutorial.ipynb"),
    ("Auditing_a_Training_Set.ipynb", "tutorial_audit.ipynb"),
    ("Side_by_Side_Comparisons.ipynb", "tutorial_side_by_side.ipynb"),
):
    shutil.copy(
        os.path.join(_here, "..", "tutorials", _source), os.path.join(_here, _target)
    )
