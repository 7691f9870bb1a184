#!/usr/bin/env python3

r"""
Side-by-side comparisons: Captum's methods on text models (against Captum
called directly), compare_influence (against each method's own top-k), the
TF-IDF baseline, integrated gradients and the views.
"""

import os
import re
import subprocess
import tempfile

import pytest
import torch
from captum.influence import TracInCP, TracInCPFast
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from captum_tracin_we import (
    TracInWE,
    TracInWEError,
    compare_influence,
    embedding_attributions,
    tracincp,
    tracincp_fast,
    tracincp_fast_rand_proj,
)
from captum_tracin_we.evaluation import (
    TracInTFIDF,
    checkpoint_output_gradients,
    label_agreement,
    tfidf_tracin_scores,
    token_rank_correlation,
    topk_cardinality,
)
from captum_tracin_we.visualization import (
    plot_attributions_side_by_side,
    summed_test_contributions,
    to_visualization_records,
    visualize_attributions_side_by_side,
)
from tests.helpers import (
    CLS,
    PAD,
    SEP,
    LogitsOnly,
    assert_close,
    bag_setup,
    chromium,
    chromium_flags,
    dict_dataset,
    embedding_name,
    load_into,
    random_ids,
    save_checkpoints,
    tiny_hf_classifier,
)

REQUIRE_BROWSER = os.environ.get("CAPTUM_TRACIN_WE_REQUIRE_BROWSER") == "1"
HOSTILE = "<img src=x onerror=\"document.title='pwned'\">"


@pytest.fixture(scope="module")
def bag():
    with tempfile.TemporaryDirectory() as tmp:
        yield bag_setup(tmp)


@pytest.fixture(scope="module")
def hf():
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_hf_classifier("bert")
        paths = save_checkpoints(model, tmp, step=0.01)
        ids = random_ids(22, 9, seed=3)
        labels = torch.randint(0, 3, (22,), generator=torch.Generator().manual_seed(4))
        train = dict_dataset(ids[:16], labels[:16])
        test_ids = ids[16:]
        test = {
            "input_ids": test_ids,
            "attention_mask": (test_ids != PAD).long(),
            "labels": labels[16:],
        }
        yield model, train, test, paths


def _tuples(train):
    return [(row["input_ids"], row["attention_mask"], row["labels"]) for row in train]


def test_tracincp_fast_equals_captum_on_a_plain_module(bag):
    model, train, test, paths = bag
    ours = tracincp_fast(model, train, paths).influence(test)
    theirs = TracInCPFast(
        model,
        "fc",
        train,
        paths,
        load_into(),
        loss_fn=nn.CrossEntropyLoss(reduction="sum"),
        batch_size=5,
    ).influence(test)
    assert_close(ours, theirs, 1e-6)


def test_tracincp_fast_equals_captum_on_a_hf_classifier(hf):
    model, train, test, paths = hf
    ours = tracincp_fast(model, train, paths, batch_size=5)
    assert ours.name == "TracInCPFast (classifier)"
    theirs = TracInCPFast(
        LogitsOnly(model),
        "hf.classifier",
        DataLoader(_tuples(train), batch_size=7),
        paths,
        load_into("hf"),
        loss_fn=nn.CrossEntropyLoss(reduction="sum"),
        batch_size=None,
    ).influence((test["input_ids"], test["attention_mask"], test["labels"]))
    assert_close(ours.influence(test), theirs, 1e-6)


@pytest.mark.parametrize("layer", ["emb", "hidden"])
def test_tracincp_equals_captum_and_on_the_embedding_tracin_we(bag, layer):
    model, train, test, paths = bag
    ours = tracincp(model, train, paths, layers=[layer]).influence(test)
    theirs = TracInCP(
        model,
        train,
        paths,
        load_into(),
        layers=[layer],
        loss_fn=nn.CrossEntropyLoss(reduction="none"),
        batch_size=7,
    ).influence(test)
    assert_close(ours, theirs, 1e-5)
    if layer == "emb":
        assert_close(ours, TracInWE(model, train, paths, batch_size=4).influence(test))


