#!/usr/bin/env python3

r"""
TracIn-WE for causal language models (issue 25): exact against Captum's
TracInCP on the input embedding of an untied copy (and, for the tied
parameter, on the tied model), independent of batch size and padding side;
word and token contributions add up to the score; bad input refused early.
"""

import os
import warnings

import pytest
import torch
from captum.influence import TracInCP
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from captum_tracin_we import (
    BatchError,
    CausalLMLoss,
    TracInWECausalLM,
    TracInWEError,
    causal_lm_batch,
    causal_lm_loss,
    frequent_token_ids,
)
from tests.helpers import assert_close, save_checkpoints

VOCAB, PAD, BOS, EOS = 40, 0, 1, 2
LENGTH = 9


def tiny_gpt2(tied: bool = True, layers: int = 2, positions: int = 32) -> nn.Module:
    import transformers as hf

    torch.manual_seed(0)
    config = hf.GPT2Config(
        n_layer=layers,
        n_embd=16,
        n_head=2,
        n_positions=positions,
        vocab_size=VOCAB,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
        tie_word_embeddings=tied,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hf.GPT2LMHeadModel(config).eval()


def documents(n: int, seed: int) -> list:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, LENGTH + 1, (n,), generator=gen).tolist()
    return [
        torch.randint(3, VOCAB, (size,), generator=gen).tolist() for size in lengths
    ]


def lm_batch(docs: list, side: str = "right", prompt: int = 0) -> dict:
    r"""Padded batch; the first ``prompt`` tokens of each doc are context."""
    shape = (len(docs), LENGTH)
    ids = torch.full(shape, PAD, dtype=torch.long)
    mask = torch.zeros(shape, dtype=torch.long)
    labels = torch.full(shape, -100, dtype=torch.long)
    for i, doc in enumerate(docs):
        start = 0 if side == "right" else LENGTH - len(doc)
        ids[i, start : start + len(doc)] = torch.tensor(doc)
        mask[i, start : start + len(doc)] = 1
        labels[i, start + prompt : start + len(doc)] = torch.tensor(doc[prompt:])
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": positions,
        "labels": labels,
    }


def rows(batch: dict) -> list:
    return [
        {key: value[i] for key, value in batch.items()}
        for i in range(len(batch["labels"]))
    ]


class OracleLoss(nn.Module):
    r"""Per-example next-token negative log-likelihood, written apart from the
    package: a loop over positions with log_softmax."""

    reduction = "none"

    def __init__(self, mean: bool = False) -> None:
        super().__init__()
        self.mean = mean

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        losses = []
        for row_logits, row_labels in zip(logits, labels):
            terms = [
                -torch.log_softmax(row_logits[t - 1], -1)[row_labels[t]]
                for t in range(1, row_labels.shape[0])
                if row_labels[t] != -100
            ]
            total = torch.stack(terms).sum()
            losses.append(total / len(terms) if self.mean else total)
        return torch.stack(losses)


class LMLogits(nn.Module):
    def __init__(self, hf_model: nn.Module) -> None:
        super().__init__()
        self.hf = hf_model

    def forward(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor):
        return self.hf(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
        ).logits


def untied_loader(model: nn.Module, path: str) -> float:
    checkpoint = torch.load(path, weights_only=True)
    model.hf.load_state_dict(checkpoint["model_state_dict"])
    return checkpoint["learning_rate"]


def as_tuple(batch: dict) -> tuple:
    keys = ("input_ids", "attention_mask", "position_ids", "labels")
    return tuple(batch[key] for key in keys)


def captum_reference(model, layer, train, test, paths, mean=False) -> Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = TracInCP(
            LMLogits(model),
            TensorDataset(*as_tuple(train)),
            list(paths),
            untied_loader,
            layers=[layer],
            loss_fn=OracleLoss(mean),
            batch_size=4,
        )
        return reference.influence(as_tuple(test))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model = tiny_gpt2()
    paths = save_checkpoints(model, str(tmp_path_factory.mktemp("ckpt")), count=2)
    train = lm_batch(documents(10, seed=1))
    test = lm_batch(documents(3, seed=2), prompt=2)
    untied = tiny_gpt2(tied=False)
    expected = captum_reference(untied, "hf.transformer.wte", train, test, paths)
    return model, paths, train, test, expected


