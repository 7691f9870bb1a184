#!/usr/bin/env python3

r"""Evaluation metrics on constructed cases with known answers, and a small run."""

import os

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from captum_tracin_we import TracInWE  # noqa: E402
from captum_tracin_we.datasets import PAD_ID, planted_trigger_dataset  # noqa: E402
from captum_tracin_we.evaluation import (  # noqa: E402
    auc_table,
    case_deletion,
    flip_labels,
    format_markdown,
    label_agreement,
    mislabel_detection,
    plot_deletion_curves,
    random_scores,
    removal_set,
    tfidf_tracin_scores,
    topk_cardinality,
)

# A "model" whose test probabilities are additive in the kept training examples:
# p_i = 0.5 + sum_{j kept} W[i, j]. Removing set R changes p_i by -sum_{j in R} W[i, j].
W = torch.tensor(
    [[0.05, -0.02, 0.01, 0.00, -0.04, 0.03], [-0.01, 0.02, 0.00, 0.04, 0.01, -0.03]]
)


def additive_train_fn(kept, seed):
    return (frozenset(kept), seed)


def additive_probabilities(model):
    kept, seed = model
    mask = torch.zeros(W.shape[1])
    mask[list(kept)] = 1
    return 0.5 + W @ mask + 0.001 * seed


def test_removal_set_takes_largest_or_most_negative():
    scores = torch.tensor([0.3, -0.5, 0.9, 0.0, -0.1])
    assert removal_set(scores, 2, proponents=True) == [2, 0]
    assert removal_set(scores, 2, proponents=False) == [1, 4]
    with pytest.raises(ValueError, match="exceeds"):
        removal_set(scores, 6, True)


def test_case_deletion_on_an_additive_model_has_known_answers():
    calls = []

    def train_fn(kept, seed):
        calls.append((tuple(kept), seed))
        return additive_train_fn(kept, seed)

    result = case_deletion(
        {"perfect": W.clone(), "reversed": -W},
        None,
        train_fn,
        additive_probabilities,
        n_train=6,
        ks=(1, 2),
        seeds=(0, 1),
        show_progress=False,
    )
    # Perfect scores remove the most helpful examples: DEL+ = -(sum of top-k W).
    plus = result.deltas["perfect"]["DEL+"]
    assert plus[0, 0].tolist() == pytest.approx([-0.05, -0.05], abs=1e-6)
    assert plus[0, 1].tolist() == pytest.approx([-0.08, -0.08], abs=1e-6)
    assert plus[1, 1].tolist() == pytest.approx([-0.06, -0.06], abs=1e-6)
    minus = result.deltas["perfect"]["DEL-"]
    assert minus[0, 1].tolist() == pytest.approx([0.06, 0.06], abs=1e-6)
    # The reversed method swaps the two.
    assert torch.allclose(result.deltas["reversed"]["DEL+"], minus)
    mean, se = result.auc("perfect", "DEL+")
    assert mean == pytest.approx(float(plus.mean()))
    assert se == pytest.approx(float(plus.mean(dim=(1, 2)).std() / 2**0.5))
    # Shared removal sets are trained once: baseline 2 + perfect 2x2x2x2 (reused
    # by reversed) + random 2x2x2, minus coincidences.
    assert result.retrains == len(set(calls)) == len(calls) <= 2 + 16 + 8
    assert result.deltas["random"]["random"].shape == (2, 2, 2)
    rows = result.table()
    assert {r["method"] for r in rows} == {"perfect", "reversed", "random"}
    assert "AUC-DEL+" in format_markdown(auc_table(result))
    fig, axes = plot_deletion_curves(result)
    assert len(axes) == 2


def test_batched_retraining_gives_the_same_result_in_same_size_chunks():
    chunks = []

    def train_many_fn(kept_lists, seeds):
        chunks.append([len(kept) for kept in kept_lists])
        return [additive_train_fn(k, s) for k, s in zip(kept_lists, seeds)]

    args = ({"perfect": W.clone()}, None)
    kwargs = dict(
        probability_fn=additive_probabilities,
        n_train=6,
        ks=(1, 2),
        seeds=(0, 1),
        show_progress=False,
    )
    one_by_one = case_deletion(*args, additive_train_fn, **kwargs)
    batched = case_deletion(
        *args, None, train_many_fn=train_many_fn, retrains_per_call=3, **kwargs
    )
    for metric in ("DEL+", "DEL-"):
        assert torch.equal(
            batched.deltas["perfect"][metric], one_by_one.deltas["perfect"][metric]
        )
    assert torch.equal(
        batched.deltas["random"]["random"], one_by_one.deltas["random"]["random"]
    )
    assert batched.retrains == one_by_one.retrains == sum(map(len, chunks))
    assert all(len(c) <= 3 and len(set(c)) == 1 for c in chunks)
    assert {c[0] for c in chunks} == {6, 5, 4}  # baseline, k=1, k=2

    with pytest.raises(ValueError, match="one per pair"):
        case_deletion(*args, None, train_many_fn=lambda k, s: [], **kwargs)
    with pytest.raises(ValueError, match="train_fn"):
        case_deletion(*args, None, **kwargs)