def test_tracincp_on_a_hf_embedding_equals_tracin_we(hf):
    model, train, test, paths = hf
    layer = embedding_name(model)
    ours = tracincp(model, train, paths, layers=[layer]).influence(test)
    assert_close(ours, TracInWE(model, train, paths, batch_size=3).influence(test))


def test_rand_proj_without_projection_finds_tracincp_fast_top_k(bag):
    model, train, test, paths = bag
    draws = []
    for seed in (1, 2):  # Captum seeds the global generator; it is restored
        torch.manual_seed(seed)
        rand_proj = tracincp_fast_rand_proj(model, train, paths)
        draws.append(torch.rand(1))
    assert not torch.equal(*draws)
    fast = tracincp_fast(model, train, paths)
    for proponents in (True, False):
        a = rand_proj.influence(test, k=4, proponents=proponents)
        b = fast.influence(test, k=4, proponents=proponents)
        assert torch.equal(a.indices, b.indices)
        assert_close(a.influence_scores, b.influence_scores, 1e-5)
    projected = tracincp_fast_rand_proj(model, train, paths, projection_dim=2)
    assert projected.influence(test, k=3).indices.shape == (len(test[0]), 3)
    assert_close(rand_proj.self_influence(), fast.self_influence(), 1e-5)


def test_tracincp_fast_refuses_a_head_whose_output_is_not_the_logits():
    model = tiny_hf_classifier("gpt2")  # pools the head's output per sequence
    ids = random_ids(6, 7, seed=5)
    train = dict_dataset(ids, torch.zeros(6, dtype=torch.long))
    with tempfile.TemporaryDirectory() as tmp:
        paths = save_checkpoints(model, tmp, count=1)
        with pytest.raises(TracInWEError, match="not the output of 'score'"):
            tracincp_fast(model, train, paths)
        with pytest.raises(TracInWEError, match="no layer 'nope'"):
            tracincp(model, train, paths, layers=["nope"])


def test_test_inputs_in_any_form_give_the_same_scores(bag):
    model, train, test, paths = bag
    fast = tracincp_fast(model, train, paths)
    whole = fast.influence(test)
    pieces = [(test[0][:2], test[1][:2]), (test[0][2:], test[1][2:])]
    assert_close(fast.influence(pieces), whole, 1e-6)
    loader = DataLoader(TensorDataset(*test), batch_size=4)
    assert_close(fast.influence(loader), whole, 1e-6)
    top = fast.influence(loader, k=3)
    assert torch.equal(top.indices, whole.topk(3, dim=1).indices)


def test_captum_methods_restore_the_models_modes(bag):
    model, train, test, paths = bag
    model.train()
    try:
        tracincp_fast(model, train, paths).influence(test)
        assert model.training and model.fc.training
    finally:
        model.eval()


def _methods(model, train, paths):
    return {
        "TracIn-WE": TracInWE(model, train, paths, batch_size=5),
        "TracIn-WE-Top3": TracInWE(model, train, paths, batch_size=5, top_k_words=3),
        "TracInCPFast": tracincp_fast(model, train, paths),
        "TracInCPFastRandProj": tracincp_fast_rand_proj(
            model, train, paths, projection_dim=3
        ),
        "TracInCP (hidden)": tracincp(model, train, paths, layers=["hidden"]),
        "TF-IDF": TracInTFIDF(model, train, paths),
    }


def test_compare_influence_reproduces_each_methods_own_top_k(bag):
    model, train, test, paths = bag
    methods = _methods(model, train, paths)
    comparison = compare_influence(methods, test, k=3)
    for name, method in methods.items():
        for proponents, lists in (
            (True, comparison.proponents),
            (False, comparison.opponents),
        ):
            own = method.influence(test, k=3, proponents=proponents)
            assert torch.equal(lists[name].indices, own.indices), name
            assert torch.equal(lists[name].influence_scores, own.influence_scores)
    assert comparison.names == list(methods)
    assert set(comparison.seconds) == set(methods)