def test_tied_model_has_one_shared_parameter(setup):
    model, paths, train, _, _ = setup
    assert model.lm_head.weight is model.transformer.wte.weight
    assert TracInWECausalLM(model, rows(train), paths).tied_embeddings
    assert not TracInWECausalLM(tiny_gpt2(False), rows(train), paths).tied_embeddings


def test_equals_tracincp_on_untied_input_embedding(setup):
    model, paths, train, test, expected = setup
    tracin = TracInWECausalLM(model, rows(train), paths, batch_size=3)
    assert_close(tracin.influence(test), expected)
    assert expected.abs().max() > 1e-3


def test_prompt_is_context_only(setup):
    model, paths, train, test, expected = setup
    tracin = TracInWECausalLM(model, rows(train), paths, batch_size=3)
    whole = {**test, "labels": lm_batch(documents(3, seed=2))["labels"]}
    assert not torch.allclose(tracin.influence(whole), expected, atol=1e-4)


def test_mean_per_token_equals_tracincp(setup):
    model, paths, train, test, _ = setup
    expected = captum_reference(
        tiny_gpt2(False), "hf.transformer.wte", train, test, paths, mean=True
    )
    loss = CausalLMLoss(per_token="mean")
    tracin = TracInWECausalLM(model, rows(train), paths, loss_fn=loss, batch_size=4)
    assert_close(tracin.influence(test), expected)


def test_independent_of_batch_size_and_padding_side(setup):
    model, paths, train, test, expected = setup
    left_train, left_test = (
        lm_batch(documents(10, 1), "left"),
        lm_batch(documents(3, 2), "left", prompt=2),
    )
    assert not torch.equal(left_train["input_ids"], train["input_ids"])
    for batch_size in (1, 4, 10):
        tracin = TracInWECausalLM(model, rows(left_train), paths, batch_size=batch_size)
        assert_close(tracin.influence(left_test), expected)
    premade = [
        {key: value[i : i + 3] for key, value in train.items()} for i in range(0, 10, 3)
    ]
    loader = DataLoader(premade, batch_size=None)
    assert_close(TracInWECausalLM(model, loader, paths).influence(test), expected)


def test_self_influence_equals_diagonal(setup):
    model, paths, train, _, _ = setup
    tracin = TracInWECausalLM(model, rows(train), paths, batch_size=4)
    assert_close(tracin.self_influence(), tracin.influence(train).diagonal())


def test_word_contributions_sum_to_score(setup):
    model, paths, train, test, expected = setup
    tracin = TracInWECausalLM(model, rows(train), paths, batch_size=4)
    top = tracin.influence(test, k=3)
    words = tracin.word_influence(test, top.indices)
    assert_close(words.scores, expected.gather(1, top.indices))
    assert_close(words.train_contributions.sum(-1), words.scores)
    assert_close(words.test_contributions.sum(-1), words.scores)
    assert words.test_labels.shape == test["labels"].shape


def test_token_scores_sum_to_score_and_equal_tracincp(setup):
    model, paths, train, test, expected = setup
    tracin = TracInWECausalLM(model, rows(train), paths, batch_size=5)
    tokens = tracin.token_influence(test)
    predicted = (test["labels"][:, 1:] != -100).sum().item()
    assert tokens.scores.shape == (predicted, 10)
    for i in range(3):
        assert_close(tokens.for_example(i).sum(0), expected[i])
        assert (tokens.position[tokens.example == i] >= 2).all()  # past the prompt
    # one token's row against Captum with only that token predicted
    single = {key: value[tokens.example[:1]] for key, value in test.items()}
    single["labels"] = tokens.inputs["labels"][:1]
    reference = captum_reference(
        tiny_gpt2(False), "hf.transformer.wte", train, single, paths
    )
    assert_close(tokens.scores[:1], reference)
    assert tokens.token_ids[0] == test["labels"][tokens.example[0], tokens.position[0]]


def test_token_scores_with_mean_loss_sum_to_score(setup):
    model, paths, train, test, _ = setup
    loss = CausalLMLoss(per_token="mean")
    tracin = TracInWECausalLM(model, rows(train), paths, loss_fn=loss, batch_size=5)
    scores, tokens = tracin.influence(test), tracin.token_influence(test)
    for i in range(3):
        assert_close(tokens.for_example(i).sum(0), scores[i])


