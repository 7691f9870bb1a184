#!/usr/bin/env python3

import io
import os
from contextlib import redirect_stderr

import pytest
import torch
from captum.influence import TracInCPBase
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from captum_tracin_we import KMostInfluentialResults, TracInWE
from tests.helpers import (
    CLS,
    PAD,
    SEP,
    LogitsOnly,
    assert_close,
    bag_setup,
    dense_reference,
    dict_dataset,
    embedding_name,
    load_into,
    random_ids,
    save_checkpoints,
    tiny_hf_classifier,
    tracincp_oracle,
)

CE = nn.CrossEntropyLoss


@pytest.fixture
def bag(tmp_path):
    return bag_setup(str(tmp_path))


def test_is_a_captum_tracin(bag):
    model, train, test, paths = bag
    assert isinstance(TracInWE(model, train, paths), TracInCPBase)


def test_equals_tracincp_on_embedding_with_padding_idx(bag):
    model, train, test, paths = bag
    expected = tracincp_oracle(model, "emb", train, test, paths, load_into())
    scores = TracInWE(model, train, paths, loss_fn=CE(reduction="none"), batch_size=5)
    assert_close(scores.influence(test), expected)


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert", "gpt2"])
def test_equals_tracincp_on_hf_classifiers(tmp_path, family):
    model = tiny_hf_classifier(family)
    ids = random_ids(22, 10, seed=3)
    labels = torch.randint(0, 3, (22,), generator=torch.Generator().manual_seed(4))
    paths = save_checkpoints(model, str(tmp_path), step=0.05)
    mask = (ids != PAD).long()
    expected = tracincp_oracle(
        LogitsOnly(model),
        "hf." + embedding_name(model),
        TensorDataset(ids[:16], mask[:16], labels[:16]),
        (ids[16:], mask[16:], labels[16:]),
        paths,
        load_into("hf"),
    )
    train = DataLoader(dict_dataset(ids[:16], labels[:16]), batch_size=5)
    test = {"input_ids": ids[16:], "attention_mask": mask[16:], "labels": labels[16:]}
    tracin = TracInWE(model, train, paths, batch_size=None)
    assert_close(tracin.influence(test), expected)


def test_equals_dense_reference_and_lr_weighting(bag):
    model, train, test, paths = bag
    expected = dense_reference(model, train.tensors, test, paths)
    assert_close(TracInWE(model, train, paths).influence(test), expected)
    single = dense_reference(model, train.tensors, test, paths[:1])
    assert_close(TracInWE(model, train, paths[:1]).influence(test), single)


def test_top_k_words_equals_dense_reference(bag):
    model, train, test, paths = bag
    expected = dense_reference(model, train.tensors, test, paths, top_k=3)
    tracin = TracInWE(model, train, paths, top_k_words=3, batch_size=7)
    assert_close(tracin.influence(test), expected)
    full = TracInWE(model, train, paths).influence(test)
    assert not torch.allclose(full, expected.float())


def test_exclude_token_ids_equals_dense_reference(bag):
    model, train, test, paths = bag
    expected = dense_reference(model, train.tensors, test, paths, exclude=(CLS, SEP))
    tracin = TracInWE(model, train, paths, exclude_token_ids=[CLS, SEP])
    assert_close(tracin.influence(test), expected)
    everything = TracInWE(model, train, paths, exclude_token_ids=range(60))
    assert everything.influence(test).abs().max() == 0


def test_special_tokens_count_by_default(bag):
    model, train, test, paths = bag
    with_special = TracInWE(model, train, paths).influence(test)
    without = TracInWE(model, train, paths, exclude_token_ids=[CLS]).influence(test)
    assert (with_special - without).abs().max() > 1e-6


@pytest.mark.parametrize("top_k_words", [None, 4])
def test_k_most_influential_equals_sorting(bag, top_k_words):
    model, train, test, paths = bag
    tracin = TracInWE(model, train, paths, top_k_words=top_k_words)
    scores = tracin.influence(test)
    for proponents in (True, False):
        result = tracin.influence(test, k=5, proponents=proponents)
        assert isinstance(result, KMostInfluentialResults)
        assert result.indices.dtype == torch.long and result.indices.shape == (6, 5)
        expected = scores.sort(dim=1, descending=proponents).values[:, :5]
        assert_close(result.influence_scores, expected, rel=1e-6)
        assert_close(scores.gather(1, result.indices), expected, rel=1e-6)


