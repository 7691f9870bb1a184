#!/usr/bin/env python3

r"""Word-level influence as terminal text; the label and escaping rules of all views."""

import textwrap
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from captum_tracin_we._scoring.word_contributions import (
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
        label = visible_text(label_name(word_influence.test_labels[i], label_names))
        text = visible_text(plain_text(word_influence, i, 0, tokenizer, "test"))
        lines.append(f"TEST [{label}] {text}")
        lines.append(f"  {visible_text(title)}:")
        for j in range(m):
            score = float(word_influence.scores[i, j])
            index = int(word_influence.train_indices[i, j])
            train_label = visible_text(
                label_name(word_influence.train_labels[i, j], label_names)
            )
            text = visible_text(plain_text(word_influence, i, j, tokenizer, "train"))
            words = ", ".join(
                f"{visible_text(word)} {value:+.3g}"
                for word, value in top_words(word_influence, i, j, tokenizer, k_words)
            )
            prefix = f"    {score:+10.4g}  #{index:<6d}[{train_label}] "
            room = max(20, width - len(prefix))
            lines.append(
                prefix + textwrap.shorten(text, width=room, placeholder=" ...")
            )
            lines.append(f"{'':16}words: {words or '(no shared words)'}")
    return "\n".join(lines)


def label_name(value: Any, names: Optional[LabelNames]) -> str:
    r"""The name of label id ``value`` as a string, or the id if it has none;
    ``"text"`` for a language model's labels (the text's own tokens)."""
    if getattr(value, "numel", lambda: 1)() > 1:
        return "text"
    index = int(value)
    if isinstance(names, Mapping):  # ids as ints, or as strings (JSON configs)
        name = names.get(index, names.get(str(index), index))
    elif names is not None and 0 <= index < len(names):
        name = names[index]
    else:
        name = index
    return str(name)


def visible_text(text: Any) -> str:
    r"""``str(text)`` with control and bidi characters as visible escapes."""
    return str(text).translate(_TERMINAL_ESCAPES)


def plain_text(
    result: WordInfluence, i: int, j: int, tokenizer: TokenDecoder, side: str
) -> str:
    tokens, values = pair_tokens(result, i, j, tokenizer, side)
    words, _ = merge_subwords(tokens, values, tokenizer)
    return " ".join(
        w for w in words if not (w.startswith(("[", "<")) and w.endswith(("]", ">")))
    )
