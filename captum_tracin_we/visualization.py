#!/usr/bin/env python3

r"""Views of word-level TracIn-WE influence: HTML in Captum's colours, and text."""

import html
import textwrap
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from captum_tracin_we._utils.attribution_views import (  # noqa: F401 (public)
    plot_attributions_side_by_side,
    summed_test_contributions,
    to_visualization_records,
    visualize_attributions_side_by_side,
)
from captum_tracin_we._utils.comparison_views import (  # noqa: F401 (public)
    comparison_html,
    plot_influence_comparison,
)
from captum_tracin_we._utils.word_contributions import (
    TokenDecoder,
    WordInfluence,
    merge_subwords,
    pair_tokens,
    top_words,
)

LabelNames = Union[Sequence[Any], Mapping[int, Any]]

# Unicode's Bidi_Control characters: embeddings, overrides, isolates and marks.
_BIDI_CONTROLS = (
    0x061C,
    0x200E,
    0x200F,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
)
# C0 controls, DEL, C1 controls and the bidi controls, each to a visible escape.
_TERMINAL_ESCAPES: Dict[int, str] = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in (*range(0x20), *range(0x7F, 0xA0), *_BIDI_CONTROLS)
}
# Text properties that show a matplotlib string as is: no mathtext, no TeX.
_LITERAL_TEXT: Dict[str, Any] = {"parse_math": False, "usetex": False}


def format_word_influence_text(
    word_influence: WordInfluence,
    tokenizer: TokenDecoder,
    label_names: Optional[LabelNames] = None,
    k_words: int = 3,
    title: str = "influential training examples",
    width: int = 120,
) -> str:
    r"""
    Renders a :class:`WordInfluence` as plain text: each test text, then its
    training texts with label, score and the words that carry the influence.
    Training text is untrusted, so control characters (C0, DEL, C1) and bidi
    controls (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069) in tokens,
    label names and the title are printed as visible escapes such as ``\x1b``
    or ``\u202e``: no token can drive the terminal or reverse the text after it.

    Args:
        word_influence (WordInfluence): From :meth:`TracInWE.word_influence`.
        tokenizer: A Hugging Face tokenizer or a callable from ids to strings.
        label_names (sequence or mapping, optional): Names of the label ids, by
                    position or as a mapping from id; any value is shown with
                    ``str()``, and ids without a name as the id.
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
        label = _visible(_label(word_influence.test_labels[i], label_names))
        text = _visible(_text(word_influence, i, 0, tokenizer, "test"))
        lines.append(f"TEST [{label}] {text}")
        lines.append(f"  {_visible(title)}:")
        for j in range(m):
            score = float(word_influence.scores[i, j])
            index = int(word_influence.train_indices[i, j])
            train_label = _visible(
                _label(word_influence.train_labels[i, j], label_names)
            )
            text = _visible(_text(word_influence, i, j, tokenizer, "train"))
            words = ", ".join(
                f"{_visible(word)} {value:+.3g}"
                for word, value in top_words(word_influence, i, j, tokenizer, k_words)
            )
            prefix = f"    {score:+10.4g}  #{index:<6d}[{train_label}] "
            room = max(20, width - len(prefix))
            lines.append(
                prefix + textwrap.shorten(text, width=room, placeholder=" ...")
            )
            lines.append(f"{'':16}words: {words or '(no shared words)'}")
    return "\n".join(lines)


def _label(value: Any, names: Optional[LabelNames]) -> str:
    r"""The name of label id ``value`` as a string, or the id if it has none."""
    index = int(value)
    if isinstance(names, Mapping):  # ids as ints, or as strings (JSON configs)
        name = names.get(index, names.get(str(index), index))
    elif names is not None and 0 <= index < len(names):
        name = names[index]
    else:
        name = index
    return str(name)


def _visible(text: Any) -> str:
    r"""``str(text)`` with control and bidi characters as visible escapes."""
    return str(text).translate(_TERMINAL_ESCAPES)


def _text(
    result: WordInfluence, i: int, j: int, tokenizer: TokenDecoder, side: str
) -> str:
    tokens, values = pair_tokens(result, i, j, tokenizer, side)
    words, _ = merge_subwords(tokens, values, tokenizer)
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
    label_names: Optional[LabelNames] = None,
    merge: bool = True,
    legend: bool = True,
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
    rows = [f"{STYLE}<table class='tw-table'><tr>{header}</tr>"]
    n_test, m = word_influence.scores.shape
    for i in range(n_test):
        test_label = _escaped_label(word_influence.test_labels[i], label_names)
        summed = _summed_test_view(word_influence, i)
        tokens, values = pair_tokens(summed, 0, 0, tokenizer, "test")
        rows.append(
            f"<tr><td><b>{test_label}</b></td><td>test</td><td></td>"
            f"<td>{float(word_influence.scores[i].sum()):.4g}</td>"
            f"{_word_cells(tokens, values, merge, tokenizer)}</tr>"
        )
        for j in range(m):
            tokens, values = pair_tokens(word_influence, i, j, tokenizer, "train")
            train_label = _escaped_label(word_influence.train_labels[i, j], label_names)
            rows.append(
                f"<tr><td></td><td>{train_label}</td>"
                f"<td>{int(word_influence.train_indices[i, j])}</td>"
                f"<td>{float(word_influence.scores[i, j]):+.4g}</td>"
                f"{_word_cells(tokens, values, merge, tokenizer)}</tr>"
            )
    rows.append("</table>")
    if legend:
        rows.append(_legend())
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
    "</style>"
)


def word_color(value: float) -> str:
    r"""Captum's word colour for a value in [-1, 1]: white to green or red."""
    value = max(-1.0, min(1.0, float(value)))
    if value > 0:
        return f"hsl(120, 75%, {100 - int(50 * value)}%)"
    return f"hsl(0, 75%, {100 - int(-40 * value)}%)"


