#!/usr/bin/env python3

r"""Figures, the side-by-side view, and the HTML report in a real browser."""

import os
import re
import subprocess

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from captum_tracin_we import TracInWE, merge_subwords  # noqa: E402
from captum_tracin_we.visualization import (  # noqa: E402
    WordInfluenceHTML,
    plot_method_comparison,
    plot_pair_contributions,
    plot_word_contributions,
    visualize_side_by_side,
    visualize_word_influence,
)
from tests.helpers import bag_setup, chromium, chromium_flags  # noqa: E402

NAMES = {i: f"w{i}" for i in range(60)}


def decode(ids):
    return [NAMES[i] for i in ids]


@pytest.fixture
def words(tmp_path):
    model, train, test, paths = bag_setup(str(tmp_path))
    tracin = TracInWE(model, train, paths)
    top = tracin.influence(test, k=3)
    return tracin, train, test, top, tracin.word_influence(test, top.indices)


def test_heat_map_and_bar_show_the_pair_contributions(words):
    *_, result = words
    mask = result.train_mask[1, 2]
    tokens, values = merge_subwords(
        decode(result.train_token_ids[1, 2][mask].tolist()),
        result.train_contributions[1, 2][mask].tolist(),
    )
    fig, ax = plot_word_contributions(result, 1, 2, decode)
    assert [t.get_text() for t in ax.get_xticklabels()] == tokens
    assert ax.images[0].get_array()[0].tolist() == pytest.approx(values)
    fig, ax = plot_word_contributions(result, 1, 2, decode, method="bar")
    assert [p.get_height() for p in ax.patches] == pytest.approx(values)
    with pytest.raises(ValueError, match="heat_map"):
        plot_word_contributions(result, 1, 2, decode, method="pie")


def test_method_comparison_plots_label_agreement(words):
    tracin, train, test, *_ = words
    scores = tracin.influence(test)
    train_labels = train.tensors[1]
    fig, axes = plot_method_comparison(
        {"TracIn-WE": scores, "negated": -scores}, train_labels, test[1], k=4
    )
    line = axes[1].get_lines()[0]
    top = scores.topk(4, dim=1).indices
    expected = (train_labels[top] == test[1][:, None]).float()[:, :2].mean()
    assert line.get_ydata()[1] == pytest.approx(float(expected))
    assert len(axes[0].patches) > 0
    fig, axes = plot_method_comparison(  # two methods that agree stay visible
        {"a": scores, "b": scores.clone()}, train_labels, test[1], k=4
    )
    first, second = axes[1].get_lines()
    assert list(first.get_ydata()) == list(second.get_ydata())
    assert first.get_marker() != second.get_marker()
    assert all(x < y for x, y in zip(first.get_xdata(), second.get_xdata()))


def test_side_by_side_marks_labels_and_shared_words_and_escapes():
    from captum.influence._utils.common import KMostInfluentialResults

    train_texts = ["a great film", "<script>x()</script> awful", "great fun"]
    results = KMostInfluentialResults(
        torch.tensor([[0, 2]]), torch.tensor([[0.5, 0.2]])
    )
    opponents = KMostInfluentialResults(torch.tensor([[1]]), torch.tensor([[-0.4]]))
    view = visualize_side_by_side(
        ["a great movie"],
        [1],
        train_texts,
        [1, 0, 1],
        {"TracIn-WE": (results, opponents), "TracInCPFast": (results, opponents)},
        label_names=["neg", "pos"],
    )
    markup = str(view)
    assert "<script>" not in markup and "&lt;script&gt;" in markup
    assert "<b>great</b>" in markup and "<b>film</b>" not in markup
    assert markup.count("hsl(120") == 4 and markup.count("hsl(0") == 2
    assert markup.count("<th>") == 2


REQUIRE_BROWSER = os.environ.get("CAPTUM_TRACIN_WE_REQUIRE_BROWSER") == "1"