def test_compare_influence_diagnostics_match_the_evaluation_metrics(bag):
    model, train, test, paths = bag
    tracin = TracInWE(model, train, paths, batch_size=5)
    scores = tracin.influence(test)
    fast = tracincp_fast(model, train, paths).influence(test)
    comparison = compare_influence({"we": tracin, "fast": fast}, test, k=3)
    train_labels = train.tensors[1]
    for name, matrix in (("we", scores), ("fast", fast)):
        for proponents in (True, False):
            assert comparison.cardinality(name, proponents) == topk_cardinality(
                matrix, 3, proponents
            )
        assert comparison.label_agreement(name) == pytest.approx(
            label_agreement(matrix, train_labels, test[1], 3)
        )
    assert torch.equal(comparison.train_labels, train_labels)  # read from TracInWE
    assert comparison.overlap("we", "we") == 1.0
    expected = sum(
        len(set(a.tolist()) & set(b.tolist())) / 3
        for a, b in zip(scores.topk(3, 1).indices, fast.topk(3, 1).indices)
    ) / len(test[0])
    assert comparison.overlap("we", "fast") == pytest.approx(expected)
    text = comparison.table()
    assert "distinct proponents" in text and "we ~ fast" in text


def test_compare_influence_views_show_names_as_text(bag):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model, train, test, paths = bag
    tracin = TracInWE(model, train, paths, batch_size=5)
    comparison = compare_influence({HOSTILE: tracin, "$x^2$": tracin}, test, k=2)
    page = str(comparison.html())
    assert HOSTILE not in page and "&lt;img src=x" in page
    assert "data:image/png;base64," in page
    fig, axes = comparison.plot()
    assert axes.shape == (2, 3)
    titles = [ax.get_title() for ax in axes[0, :2]]
    assert "$x^2$" in titles
    plt.close(fig)


def test_compare_influence_refuses_mismatched_inputs(bag):
    model, train, test, paths = bag
    with pytest.raises(ValueError, match="positive int"):
        compare_influence({"a": torch.zeros(2, 5)}, test, k=0)
    with pytest.raises(ValueError, match="at least k=9"):
        compare_influence({"a": torch.zeros(2, 5)}, test, k=9)
    with pytest.raises(TracInWEError, match="different numbers of test rows"):
        compare_influence({"a": torch.zeros(2, 5), "b": torch.zeros(3, 5)}, test, k=2)


def test_tfidf_baseline_equals_the_text_formula(bag):
    model, train, test, paths = bag
    method = TracInTFIDF(model, train, paths)

    def texts(ids):
        return [" ".join(str(t) for t in row.tolist() if t != PAD) for row in ids]

    loader = DataLoader(train, batch_size=8)
    expected = tfidf_tracin_scores(
        texts(train.tensors[0]),
        texts(test[0]),
        checkpoint_output_gradients(model, paths, load_into(), loader, 3),
        checkpoint_output_gradients(model, paths, load_into(), [test], 3),
    )
    assert_close(method.influence(test), expected, 1e-5)


