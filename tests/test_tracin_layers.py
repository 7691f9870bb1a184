#!/usr/bin/env python3

import pytest
import torch
from captum.influence import TracInCP, TracInCPBase
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from captum_tracin_we import TracInLayers, TracInWEError, layer_groups
from tests.helpers import (
    PAD,
    LogitsOnly,
    assert_close,
    dict_dataset,
    load_into,
    random_ids,
    save_checkpoints,
    tiny_hf_classifier,
)

CE = nn.CrossEntropyLoss


def _setup(tmp_path, family, n=22, length=10):
    model = tiny_hf_classifier(family)
    ids = random_ids(n, length, seed=3)
    labels = torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(4))
    paths = save_checkpoints(model, str(tmp_path), step=0.05)
    return model, ids, (ids != PAD).long(), labels, paths


def _captum(model, layers, ids, mask, labels, paths, n_train=16):
    reference = TracInCP(
        LogitsOnly(model),
        TensorDataset(ids[:n_train], mask[:n_train], labels[:n_train]),
        list(paths),
        load_into("hf"),
        layers=["hf." + name for name in layers],
        loss_fn=CE(reduction="none"),
        batch_size=16,
    )
    test = (ids[n_train:], mask[n_train:], labels[n_train:])
    return reference.influence(test), reference.self_influence()


def _ours(model, layers, ids, mask, labels, paths, n_train=16, batch_size=5):
    train = DataLoader(dict_dataset(ids[:n_train], labels[:n_train]), batch_size)
    test = {
        "input_ids": ids[n_train:],
        "attention_mask": mask[n_train:],
        "labels": labels[n_train:],
    }
    return TracInLayers(model, train, paths, layers, batch_size=None), test


LAYERS = {
    "bert": [
        "bert.encoder.layer.0.attention.self.query",
        "bert.encoder.layer.1.attention.self.value",
        "bert.encoder.layer.1.output.dense",
        "classifier",
    ],
    "roberta": [
        "roberta.encoder.layer.1.attention.self.query",
        "classifier.dense",
        "classifier.out_proj",
    ],
    "distilbert": [
        "distilbert.transformer.layer.0.attention.q_lin",
        "distilbert.transformer.layer.1.ffn.lin2",
        "pre_classifier",
    ],
    "gpt2": ["transformer.h.0.attn.c_attn", "transformer.h.1.mlp.c_fc", "score"],
}


@pytest.mark.parametrize("family", sorted(LAYERS))
def test_equals_tracincp_on_the_same_layers(tmp_path, family):
    model, ids, mask, labels, paths = _setup(tmp_path, family)
    layers = LAYERS[family]
    expected, expected_self = _captum(model, layers, ids, mask, labels, paths)
    tracin, test = _ours(model, layers, ids, mask, labels, paths)
    assert isinstance(tracin, TracInCPBase)
    assert_close(tracin.influence(test), expected)
    by_layer = tracin.layer_influence(test)
    assert list(by_layer) == layers
    assert_close(torch.stack(list(by_layer.values())).sum(0), expected)
    assert_close(tracin.self_influence(), expected_self)


def _lora_bert():
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=2, lora_alpha=2, target_modules=["query", "value"], task_type="SEQ_CLS"
    )
    return get_peft_model(tiny_hf_classifier("bert"), config).eval()


def test_lora_adapters_equal_tracincp_and_frozen_layers_are_refused(tmp_path):
    model = _lora_bert()
    ids = random_ids(20, 10, seed=3)
    labels = torch.randint(0, 3, (20,), generator=torch.Generator().manual_seed(4))
    paths = save_checkpoints(model, str(tmp_path), step=0.05)  # B is 0 at init
    mask = (ids != PAD).long()
    groups = layer_groups(model, blocks=2)
    assert list(groups) == [
        "attention early",
        "attention late",
        "classifier",
    ]
    layers = groups["attention late"]
    assert len(layers) == 4 and all(".lora_" in name for name in layers)
    expected, expected_self = _captum(model, layers, ids, mask, labels, paths)
    tracin, test = _ours(model, layers, ids, mask, labels, paths)
    assert_close(tracin.influence(test), expected)
    assert_close(tracin.self_influence(), expected_self)
    frozen = "base_model.model.bert.encoder.layer.1.attention.self.query.base_layer"
    with pytest.raises(
        TracInWEError,
        match=r"frozen.*Trained linear layers: \['base_model\.model\.bert\.encoder"
        r"\.layer\.1\.attention\.self\.query\.lora_A",
    ):
        TracInLayers(model, DataLoader(dict_dataset(ids, labels)), paths, [frozen])


