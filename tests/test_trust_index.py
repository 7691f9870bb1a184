#!/usr/bin/env python3

r"""
The index is bound to its training data, checkpoints and settings; damage is
detected or repaired; builds cannot mix (issue 9). The fault-injection test at
the end flips and truncates random index files and kills builds at random
points: every trial ends in a clear error or in scores identical to a clean
build.
"""

import copy
import json
import os
import random
import shutil
import threading

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

import captum_tracin_we._index.index_format as index_format
import captum_tracin_we._index.index_store as index_store
from captum_tracin_we import (
    IndexCorruptedError,
    IndexMismatchError,
    TracInWE,
    TracInWEError,
)
from tests.helpers import assert_close, bag_setup, random_ids


@pytest.fixture
def bag(tmp_path):
    return bag_setup(str(tmp_path), n_train=30, n_test=5)


def _build(model, train, paths, folder, **options):
    tracin = TracInWE(model, train, paths, batch_size=4)
    tracin.build_index(str(folder), shard_size=10, show_progress=False, **options)
    return tracin


def _other_texts(train):
    ids, labels = train.tensors
    other = random_ids(len(ids), ids.shape[1], seed=99)
    return TensorDataset(other, labels)


# 1. Bound to the training data -------------------------------------------------------


def test_fewer_training_examples_are_refused(bag, tmp_path):
    model, train, test, paths = bag
    _build(model, train, paths, tmp_path / "index")
    subset = TensorDataset(*(t[:20] for t in train.tensors))
    with pytest.raises(IndexMismatchError, match="built from 30 .* has 20"):
        TracInWE(model, subset, paths, index=str(tmp_path / "index"))
    with pytest.raises(IndexMismatchError, match="built from 30 .* has 20"):
        TracInWE(model, subset, paths).attach_index(str(tmp_path / "index"), False)


def test_other_texts_of_the_same_size_are_refused(bag, tmp_path):
    model, train, test, paths = bag
    _build(model, train, paths, tmp_path / "index")
    with pytest.raises(IndexMismatchError, match="training data differ .*shard 0"):
        TracInWE(model, _other_texts(train), paths, index=str(tmp_path / "index"))
    ids, labels = train.tensors
    relabelled = TensorDataset(ids, labels.roll(1))
    with pytest.raises(IndexMismatchError, match="training data differ"):
        TracInWE(model, relabelled, paths, index=str(tmp_path / "index"))


def test_the_data_check_ignores_batch_size_and_padding(bag, tmp_path):
    model, train, test, paths = bag
    _build(model, train, paths, tmp_path / "index")
    ids, labels = train.tensors
    padded = TensorDataset(torch.cat([ids, torch.zeros(30, 3).long()], 1), labels)
    tracin = TracInWE(model, padded, paths, batch_size=7, index=str(tmp_path / "index"))
    expected = TracInWE(model, train, paths, batch_size=3).influence(test)
    assert_close(tracin.influence(test), expected)


