#!/usr/bin/env python3

r"""
Whether an index fits a TracInWE: its settings, checkpoints, training loss,
embedding module and (optionally) training data, each refused with what
differs and the fix.
"""

from typing import Any

from captum_tracin_we._checkpoints.checkpoint_pass import scoring_mode
from captum_tracin_we._data.data_fingerprint import ExampleDigests
from captum_tracin_we._errors import IndexMismatchError
from captum_tracin_we._gradients.gradient_source import record_data
from captum_tracin_we._index.index_bindings import embedding_identity, loss_identity
from captum_tracin_we._index.index_build import BuildOptions, build_word_index
from captum_tracin_we._index.index_store import IndexStore
from captum_tracin_we._index.word_index import WordIndex


def checked_index(index: WordIndex, tracin: Any, check_data: bool) -> WordIndex:
    r"""
    Checks that ``index`` fits ``tracin`` and returns it.

    Args:
        index (WordIndex): The opened index.
        tracin (TracInWE): The method it is attached to.
        check_data (bool): Also read the training data once and compare the
                    digest of every shard's examples (``verify=True``).

    Returns:
        index (WordIndex): ``index`` itself.

    Raises:
        IndexMismatchError: If the settings, checkpoints, loss, embedding
                    module or training data differ (the message says which).
    """
    check_settings(index, tracin)
    digests = None
    if check_data:
        digests = ExampleDigests(index.shard_ends()[:-1])
        with scoring_mode(tracin.model):
            record_data(tracin.gradient_source, tracin.training_data.batches(), digests)
        num_examples = digests.num_examples
    else:
        num_examples = tracin.num_train_examples
    index.check_data(digests.digests() if digests else [], num_examples)
    return index


def check_settings(index: WordIndex, tracin: Any) -> None:
    r"""
    Checks the index's settings, checkpoint count, loss and embedding module
    against ``tracin``.

    Raises:
        IndexMismatchError: Saying what differs and the fix.
    """
    settings, embedding = index.settings, tracin.embedding_layer
    problems = []
    if settings.vocab_size != embedding.num_embeddings:
        problems.append(
            f"vocabulary {settings.vocab_size} vs the model's "
            f"{embedding.num_embeddings} (another tokenizer or model)"
        )
    if settings.dim != embedding.embedding_dim:
        problems.append(f"dimension {settings.dim} vs {embedding.embedding_dim}")
    if settings.top_k_words != tracin.top_k_words:
        problems.append(f"top_k_words {settings.top_k_words} vs {tracin.top_k_words}")
    if settings.exclude_token_ids != tracin.exclude_token_ids.tolist():
        problems.append("a different exclude_token_ids")
    if settings.num_checkpoints != len(tracin.checkpoints):
        problems.append(
            f"{settings.num_checkpoints} checkpoints vs {len(tracin.checkpoints)}"
        )
    if problems:
        raise IndexMismatchError(
            f"The index at {index.root!r} does not fit this TracInWE: "
            + "; ".join(problems)
            + ". Build a new index for this model."
        )
    index.check_bindings(
        loss_identity(tracin.loss_fn),
        embedding_identity(tracin.model, tracin.embedding_layer),
    )


def attached_index(tracin: Any, path: str, verify: bool) -> WordIndex:
    r"""
    The body of :meth:`TracInWE.attach_index`: opens the index in ``path``
    (checksums with ``verify``) and checks that it fits ``tracin`` (the
    training data too with ``verify``).
    """
    return checked_index(WordIndex(path, verify=verify), tracin, verify)


def built_index(
    tracin: Any, path: str, options: BuildOptions, show_progress: bool
) -> WordIndex:
    r"""
    The body of :meth:`TracInWE.build_index`: builds (or resumes) the index of
    ``tracin``'s training side in ``path``, then opens and checks it.
    """
    build_word_index(
        IndexStore(path),
        tracin.training_data,
        tracin.gradient_source,
        tracin.loss_fn,
        tracin.checkpoint_pass,
        options,
        show_progress,
    )
    return checked_index(WordIndex(path, verify=False), tracin, False)
