#!/usr/bin/env python3

r"""
Run by ``torchrun --nproc_per_node=2`` from tests/test_distributed.py: every rank
builds its shards of a shared index with gloo, then all ranks query it.
"""

import sys

import torch
import torch.distributed as dist

from captum_tracin_we import TracInWE
from tests.helpers import bag_setup


def main(workdir: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    # Same model, data and checkpoints on every rank (deterministic seeds).
    model, train, test, paths = bag_setup(f"{workdir}/rank{rank}", n_train=45, n_test=5)
    tracin = TracInWE(model, train, paths, batch_size=4)
    tracin.build_index(f"{workdir}/index", shard_size=8, show_progress=False)
    scores = tracin.influence(test)
    top = tracin.influence(test, k=3)
    self_scores = tracin.self_influence()
    if rank == 0:
        torch.save(
            {"scores": scores, "indices": top.indices, "self": self_scores},
            f"{workdir}/distributed.pt",
        )
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
