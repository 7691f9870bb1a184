#!/usr/bin/env python3

r"""
An index is bound to the loss and the embedding module it was built with, and
to its format; a full disk during a build gives one clear error and no stray
files; a resumed build removes what a killed one left; damaged index JSON is
refused by name (issue 21, items 2, 7 and 8).
"""

import errno
import functools
import json
import os
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.influence import TracInCP
from torch import nn

import captum_tracin_we._index.index_files as index_files
import captum_tracin_we._index.index_format as index_format
import captum_tracin_we._index.index_store as index_store
from captum_tracin_we import IndexCorruptedError, IndexMismatchError, TracInWE
from captum_tracin_we._cli import _one_line
from captum_tracin_we._index.index_bindings import loss_identity
from tests.helpers import (
    PAD,
    VOCAB,
    assert_close,
    bag_setup,
    load_into,
    random_ids,
    save_checkpoints,
)

WEIGHTS = torch.tensor([1.0, 2.0, 0.5])


class _TwoTables(nn.Module):
    r"""Trainable word embeddings plus a second table over the same ids."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 8, padding_idx=PAD)
        self.static = nn.Embedding(VOCAB, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, ids):
        mask = (ids != PAD).float().unsqueeze(-1)
        hidden = torch.tanh(self.emb(ids) + self.static(ids)) * mask
        return self.fc(hidden.sum(1) / mask.sum(1).clamp(min=1))


@pytest.fixture
def bag(tmp_path):
    return bag_setup(str(tmp_path), n_train=30, n_test=4)


@pytest.fixture
def two_tables(tmp_path):
    torch.manual_seed(0)
    model = _TwoTables().eval()
    paths = save_checkpoints(model, str(tmp_path), count=2)
    ids = random_ids(26, 8, seed=1)
    labels = torch.arange(26) % 3
    train = torch.utils.data.TensorDataset(ids[:22], labels[:22])
    return model, train, (ids[22:], labels[22:]), paths


def _build(model, train, paths, folder, **kwargs):
    tracin = TracInWE(model, train, paths, batch_size=4, **kwargs)
    tracin.build_index(str(folder), shard_size=10, show_progress=False)
    return tracin


def _kill_after(monkeypatch, saves):
    real_save = index_store._atomic_save
    calls = {"n": 0}

    def dying_save(path, array):
        if calls["n"] == saves:
            raise KeyboardInterrupt("killed")
        calls["n"] += 1
        return real_save(path, array)

    monkeypatch.setattr(index_store, "_atomic_save", dying_save)


def _temporaries(folder):
    return sorted(
        os.path.relpath(os.path.join(root, name), folder)
        for root, _, names in os.walk(folder)
        for name in names
        if name.endswith(".tmp")
    )


# Item 2: bound to the loss


def test_a_loss_with_other_label_smoothing_is_refused(bag, tmp_path):
    model, train, test, paths = bag
    folder = str(tmp_path / "index")
    _build(model, train, paths, folder, loss_fn=nn.CrossEntropyLoss())
    smoothed = nn.CrossEntropyLoss(label_smoothing=0.1)
    message = (
        r"built with another training loss \(loss.label_smoothing: built with 0.0, "
        r"now 0.1\)\. Pass the loss the index was built with \(loss_fn=...\), or "
        "build a new index for this loss into a new folder"
    )
    with pytest.raises(IndexMismatchError, match=message):
        TracInWE(model, train, paths, loss_fn=smoothed, index=folder)
    with pytest.raises(IndexMismatchError, match=message):  # the cheap attach too
        TracInWE(model, train, paths, loss_fn=smoothed).attach_index(folder, False)
    with pytest.raises(IndexMismatchError, match="loss.reduction: built with 'mean'"):
        TracInWE(model, train, paths, index=folder)  # the default, reduction="none"


def test_a_loss_with_other_class_weights_is_refused(bag, tmp_path):
    model, train, test, paths = bag
    folder = str(tmp_path / "index")
    weighted = nn.CrossEntropyLoss(weight=WEIGHTS, reduction="none")
    _build(model, train, paths, folder, loss_fn=weighted)
    other = nn.CrossEntropyLoss(weight=WEIGHTS.flip(0), reduction="none")
    with pytest.raises(
        IndexMismatchError,
        match=r"loss.weight: built with tensor float32 \[3\] sha256:[0-9a-f]+.*, "
        r"now tensor float32 \[3\] sha256:",
    ):
        TracInWE(model, train, paths, loss_fn=other, index=folder)
    unweighted = nn.CrossEntropyLoss(reduction="none")
    with pytest.raises(
        IndexMismatchError, match=r"loss.weight: built with tensor.*now None"
    ):
        TracInWE(model, train, paths, loss_fn=unweighted, index=folder)
    as_float64 = nn.CrossEntropyLoss(weight=WEIGHTS.double(), reduction="none")
    with pytest.raises(IndexMismatchError, match="now tensor float64"):
        TracInWE(model, train, paths, loss_fn=as_float64, index=folder)


def _per_example(logits, labels):
    return F.cross_entropy(logits, labels, reduction="none")


def _smoothed(logits, labels):
    return F.cross_entropy(logits, labels, reduction="none", label_smoothing=0.1)


def test_loss_functions_and_partials_are_bound_by_name_and_arguments(bag, tmp_path):
    model, train, test, paths = bag
    folder = str(tmp_path / "function")
    _build(model, train, paths, folder, loss_fn=_per_example)
    name = __name__
    with pytest.raises(
        IndexMismatchError,
        match=f"loss.function: built with '{name}._per_example', now "
        f"'{name}._smoothed'",
    ):
        TracInWE(model, train, paths, loss_fn=_smoothed, index=folder)
    TracInWE(model, train, paths, loss_fn=_per_example, index=folder)

    folder = str(tmp_path / "partial")
    partial = functools.partial(F.cross_entropy, reduction="none", label_smoothing=0.1)
    _build(model, train, paths, folder, loss_fn=partial)
    other = functools.partial(F.cross_entropy, reduction="none", label_smoothing=0.2)
    with pytest.raises(
        IndexMismatchError,
        match=r"loss.keywords: built with \{'label_smoothing': 0.1, 'reduction': "
        r"'none'\}, now \{'label_smoothing': 0.2",
    ):
        TracInWE(model, train, paths, loss_fn=other, index=folder)
    same = functools.partial(F.cross_entropy, reduction="none", label_smoothing=0.1)
    TracInWE(model, train, paths, loss_fn=same, index=folder)


def test_the_identity_of_a_lambda_is_its_qualified_name():
    identity = loss_identity(lambda logits, labels: _per_example(logits, labels))
    assert identity == {
        "kind": "function",
        "function": f"{__name__}.test_the_identity_of_a_lambda_is_its_qualified_name"
        ".<locals>.<lambda>",
    }
    module = loss_identity(nn.BCEWithLogitsLoss(pos_weight=WEIGHTS))
    assert module["class"] == "torch.nn.modules.loss.BCEWithLogitsLoss"
    assert module["pos_weight"].startswith("tensor float32 [3] sha256:")
    assert module["weight"] == "None" and module["reduction"] == "'mean'"


# Item 2: bound to the embedding module


def test_another_embedding_module_is_refused(two_tables, tmp_path):
    model, train, test, paths = two_tables
    folder = str(tmp_path / "index")
    _build(model, train, paths, folder, embedding_layer="emb")
    with pytest.raises(
        IndexMismatchError,
        match=r"built on another embedding module \("
        r"embedding.name: built with 'emb', now 'static'; embedding.padding_idx: "
        r"built with 0, now None\)\. Pass embedding_layer='emb' \(the module the "
        r"index was built on\), or build a new index for this embedding module "
        "into a new folder",
    ):
        TracInWE(model, train, paths, embedding_layer="static", index=folder)
    with pytest.raises(IndexMismatchError, match="embedding.name: built with 'emb'"):
        TracInWE(model, train, paths, embedding_layer=model.static).attach_index(
            folder, verify=False
        )
    model.emb.padding_idx = None  # the same module, other padding
    with pytest.raises(
        IndexMismatchError, match="embedding.padding_idx: built with 0, now None"
    ):
        TracInWE(model, train, paths, embedding_layer="emb", index=folder)


def test_the_same_loss_and_embedding_are_accepted_with_identical_scores(
    two_tables, tmp_path
):
    model, train, test, paths = two_tables
    folder = str(tmp_path / "index")

    def loss():  # a new, equal object each time
        return nn.CrossEntropyLoss(
            weight=WEIGHTS.clone(), label_smoothing=0.1, reduction="none"
        )

    built = _build(model, train, paths, folder, embedding_layer="emb", loss_fn=loss())
    attached = TracInWE(
        model, train, paths, embedding_layer=model.emb, loss_fn=loss(), index=folder
    )
    streaming = TracInWE(model, train, paths, embedding_layer="emb", loss_fn=loss())
    scores = attached.influence(test)
    assert torch.equal(scores, built.influence(test))
    assert_close(scores, streaming.influence(test))
    oracle = TracInCP(
        model,
        train,
        paths,
        load_into(),
        layers=["emb"],
        loss_fn=loss(),
        batch_size=16,
    ).influence(test)
    assert_close(scores, oracle, rel=1e-4)


# Item 2: resuming and old formats


def test_resuming_with_another_loss_or_embedding_is_refused(
    two_tables, tmp_path, monkeypatch
):
    model, train, test, paths = two_tables
    folder = str(tmp_path / "index")
    _kill_after(monkeypatch, 7)
    with pytest.raises(KeyboardInterrupt):
        _build(model, train, paths, folder, embedding_layer="emb")
    monkeypatch.undo()
    smoothed = nn.CrossEntropyLoss(label_smoothing=0.1, reduction="none")
    with pytest.raises(
        IndexMismatchError,
        match=r"holds a build with other settings, model or checkpoints: "
        r"loss.label_smoothing: built with 0.0, now 0.1\. Resume with the same "
        "settings, checkpoints, loss and embedding module, or build into a new "
        "folder",
    ):
        _build(model, train, paths, folder, embedding_layer="emb", loss_fn=smoothed)
    with pytest.raises(
        IndexMismatchError, match="embedding.name: built with 'emb', now 'static'"
    ):
        _build(model, train, paths, folder, embedding_layer="static")
    resumed = _build(model, train, paths, folder, embedding_layer="emb")
    expected = TracInWE(model, train, paths, embedding_layer="emb").influence(test)
    assert_close(resumed.influence(test), expected)


def _rewrite_checked(path, change):
    with open(path) as stream:
        content = json.load(stream)
    content.pop("checksum")
    change(content)
    content["checksum"] = index_format._canonical_digest(content)
    with open(path, "w") as stream:
        json.dump(content, stream)


def _as_format_2(content):
    content["format_version"] = 2
    settings = content.get("settings", content)
    settings.pop("loss", None)
    settings.pop("embedding", None)
    if "settings_digest" in content:
        content["settings_digest"] = index_format._canonical_digest(settings)


def test_an_index_of_the_previous_format_is_refused(bag, tmp_path):
    model, train, test, paths = bag
    folder = tmp_path / "index"
    _build(model, train, paths, folder)
    _rewrite_checked(folder / "manifest.json", _as_format_2)
    with pytest.raises(
        IndexMismatchError,
        match=r"has format version 2 \(written by an older captum_tracin_we\); this "
        r"version reads format 3, which also records the loss and the embedding "
        r"module .* Build a new index into a new folder \(or delete this one first\)",
    ):
        TracInWE(model, train, paths, index=str(folder))
    os.remove(folder / "manifest.json")  # a partial build of the old format
    _rewrite_checked(folder / "build.json", _as_format_2)
    with pytest.raises(
        IndexMismatchError,
        match="holds a build of index format 2 .*; this version builds format 3. "
        "Build into a new folder, or delete this one",
    ):
        _build(model, train, paths, folder)


# Item 7: a full disk during a build


def test_a_full_disk_while_writing_a_unit_names_the_file_and_resumes(
    bag, tmp_path, monkeypatch
):
    model, train, test, paths = bag
    folder = tmp_path / "index"
    real_save = np.save
    calls = {"n": 0}

    def full_disk(stream, array, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:  # the second unit's examples.npy, half written
            stream.write(b"\x93NUMPY" + bytes(30))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(stream, array, **kwargs)

    monkeypatch.setattr(np, "save", full_disk)
    with pytest.raises(OSError) as caught:
        _build(model, train, paths, folder)
    monkeypatch.undo()
    error = caught.value
    assert error.errno == errno.ENOSPC
    line = _one_line(error)  # what the command line prints
    unit = os.path.join(str(folder), "shard-00001-ckpt-00", "examples.npy")
    assert line == (
        f"Could not write {unit!r} while building the index in {str(folder)!r} "
        "(No space left on device). Free some space on that disk, then run the "
        "build again with the same folder: it resumes where it stopped, keeping "
        "the finished units (or build into a new folder elsewhere)."
    )
    assert _temporaries(folder) == []
    resumed = _build(model, train, paths, folder)
    assert_close(resumed.influence(test), TracInWE(model, train, paths).influence(test))


def _marked_by(key):
    return lambda content: isinstance(content, dict) and key in content


@pytest.mark.parametrize(
    "written, name",
    [
        (_marked_by("shards"), "manifest.json"),
        (_marked_by("data_digest"), "shard-00000-ckpt-00.json"),
        (_marked_by("shard_size"), "build.json"),
    ],
)
def test_a_full_disk_while_writing_index_json_names_the_file(
    bag, tmp_path, monkeypatch, written, name
):
    model, train, test, paths = bag
    folder = tmp_path / "index"
    real_dump = json.dump

    def full_disk(content, stream, **kwargs):
        if written(content):
            stream.write("{")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_dump(content, stream, **kwargs)

    monkeypatch.setattr(json, "dump", full_disk)
    with pytest.raises(OSError, match=r"\[Errno 28\] Could not write .*") as caught:
        _build(model, train, paths, folder)
    monkeypatch.undo()
    path = os.path.join(str(folder), name)
    assert f"Could not write {path!r} while building the index in" in str(caught.value)
    assert "Free some space on that disk, then run the build again" in str(caught.value)
    assert _temporaries(folder) == []
    resumed = _build(model, train, paths, folder)
    assert_close(resumed.influence(test), TracInWE(model, train, paths).influence(test))


def test_an_index_folder_that_is_a_file_is_named(bag, tmp_path):
    model, train, test, paths = bag
    (tmp_path / "index").write_text("not a folder")
    with pytest.raises(OSError, match="The index folder .*index' is a file, not a"):
        _build(model, train, paths, tmp_path / "index")


# Item 7: stale temporary files


def test_a_resumed_build_removes_the_temporary_files_a_killed_one_left(
    bag, tmp_path, monkeypatch
):
    model, train, test, paths = bag
    folder = tmp_path / "index"
    _kill_after(monkeypatch, 8)
    with pytest.raises(KeyboardInterrupt):
        _build(model, train, paths, folder)
    monkeypatch.undo()
    assert _temporaries(folder) == []  # an interrupted write removes its own
    stale = [folder / "tmpk1ll3d_x.tmp", folder / "shard-00000-ckpt-00" / "tmpab.tmp"]
    old = time.time() - index_files.STALE_AFTER_S - 1
    for path in stale:  # as a process killed with SIGKILL leaves them
        path.write_bytes(b"\x93NUMPY" + bytes(100))
        os.utime(path, (old, old))
    fresh = folder / "tmpfresh.tmp"  # may be another build's claim in flight
    fresh.write_bytes(b"{}")
    (folder / "notes.txt").write_text("mine")
    resumed = _build(model, train, paths, folder)
    assert _temporaries(folder) == ["tmpfresh.tmp"]
    assert (folder / "notes.txt").read_text() == "mine"
    assert_close(resumed.influence(test), TracInWE(model, train, paths).influence(test))


def test_temporary_files_of_a_live_build_are_kept(bag, tmp_path):
    model, train, test, paths = bag
    folder = tmp_path / "index"
    _build(model, train, paths, folder)
    os.remove(folder / "manifest.json")
    in_flight = folder / "tmpinflight.tmp"
    in_flight.write_bytes(b"being written")
    old = time.time() - index_files.STALE_AFTER_S - 1
    os.utime(in_flight, (old, old))  # stale by age, but another build holds the lock
    handle, alone = index_store._lock_folder(str(folder))  # another live build
    try:
        assert alone
        _build(model, train, paths, folder)
        assert in_flight.exists()
    finally:
        os.close(handle)
    _build(model, train, paths, folder)
    assert not in_flight.exists()


# Item 8: damaged index JSON


@pytest.mark.parametrize(
    "content, message",
    [
        (b"[" * 100000, r"cannot be read as JSON \(RecursionError"),
        (
            b'{"format_version": ' + b"9" * 5000 + b"}",
            r"cannot be read as JSON \(ValueError",
        ),
        (b'{"format_version": 3, "sett', r"cannot be read as JSON \(JSONDecodeError"),
        (b"\xff\xfe\x00", r"cannot be read as JSON \(UnicodeDecodeError"),
        (b"[1, 2]", r"is not a JSON object \(it holds a list\)"),
        (b'"manifest"', r"is not a JSON object \(it holds a str\)"),
    ],
)
def test_a_damaged_manifest_is_refused_by_name(bag, tmp_path, content, message):
    model, train, test, paths = bag
    folder = tmp_path / "index"
    _build(model, train, paths, folder)
    (folder / "manifest.json").write_bytes(content)
    manifest = os.path.join(str(folder), "manifest.json")
    with pytest.raises(
        IndexCorruptedError,
        match=f"^{manifest!r} {message}.*it is damaged or not an index file. "
        r"Rebuild it with TracInWE.build_index\(path\)",
    ):
        TracInWE(model, train, paths, index=str(folder))
    repaired = _build(model, train, paths, folder)  # the fix the message gives
    assert_close(
        repaired.influence(test), TracInWE(model, train, paths).influence(test)
    )


def test_deeply_nested_sidecars_and_build_records_do_not_crash(bag, tmp_path):
    model, train, test, paths = bag
    folder = tmp_path / "index"
    expected = _build(model, train, paths, folder).influence(test)
    (folder / "shard-00001-ckpt-01.json").write_bytes(b"[" * 100000)
    attached = TracInWE(model, train, paths, index=str(folder))  # not read for scores
    assert torch.equal(attached.influence(test), expected)
    os.remove(folder / "manifest.json")
    (folder / "build.json").write_bytes(b"{" * 100000)
    with pytest.warns(UserWarning, match="cannot be read as this version.s build"):
        resumed = _build(model, train, paths, folder)  # the unit is rebuilt
    assert torch.equal(resumed.influence(test), expected)
