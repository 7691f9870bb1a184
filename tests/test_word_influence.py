#!/usr/bin/env python3

import pytest
import torch
from torch.utils.data import DataLoader

from captum_tracin_we import TracInWE, WordInfluence, merge_subwords, top_words
from tests.helpers import (
    PAD,
    assert_close,
    bag_setup,
    dict_dataset,
    load_into,
    random_ids,
    save_checkpoints,
    tiny_hf_classifier,
)


@pytest.fixture
def bag(tmp_path):
    return bag_setup(str(tmp_path))


@pytest.mark.parametrize("top_k_words", [None, 3])
def test_scores_equal_influence_and_sides_sum_to_them(bag, top_k_words):
    model, train, test, paths = bag
    tracin = TracInWE(model, train, paths, top_k_words=top_k_words, batch_size=5)
    top = tracin.influence(test, k=4)
    result = tracin.word_influence(test, top.indices)
    assert isinstance(result, WordInfluence)
    assert_close(result.scores, top.influence_scores)
    assert_close(result.train_contributions.sum(-1), result.scores)
    assert_close(result.test_contributions.sum(-1), result.scores)
    assert result.train_token_ids.shape[:2] == (6, 4)
    assert (result.train_contributions[~result.train_mask] == 0).all()
    assert (
        result.test_contributions[
            ~result.test_mask.unsqueeze(1).expand_as(result.test_contributions)
        ]
        == 0
    ).all()
    assert torch.equal(result.train_labels, train.tensors[1][top.indices])


def test_position_contributions_match_brute_force(bag):
    model, train, test, paths = bag
    tracin = TracInWE(model, train, paths)
    result = tracin.word_influence((test[0][:1], test[1][:1]), torch.tensor([[5]]))
    expected_train = torch.zeros(train.tensors[0].shape[1], dtype=torch.float64)
    expected_test = torch.zeros(test[0].shape[1], dtype=torch.float64)
    loss = torch.nn.CrossEntropyLoss()
    for path in paths:
        lr = load_into()(model, path)

        def position_gradients(ids, label):
            embedded = model.emb.weight[ids].detach().requires_grad_(True)
            out = model.from_embeddings(embedded[None], ids[None])
            return torch.autograd.grad(loss(out, label[None]), embedded)[0].double()

        a_ids, a_grad = train.tensors[0][5], position_gradients(*train[5])
        b_ids, b_grad = test[0][0], position_gradients(test[0][0], test[1][0])
        for p in range(len(a_ids)):
            for q in range(len(b_ids)):
                if a_ids[p] == b_ids[q] and a_ids[p] != PAD:
                    dot = lr * float(a_grad[p] @ b_grad[q])
                    expected_train[p] += dot
                    expected_test[q] += dot
    assert_close(result.train_contributions[0, 0], expected_train)
    assert_close(result.test_contributions[0, 0], expected_test)


def test_bert_word_influence_with_dict_batches(tmp_path):
    model = tiny_hf_classifier("bert")
    paths = save_checkpoints(model, str(tmp_path), step=0.05)
    ids = random_ids(14, 9, seed=7)
    labels = torch.arange(14) % 3
    train = DataLoader(dict_dataset(ids[:10], labels[:10]), batch_size=4)
    test = {
        "input_ids": ids[10:],
        "attention_mask": (ids[10:] != PAD).long(),
        "labels": labels[10:],
    }
    tracin = TracInWE(model, train, paths, batch_size=None)
    scores = tracin.influence(test)
    indices = torch.tensor([[0, 3, 9], [1, 1, 2], [5, 6, 7], [8, 0, 4]])
    result = tracin.word_influence(test, indices)
    assert_close(result.scores, scores.gather(1, indices))
    assert_close(result.test_contributions.sum(-1), result.scores)


def test_bad_train_indices(bag):
    model, train, test, paths = bag
    tracin = TracInWE(model, train, paths)
    with pytest.raises(ValueError, match=r"\(n_test, m\)"):
        tracin.word_influence(test, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"in \[0, 24\)"):
        tracin.word_influence(test, torch.full((6, 2), 24))
    with pytest.raises(ValueError, match="2 rows for 6 test examples"):
        tracin.word_influence(test, torch.zeros(2, 3, dtype=torch.long))


def test_merge_subwords_wordpiece_and_start_markers():
    words, values = merge_subwords(
        ["[CLS]", "un", "##believ", "##able", "film", "[SEP]"], [1, 2, 3, 4, 5, 6]
    )
    assert words == ["[CLS]", "unbelievable", "film", "[SEP]"]
    assert values == [1.0, 9.0, 5.0, 6.0]
    words, values = merge_subwords(
        ["<s>", "Ġun", "believ", "able", "Ġfilm", "</s>"], [1, 2, 3, 4, 5, 6]
    )
    assert words == ["<s>", "unbelievable", "film", "</s>"]
    assert values == [1.0, 9.0, 5.0, 6.0]
    with pytest.raises(ValueError, match="one contribution per token"):
        merge_subwords(["a"], [1, 2])