def _word_rgb(value: float) -> Tuple[float, float, float]:
    r""":func:`word_color` as an RGB triple for matplotlib."""
    import colorsys

    value = max(-1.0, min(1.0, float(value)))
    hue, lightness = (
        (120, 100 - int(50 * value)) if value > 0 else (0, 100 - int(-40 * value))
    )
    return colorsys.hls_to_rgb(hue / 360, lightness / 100, 0.75)


def _word_cells(
    tokens: List[str], values: List[float], merge: bool, tokenizer: Any = None
) -> str:
    if merge:
        tokens, values = merge_subwords(tokens, values, tokenizer)
    scale = max((abs(v) for v in values), default=0.0) or 1.0
    marks = " ".join(
        f'<mark class="tw-word" style="background-color:{word_color(v / scale)}" '
        f'title="{v:+.3g}">{_isolated(token)}</mark>'
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


def _escaped_label(value: Any, names: Optional[LabelNames]) -> str:
    r"""The name of label id ``value``, HTML-escaped in its own ``<bdi>``."""
    return _isolated(_label(value, names))


def _isolated(text: Any, bold: bool = False) -> str:
    r"""
    Untrusted ``text`` as HTML: escaped, optionally bold, inside a ``<bdi>``
    element so that its direction cannot leak into the text around it.
    """
    escaped = html.escape(str(text))
    return f"<bdi><b>{escaped}</b></bdi>" if bold else f"<bdi>{escaped}</bdi>"


def _legend() -> str:
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
) -> WordInfluenceHTML:
    r"""
    For each test text, the top proponents and opponents of several methods in
    columns side by side (for example TracIn-WE and last-layer
    ``TracInCPFast``), with each training text's label, index and score. A
    training label equal to the test label is marked green, another red; words
    the training text shares with the test text are in bold. All text is
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

    Returns:
        view (WordInfluenceHTML): The HTML table.
    """
    names = list(methods)
    header = "".join(f"<th>{_isolated(name)}</th>" for name in names)
    parts = [f"{STYLE}<table class='tw-table tw-side'>"]
    for i, text in enumerate(test_texts):
        label = int(test_labels[i])
        parts.append(
            f"<tr><td colspan='{len(names)}' class='tw-test'><b>Test "
            f"[{_escaped_label(label, label_names)}]</b> {_isolated_words(text)}"
            "</td></tr>"
            f"<tr>{header}</tr><tr>"
        )
        test_words = set(text.lower().split())
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


def _isolated_words(text: str, bold_words: Iterable[str] = ()) -> str:
    r"""
    The words of ``text``, each HTML-escaped in its own ``<bdi>``; words whose
    lower case is in ``bold_words`` are bold.
    """
    bold_words = set(bold_words)
    return " ".join(
        _isolated(word, bold=word.lower() in bold_words) for word in text.split()
    )


