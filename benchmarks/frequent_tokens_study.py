#!/usr/bin/env python3

r"""
Issue 13's validation study: TracIn-WE variants that handle frequent tokens
without a hand-picked list, measured by case deletion on one draw of test
sentences, next to the paper's TracIn-WE, TracIn-TFIDF and the last layer.

The candidates and their hypotheses are written in docs/method.rst ("Frequent
tokens without a hand-picked list") before this was run. They are computed
here from TracIn-WE's word rows (the non-zero rows of the embedding-table
gradient) at each checkpoint, so every variant reuses one backward pass:

- IDF^a: each shared token's term weighted by idf(w)^a (scikit-learn's smooth
  idf from the training texts' document frequencies);
- centred: <g_w(z) - mu_w, g_w(z') - mu_w> over shared tokens, mu_w the mean
  word row over all training texts (0 where a text lacks w), per checkpoint;
- cosine: the cosine of the two word rows, per shared token;
- knee: the tokens above the knee of the document-frequency curve excluded;
- without the 50 most frequent tokens (the hand-picked reference).

Run:  python -m benchmarks.frequent_tokens_study --test-seed 2   (about 30 min)
      python -m benchmarks.frequent_tokens_study --smoke
Prints the AUC table (and writes it to --out if given).
"""

import argparse
import tempfile
import time
from typing import Dict, List

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from benchmarks._common import conditions
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
from benchmarks.reproduce_case_deletion import last_layer
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
    random_scores,
    tfidf_tracin_scores,
    topk_cardinality,
)
from captum_tracin_we.kernels import WordRows, shared_token_scores

# The validation grid of the IDF power, fixed before the first run; 3 and 4
# were added on the validation draw because 2 was the best and on the edge.
IDF_POWERS = (0.5, 1.0, 2.0, 3.0, 4.0)


class _NoBar:
    def update(self, n: int) -> None:
        pass


def knee_size(token_ids: Tensor, ignore_ids: List[int], top: int = 500) -> int:
    r"""
    Number of tokens above the knee of the sorted document-frequency curve:
    the point farthest from the chord between the curve's ends, over the
    ``top`` most frequent tokens, both axes scaled to [0, 1].
    """
    ranked = frequent_token_ids(token_ids, top, ignore_ids=ignore_ids)
    df = document_frequency(token_ids)[torch.tensor(ranked)].double()
    x = torch.linspace(0, 1, len(ranked), dtype=torch.double)
    y = (df - df[-1]) / (df[0] - df[-1])
    # The chord runs from (0, 1) to (1, 0); 1 - x - y is proportional to the
    # distance below it. The tokens up to and including the knee are excluded.
    return int(torch.argmax(1 - x - y)) + 1


def frequent_tokens(ids: Tensor):
    r"""The ids above the knee of the document-frequency curve, and the 50 most
    frequent ids (the hand-picked reference)."""
    knee_ids = frequent_token_ids(ids, knee_size(ids, [PAD]), ignore_ids=[PAD])
    top50 = frequent_token_ids(ids, 50, ignore_ids=[PAD])
    return torch.tensor(knee_ids), torch.tensor(top50)


def document_frequency(token_ids: Tensor) -> Tensor:
    ordered = token_ids.sort(dim=1).values
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    return torch.bincount(ordered[first])


def rows_of(tracin: TracInWE, batches, loss_fn, role: str) -> WordRows:
    return WordRows.cat(
        list(tracin.gradient_source.stream(batches, loss_fn, role, _NoBar()))
    )


def with_vectors(rows: WordRows, vectors: Tensor) -> WordRows:
    return WordRows(rows.example_index, rows.token_ids, vectors, rows.num_examples)


def without_tokens(rows: WordRows, excluded: Tensor) -> WordRows:
    keep = ~torch.isin(rows.token_ids, excluded)
    return WordRows(
        rows.example_index[keep],
        rows.token_ids[keep],
        rows.vectors[keep],
        rows.num_examples,
    )


def unit(rows: WordRows) -> WordRows:
    norms = rows.vectors.norm(dim=1, keepdim=True).clamp_min(1e-30)
    return with_vectors(rows, rows.vectors / norms)


def centred(rows: WordRows, mean: Tensor) -> WordRows:
    return with_vectors(rows, rows.vectors - mean[rows.token_ids])


def checkpoint_statistics(train: WordRows, n_train: int, vocab: int):
    r"""idf (smooth, from the rows' document frequencies) and the mean word row."""
    df = torch.bincount(train.token_ids, minlength=vocab).double()
    idf = (torch.log((1 + n_train) / (1 + df)) + 1).float()
    mean = train.vectors.new_zeros(vocab, train.vectors.shape[1])
    mean.index_add_(0, train.token_ids, train.vectors)
    return idf, mean / n_train


