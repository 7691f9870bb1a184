#!/usr/bin/env python3

r"""
The report of an explain or demo run: one self-contained ``report.html``
(stylesheet and figures embedded, settings, a short guide to reading it, a
table of contents) and ``scores.json`` (texts, labels, label names, settings,
and indices into the user's data in its original row order).
"""

import base64
import html
import io
import json
import os
import textwrap
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from captum_tracin_we._files.atomic_files import write_files
from captum_tracin_we._scoring.word_contributions import WordInfluence
from captum_tracin_we._views.text_view import (
    format_word_influence_text,
    label_name,
    visible_text,
)
from captum_tracin_we._views.word_figures import (
    plot_method_comparison,
    plot_pair_contributions,
)
from captum_tracin_we._views.word_html import (
    visualize_side_by_side,
    visualize_word_influence,
)


@dataclass
class TestText:
    r"""One explained test text, as given and as the model saw it."""

    text: str
    seen_text: str
    truncated: bool
    label: int
    given_label: Optional[int]
    predicted: int
    probabilities: List[float]
    features: Dict[str, Any]


@dataclass
class Explanation:
    r"""Everything a report shows."""

    title: str
    settings: Dict[str, str]
    label_names: List[str]
    train_texts: List[str]
    train_truncated: List[bool]
    train_labels: List[int]
    train_rows: List[int]
    tests: List[TestText]
    methods: Dict[str, Any]
    scores: Dict[str, Tensor]
    words: WordInfluence
    accuracy: Optional[float] = None
    comparison: Optional[Any] = None
    seconds: Dict[str, float] = field(default_factory=dict)


_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 1180px; margin: 0 auto;
       padding: 1em 1.5em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em;
       border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; } td, th { padding: 3px 8px; text-align: left;
       vertical-align: top; }
