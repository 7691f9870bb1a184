#!/usr/bin/env python3

r"""
Word-level decomposition of TracIn-WE scores, and helpers to read it as words.

Position ``p`` of a training text, holding token ``w``, contributes
``sum over checkpoints of lr * <gradient at p, row_w(test text)>``; position ``q``
of the test text contributes symmetrically with the training text's row. By
bilinearity each side sums exactly to the score.
"""

from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

TokenDecoder = Union[Any, Callable[[Sequence[int]], List[str]]]
_SPECIAL_MARKERS = ("[", "<")


@dataclass
class WordInfluence:
    r"""
    TracIn-WE scores of chosen (test, training) pairs and their split over the
    positions of both texts.

    Attributes:
        scores (Tensor): ``(n_test, m)``, equal to ``influence`` at
                    ``train_indices``.
        train_indices (Tensor): ``(n_test, m)`` long, the training examples.
        test_token_ids (Tensor): ``(n_test, L)`` token ids of the test texts.
        train_token_ids (Tensor): ``(n_test, m, L')`` token ids of the training
                    texts.
        test_contributions (Tensor): ``(n_test, m, L)``; sums over the last
                    dimension to ``scores``. Padding and positions that do not
                    count contribute 0.
        train_contributions (Tensor): ``(n_test, m, L')``; sums to ``scores``.
        test_mask (Tensor): ``(n_test, L)`` bool, True at real (non-padding)
                    positions.
        train_mask (Tensor): ``(n_test, m, L')`` bool, likewise.
        test_labels (Tensor): ``(n_test,)`` labels of the test texts.
        train_labels (Tensor): ``(n_test, m)`` labels of the training texts.
    """

    scores: Tensor
    train_indices: Tensor
    test_token_ids: Tensor
    train_token_ids: Tensor
    test_contributions: Tensor
    train_contributions: Tensor
    test_mask: Tensor
    train_mask: Tensor
    test_labels: Tensor
    train_labels: Tensor


def pair_contributions(
    test_ids: Tensor, test_gradients: Tensor, train_ids: Tensor, train_gradients: Tensor
) -> Tuple[Tensor, Tensor]:
    r"""
    Position contributions of ``n`` test texts paired with ``m`` training texts
    each, at one checkpoint.

    Args:
        test_ids (Tensor): ``(n, L)`` token ids.
        test_gradients (Tensor): ``(n, L, D)``, zero where positions do not count.
        train_ids (Tensor): ``(n, m, L')`` token ids.
        train_gradients (Tensor): ``(n, m, L', D)``, zero where they do not count.

    Returns:
        (test_contributions, train_contributions): ``(n, m, L)`` and
                    ``(n, m, L')``; each sums over positions to the pair's score.
    """
    dots = torch.einsum("npd,nmqd->nmqp", test_gradients, train_gradients)
    same_token = train_ids.unsqueeze(-1) == test_ids[:, None, None, :]
    dots = dots * same_token
    return dots.sum(-2), dots.sum(-1)


def token_strings(token_ids: Sequence[int], tokenizer: TokenDecoder) -> List[str]:
    r"""
    Token strings of ``token_ids`` from a Hugging Face tokenizer
    (``convert_ids_to_tokens``) or a callable from ids to strings.
    """
    ids = [int(i) for i in token_ids]
    convert = getattr(tokenizer, "convert_ids_to_tokens", None)
    if callable(convert):
        return list(convert(ids))
    if callable(tokenizer):
        return list(tokenizer(ids))
    raise TypeError(
        "`tokenizer` must be a Hugging Face tokenizer or a callable from a list of "
        f"ids to a list of strings; got {type(tokenizer).__name__}."
    )


def merge_subwords(
    tokens: Sequence[str],
    contributions: Sequence[float],
    tokenizer: Optional[Any] = None,
    name_pieces: bool = False,
) -> Tuple[List[str], List[float]]:
    r"""
    Merges sub-word pieces into words, summing their contributions.

    WordPiece continuations (``"##ing"``) join the previous piece; in
    vocabularies that mark word starts instead (``"Ġ"`` for GPT-2/RoBERTa,
    ``"▁"`` for SentencePiece) a piece without the marker joins the previous
    one. Special tokens (``[CLS]``, ``<s>``...) stay on their own.

    Args:
        tokens (sequence of str): Token strings of one text.
        contributions (sequence of float): One value per token.
        tokenizer (optional): The Hugging Face tokenizer of the tokens; with
                    it, merged words of a byte-level BPE vocabulary (RoBERTa,
                    GPT-2) are decoded back to their characters (``"cafÃ©"``
                    reads ``"café"``). Default: None
        name_pieces (bool, optional): Name the pieces that carry a word's
                    contribution when the others carry none, so that a word is
                    not credited for a piece it shares with another word: a
                    training word "joyless" whose only shared piece is
                    ``##less`` (from a test word "mindless") reads ``"joyless
                    (via ##less)"``. Default: False

    Returns:
        (words, word_contributions): Lists of equal length.
    """
    if len(tokens) != len(contributions):
        raise ValueError(
            f"{len(tokens)} tokens but {len(contributions)} contributions; pass one "
            "contribution per token."
        )
    start_markers = ("Ġ", "▁")
    marks_starts = any(t.startswith(start_markers) for t in tokens)
    words: List[str] = []
    values: List[float] = []
    pieces: List[List[Tuple[str, float]]] = []
    for token, value in zip(tokens, contributions):
        special = is_special_token(token)
        if marks_starts:
            joins = not special and not token.startswith(start_markers)
            piece = token.lstrip("".join(start_markers))
        else:
            joins = token.startswith("##")
            piece = token[2:] if joins else token
        shown = token.lstrip("".join(start_markers)) or token
        if joins and words and not is_special_token(words[-1]):
            words[-1] += piece
            values[-1] += float(value)
            pieces[-1].append((shown, float(value)))
        else:
            words.append(piece if piece else token)
            values.append(float(value))
            pieces.append([(shown, float(value))])
    if tokenizer is not None and any(t.startswith("Ġ") for t in tokens):
        words = [readable_word(word, tokenizer) for word in words]
    if name_pieces:
        words = [_credited(word, parts) for word, parts in zip(words, pieces)]
    return words, values


