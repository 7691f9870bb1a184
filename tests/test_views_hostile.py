#!/usr/bin/env python3

r"""
The views on hostile training text: mathtext and TeX markup, integer label
names, terminal control sequences and bidi overrides are all shown literally.
"""

import io
from html.parser import HTMLParser
from typing import Any, Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from captum_tracin_we._scoring.word_contributions import WordInfluence  # noqa: E402
from captum_tracin_we.visualization import (  # noqa: E402
    format_word_influence_text,
    plot_method_comparison,
    plot_word_contributions,
    visualize_side_by_side,
    visualize_word_influence,
)

MATH_ERROR = "$\\foo$"
MATH = "$x^2$"
RLO = "\u202eevil"
SCRIPT = "<script>alert(1)</script>"
ESCAPE = "\x1b[31m"
BELL = "\x07bell"
HOSTILE = [MATH_ERROR, MATH, RLO, SCRIPT, ESCAPE, BELL]
VOCAB: Dict[int, str] = {0: "[PAD]", 1: "good", 2: "film"}
VOCAB.update({5 + n: token for n, token in enumerate(HOSTILE)})

# Unicode's controls (C0, DEL, C1) and its Bidi_Control characters.
CONTROLS = {chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]}
CONTROLS |= set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067")
CONTROLS |= set("\u2068\u2069")
BIDI = {c for c in CONTROLS if ord(c) > 0xFF}


def decode(ids: Sequence[int]) -> List[str]:
    return [VOCAB[i] for i in ids]


def hostile_influence() -> WordInfluence:
    r"""One test text and two training texts full of hostile tokens."""
    test_ids = torch.tensor([[1, 5, 6, 7, 8, 9, 10]])
    train_ids = torch.tensor([[[2, 5, 6, 7, 8, 9, 10], [1, 2, 6, 8, 0, 0, 0]]])
    train_mask = train_ids != 0
    test_values = torch.arange(1.0, 15.0).reshape(1, 2, 7) / 10
    train_values = torch.linspace(-0.7, 0.7, 14).reshape(1, 2, 7) * train_mask
    return WordInfluence(
        scores=train_values.sum(-1),
        train_indices=torch.tensor([[4, 9]]),
        test_token_ids=test_ids,
        train_token_ids=train_ids,
        test_contributions=test_values,
        train_contributions=train_values,
        test_mask=torch.ones(1, 7, dtype=torch.bool),
        train_mask=train_mask,
        test_labels=torch.tensor([1]),
        train_labels=torch.tensor([[0, 2]]),
    )


def render(fig: Any) -> None:
    r"""Draws ``fig`` to PNG in memory (mathtext errors surface only here)."""
    fig.savefig(io.BytesIO(), format="png")
    plt.close(fig)


# Control characters have no glyph in DejaVu Sans; matplotlib warns and draws
# them as boxes, which is all the figure needs.
@pytest.mark.filterwarnings("ignore:Glyph .* missing from font")
@pytest.mark.parametrize("method", ["heat_map", "bar"])
def test_plot_word_contributions_shows_tokens_literally(method: str) -> None:
    result = hostile_influence()
    fig, ax = plot_word_contributions(result, 0, 0, decode, method=method)
    labels = ax.get_xticklabels()
    assert [label.get_text() for label in labels] == ["film", *HOSTILE]
    texts = [*labels, ax.title, *ax.texts]
    assert all(not text.get_parse_math() for text in texts)
    render(fig)  # a `$\foo$` token used to raise at draw time


def test_plot_word_contributions_keeps_tokens_away_from_tex() -> None:
    result = hostile_influence()
    with matplotlib.rc_context({"text.usetex": True}):
        # Passing the axes skips tight_layout, which would need a LaTeX install.
        fig, ax = plot_word_contributions(
            result, 0, 1, decode, method="bar", plt_fig_axis=plt.subplots()
        )
    texts = [*ax.get_xticklabels(), ax.title, *ax.texts]
    assert [label.get_text() for label in ax.get_xticklabels()] == [
        "good",
        "film",
        MATH,
        SCRIPT,
    ]
    assert all(not text.get_usetex() for text in texts)
    plt.close(fig)


def test_plot_method_comparison_shows_method_names_literally() -> None:
    scores = torch.tensor([[0.3, -0.2, 0.1, 0.5], [0.1, 0.4, -0.3, 0.2]])
    names = [MATH_ERROR, MATH, "_private"]
    fig, axes = plot_method_comparison(
        {name: scores * (n + 1) for n, name in enumerate(names)},
        torch.tensor([0, 1, 0, 1]),
        torch.tensor([0, 1]),
        k=2,
    )
    for ax in axes:
        texts = ax.get_legend().get_texts()
        assert [text.get_text() for text in texts] == names
        assert all(not text.get_parse_math() for text in texts)
    render(fig)


