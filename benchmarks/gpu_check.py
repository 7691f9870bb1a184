#!/usr/bin/env python3

r"""
Checks TracIn-WE on a CUDA device (the unit tests run on the CPU only):

1. TracIn-WE with the model on the GPU equals Captum's ``TracInCP`` on the
   embedding layer on the GPU, and TracIn-WE on the CPU, for a config-built BERT.
2. Word contributions computed on the GPU sum to the scores.
3. An index built and queried with the model on the GPU equals streaming.
4. The same under ``torch.distributed`` with NCCL (world size 1; NCCL allows one
   rank per GPU), which sends the all-reduce through CUDA.

Run:  python -m benchmarks.gpu_check          (about a minute on one GPU)
Exits non-zero if a check fails.
"""

import argparse
import copy
import os
import sys
import tempfile

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, TensorDataset

from captum_tracin_we import TracInWE
from tests.helpers import (
    PAD,
    LogitsOnly,
    dict_dataset,
    embedding_name,
    load_into,
    random_ids,
    save_checkpoints,
    tiny_hf_classifier,
    tracincp_oracle,
)

FAILURES = []


def check(name: str, actual: torch.Tensor, expected: torch.Tensor, rel=1e-5) -> None:
    actual, expected = actual.detach().cpu().double(), expected.detach().cpu().double()
    error = float((actual - expected).abs().max() / expected.abs().max())
    passed = error <= rel
    print(f"{'PASS' if passed else 'FAIL'} {name}: max relative difference {error:.1e}")
    if not passed:
        FAILURES.append(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda", help="cpu: a dry run (gloo)")
    cuda = torch.device(parser.parse_args().device)
    if cuda.type == "cuda" and not torch.cuda.is_available():
        sys.exit("No CUDA device: this check needs a GPU (or pass --device cpu).")
    name = torch.cuda.get_device_name() if cuda.type == "cuda" else "CPU"
    print(f"Device: {name}, torch {torch.__version__}")
    on = cuda.type.upper()
    model = tiny_hf_classifier("bert")
    ids = random_ids(60, 12, seed=3)
    labels = torch.randint(0, 3, (60,), generator=torch.Generator().manual_seed(4))
    mask = (ids != PAD).long()
    n = 48
    with tempfile.TemporaryDirectory() as folder:
        paths = save_checkpoints(model, folder, step=0.05)
        train = DataLoader(dict_dataset(ids[:n], labels[:n]), batch_size=8)
        test = {"input_ids": ids[n:], "attention_mask": mask[n:], "labels": labels[n:]}
        on_cpu = TracInWE(model, train, paths, batch_size=None).influence(test)
        gpu_model = copy.deepcopy(model).to(cuda)
        layer = "hf." + embedding_name(gpu_model)
        expected = tracincp_oracle(
            LogitsOnly(gpu_model),
            layer,
            TensorDataset(ids[:n].to(cuda), mask[:n].to(cuda), labels[:n].to(cuda)),
            (ids[n:].to(cuda), mask[n:].to(cuda), labels[n:].to(cuda)),
            paths,
            load_into("hf"),
        )
        tracin = TracInWE(gpu_model, train, paths, batch_size=None)
        on_gpu = tracin.influence(test)
        check(f"TracInWE ({on}) vs TracInCP on the embedding ({on})", on_gpu, expected)
        check(f"TracInWE ({on}) vs TracInWE (CPU)", on_gpu, on_cpu)

        chosen = torch.tensor([[0, 5, 17, 33]] * (len(ids) - n))
        words = tracin.word_influence(test, train_indices=chosen)
        check(
            f"{on} word contributions sum to the scores (test side)",
            words.test_contributions.sum(-1),
            words.scores,
        )
        check(
            f"{on} word contributions sum to the scores (train side)",
            words.train_contributions.sum(-1),
            words.scores,
        )

        index = os.path.join(folder, "index")
        tracin.build_index(index, shard_size=10, show_progress=False)
        indexed = TracInWE(gpu_model, train, paths, batch_size=None, index=index)
        check(f"{on} index query vs streaming", indexed.influence(test), on_gpu)
        projected = os.path.join(folder, "projected")
        tracin.build_index(projected, projection_dim=8, show_progress=False)
        sketch = TracInWE(gpu_model, train, paths, batch_size=None, index=projected)
        rank_agreement = float(
            torch.corrcoef(
                torch.stack([sketch.influence(test).flatten(), on_gpu.cpu().flatten()])
            )[0, 1]
        )
        print(f"{on} JL-projected (r=8 of 16) index: correlation {rank_agreement:.3f}")
        if not rank_agreement > 0.5:
            FAILURES.append("projected index")
        check(
            f"{on} index self-influence vs streaming",
            indexed.self_influence(),
            tracin.self_influence(),
        )

        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29533")
        backend = "nccl" if cuda.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=0, world_size=1)
        try:
            shared = TracInWE(gpu_model, train, paths, batch_size=None)
            shared.build_index(
                os.path.join(folder, "nccl"), shard_size=10, show_progress=False
            )
            check(
                f"{backend} (world 1) index query vs streaming",
                shared.influence(test),
                on_gpu,
            )
        finally:
            dist.destroy_process_group()
    if FAILURES:
        sys.exit(f"{len(FAILURES)} check(s) failed: {FAILURES}")
    print("All GPU checks passed.")


if __name__ == "__main__":
    main()
