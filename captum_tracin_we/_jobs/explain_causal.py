#!/usr/bin/env python3

r"""
``captum-tracin-we explain --prompt ... --completion ...``: which training
documents of a causal language model's Trainer run taught it a continuation,
through which shared tokens, and per completion token.
"""

import html
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor

from captum_tracin_we._data.batch_labels import IGNORE_INDEX
from captum_tracin_we._data.causal_lm_data import causal_lm_batch
from captum_tracin_we._errors import TracInWEError
from captum_tracin_we._files.atomic_files import check_output_folder, write_files
from captum_tracin_we._files.data_files import read_text_data
from captum_tracin_we._files.model_folder import load_model_folder, model_token_limit
from captum_tracin_we._gradients.token_frequency import frequent_token_ids
from captum_tracin_we._method.tracin_causal_lm import TracInWECausalLM
from captum_tracin_we._views.text_view import format_word_influence_text
from captum_tracin_we._views.token_view import format_token_influence
from captum_tracin_we._views.word_html import visualize_word_influence

FILES = ("report.html", "scores.json")


@dataclass
class CausalExplainSettings:
    r"""Settings of ``explain`` for a causal language model."""

    model: str = ""
    train: str = ""
    prompts: List[str] = field(default_factory=list)
    completions: List[str] = field(default_factory=list)
    text_column: str = "text"
    max_length: Optional[int] = None
    top_k: int = 5
    top_k_words: Optional[int] = None
    idf_power: Optional[float] = None
    normalize: Optional[str] = None
    exclude_special_tokens: bool = False
    exclude_frequent: int = 0
    batch_size: int = 32
    window: int = 15
    out: str = "tracin_we_explain"
    show_progress: bool = True


def run_explain_causal(settings: CausalExplainSettings) -> Dict[str, Any]:
    r"""
    Scores the training documents for each prompt's completion and writes
    ``report.html`` (top proponents and opponents with their shared tokens,
    windowed, each completion token's probability under the final model and
    per-token scores) and ``scores.json`` into ``settings.out``; prints the
    text report.

    Returns:
        summary (dict): What ``scores.json`` holds.

    Raises:
        TracInWEError: For bad input (checked before the model loads where
                    the model is not needed: prompts and completions, the
                    output folder), then for the data and the model.
    """
    started = time.perf_counter()
    if not settings.prompts:
        raise ValueError("Give a --prompt and its --completion (both repeatable).")
    if len(settings.prompts) != len(settings.completions):
        raise ValueError(
            f"{len(settings.prompts)} --prompt but {len(settings.completions)} "
            "--completion; give one completion per prompt, in the same order."
        )
    empty = [i for i, text in enumerate(settings.completions) if not text.strip()]
    if empty:
        raise ValueError(
            f"Completion {empty[0]} is empty; there is no token to explain. Give "
            "each --prompt the --completion whose tokens should be traced back."
        )
    if settings.top_k < 1:
        raise ValueError(f"--top-k must be at least 1; got {settings.top_k}.")
    check_output_folder(settings.out, FILES, "--out")
    data = read_text_data(
        settings.train, settings.text_column, None, require_labels=False
    )
    folder = load_model_folder(settings.model, settings.show_progress, causal_lm=True)
    tokenizer = folder.tokenizer
    length = settings.max_length or model_token_limit(folder.model, tokenizer)
    test = causal_lm_batch(
        tokenizer, settings.prompts, settings.completions, max_length=length
    )
    train = causal_lm_batch(tokenizer, data.texts, max_length=length)
    rows = [{key: value[i] for key, value in train.items()} for i in range(len(data))]
    excluded = _excluded_ids(settings, tokenizer, train)
    _check_counted(test, excluded)
    probabilities = completion_probabilities(folder.model, test)  # final weights
    tracin = TracInWECausalLM(
        folder.model,
        rows,
        folder.checkpoints,
        folder.load_func,
        batch_size=settings.batch_size,
        top_k_words=settings.top_k_words,
        exclude_token_ids=excluded,
        idf_power=settings.idf_power,
        normalize=settings.normalize,
    )
    scores = tracin.influence(test, show_progress=settings.show_progress)
    k = min(settings.top_k, scores.shape[1])
    top = scores.topk(k, dim=1)
    bottom = (-scores).topk(k, dim=1)
    chosen = torch.cat([top.indices, bottom.indices], dim=1)
    words = tracin.word_influence(test, chosen)
    tokens = tracin.token_influence(test)
    heads = [f"{d[:40]}" for d in data.texts]
    token_text = format_token_influence(tokens, tokenizer, k=3, train_names=heads)
    text = format_word_influence_text(
        words, tokenizer, title=f"top {k} proponents, then top {k} opponents"
    )
    said = _probability_text(tokens, probabilities, tokenizer, folder.description)
    token_text = f"{said}\n\n{token_text}"
    print(text)
    print()
    print(token_text)
    view = visualize_word_influence(words, tokenizer, window=settings.window)
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>TracIn-WE: "
        "causal LM</title></head><body><h1>Which training documents taught "
        f"these continuations</h1><p>{html.escape(folder.description)}; "
        f"{len(data)} training documents from {html.escape(data.source)}.</p>"
        f"<h2>Top {k} proponents, then top {k} opponents, with their shared "
        f"tokens</h2>{view}<h2>Per completion token</h2><pre>"
        f"{html.escape(token_text)}</pre></body></html>"
    )
    summary = {
        "model": folder.description,
        "train": data.source,
        "prompts": settings.prompts,
        "completions": settings.completions,
        "proponents": _ranked(top.indices, top.values),
        "opponents": _ranked(bottom.indices, -bottom.values),
        "token_scores": {
            "example": tokens.example.tolist(),
            "position": tokens.position.tolist(),
            "token_ids": tokens.token_ids.tolist(),
            "probability": [
                float(probabilities[e, p])
                for e, p in zip(tokens.example.tolist(), tokens.position.tolist())
            ],
            "top_document": tokens.scores.argmax(1).tolist(),
        },
        "settings": {
            "top_k_words": settings.top_k_words,
            "idf_power": settings.idf_power,
            "normalize": settings.normalize,
            "excluded_token_ids": tracin.exclude_token_ids.tolist(),
        },
        "seconds": time.perf_counter() - started,
    }
    out = settings.out
    os.makedirs(out, exist_ok=True)
    write_files(
        {
            os.path.join(out, "report.html"): page,
            os.path.join(out, "scores.json"): json.dumps(summary, indent=1),
        }
    )
    print(f"\nWrote {os.path.join(out, 'report.html')} and scores.json")
    return summary