def test_tied_parameter_equals_tracincp_on_tied_model(setup):
    from captum_tracin_we import tracincp

    model, paths, train, test, input_side = setup
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = TracInCP(
            LMLogits(model),
            TensorDataset(*as_tuple(train)),
            list(paths),
            untied_loader,
            layers=["hf.transformer.wte"],
            loss_fn=OracleLoss(),
            batch_size=4,
        ).influence(as_tuple(test))
    full = tracincp(
        model, rows(train), paths, ["transformer.wte"], loss_fn=CausalLMLoss()
    ).influence(test)
    assert_close(full, reference)
    assert not torch.allclose(full, input_side, rtol=1e-2)  # the output side counts


def test_causal_lm_loss_equals_oracle_and_hf_loss():
    model = tiny_gpt2()
    batch = lm_batch(documents(4, seed=5), prompt=1)
    logits = model(
        input_ids=batch["input_ids"],
        position_ids=batch["position_ids"],
        attention_mask=batch["attention_mask"],
    ).logits
    assert_close(
        causal_lm_loss(logits, batch["labels"]), OracleLoss()(logits, batch["labels"])
    )
    count = (batch["labels"][:, 1:] != -100).sum()
    hf_mean = model(**batch).loss  # Hugging Face: the mean over the batch's tokens
    assert_close(causal_lm_loss(logits, batch["labels"]).sum() / count, hf_mean)
    assert_close(
        causal_lm_loss(logits, batch["labels"], per_token="mean"),
        OracleLoss(mean=True)(logits, batch["labels"]),
    )


# Bad input: each a clear error before any work.


def word_tokenizer(pad: bool = True):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[PAD]", "<s>", "</s>", "the", "cat", "sat", "on", "mat", "a", "dog"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, "[PAD]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    extra = {"pad_token": "[PAD]"} if pad else {}
    return PreTrainedTokenizerFast(tokenizer_object=core, **extra)


def test_causal_lm_batch_marks_prompt_and_padding():
    tokenizer = word_tokenizer()
    right = causal_lm_batch(tokenizer, ["the cat", "a"], ["sat on", "dog sat on mat"])
    assert right["input_ids"].tolist() == [[3, 4, 5, 6, 0], [8, 9, 5, 6, 7]]
    assert right["labels"].tolist() == [
        [-100, -100, 5, 6, -100],
        [-100, 9, 5, 6, 7],
    ]
    left = causal_lm_batch(
        tokenizer, ["the cat", "a"], ["sat on", "dog sat on mat"], padding_side="left"
    )
    assert left["input_ids"][0].tolist() == [0, 3, 4, 5, 6]
    assert left["position_ids"][0].tolist() == [0, 0, 1, 2, 3]
    docs = causal_lm_batch(tokenizer, ["the cat sat", "a dog"])
    assert docs["labels"].tolist() == [[3, 4, 5], [8, 9, -100]]


def test_prompt_filling_the_window_is_refused():
    with pytest.raises(TracInWEError, match="Shorten the prompt"):
        causal_lm_batch(word_tokenizer(), ["the cat sat on"], ["the mat"], max_length=4)


def test_empty_completion_is_refused():
    with pytest.raises(TracInWEError, match="Completion 1 is empty"):
        causal_lm_batch(word_tokenizer(), ["the cat", "a dog"], ["sat", "  "])


def test_tokenizer_without_pad_token_is_refused():
    with pytest.raises(
        TracInWEError, match="tokenizer.pad_token = tokenizer.eos_token"
    ):
        causal_lm_batch(word_tokenizer(pad=False), ["the cat"], ["sat"])


def test_model_without_lm_head_is_refused(setup, monkeypatch):
    import transformers as hf

    _, paths, train, _, _ = setup
    body = hf.GPT2Model(tiny_gpt2().config).eval()
    read = []
    monkeypatch.setattr(type(body), "forward", lambda *a, **k: read.append(1))
    with pytest.raises(TracInWEError, match="AutoModelForCausalLM"):
        TracInWECausalLM(body, rows(train), paths)
    assert not read