def test_ghost_and_formed_products_agree_with_dense_gradients():
    from captum_tracin_we._gradients.layer_gradients import LayerFactors
    from captum_tracin_we._scoring import ghost_products as gp

    gen = torch.Generator().manual_seed(0)
    test = LayerFactors(
        torch.randn(3, 4, 5, generator=gen), torch.randn(3, 4, 6, generator=gen), True
    )
    train = LayerFactors(
        torch.randn(7, 9, 5, generator=gen), torch.randn(7, 9, 6, generator=gen), True
    )

    def dense(f):  # weight gradient G^T A and bias gradient sum_t g_t, flattened
        weight = torch.einsum("bso,bsi->boi", f.output_gradients, f.inputs)
        return torch.cat([weight.flatten(1), f.output_gradients.sum(1)], 1)

    expected = dense(test) @ dense(train).T
    ghost = gp._ghost_scores(test, train) + (
        test.output_gradients.sum(1) @ train.output_gradients.sum(1).T
    )
    assert_close(ghost, expected)
    assert_close(gp.layer_scores(gp.LayerQueries(test), train), expected)
    assert_close(gp.layer_self_scores(train), dense(train).pow(2).sum(1))
    long = LayerFactors(
        train.inputs.repeat(1, 8, 1), train.output_gradients.repeat(1, 8, 1), True
    )
    assert_close(gp.layer_self_scores(long), dense(long).pow(2).sum(1))


def test_scores_do_not_depend_on_batch_size_or_padding(tmp_path):
    model, ids, mask, labels, paths = _setup(tmp_path, "bert")
    layers = LAYERS["bert"]
    first, test = _ours(model, layers, ids, mask, labels, paths, batch_size=16)
    second, _ = _ours(model, layers, ids, mask, labels, paths, batch_size=3)
    assert_close(second.influence(test), first.influence(test))
    wider = torch.cat([ids, torch.full((len(ids), 5), PAD)], 1)  # more padding
    third, wide_test = _ours(model, layers, wider, (wider != PAD).long(), labels, paths)
    assert_close(third.influence(wide_test), first.influence(test))


def test_bad_layers_are_refused_before_any_work(tmp_path):
    model, ids, mask, labels, paths = _setup(tmp_path, "bert")
    train = DataLoader(dict_dataset(ids, labels), batch_size=4)
    with pytest.raises(
        TracInWEError,
        match=r"no layer named .*Closest: "
        r"\['bert\.encoder\.layer\.0\.attention\.self\.query'",
    ):
        TracInLayers(model, train, paths, ["bert.encoder.layer.0.attention.self.quer"])
    with pytest.raises(
        TracInWEError,
        match="is a BertSelfAttention, not an nn.Linear.*Linear layers inside it",
    ):
        TracInLayers(model, train, paths, ["bert.encoder.layer.0.attention.self"])
    with pytest.raises(TracInWEError, match="non-empty list"):
        TracInLayers(model, train, paths, "classifier")
    with pytest.raises(TracInWEError, match="listed twice"):
        TracInLayers(model, train, paths, ["classifier", model.classifier])
    with pytest.raises(TracInWEError, match="not part of the model"):
        TracInLayers(model, train, paths, [nn.Linear(2, 2)])


def test_a_layer_no_loss_reaches_is_named(tmp_path):
    model = tiny_hf_classifier("bert")
    model.bert.spare = nn.Linear(16, 16)  # registered, never called
    ids = random_ids(8, 10, seed=3)
    labels = torch.randint(0, 3, (8,), generator=torch.Generator().manual_seed(4))
    paths = save_checkpoints(model, str(tmp_path), count=1)
    train = DataLoader(dict_dataset(ids, labels), batch_size=4)
    tracin = TracInLayers(model, train, paths, ["bert.pooler.dense", "bert.spare"])
    with pytest.raises(
        TracInWEError, match=r"never called the layer\(s\) \['bert.spare'\]"
    ):
        tracin.self_influence()


