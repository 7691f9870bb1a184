#!/usr/bin/env python3

r"""TracIn-WE: training-data influence on the word-embedding layer, for Captum."""

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
from captum_tracin_we._checkpoints.checkpoints import load_checkpoint_with_lr
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
from captum_tracin_we._gradients.token_frequency import frequent_token_ids
from captum_tracin_we._index.word_index import WordIndex
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

__version__ = "0.1.0"

__all__ = [
    "BatchError",
    "CaptumInfluence",
    "CheckpointError",
    "ExactNearestNeighbors",
    "IndexCorruptedError",
    "IndexMismatchError",
    "InfluenceComparison",
    "KMostInfluentialResults",
    "RepresentationSimilarity",
    "TracInLayers",
    "TracInWE",
    "TracInWEError",
    "TrainingDataError",
    "WordIndex",
    "WordInfluence",
    "aggregate_columns",
    "combine_layers",
    "compare_influence",
    "embedding_attributions",
    "frequent_token_ids",
    "last_linear_layer",
    "layer_groups",
    "load_checkpoint_with_lr",
    "merge_subwords",
    "top_words",
    "tracincp",
    "tracincp_fast",
    "tracincp_fast_rand_proj",
]