def test_no_token_to_predict_is_refused_by_the_loss(setup):
    model, paths, train, test, _ = setup
    tracin = TracInWECausalLM(model, rows(train), paths)
    bad = {**test, "labels": test["labels"].clone()}
    bad["labels"][1, 1:] = -100
    with pytest.raises(BatchError, match=r"test data.*\[1\].*no token to predict"):
        tracin.influence(bad)
    with pytest.raises(BatchError, match="neither a token id"):
        tracin.influence({**test, "labels": test["labels"].clamp(max=VOCAB) + 1})
    with pytest.raises(BatchError, match="one label per position"):
        tracin.influence({**test, "labels": test["labels"][:, :4]})


# Side by side (item 6): Captum's TracInCP on a middle layer, the exact
# middle-layer method and compare_influence, on the same causal LM.

MIDDLE = "transformer.h.1.mlp.c_fc"  # a Conv1D, untouched by the tying


def test_middle_layer_methods_equal_tracincp(setup):
    from captum_tracin_we import TracInLayers, tracincp

    model, paths, train, test, _ = setup
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = TracInCP(
            LMLogits(model),
            TensorDataset(*as_tuple(train)),
            list(paths),
            untied_loader,
            layers=["hf." + MIDDLE],
            loss_fn=OracleLoss(),
            batch_size=4,
        ).influence(as_tuple(test))
    loss = CausalLMLoss()
    captum = tracincp(model, rows(train), paths, [MIDDLE], loss_fn=loss)
    assert_close(captum.influence(test), reference)
    layers = TracInLayers(model, rows(train), paths, [MIDDLE], loss_fn=loss)
    assert_close(layers.influence(test), reference)


def test_compare_influence_on_a_causal_lm(setup):
    from captum_tracin_we import compare_influence, tracincp

    model, paths, train, test, expected = setup
    methods = {
        "TracIn-WE": TracInWECausalLM(model, rows(train), paths, batch_size=4),
        "middle": tracincp(model, rows(train), paths, [MIDDLE], loss_fn=CausalLMLoss()),
    }
    comparison = compare_influence(methods, test, k=3)
    top = expected.topk(3, dim=1).indices
    assert torch.equal(comparison.proponents["TracIn-WE"].indices, top)
    assert "TracIn-WE" in comparison.table()
    assert comparison.label_agreement("TracIn-WE") is None  # tokens, not classes


# Views (item 3): per-token text, and windows for documents of hundreds of
# tokens.


def test_window_spans_cover_the_largest_contributions():
    from captum_tracin_we._views.token_windows import window_spans, windowed

    values = [0.0] * 100
    values[10], values[13], values[80] = 5.0, -4.0, 3.0
    assert window_spans(values, 5, 3) == [(8, 16), (78, 83)]
    assert window_spans(values, None, 3) == [(0, 100)]
    assert window_spans(values[:12], 4, 3) == [(0, 12)]  # fits: whole text
    tokens = [f"w{i}" for i in range(100)]
    words, scores, skipped = windowed(tokens, values, 5, 3)
    assert skipped == [8] + [0] * 8 + [62] + [0] * 5 + [17]
    assert words[1] == "w8" and scores[3] == 5.0
    assert sum(skipped) + sum(1 for n in skipped if n == 0) == 100


@pytest.fixture(scope="module")
def long_setup(tmp_path_factory):
    model = tiny_gpt2(layers=1, positions=256)
    paths = save_checkpoints(model, str(tmp_path_factory.mktemp("long")), count=1)
    gen = torch.Generator().manual_seed(7)
    ids = torch.randint(3, VOCAB, (4, 200), generator=gen)
    mask = torch.ones_like(ids)
    train = {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": (mask.cumsum(1) - 1),
        "labels": ids.clone(),
    }
    test = {key: value[:1, :12].clone() for key, value in train.items()}
    test["labels"][:, :6] = -100
    tracin = TracInWECausalLM(model, rows(train), paths, batch_size=2)
    return tracin, train, test


def names(ids):
    return [f"t{int(i)}" for i in ids]