def variant_self_scores(
    tracin: TracInWE, n_train: int, knee_ids: Tensor, top50: Tensor
) -> Dict[str, Tensor]:
    r"""Self-influence of the training texts under each variant (no cosine: it
    is the number of distinct tokens whatever the gradients)."""
    totals: Dict[str, Tensor] = {}
    for loaded in tracin.checkpoint_pass():
        train = rows_of(
            tracin, tracin.training_data.batches(), tracin.loss_fn, "training"
        )
        idf, mean = checkpoint_statistics(
            train, n_train, int(train.token_ids.max()) + 1
        )
        squared = train.vectors.pow(2).sum(1)
        centred_squared = (train.vectors - mean[train.token_ids]).pow(2).sum(1)
        weights = {
            "TracIn-WE": squared,
            **{f"IDF^{a:g}": squared * idf[train.token_ids] ** a for a in IDF_POWERS},
            "centred": centred_squared,
            f"knee exclusion ({len(knee_ids)} tokens)": squared
            * ~torch.isin(train.token_ids, knee_ids),
            "without the 50 most frequent": squared
            * ~torch.isin(train.token_ids, top50),
        }
        for name, per_row in weights.items():
            part = torch.zeros(n_train).index_add_(0, train.example_index, per_row)
            part = loaded.learning_rate * part
            totals[name] = part if name not in totals else totals[name] + part
    return totals


def variant_scores(
    tracin: TracInWE, test_batch, n_train: int, knee_ids: Tensor, top50: Tensor
) -> Dict[str, Tensor]:
    r"""Scores of every variant, summed over checkpoints (lr-weighted)."""
    totals: Dict[str, Tensor] = {}
    for loaded in tracin.checkpoint_pass():
        train = rows_of(
            tracin, tracin.training_data.batches(), tracin.loss_fn, "training"
        )
        query = rows_of(tracin, [test_batch], tracin.test_loss_fn, "test")
        vocab = int(max(train.token_ids.max(), query.token_ids.max())) + 1
        idf, mean = checkpoint_statistics(train, n_train, vocab)

        parts = {
            "TracIn-WE": shared_token_scores(query, train),
            **{
                f"IDF^{a:g}": shared_token_scores(
                    with_vectors(
                        query, query.vectors * idf[query.token_ids, None] ** a
                    ),
                    train,
                )
                for a in IDF_POWERS
            },
            "centred": shared_token_scores(centred(query, mean), centred(train, mean)),
            "cosine": shared_token_scores(unit(query), unit(train)),
            f"knee exclusion ({len(knee_ids)} tokens)": shared_token_scores(
                without_tokens(query, knee_ids), without_tokens(train, knee_ids)
            ),
            "without the 50 most frequent": shared_token_scores(
                without_tokens(query, top50), without_tokens(train, top50)
            ),
        }
        for name, part in parts.items():
            part = loaded.learning_rate * part
            totals[name] = part if name not in totals else totals[name] + part
    return {name: s.float() for name, s in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=20)
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 20, 50])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--test-seed", type=int, default=2)
    parser.add_argument("--transformer", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--retrains-per-call", type=int, default=16)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="case deletion only for these methods, named as in the table "
        "without the part in brackets (default: all)",
    )
    parser.add_argument(
        "--diagnostics",
        action="store_true",
        help="instead of case deletion: the retrain-free diagnostics on 200 "
        "held-out sentences and mislabel detection (10%% flipped), for every "
        "variant",
    )
    args = parser.parse_args()
    if args.smoke:
        args.train, args.test, args.ks, args.seeds = 300, 4, [5, 10], [0]
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
        if args.diagnostics:
            report = diagnostics_report(
                args, model, paths, trainer, ids, labels, held_out, vocab, train_texts
            )
            print(report)
            if args.out:
                with open(args.out, "w", encoding="utf-8") as f:
                    f.write(report)
            return
        scores = all_scores(
            model, paths, train_set, test_batch, train_texts, test_texts, args.train
        )
        tracin = TracInWE(model, train_set, paths, load_ckpt, batch_size=256)
        check = tracin.influence(test_batch)
        assert torch.allclose(check, scores["TracIn-WE"], rtol=1e-4, atol=1e-6)
        if args.methods:
            scores = {
                name: s
                for name, s in scores.items()
                if any(name.split(" (")[0] == wanted for wanted in args.methods)
            }
        result = case_deletion(
            scores,
            None,
            trainer,
            ground_truth_probability(test_batch),
            args.train,
            ks=args.ks,
            seeds=args.seeds,
            train_many_fn=trainer.train_many if args.retrains_per_call > 1 else None,
            retrains_per_call=args.retrains_per_call,
        )
    table = format_markdown(auc_table(result))
    knee_ids = frequent_tokens(ids)[0]
    words = {i: w for w, i in vocab.items()}
    words.update({CLS: "[CLS]", SEP: "[SEP]"})
    report = "\n".join(
        [
            f"Command: python -m benchmarks.frequent_tokens_study "
            f"{'--transformer ' if args.transformer else ''}--test-seed "
            f"{args.test_seed} (retrains {args.retrains_per_call} per call on "
            f"{args.device}); {conditions()}",
            f"Knee of the document-frequency curve: {len(knee_ids)} tokens "
            f"({[words.get(i, i) for i in knee_ids.tolist()][:40]})",
            f"{result.retrains} models, total "
            f"{(time.perf_counter() - started) / 60:.1f} min",
            "",
            table,
            "",
        ]
    )
    print(report)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(report)