def test_resuming_with_other_data_is_refused(bag, tmp_path, monkeypatch):
    model, train, test, paths = bag
    _kill_after(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        _build(model, train, paths, tmp_path / "index")
    monkeypatch.undo()
    with pytest.raises(IndexMismatchError, match="partial build from other training"):
        _build(model, _other_texts(train), paths, tmp_path / "index")


# 2. Rebuilding repairs damage --------------------------------------------------------


def _scale_vectors(folder, factor):
    path = os.path.join(folder, "shard-00001-ckpt-01", "vectors.npy")
    vectors = np.load(path)
    np.save(path, vectors * factor)


def test_rebuilding_repairs_a_damaged_unit(bag, tmp_path):
    model, train, test, paths = bag
    expected = TracInWE(model, train, paths).influence(test)
    _build(model, train, paths, tmp_path / "index")
    _scale_vectors(tmp_path / "index", 10)
    with pytest.raises(IndexCorruptedError, match="shard-00001-ckpt-01"):
        TracInWE(model, train, paths, index=str(tmp_path / "index"))
    repaired = _build(model, train, paths, tmp_path / "index")
    assert_close(repaired.influence(test), expected)
    reopened = TracInWE(model, train, paths, index=str(tmp_path / "index"))
    assert_close(reopened.influence(test), expected)


# 3. Bound to each checkpoint's whole state and rate ----------------------------------


def _rewrite(path, change):
    checkpoint = torch.load(path, weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, path)


def test_a_changed_classifier_head_is_refused(bag, tmp_path):
    model, train, test, paths = bag
    tracin = _build(model, train, paths, tmp_path / "index")

    def scale_head(checkpoint):
        checkpoint["model_state_dict"]["fc.weight"] *= -3

    _rewrite(paths[1], scale_head)
    with pytest.raises(IndexMismatchError, match="checkpoint-1.pt.*weights differ"):
        tracin.influence(test)
    with pytest.raises(IndexMismatchError, match="weights differ"):
        tracin.self_influence()


def test_a_changed_learning_rate_is_refused_everywhere(bag, tmp_path):
    model, train, test, paths = bag
    tracin = _build(model, train, paths, tmp_path / "index")
    _rewrite(paths[2], lambda checkpoint: checkpoint.update(learning_rate=0.01))
    with pytest.raises(IndexMismatchError, match="learning rate 0.01.*built with 2.5"):
        tracin.influence(test)
    with pytest.raises(IndexMismatchError, match="learning rate 0.01.*built with 2.5"):
        tracin.self_influence()


# 7. One build per folder -------------------------------------------------------------


def test_concurrent_builds_with_other_settings_cannot_share_a_folder(
    bag, tmp_path, monkeypatch
):
    model, train, test, paths = bag
    folder = tmp_path / "index"
    real_link = os.link
    both_checked = threading.Barrier(2)

    def slow_link(source, target):  # both builds reach the claim together
        both_checked.wait(timeout=10)
        return real_link(source, target)

    monkeypatch.setattr(index_store.os, "link", slow_link)
    outcomes = {}

    def build(name, top_k):
        try:  # each thread has its own copy of the model
            _build(copy.deepcopy(model), train, paths, folder, **top_k)
            outcomes[name] = "built"
        except IndexMismatchError as error:
            outcomes[name] = str(error)

    threads = [
        threading.Thread(target=build, args=("exact", {})),
        threading.Thread(target=build, args=("half", {"dtype": "float16"})),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["exact", "half"]
    assert list(outcomes.values()).count("built") == 1
    refused = next(text for text in outcomes.values() if text != "built")
    assert "other settings" in refused
    monkeypatch.undo()
    winner = "exact" if outcomes["exact"] == "built" else "half"
    attached = TracInWE(model, train, paths, index=str(folder))
    expected = TracInWE(model, train, paths).influence(test)
    assert_close(
        attached.influence(test), expected, rel=1e-5 if winner == "exact" else 2e-3
    )


def test_units_of_other_settings_never_count_as_finished(bag, tmp_path):
    model, train, test, paths = bag
    folder = tmp_path / "index"
    _build(model, train, paths, folder, dtype="float16")
    os.remove(folder / "build.json")  # a second build takes the folder over
    exact = _build(model, train, paths, folder)
    expected = TracInWE(model, train, paths).influence(test)
    assert_close(exact.influence(test), expected)  # float16 units were redone


def test_a_truncated_build_json_does_not_block_resuming(bag, tmp_path, monkeypatch):
    model, train, test, paths = bag
    folder = tmp_path / "index"
    _kill_after(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        _build(model, train, paths, folder)
    monkeypatch.undo()
    (folder / "build.json").write_text('{"format_version": 2, "voc')
    with pytest.warns(
        UserWarning, match="cannot be read as this version.s build record"
    ):
        resumed = _build(model, train, paths, folder)
    assert_close(resumed.influence(test), TracInWE(model, train, paths).influence(test))


# Crafted manifests -------------------------------------------------------------------


def _edit_manifest(folder, change, keep_checksum=False):
    path = os.path.join(folder, "manifest.json")
    with open(path) as stream:
        manifest = json.load(stream)
    change(manifest)
    if not keep_checksum:
        body = {k: v for k, v in manifest.items() if k != "checksum"}
        manifest["checksum"] = index_format._canonical_digest(body)
    with open(path, "w") as stream:
        json.dump(manifest, stream)


def _drop(key):
    return lambda manifest: manifest["shards"][0].pop(key)


def _negative_count(manifest):
    manifest["shards"][1]["count"] = -5


def _escape_name(manifest):
    files = manifest["shards"][0]["files"]["0"]
    files["../../X"] = files["tokens"]


def _swap_shards(manifest):
    shards = manifest["shards"]
    shards[0]["first"], shards[1]["first"] = shards[1]["first"], shards[0]["first"]


def _stale_rate(manifest):
    manifest["settings"]["learning_rates"][0] = 9.0


@pytest.mark.parametrize(
    "change, message",
    [
        (_drop("count"), "schema.*'count' is a required property"),
        (_negative_count, "schema.*-5"),
        (_escape_name, "schema.*../../X"),
        (_swap_shards, "not contiguous"),
        (_stale_rate, "do not match their digest"),
    ],
)
def test_crafted_manifests_are_refused(bag, tmp_path, change, message):
    model, train, test, paths = bag
    _build(model, train, paths, tmp_path / "index")
    _edit_manifest(tmp_path / "index", change)
    with pytest.raises(IndexCorruptedError, match=message):
        TracInWE(model, train, paths, index=str(tmp_path / "index"))


def test_manifest_edits_and_bad_json_are_refused(bag, tmp_path):
    model, train, test, paths = bag
    folder = tmp_path / "index"
    _build(model, train, paths, folder)
    _edit_manifest(folder, _negative_count, keep_checksum=True)
    with pytest.raises(IndexCorruptedError, match="altered"):
        TracInWE(model, train, paths, index=str(folder))
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(IndexCorruptedError, match="cannot be read as JSON"):
        TracInWE(model, train, paths, index=str(folder))


def test_inconsistent_offsets_are_caught_without_checksums(bag, tmp_path):
    model, train, test, paths = bag
    folder = tmp_path / "index"
    _build(model, train, paths, folder)
    path = folder / "shard-00000-ckpt-00" / "offsets.npy"
    offsets = np.load(path)
    offsets[[3, 40]] = offsets[[40, 3]]
    np.save(path, offsets)  # same size: only the structure check can see it
    tracin = TracInWE(model, train, paths)
    tracin.attach_index(str(folder), verify=False)
    with pytest.raises(IndexCorruptedError, match="offsets"):
        tracin.influence(test)


def test_no_path_outside_the_folder_is_touched(bag, tmp_path, monkeypatch):
    model, train, test, paths = bag
    folder = tmp_path / "index"
    _build(model, train, paths, folder)
    opened = []
    real_open = open

    def watching_open(path, *args, **kwargs):
        opened.append(os.path.realpath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", watching_open)
    tracin = TracInWE(model, train, paths, index=str(folder))
    tracin.influence(test)
    root = os.path.realpath(folder)
    index_files = [p for p in opened if not p.endswith(".pt")]
    assert index_files and all(p.startswith(root + os.sep) for p in index_files)


# Fault injection ---------------------------------------------------------------------


def _kill_after(monkeypatch, units, torn=False):
    r"""Makes the build die while writing unit number ``units``."""
    real_save = index_store._atomic_save
    calls = {"n": 0}

    def dying_save(path, array):
        if calls["n"] == units * len(index_store.ARRAYS) + 2:
            if torn:  # a file system without atomic rename: half a file in place
                with open(path, "wb") as stream:
                    stream.write(b"\x93NUMPY" + os.urandom(40))
            raise KeyboardInterrupt("killed")
        calls["n"] += 1
        return real_save(path, array)

    monkeypatch.setattr(index_store, "_atomic_save", dying_save)


def _damage(folder, rng):
    files = sorted(
        os.path.join(root, name) for root, _, names in os.walk(folder) for name in names
    )
    target = rng.choice(files)
    data = bytearray(open(target, "rb").read())
    if rng.random() < 0.5 and data:
        data = data[: rng.randrange(len(data))]
    else:
        for _ in range(rng.randint(1, 3)):
            position = rng.randrange(len(data))
            data[position] ^= 1 << rng.randrange(8)
    with open(target, "wb") as stream:
        stream.write(bytes(data))
    return os.path.relpath(target, folder)


def test_fault_injection(bag, tmp_path, monkeypatch):
    model, train, test, paths = bag
    clean_folder = tmp_path / "clean"
    expected = _build(model, train, paths, clean_folder).influence(test)
    expected_self = TracInWE(model, train, paths).self_influence()
    rng = random.Random(0)
    outcomes = {"error": 0, "identical": 0}
    for trial in range(40):  # random byte flips and truncations
        folder = tmp_path / f"damaged{trial}"
        shutil.copytree(clean_folder, folder)
        target = _damage(folder, rng)
        try:
            tracin = TracInWE(model, train, paths, batch_size=4, index=str(folder))
            scores = tracin.influence(test)
            self_scores = tracin.self_influence()
        except TracInWEError as error:
            assert "build" in str(error), str(error)
            outcomes["error"] += 1
            continue
        assert torch.equal(scores, expected), target
        assert torch.equal(self_scores.float(), _indexed_self(clean_folder, bag))
        outcomes["identical"] += 1
    for trial in range(12):  # builds killed at random points, then resumed
        folder = tmp_path / f"killed{trial}"
        _kill_after(monkeypatch, rng.randrange(9), torn=bool(trial % 2))
        with pytest.raises(KeyboardInterrupt):
            _build(model, train, paths, folder)
        monkeypatch.undo()
        resumed = _build(model, train, paths, folder)
        assert torch.equal(resumed.influence(test), expected)
        assert_close(resumed.self_influence(), expected_self)
    assert outcomes["error"] > 20 and sum(outcomes.values()) == 40


def _indexed_self(folder, bag):
    model, train, _, paths = bag
    return TracInWE(model, train, paths, index=str(folder)).self_influence()


# Found by the hostile review ---------------------------------------------------------


class _WithFeature(torch.nn.Module):
    r"""A bag model with one float feature per example besides the ids."""

    def __init__(self) -> None:
        super().__init__()
        from tests.helpers import BagNet

        self.bag = BagNet()
        self.scale = torch.nn.Linear(1, 3)

    def forward(self, ids, feature):
        return self.bag(ids) + self.scale(feature[:, None])


def test_other_non_token_inputs_are_refused(tmp_path):
    from tests.helpers import save_checkpoints

    torch.manual_seed(0)
    model = _WithFeature().eval()
    paths = save_checkpoints(model, str(tmp_path), count=2)
    ids, labels = random_ids(12, 6, 1), torch.arange(12) % 3
    built = TensorDataset(ids, torch.linspace(0, 1, 12), labels)
    other = TensorDataset(ids, torch.linspace(1, 2, 12), labels)
    tracin = TracInWE(model, built, paths, batch_size=4)
    tracin.build_index(str(tmp_path / "index"), show_progress=False)
    with pytest.raises(IndexMismatchError, match="training data differ"):
        TracInWE(model, other, paths, batch_size=4, index=str(tmp_path / "index"))


class _ExtraState(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from tests.helpers import BagNet

        self.bag = BagNet()

    def forward(self, ids):
        return self.bag(ids)

    def get_extra_state(self):
        return {"vocabulary": "v1"}

    def set_extra_state(self, state):
        self.state = state


def test_modules_with_extra_state_can_be_indexed(tmp_path):
    model = _ExtraState().eval()
    ids, labels = random_ids(8, 6, 1), torch.arange(8) % 3
    path = str(tmp_path / "ckpt.pt")
    torch.save({"model_state_dict": model.state_dict(), "learning_rate": 0.5}, path)
    train = TensorDataset(ids, labels)
    tracin = TracInWE(model, train, [path], batch_size=4)
    tracin.build_index(str(tmp_path / "index"), show_progress=False)
    expected = TracInWE(model, train, [path]).influence((ids[:2], labels[:2]))
    assert_close(tracin.influence((ids[:2], labels[:2])), expected)


def test_builds_work_without_hard_links(bag, tmp_path, monkeypatch):
    import errno

    model, train, test, paths = bag

    def no_link(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(index_store.os, "link", no_link)
    tracin = _build(model, train, paths, tmp_path / "index")
    assert_close(tracin.influence(test), TracInWE(model, train, paths).influence(test))
    with pytest.raises(IndexMismatchError, match="other settings"):
        _build(model, train, paths, tmp_path / "index", dtype="float16")


def test_a_consistently_rewritten_manifest_is_caught_by_the_sidecars(bag, tmp_path):
    model, train, test, paths = bag
    _build(model, train, paths, tmp_path / "index")

    def seed(manifest):
        manifest["settings"]["projection_seed"] = 3
        body = dict(manifest["settings"])
        manifest["settings_digest"] = index_format._canonical_digest(body)

    _edit_manifest(tmp_path / "index", seed)
    with pytest.raises(IndexCorruptedError, match="disagrees with unit"):
        TracInWE(model, train, paths, index=str(tmp_path / "index"))


def test_a_rewritten_checkpoint_with_its_old_time_stamp_is_refused(bag, tmp_path):
    model, train, test, paths = bag
    tracin = _build(model, train, paths, tmp_path / "index")
    tracin.influence(test)  # fingerprints remembered
    status = os.stat(paths[1])

    def scale_head(checkpoint):
        checkpoint["model_state_dict"]["fc.weight"] *= -3

    _rewrite(paths[1], scale_head)
    os.utime(paths[1], ns=(status.st_atime_ns, status.st_mtime_ns))
    with pytest.raises(IndexMismatchError, match="weights differ"):
        tracin.influence(test)


def test_a_loader_that_writes_part_of_the_state_is_hashed_every_time(bag, tmp_path):
    model, train, test, paths = bag

    def embedding_only(model, path):
        state = torch.load(path, weights_only=True)["model_state_dict"]
        model.emb.load_state_dict({"weight": state["emb.weight"]})
        return 1.0

    tracin = TracInWE(model, train, paths, embedding_only, batch_size=4)
    tracin.build_index(str(tmp_path / "index"), show_progress=False)
    tracin.influence(test)
    with torch.no_grad():
        model.fc.weight.mul_(-3)  # not in what the loader writes
    with pytest.raises(IndexMismatchError, match="weights differ"):
        tracin.influence(test)


def test_units_stay_mapped_between_queries_until_their_files_change(bag, tmp_path):
    # Units are kept mapped across queries; a file changed after a query is
    # mapped and checked again, never read through a stale map.
    model, train, test, paths = bag
    folder = tmp_path / "index"
    _build(model, train, paths, folder)
    tracin = TracInWE(model, train, paths)
    tracin.attach_index(str(folder), verify=False)
    first = tracin.influence(test)
    opened = []
    read_unit = tracin.index.store.read_unit

    def counting(*args):
        opened.append(args[1:])
        return read_unit(*args)

    tracin.index.store.read_unit = counting
    assert torch.equal(tracin.influence(test), first)
    assert opened == []  # every unit still mapped
    _scale_vectors(folder, 3)  # shard 1, checkpoint 1, rewritten
    scaled = tracin.influence(test)
    assert len(opened) == 1
    assert not torch.allclose(scaled, first)
    fresh = TracInWE(model, train, paths)
    fresh.attach_index(str(folder), verify=False)
    assert torch.equal(scaled, fresh.influence(test))
    path = folder / "shard-00000-ckpt-00" / "vectors.npy"
    with open(path, "r+b") as stream:
        stream.truncate(os.path.getsize(path) - 8)
    with pytest.raises(IndexCorruptedError, match="truncated"):
        tracin.influence(test)
