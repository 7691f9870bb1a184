#!/usr/bin/env python3

r"""TracIn-WE: training-data influence on the word-embedding layer, for Captum.

The public names are imported on first use, so that ``import captum_tracin_we``
and ``captum-tracin-we --help`` do not load torch, transformers and captum
before they are needed.
"""

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "BatchError": "captum_tracin_we._errors",
    "CaptumInfluence": "captum_tracin_we._baselines.captum_methods",
    "CausalLMLoss": "captum_tracin_we._gradients.causal_lm_loss",
    "CheckpointError": "captum_tracin_we._errors",
    "ExactNearestNeighbors": "captum_tracin_we._baselines.captum_methods",
    "IndexCorruptedError": "captum_tracin_we._errors",
    "IndexMismatchError": "captum_tracin_we._errors",
    "InfluenceComparison": "captum_tracin_we._evaluation.comparison",
    "KMostInfluentialResults": "captum.influence._utils.common",
    "RepresentationSimilarity": "captum_tracin_we._baselines.representation_similarity",
    "StoredTracInCPFast": "captum_tracin_we._baselines.stored_last_layer",
    "TracInLayers": "captum_tracin_we._method.tracin_layers",
    "TokenInfluence": "captum_tracin_we._method.tracin_causal_lm",
    "TracInWE": "captum_tracin_we._method.tracin_we",
    "TracInWECausalLM": "captum_tracin_we._method.tracin_causal_lm",
    "TracInWEError": "captum_tracin_we._errors",
    "TrainingDataError": "captum_tracin_we._errors",
    "WordIndex": "captum_tracin_we._index.word_index",
    "WordInfluence": "captum_tracin_we._scoring.word_contributions",
    "aggregate_columns": "captum_tracin_we._scoring.layer_aggregation",
    "causal_lm_batch": "captum_tracin_we._data.causal_lm_data",
    "causal_lm_loss": "captum_tracin_we._gradients.causal_lm_loss",
    "combine_layers": "captum_tracin_we._scoring.layer_aggregation",
    "compare_influence": "captum_tracin_we._evaluation.comparison",
    "embedding_attributions": "captum_tracin_we._baselines.feature_attributions",
    "frequent_token_ids": "captum_tracin_we._gradients.token_frequency",
    "last_linear_layer": "captum_tracin_we._baselines.captum_methods",
    "layer_groups": "captum_tracin_we._data.model_layers",
    "load_checkpoint_with_lr": "captum_tracin_we._checkpoints.checkpoints",
    "merge_subwords": "captum_tracin_we._scoring.word_contributions",
    "stored_tracincp_fast": "captum_tracin_we._baselines.stored_last_layer",
    "top_words": "captum_tracin_we._scoring.word_contributions",
    "tracincp": "captum_tracin_we._baselines.captum_methods",
    "tracincp_fast": "captum_tracin_we._baselines.captum_methods",
    "tracincp_fast_rand_proj": "captum_tracin_we._baselines.captum_methods",
}

__all__ = [
    "BatchError",
    "CaptumInfluence",
    "CausalLMLoss",
    "CheckpointError",
    "ExactNearestNeighbors",
    "IndexCorruptedError",
    "IndexMismatchError",
    "InfluenceComparison",
    "KMostInfluentialResults",
    "RepresentationSimilarity",
    "StoredTracInCPFast",
    "TracInLayers",
    "TokenInfluence",
    "TracInWE",
    "TracInWECausalLM",
    "TracInWEError",
    "TrainingDataError",
    "WordIndex",
    "WordInfluence",
    "aggregate_columns",
    "causal_lm_batch",
    "causal_lm_loss",
    "combine_layers",
    "compare_influence",
    "embedding_attributions",
    "frequent_token_ids",
    "last_linear_layer",
    "layer_groups",
    "load_checkpoint_with_lr",
    "merge_subwords",
    "stored_tracincp_fast",
    "top_words",
    "tracincp",
    "tracincp_fast",
    "tracincp_fast_rand_proj",
]

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from captum.influence._utils.common import KMostInfluentialResults

    from captum_tracin_we._baselines.captum_methods import (
        CaptumInfluence,
        ExactNearestNeighbors,
        last_linear_layer,
        tracincp,
        tracincp_fast,
        tracincp_fast_rand_proj,
    )
    from captum_tracin_we._baselines.feature_attributions import embedding_attributions
    from captum_tracin_we._baselines.representation_similarity import (
        RepresentationSimilarity,
    )
    from captum_tracin_we._baselines.stored_last_layer import (
        StoredTracInCPFast,
        stored_tracincp_fast,
    )
    from captum_tracin_we._checkpoints.checkpoints import load_checkpoint_with_lr
    from captum_tracin_we._data.causal_lm_data import causal_lm_batch
    from captum_tracin_we._data.model_layers import layer_groups
    from captum_tracin_we._errors import (
        BatchError,
        CheckpointError,
        IndexCorruptedError,
        IndexMismatchError,
        TracInWEError,
        TrainingDataError,
    )
    from captum_tracin_we._evaluation.comparison import (
        InfluenceComparison,
        compare_influence,
    )
    from captum_tracin_we._gradients.causal_lm_loss import (
        CausalLMLoss,
        causal_lm_loss,
    )
    from captum_tracin_we._gradients.token_frequency import frequent_token_ids
    from captum_tracin_we._index.word_index import WordIndex
    from captum_tracin_we._method.tracin_causal_lm import (
        TokenInfluence,
        TracInWECausalLM,
    )
    from captum_tracin_we._method.tracin_layers import TracInLayers
    from captum_tracin_we._method.tracin_we import TracInWE
    from captum_tracin_we._scoring.layer_aggregation import (
        aggregate_columns,
        combine_layers,
    )
    from captum_tracin_we._scoring.word_contributions import (
        WordInfluence,
        merge_subwords,
        top_words,
    )


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'captum_tracin_we' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value