def plot_word_contributions(
    word_influence: WordInfluence,
    test_index: int,
    pair_index: int,
    tokenizer: TokenDecoder,
    side: str = "train",
    method: str = "heat_map",
    merge: bool = True,
    plt_fig_axis: Optional[Tuple[Any, Any]] = None,
) -> Tuple[Any, Any]:
    r"""
    The word contributions of one (test, training) pair as a heat map in
    Captum's red-white-green colours, or as a bar chart. Tokens are drawn
    literally: the tick labels, title and annotations are neither parsed as
    mathtext (``$...$``) nor sent to TeX, even under ``text.usetex``.

    Args:
        word_influence (WordInfluence): From :meth:`TracInWE.word_influence`.
        test_index (int): Row of the test text.
        pair_index (int): Column of the training text.
        tokenizer: A Hugging Face tokenizer or a callable from ids to strings.
        side (str, optional): ``"train"`` or ``"test"``. Default: ``"train"``
        method (str, optional): ``"heat_map"`` or ``"bar"``. Default:
                    ``"heat_map"``
        merge (bool, optional): Merge sub-word pieces. Default: True
        plt_fig_axis (tuple, optional): ``(fig, ax)`` to draw into. Default: None

    Returns:
        (fig, ax): The matplotlib figure and axes.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import LinearSegmentedColormap

    tokens, values = pair_tokens(
        word_influence, test_index, pair_index, tokenizer, side
    )
    if merge:
        tokens, values = merge_subwords(tokens, values, tokenizer)
    fig, ax = plt_fig_axis or plt.subplots(figsize=(max(4, 0.6 * len(tokens)), 2.2))
    bound = max((abs(v) for v in values), default=0.0) or 1.0
    if method == "heat_map":
        cmap = LinearSegmentedColormap.from_list("RdWhGn", ["red", "white", "green"])
        image = ax.imshow([values], cmap=cmap, vmin=-bound, vmax=bound, aspect="auto")
        for x, value in enumerate(values):
            ax.text(
                x,
                0,
                f"{value:.2g}",
                ha="center",
                va="center",
                fontsize=6,
                **_LITERAL_TEXT,
            )
        ax.set_yticks([])
        fig.colorbar(image, ax=ax)
    elif method == "bar":
        colors = ["#4772b3" if v > 0 else "#d0365b" for v in values]
        ax.bar(range(len(values)), values, color=colors)
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_ylabel("contribution")
    else:
        raise ValueError(f"`method` must be 'heat_map' or 'bar'; got {method!r}.")
    ax.set_xticks(range(len(tokens)))
    ax.set_xticklabels(tokens, rotation=-30, ha="left", **_LITERAL_TEXT)
    score = float(word_influence.scores[test_index, pair_index])
    ax.set_title(f"{side} words, pair score {score:+.3g}", **_LITERAL_TEXT)
    if plt_fig_axis is None:
        fig.tight_layout()
    return fig, ax


def plot_pair_contributions(
    word_influence: WordInfluence,
    test_index: int,
    pair_index: int,
    tokenizer: TokenDecoder,
    words_per_line: int = 14,
    merge: bool = True,
    label_names: Optional[LabelNames] = None,
) -> Tuple[Any, Any]:
    r"""
    Both sides of one (test, training) pair, word by word, wrapped into lines:
    the test text above, the training text below, each word on a background
    from red (lowers the score) through white to green (raises it), on one
    colour scale for both sides. The title names the pair: test text, training
    index, labels and score. Words are drawn literally (no mathtext, no TeX).

    Args:
        word_influence (WordInfluence): From :meth:`TracInWE.word_influence`.
        test_index (int): Row of the test text.
        pair_index (int): Column of the training text.
        tokenizer: A Hugging Face tokenizer or a callable from ids to strings.
        words_per_line (int, optional): Words per line before wrapping.
                    Default: 14
        merge (bool, optional): Merge sub-word pieces. Default: True
        label_names (sequence or mapping, optional): Names of the label ids.
                    Default: None

    Returns:
        (fig, axes): The figure and its two axes (test, training).
    """
    import matplotlib.pyplot as plt

    sides = []
    for side in ("test", "train"):
        tokens, values = pair_tokens(
            word_influence, test_index, pair_index, tokenizer, side
        )
        if merge:
            tokens, values = merge_subwords(tokens, values, tokenizer)
        sides.append((tokens, values))
    bound = max((abs(v) for _, vs in sides for v in vs), default=0.0) or 1.0
    lines = [max(1, -(-len(tokens) // words_per_line)) for tokens, _ in sides]
    fig, axes = plt.subplots(
        2,
        1,
        figsize=(11, 0.9 + 0.34 * sum(lines) + 0.6),
        gridspec_kw={"height_ratios": [n + 0.8 for n in lines]},
    )
    train_index = int(word_influence.train_indices[test_index, pair_index])
    titles = (
        f"test text {test_index} "
        f"[{_label(word_influence.test_labels[test_index], label_names)}]",
        f"training example #{train_index} "
        f"[{_label(word_influence.train_labels[test_index, pair_index], label_names)}]",
    )
    for ax, (tokens, values), title, count in zip(axes, sides, titles, lines):
        _wrapped_words(ax, tokens, values, bound, words_per_line, count)
        ax.set_title(title, loc="left", fontsize=9, **_LITERAL_TEXT)
    score = float(word_influence.scores[test_index, pair_index])
    fig.suptitle(
        f"TracIn-WE word contributions of the pair (score {score:+.3g}; green "
        "raises it, red lowers it)",
        fontsize=10,
        **_LITERAL_TEXT,
    )
    fig.tight_layout()
    return fig, axes


def _wrapped_words(
    ax: Any,
    tokens: List[str],
    values: List[float],
    bound: float,
    per_line: int,
    lines: int,
) -> None:
    for position, (token, value) in enumerate(zip(tokens, values)):
        row, column = divmod(position, per_line)
        ax.text(
            column / per_line,
            1 - (row + 0.5) / lines,
            token,
            fontsize=8,
            va="center",
            ha="left",
            bbox={
                "facecolor": _word_rgb(value / bound),
                "edgecolor": "none",
                "pad": 1.5,
            },
            clip_on=True,
            **_LITERAL_TEXT,
        )
    ax.set_axis_off()


def plot_method_comparison(
    scores: Dict[str, Tensor],
    train_labels: Tensor,
    test_labels: Tensor,
    k: int = 10,
) -> Tuple[Any, Any]:
    r"""
    Compares influence methods on the same test examples: the distribution of
    their scores (each scaled by its largest ``|score|``), and the share of the
    top-``j`` proponents that have the test example's label, for ``j = 1..k``.
    Method names are shown literally in the legends: not parsed as mathtext,
    not sent to TeX, and not hidden when they start with an underscore.

    Args:
        scores (dict): Method name to its ``(n_test, n_train)`` score matrix.
        train_labels (Tensor): ``(n_train,)`` labels.
        test_labels (Tensor): ``(n_test,)`` labels.
        k (int, optional): Largest top-k. Default: 10

    Returns:
        (fig, axes): The figure and its two axes.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    ks = list(range(1, k + 1))
    bars, lines = [], []
    for name, matrix in scores.items():
        matrix = matrix.detach().cpu().float()
        scaled = (matrix / matrix.abs().max().clamp(min=1e-30)).flatten()
        bars.append(axes[0].hist(scaled.numpy(), bins=60, alpha=0.5, label=name)[2])
        top = matrix.topk(k, dim=1).indices
        same = (train_labels[top] == test_labels[:, None]).float()
        agreement = [float(same[:, :j].mean()) for j in ks]
        lines.extend(axes[1].plot(ks, agreement, marker="o", label=name))
    axes[0].set_xlabel("score / max |score|")
    axes[0].set_ylabel("pairs")
    axes[0].set_yscale("log")
    axes[0].set_title("score distributions")
    axes[1].set_xlabel("top-k proponents")
    axes[1].set_ylabel("share with the test label")
    axes[1].set_ylim(0, 1.05)
    axes[1].set_title("label agreement")
    names = [str(name) for name in scores]
    _literal_legend(axes[0], bars, names)
    _literal_legend(axes[1], lines, names)
    fig.tight_layout()
    return fig, axes


def _literal_legend(ax: Any, handles: List[Any], names: List[str]) -> None:
    r"""
    A legend on ``ax`` naming ``handles`` by ``names``, with its texts shown
    literally (no mathtext, no TeX). Explicit handles also keep names that
    start with ``_`` visible.
    """
    legend = ax.legend(handles, names)
    for text in legend.get_texts():
        text.update(_LITERAL_TEXT)
