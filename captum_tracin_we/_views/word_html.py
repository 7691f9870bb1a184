#!/usr/bin/env python3

r"""Word-level TracIn-WE influence as HTML, in Captum's colours."""

import html
import unicodedata
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from captum_tracin_we._scoring.word_contributions import (
    TokenDecoder,
    WordInfluence,
    merge_subwords,
    pair_tokens,
)
from captum_tracin_we._views.text_view import (  # split out
    LabelNames,
    label_name,
)
from captum_tracin_we._views.token_windows import GAP, checked_window, windowed


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
    label_names: Optional[LabelNames] = None,
    merge: bool = True,
    legend: bool = True,
    window: Optional[int] = None,
    windows: int = 3,
) -> WordInfluenceHTML:
    r"""
    Renders a :class:`WordInfluence` as an HTML table in the visual language of
    Captum's ``visualize_text``: words marked green (positive contribution,
    proponent side) to red (negative), scaled per row by its largest
    ``|contribution|``. For each test text, a first row shows the test words
    (contributions summed over the listed pairs), then one row per training
    text with its label, index and score. Training data is untrusted: every
    token and label is HTML-escaped and wrapped in its own ``<bdi>`` element,
    so markup in it stays text and a bidi control (such as U+202E) cannot
    reverse the text around it. To show a test text's top proponents and
    opponents together, decompose both sets of pairs in one call:
    ``tracin.word_influence(inputs, torch.cat([top.indices, bottom.indices], 1))``.

    Args:
        word_influence (WordInfluence): From :meth:`TracInWE.word_influence`.
        tokenizer: A Hugging Face tokenizer or a callable from ids to strings.
        label_names (sequence or mapping, optional): Names of the label ids, by
                    position or as a mapping from id; any value is shown with
                    ``str()``. Default: None
        merge (bool, optional): Merge sub-word pieces into words. Default: True
        legend (bool, optional): Add Captum's Negative/Neutral/Positive legend.
                    Default: True
        window (int, optional): For long texts (documents of a language
                    model): show only windows of this many words around each
                    text's ``windows`` largest ``|contributions|``, with a mark
                    saying how many words are left out between them; colours
                    keep the whole text's scale. Default: None (every word)
        windows (int, optional): Windows per text at most. Default: 3

    Returns:
        view (WordInfluenceHTML): ``str(view)`` is the HTML; works without
                    IPython; ``view.save(path)`` writes a standalone file.
    """
    checked_window(window, windows)
    shown = (window, windows)
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
    rows = [f"{STYLE}<table class='tw-table'><tr>{header}</tr>"]
    n_test, m = word_influence.scores.shape
    for i in range(n_test):
        test_label = _escaped_label(word_influence.test_labels[i], label_names)
        summed = _summed_test_view(word_influence, i)
        tokens, values = pair_tokens(summed, 0, 0, tokenizer, "test")
        rows.append(
            f"<tr><td><b>{test_label}</b></td><td>test</td><td></td>"
            f"<td>sum of the rows below: {float(word_influence.scores[i].sum()):+.4g}"
            "</td>"
            f"{word_cells(tokens, values, merge, tokenizer, shown)}</tr>"
        )
        for j in range(m):
            tokens, values = pair_tokens(word_influence, i, j, tokenizer, "train")
            train_label = _escaped_label(word_influence.train_labels[i, j], label_names)
            rows.append(
                f"<tr><td></td><td>{train_label}</td>"
                f"<td>{int(word_influence.train_indices[i, j])}</td>"
                f"<td>{float(word_influence.scores[i, j]):+.4g}</td>"
                f"{word_cells(tokens, values, merge, tokenizer, shown)}</tr>"
            )
    rows.append("</table>")
    if legend:
        rows.append(legend_html())
    return WordInfluenceHTML("".join(rows))


STYLE = (
    "<style>"
    ".tw-table{width:100%;border-collapse:collapse}"
    ".tw-table td,.tw-table th{padding:3px 6px;text-align:left;vertical-align:top}"
    ".tw-word{color:black;line-height:1.75;padding:0 2px;margin:0 1px}"
    ".tw-swatch{display:inline-block;width:10px;height:10px;border:1px solid}"
    ".tw-legend{border-top:1px solid;margin-top:5px;padding-top:5px;"
    "display:inline-block}"
    ".tw-test{border-top:2px solid}"
    ".tw-method{width:50%}"
    ".tw-entry{margin:2px 0}"
    ".tw-label{padding:0 3px}"
    ".tw-gap{color:gray;font-style:italic;padding:0 4px}"
    "</style>"
)


def word_color(value: float) -> str:
    r"""Captum's word colour for a value in [-1, 1]: white to green or red."""
    value = max(-1.0, min(1.0, float(value)))
    if value > 0:
        return f"hsl(120, 75%, {100 - int(50 * value)}%)"
    return f"hsl(0, 75%, {100 - int(-40 * value)}%)"


def word_rgb(value: float) -> Tuple[float, float, float]:
    r""":func:`word_color` as an RGB triple for matplotlib."""
    import colorsys

    value = max(-1.0, min(1.0, float(value)))
    hue, lightness = (
        (120, 100 - int(50 * value)) if value > 0 else (0, 100 - int(-40 * value))
    )
    return colorsys.hls_to_rgb(hue / 360, lightness / 100, 0.75)


