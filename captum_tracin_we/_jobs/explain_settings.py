#!/usr/bin/env python3

r"""The explain job's settings, on their own so that the command line (and a
question to a warm process) builds them without importing torch or
transformers."""

from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class ExplainSettings:
    r"""Settings of the explain job (see ``captum-tracin-we explain --help``)."""

    model: str = ""
    train: str = ""
    test: Optional[str] = None
    texts: List[str] = field(default_factory=list)
    text_column: str = "text"
    label_column: str = "label"
    max_length: Optional[int] = None
    exclude_special_tokens: bool = False
    exclude_frequent: int = 0
    top_k: int = 5
    top_k_words: Optional[int] = None
    idf_power: Optional[float] = None
    normalize: Optional[str] = None
    index: Optional[str] = None
    out: str = "tracin_we_explain"
    batch_size: int = 32
    last_layer: bool = True
    layer_group: Optional[str] = None
    repsim: bool = False
    show_progress: bool = True