def test_aggregate_equals_sum(bag):
    model, train, test, paths = bag
    tracin = TracInWE(model, train, paths, batch_size=4)
    scores = tracin.influence(test)
    assert_close(tracin.influence(test, aggregate=True), scores.sum(0, keepdim=True))
    top = tracin.influence(test, k=3, aggregate=True)
    assert top.indices.shape == (1, 3)
    assert_close(top.influence_scores, scores.sum(0).topk(3).values[None], rel=1e-5)


@pytest.mark.parametrize("top_k_words", [None, 3])
def test_self_influence_equals_diagonal(bag, top_k_words):
    model, train, test, paths = bag
    tracin = TracInWE(model, train, paths, top_k_words=top_k_words, batch_size=5)
    all_train = tuple(train.tensors)
    diagonal = tracin.influence(all_train).diagonal()
    assert_close(tracin.self_influence(), diagonal)
    assert_close(tracin.self_influence(all_train), diagonal)
    assert_close(tracin.self_influence(outer_loop_by_checkpoints=True), diagonal)
    assert (tracin.self_influence() >= 0).all()


def test_identical_training_example_is_top_proponent(tmp_path):
    model, train, test, paths = bag_setup(str(tmp_path))
    ids, labels = train.tensors
    ids = torch.cat([ids, test[0][2:3]])
    labels = torch.cat([labels, test[1][2:3]])
    tracin = TracInWE(model, TensorDataset(ids, labels), paths)
    scores = tracin.influence((test[0][2:3], test[1][2:3]))
    assert scores[0, -1] > 0
    assert int(scores[0].argmax()) == len(ids) - 1
    assert_close(scores[0, -1:], tracin.self_influence((ids[-1:], labels[-1:])))


def test_batch_size_and_dataloader_invariance(bag):
    model, train, test, paths = bag
    reference = TracInWE(model, train, paths, batch_size=1).influence(test)
    for batch_size in (3, 24, 100):
        scores = TracInWE(model, train, paths, batch_size=batch_size).influence(test)
        assert_close(scores, reference)
    loader = DataLoader(train, batch_size=7)
    assert_close(
        TracInWE(model, loader, paths, batch_size=None).influence(test), reference
    )
    test_loader = DataLoader(TensorDataset(*test), batch_size=4)
    assert_close(TracInWE(model, train, paths).influence(test_loader), reference)


def test_padding_invariance_bag(bag):
    model, train, test, paths = bag
    reference = TracInWE(model, train, paths).influence(test)
    ids, labels = train.tensors
    padded = torch.cat([ids, torch.full((len(ids), 5), PAD)], dim=1)
    test_padded = (torch.cat([test[0], torch.full((len(test[0]), 3), PAD)], 1), test[1])
    scores = TracInWE(model, TensorDataset(padded, labels), paths).influence(
        test_padded
    )
    assert_close(scores, reference)


def test_padding_invariance_bert(tmp_path):
    model = tiny_hf_classifier("bert")
    paths = save_checkpoints(model, str(tmp_path), step=0.05)
    ids = random_ids(12, 8, seed=5)
    labels = torch.arange(12) % 3

    def batch(extra: int):
        padded = torch.cat([ids, torch.full((12, extra), PAD)], dim=1)
        return {
            "input_ids": padded,
            "attention_mask": (padded != PAD).long(),
            "labels": labels,
        }

    train = DataLoader(dict_dataset(ids, labels), batch_size=4)
    reference = TracInWE(model, train, paths, batch_size=None).influence(batch(0))
    assert_close(
        TracInWE(model, train, paths, batch_size=None).influence(batch(6)), reference
    )


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_loss_reductions_give_per_example_scores(bag, reduction):
    model, train, test, paths = bag
    reference = TracInWE(
        model, train, paths, loss_fn=CE(reduction="none"), batch_size=5
    )
    other = TracInWE(model, train, paths, loss_fn=CE(reduction=reduction), batch_size=5)
    assert_close(other.influence(test), reference.influence(test))
    assert_close(other.self_influence(), reference.self_influence())


def test_test_loss_fn_is_used_for_test_side(bag):
    model, train, test, paths = bag
    constant = TracInWE(model, train, paths, test_loss_fn=lambda out, y: 0 * out.sum(1))
    assert constant.influence(test).abs().max() == 0


