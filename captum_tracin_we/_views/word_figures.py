#!/usr/bin/env python3

r"""Figures of word influence: word contributions, one pair, methods side by side."""

from typing import Any, Dict, List, Optional, Tuple

from torch import Tensor

from captum_tracin_we._scoring.word_contributions import (
    TokenDecoder,
    WordInfluence,
    merge_subwords,
    pair_tokens,
)
from captum_tracin_we._views.figure_text import LITERAL_TEXT
from captum_tracin_we._views.text_view import LabelNames, label_name
from captum_tracin_we._views.token_windows import GAP, checked_window, windowed
from captum_tracin_we._views.word_html import word_rgb


def plot_word_contributions(
    word_influence: WordInfluence,
    test_index: int,
    pair_index: int,
    tokenizer: TokenDecoder,
    side: str = "train",
    method: str = "heat_map",
    merge: bool = True,
    plt_fig_axis: Optional[Tuple[Any, Any]] = None,
    window: Optional[int] = None,
    windows: int = 3,
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
        window (int, optional): For long texts: draw only windows of this many
                    words around the ``windows`` largest ``|contributions|``,
                    joined by a tick ``"... (n)"`` for the ``n`` words left out;
                    the colour scale is the whole text's. Default: None (every
                    word)
        windows (int, optional): Windows at most. Default: 3

    Returns:
        (fig, ax): The matplotlib figure and axes.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import LinearSegmentedColormap

    checked_window(window, windows)
    tokens, values = pair_tokens(
        word_influence, test_index, pair_index, tokenizer, side
    )
    if merge:
        tokens, values = merge_subwords(tokens, values, tokenizer)
    scale = max((abs(v) for v in values), default=0.0) or 1.0
    tokens, values, skipped = windowed(tokens, values, window, windows)
    tokens = [f"{GAP} ({n})" if n else token for token, n in zip(tokens, skipped)]
    fig, ax = plt_fig_axis or plt.subplots(figsize=(max(4, 0.6 * len(tokens)), 2.2))
    bound = scale
    if method == "heat_map":
        cmap = LinearSegmentedColormap.from_list("RdWhGn", ["red", "white", "green"])
        image = ax.imshow([values], cmap=cmap, vmin=-bound, vmax=bound, aspect="auto")
        for x, value in enumerate(values):
            if skipped[x]:
                continue
            ax.text(
                x,
                0,
                f"{value:.2g}",
                ha="center",
                va="center",
                fontsize=6,
                **LITERAL_TEXT,
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
    ax.set_xticklabels(tokens, rotation=-30, ha="left", **LITERAL_TEXT)
    score = float(word_influence.scores[test_index, pair_index])
    ax.set_title(f"{side} words, pair score {score:+.3g}", **LITERAL_TEXT)
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
    colour scale for both sides. The title names the pair: test text
    (numbered from 1, as in the report: row 0 is "test text 1"), training
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
    train_label = word_influence.train_labels[test_index, pair_index]
    titles = (
        f"test text {test_index + 1} "
        f"[{label_name(word_influence.test_labels[test_index], label_names)}]",
        f"training example #{train_index} [{label_name(train_label, label_names)}]",
    )
    for ax, (tokens, values), title, count in zip(axes, sides, titles, lines):
        _wrapped_words(ax, tokens, values, bound, words_per_line, count)
        ax.set_title(title, loc="left", fontsize=9, **LITERAL_TEXT)
    score = float(word_influence.scores[test_index, pair_index])
    fig.suptitle(
        f"TracIn-WE word contributions of the pair (score {score:+.3g}; green "
        "raises it, red lowers it)",
        fontsize=10,
        **LITERAL_TEXT,
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
                "facecolor": word_rgb(value / bound),
                "edgecolor": "none",
                "pad": 1.5,
            },
            clip_on=True,
            **LITERAL_TEXT,
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
    top-``j`` proponents that have the test example's label, for ``j = 1..k``
    (each method with its own hollow marker, shifted slightly along ``j``, so
    that methods that agree stay visible).
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
    markers = "osD^vP*X"
    shift = 0.06 * (len(scores) > 1)  # methods that agree stay visible side by side
    for position, (name, matrix) in enumerate(scores.items()):
        matrix = matrix.detach().cpu().float()
        scaled = (matrix / matrix.abs().max().clamp(min=1e-30)).flatten()
        bars.append(axes[0].hist(scaled.numpy(), bins=60, alpha=0.5, label=name)[2])
        top = matrix.topk(k, dim=1).indices
        same = (train_labels[top] == test_labels[:, None]).float()
        agreement = [float(same[:, :j].mean()) for j in ks]
        offset = shift * (position - (len(scores) - 1) / 2)
        lines.extend(
            axes[1].plot(
                [j + offset for j in ks],
                agreement,
                marker=markers[position % len(markers)],
                markerfacecolor="none",
                label=name,
            )
        )
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
        text.update(LITERAL_TEXT)
