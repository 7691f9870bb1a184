#!/usr/bin/env python3

r"""Views of word-level TracIn-WE influence. This module: plain text for terminals."""

import textwrap
from typing import List, Optional, Sequence

from captum_tracin_we._utils.word_contributions import (
    TokenDecoder,
    WordInfluence,
    merge_subwords,
    pair_tokens,
    top_words,
)


def format_word_influence_text(
    word_influence: WordInfluence,
    tokenizer: TokenDecoder,
    label_names: Optional[Sequence[str]] = None,
    k_words: int = 3,
    title: str = "influential training examples",
    width: int = 120,
) -> str:
    r"""
    Renders a :class:`WordInfluence` as plain text: each test text, then its
    training texts with label, score and the words that carry the influence.

    Args:
        word_influence (WordInfluence): From :meth:`TracInWE.word_influence`.
        tokenizer: A Hugging Face tokenizer or a callable from ids to strings.
        label_names (sequence of str, optional): Names of the label ids.
                    Default: None (the ids)
        k_words (int, optional): Top words shown per pair. Default: 3
        title (str, optional): Heading of each list, for example
                    ``"top proponents"``. Default: ``"influential training
                    examples"``
        width (int, optional): Lines are shortened to this width. Default: 120

    Returns:
        text (str): The rendering, lines separated by newlines.
    """
    lines: List[str] = []
    n_test, m = word_influence.scores.shape
    for i in range(n_test):
        if i:
            lines.append("")
        label = _label(word_influence.test_labels[i], label_names)
        lines.append(f"TEST [{label}] {_text(word_influence, i, 0, tokenizer, 'test')}")
        lines.append(f"  {title}:")
        for j in range(m):
            score = float(word_influence.scores[i, j])
            index = int(word_influence.train_indices[i, j])
            train_label = _label(word_influence.train_labels[i, j], label_names)
            text = _text(word_influence, i, j, tokenizer, "train")
            words = ", ".join(
                f"{word} {value:+.3g}"
                for word, value in top_words(word_influence, i, j, tokenizer, k_words)
            )
            prefix = f"    {score:+10.4g}  #{index:<6d}[{train_label}] "
            room = max(20, width - len(prefix))
            lines.append(
                prefix + textwrap.shorten(text, width=room, placeholder=" ...")
            )
            lines.append(f"{'':16}words: {words or '(no shared words)'}")
    return "\n".join(lines)


def _label(value, names: Optional[Sequence[str]]) -> str:
    index = int(value)
    return names[index] if names is not None and 0 <= index < len(names) else str(index)


def _text(result: WordInfluence, i: int, j: int, tokenizer, side: str) -> str:
    tokens, values = pair_tokens(result, i, j, tokenizer, side)
    words, _ = merge_subwords(tokens, values)
    return " ".join(
        w for w in words if not (w.startswith(("[", "<")) and w.endswith(("]", ">")))
    )
