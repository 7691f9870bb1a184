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


def test_the_last_layer_read_from_tracin_we_passes_is_bitwise_its_own(
    hf, tmp_path, monkeypatch
):
    # The explorer's shared pass: the stored last layer takes the head's input
    # and output gradient from TracIn-WE's forward and backward of each text,
    # instead of running its own; the numbers are the same bits.
    from captum_tracin_we._baselines import stored_last_layer

    model, train, tests, paths, _ = hf
    tracin = TracInWE(model, train, paths, load_into(), batch_size=5)
    tracin.build_index(str(tmp_path / "index"), show_progress=False)
    stored = stored_tracincp_fast(tracin)
    alone = [stored.influence(t) for t in tests]
    words_alone = [tracin.influence(t) for t in tests]
    own_passes = stored_last_layer.layer_sides

    def no_own_passes(*args, **kwargs):
        raise AssertionError("the last layer ran its own forward pass")

    monkeypatch.setattr(stored_last_layer, "layer_sides", no_own_passes)
    with model_lock(model):
        words, last = tracin.influence_pass(tests), stored.influence_pass(tests)
        for loaded in tracin.checkpoint_pass():
            watch = last.watch()
            words.add(loaded, watch=watch)
            last.add(loaded, watch)
    for got, expected in zip(last.results(), alone, strict=True):
        assert torch.equal(got, expected)
    for got, expected in zip(words.results(), words_alone, strict=True):
        assert torch.equal(got, expected)  # watching changes no TracIn-WE bit

    # A watch that saw no passes of an input: that input runs its own.
    monkeypatch.setattr(stored_last_layer, "layer_sides", own_passes)
    with model_lock(model):
        last = stored.influence_pass(tests)
        for loaded in tracin.checkpoint_pass():
            last.add(loaded, last.watch())
    for got, expected in zip(last.results(), alone, strict=True):
        assert torch.equal(got, expected)


def test_a_watch_refuses_a_head_that_ran_more_than_once_per_pass(hf):
    from captum_tracin_we._baselines.stored_last_layer import LayerSidesWatch

    head = torch.nn.Linear(4, 3)
    watch = LayerSidesWatch(head)
    x = torch.randn(2, 4, requires_grad=True)
    with watch(0):
        (head(x).sum() + head(x).sum()).backward()
    assert watch.sides_of(0, 1) is None
    with watch(1):
        head(x).pow(2).sum().backward()
    ((gradients, inputs),) = watch.sides_of(1, 1)
    assert torch.equal(gradients, 2 * head(x).detach())
    assert torch.equal(inputs, x.detach())
    with watch(2):
        head(x)  # no backward: no gradient
    assert watch.sides_of(2, 1) is None


def test_the_shared_pass_reads_the_head_for_many_batch_inputs_and_failures(
    hf, tmp_path
):
    # Inputs of several batches and of several texts, given to the two
    # methods in different orders, one input that fails: each last-layer row
    # is bitwise its own influence call, the failure stays that input's.
    from captum_tracin_we._explorer.method_views import shared_pass_scores

    model, train, tests, paths, _ = hf
    tracin = TracInWE(model, train, paths, load_into(), batch_size=5)
    tracin.build_index(str(tmp_path / "index"), show_progress=False)
    stored = stored_tracincp_fast(tracin)
    two_batches = [tests[0], tests[1]]
    a, b = tests[2]["input_ids"][0], tests[3]["input_ids"][0]
    ids = torch.full((2, max(len(a), len(b))), PAD, dtype=torch.long)
    ids[0, : len(a)], ids[1, : len(b)] = a, b
    two_texts = {  # one batch of two texts, right-padded
        "input_ids": ids,
        "attention_mask": (ids != PAD).long(),
        "labels": torch.cat([tests[2]["labels"], tests[3]["labels"]]),
    }
    broken = dict(tests[4], labels=torch.tensor([7]))  # no such class
    words_inputs = [two_batches, two_texts, broken, tests[5]]
    last_inputs = [tests[5], broken, two_texts, two_batches]
    with model_lock(model):
        found = shared_pass_scores(
            tracin,
            {"TracIn-WE": tracin, "last": stored},
            {"TracIn-WE": words_inputs, "last": last_inputs},
        )
    rows, _ = found["last"]
    for got, given in zip(rows, last_inputs, strict=True):
        if given is broken:
            assert isinstance(got, Exception)
            continue
        assert torch.equal(got, stored.influence(given)[0])  # the first text's
    words, _ = found["TracIn-WE"]
    assert isinstance(words[2], Exception)
    assert torch.equal(words[0], tracin.influence(two_batches)[0])
    # Whole matrices (every text of the two-text batch), from the passes.
    with model_lock(model):
        words_pass = tracin.influence_pass(last_inputs)
        last_pass = stored.influence_pass(last_inputs)
        for loaded in tracin.checkpoint_pass():
            watch = last_pass.watch()
            words_pass.add(loaded, watch=watch)
            last_pass.add(loaded, watch)
    for got, given in zip(last_pass.results(), last_inputs, strict=True):
        if given is broken:
            assert isinstance(got, Exception)
        else:
            assert torch.equal(got, stored.influence(given))
