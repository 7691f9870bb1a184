#!/usr/bin/env python3

r"""
TracIn-WE word contributions beside Captum's feature attributions: Captum
``VisualizationDataRecord``s with escaped tokens, one HTML view and one
figure.
"""

import html
from typing import Any, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from captum_tracin_we._scoring.word_contributions import (
    TokenDecoder,
    WordInfluence,
    merge_subwords,
    pair_tokens,
    token_strings,
)
from captum_tracin_we._views.figure_text import LITERAL_TEXT
from captum_tracin_we._views.text_view import label_name
from captum_tracin_we._views.word_html import (
    STYLE,
    WordInfluenceHTML,
    legend_html,
    word_cells,
)

# Text properties that show a matplotlib string as is: no mathtext, no TeX.


def summed_test_contributions(word_influence: WordInfluence) -> Tensor:
    r"""
    ``(n_test, L)``: each test position's contribution summed over all the
    pairs of ``word_influence`` (for example the top proponents and
    opponents); row ``i`` sums to ``word_influence.scores[i].sum()``.
    """
    return word_influence.test_contributions.sum(1)


def to_visualization_records(
    word_influence: WordInfluence,
    tokenizer: TokenDecoder,
    label_names: Optional[Sequence[Any]] = None,
    side: str = "train",
    merge: bool = True,
    probabilities: Optional[Tensor] = None,
) -> List[Any]:
    r"""
    TracIn-WE word contributions as Captum ``VisualizationDataRecord``s, so
    that ``captum.attr.visualization.visualize_text`` shows them next to any
    Captum attribution. Captum's renderer does not escape text (Captum issue
    #1226), so every token and label in the records is already HTML-escaped:
    hostile training text stays inert. Escaped tokens are meant for HTML only.

    Args:
        word_influence (WordInfluence): From ``TracInWE.word_influence``.
        tokenizer: A Hugging Face tokenizer or a callable from ids to strings.
        label_names (sequence, optional): Names of the label ids.
                    Default: None (the ids)
        side (str, optional): ``"train"``: one record per (test, training)
                    pair, the training text's words; ``"test"``: one record
                    per test text, its words summed over all its pairs.
                    Default: ``"train"``
        merge (bool, optional): Merge sub-word pieces into words. Default: True
        probabilities (Tensor, optional): ``(n_test, n_classes)`` model
                    probabilities; the predicted class and its probability go
                    in the "Predicted Label" column. Default: None (the test
                    label is shown there, with probability ``nan``)

    Returns:
        records (list of VisualizationDataRecord): ``word_attributions`` are
                    scaled by the record's largest ``|contribution|`` into
                    [-1, 1] (Captum's colour range); ``attr_score`` is the
                    unscaled influence score (pair score, or the sum over the
                    pairs for ``side="test"``); ``true_class`` is the test
                    label; ``attr_class`` names the training example (index
                    and label) or ``"test words"``.
    """
    from captum.attr import visualization as captum_visualization

    if side not in ("train", "test"):
        raise ValueError(f"`side` must be 'train' or 'test'; got {side!r}.")
    records = []
    n_test, m = word_influence.scores.shape
    summed = summed_test_contributions(word_influence)
    for i in range(n_test):
        true_class = _escaped(_name(word_influence.test_labels[i], label_names))
        predicted, probability = _prediction(i, probabilities, label_names, true_class)
        pairs = range(m) if side == "train" else [None]
        for j in pairs:
            if j is None:
                ids = word_influence.test_token_ids[i][word_influence.test_mask[i]]
                values = summed[i][word_influence.test_mask[i]].tolist()
                tokens = token_strings(ids.tolist(), tokenizer)
                score = float(word_influence.scores[i].sum())
                attr_class = "test words"
            else:
                tokens, values = pair_tokens(word_influence, i, j, tokenizer, "train")
                score = float(word_influence.scores[i, j])
                index = int(word_influence.train_indices[i, j])
                name = _name(word_influence.train_labels[i, j], label_names)
                attr_class = _escaped(f"train #{index} ({name})")
            if merge:
                tokens, values = merge_subwords(
                    tokens, values, tokenizer, name_pieces=True
                )
            scale = max((abs(v) for v in values), default=0.0) or 1.0
            records.append(
                captum_visualization.VisualizationDataRecord(
                    torch.tensor(values) / scale,
                    probability,
                    predicted,
                    true_class,
                    attr_class,
                    score,
                    [html.escape(token) for token in tokens],
                    0.0,
                )
            )
    return records


