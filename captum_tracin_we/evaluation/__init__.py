#!/usr/bin/env python3

r"""
Evaluation of influence methods: case deletion with retraining (the TracIn-WE
paper's protocol), mislabel detection, retrain-free diagnostics, and baselines.
Method-agnostic: methods are Captum ``DataInfluence``-like objects or plain
``(n_test, n_train)`` score matrices.
"""

from captum_tracin_we._baselines.cheap_baselines import (
    TracInTFIDF,
    checkpoint_output_gradients,
    output_gradients,
    random_scores,
    tfidf_tracin_scores,
)
from captum_tracin_we._evaluation.deletion import (
    DeletionResult,
    case_deletion,
    influence_scores,
    removal_set,
)
from captum_tracin_we._evaluation.deletion_report import (
    auc_table,
    format_markdown,
    plot_deletion_curves,
)
from captum_tracin_we._scoring.metrics import (
    flip_labels,
    label_agreement,
    mislabel_detection,
    token_rank_correlation,
    topk_cardinality,
)
from captum_tracin_we._scoring.noise_detection import (
    noise_detection_curve,
    noise_detection_rate,
)

__all__ = [
    "DeletionResult",
    "TracInTFIDF",
    "auc_table",
    "case_deletion",
    "checkpoint_output_gradients",
    "flip_labels",
    "format_markdown",
    "influence_scores",
    "label_agreement",
    "mislabel_detection",
    "noise_detection_curve",
    "noise_detection_rate",
    "output_gradients",
    "plot_deletion_curves",
    "random_scores",
    "removal_set",
    "tfidf_tracin_scores",
    "token_rank_correlation",
    "topk_cardinality",
]