def test_html_view_of_long_documents_shows_windows(long_setup):
    from captum_tracin_we.visualization import visualize_word_influence

    tracin, train, test = long_setup
    words = tracin.word_influence(test, torch.tensor([[0, 1]]))
    whole = str(visualize_word_influence(words, names, merge=False))
    short = str(visualize_word_influence(words, names, merge=False, window=9))
    assert whole.count("<mark") == 12 + 2 * 200
    # the 12-token test text fits in 3 windows; each document shows 9 to 27
    assert 12 + 2 * 9 <= short.count("<mark") <= 12 + 2 * 27
    assert short.count("tw-gap") >= 2 and "words" in short
    assert "<td><bdi>text</bdi></td>" in short  # the label column of an LM
    with pytest.raises(ValueError, match="window"):
        visualize_word_influence(words, names, window=0)


def test_figure_of_long_document_shows_windows(long_setup):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from captum_tracin_we.visualization import plot_word_contributions

    tracin, train, test = long_setup
    words = tracin.word_influence(test, torch.tensor([[0]]))
    fig, ax = plot_word_contributions(words, 0, 0, names, merge=False, window=7)
    labels = [tick.get_text() for tick in ax.get_xticklabels()]
    plt.close(fig)
    assert len(labels) <= 21 + 4 and any(
        label.startswith("\u2026 (") for label in labels
    )
    values = words.train_contributions[0, 0]
    top = int(values.abs().argmax())
    assert f"t{int(train['input_ids'][0, top])}" in labels


def test_token_view_names_raising_and_lowering_documents(long_setup):
    from captum_tracin_we.visualization import format_token_influence

    tracin, train, test = long_setup
    tokens = tracin.token_influence(test)
    assert tokens.scores.shape == (6, 4)
    assert_close(tokens.scores.sum(0), tracin.influence(test)[0])
    text = format_token_influence(tokens, names, k=1)
    lines = text.splitlines()
    assert len(lines) == 1 + 6
    for r, line in enumerate(lines[1:]):
        best, worst = int(tokens.scores[r].argmax()), int(tokens.scores[r].argmin())
        if tokens.scores[r, best] > 0:
            assert f"raised by #{best} " in line
        if tokens.scores[r, worst] < 0:
            assert f"lowered by #{worst} " in line


def test_left_padding_without_position_ids_is_refused(setup):
    model, paths, train, test, _ = setup
    left = lm_batch(documents(10, 1), "left")
    del left["position_ids"]
    with pytest.raises(BatchError, match="left-padded.*position_ids"):
        TracInWECausalLM(model, DataLoader([left], batch_size=None), paths)
    tracin = TracInWECausalLM(model, rows(train), paths)
    left_test = lm_batch(documents(3, 2), "left", prompt=2)
    del left_test["position_ids"]
    with pytest.raises(BatchError, match="test batch is left-padded"):
        tracin.influence(left_test)
    right = {k: v for k, v in test.items() if k != "position_ids"}
    assert tracin.influence(right).shape == (3, 10)  # right padding needs none


# explain for a causal LM (item 4): a Trainer run, a JSON Lines corpus.


def causal_trainer_run(tmp_path):
    r"""A 2-step Trainer run of a tiny GPT-2 and its corpus file."""
    import json

    import transformers as hf

    from captum_tracin_we.hf import LearningRateCallback

    tokenizer = word_tokenizer()
    texts = ["the cat sat on the mat", "a dog sat", "the dog sat on a mat", "a cat"]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    config = tiny_gpt2().config
    config.vocab_size = len(tokenizer)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = hf.GPT2LMHeadModel(config)
        run = str(tmp_path / "run")
        args = hf.TrainingArguments(
            output_dir=run, max_steps=2, save_steps=1, logging_steps=1,
            per_device_train_batch_size=2, report_to=[], use_cpu=True,
            disable_tqdm=True,
        )  # fmt: skip
        encoded = [{"input_ids": tokenizer(t)["input_ids"]} for t in texts]
        collator = hf.DataCollatorForLanguageModeling(tokenizer, mlm=False)
        hf.Trainer(
            model=model, args=args, train_dataset=encoded, data_collator=collator,
            processing_class=tokenizer, callbacks=[LearningRateCallback()],
        ).train()  # fmt: skip
    return run, corpus, tokenizer, texts


