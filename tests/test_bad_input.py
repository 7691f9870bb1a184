#!/usr/bin/env python3

r"""Every bad input named in the design gets a clear error, not a torch traceback."""

import os

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from captum_tracin_we import TracInWE, load_checkpoint_with_lr
from tests.helpers import (
    BagNet,
    bag_setup,
    dict_dataset,
    random_ids,
    tiny_hf_classifier,
)


@pytest.fixture
def bag(tmp_path):
    return bag_setup(str(tmp_path))


class TwoEmbeddings(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.words = nn.Embedding(60, 4)
        self.positions = nn.Embedding(16, 4)
        self.fc = nn.Linear(4, 2)

    def forward(self, ids):
        positions = torch.arange(ids.shape[1]).expand_as(ids)
        return self.fc((self.words(ids) + self.positions(positions)).mean(1))


class NoEmbedding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(9, 2)

    def forward(self, x):
        return self.fc(x.float())


class CallsEmbeddingTwice(BagNet):
    def forward(self, ids):
        return self.from_embeddings(self.emb(ids) + self.emb(ids), ids)

    def __init__(self) -> None:
        super().__init__()
        self.eval()


def test_no_embedding_layer(bag):
    _, train, _, paths = bag
    with pytest.raises(ValueError, match="no nn.Embedding"):
        TracInWE(NoEmbedding(), train, paths)


def test_several_embedding_layers_are_listed(bag):
    _, train, _, paths = bag
    with pytest.raises(ValueError, match=r"several nn.Embedding.*'words', 'positions'"):
        TracInWE(TwoEmbeddings(), train, paths)
    TracInWE(TwoEmbeddings(), train, paths, embedding_layer="words")  # resolves


def test_embedding_layer_name_not_found_or_not_embedding(bag):
    model, train, _, paths = bag
    with pytest.raises(ValueError, match="not a submodule.*'emb'"):
        TracInWE(model, train, paths, embedding_layer="encoder.emb")
    with pytest.raises(ValueError, match="is a Linear, not an nn.Embedding"):
        TracInWE(model, train, paths, embedding_layer="fc")


def test_hf_model_finds_its_word_embeddings(tmp_path):
    model = tiny_hf_classifier("bert")
    path = str(tmp_path / "bert.pt")
    torch.save(model.state_dict(), path)
    tracin = TracInWE(
        model, dict_dataset(random_ids(4, 6, 0), torch.zeros(4).long()), path
    )
    assert tracin.embedding_layer is model.bert.embeddings.word_embeddings


def test_embedding_called_twice(bag):
    _, train, test, paths = bag
    with pytest.raises(ValueError, match="called 2 times"):
        TracInWE(CallsEmbeddingTwice(), train, paths).influence(test)


def test_token_id_out_of_vocabulary(bag):
    model, train, test, paths = bag
    ids = test[0].clone()
    ids[1, 2] = 500
    with pytest.raises(
        ValueError, match="Token id 500 .* vocabulary of 60 .*tokenizer"
    ):
        TracInWE(model, train, paths).influence((ids, test[1]))


def test_empty_training_set(bag):
    model, _, test, paths = bag
    empty = TensorDataset(torch.zeros(0, 5).long(), torch.zeros(0).long())
    with pytest.raises(ValueError, match="training set is empty"):
        TracInWE(model, empty, paths)


def test_empty_test_batch(bag):
    model, train, test, paths = bag
    with pytest.raises(ValueError, match="test .*empty"):
        TracInWE(model, train, paths).influence((test[0][:0], test[1][:0]))
    with pytest.raises(AssertionError, match="required"):
        TracInWE(model, train, paths).influence(None)


def test_label_missing(bag):
    model, train, test, paths = bag
    with pytest.raises(ValueError, match=r"\(model inputs..., labels\)"):
        TracInWE(model, train, paths).influence((test[0],))
    with pytest.raises(ValueError, match="key 'labels'"):
        TracInWE(model, train, paths).influence({"ids": test[0]})


def test_label_out_of_range(bag):
    model, train, test, paths = bag
    labels = test[1].clone()
    labels[3] = 7
    with pytest.raises(
        ValueError, match="Label 7 of example 3 is out of range .*3 classes"
    ):
        TracInWE(model, train, paths).influence((test[0], labels))


def test_nan_loss_names_the_example(bag):
    model, train, test, paths = bag
    ids, labels = train.tensors

    def loss_fn(logits, y):
        loss = nn.functional.cross_entropy(logits, y, reduction="none")
        return torch.where(torch.arange(len(y)) == 2, loss * float("nan"), loss)

    tracin = TracInWE(
        model, TensorDataset(ids, labels), paths, loss_fn=loss_fn, batch_size=8
    )
    with pytest.raises(
        ValueError, match=r"training data: .*NaN or infinite for example\(s\) \[2\]"
    ):
        tracin.self_influence()


def test_nan_weights_with_scalar_loss(tmp_path):
    model, train, test, _ = bag_setup(str(tmp_path))
    with torch.no_grad():
        model.fc.bias.fill_(float("nan"))
    path = os.path.join(str(tmp_path), "nan.pt")
    torch.save(model.state_dict(), path)
    tracin = TracInWE(model, train, path, loss_fn=nn.CrossEntropyLoss(reduction="sum"))
    with pytest.raises(ValueError, match="NaN or infinite"):
        tracin.influence(test)


def test_missing_checkpoints(bag, tmp_path):
    model, train, _, paths = bag
    with pytest.raises(ValueError, match="not found"):
        TracInWE(model, train, paths + ["nowhere.pt"])
    with pytest.raises(ValueError, match="does not exist"):
        TracInWE(model, train, "no/such/dir")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="is empty"):
        TracInWE(model, train, str(empty))
    with pytest.raises(ValueError, match="No checkpoints"):
        TracInWE(model, train, [])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint_with_lr(model, "nowhere.pt")