def test_top_words_ranks_by_absolute_contribution(bag):
    model, train, test, paths = bag
    tracin = TracInWE(model, train, paths)
    result = tracin.word_influence(test, tracin.influence(test, k=2).indices)
    names = {i: f"w{i}" for i in range(60)}
    words = top_words(result, 0, 0, lambda ids: [names[i] for i in ids], k=3)
    values = [abs(v) for _, v in words]
    assert values == sorted(values, reverse=True) and len(words) <= 3
    by_token = {}
    row = result.train_token_ids[0, 0]
    for token, value in zip(row.tolist(), result.train_contributions[0, 0].tolist()):
        by_token[f"w{token}"] = by_token.get(f"w{token}", 0.0) + value
    best = max(by_token.items(), key=lambda item: abs(item[1]))
    assert words[0][0] == best[0]
    assert words[0][1] == pytest.approx(best[1], rel=1e-6)


def test_plain_text_rendering_lists_scores_labels_and_words(bag):
    from captum_tracin_we.visualization import format_word_influence_text

    model, train, test, paths = bag
    tracin = TracInWE(model, train, paths)
    top = tracin.influence(test, k=2)
    result = tracin.word_influence(test, top.indices)
    text = format_word_influence_text(
        result, lambda ids: [f"w{i}" for i in ids], ["neg", "neu", "pos"], title="top"
    )
    assert text.count("TEST [") == 6 and text.count("  top:") == 6
    assert text.count("words: ") == 12
    first_score = float(top.influence_scores[0, 0])
    assert f"{first_score:+10.4g}" in text
    assert f"#{int(top.indices[0, 0]):<6d}" in text


def test_html_view_escapes_untrusted_text_and_saves(bag, tmp_path):
    from captum_tracin_we.visualization import visualize_word_influence, word_color

    model, train, test, paths = bag
    tracin = TracInWE(model, train, paths)
    result = tracin.word_influence(test, tracin.influence(test, k=2).indices)
    evil = {i: f"w{i}" for i in range(60)}
    evil[int(result.train_token_ids[0, 0, 1])] = "<script>alert(1)</script>"
    evil[int(result.test_token_ids[0, 1])] = '<img src=x onerror="alert(2)">'
    view = visualize_word_influence(
        result, lambda ids: [evil[i] for i in ids], ["<b>neg</b>", "neu", "pos"]
    )
    markup = str(view)
    assert "<script>" not in markup and "<img" not in markup and "<b>neg" not in markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markup
    assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in markup
    assert markup.count("<tr>") == 1 + 6 * 3  # header, then a test row and 2 pairs
    assert view._repr_html_() == markup
    view.save(str(tmp_path / "report.html"))
    assert (
        (tmp_path / "report.html")
        .read_text(encoding="utf-8")
        .startswith("<!DOCTYPE html>")
    )
    assert (
        word_color(1) == "hsl(120, 75%, 50%)" and word_color(-1) == "hsl(0, 75%, 60%)"
    )
    assert (
        word_color(0) == "hsl(0, 75%, 100%)" and word_color(0.5) == "hsl(120, 75%, 75%)"
    )


def test_a_word_credited_through_one_piece_names_the_piece():
    tokens = ["[CLS]", "joy", "##less", "un", "##believ", "##able", "film", "[SEP]"]
    values = [0.5, 0.0, 0.3, 0.1, 0.2, 0.4, 0.0, 0.0]
    words, summed = merge_subwords(tokens, values, name_pieces=True)
    assert words == ["[CLS]", "joyless (via ##less)", "unbelievable", "film", "[SEP]"]
    assert summed == pytest.approx([0.5, 0.3, 0.7, 0.0, 0.0])
    assert merge_subwords(tokens, values)[0][1] == "joyless"  # the default: as before
    words, _ = merge_subwords(
        ["Ġjoy", "less", "Ġfilm"], [0.0, 0.2, 0.0], name_pieces=True
    )
    assert words == ["joyless (via less)", "film"]


def test_top_words_names_a_shared_piece_not_the_whole_word():
    from captum_tracin_we import WordInfluence

    vocab = ["[PAD]", "[CLS]", "[SEP]", "mind", "joy", "##less", "film"]
    result = WordInfluence(
        scores=torch.tensor([[0.3]]),
        train_indices=torch.tensor([[0]]),
        test_token_ids=torch.tensor([[1, 3, 5, 2]]),
        train_token_ids=torch.tensor([[[1, 4, 5, 6, 2]]]),
        test_contributions=torch.tensor([[[0.0, 0.0, 0.3, 0.0]]]),
        train_contributions=torch.tensor([[[0.0, 0.0, 0.3, 0.0, 0.0]]]),
        test_mask=torch.ones(1, 4, dtype=torch.bool),
        train_mask=torch.ones(1, 1, 5, dtype=torch.bool),
        test_labels=torch.tensor([0]),
        train_labels=torch.tensor([[0]]),
    )
    decode = lambda ids: [vocab[i] for i in ids]  # noqa: E731
    ((word, value),) = top_words(result, 0, 0, decode)
    assert word == "joyless (via ##less)" and value == pytest.approx(0.3)
    ((word, _),) = top_words(result, 0, 0, decode, side="test")
    assert word == "mindless (via ##less)"