table.settings td:first-child { font-weight: 600; white-space: nowrap; }
.guide { background: #f4f7fb; border-left: 4px solid #4a7bd0; padding: .5em 1em; }
.truncated { color: #a33; font-style: italic; }
.test { background: #fafafa; border: 1px solid #ddd; padding: .5em 1em; }
figure { margin: 1em 0; } figure img { max-width: 100%; }
figcaption { color: #555; font-size: .9em; }
nav ol { columns: 2; }
"""

_GUIDE = """
<div class='guide'><p><b>How to read this.</b> For each test text, the
training texts whose training moved the model most towards its answer
(<i>proponents</i>, positive scores) and away from it (<i>opponents</i>,
negative scores). A score is TracIn's sum over checkpoints of learning rate
times the dot product of the two texts' loss gradients; TracIn-WE takes the
gradients at the word-embedding layer, so only words the two texts share
contribute, and each word's part is shown (green raises the score, red lowers
it). The last-layer method (Captum's TracInCPFast) often returns the same few
training texts for every test text: their large last-layer gradients dominate
(the "cancellation effect" of Yeh et al., 2022). Labels in green match the
test text's label; red ones differ. Texts are shown as the model saw them;
<span class='truncated'>[truncated]</span> marks a text cut at the maximum
length.</p></div>
"""


def write_report(explanation: Explanation, tokenizer: Any, out: str) -> Dict[str, Any]:
    r"""
    Writes ``report.html`` and ``scores.json`` into ``out`` and prints every
    file written with its size, and a line when they replace earlier ones.
    Both are written whole under temporary names and then renamed into place
    (see :func:`write_files`): a failure leaves the earlier pair as it was.

    Returns:
        summary (dict): The content of ``scores.json``.

    Raises:
        TracInWEError: If an output path is a symbolic link.
        OSError: If a file cannot be written (the message names it).
    """
    os.makedirs(out, exist_ok=True)
    started = time.perf_counter()
    figures = _figures(explanation, tokenizer)
    page = _page(explanation, tokenizer, figures)
    explanation.seconds["report"] = time.perf_counter() - started
    summary = scores_summary(explanation)
    report_path = os.path.join(out, "report.html")
    scores_path = os.path.join(out, "scores.json")
    replaced = write_files(
        {
            report_path: page,
            scores_path: json.dumps(summary, indent=1, ensure_ascii=False),
        }
    )
    print_replaced(replaced)
    print_written([report_path, scores_path])
    return summary


def print_replaced(paths: Sequence[str]) -> None:
    r"""Prints one line naming the earlier files that were replaced, if any."""
    if paths:
        names = " and ".join(os.path.basename(path) for path in paths)
        folder = os.path.dirname(os.path.abspath(paths[0]))
        print(f"Replaced the earlier {names} in {folder}.")


def print_written(paths: Sequence[str]) -> None:
    r"""Prints each written file or folder with its size."""
    print("Wrote:")
    for path in paths:
        print(f"  {os.path.abspath(path)}  ({_size(path)})")


def _size(path: str) -> str:
    total = os.path.getsize(path)
    if os.path.isdir(path):
        total = sum(
            os.path.getsize(os.path.join(root, name))
            for root, _, names in os.walk(path)
            for name in names
        )
    for unit in ("bytes", "KB", "MB", "GB"):
        if total < 1024 or unit == "GB":
            return f"{total:.0f} {unit}" if unit == "bytes" else f"{total:.1f} {unit}"
        total /= 1024
    return ""


def _label(names: Sequence[str], value: Optional[int]) -> str:
    if value is None:
        return "none"
    return names[value] if 0 <= value < len(names) else str(value)


def _page(explanation: Explanation, tokenizer: Any, figures: Dict[str, str]) -> str:
    names = explanation.label_names
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(explanation.title)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(explanation.title)}</h1>",
        _GUIDE,
        "<h2>Settings</h2><table class='settings'>",
    ]
    rows = dict(explanation.settings)
    rows["Labels"] = ", ".join(f"{i} = {name}" for i, name in enumerate(names))
    if explanation.accuracy is not None:
        rows["Accuracy on labelled test texts"] = f"{explanation.accuracy:.3f}"
    for key, value in rows.items():
        parts.append(
            f"<tr><td>{html.escape(key)}</td><td><bdi>{html.escape(value)}</bdi></td></tr>"
        )
    parts.append("</table>")
    parts.append("<h2>Test texts</h2><nav><ol>")
    for i, test in enumerate(explanation.tests):
        preview = html.escape(textwrap.shorten(test.seen_text, 80, placeholder=" …"))
        parts.append(f"<li><a href='#test-{i}'><bdi>{preview}</bdi></a></li>")
    parts.append("</ol></nav>")
    parts.append(figures["comparison"])
    if explanation.comparison is not None:
        parts.append(
            "<h2>Methods side by side</h2><p>Seconds: computing the scores of all "
            "training texts for the test texts (setup excluded). Distinct: how many "
            "different training texts the top-k lists of all test texts hold "
            "together.</p>"
        )
        parts.append(str(explanation.comparison.html(figure=False)))
        parts.append(figures.get("cancellation", ""))
    for i in range(len(explanation.tests)):
        parts.append(_test_section(explanation, tokenizer, figures, i))
    parts.append("</body></html>")
    return "".join(parts)


def _test_section(
    explanation: Explanation, tokenizer: Any, figures: Dict[str, str], i: int
) -> str:
    names, test = explanation.label_names, explanation.tests[i]
    probabilities = ", ".join(
        f"{_label(names, c)} {p:.2f}" for c, p in enumerate(test.probabilities)
    )
    mark = " <span class='truncated'>[truncated]</span>" if test.truncated else ""
    given = (
        f"label {html.escape(_label(names, test.given_label))}"
        if test.given_label is not None
        else "no label given: explained at the prediction"
    )
    parts = [
        f"<h2 id='test-{i}'>Test text {i + 1}</h2>",
        f"<div class='test'><bdi>{html.escape(test.seen_text)}</bdi>{mark}"
        f"<p>{given}; predicted <b>{html.escape(_label(names, test.predicted))}</b>"
        f" ({html.escape(probabilities)})</p></div>",
    ]
    methods = {
        name: tuple(_row(result, i, sign) for result, sign in zip(pair, (1, -1)))
        for name, pair in explanation.methods.items()
    }
    train_texts = [
        text + (" [truncated]" if cut else "")
        for text, cut in zip(explanation.train_texts, explanation.train_truncated)
    ]
    parts.append(
        str(
            visualize_side_by_side(
                [test.seen_text],
                [test.label],
                train_texts,
                explanation.train_labels,
                methods,
                names,
                show_test=False,  # shown just above
            )
        )
    )
    parts.append("<h3>TracIn-WE word by word</h3>")
    k = explanation.methods["TracIn-WE"][0].indices.shape[1]
    columns = torch.cat(side_columns(explanation.words, i, k))
    if columns.numel():
        row = _word_row(explanation.words, i, columns)
        parts.append(str(visualize_word_influence(row, tokenizer, names)))
    else:
        parts.append("<p>No training text has a score other than 0.</p>")
    parts.append(figures.get(f"words-{i}", ""))
    return "".join(parts)


def _row(result: Any, i: int, sign: int) -> Any:
    r"""Row ``i`` of a top-k result, keeping only scores of the side's sign (a
    proponent has a positive score, an opponent a negative one)."""
    from captum_tracin_we import KMostInfluentialResults

    keep = result.influence_scores[i] * sign > 0
    return KMostInfluentialResults(
        result.indices[i][keep][None], result.influence_scores[i][keep][None]
    )


def side_columns(words: WordInfluence, i: int, k: int) -> Tuple[Tensor, Tensor]:
    r"""
    The columns of test text ``i`` that are its proponents and its opponents,
    for word influence of the pairs ``cat([top k, bottom k])``: a proponent
    has a score > 0 and an opponent a score < 0, as in ``scores.json`` (a
    training text that shares no counted word with the test text scores 0 and
    is neither).

    Returns:
        (proponents, opponents): Column indices into ``words``.
    """
    scores = words.scores[i]
    columns = torch.arange(scores.numel())
    proponents = columns[(columns < k) & (scores > 0)]
    opponents = columns[(columns >= k) & (scores < 0)]
    return proponents, opponents


def format_sides(
    words: WordInfluence,
    k: int,
    tokenizer: Any,
    label_names: Sequence[str],
    given: Optional[Sequence[bool]] = None,
) -> str:
    r"""
    The terminal table of ``explain``: each test text, its top proponents
    (scores > 0) and its top opponents (scores < 0), each with the words that
    carry the influence; a side with no such training text says so.

    Args:
        words (WordInfluence): Of the pairs ``cat([top k, bottom k], 1)``.
        k (int): Pairs per side in ``words``.
        tokenizer: A Hugging Face tokenizer.
        label_names (sequence of str): Names of the label ids.
        given (sequence of bool, optional): Per test text, whether its label
                    was given (``TEST (label x)``) or is the model's prediction
                    (``TEST (predicted x)``). Default: None (``TEST [x]``)

    Returns:
        text (str): The table, lines separated by newlines.
    """
    blocks = []
    for i in range(words.scores.shape[0]):
        header = format_word_influence_text(
            _word_row(words, i, torch.tensor([0])), tokenizer, label_names
        )
        lines = header.split("\n")[:1]  # the TEST line
        if given is not None:
            label = visible_text(label_name(words.test_labels[i], label_names))
            kind = "label" if given[i] else "predicted"
            lines[0] = lines[0].replace(f"TEST [{label}]", f"TEST ({kind} {label})", 1)
        for (title, none), columns in zip(_SIDES, side_columns(words, i, k)):
            if columns.numel():
                lines += format_word_influence_text(
                    _word_row(words, i, columns), tokenizer, label_names, title=title
                ).split("\n")[1:]
            else:
                lines += [f"  {title}:", f"    none: {none}"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


_SIDES = (  # title, and what an empty side says
    ("top proponents (score > 0)", "no training text scores above 0"),
    ("top opponents (score < 0)", "no training text scores below 0"),
)


def _word_row(
    words: WordInfluence, i: int, columns: Optional[Tensor] = None
) -> WordInfluence:
    r"""Test text ``i`` of ``words``, with only the given pair columns."""
    fields = {}
    for name in WordInfluence.__dataclass_fields__:
        value = getattr(words, name)[i : i + 1]
        if columns is not None and name not in _PER_TEST_FIELDS:
            value = value[:, columns]
        fields[name] = value
    return WordInfluence(**fields)


_PER_TEST_FIELDS = {"test_token_ids", "test_mask", "test_labels"}  # no pair axis


def _figures(explanation: Explanation, tokenizer: Any) -> Dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = {}
    k = min(10, len(explanation.train_labels))
    fig, _ = plot_method_comparison(
        explanation.scores,
        torch.tensor(explanation.train_labels),
        torch.tensor([t.label for t in explanation.tests]),
        k=k,
    )
    figures["comparison"] = _embedded(
        fig,
        "Left: the distribution of each method's scores (divided by its largest "
        f"|score|). Right: the share of the top-k proponents (k = 1..{k}) that have "
        "the test text's label, averaged over the test texts.",
    )
    plt.close(fig)
    if explanation.comparison is not None and len(explanation.scores) > 1:
        fig, _ = explanation.comparison.plot()
        k = explanation.comparison.k
        figures["cancellation"] = _embedded(
            fig,
            f"The cancellation effect: for each method, which training texts make "
            f"the top {k} of each test text (rows; blue: proponents, red: "
            "opponents), distinct training texts as columns, most often returned "
            "first. A method that returns the same training texts for every test "
            "text fills a narrow block; right: the number of distinct training "
            "texts and the share with the test text's label.",
        )
        plt.close(fig)
    for i, _ in enumerate(explanation.tests):
        if not explanation.words.scores[i, 0] > 0:
            continue  # no proponent: the top score is 0 or less
        index = int(explanation.words.train_indices[i, 0])
        fig, _ = plot_pair_contributions(
            explanation.words, i, 0, tokenizer, label_names=explanation.label_names
        )
        figures[f"words-{i}"] = _embedded(
            fig,
            f"Both sides of the pair (test text {i + 1}, training text "
            f"#{explanation.train_rows[index]}), its top TracIn-WE proponent.",
        )
        plt.close(fig)
    return figures


def _embedded(fig: Any, caption: str) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (
        f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def scores_summary(explanation: Explanation) -> Dict[str, Any]:
    r"""The content of ``scores.json``."""
    names = explanation.label_names
    tests = []
    for i, test in enumerate(explanation.tests):
        entry: Dict[str, Any] = {
            "text": test.text,
            "text_seen_by_model": test.seen_text,
            "truncated": test.truncated,
            "label": test.label,
            "label_name": _label(names, test.label),
            "given_label": test.given_label,
            "predicted": test.predicted,
            "probabilities": test.probabilities,
        }
        for method, pair in explanation.methods.items():
            for side, result, sign in zip(("proponents", "opponents"), pair, (1, -1)):
                entry[f"{method} {side}"] = [
                    _train_entry(explanation, int(j), float(s))
                    for j, s in zip(result.indices[i], result.influence_scores[i])
                    if float(s) * sign > 0
                ]
        tests.append(entry)
    summary = {
        "settings": explanation.settings,
        "label_names": names,
        "accuracy": explanation.accuracy,
        "tests": tests,
    }
    if explanation.seconds:
        summary["seconds"] = {
            phase: round(value, 4) for phase, value in explanation.seconds.items()
        }
    if explanation.comparison is not None:
        summary["method_diagnostics"] = {
            "k": explanation.comparison.k,
            "methods": explanation.comparison.rows(),
        }
    return summary


def _train_entry(explanation: Explanation, j: int, score: float) -> Dict[str, Any]:
    label = explanation.train_labels[j]
    return {
        "row": explanation.train_rows[j],
        "score": score,
        "label": label,
        "label_name": _label(explanation.label_names, label),
        "text_seen_by_model": explanation.train_texts[j],
        "truncated": explanation.train_truncated[j],
    }