def test_unreadable_or_unsafe_checkpoint(bag, tmp_path):
    model, train, test, _ = bag
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="Cannot read checkpoint"):
        TracInWE(model, train, str(garbage)).influence(test)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"model_state_dict": model.state_dict(), "extra": BagNet}, str(unsafe))
    with pytest.raises(ValueError, match="weights_only=True"):
        TracInWE(model, train, str(unsafe)).influence(test)
    other = tmp_path / "other.pt"
    torch.save(nn.Linear(2, 2).state_dict(), str(other))
    with pytest.raises(ValueError, match="does not fit the model"):
        TracInWE(model, train, str(other)).influence(test)


def test_k_larger_than_training_set(bag):
    model, train, test, paths = bag
    with pytest.raises(ValueError, match="k=25 is larger than the training set \\(24"):
        TracInWE(model, train, paths).influence(test, k=25)
    with pytest.raises(ValueError, match="positive int"):
        TracInWE(model, train, paths).influence(test, k=0)


def test_shuffling_dataloader_is_refused(bag):
    model, train, _, paths = bag
    with pytest.raises(ValueError, match="shuffle=False"):
        TracInWE(model, DataLoader(train, shuffle=True), paths, batch_size=None)


def test_bad_top_k_words_and_batch_types(bag):
    model, train, test, paths = bag
    with pytest.raises(ValueError, match="top_k_words"):
        TracInWE(model, train, paths, top_k_words=0)
    with pytest.raises(TypeError, match="tuple .* or a dict"):
        TracInWE(model, train, paths).influence(test[0])


def test_loss_with_wrong_shape(bag):
    model, train, test, paths = bag
    tracin = TracInWE(model, train, paths, loss_fn=lambda out, y: out.T)
    with pytest.raises(ValueError, match="reduction 'none'"):
        tracin.influence(test)
