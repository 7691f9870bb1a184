#!/usr/bin/env python3

r"""The ``captum-tracin-we demo`` job: train offline, then explain test sentences."""

import json
import os
import tempfile
import time
from dataclasses import dataclass
from typing import List, Optional

from captum_tracin_we._core.tracin_we import TracInWE
from captum_tracin_we._demo.data import SENTIMENT, load_rotten_tomatoes
from captum_tracin_we._demo.models import (
    small_bert_classifier,
    train_wordpiece_tokenizer,
)
from captum_tracin_we._demo.training import accuracy, encode, fine_tune, loader
from captum_tracin_we.visualization import (
    WordInfluenceHTML,
    format_word_influence_text,
    visualize_word_influence,
)

USAGE = """\
Use it on your own model:

    from captum_tracin_we import TracInWE
    tracin = TracInWE(model, train_loader, checkpoint_paths)   # HF or tuple batches
    top = tracin.influence(test_batch, k=5)                    # proponents
    worst = tracin.influence(test_batch, k=5, proponents=False)
    scores = tracin.influence(test_batch)                      # (n_test, n_train)
"""


@dataclass
class DemoSettings:
    r"""Settings of the demo job (see ``captum-tracin-we demo --help``)."""

    train_size: int = 2000
    test_size: int = 4
    epochs: int = 3
    k: int = 3
    top_k_words: Optional[int] = None
    seed: int = 0
    out: Optional[str] = None
    show_progress: bool = True


def run_demo(settings: DemoSettings) -> List[dict]:
    r"""
    Fine-tunes a small BERT (tokenizer and weights trained from scratch, offline)
    on Rotten Tomatoes, then prints each test sentence's top proponents and
    opponents by TracIn-WE.

    Returns:
        explanations (list of dict): Per test sentence, its text, label and the
                    proponents / opponents as ``(index, score, label, text)``.
    """
    started = time.perf_counter()
    train, test = load_rotten_tomatoes(
        settings.train_size, settings.test_size, settings.seed
    )
    tokenizer = train_wordpiece_tokenizer(text for text, _ in train)
    model = small_bert_classifier(len(tokenizer), seed=settings.seed)
    train_features = encode(tokenizer, train)
    test_features = encode(tokenizer, test)
    workdir = settings.out or tempfile.mkdtemp(prefix="captum_tracin_we_demo_")
    paths = fine_tune(
        model,
        loader(tokenizer, train_features, 32, shuffle=True, seed=settings.seed),
        os.path.join(workdir, "checkpoints"),
        epochs=settings.epochs,
        show_progress=settings.show_progress,
    )
    held_out = encode(
        tokenizer, load_rotten_tomatoes(settings.train_size, 500, settings.seed)[1]
    )
    print(f"Held-out accuracy: {accuracy(model, loader(tokenizer, held_out, 64)):.3f}")
    tracin = TracInWE(
        model,
        loader(tokenizer, train_features, 64),
        paths,
        batch_size=None,
        top_k_words=settings.top_k_words,
    )
    test_batch = next(iter(loader(tokenizer, test_features, len(test_features))))
    k = settings.k
    proponents = tracin.influence(test_batch, k=k, show_progress=settings.show_progress)
    opponents = tracin.influence(test_batch, k=k, proponents=False)
    explanations = [
        {
            "text": text,
            "label": label,
            "proponents": _listing(proponents, i, train),
            "opponents": _listing(opponents, i, train),
        }
        for i, (text, label) in enumerate(test)
    ]
    views = []
    for title, results in (
        ("top proponents", proponents),
        ("top opponents", opponents),
    ):
        words = tracin.word_influence(test_batch, results.indices)
        print()
        print(format_word_influence_text(words, tokenizer, SENTIMENT, title=title))
        view = visualize_word_influence(words, tokenizer, SENTIMENT)
        views.append(f"<h2>{title}</h2>{view}")
    WordInfluenceHTML("".join(views)).save(os.path.join(workdir, "report.html"))
    with open(os.path.join(workdir, "scores.json"), "w", encoding="utf-8") as handle:
        json.dump(explanations, handle, indent=1)
    print()
    print(USAGE)
    print(
        f"Done in {time.perf_counter() - started:.0f} s; wrote report.html and "
        f"scores.json to {workdir}"
    )
    return explanations


def _listing(results, row: int, train) -> List[tuple]:
    return [
        (int(j), float(s), train[int(j)][1], train[int(j)][0])
        for j, s in zip(results.indices[row], results.influence_scores[row])
    ]