def _side_by_side(
    label_names: Any,
    train_texts: Optional[List[str]] = None,
    test_text: str = "a good film",
) -> str:
    r"""``visualize_side_by_side`` markup for one test text, two methods."""
    from captum.influence._utils.common import KMostInfluentialResults

    proponents = KMostInfluentialResults(
        torch.tensor([[0, 2]]), torch.tensor([[0.5, 0.2]])
    )
    opponents = KMostInfluentialResults(torch.tensor([[1]]), torch.tensor([[-0.4]]))
    return str(
        visualize_side_by_side(
            [test_text],
            [1],
            train_texts or ["good film", "awful", "a good time"],
            [1, 0, 2],
            {RLO: (proponents, opponents), "TracInCPFast": (proponents, opponents)},
            label_names=label_names,
        )
    )


@pytest.mark.parametrize(
    "label_names", [[10, 11, 12], (10, 11, 12), {0: 10, 1: 11, 2: 12}]
)
def test_all_views_format_integer_label_names(label_names: Any) -> None:
    result = hostile_influence()
    markup = str(visualize_word_influence(result, decode, label_names))
    assert all(f"<bdi>{name}</bdi>" in markup for name in ("10", "11", "12"))
    markup = _side_by_side(label_names)
    assert "[<bdi>11</bdi>]" in markup.replace("<b>", "").replace("</b>", "")
    text = format_word_influence_text(result, decode, label_names)
    assert text.startswith("TEST [11] ")
    assert "[10]" in text and "[12]" in text


def test_sparse_label_name_mapping_falls_back_to_the_id() -> None:
    result = hostile_influence()
    text = format_word_influence_text(result, decode, {1: "pos", 7: "other"})
    assert text.startswith("TEST [pos] ")
    assert "[0]" in text and "[2]" in text


def test_terminal_view_escapes_control_and_bidi_characters() -> None:
    result = hostile_influence()
    text = format_word_influence_text(
        result,
        decode,
        ["neg\x1b]0;pwned\x07", "pos\u2066", "\x9b2J"],
        title="top \x1b[2Jproponents",
        k_words=10,
        width=400,
    )
    for line in text.split("\n"):
        assert not CONTROLS & set(line), repr(line)
    assert "TEST [pos\\u2066] " in text
    assert "[neg\\x1b]0;pwned\\x07]" in text and "[\\x9b2J]" in text
    assert "top \\x1b[2Jproponents:" in text
    for visible in ["\\x1b[31m", "\\u202eevil", "\\x07bell", MATH_ERROR, MATH]:
        assert visible in text
    words = [line for line in text.split("\n") if "words:" in line]
    assert "\\x1b[31m " in words[0] and "\\u202eevil " in words[0]


class _BdiCollector(HTMLParser):
    r"""Text inside each ``<bdi>``, and every text run with its bdi depth."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.isolated: List[str] = []
        self.runs: List[Tuple[str, int]] = []
        self._open: List[List[str]] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "bdi":
            self._open.append([])

    def handle_endtag(self, tag: str) -> None:
        if tag == "bdi":
            self.isolated.append("".join(self._open.pop()))

    def handle_data(self, data: str) -> None:
        self.runs.append((data, len(self._open)))
        for buffer in self._open:
            buffer.append(data)


def _parse(markup: str) -> _BdiCollector:
    assert "<script>" not in markup and "&lt;script&gt;" in markup
    parser = _BdiCollector()
    parser.feed(markup)
    parser.close()
    assert not parser._open, "unbalanced <bdi>"
    for data, depth in parser.runs:
        if BIDI & set(data):
            assert depth == 1, repr(data)
    return parser


def test_word_influence_html_isolates_every_untrusted_token() -> None:
    result = hostile_influence()
    markup = str(visualize_word_influence(result, decode, ["neg", RLO, SCRIPT]))
    parser = _parse(markup)
    for token in HOSTILE:
        assert token in parser.isolated
    assert {RLO, SCRIPT, "neg"} <= set(parser.isolated)
    assert markup.count("<bdi>") == markup.count("</bdi>") == len(parser.isolated)


def test_side_by_side_html_isolates_every_untrusted_word() -> None:
    train_texts = [f"good {RLO} film", f"{SCRIPT} awful", f"good {MATH_ERROR}"]
    markup = _side_by_side(
        ["neg\u202b", "pos", "\u2067x"], train_texts, test_text=f"a {RLO} good film"
    )
    parser = _parse(markup)
    for word in [RLO, SCRIPT, MATH_ERROR, "good", "film", "awful", "a"]:
        assert word in parser.isolated
    assert {"neg\u202b", "pos", "\u2067x"} <= set(parser.isolated)
    assert "<b>" in markup  # shared words are still bold, inside their isolate