def test_default_loader_reads_bare_state_dict_with_lr_one(tmp_path):
    model, train, test, _ = bag_setup(str(tmp_path))
    with_lr = os.path.join(str(tmp_path), "with_lr.pt")
    bare = os.path.join(str(tmp_path), "bare.pt")
    torch.save({"model_state_dict": model.state_dict(), "learning_rate": 3.0}, with_lr)
    torch.save(model.state_dict(), bare)
    three = TracInWE(model, train, with_lr).influence(test)
    one = TracInWE(model, train, bare).influence(test)
    assert_close(three, 3 * one)


def test_model_state_is_restored(bag):
    model, train, test, paths = bag
    model.train()
    model.fc.weight.requires_grad_(False)
    with pytest.warns(UserWarning, match="train mode"):
        tracin = TracInWE(model, train, paths)
        tracin.influence(test)
    assert model.training
    assert not model.fc.weight.requires_grad and model.emb.weight.requires_grad


def test_train_mode_warning_is_given_once(bag):
    import warnings

    model, train, test, paths = bag
    model.train()
    tracin = TracInWE(model, train, paths)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracin.influence(test)
        tracin.self_influence()
    assert sum("train mode" in str(w.message) for w in caught) == 1


def test_show_progress_writes_a_progress_bar(bag):
    model, train, test, paths = bag
    tracin = TracInWE(model, train, paths, batch_size=6)
    stream = io.StringIO()
    with redirect_stderr(stream):
        tracin.influence(test, show_progress=True)
    assert "Using TracInWE to compute influence" in stream.getvalue()
    assert "15/15" in stream.getvalue()  # 3 checkpoints x (4 train + 1 test batches)


def test_query_blocks_do_not_change_scores(bag, monkeypatch):
    import captum_tracin_we._scoring.shared_tokens as shared_tokens

    model, train, test, paths = bag
    reference = TracInWE(model, train, paths).influence(test)
    monkeypatch.setattr(shared_tokens, "_MAX_QUERY_BLOCK", 1)  # one query per block
    assert_close(TracInWE(model, train, paths).influence(test), reference)


def test_grouped_and_sparse_scoring_agree():
    from captum_tracin_we._gradients.word_rows import word_rows_from_positions
    from captum_tracin_we._scoring.shared_tokens import (
        grouped_token_scores,
        shared_token_scores,
    )

    gen = torch.Generator().manual_seed(0)

    def rows(n, positions):
        return word_rows_from_positions(
            torch.randint(0, n, (positions,), generator=gen),
            torch.randint(0, 30, (positions,), generator=gen),
            torch.randn(positions, 5, generator=gen),
            num_examples=n,
        )

    queries, train = rows(7, 40), rows(50, 300)
    assert_close(
        grouped_token_scores(queries, train), shared_token_scores(queries, train)
    )


@pytest.mark.parametrize("dense_share", [0.0, 0.5, 2.0])
def test_each_way_of_adding_a_tokens_products_gives_the_same_scores(
    dense_share, monkeypatch
):
    r"""By columns (a token in every query, in order or not; in some) or by
    flat positions: each adds every product once."""
    from captum_tracin_we._gradients.word_rows import word_rows_from_positions
    from captum_tracin_we._scoring.shared_tokens import (
        QueryGroups,
        WordRows,
        grouped_token_scores,
        shared_token_scores,
    )

    monkeypatch.setattr(QueryGroups, "dense_share", dense_share)
    gen = torch.Generator().manual_seed(1)
    n_query = 6
    # token 3 in every query (rows out of example order), token 2 in every
    # query in order, tokens 4-9 in one query each, token 10 in two
    examples = torch.cat(
        [
            torch.tensor([1, 0, 2, 3, 5, 4]),
            torch.arange(n_query),
            torch.arange(6),
            torch.tensor([2, 5]),
        ]
    )
    tokens = torch.cat(
        [
            torch.full((n_query,), 3),
            torch.full((n_query,), 2),
            torch.arange(4, 10),
            torch.full((2,), 10),
        ]
    )
    queries = WordRows(examples, tokens, torch.randn(20, 5, generator=gen), n_query)
    kinds = {group.kind for group in QueryGroups(queries)._groups}
    expected_kinds = {0.0: 3, 0.5: 4, 2.0: 2}[dense_share]
    assert len(kinds) == expected_kinds  # every way is taken (those it allows)
    train = word_rows_from_positions(
        torch.randint(0, 40, (400,), generator=gen),
        torch.randint(0, 12, (400,), generator=gen),
        torch.randn(400, 5, generator=gen),
        num_examples=40,
    )
    expected = shared_token_scores(queries, train)
    assert expected.abs().min() >= 0 and expected.count_nonzero() > 100
    assert_close(grouped_token_scores(queries, train), expected)
