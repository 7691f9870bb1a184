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
exclude_patterns = ["_build"]
html_theme = "alabaster"