@pytest.mark.parametrize(
    "family, first",
    [
        ("bert", "bert.encoder.layer.0.attention.self.query"),
        ("roberta", "roberta.encoder.layer.0.attention.self.query"),
        ("distilbert", "distilbert.transformer.layer.0.attention.q_lin"),
        ("gpt2", "transformer.h.0.attn.c_attn"),
    ],
)
def test_layer_groups_name_attention_by_block_range_and_the_classifier(family, first):
    model = tiny_hf_classifier(family)
    groups = layer_groups(model, blocks=2)
    assert list(groups) == [
        "attention early",
        "attention late",
        "classifier",
    ]
    assert groups["attention early"][0] == first
    per_block = 1 if family == "gpt2" else 2
    assert len(groups["attention late"]) == per_block
    assert groups["classifier"] == [
        {"bert": "classifier", "roberta": "classifier.out_proj"}.get(
            family, {"distilbert": "classifier", "gpt2": "score"}.get(family)
        )
    ]
    everything = layer_groups(model, blocks=[[0, 1]], projections="all")
    assert len(everything["attention blocks 0-1"]) == (4 if family == "gpt2" else 8)
    with pytest.raises(TracInWEError, match="between 1 and the model's 2 blocks"):
        layer_groups(model, blocks=3)


def test_rank_and_vote_follow_their_definitions():
    from captum_tracin_we import aggregate_columns

    columns = torch.tensor([[0.3, -1.0, 2.0, 0.0, 5.0], [1.0, 0.5, -2.0, 0.2, 0.1]])
    # ascending ranks by hand: [2, 0, 3, 1, 4] and [4, 3, 0, 2, 1]
    assert aggregate_columns(columns, "rank").tolist() == [3.0, 1.5, 1.5, 1.5, 2.5]
    # k = round(0.2 * 5) = 1: only each column's lowest example loses one point
    assert aggregate_columns(columns, "vote").tolist() == [0.0, -1.0, -1.0, 0.0, 0.0]
    # k = 3: rank r loses max(3 - r, 0); [1, 3, 0, 2, 0] + [0, 0, 3, 1, 2]
    votes = aggregate_columns(columns, "vote", k=3)
    assert votes.tolist() == [-1.0, -3.0, -3.0, -3.0, -2.0]
    assert aggregate_columns(columns, "sum").tolist() == pytest.approx(
        [1.3, -0.5, 0.0, 0.2, 5.1]
    )
    with pytest.raises(TracInWEError, match="must be one of"):
        aggregate_columns(columns, "median")


def test_noise_detection_rate_follows_the_studys_code():
    from captum_tracin_we.evaluation import noise_detection_curve, noise_detection_rate

    scores = torch.tensor([0.5, -2.0, 0.1, -1.0, 3.0, 0.0, 2.0, -0.5, 1.0, 4.0])
    noisy = torch.zeros(10, dtype=torch.bool)
    noisy[[1, 5]] = True  # ascending order: 1, 3, 7, 5, 2, 0, 8, 6, 4, 9
    curve = noise_detection_curve(scores, noisy)
    assert curve.tolist() == [0.5, 0.5, 0.5, 1, 1, 1, 1, 1, 1, 1]
    metrics = noise_detection_rate(scores, noisy)
    assert metrics["NDR@30"] == 1.0  # curve[int(0.3 * 10)] = curve[3]
    assert metrics["AUC-NDR"] == pytest.approx(8.5 / (10 - 1))
    perfect = noise_detection_rate(-noisy.double(), noisy)["AUC-NDR"]
    assert 1 <= perfect <= 1 + 1 / (2 * 10 - 2)
    with pytest.raises(TracInWEError, match="1-D with one entry per training"):
        noise_detection_rate(scores[None], noisy)
    with pytest.raises(TracInWEError, match="some, but not all"):
        noise_detection_rate(scores, torch.zeros(10, dtype=torch.bool))