@pytest.mark.parametrize("family", ["bag", "bert"])
def test_integrated_gradients_complete_and_ignore_batching(bag, hf, family):
    if family == "bag":
        model, _, (ids, labels), _ = bag
        batch = (ids, labels)
        wider = torch.cat([ids[3:], torch.full((len(ids) - 3, 4), PAD)], 1)
        pieces = [(ids[:3], labels[:3]), (wider, labels[3:])]  # more padding

        def log_prob(x):  # LIG swaps only the embedding: the mask stays the input's
            out = model.from_embeddings(model.emb(x), ids)
            return out.log_softmax(-1).gather(1, labels[:, None])[:, 0]

    else:
        model, _, batch, _ = hf
        ids, labels = batch["input_ids"], batch["labels"]
        pieces = [{k: v[:2] for k, v in batch.items()}]
        pieces.append({k: v[2:] for k, v in batch.items()})

        def log_prob(x):
            out = model(input_ids=x, attention_mask=batch["attention_mask"]).logits
            return out.log_softmax(-1).gather(1, labels[:, None])[:, 0]

    keep = [CLS, SEP]
    attributions, delta = embedding_attributions(
        model, batch, keep_token_ids=keep, n_steps=300, return_convergence_delta=True
    )
    baseline = torch.where(
        (ids == PAD) | (ids == CLS) | (ids == SEP), ids, torch.full_like(ids, PAD)
    )
    with torch.no_grad():
        change = log_prob(ids) - log_prob(baseline)
    assert_close(attributions.sum(1), change, 2e-2)  # completeness
    assert (attributions[ids == PAD] == 0).all()
    assert (attributions[(ids == CLS) | (ids == SEP)] == 0).all()
    again = embedding_attributions(model, pieces, keep_token_ids=keep, n_steps=300)
    assert_close(again[:, : ids.shape[1]], attributions, 1e-4)
    assert (again[:, ids.shape[1] :] == 0).all()


def test_token_rank_correlation_equals_scipy():
    from scipy.stats import spearmanr

    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 4, (5, 9), generator=gen).float()  # with ties
    b = torch.randn(5, 9, generator=gen)
    mask = torch.rand(5, 9, generator=gen) > 0.3
    mask[:, :2] = True
    rho = token_rank_correlation(a, b, mask)
    for i in range(5):
        expected = spearmanr(a[i][mask[i]].numpy(), b[i][mask[i]].numpy())[0]
        assert rho[i].item() == pytest.approx(expected, abs=1e-12, nan_ok=True)


def _word_influence(bag):
    model, train, test, paths = bag
    tracin = TracInWE(model, train, paths, batch_size=5)
    top = tracin.influence(test, k=2)
    bottom = tracin.influence(test, k=2, proponents=False)
    return tracin.word_influence(test, torch.cat([top.indices, bottom.indices], 1))


def _hostile_tokens(ids):
    return [HOSTILE if i == CLS else f"w{i}" for i in ids]  # in every text


def test_visualization_records_carry_escaped_tokens_and_the_scores(bag):
    words = _word_influence(bag)
    records = to_visualization_records(
        words, _hostile_tokens, label_names=["<b>neg</b>", "b", "c"], merge=False
    )
    assert len(records) == words.scores.numel()
    for n, record in enumerate(records):
        i, j = divmod(n, words.scores.shape[1])
        assert record.attr_score == pytest.approx(float(words.scores[i, j]))
        assert record.word_attributions.abs().max() <= 1.0
        assert all("<" not in token for token in record.raw_input_ids)
    assert any("&lt;img" in t for r in records for t in r.raw_input_ids)
    test_side = to_visualization_records(words, _hostile_tokens, side="test")
    assert len(test_side) == words.scores.shape[0]
    assert test_side[0].attr_score == pytest.approx(float(words.scores[0].sum()))
    summed = summed_test_contributions(words)
    assert_close(summed.sum(1), words.scores.sum(1), 1e-5)


