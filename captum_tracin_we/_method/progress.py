#!/usr/bin/env python3

r"""The one progress bar of a TracInWE call (Captum's ``show_progress`` style)."""

from typing import Any, Optional

from tqdm.auto import tqdm


def progress_bar(
    tracin: Any,
    what: str,
    other_batches: Any,
    show_progress: bool,
    with_train: bool = True,
) -> Any:
    r"""
    A tqdm bar over every batch of every checkpoint pass of ``tracin``.

    Args:
        tracin (TracInWE): The method (its name, checkpoints and number of
                    training batches).
        what (str): What is computed, for example ``"influence"``.
        other_batches: The test batches; their length, where they have one,
                    adds to the total.
        show_progress (bool): False gives a disabled bar.
        with_train (bool, optional): Whether every pass also streams the
                    training set. Default: True

    Returns:
        bar (tqdm): Use it as a context manager; ``bar.update(1)`` per batch.
    """
    train = tracin.training_data.num_batches if with_train else 0
    others = _length(other_batches)
    total = None
    if train is not None and others is not None:
        total = len(tracin.checkpoints) * (train + others)
    return tqdm(
        total=total,
        desc=f"Using {tracin.get_name()} to compute {what}. Processing batch",
        disable=not show_progress,
    )


def _length(batches: Any) -> Optional[int]:
    try:
        return len(batches)
    except TypeError:
        return None
