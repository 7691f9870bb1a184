#!/usr/bin/env python3

r"""Per-token TracIn-WE of a causal language model's continuation, as text."""

from typing import Any, List, Optional, Sequence

from captum_tracin_we._scoring.word_contributions import TokenDecoder, token_strings
from captum_tracin_we._views.text_view import visible_text


def format_token_influence(
    token_influence: Any,
    tokenizer: TokenDecoder,
    k: int = 3,
    train_names: Optional[Sequence[str]] = None,
) -> str:
    r"""
    Renders per-token scores (``TracInWECausalLM.token_influence``) as plain
    text: for each test example, each predicted token with the ``k`` training
    documents that raised its probability most (largest positive scores) and
    the ``k`` that lowered it most (most negative). Documents are shown by
    index, or by ``train_names`` (shortened, control and bidi characters
    escaped).

    Args:
        token_influence (TokenInfluence): Per-token scores ``(R, n_train)``.
        tokenizer: A Hugging Face tokenizer or a callable from ids to strings.
        k (int, optional): Documents per direction and token. Default: 3
        train_names (sequence of str, optional): A label per training
                    document, for example its first words. Default: None

    Returns:
        text (str): One line per predicted token under a line per example.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"`k` must be a positive int; got {k!r}.")
    scores = token_influence.scores
    k = min(k, scores.shape[1])
    words = token_strings(token_influence.token_ids.tolist(), tokenizer)
    lines: List[str] = []
    last = None
    for r in range(scores.shape[0]):
        example = int(token_influence.example[r])
        if example != last:
            total = float(scores[token_influence.example == example].sum())
            lines.append(f"TEST {example}: score summed over its tokens {total:+.4g}")
            last = example
        row = scores[r]
        up = row.topk(k).indices.tolist()
        down = (-row).topk(k).indices.tolist()

        position = int(token_influence.position[r])
        lines.append(
            f"  {visible_text(words[r])!r:>14} (position {position}, "
            f"{float(row.sum()):+.3g}): raised by {_named(row, up, 1, train_names)}; "
            f"lowered by {_named(row, down, -1, train_names)}"
        )
    return "\n".join(lines)


def _named(
    row: Any, indices: List[int], sign: int, names: Optional[Sequence[str]]
) -> str:
    kept = [j for j in indices if sign * float(row[j]) > 0]
    shown = [f"{_name(j, names)} {float(row[j]):+.3g}" for j in kept]
    return ", ".join(shown) or "none"


def _name(index: int, names: Optional[Sequence[str]]) -> str:
    if names is None:
        return f"#{index}"
    text = visible_text(names[index])
    return f"#{index} '{text[:30]}{'...' if len(text) > 30 else ''}'"
