#!/usr/bin/env python3

r"""
Several test inputs scored from one checkpoint pass, each bitwise as its own
``influence`` call scores it alone: TracInWE (from the index, streamed,
normalised, IDF-weighted) and the stored last layer, each checkpoint loaded
once for all inputs; an input that fails fails alone.
"""

import tempfile

import pytest
import torch

from captum_tracin_we import TracInWE, stored_tracincp_fast
from captum_tracin_we._checkpoints.checkpoint_pass import model_lock
from captum_tracin_we._method import influence_pass as influence_pass_module
from tests.helpers import (
    PAD,
    dict_dataset,
    load_into,
    random_ids,
    save_checkpoints,
    tiny_hf_classifier,
)


@pytest.fixture(scope="module")
def hf():
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_hf_classifier("bert")
        paths = save_checkpoints(model, tmp, step=0.01)
        ids = random_ids(26, 9, seed=5)
        labels = torch.randint(0, 3, (26,), generator=torch.Generator().manual_seed(6))
        train = dict_dataset(ids[:18], labels[:18])
        tests = [_one(ids[i], labels[i]) for i in range(18, 26)]
        yield model, train, tests, paths, tmp


def _one(ids, label):
    r"""One test text as the explorer sends it: its own single-text batch."""
    real = ids[ids != PAD]
    return {
        "input_ids": real[None],
        "attention_mask": torch.ones(1, len(real), dtype=torch.long),
        "labels": label.reshape(1),
    }


def _counted(paths):
    r"""A checkpoint loader that counts its calls."""
    load = load_into()
    calls = []

    def counting(model, path):
        calls.append(path)
        return load(model, path)

    return counting, calls


def _run(tracin, method, inputs):
    with model_lock(tracin.model):
        scores = method.influence_pass(inputs)
        for loaded in tracin.checkpoint_pass():
            scores.add(loaded)
        return scores.results()


@pytest.mark.parametrize(
    "options",
    [
        {"index": True},
        {},
        {"index": True, "normalize": "cosine"},
        {"normalize": "train"},
        {"idf_power": 1.0},
        {"index": True, "top_k_words": 2},
    ],
    ids=["index", "streamed", "index-cosine", "streamed-train", "idf", "index-topk"],
)
def test_each_input_is_bitwise_its_own_influence_call(hf, tmp_path, options):
    model, train, tests, paths, _ = hf
    options = dict(options)
    use_index = options.pop("index", False)
    load, calls = _counted(paths)
    tracin = TracInWE(model, train, paths, load, batch_size=5, **options)
    if use_index:
        tracin.build_index(str(tmp_path / "index"), show_progress=False)
    alone = [tracin.influence(t) for t in tests]
    del calls[:]
    together = _run(tracin, tracin, tests)
    assert len(calls) == len(paths)  # one checkpoint pass for all the inputs
    for got, expected in zip(together, alone, strict=True):
        assert torch.equal(got, expected)  # bitwise, not to a tolerance
    # nor does the order of the inputs change a bit
    reversed_together = _run(tracin, tracin, tests[::-1])[::-1]
    assert all(torch.equal(a, b) for a, b in zip(reversed_together, alone))


def test_the_stored_last_layer_is_bitwise_its_own_influence_call(hf, tmp_path):
    model, train, tests, paths, _ = hf
    load, calls = _counted(paths)
    tracin = TracInWE(model, train, paths, load, batch_size=5)
    tracin.build_index(str(tmp_path / "index"), show_progress=False)
    stored = stored_tracincp_fast(tracin)
    alone = [stored.influence(t) for t in tests]
    del calls[:]
    with model_lock(model):  # TracIn-WE and the last layer in one pass
        both = [tracin.influence_pass(tests), stored.influence_pass(tests)]
        for loaded in tracin.checkpoint_pass():
            for scores in both:
                scores.add(loaded)
    assert len(calls) == len(paths)
    for got, expected in zip(both[1].results(), alone, strict=True):
        assert torch.equal(got, expected)
    for got, test in zip(both[0].results(), tests, strict=True):
        assert torch.equal(got, tracin.influence(test))


def test_an_input_that_fails_fails_alone(hf, tmp_path, monkeypatch):
    model, train, tests, paths, _ = hf
    tracin = TracInWE(model, train, paths, load_into(), batch_size=5)
    tracin.build_index(str(tmp_path / "index"), show_progress=False)
    stored = stored_tracincp_fast(tracin)
    alone = [tracin.influence(t) for t in tests]
    bad = 3
    test_rows = influence_pass_module.test_rows

    def failing(source, batches, *args, **kwargs):
        if any(torch.equal(b["input_ids"], tests[bad]["input_ids"]) for b in batches):
            raise RuntimeError("this text breaks the test side")
        return test_rows(source, batches, *args, **kwargs)

    monkeypatch.setattr(influence_pass_module, "test_rows", failing)
    broken = dict(tests[5], labels=torch.tensor([7]))  # no such class
    inputs = tests[:5] + [broken] + tests[6:]
    got = _run(tracin, tracin, inputs)
    assert isinstance(got[bad], RuntimeError) and "breaks" in str(got[bad])
    assert isinstance(got[5], Exception)  # its own error, raised alone too
    for i in set(range(len(tests))) - {bad, 5}:
        assert torch.equal(got[i], alone[i])
    last = _run(tracin, stored, inputs)
    assert isinstance(last[5], Exception)
    assert all(isinstance(row, torch.Tensor) for i, row in enumerate(last) if i != 5)
    with pytest.raises(RuntimeError, match="breaks"):  # alone it raises
        tracin.influence(tests[bad])
