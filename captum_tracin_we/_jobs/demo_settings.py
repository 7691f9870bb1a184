#!/usr/bin/env python3

r"""The demo's settings, on their own so that the command line builds its
parser without importing torch or transformers."""

from dataclasses import dataclass
from typing import Optional


@dataclass
class DemoSettings:
    r"""Settings of the demo job (see ``captum-tracin-we demo --help``)."""

    model: Optional[str] = None
    data: Optional[str] = None
    train_size: int = 1000
    test_size: int = 4
    epochs: int = 1
    k: int = 3
    top_k_words: Optional[int] = None
    quick: bool = False
    seed: int = 0
    out: str = "tracin_we_demo"
    overwrite: bool = False
    show_progress: bool = True