@pytest.mark.parametrize("pooling", ["mean", "first"])
def test_representation_similarity_equals_a_hand_computed_cosine(pooling):
    from captum_tracin_we import RepresentationSimilarity

    model = tiny_hf_classifier("bert")
    ids = random_ids(14, 10, seed=3)
    labels = torch.randint(0, 3, (14,), generator=torch.Generator().manual_seed(4))
    mask = (ids != PAD).long()
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        hidden = hidden.hidden_states[-1]
    if pooling == "mean":
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    else:
        pooled = hidden[:, 0]
    unit = torch.nn.functional.normalize(pooled, dim=1)
    expected = unit[10:] @ unit[:10].T
    train = DataLoader(dict_dataset(ids[:10], labels[:10]), batch_size=3)
    test = {"input_ids": ids[10:], "attention_mask": mask[10:], "labels": labels[10:]}
    repsim = RepresentationSimilarity(model, train, pooling=pooling)
    assert_close(repsim.influence(test), expected)
    signed = RepresentationSimilarity(
        model, train, pooling=pooling, signed_by_label=True
    )
    agree = labels[10:, None] == labels[None, :10]
    assert_close(signed.influence(test), torch.where(agree, expected, -expected))
    top = repsim.influence(test, k=3)
    assert top.indices.shape == (4, 3)
    with pytest.raises(TracInWEError, match="`pooling` must be one of"):
        RepresentationSimilarity(model, train, pooling="max")
    with pytest.raises(TracInWEError, match="no module named"):
        RepresentationSimilarity(model, train, layer="bert.nothing")
    with pytest.raises(
        TracInWEError, match="must output \\(batch, tokens, features\\)"
    ):
        RepresentationSimilarity(model, train, layer="classifier").influence(test)
    with pytest.raises(ValueError, match="k"):
        repsim.influence(test, k=11)
    layer_two = RepresentationSimilarity(model, train, layer="bert.encoder.layer.0")
    assert not torch.allclose(layer_two.influence(test), expected)


def test_compare_influence_puts_a_layer_group_beside_tracin_we(tmp_path):
    from captum_tracin_we import TracInWE, compare_influence

    model, ids, mask, labels, paths = _setup(tmp_path, "bert")
    late, test = _ours(
        model, layer_groups(model)["attention late"], ids, mask, labels, paths
    )
    train = DataLoader(dict_dataset(ids[:16], labels[:16]), batch_size=5)
    methods = {"TracIn-WE": TracInWE(model, train, paths), "attention late": late}
    comparison = compare_influence(methods, test, k=3)
    for name, method in methods.items():
        own = method.influence(test, k=3, proponents=False)
        assert torch.equal(comparison.opponents[name].indices, own.indices), name
    assert torch.equal(comparison.train_labels, labels[:16])
    assert "attention late" in comparison.table()


@pytest.mark.parametrize("normalize", ["cosine", "train"])
def test_normalised_layers_equal_a_cosine_of_captums_gradients(tmp_path, normalize):
    model, ids, mask, labels, paths = _setup(tmp_path, "bert")
    layers = LAYERS["bert"][:2]
    expected = 0.0
    for path in paths:
        products, train_self = _captum(model, layers, ids, mask, labels, [path])
        rate = load_into("hf")(LogitsOnly(model), path)
        both = torch.cat([ids[16:], ids[16:]]), torch.cat([mask[16:], mask[16:]])
        twice = torch.cat([labels[16:], labels[16:]])
        _, test_self = _captum(model, layers, *both, twice, [path], n_train=6)
        norms = (train_self.double() / rate).sqrt().reshape(1, -1)
        if normalize == "cosine":
            norms = norms * (test_self.double() / rate).sqrt().reshape(-1, 1)
        expected = expected + products.double() / norms
    tracin, test = _ours(model, layers, ids, mask, labels, paths)
    tracin.normalize = normalize
    assert_close(tracin.influence(test), expected)
    by_layer = tracin.layer_influence(test)
    assert_close(torch.stack(list(by_layer.values())).sum(0), expected)
    own = {"input_ids": ids[:16], "attention_mask": mask[:16], "labels": labels[:16]}
    assert_close(tracin.self_influence(), tracin.influence(own).diagonal())
    with pytest.raises(TracInWEError, match="`normalize` must be"):
        TracInLayers(model, own, paths, layers, normalize="unit")