def _ranked(indices: torch.Tensor, values: torch.Tensor) -> List[List[Dict]]:
    return [
        [{"index": int(i), "score": float(v)} for i, v in zip(row_i, row_v)]
        for row_i, row_v in zip(indices.tolist(), values.tolist())
    ]


def completion_probabilities(model: torch.nn.Module, test: Dict[str, Any]) -> Tensor:
    r"""
    The probability the model gives each predicted token of a test batch.

    Args:
        model (torch.nn.Module): The causal LM, with the weights to report.
        test (dict): A :func:`causal_lm_batch` batch.

    Returns:
        probabilities (Tensor): ``(B, L)`` float32, at each position ``t``
                    with a label the probability of ``labels[:, t]`` from the
                    logits at ``t - 1``; 0 where nothing is predicted.
    """
    inputs = {k: v for k, v in test.items() if k != "labels"}
    with torch.no_grad():
        logits = model(**inputs).logits.float()
    labels = test["labels"]
    chosen = labels[:, 1:].clamp(min=0).unsqueeze(-1)
    shifted = logits[:, :-1].softmax(-1).gather(-1, chosen).squeeze(-1)
    probabilities = torch.zeros(labels.shape, dtype=torch.float32)
    probabilities[:, 1:] = shifted * (labels[:, 1:] != IGNORE_INDEX)
    return probabilities


def _probability_text(tokens, probabilities: Tensor, tokenizer, model: str) -> str:
    lines = [f"Probability of each completion token ({model}):"]
    for e in sorted(set(tokens.example.tolist())):
        mine = (tokens.example == e).nonzero().flatten().tolist()
        said = ", ".join(
            f"{tokenizer.decode([int(tokens.token_ids[r])]).strip()!r} "
            f"{float(probabilities[e, int(tokens.position[r])]):.3f}"
            for r in mine
        )
        lines.append(f"  completion {e}: {said}")
    return "\n".join(lines)


def _excluded_ids(
    settings: CausalExplainSettings, tokenizer: Any, train: Dict[str, Tensor]
) -> List[int]:
    excluded = set()
    if settings.exclude_special_tokens:
        excluded |= set(tokenizer.all_special_ids)
    if settings.exclude_frequent:
        real = train["attention_mask"].bool()
        ids = [row[mask] for row, mask in zip(train["input_ids"], real)]
        excluded |= set(frequent_token_ids(ids, settings.exclude_frequent))
    return sorted(excluded)


def _check_counted(test: Dict[str, Tensor], excluded: List[int]) -> None:
    r"""Refuses a test whose every token is excluded: its scores would all be
    0, a ranking of nothing."""
    gone = torch.tensor(excluded, dtype=torch.long)
    for i, (ids, mask) in enumerate(zip(test["input_ids"], test["attention_mask"])):
        real = ids[mask.bool()]
        if bool(torch.isin(real, gone).all()):
            raise TracInWEError(
                f"Every token of prompt {i} and its completion is excluded "
                f"({len(excluded)} token ids excluded), so no training document "
                "can share one and every score would be 0. Lower "
                "--exclude-frequent or drop --exclude-special-tokens."
            )