def test_case_deletion_rejects_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        case_deletion(
            {"a": W, "b": W[:, :3]},
            None,
            additive_train_fn,
            additive_probabilities,
            6,
            ks=(1,),
            show_progress=False,
        )
    with pytest.raises(ValueError, match="below n_train"):
        case_deletion(
            {"a": W},
            None,
            additive_train_fn,
            additive_probabilities,
            6,
            ks=(6,),
            show_progress=False,
        )


def test_mislabel_detection_on_known_rankings():
    flipped = torch.tensor(
        [True, False, True, False, False, False, False, False, False, False]
    )
    perfect = flipped.float() + 0.01 * torch.arange(10)
    metrics = mislabel_detection(perfect, flipped, fractions=(0.1, 0.2))
    assert metrics["roc_auc"] == 1.0
    assert metrics["NDR@10%"] == 0.5 and metrics["NDR@20%"] == 1.0
    assert mislabel_detection(-perfect, flipped)["roc_auc"] == 0.0
    with pytest.raises(ValueError, match="some, but not all"):
        mislabel_detection(perfect, torch.zeros(10, dtype=torch.bool))


def test_flip_labels_flips_the_requested_share_to_other_classes():
    labels = torch.arange(100) % 3
    noisy, flipped = flip_labels(labels, 0.2, n_classes=3, seed=1)
    assert int(flipped.sum()) == 20
    assert (noisy[flipped] != labels[flipped]).all()
    assert torch.equal(noisy[~flipped], labels[~flipped])
    assert ((noisy >= 0) & (noisy < 3)).all()


def test_label_agreement_and_cardinality():
    scores = torch.tensor([[3.0, 2.0, 1.0, 0.0], [3.0, 2.0, 1.0, 0.0]])
    train_labels = torch.tensor([1, 0, 1, 0])
    assert label_agreement(scores, train_labels, torch.tensor([1, 0]), k=2) == 0.5
    assert topk_cardinality(scores, k=2) == 2  # both tests get the same list
    varied = torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    assert topk_cardinality(varied, k=2) == 4
    assert random_scores(2, 4, seed=3).shape == (2, 4)


def test_tfidf_tracin_multiplies_text_and_error_similarity():
    train = ["good film", "bad film", "something else"]
    test = ["good film"]
    grads_train = [(0.5, torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))]
    grads_test = [(0.5, torch.tensor([[2.0, 0.0]]))]
    scores = tfidf_tracin_scores(train, test, grads_train, grads_test)
    assert scores.shape == (1, 3)
    assert scores[0, 0] == pytest.approx(1.0)  # identical text, error sim 0.5 * 2
    assert scores[0, 1] == 0.0  # error gradients orthogonal
    assert scores[0, 2] == 0.0  # no shared words


class TinyBag(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.emb = nn.Embedding(vocab, 8, padding_idx=PAD_ID)
        self.fc = nn.Linear(8, 2)

    def forward(self, ids):
        mask = (ids != PAD_ID).float().unsqueeze(-1)
        return self.fc(torch.relu(self.emb(ids) * mask).max(1).values)


def test_small_end_to_end_case_deletion_with_tracin_we(tmp_path):
    data = planted_trigger_dataset(240, seed=3)
    n_train = 200
    ids, labels = data.token_ids, data.labels

    def train_fn(kept, seed, save_to=None):
        torch.manual_seed(seed)
        model = TinyBag(data.vocab_size)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
        kept = torch.tensor(list(kept))
        paths = []
        for epoch in range(4):
            order = kept[torch.randperm(len(kept))]
            for start in range(0, len(order), 32):
                batch = order[start : start + 32]
                loss = nn.functional.cross_entropy(model(ids[batch]), labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if save_to:
                paths.append(os.path.join(save_to, f"c{epoch}.pt"))
                torch.save(model.state_dict(), paths[-1])
        return (model.eval(), paths) if save_to else model.eval()

    test_ids, test_labels = ids[n_train : n_train + 4], labels[n_train : n_train + 4]

    @torch.no_grad()
    def probability_fn(model):
        return model(test_ids).softmax(-1).gather(1, test_labels[:, None]).squeeze(1)

    model, paths = train_fn(range(n_train), 0, save_to=str(tmp_path))
    train = torch.utils.data.TensorDataset(ids[:n_train], labels[:n_train])
    tracin = TracInWE(model, train, paths, batch_size=64)
    result = case_deletion(
        {"TracIn-WE": tracin},
        (test_ids, test_labels),
        train_fn,
        probability_fn,
        n_train,
        ks=(10, 20),
        seeds=(0, 1),
        show_progress=False,
    )
    plus, _ = result.auc("TracIn-WE", "DEL+")
    minus, _ = result.auc("TracIn-WE", "DEL-")
    assert plus < minus  # removing proponents hurts more than removing opponents
    assert result.deltas["TracIn-WE"]["DEL+"].shape == (4, 2, 2)
