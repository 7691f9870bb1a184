#!/usr/bin/env python3

r"""Views of word-level TracIn-WE influence: HTML in Captum's colours, and text."""

import html
import textwrap
from typing import List, Optional, Sequence

import torch

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


class WordInfluenceHTML:
    r"""
    An HTML rendering: ``str()`` gives the markup, notebooks display it through
    ``_repr_html_``, and :meth:`save` writes a standalone page.
    """

    def __init__(self, body: str) -> None:
        self.html = body

    def __str__(self) -> str:
        return self.html

    def _repr_html_(self) -> str:
        return self.html

    def save(self, path: str, title: str = "TracIn-WE word influence") -> None:
        r"""Writes a standalone UTF-8 HTML page to ``path``."""
        page = (
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title></head><body>{self.html}</body></html>"
        )
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(page)


def visualize_word_influence(
    word_influence: WordInfluence,
    tokenizer: TokenDecoder,
    label_names: Optional[Sequence[str]] = None,
    merge: bool = True,
    legend: bool = True,
) -> WordInfluenceHTML:
    r"""
    Renders a :class:`WordInfluence` as an HTML table in the visual language of
    Captum's ``visualize_text``: words marked green (positive contribution,
    proponent side) to red (negative), scaled per row by its largest
    ``|contribution|``. For each test text, a first row shows the test words
    (contributions summed over the listed pairs), then one row per training
    text with its label, index and score. Every piece of text is HTML-escaped:
    training data is untrusted.

    Args:
        word_influence (WordInfluence): From :meth:`TracInWE.word_influence`.
        tokenizer: A Hugging Face tokenizer or a callable from ids to strings.
        label_names (sequence of str, optional): Names of the label ids.
                    Default: None
        merge (bool, optional): Merge sub-word pieces into words. Default: True
        legend (bool, optional): Add Captum's Negative/Neutral/Positive legend.
                    Default: True

    Returns:
        view (WordInfluenceHTML): ``str(view)`` is the HTML; works without
                    IPython; ``view.save(path)`` writes a standalone file.
    """
    header = "".join(
        f"<th>{name}</th>"
        for name in (
            "Test label",
            "Train label",
            "Train idx",
            "Influence score",
            "Word contributions",
        )
    )
    rows = [f"<table style='width:100%'><tr>{header}</tr>"]
    n_test, m = word_influence.scores.shape
    for i in range(n_test):
        test_label = _escaped_label(word_influence.test_labels[i], label_names)
        summed = _summed_test_view(word_influence, i)
        tokens, values = pair_tokens(summed, 0, 0, tokenizer, "test")
        rows.append(
            f"<tr><td><b>{test_label}</b></td><td>test</td><td></td>"
            f"<td>{float(word_influence.scores[i].sum()):.4g}</td>"
            f"{_word_cells(tokens, values, merge)}</tr>"
        )
        for j in range(m):
            tokens, values = pair_tokens(word_influence, i, j, tokenizer, "train")
            train_label = _escaped_label(word_influence.train_labels[i, j], label_names)
            rows.append(
                f"<tr><td></td><td>{train_label}</td>"
                f"<td>{int(word_influence.train_indices[i, j])}</td>"
                f"<td>{float(word_influence.scores[i, j]):+.4g}</td>"
                f"{_word_cells(tokens, values, merge)}</tr>"
            )
    rows.append("</table>")
    if legend:
        rows.append(_legend())
    return WordInfluenceHTML("".join(rows))


def word_color(value: float) -> str:
    r"""Captum's word colour for a value in [-1, 1]: white to green or red."""
    value = max(-1.0, min(1.0, float(value)))
    if value > 0:
        return f"hsl(120, 75%, {100 - int(50 * value)}%)"
    return f"hsl(0, 75%, {100 - int(-40 * value)}%)"


def _word_cells(tokens: List[str], values: List[float], merge: bool) -> str:
    if merge:
        tokens, values = merge_subwords(tokens, values)
    scale = max((abs(v) for v in values), default=0.0) or 1.0
    marks = "".join(
        f'<mark style="background-color: {word_color(v / scale)}; opacity:1.0; '
        f'line-height:1.75" title="{v:+.3g}"><font color="black"> '
        f"{html.escape(token)} </font></mark>"
        for token, v in zip(tokens, values)
    )
    return f"<td>{marks}</td>"


def _summed_test_view(result: WordInfluence, i: int) -> WordInfluence:
    summed = result.test_contributions[i : i + 1].sum(1, keepdim=True)
    return WordInfluence(
        scores=result.scores[i : i + 1, :1],
        train_indices=result.train_indices[i : i + 1, :1],
        test_token_ids=result.test_token_ids[i : i + 1],
        train_token_ids=result.train_token_ids[i : i + 1, :1],
        test_contributions=summed,
        train_contributions=torch.zeros_like(result.train_contributions[i : i + 1, :1]),
        test_mask=result.test_mask[i : i + 1],
        train_mask=result.train_mask[i : i + 1, :1],
        test_labels=result.test_labels[i : i + 1],
        train_labels=result.train_labels[i : i + 1, :1],
    )


def _escaped_label(value, names: Optional[Sequence[str]]) -> str:
    return html.escape(_label(value, names))


def _legend() -> str:
    swatches = "".join(
        f'<span style="display:inline-block;width:10px;height:10px;border:1px solid;'
        f'background-color:{word_color(v)}"></span> {name} '
        for v, name in ((-1, "Negative"), (0, "Neutral"), (1, "Positive"))
    )
    return (
        "<div style='border-top:1px solid;margin-top:5px;padding-top:5px;"
        f"display:inline-block'><b>Legend: </b>{swatches}</div>"
    )
