#!/usr/bin/env python3

r"""
One error type per failure family. Every one is a ``ValueError``, so code that
caught ``ValueError`` before keeps working; each message names the problem and
the fix.
"""


class TracInWEError(ValueError):
    r"""Base class of the errors raised by captum_tracin_we."""


class CheckpointError(TracInWEError):
    r"""A checkpoint cannot be read, does not fit the model, or has a bad
    learning rate."""


class TrainingDataError(TracInWEError):
    r"""The training data cannot be indexed by position: a shuffling or
    custom sampler, dropped examples, or data that change between passes."""


class BatchError(TracInWEError):
    r"""A batch does not fit the model: labels, layout of the token ids, the
    loss, or non-finite values."""


class IndexMismatchError(TracInWEError):
    r"""An index that was built for other data, checkpoints, settings or
    model, or a folder that holds another build."""


class IndexCorruptedError(TracInWEError):
    r"""An index whose files are missing, truncated, altered, or whose
    manifest does not follow the schema."""


def check_k(k: object, train_size: int) -> None:
    r"""
    Raises ``ValueError`` unless ``k`` is an int in ``[1, train_size]``: the
    number of top training examples asked of an influence method.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"`k` must be a positive int or None; got {k!r}.")
    if k > train_size:
        raise ValueError(
            f"k={k} is larger than the training set ({train_size} examples). Use "
            f"k <= {train_size}, or k=None for all scores."
        )
