#!/usr/bin/env python3

r"""
The last-layer TracInCPFast with its training side stored beside the index:
equal to Captum's TracInCPFast (called directly), bound to the data, loss,
layer and checkpoints it was computed from, and computed once.
"""

import os
import tempfile

import pytest
import torch
from captum.influence import TracInCPFast
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from captum_tracin_we import (
    IndexMismatchError,
    StoredTracInCPFast,
    TracInWE,
    TracInWEError,
    stored_tracincp_fast,
    tracincp_fast,
)
from tests.helpers import (
    PAD,
    LogitsOnly,
    assert_close,
    bag_setup,
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
        ids = random_ids(23, 9, seed=3)
        labels = torch.randint(0, 3, (23,), generator=torch.Generator().manual_seed(4))
        train = dict_dataset(ids[:17], labels[:17])
        test_ids = ids[17:]
        test = {
            "input_ids": test_ids,
            "attention_mask": (test_ids != PAD).long(),
            "labels": labels[17:],
        }
        yield model, train, test, paths, tmp


def _tracin(model, train, paths, **options):
    options.setdefault("batch_size", 5)
    return TracInWE(model, train, paths, **options)


def test_equals_captum_tracincp_fast_on_a_hf_classifier(hf):
    model, train, test, paths, tmp = hf
    path = os.path.join(tmp, "side.pt")
    stored = stored_tracincp_fast(_tracin(model, train, paths), path)
    assert isinstance(stored, StoredTracInCPFast)
    assert stored.name == "TracInCPFast (classifier)"
    theirs = TracInCPFast(
        LogitsOnly(model),
        "hf.classifier",
        DataLoader(
            [(r["input_ids"], r["attention_mask"], r["labels"]) for r in train],
            batch_size=4,
        ),
        paths,
        load_into("hf"),
        loss_fn=nn.CrossEntropyLoss(reduction="sum"),
        batch_size=None,
    ).influence((test["input_ids"], test["attention_mask"], test["labels"]))
    assert_close(stored.influence(test), theirs, 1e-5)
    # Read back in a new object (as a new process would): same scores, top-k.
    again = stored_tracincp_fast(_tracin(model, train, paths, batch_size=3), path)
    assert_close(again.influence(test), theirs, 1e-5)
    top = again.influence(test, k=4, proponents=False)
    expected = theirs.topk(4, dim=1, largest=False)
    assert torch.equal(top.indices, expected.indices)
    self_scores = again.self_influence()
    fast_self = tracincp_fast(model, train, paths).self_influence()
    assert_close(self_scores, fast_self, 1e-5)


def test_plain_module_and_batch_size_and_padding(tmp_path):
    model, train, test, paths = bag_setup(str(tmp_path))
    tracin = TracInWE(model, train, paths, batch_size=4)
    stored = stored_tracincp_fast(tracin, str(tmp_path / "side.pt"))
    expected = tracincp_fast(model, train, paths).influence(test)
    assert_close(stored.influence(test), expected, 1e-5)
    one_by_one = torch.cat(
        [stored.influence(tuple(t[i : i + 1] for t in test)) for i in range(6)]
    )
    assert_close(one_by_one, expected, 1e-5)


def test_needs_a_path_or_an_index(hf):
    model, train, _, paths, _ = hf
    with pytest.raises(TracInWEError, match="attached index"):
        stored_tracincp_fast(_tracin(model, train, paths))


def test_kept_in_the_index_folder(hf, tmp_path):
    model, train, test, paths, _ = hf
    tracin = _tracin(model, train, paths)
    tracin.build_index(str(tmp_path / "index"))
    stored = stored_tracincp_fast(tracin)
    assert stored.path == str(tmp_path / "index" / "tracincp_fast.pt")
    assert os.path.isfile(stored.path)
    expected = tracincp_fast(model, train, paths).influence(test)
    assert_close(stored.influence(test), expected, 1e-5)


def test_other_training_data_is_refused(hf, tmp_path):
    model, train, _, paths, _ = hf
    path = str(tmp_path / "side.pt")
    stored_tracincp_fast(_tracin(model, train, paths), path)
    changed = [dict(row) for row in train]
    changed[3]["labels"] = (changed[3]["labels"] + 1) % 3
    with pytest.raises(IndexMismatchError, match="training data.*Remove"):
        stored_tracincp_fast(_tracin(model, changed, paths), path)
    with pytest.raises(IndexMismatchError, match="checkpoints"):
        stored_tracincp_fast(_tracin(model, train, paths[:2]), path)
    loss = nn.CrossEntropyLoss(reduction="none", label_smoothing=0.1)
    with pytest.raises(IndexMismatchError, match="label_smoothing"):
        stored_tracincp_fast(_tracin(model, train, paths, loss_fn=loss), path)


def test_changed_checkpoint_is_refused_at_query(hf, tmp_path):
    model, train, test, paths, _ = hf
    copies = []
    for i, path in enumerate(paths):
        copy = str(tmp_path / f"c{i}.pt")
        torch.save(torch.load(path, weights_only=True), copy)
        copies.append(copy)
    side = str(tmp_path / "side.pt")
    stored = stored_tracincp_fast(_tracin(model, train, copies), side)
    saved = torch.load(copies[1], weights_only=True)
    saved["model_state_dict"]["classifier.weight"] += 0.5
    torch.save(saved, copies[1])
    with pytest.raises(IndexMismatchError, match="c1.pt.*Remove"):
        stored.influence(test)


@pytest.mark.parametrize("damage", ["garbage", "format", "shape", "nan"])
def test_damaged_file_is_refused(hf, tmp_path, damage):
    model, train, _, paths, _ = hf
    path = str(tmp_path / "side.pt")
    stored_tracincp_fast(_tracin(model, train, paths), path)
    side = torch.load(path, weights_only=True)
    if damage == "garbage":
        with open(path, "wb") as stream:
            stream.write(b"not a file of tensors")
    else:
        if damage == "format":
            side["format"] = "something else"
        elif damage == "shape":
            side["inputs"][1] = side["inputs"][1][:-1]
        else:
            side["output_gradients"][0][2, 1] = float("nan")
        torch.save(side, path)
    with pytest.raises(IndexMismatchError, match="Remove"):
        stored_tracincp_fast(_tracin(model, train, paths), path)


def test_a_head_that_is_not_the_logits_is_refused(tmp_path):
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(30, 4, padding_idx=0)
            self.fc = nn.Linear(4, 3)

        def forward(self, ids):
            return 2.0 * self.fc(self.emb(ids).mean(1))

    model = Scaled().eval()
    paths = save_checkpoints(model, str(tmp_path))
    ids = random_ids(8, 6, seed=1, vocab=30)
    labels = torch.tensor([0, 1, 2, 0] * 2)
    train = DataLoader(TensorDataset(ids, labels), batch_size=4)
    with pytest.raises(TracInWEError, match="not the model's .* logits"):
        stored_tracincp_fast(TracInWE(model, train, paths), str(tmp_path / "side.pt"))
    assert not os.path.exists(tmp_path / "side.pt")
