#!/usr/bin/env python3

r"""
The views of an :class:`~captum_tracin_we.InfluenceComparison`: the
cancellation figure and an HTML summary.
"""

import base64
import html
import io
from typing import Any, List, Tuple

import torch
from torch import Tensor

from captum_tracin_we._views.figure_text import LITERAL_TEXT
from captum_tracin_we._views.word_html import STYLE, WordInfluenceHTML

PROPONENT_COLOR = "#4772b3"
OPPONENT_COLOR = "#d0365b"


def incidence(indices: Tensor) -> Tensor:
    r"""
    The ``(n_test, n_distinct)`` 0/1 matrix of which training examples each
    test example's top-k list holds; columns are the distinct examples,
    most often returned first (ties by index).

    Args:
        indices (Tensor): ``(n_test, k)`` top-k training indices.
    """
    distinct, inverse = indices.unique(return_inverse=True)
    matrix = torch.zeros(indices.shape[0], distinct.numel())
    matrix.scatter_(1, inverse, 1.0)
    order = sorted(range(distinct.numel()), key=lambda c: (-matrix[:, c].sum(), c))
    return matrix[:, order]


def plot_influence_comparison(
    comparison: Any, width_per_method: float = 2.6, height: float = 4.2
) -> Tuple[Any, Any]:
    r"""
    The cancellation effect in one figure. For each method, two incidence maps
    of test texts (rows) by the distinct training examples their top-``k``
    lists hold (columns, most often returned first; blue: proponents, red:
    opponents). Methods that return the same training examples for every
    test text fill only a narrow block of full-height columns; methods whose
    lists differ per test text spread over up to ``n_test * k`` columns. Beside
    them: the number of distinct examples (top-k cardinality) and the share of
    the top-k with the test text's label. Method names are shown literally.

    Args:
        comparison (InfluenceComparison): From :func:`compare_influence`.
        width_per_method (float, optional): Inches per method. Default: 2.6
        height (float, optional): Figure height in inches. Default: 4.2

    Returns:
        (fig, axes): The figure and a ``(2, n_methods + 1)`` array of axes.
    """
    import matplotlib.pyplot as plt

    names = comparison.names
    n_methods = len(names)
    fig, axes = plt.subplots(
        2,
        n_methods + 1,
        figsize=(width_per_method * n_methods + 3.6, height),
        squeeze=False,
        gridspec_kw={"width_ratios": [1.0] * n_methods + [1.3]},
    )
    most = comparison.most_distinct
    for row, proponents in enumerate((True, False)):
        color = PROPONENT_COLOR if proponents else OPPONENT_COLOR
        lists = comparison.proponents if proponents else comparison.opponents
        for col, name in enumerate(names):
            _incidence_axis(axes[row, col], lists[name].indices, most, color)
            if row == 0:
                axes[row, col].set_title(
                    _shown_names(names)[col],
                    fontsize=9,
                    **LITERAL_TEXT,  # type: ignore[arg-type]
                )
            axes[row, col].set_ylabel(
                ("proponents" if proponents else "opponents") + "\ntest texts"
                if col == 0
                else ""
            )
        axes[row, 0].set_xlabel("")
    for col in range(n_methods):
        axes[1, col].set_xlabel("distinct training examples", fontsize=8)
    _cardinality_bars(axes[0, -1], comparison, names, most)
    _agreement_bars(axes[1, -1], comparison, names)
    fig.suptitle(
        f"Top-{comparison.k} training examples of {comparison.num_test} test texts "
        "per method",
        fontsize=11,
    )
    fig.tight_layout()
    return fig, axes


def _incidence_axis(ax: Any, indices: Tensor, most: int, color: str) -> None:
    r"""One mark per (test text, training example) listed: visible at any size."""
    matrix = incidence(indices)
    rows, cols = matrix.nonzero(as_tuple=True)
    n_test = matrix.shape[0]
    height = ax.get_window_extent().height * 72 / ax.figure.dpi  # in points
    ax.scatter(
        cols.numpy(),
        rows.numpy(),
        marker="|",
        s=max(4.0, height / max(n_test, 1)) ** 2,
        linewidths=1.0,
        color=color,
    )
    ax.set_xlim(-0.5, most - 0.5)
    ax.set_ylim(n_test - 0.5, -0.5)
    ax.axvline(matrix.shape[1] - 0.5, color="#555", lw=0.8, ls=":")
    ax.set_xticks([matrix.shape[1] - 1])  # the cardinality
    ax.set_xticklabels([str(matrix.shape[1])], fontsize=7)
    ax.set_yticks([])
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _cardinality_bars(ax: Any, comparison: Any, names: List[str], most: int) -> None:
    positions = range(len(names))
    width = 0.38
    pros = [comparison.cardinality(n, True) for n in names]
    cons = [comparison.cardinality(n, False) for n in names]
    handles = [
        ax.barh([p - width / 2 for p in positions], pros, width, color=PROPONENT_COLOR),
        ax.barh([p + width / 2 for p in positions], cons, width, color=OPPONENT_COLOR),
    ]
    ax.axvline(most, color="#555", lw=0.8, ls=":")
    ax.axvline(comparison.k, color="#555", lw=0.8, ls=":")
    ax.figure.legend(
        handles,
        ["proponents", "opponents"],
        fontsize=8,
        loc="upper right",
        ncol=2,
        frameon=False,
    )
    _method_ticks(ax, names)
    ax.set_xlabel(f"distinct examples (k={comparison.k} to {most})", fontsize=8)
    ax.set_title("top-k cardinality", fontsize=9)


