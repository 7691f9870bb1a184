#!/usr/bin/env python3

r"""
The reproduction's vmap ensemble trainer (``benchmarks/_ensemble.py``) must train
the same models as the one-at-a-time trainer, or case deletion on a GPU would
measure something else than on the CPU.
"""

import pytest
import torch

from benchmarks.reproduce_case_deletion import Trainer, WordCNN, WordTransformer
from captum_tracin_we.datasets import planted_trigger_dataset


@pytest.mark.parametrize("architecture", [WordCNN, WordTransformer])
def test_ensemble_trains_the_same_models_as_one_at_a_time(architecture):
    data = planted_trigger_dataset(80, seed=5)
    ids, labels = data.token_ids, data.labels
    assert int(ids[:, 0].min()) > 0  # the reproduction's PAD is 0: texts start real
    trainer = Trainer(ids, labels, data.vocab_size, batch=16, architecture=architecture)
    kept = [
        list(range(4, 80)),
        list(range(0, 76)),
        list(range(0, 70)) + list(range(74, 80)),
    ]
    seeds = [0, 1, 2]
    one_at_a_time = [trainer(k, s) for k, s in zip(kept, seeds)]
    together = trainer.train_many(kept, seeds)
    test = ids[:20]
    with torch.no_grad():
        for a, b in zip(one_at_a_time, together):
            assert torch.allclose(a(test).softmax(-1), b(test).softmax(-1), atol=1e-4)
        # and the models really differ from each other (different data and seeds)
        assert not torch.allclose(together[0](test), together[1](test), atol=1e-3)


def test_ensemble_needs_equal_sizes():
    data = planted_trigger_dataset(20, seed=5)
    trainer = Trainer(data.token_ids, data.labels, data.vocab_size, batch=8)
    with pytest.raises(ValueError, match="as many examples"):
        trainer.train_many([list(range(10)), list(range(12))], [0, 1])
