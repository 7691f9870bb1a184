#!/usr/bin/env python3

r"""Tables and figures of evaluation results."""

from typing import Any, Dict, List, Optional, Sequence, Tuple

from captum_tracin_we._evaluation.deletion import RANDOM, DeletionResult


def format_markdown(
    rows: Sequence[Dict[str, Any]], columns: Optional[List[str]] = None
) -> str:
    r"""A list of dict rows as a Markdown table (floats with 4 significant digits)."""
    if not rows:
        return ""
    columns = columns or list(rows[0])

    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += [
        "| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows
    ]
    return "\n".join(lines)


def auc_table(result: DeletionResult) -> List[Dict[str, Any]]:
    r"""
    One row per method: AUC-DEL+ and AUC-DEL- as ``mean ± standard error``.
    Random removal does not depend on the sign, so its one AUC fills both
    columns as the noise floor.
    """
    rows = []
    for method in result.deltas:
        row: Dict[str, Any] = {"method": method}
        for metric in ("DEL+", "DEL-"):
            mean, se = result.auc(method, RANDOM if method == RANDOM else metric)
            row[f"AUC-{metric}"] = f"{mean:+.4f} ± {se:.4f}"
        rows.append(row)
    return rows


def plot_deletion_curves(result: DeletionResult) -> Tuple[Any, Any]:
    r"""
    DEL+ and DEL- against k for every method (mean over test examples, error
    bars one standard error), with the random floor in both panels.

    Returns:
        (fig, axes): The matplotlib figure and its two axes.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    for ax, metric in zip(axes, ("DEL+", "DEL-")):
        for method in result.deltas:
            key = RANDOM if method == RANDOM else metric
            mean, se = result.mean_and_se(method, key)
            style = {"linestyle": "--", "color": "gray"} if method == RANDOM else {}
            ax.errorbar(
                result.ks,
                mean.tolist(),
                yerr=se.tolist(),
                marker="o",
                capsize=3,
                label=method,
                **style,
            )
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_xlabel("k (training examples removed)")
        ax.set_title(
            f"{metric}: "
            + (
                "proponents removed (lower is better)"
                if metric == "DEL+"
                else "opponents removed (higher is better)"
            )
        )
    axes[0].set_ylabel("change of ground-truth probability")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig, axes
