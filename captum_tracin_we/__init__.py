#!/usr/bin/env python3

r"""TracIn-WE: training-data influence on the word-embedding layer, for Captum."""

from captum.influence._utils.common import KMostInfluentialResults

from captum_tracin_we._core.tracin_we import TracInWE
from captum_tracin_we._utils.checkpoints import load_checkpoint_with_lr

__version__ = "0.1.0"

__all__ = [
    "KMostInfluentialResults",
    "TracInWE",
    "load_checkpoint_with_lr",
]
