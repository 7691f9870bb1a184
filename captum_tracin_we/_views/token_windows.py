#!/usr/bin/env python3

r"""
Windows of a long text for the word views: the words around its largest
contributions, so that a document of hundreds of tokens shows a few readable
passages instead of a wall of marks.
"""

from typing import List, Optional, Sequence, Tuple

GAP = "\u2026"  # the mark of left-out words


def checked_window(window: Optional[int], windows: int) -> None:
    if window is not None and (
        isinstance(window, bool) or not isinstance(window, int) or window < 1
    ):
        raise ValueError(f"`window` must be a positive int or None; got {window!r}.")
    if isinstance(windows, bool) or not isinstance(windows, int) or windows < 1:
        raise ValueError(f"`windows` must be a positive int; got {windows!r}.")


def window_spans(
    values: Sequence[float], window: Optional[int], windows: int = 3
) -> List[Tuple[int, int]]:
    r"""
    ``[start, stop)`` spans of at most ``window`` words around each of the
    ``windows`` largest ``|values|``, overlapping spans merged, in text order.

    Args:
        values (sequence of float): One contribution per word.
        window (int, optional): Words per window; None for the whole text.
        windows (int, optional): Windows at most. Default: 3

    Returns:
        spans (list of (int, int)): One span ``(0, n)`` when the text fits in
                    the windows (or ``window`` is None).
    """
    count = len(values)
    if window is None or count <= window * windows:
        return [(0, count)]
    order = sorted(range(count), key=lambda p: (-abs(values[p]), p))[:windows]
    spans = []
    for centre in sorted(order):
        start = max(0, min(centre - window // 2, count - window))
        spans.append((start, start + window))
    merged = [spans[0]]
    for start, stop in spans[1:]:
        if start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(stop, merged[-1][1]))
        else:
            merged.append((start, stop))
    return merged


def windowed(
    tokens: Sequence[str], values: Sequence[float], window: Optional[int], windows: int
) -> Tuple[List[str], List[float], List[int]]:
    r"""
    The words of the windows with :data:`GAP` marks (value 0) where words are
    left out, and the number left out at each mark (0 for words).
    """
    words: List[str] = []
    scores: List[float] = []
    skipped: List[int] = []
    cursor = 0
    for start, stop in window_spans(values, window, windows):
        if start > cursor:
            _gap(words, scores, skipped, start - cursor)
        words += list(tokens[start:stop])
        scores += [float(v) for v in values[start:stop]]
        skipped += [0] * (stop - start)
        cursor = stop
    if cursor < len(tokens):
        _gap(words, scores, skipped, len(tokens) - cursor)
    return words, scores, skipped


def _gap(words: List[str], scores: List[float], skipped: List[int], n: int) -> None:
    words.append(GAP)
    scores.append(0.0)
    skipped.append(n)
