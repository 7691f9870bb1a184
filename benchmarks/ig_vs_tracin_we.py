#!/usr/bin/env python3

r"""
Integrated gradients (Captum's LayerIntegratedGradients on the embedding)
against TracIn-WE's test-side word contributions, on the demo's model:
all-MiniLM-L6-v2 fine-tuned with transformers' Trainer on Rotten Tomatoes,
exactly as ``captum-tracin-we demo`` does (1,000 training sentences, one epoch,
three checkpoints).

For each held-out test sentence: IG of the log-probability of its label
(baseline: padding except [CLS]/[SEP]) and TracIn-WE's test-side
contributions summed over its top-10 proponents and top-10 opponents; the
Spearman rank correlation over the sentence's ordinary tokens ([CLS]/[SEP]
left out: IG gives them 0 by construction). Prints the distribution and the
three sentences where the two disagree most.

    python -m benchmarks.ig_vs_tracin_we --test 60
"""

import argparse
import os
import time

import torch

from benchmarks._common import conditions
from captum_tracin_we import TracInWE, embedding_attributions, top_words
from captum_tracin_we.evaluation import token_rank_correlation
from captum_tracin_we.visualization import summed_test_contributions

OUT = os.path.join(os.path.dirname(__file__), "_out", "ig_vs_tracin_we")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--test", type=int, default=60)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    print(conditions())
    model, tokenizer, run_dir, train, test, names = _prepare(args)
    from transformers import DataCollatorWithPadding

    collate = DataCollatorWithPadding(tokenizer)
    train_data = [_features(tokenizer, text, label) for text, label, _ in train]
    test_batch = dict(
        collate([_features(tokenizer, text, label) for text, label, _ in test])
    )
    loader = torch.utils.data.DataLoader(train_data, batch_size=64, collate_fn=collate)
    tracin = TracInWE(model, loader, run_dir)
    start = time.perf_counter()
    top = tracin.influence(test_batch, k=args.k)
    bottom = tracin.influence(test_batch, k=args.k, proponents=False)
    words = tracin.word_influence(
        test_batch, torch.cat([top.indices, bottom.indices], 1)
    )
    tracin_seconds = time.perf_counter() - start
    start = time.perf_counter()
    special = tokenizer.all_special_ids
    attributions, deltas = embedding_attributions(
        model,
        test_batch,
        keep_token_ids=special,
        n_steps=args.steps,
        internal_batch_size=256,
        return_convergence_delta=True,
    )
    ig_seconds = time.perf_counter() - start
    summed = summed_test_contributions(words)
    mask = words.test_mask & ~torch.isin(words.test_token_ids, torch.tensor(special))
    rho = token_rank_correlation(attributions, summed, mask)
    magnitude = token_rank_correlation(attributions.abs(), summed.abs(), mask)
    valid = ~rho.isnan()
    print(
        f"{len(test)} test sentences ({int(valid.sum())} with >= 2 tokens), "
        f"{len(train)} training sentences, top-{args.k} proponents + opponents"
    )
    print(
        f"TracIn-WE {tracin_seconds:.1f} s; IG ({args.steps} steps) {ig_seconds:.1f} s"
    )
    print(f"IG convergence |delta|: median {deltas.abs().median():.2e}")
    _describe("Spearman rho (signed)", rho[valid])
    _describe("Spearman rho of |values|", magnitude[~magnitude.isnan()])
    print("\nThe three sentences where they disagree most (lowest signed rho):")
    for i in rho.nan_to_num(2.0).argsort()[:3].tolist():
        _show(i, test, train, names, words, attributions, summed, mask, rho, tokenizer)


def _prepare(args):
    from captum_tracin_we.demo import DemoSettings, demo_rows, fine_tune_run
    from captum_tracin_we.hf import load_model_folder

    settings = DemoSettings(train_size=args.train, test_size=args.test, out=OUT)
    train, test, names = demo_rows(settings)
    run_dir = os.path.join(OUT, "run")
    if not os.path.isdir(run_dir) or not any(
        name.startswith("checkpoint-") for name in os.listdir(run_dir)
    ):
        start = time.perf_counter()
        fine_tune_run(settings, train, names, run_dir)
        print(f"Fine-tuned in {time.perf_counter() - start:.0f} s")
    folder = load_model_folder(run_dir)
    return folder.model, folder.tokenizer, run_dir, train, test, names


def _features(tokenizer, text, label):
    encoded = tokenizer(text, truncation=True, max_length=64)
    return {**encoded, "labels": label}


def _describe(what, values):
    print(
        f"{what}: mean {values.mean():+.3f}, median {values.median():+.3f}, "
        f"share > 0: {(values > 0).double().mean():.0%}, "
        f"share > 0.5: {(values > 0.5).double().mean():.0%}"
    )


def _show(i, test, train, names, words, attributions, summed, mask, rho, tokenizer):
    text, label, _ = test[i]
    print(f"\n[{names[label]}] {text}   (rho {float(rho[i]):+.2f})")
    ids = words.test_token_ids[i][mask[i]].tolist()
    tokens = tokenizer.convert_ids_to_tokens(ids)
    ig = attributions[i][mask[i]]
    we = summed[i][mask[i]]
    ig, we = ig / ig.abs().max(), we / we.abs().max().clamp(min=1e-30)
    print("  token            IG    TracIn-WE")
    for token, a, b in zip(tokens, ig.tolist(), we.tolist()):
        print(f"  {token:14s} {a:+.2f}    {b:+.2f}")
    print("  training texts listed (score, label, shared words by contribution):")
    for j in range(words.scores.shape[1]):
        shared = top_words(words, i, j, tokenizer, 3)
        if not shared:
            continue
        index = int(words.train_indices[i, j])
        train_text, train_label, _ = train[index]
        print(
            f"    {float(words.scores[i, j]):+.3g} [{names[train_label]}] "
            f"{train_text[:90]}  | " + ", ".join(f"{w} {v:+.2g}" for w, v in shared)
        )


if __name__ == "__main__":
    main()
