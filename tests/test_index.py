#!/usr/bin/env python3

r"""The persistent word-gradient index: equality with streaming, resume, errors."""

import os

import pytest
import torch
from scipy.stats import spearmanr

from captum_tracin_we import TracInWE
from captum_tracin_we._index.index_store import IndexStore
from tests.helpers import assert_close, bag_setup


@pytest.fixture
def bag(tmp_path):
    return bag_setup(str(tmp_path), n_train=40, n_test=6)


@pytest.mark.parametrize("top_k_words", [None, 3])
def test_index_equals_streaming(bag, tmp_path, top_k_words):
    model, train, test, paths = bag
    streaming = TracInWE(model, train, paths, batch_size=7, top_k_words=top_k_words)
    indexed = TracInWE(model, train, paths, batch_size=7, top_k_words=top_k_words)
    indexed.build_index(str(tmp_path / "index"), shard_size=15, show_progress=False)
    assert len(indexed.index.shards) == 3  # shards of 21, 14 and 5 examples
    assert_close(indexed.influence(test), streaming.influence(test))
    assert_close(
        indexed.influence(test, aggregate=True),
        streaming.influence(test, aggregate=True),
    )
    top = indexed.influence(test, k=4, proponents=False)
    assert torch.equal(
        top.indices, streaming.influence(test, k=4, proponents=False).indices
    )
    assert_close(indexed.self_influence(), streaming.self_influence())
    reopened = TracInWE(
        model,
        train,
        paths,
        batch_size=7,
        top_k_words=top_k_words,
        index=str(tmp_path / "index"),
    )
    assert_close(reopened.influence(test), streaming.influence(test))


def test_resume_after_a_crash_gives_identical_scores(bag, tmp_path, monkeypatch):
    model, train, test, paths = bag
    expected = TracInWE(model, train, paths, batch_size=5).influence(test)
    written = []
    real_write = IndexStore.write_unit

    def crash_after_four(self, *args, **kwargs):
        if len(written) == 4:
            raise KeyboardInterrupt("killed")
        written.append(args[0:2])
        real_write(self, *args, **kwargs)

    monkeypatch.setattr(IndexStore, "write_unit", crash_after_four)
    tracin = TracInWE(model, train, paths, batch_size=5)
    with pytest.raises(KeyboardInterrupt):
        tracin.build_index(str(tmp_path / "index"), shard_size=10, show_progress=False)
    assert not os.path.exists(tmp_path / "index" / "manifest.json")
    written_before = list(written)
    written.clear()
    monkeypatch.setattr(
        IndexStore,
        "write_unit",
        lambda self, *a, **k: (written.append(a[0:2]), real_write(self, *a, **k)),
    )
    tracin.build_index(str(tmp_path / "index"), shard_size=10, show_progress=False)
    assert not set(written) & set(written_before)  # finished units were not redone
    assert len(written) + len(written_before) == 4 * 3  # 4 shards x 3 checkpoints
    assert_close(tracin.influence(test), expected)


def test_mismatched_model_settings_and_checkpoints_are_refused(bag, tmp_path):
    model, train, test, paths = bag
    TracInWE(model, train, paths).build_index(
        str(tmp_path / "index"), show_progress=False
    )
    with pytest.raises(ValueError, match="top_k_words None vs 5"):
        TracInWE(model, train, paths, top_k_words=5, index=str(tmp_path / "index"))
    with pytest.raises(ValueError, match="2 checkpoints|3 checkpoints vs 2"):
        TracInWE(model, train, paths[:2], index=str(tmp_path / "index"))
    with torch.no_grad():
        model.emb.weight.add_(0.01)
    changed = str(tmp_path / "changed.pt")
    torch.save(model.state_dict(), changed)
    other = TracInWE(
        model, train, [paths[0], paths[1], changed], index=str(tmp_path / "index")
    )
    with pytest.raises(ValueError, match="not the one the index .* was built from"):
        other.influence(test)
    with pytest.raises(ValueError, match="No TracIn-WE index"):
        TracInWE(model, train, paths, index=str(tmp_path / "nowhere"))


def test_wrong_vocabulary_is_refused(bag, tmp_path):
    from tests.helpers import BagNet, save_checkpoints

    model, train, test, paths = bag
    TracInWE(model, train, paths).build_index(
        str(tmp_path / "index"), show_progress=False
    )
    bigger = BagNet(vocab=80).eval()
    other_paths = save_checkpoints(bigger, str(tmp_path))
    with pytest.raises(ValueError, match="vocabulary 60 vs the model's 80"):
        TracInWE(bigger, train, other_paths, index=str(tmp_path / "index"))


def test_corrupted_shard_is_detected(bag, tmp_path):
    model, train, test, paths = bag
    TracInWE(model, train, paths).build_index(
        str(tmp_path / "index"), shard_size=20, show_progress=False
    )
    target = tmp_path / "index" / "shard-00001-ckpt-02" / "vectors.npy"
    data = bytearray(target.read_bytes())
    data[-3] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="missing, truncated or altered"):
        TracInWE(model, train, paths, index=str(tmp_path / "index"))


def test_rebuilding_into_a_folder_with_other_settings_is_refused(bag, tmp_path):
    model, train, test, paths = bag
    TracInWE(model, train, paths).build_index(
        str(tmp_path / "index"), show_progress=False
    )
    with pytest.raises(ValueError, match="other settings"):
        TracInWE(model, train, paths, top_k_words=2).build_index(
            str(tmp_path / "index"), show_progress=False
        )


def test_compression_fidelity(tmp_path):
    model, train, test, paths = bag_setup(str(tmp_path), n_train=60, n_test=8)
    exact = TracInWE(model, train, paths).influence(test)
    half = TracInWE(model, train, paths)
    half.build_index(str(tmp_path / "f16"), dtype="float16", show_progress=False)
    assert_close(half.influence(test), exact, rel=2e-3)
    projected = TracInWE(model, train, paths)
    projected.build_index(str(tmp_path / "jl"), projection_dim=64, show_progress=False)
    approx = projected.influence(test)
    rho = spearmanr(approx.flatten().numpy(), exact.flatten().numpy()).statistic
    assert rho > 0.9, rho
    assert_close(
        projected.self_influence(), TracInWE(model, train, paths).self_influence()
    )