def all_scores(model, paths, train_set, batch, train_texts, texts, n_train):
    r"""Every variant, TracIn-TFIDF and the last layer for one test batch."""
    tracin = TracInWE(model, train_set, paths, load_ckpt, batch_size=256)
    knee_ids, top50 = frequent_tokens(train_set.tensors[0])
    scores = variant_scores(tracin, batch, n_train, knee_ids, top50)
    grads = [
        checkpoint_output_gradients(model, paths, load_ckpt, [b], num_classes=2)
        for b in (train_set.tensors, batch)
    ]
    scores["TracIn-TFIDF"] = tfidf_tracin_scores(train_texts, texts, *grads)
    load_ckpt(model, paths[-1])
    scores["TracInCPFast (last layer)"] = last_layer(model, train_set, paths).influence(
        batch
    )
    return scores


def diagnostics_report(
    args, model, paths, trainer, ids, labels, held_out, vocab, train_texts
) -> str:
    rows = balanced_test(held_out, 200, seed=1)
    texts = [held_out[i][0] for i in rows]
    batch = (encode(texts, vocab), torch.tensor([held_out[i][1] for i in rows]))
    train_set = TensorDataset(ids, labels)
    scores = all_scores(model, paths, train_set, batch, train_texts, texts, len(labels))
    scores["random"] = random_scores(len(rows), len(labels), seed=2)
    table = [
        {
            "method": name,
            "top-10 label agreement": label_agreement(s, labels, batch[1], 10),
            "top-10 proponent cardinality": topk_cardinality(s, 10),
            "top-10 opponent cardinality": topk_cardinality(s, 10, proponents=False),
        }
        for name, s in scores.items()
    ]
    noisy, flipped = flip_labels(labels, 0.1, n_classes=2, seed=0)
    noisy_trainer = Trainer(
        ids, noisy, trainer.vocab_size, architecture=trainer.architecture
    )
    with tempfile.TemporaryDirectory() as directory:
        noisy_model, noisy_paths = noisy_trainer(
            range(len(noisy)), seed=0, save_to=directory
        )
        noisy_set = TensorDataset(ids, noisy)
        tracin = TracInWE(
            noisy_model, noisy_set, noisy_paths, load_ckpt, batch_size=256
        )
        knee_ids, top50 = frequent_tokens(ids)
        self_scores = variant_self_scores(tracin, len(noisy), knee_ids, top50)
        check = tracin.self_influence()
        assert torch.allclose(check, self_scores["TracIn-WE"], rtol=1e-4)
        self_scores["TracInCPFast (last layer)"] = last_layer(
            noisy_model, noisy_set, noisy_paths
        ).self_influence()
        load_ckpt(noisy_model, noisy_paths[-1])
        self_scores["loss (last checkpoint)"] = output_gradients(
            noisy_model, [(ids, noisy)], 2
        )[0]
        self_scores["random"] = torch.rand(
            len(noisy), generator=torch.Generator().manual_seed(5)
        )
    mislabels = [
        {"self-influence of": name, **mislabel_detection(s, flipped)}
        for name, s in self_scores.items()
    ]
    model_name = "small transformer" if args.transformer else "CNN"
    return "\n".join(
        [
            f"Command: python -m benchmarks.frequent_tokens_study --diagnostics"
            f"{' --transformer' if args.transformer else ''}; {conditions()}",
            "",
            f"Retrain-free diagnostics ({model_name}, the model trained on all "
            f"{len(labels)} texts, 200 class-balanced held-out sentences, draw "
            "seed 1):",
            "",
            format_markdown(table),
            "",
            f"Mislabel detection ({model_name} retrained with 10% of the labels "
            "flipped, seed 0; ranked by the score, highest first):",
            "",
            format_markdown(mislabels),
            "",
        ]
    )


if __name__ == "__main__":
    main()