def _credited(word: str, parts: List[Tuple[str, float]]) -> str:
    r"""``word``, with the pieces that carry its value named when others
    carry none."""
    carrying = [piece for piece, value in parts if value != 0.0]
    if len(parts) < 2 or not carrying or len(carrying) == len(parts):
        return word
    return f"{word} (via {', '.join(carrying)})"


def readable_word(word: str, tokenizer: Any) -> str:
    r"""A merged byte-level BPE word as text, through the tokenizer's
    ``convert_tokens_to_string``; the word itself where that fails."""
    convert = getattr(tokenizer, "convert_tokens_to_string", None)
    if not callable(convert) or is_special_token(word):
        return word
    try:
        text = convert([word]).strip()
    except Exception:  # a piece the tokenizer cannot turn back: show it raw
        return word
    return text if text and "\ufffd" not in text else word


def is_special_token(token: str) -> bool:
    r"""True for bracketed special tokens such as ``[CLS]``, ``<s>``, ``</s>``."""
    return (
        len(token) > 2
        and token[0] in _SPECIAL_MARKERS
        and token[-1] in ("]", ">")
        and " " not in token
    )


def top_words(
    word_influence: WordInfluence,
    test_index: int,
    pair_index: int,
    tokenizer: TokenDecoder,
    k: int = 5,
    side: str = "train",
    merge: bool = True,
) -> List[Tuple[str, float]]:
    r"""
    The words that carry most of one pair's influence, largest ``|contribution|``
    first, with contributions of the same word summed.

    Args:
        word_influence (WordInfluence): The decomposition.
        test_index (int): Row of the test text.
        pair_index (int): Column of the training text among ``train_indices``.
        tokenizer: A Hugging Face tokenizer or a callable from ids to strings.
        k (int, optional): How many words. Default: 5
        side (str, optional): ``"train"`` or ``"test"``: whose positions to read.
                    Default: ``"train"``
        merge (bool, optional): Merge sub-word pieces first. Default: True

    Returns:
        words (list of (str, float)): Up to ``k`` ``(word, contribution)``.
    """
    tokens, values = pair_tokens(
        word_influence, test_index, pair_index, tokenizer, side
    )
    if merge:
        tokens, values = merge_subwords(tokens, values, tokenizer, name_pieces=True)
    totals: dict = {}
    for token, value in zip(tokens, values):
        totals[token] = totals.get(token, 0.0) + value
    ranked = sorted(totals.items(), key=lambda item: -abs(item[1]))
    return [(word, value) for word, value in ranked[:k] if value != 0.0]


def pair_tokens(
    word_influence: WordInfluence,
    test_index: int,
    pair_index: int,
    tokenizer: TokenDecoder,
    side: str = "train",
) -> Tuple[List[str], List[float]]:
    r"""Token strings and contributions of one side of one pair, padding dropped."""
    if side == "train":
        ids = word_influence.train_token_ids[test_index, pair_index]
        mask = word_influence.train_mask[test_index, pair_index]
        values = word_influence.train_contributions[test_index, pair_index]
    elif side == "test":
        ids = word_influence.test_token_ids[test_index]
        mask = word_influence.test_mask[test_index]
        values = word_influence.test_contributions[test_index, pair_index]
    else:
        raise ValueError(f"`side` must be 'train' or 'test'; got {side!r}.")
    return token_strings(ids[mask].tolist(), tokenizer), values[mask].tolist()


def checked_train_indices(train_indices: Any, train_size: int) -> Tensor:
    r"""
    The ``(n_test, m)`` training indices of ``word_influence``, checked.

    Args:
        train_indices: Integer indices into the training set, one row per
                    test example.
        train_size (int): Examples in the training set.

    Returns:
        indices (Tensor): ``(n_test, m)`` long, on CPU.

    Raises:
        ValueError: If they are not integers, not 2-D, or out of range.
    """
    indices = torch.as_tensor(train_indices)
    if (
        indices.is_floating_point()
        or indices.is_complex()
        or indices.dtype == torch.bool
    ):
        raise ValueError(
            "`train_indices` must hold integer indices into the training set; got "
            f"{indices.dtype}. Pass for example `influence(inputs, k=m).indices`."
        )
    indices = indices.long().cpu()
    if indices.dim() != 2:
        raise ValueError(
            "`train_indices` must be (n_test, m), one row of training indices per "
            f"test example; got shape {tuple(indices.shape)}."
        )
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= train_size):
        raise ValueError(
            f"`train_indices` must lie in [0, {train_size}); got values from "
            f"{int(indices.min())} to {int(indices.max())}."
        )
    return indices