def _agreement_bars(ax: Any, comparison: Any, names: List[str]) -> None:
    positions = range(len(names))
    width = 0.38
    pros = [comparison.label_agreement(n, True) for n in names]
    cons = [comparison.label_agreement(n, False) for n in names]
    if any(value is None for value in pros):
        ax.text(0.5, 0.5, "no labels", ha="center", va="center")
        ax.set_axis_off()
        return
    ax.barh([p - width / 2 for p in positions], pros, width, color=PROPONENT_COLOR)
    ax.barh([p + width / 2 for p in positions], cons, width, color=OPPONENT_COLOR)
    ax.set_xlim(0, 1)
    _method_ticks(ax, names)
    ax.set_xlabel("share with the test label", fontsize=8)
    ax.set_title("label agreement", fontsize=9)


def _method_ticks(ax: Any, names: List[str]) -> None:
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(_shown_names(names), fontsize=7)
    for label in ax.get_yticklabels():
        label.update(LITERAL_TEXT)
    ax.invert_yaxis()


def _shown_names(names: List[str]) -> List[str]:
    r"""Names cut to fit; cut names that would look alike are numbered."""
    short = [_short(n) for n in names]
    return [f"{s} ({i + 1})" if short.count(s) > 1 else s for i, s in enumerate(short)]


def _short(name: str, width: int = 34) -> str:
    return name if len(name) <= width else name[: width - 3] + "..."


def comparison_html(comparison: Any, figure: bool = True) -> Any:
    r"""The diagnostics, the overlaps and the figure as HTML (names escaped)."""
    most = comparison.most_distinct
    header = "".join(
        f"<th>{h}</th>"
        for h in (
            "Method",
            "Seconds",
            "Distinct proponents",
            "Distinct opponents",
            "Proponent label agreement",
            "Opponent label agreement",
        )
    )
    rows = [f"{STYLE}<table class='tw-table tw-comparison'><tr>{header}</tr>"]
    for row in comparison.rows():
        rows.append(
            "<tr>"
            f"<td><bdi>{html.escape(row['method'])}</bdi></td>"
            f"<td>{format_seconds(row['seconds'])}</td>"
            f"<td>{row['proponent_cardinality']} / {most}</td>"
            f"<td>{row['opponent_cardinality']} / {most}</td>"
            f"<td>{format_share(row['proponent_label_agreement'])}</td>"
            f"<td>{format_share(row['opponent_label_agreement'])}</td></tr>"
        )
    rows.append("</table>")
    pros, cons = comparison.overlaps(True), comparison.overlaps(False)
    if pros:
        rows.append(
            f"<p>Top-{comparison.k} overlap between methods "
            "(proponents, opponents):</p><ul>"
        )
        for (a, b), value in pros.items():
            rows.append(
                f"<li><bdi>{html.escape(a)}</bdi> ~ <bdi>{html.escape(b)}</bdi>: "
                f"{value:.0%}, {cons[(a, b)]:.0%}</li>"
            )
        rows.append("</ul>")
    if figure:
        rows.append(_figure_html(comparison))
    return WordInfluenceHTML("".join(rows))


def _figure_html(comparison: Any) -> str:
    import matplotlib.pyplot as plt

    fig, _ = plot_influence_comparison(comparison)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (
        "<figure><img alt='cancellation figure' style='max-width:100%' "
        f"src='data:image/png;base64,{data}'></figure>"
    )


def format_seconds(value: Any) -> str:
    r"""Seconds with two decimals, or ``"given"`` for scores given as a tensor."""
    return "given" if value is None else f"{value:.2f}"


def format_share(value: Any) -> str:
    r"""A share as a percentage, or ``"n/a"`` without labels."""
    return "n/a" if value is None else f"{value:.0%}"
