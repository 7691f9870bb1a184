#!/usr/bin/env python3

r"""
The reproduction's vmap ensemble trainer (``benchmarks/_ensemble.py``) must train
the same models as the one-at-a-time trainer, or case deletion on a GPU would
measure something else than on the CPU.
"""

import pytest
import torch

from benchmarks._ensemble import train_ensemble
from benchmarks._text_classifiers import Trainer, WordCNN, WordTransformer
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


def test_ensemble_saves_per_epoch_checkpoints_of_a_single_model(tmp_path):
    data = planted_trigger_dataset(40, seed=5)
    (model,) = train_ensemble(
        lambda: WordCNN(data.vocab_size),
        data.token_ids,
        data.labels,
        [list(range(40))],
        [0],
        epochs=3,
        lr=2e-3,
        batch=8,
        save_to=str(tmp_path),
    )
    paths = sorted(tmp_path.iterdir())
    assert [p.name for p in paths] == [f"checkpoint-{e}.pt" for e in range(3)]
    last = torch.load(paths[-1], weights_only=True)
    assert last["learning_rate"] == 2e-3
    for name, value in model.state_dict().items():
        assert torch.equal(last["model_state_dict"][name], value)
    with pytest.raises(ValueError, match="single model"):
        train_ensemble(
            lambda: WordCNN(data.vocab_size),
            data.token_ids,
            data.labels,
            [list(range(20)), list(range(20, 40))],
            [0, 1],
            1,
            2e-3,
            8,
            save_to=str(tmp_path),
        )