def test_explain_on_a_causal_lm_trainer_run(tmp_path, capsys):
    import json

    import transformers as hf

    from captum_tracin_we._cli import main

    run, corpus, tokenizer, texts = causal_trainer_run(tmp_path)
    out = str(tmp_path / "out")
    command = ["explain", "--model", run, "--train", str(corpus), "--top-k", "2"]
    main(command + ["--prompt", "the cat", "--completion", "sat on", "--out", out,
                    "--no-progress"])  # fmt: skip
    printed = capsys.readouterr().out
    summary = json.loads(open(os.path.join(out, "scores.json")).read())
    page = open(os.path.join(out, "report.html"), encoding="utf-8").read()
    # the report's ranking is the method's, on the same checkpoints
    loaded = hf.GPT2LMHeadModel.from_pretrained(run + "/checkpoint-2").eval()
    docs = causal_lm_batch(tokenizer, texts)
    tracin = TracInWECausalLM(loaded, rows(docs), run)
    scores = tracin.influence(causal_lm_batch(tokenizer, ["the cat"], ["sat on"]))[0]
    assert summary["proponents"][0][0]["index"] == int(scores.argmax())
    assert summary["opponents"][0][0]["index"] == int(scores.argmin())
    assert "proponents" in printed and "raised by" in printed
    assert "<mark" in page and "Per completion token" in page
    with pytest.raises(SystemExit):
        main(command + ["--prompt", "the cat", "--completion", "", "--out", out])
    assert "Completion 0 is empty" in capsys.readouterr().err


def test_causal_explain_passes_method_options_and_reports_probabilities(
    tmp_path, capsys
):
    import json

    import transformers as hf

    from captum_tracin_we._cli import main

    run, corpus, tokenizer, texts = causal_trainer_run(tmp_path)
    out = str(tmp_path / "out")
    command = ["explain", "--model", run, "--train", str(corpus), "--top-k", "4"]
    main(command + ["--prompt", "the cat", "--completion", "sat on", "--out", out,
                    "--normalize", "cosine", "--exclude-frequent", "1",
                    "--no-progress"])  # fmt: skip
    printed = capsys.readouterr().out
    summary = json.loads(open(os.path.join(out, "scores.json")).read())
    final = hf.GPT2LMHeadModel.from_pretrained(run + "/checkpoint-2").eval()
    docs = causal_lm_batch(tokenizer, texts)
    test = causal_lm_batch(tokenizer, ["the cat"], ["sat on"])
    # the probabilities are the final model's, of each completion token
    with torch.no_grad():
        logits = final(**{k: v for k, v in test.items() if k != "labels"}).logits
    ids = tokenizer("the cat sat on", add_special_tokens=False)["input_ids"]
    expected = [float(logits[0, t - 1].softmax(-1)[ids[t]]) for t in (2, 3)]
    assert summary["token_scores"]["probability"] == pytest.approx(expected)
    assert f"'sat' {expected[0]:.3f}" in printed
    # the options reach the method: cosine, without the most frequent token
    real = [
        ids[mask.bool()] for ids, mask in zip(docs["input_ids"], docs["attention_mask"])
    ]
    frequent = frequent_token_ids(real, 1)
    assert summary["settings"]["excluded_token_ids"] == frequent
    tracin = TracInWECausalLM(
        final, rows(docs), run, normalize="cosine", exclude_token_ids=frequent
    )
    scores = tracin.influence(test)[0]
    shown = [row["score"] for row in summary["proponents"][0]]
    assert shown == pytest.approx(scores.sort(descending=True).values.tolist(), 1e-5)
    plain = TracInWECausalLM(final, rows(docs), run).influence(test)[0]
    assert not torch.allclose(plain.sort().values, scores.sort().values)
    # excluding every token of the test is refused, not answered with zeros
    with pytest.raises(SystemExit):
        main(command + ["--prompt", "the cat", "--completion", "sat", "--out", out,
                        "--exclude-frequent", "1000"])  # fmt: skip
    assert "Every token of prompt 0" in capsys.readouterr().err
    # options the causal report does not offer are refused, not ignored
    for extra in (["--index", str(tmp_path / "idx")], ["--text", "a cat"]):
        with pytest.raises(SystemExit):
            main(command + ["--prompt", "a", "--completion", "cat", *extra])
        assert "cannot be used with --prompt" in capsys.readouterr().err
