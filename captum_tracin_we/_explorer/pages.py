#!/usr/bin/env python3

r"""
Standalone HTML pages of the explorer's views (its "Save as HTML"), rendered
from the same dicts the JSON API returns. Every piece of text is escaped and
isolated in its own ``<bdi>``; the pages hold no script.
"""

import html
from typing import Any, Dict, List

from captum_tracin_we._views.word_html import (
    STYLE,
    isolated_html,
    legend_html,
    word_color,
)

_PAGE_STYLE = (
    "<style>body{font-family:sans-serif;margin:1.5em;max-width:1200px}"
    ".tw-cols{display:flex;gap:2em}.tw-cols>div{flex:1}"
    ".tw-shared{font-weight:bold;text-decoration:underline}"
    ".tw-cut{color:#a00;font-style:italic}</style>"
)
_TITLES = {
    "query": "TracIn-WE explorer: influential training texts",
    "pair": "TracIn-WE explorer: word view of a pair",
    "self": "TracIn-WE explorer: words of a self-influence",
    "audit": "TracIn-WE explorer: training texts by self-influence",
}


def export_page(view: str, result: Dict[str, Any], info: Dict[str, Any]) -> str:
    r"""
    A standalone UTF-8 page of one view.

    Args:
        view (str): ``"query"``, ``"pair"``, ``"self"`` or ``"audit"``.
        result (dict): What the explorer's view returned.
        info (dict): ``Explorer.info()``.

    Returns:
        page (str): The HTML document.
    """
    body = {"query": _query, "pair": _pair, "self": _pair, "audit": _audit}[view](
        result, info
    )
    title = _TITLES[view]
    model = isolated_html(info.get("description") or "")
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>{STYLE}{_PAGE_STYLE}</head><body>"
        f"<h1>{html.escape(title)}</h1><p>Model: {model}</p>{body}</body></html>"
    )


def _query(result: Dict[str, Any], info: Dict[str, Any]) -> str:
    probabilities = ", ".join(
        f"{isolated_html(p['label'])} {p['p']:.3f}" for p in result["probabilities"]
    )
    parts = [
        f"<p><b>Text</b> {_words(result['words'])}{_cut(result['truncated'])}</p>",
        f"<p>Predicted {isolated_html(result['predicted_name'], True)} "
        f"({probabilities}); explained at label "
        f"{isolated_html(result['label_name'], True)}. "
        "Shared words are underlined.</p>",
        "<div class='tw-cols'>",
    ]
    for method in result["methods"]:
        parts.append(f"<div><h2>{isolated_html(method['name'])}</h2>")
        for side in ("proponents", "opponents"):
            parts.append(f"<h3>{side}</h3>")
            parts.extend(_entry(row, result["label"]) for row in method[side])
        parts.append("</div>")
    parts.append("</div>")
    return "".join(parts)


def _entry(row: Dict[str, Any], test_label: int) -> str:
    color = word_color(0.6 if row["label"] == test_label else -0.8)
    return (
        "<div class='tw-entry'><span class='tw-label' "
        f"style='background-color:{color}'>[{isolated_html(row['label_name'])}]</span> "
        f"<code>{row['score']:+.4g}</code> #{int(row['index'])} "
        f"{_words(row['words'])}{_cut(row['truncated'])}</div>"
    )


def _pair(result: Dict[str, Any], info: Dict[str, Any]) -> str:
    score = f"<code>{result['score']:+.4g}</code>"
    if result["kind"] == "self":
        head = (
            f"<p>Training text #{int(result['index'])}, label "
            f"{isolated_html(result['label_name'], True)}, with itself: "
            f"self-influence {score}.</p>"
        )
    else:
        head = (
            f"<p>Test text at label {isolated_html(result['label_name'], True)} and "
            f"training text #{int(result['index'])} (label "
            f"{isolated_html(result['train_label_name'], True)}): score {score}. "
            "Each side's words sum to the score.</p>"
        )
    rows = [
        ("test" if result["kind"] == "pair" else "as test", result["test_words"]),
        ("training", result["train_words"]),
    ]
    cells = "".join(
        f"<tr><td>{name}</td><td>{_marks(words)}</td></tr>" for name, words in rows
    )
    original = (
        f"<p>Original training text: {isolated_html(result['train_text'])}"
        f"{_cut(result['train_truncated'])}</p>"
    )
    return f"{head}<table class='tw-table'>{cells}</table>{legend_html()}{original}"


def _audit(result: Dict[str, Any], info: Dict[str, Any]) -> str:
    names = info["labels"]
    scope = "all labels" if result["label"] is None else names[result["label"]]
    parts = [
        f"<p>{int(result['total'])} training texts ({isolated_html(scope)}"
        f"{', prediction differs from label' if result['disagree'] else ''}), "
        "largest self-influence first.</p><table class='tw-table'><tr><th>rank</th>"
        "<th>#</th><th>label</th><th>predicted</th><th>self-influence</th>"
        "<th>text</th></tr>"
    ]
    for row in result["rows"]:
        parts.append(
            f"<tr><td>{int(row['rank'])}</td><td>{int(row['index'])}</td>"
            f"<td>{isolated_html(row['label_name'])}</td>"
            f"<td>{isolated_html(row['predicted_name'])}</td>"
            f"<td>{row['self_influence']:.4g}</td>"
            f"<td>{_words(row['words'])}{_cut(row['truncated'])}</td></tr>"
        )
    parts.append("</table>")
    return "".join(parts)


def _words(words: List[Dict[str, Any]]) -> str:
    return " ".join(
        f"<span class='tw-shared'>{isolated_html(w['w'])}</span>"
        if w.get("shared")
        else isolated_html(w["w"])
        for w in words
    )


def _marks(words: List[Dict[str, Any]]) -> str:
    return " ".join(
        f'<mark class="tw-word" style="background-color:{word_color_of(w)}" '
        f'title="{w["value"]:+.3g}">{isolated_html(w["w"])}</mark>'
        for w in words
    )


def word_color_of(word: Dict[str, Any]) -> str:
    r"""The colour the view computed, checked to be one of Captum's."""
    color = str(word["color"])
    if not color.startswith("hsl(") or any(c in color for c in "<>\"'&;"):
        return word_color(0.0)
    return color


def _cut(truncated: bool) -> str:
    return " <span class='tw-cut'>[truncated]</span>" if truncated else ""