def word_cells(
    tokens: List[str],
    values: List[float],
    merge: bool,
    tokenizer: Any = None,
    shown: Tuple[Optional[int], int] = (None, 3),
) -> str:
    if merge:
        tokens, values = merge_subwords(tokens, values, tokenizer, name_pieces=True)
    scale = max((abs(v) for v in values), default=0.0) or 1.0
    words, scores, skipped = windowed(tokens, values, *shown)
    marks = " ".join(
        f"<span class='tw-gap'>[{GAP} {left} words {GAP}]</span>"
        if left
        else f'<mark class="tw-word" style="background-color:{word_color(v / scale)}" '
        f'title="{v:+.3g}">{isolated_html(token)}</mark>'
        for token, v, left in zip(words, scores, skipped)
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


def _escaped_label(value: Any, names: Optional[LabelNames]) -> str:
    r"""The name of label id ``value``, HTML-escaped in its own ``<bdi>``."""
    return isolated_html(label_name(value, names))


def isolated_html(text: Any, bold: bool = False) -> str:
    r"""
    Untrusted ``text`` as HTML: escaped, optionally bold, inside a ``<bdi>``
    element so that its direction cannot leak into the text around it.
    """
    escaped = html.escape(str(text))
    return f"<bdi><b>{escaped}</b></bdi>" if bold else f"<bdi>{escaped}</bdi>"


def legend_html() -> str:
    swatches = "".join(
        f'<span class="tw-swatch" style="background-color:{word_color(v)}"></span> '
        f"{name} "
        for v, name in ((-1, "Negative"), (0, "Neutral"), (1, "Positive"))
    )
    return f"<div class='tw-legend'><b>Legend: </b>{swatches}</div>"


def visualize_side_by_side(
    test_texts: Sequence[str],
    test_labels: Sequence[int],
    train_texts: Sequence[str],
    train_labels: Sequence[int],
    methods: Dict[str, Tuple[Any, Any]],
    label_names: Optional[LabelNames] = None,
    show_test: bool = True,
) -> WordInfluenceHTML:
    r"""
    For each test text, the top proponents and opponents of several methods in
    columns side by side (for example TracIn-WE and last-layer
    ``TracInCPFast``), with each training text's label, index and score. A
    training label equal to the test label is marked green, another red; words
    the training text shares with the test text are in bold, compared without
    the punctuation at their ends and case-folded ("hard." is "hard"). All text is
    HTML-escaped, and each word, label and method name sits in its own
    ``<bdi>`` element, so bidi controls in training text cannot reverse the
    text around them.

    Args:
        test_texts (sequence of str): The ``n_test`` test texts.
        test_labels (sequence of int): Their labels.
        train_texts (sequence of str): All training texts, by index.
        train_labels (sequence of int): Their labels.
        methods (dict): Method name to ``(proponents, opponents)``, each a
                    ``KMostInfluentialResults`` with ``n_test`` rows.
        label_names (sequence or mapping, optional): Names of the label ids, by
                    position or as a mapping from id; any value is shown with
                    ``str()``. Default: None
        show_test (bool, optional): Start each test text's block with a row
                    showing it; False where the page shows it just above (as
                    ``explain``'s report does). Default: True

    Returns:
        view (WordInfluenceHTML): The HTML table.
    """
    names = list(methods)
    header = "".join(f"<th>{isolated_html(name)}</th>" for name in names)
    parts = [f"{STYLE}<table class='tw-table tw-side'>"]
    for i, text in enumerate(test_texts):
        label = int(test_labels[i])
        if show_test:
            parts.append(
                f"<tr><td colspan='{len(names)}' class='tw-test'><b>Test "
                f"[{_escaped_label(label, label_names)}]</b> {_isolated_words(text)}"
                "</td></tr>"
            )
        parts.append(f"<tr>{header}</tr><tr>")
        test_words = {word_core(word) for word in text.split()} - {""}
        for name in names:
            cells = []
            for title, results in zip(("proponents", "opponents"), methods[name]):
                cells.append(f"<div><i>{title}</i></div>")
                for index, score in zip(
                    results.indices[i].tolist(), results.influence_scores[i].tolist()
                ):
                    cells.append(
                        _side_entry(
                            index,
                            score,
                            label,
                            train_texts,
                            train_labels,
                            test_words,
                            label_names,
                        )
                    )
            parts.append(f"<td class='tw-method'>{''.join(cells)}</td>")
        parts.append("</tr>")
    parts.append("</table>")
    return WordInfluenceHTML("".join(parts))


def _side_entry(
    index: int,
    score: float,
    test_label: int,
    train_texts: Sequence[str],
    train_labels: Sequence[int],
    test_words: set,
    label_names: Optional[LabelNames],
) -> str:
    r"""One training text of :func:`visualize_side_by_side`, as HTML."""
    train_label = int(train_labels[index])
    color = word_color(0.6 if train_label == test_label else -0.8)
    words = _isolated_words(train_texts[index], test_words)
    return (
        "<div class='tw-entry'><span class='tw-label' "
        f"style='background-color:{color}'>"
        f"[{_escaped_label(train_label, label_names)}]</span> "
        f"<code>{score:+.3g}</code> #{index} {words}</div>"
    )


def word_core(word: str) -> str:
    r"""
    ``word`` without the punctuation at its ends, case-folded: the form two
    texts' words are compared in (``"Hard."`` and ``"hard"`` are one word;
    a word of punctuation only gives ``""``).
    """
    start, stop = 0, len(word)
    while start < stop and unicodedata.category(word[start]).startswith("P"):
        start += 1
    while stop > start and unicodedata.category(word[stop - 1]).startswith("P"):
        stop -= 1
    return word[start:stop].casefold()


def _isolated_words(text: str, bold_words: Iterable[str] = ()) -> str:
    r"""
    The words of ``text``, each HTML-escaped in its own ``<bdi>``; words whose
    :func:`word_core` is in ``bold_words`` are bold.
    """
    bold_words = set(bold_words)
    return " ".join(
        isolated_html(word, bold=word_core(word) in bold_words) for word in text.split()
    )