@pytest.mark.skipif(
    chromium() is None and not REQUIRE_BROWSER, reason="Chromium is not installed"
)
def test_captum_visualize_text_of_our_records_is_inert_in_chromium(bag, tmp_path):
    from captum.attr import visualization as viz

    words = _word_influence(bag)
    records = to_visualization_records(words, _hostile_tokens, ["<i>x</i>", "b", "c"])
    model, _, test, _ = bag
    attributions = embedding_attributions(model, test, n_steps=8)
    side = visualize_attributions_side_by_side(words, attributions, _hostile_tokens)
    for name, body in (("records", viz.visualize_text(records).data), ("ig", side)):
        page = tmp_path / f"{name}.html"
        page.write_text(
            f"<!DOCTYPE html><html><head><title>safe</title></head><body>{body}"
            "</body></html>",
            encoding="utf-8",
        )
        dom = subprocess.run(
            chromium_flags(str(tmp_path / f"profile-{name}"))
            + ["--dump-dom", page.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        assert re.search(r"<title>safe</title>", dom), name
        assert "&lt;img src=x" in dom, name  # shown, as text
        assert not re.search(r"<img[^>]*onerror", dom), name


def test_attribution_views_check_alignment_and_draw(bag):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    words = _word_influence(bag)
    with pytest.raises(ValueError, match="same test inputs"):
        visualize_attributions_side_by_side(words, torch.zeros(2, 3), str)
    attributions = torch.randn(words.test_token_ids.shape)
    page = str(
        visualize_attributions_side_by_side(words, attributions, _hostile_tokens)
    )
    assert HOSTILE not in page and "Integrated gradients" in page
    fig, ax = plot_attributions_side_by_side(words, attributions, _hostile_tokens, 1)
    assert "Spearman" in ax.get_title()
    plt.close(fig)


# Found by a hostile review: each of these once gave a silently wrong number or
# a deep traceback.


def test_shuffled_loaders_are_refused_everywhere(bag):
    model, train, test, paths = bag
    shuffled = DataLoader(train, batch_size=4, shuffle=True)
    with pytest.raises(ValueError, match="sampler|order|shuffl"):
        TracInTFIDF(model, shuffled, paths)
    method = TracInTFIDF(model, train, paths)
    loader = DataLoader(TensorDataset(*test), batch_size=2, shuffle=True)
    with pytest.raises(ValueError, match="sampler|order|shuffl"):
        compare_influence({"tfidf": method}, loader, k=2)
    ordered = DataLoader(TensorDataset(*test), batch_size=2)
    comparison = compare_influence({"tfidf": method}, ordered, k=2)
    assert torch.equal(comparison.test_labels, test[1])


class _PadFive(nn.Module):
    r"""A plain module whose padding id is 5 (no config), called with input_ids=."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(60, 8, padding_idx=5)
        self.fc = nn.Linear(8, 3)

    def forward(self, input_ids, attention_mask=None):  # masks by the ids alone
        mask = (input_ids != 5).float().unsqueeze(-1)
        return self.fc((self.emb(input_ids) * mask).sum(1) / mask.sum(1))


def test_captum_methods_pad_datasets_with_the_embeddings_padding_id(tmp_path):
    datasets = pytest.importorskip("datasets")
    torch.manual_seed(0)
    model = _PadFive()
    paths = save_checkpoints(model, str(tmp_path), count=2)
    gen = torch.Generator().manual_seed(1)
    rows = [
        torch.randint(6, 60, (int(n),), generator=gen).tolist()
        for n in torch.randint(2, 9, (20,), generator=gen)
    ]
    labels = [i % 3 for i in range(20)]
    train = datasets.Dataset.from_dict({"input_ids": rows[:14], "label": labels[:14]})
    test = datasets.Dataset.from_dict({"input_ids": rows[14:], "label": labels[14:]})
    we = TracInWE(model, train, paths, batch_size=4).influence(test)
    ours = tracincp(model, train, paths, layers=["emb"], batch_size=4).influence(test)
    assert_close(ours, we)
    comparison = compare_influence({"we": we, "fast": ours}, test, k=2)
    assert torch.equal(comparison.test_labels, torch.tensor(labels[14:]))


class _Tempered(nn.Module):
    r"""logits = fc(x) * temperature, the temperature learnt (1.0 at init)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(60, 8, padding_idx=PAD)
        self.fc = nn.Linear(8, 3)
        self.temperature = nn.Parameter(torch.ones(()))

    def forward(self, ids):
        return self.fc(self.emb(ids).mean(1)) * self.temperature


def test_tracincp_fast_refuses_a_head_scaled_after_the_final_layer(tmp_path):
    model = _Tempered()
    paths = save_checkpoints(model, str(tmp_path), count=2, step=0.5)
    ids = random_ids(8, 6, seed=2)
    train = TensorDataset(ids, torch.arange(8) % 3)
    model.load_state_dict(_Tempered().state_dict())  # temperature 1.0 again
    with pytest.raises(TracInWEError, match="not the output of 'fc'"):
        tracincp_fast(model, train, paths)


def test_method_names_are_strings_and_must_differ(bag):
    model, train, test, paths = bag
    scores = TracInWE(model, train, paths, batch_size=5).influence(test)
    comparison = compare_influence({1: scores}, test, k=2)
    assert "1" in comparison.table() and comparison.names == ["1"]
    assert comparison.seconds == {"1": None} and "given" in comparison.table()
    with pytest.raises(ValueError, match="differ as strings"):
        compare_influence({1: scores, "1": scores}, test, k=2)
    with pytest.raises(TracInWEError, match="one label per training example"):
        compare_influence({"a": scores}, test, k=2, train_labels=[0, 1, 2])
    table = compare_influence({"\x1b[31mred": scores}, test, k=2).table()
    assert "\x1b" not in table and "\\x1b" in table


def test_rank_correlation_of_non_finite_values_is_nan():
    rho = token_rank_correlation(
        torch.tensor([[1.0, float("nan"), 3.0, 4.0]]),
        torch.tensor([[1.0, 2.0, 3.0, 4.0]]),
        torch.ones(1, 4, dtype=torch.bool),
    )
    assert rho.isnan().all()


def test_tfidf_reads_column_and_narrow_labels_and_datasets(bag):
    model, train, test, paths = bag
    ids, labels = train.tensors
    expected = TracInTFIDF(model, train, paths).influence(test)
    column = TensorDataset(ids, labels[:, None].int())
    assert_close(TracInTFIDF(model, column, paths).influence(test), expected, 1e-6)


@pytest.mark.parametrize("which", ["fast", "tracincp", "tfidf", "rand_proj"])
def test_k_above_the_training_set_size_is_refused(bag, which):
    model, train, test, paths = bag
    method = {
        "fast": lambda: tracincp_fast(model, train, paths),
        "tracincp": lambda: tracincp(model, train, paths, layers=["fc"]),
        "tfidf": lambda: TracInTFIDF(model, train, paths),
        "rand_proj": lambda: tracincp_fast_rand_proj(model, train, paths),
    }[which]()
    with pytest.raises(ValueError, match="24"):
        method.influence(test, k=25)


def test_tracincp_restores_frozen_parameters(bag):
    model, train, test, paths = bag
    model.emb.weight.requires_grad_(False)
    try:
        tracincp(model, train, paths, layers=["emb"]).influence(test)
        assert not model.emb.weight.requires_grad
    finally:
        model.emb.weight.requires_grad_(True)


class _SequenceFirst(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(60, 8, padding_idx=PAD)
        self.fc = nn.Linear(8, 3)

    def forward(self, ids):
        return self.fc(self.emb(ids.T).mean(0))


def test_integrated_gradients_refuse_sequence_first_embeddings():
    from captum_tracin_we import BatchError

    ids = random_ids(4, 6, seed=1)
    with pytest.raises(BatchError, match="batch-first"):
        embedding_attributions(_SequenceFirst(), (ids, torch.zeros(4).long()))


def test_everything_on_a_hf_classifier(hf):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model, train, test, paths = hf
    tracin = TracInWE(model, train, paths, batch_size=5)
    methods = {
        "TracIn-WE": tracin,
        "TracInCPFast": tracincp_fast(model, train, paths),
        "TracInCPFastRandProj": tracincp_fast_rand_proj(model, train, paths),
        "TracInCP": tracincp(model, train, paths, layers=["bert.pooler.dense"]),
        "TF-IDF": TracInTFIDF(model, train, paths, exclude_token_ids=[CLS, SEP]),
    }
    comparison = compare_influence(methods, test, k=3)
    for name, method in methods.items():
        own = method.influence(test, k=3, proponents=False)
        assert torch.equal(comparison.opponents[name].indices, own.indices), name
    assert torch.equal(  # no projection: the same lists as TracInCPFast
        comparison.proponents["TracInCPFastRandProj"].indices,
        comparison.proponents["TracInCPFast"].indices,
    )
    assert torch.equal(
        comparison.train_labels, torch.stack([r["labels"] for r in train])
    )
    fig, _ = comparison.plot()
    plt.close(fig)
    pairs = torch.cat(
        [
            comparison.proponents["TracIn-WE"].indices,
            comparison.opponents["TracIn-WE"].indices,
        ],
        1,
    )
    words = tracin.word_influence(test, pairs)
    attributions = embedding_attributions(
        model, test, keep_token_ids=[CLS, SEP], n_steps=8
    )
    page = str(
        visualize_attributions_side_by_side(words, attributions, _hostile_tokens)
    )
    assert HOSTILE not in page and page.count("Test text") == len(test["labels"])
    records = to_visualization_records(words, _hostile_tokens, side="test")
    assert [r.attr_score for r in records] == pytest.approx(
        words.scores.sum(1).tolist()
    )
    fig, _ = plot_attributions_side_by_side(words, attributions, _hostile_tokens)
    plt.close(fig)


def test_long_method_names_stay_apart_in_the_figure(bag):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model, train, test, paths = bag
    scores = TracInWE(model, train, paths, batch_size=5).influence(test)
    long = "TracInCP on a layer with a rather long name "
    comparison = compare_influence({long + "A": scores, long + "B": -scores}, test, k=2)
    fig, axes = comparison.plot()
    titles = [ax.get_title() for ax in axes[0, :2]]
    assert len(set(titles)) == 2
    plt.close(fig)


def test_second_review_findings(bag, hf):
    model, train, test, paths = bag
    scores = TracInWE(model, train, paths, batch_size=5).influence(test)
    # labels too short for the opponents' indices are refused, not an IndexError later
    shifted = scores.clone()
    shifted[:, :12] += 10
    with pytest.raises(TracInWEError, match="one label per training example"):
        compare_influence(
            {"a": shifted}, test, k=3, train_labels=torch.zeros(14).long()
        )
    # list(loader) over a TensorDataset is a list of batches (lists) everywhere
    batches = list(DataLoader(TensorDataset(*test), batch_size=4))
    assert all(isinstance(b, list) for b in batches)
    assert_close(TracInWE(model, train, paths, batch_size=5).influence(batches), scores)
    fast = tracincp_fast(model, train, paths)
    assert_close(fast.influence(batches), fast.influence(test), 1e-6)
    comparison = compare_influence({"we": scores, "fast": fast}, batches, k=2)
    assert torch.equal(comparison.test_labels, test[1])
    assert comparison.most_distinct == min(len(test[1]) * 2, len(train))
    # a test input the training batches lack is named
    hf_model, hf_train, hf_test, hf_paths = hf
    extra = dict(hf_test, token_type_ids=torch.zeros_like(hf_test["input_ids"]))
    with pytest.raises(ValueError, match=r"extra \['token_type_ids'\]"):
        tracincp_fast(hf_model, hf_train, hf_paths).influence(extra)
    # label names from a JSON config have string keys
    from captum_tracin_we.visualization import format_word_influence_text

    words = _word_influence(bag)
    names = {"0": "zero", "1": "one", "2": "two"}
    text = format_word_influence_text(words, _hostile_tokens, names)
    assert "TEST [zero]" in text or "TEST [one]" in text or "TEST [two]" in text
    # one method: no overlap section
    assert "overlap" not in compare_influence({"we": scores}, test, k=2).table()
