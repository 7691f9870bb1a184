#!/usr/bin/env python3

r"""
The interactive influence explorer: a local web app over one model and its
training set (``captum-tracin-we explore``, or :meth:`TracInWE.explore` from
Python). Needs ``pip install 'captum_tracin_we[explore]'`` (Starlette and
uvicorn) to serve; :class:`Explorer` itself answers the same questions as
plain dicts.
"""

from captum_tracin_we._explorer.engine import Explorer
from captum_tracin_we._explorer.requests import Limits, RequestError
from captum_tracin_we._explorer.server import ExplorerServer, explorer_app
from captum_tracin_we._jobs.explore import ExploreSettings, prepare_explorer

__all__ = [
    "ExploreSettings",
    "Explorer",
    "ExplorerServer",
    "Limits",
    "RequestError",
    "explorer_app",
    "prepare_explorer",
]