@pytest.mark.skipif(
    chromium() is None and not REQUIRE_BROWSER, reason="Chromium is not installed"
)
def test_report_renders_in_chromium_and_untrusted_text_does_not_run(words, tmp_path):
    *_, result = words
    evil = dict(NAMES)
    evil[int(result.train_token_ids[0, 0, 1])] = (
        "<script>document.title='pwned'</script>"
    )
    evil[int(result.test_token_ids[0, 1])] = (
        "<img src=x onerror=\"document.title='pwned'\">"
    )
    view = visualize_word_influence(result, lambda ids: [evil[i] for i in ids])
    path = tmp_path / "report.html"
    WordInfluenceHTML(str(view)).save(str(path), title="safe report")
    flags = chromium_flags(str(tmp_path / "profile"))
    dom = subprocess.run(
        flags + ["--dump-dom", path.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert re.search(r"<title>(.*?)</title>", dom).group(1) == "safe report"
    assert "&lt;script&gt;" in dom and "<script>" not in dom
    png = tmp_path / "report.png"
    subprocess.run(
        flags + [f"--screenshot={png}", "--window-size=1200,900", path.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    from matplotlib.image import imread

    pixels = imread(str(png))[..., :3]
    not_white = (pixels < 0.95).any(axis=-1).mean()
    assert pixels.std() > 0.01 and not_white > 0.005
    green = (pixels[..., 1] > pixels[..., 0] + 0.1).mean()
    assert green > 0  # some word is marked green


def test_pair_figure_names_its_pair_shows_both_sides_and_wraps(words):
    *_, result = words
    fig, axes = plot_pair_contributions(
        result, 1, 2, decode, words_per_line=3, label_names=["a", "b", "c"]
    )
    index = int(result.train_indices[1, 2])
    titles = [ax.get_title(loc="left") for ax in axes]
    # numbered from 1, as the report numbers its test texts: row 1 is text 2
    assert titles[0].startswith("test text 2 [") and f"#{index} [" in titles[1]
    assert f"{float(result.scores[1, 2]):+.3g}" in fig._suptitle.get_text()
    for ax, side in zip(axes, ("test", "train")):
        tokens = merge_subwords(*_side_tokens(result, side))[0]
        drawn = [text.get_text() for text in ax.texts]
        assert drawn == tokens
        rows = {round(text.get_position()[1], 6) for text in ax.texts}
        assert len(rows) == -(-len(tokens) // 3)  # wrapped, 3 words a line


def _side_tokens(result, side):
    from captum_tracin_we._scoring.word_contributions import pair_tokens

    return pair_tokens(result, 1, 2, decode, side)


def test_byte_level_bpe_words_read_as_text_in_the_views():
    pytest.importorskip("tokenizers")
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    from captum_tracin_we import WordInfluence, merge_subwords
    from captum_tracin_we.visualization import (
        format_word_influence_text,
        visualize_word_influence,
    )

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["café naïve 日本語", "the movie"] * 20, vocab_size=280)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer)
    ids = tokenizer("café naïve 日本語")["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    words, values = merge_subwords(tokens, [1.0] * len(ids), tokenizer)
    assert words == ["café", "naïve", "日本語"] and sum(values) == len(ids)
    assert merge_subwords(tokens, [1.0] * len(ids))[0][0] == "cafÃ©"  # raw pieces
    n = len(ids)
    row = torch.tensor([ids])
    result = WordInfluence(
        scores=torch.ones(1, 1),
        train_indices=torch.zeros(1, 1, dtype=torch.long),
        test_token_ids=row,
        train_token_ids=row[None],
        test_contributions=torch.full((1, 1, n), 1.0 / n),
        train_contributions=torch.full((1, 1, n), 1.0 / n),
        test_mask=torch.ones(1, n, dtype=torch.bool),
        train_mask=torch.ones(1, 1, n, dtype=torch.bool),
        test_labels=torch.zeros(1, dtype=torch.long),
        train_labels=torch.zeros(1, 1, dtype=torch.long),
    )
    assert "café" in str(visualize_word_influence(result, tokenizer))
    assert "日本語" in format_word_influence_text(result, tokenizer)


def _bold_words(markup: str) -> list:
    r"""The text of every <b> element of the training entries, by structure."""
    from html.parser import HTMLParser

    class Bold(HTMLParser):
        def __init__(self):
            super().__init__()
            self.depth, self.entry, self.words = 0, 0, []

        def handle_starttag(self, tag, attrs):
            if tag == "div" and ("class", "tw-entry") in attrs:
                self.entry += 1
            self.depth += tag == "b"

        def handle_endtag(self, tag):
            self.depth -= tag == "b"
            if tag == "div" and self.entry:
                self.entry -= 1

        def handle_data(self, data):
            if self.depth and self.entry:
                self.words.append(data)

    parser = Bold()
    parser.feed(markup)
    return parser.words


def test_shared_words_are_bold_whatever_punctuation_is_attached():
    from captum.influence._utils.common import KMostInfluentialResults

    train_texts = ["mighty hard to find", "a Thriller, flawed . action!", "soft"]
    top = KMostInfluentialResults(
        torch.tensor([[0, 1, 2]]), torch.tensor([[3, 2, 1.0]])
    )
    view = visualize_side_by_side(
        ["it bites hard. a thriller. flawed action."], [1], train_texts, [1, 1, 0],
        {"TracIn-WE": (top, top)},
    )  # fmt: skip
    bold = _bold_words(str(view))
    assert sorted(set(bold)) == ["Thriller,", "a", "action!", "flawed", "hard"]
    assert "." not in bold and "soft" not in bold
