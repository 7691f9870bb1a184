#!/usr/bin/env python3

r"""Two processes on CPU (gloo, launched by torchrun) give single-process results."""

import os
import subprocess
import sys

import torch

from captum_tracin_we import TracInWE
from tests.helpers import assert_close, bag_setup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_two_process_build_and_query_equal_single_process(tmp_path):
    for rank in (0, 1):
        os.makedirs(tmp_path / f"rank{rank}", exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29517",
        os.path.join(ROOT, "tests", "distributed_worker.py"),
        str(tmp_path),
    ]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    distributed = torch.load(tmp_path / "distributed.pt", weights_only=True)
    shards = sorted(
        p.name for p in (tmp_path / "index").iterdir() if p.suffix == ".json"
    )
    assert "shard-00005-ckpt-02.json" in shards  # 6 shards of 8 examples (+5)
    os.makedirs(tmp_path / "single")
    model, train, test, paths = bag_setup(
        str(tmp_path / "single"), n_train=45, n_test=5
    )
    single = TracInWE(model, train, paths, batch_size=4)
    assert_close(distributed["scores"], single.influence(test))
    assert torch.equal(distributed["indices"], single.influence(test, k=3).indices)
    assert_close(distributed["self"], single.self_influence())
