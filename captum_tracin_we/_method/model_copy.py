#!/usr/bin/env python3

r"""A TracInWE on a deep copy of its model, for scoring in another thread."""

import copy
from typing import Any


def on_model_copy(tracin: Any) -> Any:
    r"""
    The body of :meth:`TracInWE.on_model_copy`.

    Args:
        tracin (TracInWE): The method to copy.

    Returns:
        twin (TracInWE): The same data, checkpoints, settings and attached
                    index, on ``copy.deepcopy(tracin.model)``.
    """
    names = {module: name for name, module in tracin.model.named_modules()}
    twin = type(tracin)(
        copy.deepcopy(tracin.model),
        tracin.train_dataloader,
        tracin.checkpoints,
        tracin.checkpoints_load_func,
        embedding_layer=names[tracin.embedding_layer],
        loss_fn=tracin.loss_fn,
        batch_size=tracin.batch_size,
        test_loss_fn=tracin.test_loss_fn,
        top_k_words=tracin.top_k_words,
        exclude_token_ids=tracin.exclude_token_ids.tolist(),
        idf_power=tracin.idf_power,
    )
    twin.index = tracin.index  # read-only memory maps, already checked
    return twin