def visualize_attributions_side_by_side(
    word_influence: WordInfluence,
    attributions: Tensor,
    tokenizer: TokenDecoder,
    label_names: Optional[Sequence[Any]] = None,
    attribution_name: str = "Integrated gradients",
    merge: bool = True,
) -> Any:
    r"""
    For each test text, one HTML block: its words coloured by a Captum
    feature attribution (which words drive the prediction), the same words
    coloured by TracIn-WE's test-side contributions summed over the listed
    training examples (which words carry the training influence), and those
    training examples with their own word contributions. Every token and
    label is escaped and isolated in ``<bdi>``.

    Args:
        word_influence (WordInfluence): From ``TracInWE.word_influence``, for
                    example on the top proponents and opponents together.
        attributions (Tensor): ``(n_test, L)`` token attributions aligned with
                    ``word_influence.test_token_ids`` (from
                    :func:`~captum_tracin_we.embedding_attributions`).
        tokenizer: A Hugging Face tokenizer or a callable from ids to strings.
        label_names (sequence, optional): Names of the label ids.
        attribution_name (str, optional): Row title of the attribution.
                    Default: ``"Integrated gradients"``
        merge (bool, optional): Merge sub-word pieces. Default: True

    Returns:
        view (WordInfluenceHTML): ``str()``, ``_repr_html_`` and ``.save(path)``.
    """
    _check_aligned(word_influence, attributions)
    summed = summed_test_contributions(word_influence)
    parts = [STYLE, "<table class='tw-table'>"]
    for i in range(word_influence.scores.shape[0]):
        mask = word_influence.test_mask[i]
        tokens = token_strings(
            word_influence.test_token_ids[i][mask].tolist(), tokenizer
        )
        label = _escaped(_name(word_influence.test_labels[i], label_names))
        parts.append(
            f"<tr class='tw-test'><td colspan='3'><b>Test text {i + 1}</b> "
            f"(label <bdi>{label}</bdi>)</td></tr>"
        )
        for title, values in (
            (attribution_name, attributions[i][mask].tolist()),
            ("TracIn-WE, test side", summed[i][mask].tolist()),
        ):
            parts.append(
                f"<tr><td><bdi>{_escaped(title)}</bdi></td><td></td>"
                f"{word_cells(tokens, values, merge, tokenizer)}</tr>"
            )
        for j in range(word_influence.scores.shape[1]):
            train_tokens, values = pair_tokens(word_influence, i, j, tokenizer, "train")
            name = _escaped(_name(word_influence.train_labels[i, j], label_names))
            parts.append(
                f"<tr><td>train #{int(word_influence.train_indices[i, j])} "
                f"(<bdi>{name}</bdi>)</td>"
                f"<td>{float(word_influence.scores[i, j]):+.4g}</td>"
                f"{word_cells(train_tokens, values, merge, tokenizer)}</tr>"
            )
    parts.append("</table>")
    parts.append(legend_html())
    return WordInfluenceHTML("".join(parts))


def plot_attributions_side_by_side(
    word_influence: WordInfluence,
    attributions: Tensor,
    tokenizer: TokenDecoder,
    test_index: int = 0,
    attribution_name: str = "Integrated gradients",
    merge: bool = True,
    exclude_token_ids: Iterable[int] = (),
) -> Tuple[Any, Any]:
    r"""
    One test text's words as grouped bars: the feature attribution and
    TracIn-WE's test-side contributions, each divided by its largest
    ``|value|``, with their Spearman rank correlation (over the token
    positions) in the title. Tokens are drawn literally (no mathtext, no
    TeX). The arguments it shares with
    :func:`visualize_attributions_side_by_side` mean the same here.

    Args:
        test_index (int, optional): Which test text. Default: 0
        exclude_token_ids (iterable of int, optional): Tokens left out of the
                    rank correlation, for example ``tokenizer.all_special_ids``
                    (integrated gradients gives kept baseline tokens 0).
                    Default: () (all real tokens)

    Returns:
        (fig, ax): The matplotlib figure and axes.
    """
    import matplotlib.pyplot as plt

    from captum_tracin_we._scoring.metrics import token_rank_correlation

    _check_aligned(word_influence, attributions)
    mask = word_influence.test_mask[test_index]
    tokens = token_strings(
        word_influence.test_token_ids[test_index][mask].tolist(), tokenizer
    )
    summed = summed_test_contributions(word_influence)[test_index][mask].tolist()
    attributed = attributions[test_index][mask].tolist()
    ids = word_influence.test_token_ids[test_index]
    compared = mask & ~torch.isin(ids, torch.tensor(list(exclude_token_ids)).long())
    rho = float(
        token_rank_correlation(
            attributions[test_index : test_index + 1],
            summed_test_contributions(word_influence)[test_index : test_index + 1],
            compared[None],
        )[0]
    )
    if merge:
        words, summed = merge_subwords(tokens, summed, tokenizer)
        _, attributed = merge_subwords(tokens, attributed)
    else:
        words = tokens
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(words) + 2), 3.4))
    positions = torch.arange(len(words)).float()
    for offset, values, color, name in (
        (-0.2, attributed, "#4772b3", attribution_name),
        (0.2, summed, "#2a9d55", "TracIn-WE, test side"),
    ):
        scale = max((abs(v) for v in values), default=0.0) or 1.0
        ax.bar(
            (positions + offset).numpy(),
            [v / scale for v in values],
            0.4,
            color=color,
            label=name,
        )
    ax.axhline(0, color="#333", lw=0.6)
    ax.set_xticks(positions.numpy())
    ax.set_xticklabels(words, rotation=-40, ha="left", fontsize=8)
    for label in ax.get_xticklabels():
        label.update(LITERAL_TEXT)
    ax.set_ylabel("value / max |value|")
    shown = "n/a (fewer than two varying tokens)" if rho != rho else f"{rho:+.2f}"
    ax.set_title(f"Test text {test_index + 1}: Spearman rank correlation {shown}")
    legend = ax.legend(fontsize=8)
    for text in legend.get_texts():
        text.update(LITERAL_TEXT)
    fig.tight_layout()
    return fig, ax


def _check_aligned(word_influence: WordInfluence, attributions: Tensor) -> None:
    expected = tuple(word_influence.test_token_ids.shape)
    if tuple(attributions.shape) != expected:
        raise ValueError(
            f"`attributions` has shape {tuple(attributions.shape)}, but the test "
            f"texts are {expected}; compute both on the same test inputs."
        )


def _prediction(
    i: int, probabilities: Optional[Tensor], names: Any, true_class: str
) -> Tuple[str, float]:
    if probabilities is None:
        return true_class, float("nan")
    row = probabilities[i]
    predicted = int(row.argmax())
    return _escaped(_name(predicted, names)), float(row[predicted])


def _name(value: Any, names: Optional[Sequence[Any]]) -> str:
    return label_name(value, names)


def _escaped(text: Any) -> str:
    return html.escape(str(text))
