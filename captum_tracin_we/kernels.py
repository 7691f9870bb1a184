#!/usr/bin/env python3

r"""
The pieces TracIn-WE is computed from, for studies of its variants: *word
rows* (one vector per distinct (example, token) pair, the non-zero rows of the
example's embedding-table gradient) and the exact inner products over the
tokens two sets of examples share. :attr:`TracInWE.gradient_source` yields
word rows at the loaded checkpoint
(``stream(batches, loss_fn, role, bar)``, inside
:meth:`TracInWE.checkpoint_pass`); ``WordRows.cat`` joins them.
"""

from captum_tracin_we._gradients.word_rows import WordRows
from captum_tracin_we._scoring.shared_tokens import (
    grouped_token_scores,
    self_scores,
    shared_token_scores,
)

__all__ = [
    "WordRows",
    "grouped_token_scores",
    "self_scores",
    "shared_token_scores",
]
