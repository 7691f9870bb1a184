#!/usr/bin/env python3

r"""
The influence explorer against a real server on a free local port: a Trainer
run of a config-built BERT with a WordPiece tokenizer, training data holding
hostile markup and long texts. The API is checked against TracInWE and
Captum's TracInCPFast called directly; the page is checked in headless
Chromium; a bounded load test runs 8 clients.
"""

import html.parser
import json
import os
import re
import statistics
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

pytest.importorskip("datasets")
pytest.importorskip("accelerate")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from captum_tracin_we import TracInWE, TracInWEError, tracincp_fast  # noqa: E402
from captum_tracin_we._cli import main  # noqa: E402
from captum_tracin_we._explorer.engine import Explorer  # noqa: E402
from captum_tracin_we._explorer.server import ExplorerServer  # noqa: E402
from captum_tracin_we._jobs.explain import _collate, _loader, encode  # noqa: E402
from captum_tracin_we._jobs.explore import ExploreSettings, prepare_explorer  # noqa: E402
from tests.helpers import chromium, chromium_flags  # noqa: E402
from tests.test_explain import (  # noqa: E402
    HOSTILE,
    NAMES,
    _texts,
    _write_csv,
    trainer_run,
)

TEXT = "the coach saw the team score a goal"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("explorer")
    rows = [(HOSTILE, "sport")] + _texts(40, seed=3, long_every=9)
    run_dir = trainer_run(root / "run", rows, [t for t, _ in rows], 24, 3, 2e-3)
    return root, run_dir, _write_csv(root / "train.csv", rows), rows


def _settings(run, **changes):
    root, run_dir, train_csv, _ = run
    values = dict(
        model=run_dir,
        train=train_csv,
        index=str(root / "index"),
        max_length=24,
        show_progress=False,
        top_k=5,
    )
    values.update(changes)
    return ExploreSettings(**values)


@pytest.fixture(scope="module")
def served(run):
    explorer = prepare_explorer(_settings(run))
    with ExplorerServer(explorer) as server:
        yield explorer, server


def _post(server, path, body, raw=None, headers=None):
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(
        server.url + path.lstrip("/"),
        data=data,
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read(), _lower(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), _lower(error.headers)


def _lower(headers):
    return {key.lower(): value for key, value in headers.items()}


def _json(server, path, body, **kwargs):
    status, data, _ = _post(server, path, body, **kwargs)
    return status, json.loads(data)


def _batch(explorer, text, label):
    features = encode(explorer.tokenizer, [text], [label], explorer.max_length)
    return _collate(explorer.tokenizer, features.features)


def test_query_equals_tracin_we_and_captum_called_directly(served, run):
    explorer, server = served
    status, answer = _json(server, "/api/query", {"text": TEXT, "k": 4})
    assert status == 200 and answer["label"] == answer["predicted"]
    batch = _batch(explorer, TEXT, answer["label"])
    probabilities = explorer.tracin.model(
        **{k: v for k, v in batch.items() if k != "labels"}
    ).logits.softmax(-1)[0]
    assert [p["p"] for p in answer["probabilities"]] == pytest.approx(
        probabilities.tolist(), abs=1e-6
    )
    tracin_we, last = answer["methods"]
    # the last layer is Captum's TracInCPFast with its side kept beside the index
    assert (
        tracin_we["name"] == "TracIn-WE" and last["name"] == "TracInCPFast (classifier)"
    )
    scores = explorer.tracin.influence(batch)[0]
    # Captum's TracInCPFast on a model loaded afresh, with the training loader
    root, run_dir, train_csv, rows = run
    fast = tracincp_fast(
        explorer.tracin.model,
        _loader(explorer.tokenizer, _train_encoded(explorer, rows), 8),
        explorer.tracin.checkpoints,
        explorer.tracin.checkpoints_load_func,
    )
    for name, top in (("proponents", True), ("opponents", False)):
        expected = scores.topk(4, largest=top)
        got = tracin_we[name]
        assert [r["index"] for r in got] == expected.indices.tolist()
        assert [r["score"] for r in got] == pytest.approx(
            expected.values.tolist(), rel=1e-5, abs=1e-9
        )
        captum = fast.influence(batch, k=4, proponents=top)
        assert [r["index"] for r in last[name]] == captum.indices[0].tolist()
        assert [r["score"] for r in last[name]] == pytest.approx(
            captum.influence_scores[0].tolist(), rel=1e-4, abs=1e-9
        )
    # shared marks: words of the training text holding a token the test text has
    test_ids = set(batch["input_ids"][0].tolist()) - set(
        explorer.tokenizer.all_special_ids
    )
    for row in tracin_we["proponents"] + last["opponents"]:
        for word in row["words"]:
            ids = explorer.tokenizer(word["w"], add_special_tokens=False)["input_ids"]
            assert word["shared"] == any(i in test_ids for i in ids)
        assert row["label_name"] == rows[row["index"]][1]


def _train_encoded(explorer, rows):
    labels = [NAMES.index(label) for _, label in rows]
    return encode(explorer.tokenizer, [t for t, _ in rows], labels, 24)


def test_pair_words_sum_to_the_score_of_the_query(served):
    explorer, server = served
    status, answer = _json(server, "/api/query", {"text": TEXT, "label": 2, "k": 3})
    assert status == 200 and answer["label"] == 2
    row = answer["methods"][0]["opponents"][0]
    status, pair = _json(
        server, "/api/pair", {"text": TEXT, "label": 2, "index": row["index"]}
    )
    assert status == 200
    assert pair["score"] == pytest.approx(row["score"], rel=1e-5)
    for side in ("test_words", "train_words"):
        total = sum(w["value"] for w in pair[side])
        assert total == pytest.approx(pair["score"], rel=1e-4, abs=1e-9)
        assert all(w["color"].startswith("hsl(") for w in pair[side])
    assert pair["train_text"] == explorer.train_texts[row["index"]]


def test_audit_ranks_by_self_influence_with_filters_and_pages(served):
    explorer, server = served
    self_influence = explorer.tracin.self_influence()
    order = torch.argsort(self_influence, descending=True, stable=True).tolist()
    status, page = _json(server, "/api/audit", {"limit": 7})
    assert status == 200 and page["total"] == len(order)
    assert [r["index"] for r in page["rows"]] == order[:7]
    assert [r["self_influence"] for r in page["rows"]] == pytest.approx(
        self_influence[order[:7]].tolist(), rel=1e-5
    )
    status, second = _json(server, "/api/audit", {"limit": 7, "offset": 7})
    assert [r["index"] for r in second["rows"]] == order[7:14]
    assert second["rows"][0]["rank"] == 8
    status, sport = _json(server, "/api/audit", {"label": 1, "limit": 200})
    labels = [explorer._examples[i].label for i in order]
    assert [r["index"] for r in sport["rows"]] == [
        i for i in order if labels[order.index(i)] == 1
    ]
    status, odd = _json(server, "/api/audit", {"disagree": True, "limit": 200})
    assert all(r["predicted"] != r["label"] for r in odd["rows"])
    assert odd["total"] == sum(
        int(explorer._train_predicted[i]) != explorer._examples[i].label for i in order
    )
    status, mine = _json(server, "/api/self", {"index": order[0]})
    assert mine["score"] == pytest.approx(float(self_influence[order[0]]), rel=1e-4)
    assert sum(w["value"] for w in mine["train_words"]) == pytest.approx(
        mine["score"], rel=1e-4
    )


def test_long_texts_are_cut_with_a_mark(served):
    explorer, server = served
    long_text = " ".join([TEXT] * 20)
    status, answer = _json(server, "/api/query", {"text": long_text, "k": 2})
    assert status == 200 and answer["truncated"] and answer["num_tokens"] == 24
    assert not _json(server, "/api/query", {"text": TEXT, "k": 2})[1]["truncated"]
    cut = [i for i, e in enumerate(explorer._examples) if e.truncated]
    lengths = [
        len(ids) for ids in explorer.tokenizer(explorer.train_texts)["input_ids"]
    ]
    assert cut == [i for i, n in enumerate(lengths) if n > 24]
    assert len(cut) == 6  # 5 long texts and the hostile one


@pytest.mark.parametrize(
    "path, body, raw, status, message",
    [
        ("/api/query", {"text": "   "}, None, 400, "empty"),
        ("/api/query", {"text": "goal " * 5000}, None, 413, "at most 20000"),
        ("/api/query", None, b"x" * 300_000, 413, "over 262144 bytes"),
        ("/api/query", None, b"{not json", 400, "not valid JSON"),
        ("/api/query", None, b"[1, 2]", 400, "JSON object"),
        (
            "/api/query",
            {"text": TEXT, "methods": ["TracIn"]},
            None,
            400,
            "Unknown method 'TracIn'",
        ),
        ("/api/query", {"text": TEXT, "k": 0}, None, 400, "`k` must lie in [1, 50]"),
        ("/api/query", {"text": TEXT, "k": "5"}, None, 400, "`k` must be an integer"),
        (
            "/api/query",
            {"text": TEXT, "label": 7},
            None,
            400,
            "`label` must lie in [0, 2]",
        ),
        ("/api/query", {"txt": TEXT}, None, 400, "Unknown field 'txt'"),
        ("/api/query", {"text": 3}, None, 400, "must be a string"),
        ("/api/pair", {"text": TEXT, "index": 10**6}, None, 400, "`index` must lie"),
        ("/api/audit", {"limit": 10**6}, None, 400, "`limit` must lie"),
        ("/api/audit", {"disagree": "yes"}, None, 400, "true or false"),
        ("/api/export", {"view": "nope"}, None, 400, "`view` must be one of"),
        ("/api/nothing", {}, None, 404, "Not Found"),
        ("/api/query", {"text": TEXT, "methods": [[1]]}, None, 400, "(strings)"),
        ("/api/export", {"view": [], "request": {}}, None, 400, "`view` must be"),
        ("/api/query", None, b"[" * 100_000 + b"]" * 100_000, 400, "not valid JSON"),
        ("/api/query", None, b'{"text": "a \\ud800 goal"}', 400, "surrogate"),
    ],
)
def test_bad_requests_get_a_json_error_that_names_the_problem(
    served, path, body, raw, status, message
):
    _, server = served
    got, answer = _json(server, path, body, raw=raw)
    assert got == status and message in answer["error"]


def test_cross_site_posts_and_other_content_types_are_refused(served):
    _, server = served
    body = {"text": TEXT, "k": 1}
    plain = _json(server, "/api/query", body, headers={"Content-Type": "text/plain"})
    assert plain[0] == 415 and "application/json" in plain[1]["error"]
    other = {"Origin": "http://evil.example"}
    assert _json(server, "/api/query", body, headers=other)[0] == 403
    fetch = {"Sec-Fetch-Site": "cross-site"}
    assert _json(server, "/api/query", body, headers=fetch)[0] == 403
    own = {"Origin": server.url.rstrip("/")}
    assert _json(server, "/api/query", body, headers=own)[0] == 200
    with urllib.request.urlopen(server.url + "static/explorer.js", timeout=30) as r:
        assert "script-src 'self'" in r.headers["Content-Security-Policy"]
        assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_host_names_are_read_with_ports_and_ipv6():
    from captum_tracin_we._explorer.guard import host_name

    assert host_name("127.0.0.1:8000") == "127.0.0.1"
    assert host_name("[::1]:8000") == "::1" and host_name("LocalHost") == "localhost"
    assert host_name("evil.example:80") == "evil.example"


def test_non_finite_scores_are_an_error_not_a_number(served, monkeypatch):
    from captum_tracin_we._method.influence_pass import InfluencePass

    explorer, server = served
    real = InfluencePass.results
    monkeypatch.setattr(
        InfluencePass, "results", lambda self: [r * float("nan") for r in real(self)]
    )
    status, answer = _json(server, "/api/query", {"text": TEXT})
    assert status == 500 and "not finite" in answer["error"]


def test_proponents_are_positive_and_opponents_negative_for_any_k(served):
    _, server = served
    answer = _json(server, "/api/query", {"text": TEXT, "k": 41})[1]
    for method in answer["methods"]:
        pro, con = method["proponents"], method["opponents"]
        assert all(r["score"] > 0 for r in pro) and all(r["score"] < 0 for r in con)
        assert not {r["index"] for r in pro} & {r["index"] for r in con}
        assert len(pro) + len(con) <= 41


def test_unknown_tokens_stay_visible(served):
    _, server = served
    answer = _json(server, "/api/query", {"text": "the goal \u2603 team", "k": 1})[1]
    assert "[UNK]" in [w["w"] for w in answer["words"]]


def test_wrong_verb_and_foreign_host_are_refused(served):
    _, server = served
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(server.url + "api/query", timeout=30)
    assert error.value.code == 405 and "error" in json.loads(error.value.read())
    status, _, _ = _post(
        server, "/api/query", {"text": TEXT}, headers={"Host": "evil.example"}
    )
    assert status == 400  # DNS rebinding: only 127.0.0.1 / localhost names


def test_a_failing_query_is_a_500_and_the_server_keeps_serving(served, monkeypatch):
    explorer, server = served

    def broken(*args, **kwargs):
        raise RuntimeError("checkpoint file vanished\n" + "x" * 1000)

    monkeypatch.setattr(explorer.tracin, "checkpoints_load_func", broken)
    status, answer = _json(server, "/api/query", {"text": TEXT})
    assert status == 500 and "RuntimeError" in answer["error"]
    assert "checkpoint file vanished" in answer["error"] and len(answer["error"]) < 400
    monkeypatch.undo()
    assert _json(server, "/api/query", {"text": TEXT})[0] == 200


class _Elements(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _elements(page):
    parser = _Elements()
    parser.feed(page)
    return parser.tags


def test_saved_views_are_standalone_and_escape_training_text(served):
    explorer, server = served
    requests = {
        "query": {"text": HOSTILE, "k": 3},
        "pair": {"text": HOSTILE, "index": 0},
        "self": {"index": 0},
        "audit": {"limit": 50},
    }
    for view, request in requests.items():
        status, page, headers = _post(
            server, "/api/export", {"view": view, "request": request}
        )
        assert status == 200 and "attachment" in headers["content-disposition"]
        page = page.decode()
        tags = _elements(page)
        assert not [t for t, _ in tags if t in ("script", "img", "iframe")]
        assert not [a for _, a in tags if any(k.startswith("on") for k in a)]
        assert "&lt;script&gt;" in page or "&lt;" in page  # shown, as text
        assert "TracIn-WE explorer" in page and "http" not in page.split("</title>")[1]


def _dump(server, tmp_path, fragment, budget=20000):
    flags = chromium_flags(str(tmp_path / "profile"))
    flags = [f for f in flags if not f.startswith("--virtual-time-budget")]
    return subprocess.run(
        flags
        + [f"--virtual-time-budget={budget}", "--dump-dom", server.url + fragment],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout


def _fragment(**params):
    import urllib.parse

    return "#" + urllib.parse.urlencode(params)


@pytest.mark.skipif(
    chromium() is None and not os.environ.get("CAPTUM_TRACIN_WE_REQUIRE_BROWSER"),
    reason="Chromium is not installed",
)
def test_the_page_in_chromium_runs_a_query_and_hostile_text_stays_inert(
    served, tmp_path
):
    explorer, server = served
    dom = _dump(server, tmp_path, _fragment(view="query", text=HOSTILE, k=5, pair=0))
    assert re.search(r"<title>TracIn-WE explorer</title>", dom)
    assert 'data-shown="#view=query' in dom  # the route finished
    for method in explorer.methods:
        assert f'data-method="{method}"' in dom
    indices = re.findall(r'<li tabindex="0" data-index="(\d+)"', dom)
    assert len(indices) == 2 * 2 * 5 and "0" in indices  # the hostile text ranks
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom
    assert "&lt;img src=x onerror=alert(1)&gt;" in dom
    _assert_inert(dom)
    assert 'id="pair"' in dom and 'data-side="train"' in dom  # the word view
    audit = _dump(server, tmp_path, _fragment(view="audit", disagree="", self=0))
    assert re.search(r'<table class="audit" id="audit">', audit)
    assert len(re.findall(r'<tr class="row"', audit)) == 25
    _assert_inert(audit)
    shot = os.environ.get("CAPTUM_TRACIN_WE_EXPLORER_SCREENSHOT") or str(
        tmp_path / "e.png"
    )
    flags = [f for f in chromium_flags(str(tmp_path / "p2")) if "virtual-time" not in f]
    subprocess.run(
        flags
        + [
            "--virtual-time-budget=20000",
            f"--screenshot={shot}",
            "--window-size=1280,1100",
        ]
        + [
            server.url
            + _fragment(view="query", text=TEXT, k=5, pair=explorer_top(server))
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    assert pixels.std() > 0.01 and (pixels < 0.95).any(axis=-1).mean() > 0.02


def _assert_inert(dom):
    r"""No element from the hostile text: no img, no event handler attribute,
    and only the page's own script."""
    tags = _elements(dom)
    assert not [t for t, _ in tags if t in ("img", "iframe")]
    assert not [a for _, a in tags if any(k.startswith("on") for k in a)]
    scripts = [a.get("src") for t, a in tags if t == "script"]
    assert scripts == ["/static/explorer.js"]


def explorer_top(server):
    return _json(server, "/api/query", {"text": TEXT, "k": 1})[1]["methods"][0][
        "proponents"
    ][0]["index"]


def test_load_8_clients_200_queries_no_errors_and_the_lock_keeps_answers_exact(served):
    _, server = served
    texts = [
        f"{TEXT} {w}" for w in "market profit chip phone data team goal bank".split()
    ]
    expected = {t: _json(server, "/api/query", {"text": t, "k": 3})[1] for t in texts}
    latencies, failures = [], []

    def client(n):
        for i in range(25):  # 8 clients x 25 = 200 queries, then they stop
            text = texts[(n + i) % len(texts)]
            started = time.perf_counter()
            status, answer = _json(server, "/api/query", {"text": text, "k": 3})
            latencies.append(time.perf_counter() - started)
            if status != 200:
                failures.append(answer)
            elif _ranked(answer) != _ranked(expected[text]):
                failures.append(f"different answer for {text!r}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(client, range(8), timeout=600))
    p95 = statistics.quantiles(latencies, n=20)[-1]
    print(
        f"\n8 clients, {len(latencies)} queries: "
        f"p50 {statistics.median(latencies):.3f} s, p95 {p95:.3f} s"
    )
    assert len(latencies) == 200 and not failures


def _ranked(answer):
    return [
        [(r["index"], round(r["score"], 7)) for r in m["proponents"] + m["opponents"]]
        for m in answer["methods"]
    ]


def test_python_explore_serves_on_localhost_and_stops(run, served, capsys):
    explorer, _ = served
    root = run[0]
    tracin = TracInWE(
        explorer.tracin.model,
        explorer.tracin.train_dataloader,
        explorer.tracin.checkpoints,
        explorer.tracin.checkpoints_load_func,
        index=str(root / "index"),
    )
    server = tracin.explore(
        explorer.tokenizer, explorer.train_texts, last_layer=False, show_progress=False
    )
    try:
        assert server.url.startswith("http://127.0.0.1:")
        assert server._server.config.host == "127.0.0.1"
        status, answer = _json(server, "/api/query", {"text": TEXT, "k": 2})
        assert status == 200 and [m["name"] for m in answer["methods"]] == ["TracIn-WE"]
        assert server.url in server._repr_html_()
        assert "TracIn-WE explorer: http://127.0.0.1:" in capsys.readouterr().out
    finally:
        server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url, timeout=5)


def test_python_explore_refuses_texts_that_do_not_match_the_data(served):
    explorer, _ = served
    with pytest.raises(ValueError, match="training texts for 41 training examples"):
        explorer.tracin.explore(
            explorer.tokenizer, explorer.train_texts[:-1], last_layer=False
        )
    with pytest.raises(TypeError, match="`last_layer` must be True"):
        explorer.tracin.explore(
            explorer.tokenizer, explorer.train_texts, last_layer="x"
        )


def test_texts_in_another_order_and_bad_ports_are_refused(served):
    from captum_tracin_we.explorer import Explorer

    explorer, _ = served
    shuffled = explorer.train_texts[1:] + explorer.train_texts[:1]
    with pytest.raises(ValueError, match="do not match their training example"):
        Explorer(explorer.tracin, explorer.tokenizer, shuffled).prepare(False)
    with pytest.raises(ValueError, match="from 0 to 65535"):
        ExplorerServer(explorer, port=70000)
    with pytest.raises(RuntimeError, match="prepare"):
        Explorer(explorer.tracin, explorer.tokenizer, shuffled).query(TEXT)


def test_another_host_prints_a_warning(served, capsys):
    explorer, _ = served
    ExplorerServer(explorer, host="0.0.0.0")  # not started: tests bind 127.0.0.1 only
    assert "anyone who can reach this machine" in capsys.readouterr().err


def test_the_command_builds_the_index_on_first_use_then_reuses_it(
    run, tmp_path, monkeypatch, capsys
):
    served_urls = []
    monkeypatch.setattr(
        ExplorerServer, "serve_forever", lambda self: served_urls.append(self.host)
    )
    args = ["explore", "--model", run[1], "--train", run[2], "--max-length", "24"]
    args += [
        "--index",
        str(tmp_path / "index"),
        "--no-progress",
        "--no-last-layer",
        "--port",
        "0",
    ]
    main(args)
    assert "Built the index" in capsys.readouterr().out
    main(args)
    out = capsys.readouterr().out
    assert "Using the index" in out
    assert re.search(r"explorer: http://127\.0\.0\.1:[1-9]\d*/", out)
    assert served_urls == ["127.0.0.1", "127.0.0.1"]
    with pytest.raises(SystemExit, match="--max-length 999 is more than"):
        main(args + ["--max-length", "999"])


def test_a_tuple_model_with_its_own_encoder_and_token_names(tmp_path):
    from torch.utils.data import DataLoader

    from tests.helpers import bag_setup

    model, train, _, paths = bag_setup(str(tmp_path))
    tracin = TracInWE(model, DataLoader(train, batch_size=8), paths)
    tracin.build_index(str(tmp_path / "index"))
    texts = [" ".join(f"w{i}" for i in ids.tolist()) for ids, _ in train]

    def encode(batch_texts, labels):
        ids = [[int(word[1:]) for word in text.split()] for text in batch_texts]
        return torch.tensor(ids), labels

    def names(ids):
        return [f"w{i}" for i in ids]

    server = tracin.explore(
        names, texts, label_names=["a", "b", "c"], encode=encode, show_progress=False
    )
    try:
        status, answer = _json(server, "/api/query", {"text": texts[3], "k": 3})
        assert status == 200 and answer["words"][0]["w"] == texts[3].split()[0]
        batch = encode([texts[3]], torch.tensor([answer["label"]]))
        expected = tracin.influence(batch, k=3)
        assert [r["index"] for r in answer["methods"][0]["proponents"]] == (
            expected.indices[0].tolist()
        )
        status, answer = _json(server, "/api/query", {"text": "w1 wx", "k": 3})
        assert status == 500 and "ValueError" in answer["error"]  # the user's encoder
        assert _json(server, "/api/audit", {"limit": 2})[0] == 200
    finally:
        server.stop()


def test_the_notebook_can_use_tracin_while_the_explorer_serves(served, run):
    explorer, _ = served
    tracin = TracInWE(
        explorer.tracin.model,
        explorer.tracin.train_dataloader,
        explorer.tracin.checkpoints,
        explorer.tracin.checkpoints_load_func,
        index=str(run[0] / "index"),
    )
    batch = _batch(explorer, TEXT, 1)
    expected = tracin.influence(batch)
    server = tracin.explore(
        explorer.tokenizer, explorer.train_texts, last_layer=False, show_progress=False
    )
    try:
        answer = _json(server, "/api/query", {"text": TEXT, "label": 1, "k": 3})[1]
        wrong = []

        def client():
            for _ in range(15):
                again = _json(server, "/api/query", {"text": TEXT, "label": 1, "k": 3})
                if _ranked(again[1]) != _ranked(answer):
                    wrong.append("explorer")

        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(client) for _ in range(2)]
            for _ in range(15):  # the notebook's own calls, meanwhile
                if not torch.allclose(tracin.influence(batch), expected, rtol=1e-5):
                    wrong.append("notebook")
            [future.result(timeout=300) for future in futures]
        assert not wrong
        assert [r["index"] for r in answer["methods"][0]["proponents"]] == (
            expected[0].topk(3).indices.tolist()
        )
    finally:
        server.stop()


def test_an_explorer_built_by_hand_shares_the_model_lock_with_tracin(served, run):
    from captum_tracin_we._checkpoints.checkpoint_pass import model_lock

    explorer, server = served  # built on its TracInWE's own model, no copy
    assert explorer._lock is model_lock(explorer.tracin.model)
    batch = _batch(explorer, TEXT, 1)
    expected = explorer.tracin.influence(batch)
    answer = _json(server, "/api/query", {"text": TEXT, "label": 1, "k": 3})[1]
    wrong = []

    def client():
        for _ in range(10):
            again = _json(server, "/api/query", {"text": TEXT, "label": 1, "k": 3})
            if again[0] != 200 or _ranked(again[1]) != _ranked(answer):
                wrong.append("explorer")

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(client) for _ in range(2)]
        for _ in range(10):  # the same TracInWE, used from this thread meanwhile
            if not torch.allclose(explorer.tracin.influence(batch), expected):
                wrong.append("caller")
        [future.result(timeout=300) for future in futures]
    assert not wrong


def test_host_names_on_a_network_bind_refuse_rebinding():
    from captum_tracin_we._explorer.guard import allowed_host

    allowed = {"localhost", "myhost"}
    assert allowed_host("10.1.2.3", allowed) and allowed_host("::1", allowed)
    assert allowed_host("myhost", allowed) and not allowed_host("evil.example", allowed)


def test_byte_level_bpe_words_read_as_text_and_no_pad_token_is_needed():
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    from captum_tracin_we._explorer.engine import Explorer
    from captum_tracin_we._explorer.texts import hf_encoder

    corpus = ["café naïve résumé", "the movie was great", "日本語 text"] * 20
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=300, special_tokens=["<s>", "</s>"])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>"
    )
    words = Explorer._words(
        _Stub(tokenizer), tokenizer("café naïve 日本語")["input_ids"], set()
    )
    assert [w["w"] for w in words] == ["café", "naïve", "日本語"]
    batch = hf_encoder(tokenizer, 16)(["the movie"], torch.tensor([0]))
    assert batch["input_ids"].shape[0] == 1  # no pad token, and none needed


class _Stub:
    def __init__(self, tokenizer):
        from captum_tracin_we._explorer.engine import Explorer

        self.tokenizer = tokenizer
        self._hidden_ids = Explorer._special_ids_but_unknown(self)


def test_the_command_checks_top_k_and_the_port_before_preparing(run, capsys):
    args = ["explore", "--model", run[1], "--train", run[2], "--index", "unused"]
    with pytest.raises(SystemExit):
        main(args + ["--top-k", "60"])
    assert "must be at most 50" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="from 0 to 65535"):
        main(args + ["--port", "70000"])
    assert not os.path.exists("unused")  # nothing was prepared


def test_a_rerun_explore_replaces_the_previous_server(served):
    explorer, _ = served
    first = explorer.tracin.explore(
        explorer.tokenizer, explorer.train_texts, last_layer=False, show_progress=False
    )
    second = explorer.tracin.explore(
        explorer.tokenizer, explorer.train_texts, last_layer=False, show_progress=False
    )
    try:
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(first.url + "api/info", timeout=5)
        with urllib.request.urlopen(second.url + "api/info", timeout=30) as response:
            assert response.status == 200
    finally:
        second.stop()


def test_a_layer_group_answers_beside_tracin_we(run, tmp_path):
    from captum_tracin_we import TracInLayers

    explorer = prepare_explorer(
        _settings(run, index=str(tmp_path / "index"), layer_group="classifier")
    )
    assert explorer.info()["methods"][-1] == "TracIn (classifier)"
    answer = explorer.query(TEXT, k=3, methods=["TracIn (classifier)"])
    (layer,) = answer["methods"]
    batch = _batch(explorer, TEXT, answer["label"])
    method = explorer.methods["TracIn (classifier)"]
    assert isinstance(method, TracInLayers) and method.layer_names == ["classifier"]
    scores = method.influence(batch)[0]
    top = scores.topk(3)
    assert [r["index"] for r in layer["proponents"]] == top.indices.tolist()
    assert [r["score"] for r in layer["proponents"]] == pytest.approx(
        top.values.tolist(), rel=1e-5
    )
    with pytest.raises(TracInWEError, match="not a layer group"):
        prepare_explorer(_settings(run, layer_group="attention center"))


def test_normalize_and_repsim_reach_the_explorer(run, tmp_path):
    from captum_tracin_we import RepresentationSimilarity

    explorer = prepare_explorer(
        _settings(run, index=str(tmp_path / "index"), normalize="cosine", repsim=True)
    )
    assert explorer.methods["TracIn-WE"].normalize == "cosine"
    # the audit ranks by the unnormalised self-influence (normalised, it is flat)
    plain = explorer.methods["TracIn-WE"].self_influence()
    assert torch.unique(plain).numel() == 1  # cosine: each text's lr sum
    audit = explorer.audit(limit=3)["rows"]
    expected = explorer._self_influence
    assert torch.unique(expected).numel() > 1
    assert [row["self_influence"] for row in audit] == sorted(
        expected.tolist(), reverse=True
    )[:3]
    name = "RepSim (last hidden state)"
    method = explorer.methods[name]
    assert isinstance(method, RepresentationSimilarity)
    answer = explorer.query(TEXT, k=3, methods=[name])
    batch = _batch(explorer, TEXT, answer["label"])
    top = method.influence(batch)[0].topk(3)
    (shown,) = answer["methods"]
    assert [r["index"] for r in shown["proponents"]] == top.indices.tolist()


# ------------------------------------------------- queries answered together
BATCH_TEXTS = [
    f"{TEXT} {w}" * n
    for n, w in zip(
        (1, 2, 1, 3, 1, 2, 1, 1), "market profit chip phone data team goal bank".split()
    )
]


def _concurrently(explorer, bodies):
    r"""Each body sent to ``explorer.query`` from its own thread at once; each
    answer or the exception it raised, in order (bounded waits)."""

    def ask(body):
        try:
            return explorer.query(**body)
        except Exception as error:  # noqa: BLE001 - compared by the test
            return error

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(ask, bodies, timeout=300))


def _without_seconds(answer):
    r"""An answer with its timings left out: everything else must be equal."""
    methods = [
        {k: v for k, v in m.items() if k != "seconds"} for m in answer["methods"]
    ]
    return {**{k: v for k, v in answer.items() if k != "seconds"}, "methods": methods}


def _assert_same_answer(got, expected):
    r"""Bitwise: the same probabilities, rows and scores (floats compared with
    ==), not to a tolerance."""
    assert isinstance(got, dict), got
    assert _without_seconds(got) == _without_seconds(expected)


def test_queries_answered_together_are_bitwise_the_answers_alone(served, monkeypatch):
    explorer, _ = served
    bodies = [
        {"text": t, "k": 2 + i % 4, "label": None if i % 3 else i % 2}
        for i, t in enumerate(BATCH_TEXTS)
    ] + [{"text": BATCH_TEXTS[0], "k": 3, "methods": ["TracIn-WE"]}]
    monkeypatch.setattr(explorer, "max_batch", 1)  # the path before batching
    alone = [explorer.query(**body) for body in bodies]
    monkeypatch.setattr(explorer, "max_batch", 16)
    before = len(explorer.batches)
    for _ in range(2):  # the first runs alone, the others wait and go together
        together = _concurrently(explorer, bodies)
        for got, expected in zip(together, alone, strict=True):
            _assert_same_answer(got, expected)
    sizes = [b.size for b in explorer.batches][before:]
    assert sum(sizes) == 2 * len(bodies) and max(sizes) > 1


def test_a_batch_holds_at_most_max_batch_queries(served, monkeypatch):
    explorer, _ = served
    monkeypatch.setattr(explorer, "max_batch", 3)
    before = len(explorer.batches)
    bodies = [{"text": t, "k": 3} for t in BATCH_TEXTS]
    answers = _concurrently(explorer, bodies)
    assert all(isinstance(a, dict) for a in answers)
    sizes = [b.size for b in explorer.batches][before:]
    assert sum(sizes) == len(bodies) and max(sizes) == 3
    assert all(b.waited <= explorer.max_wait + 0.5 for b in explorer.batches)


class _FailsOn:
    r"""A method that raises on any test batch holding one given text."""

    def __init__(self, method, ids):
        self.method, self.ids = method, ids

    def influence(self, batch, **kwargs):
        rows = [
            r[m.bool()].tolist()
            for r, m in zip(batch["input_ids"], batch["attention_mask"])
        ]
        if self.ids in rows:
            raise RuntimeError("this text breaks the method")
        return self.method.influence(batch, **kwargs)


def test_one_bad_query_among_good_ones_fails_alone(served, monkeypatch):
    explorer, _ = served
    bad, broken = "a text the method cannot score", "a text whose prediction fails"
    good = [{"text": t, "k": 3} for t in BATCH_TEXTS[:5]]
    monkeypatch.setattr(explorer, "max_batch", 1)
    alone = [explorer.query(**body) for body in good]
    monkeypatch.setattr(explorer, "max_batch", 16)
    ids = explorer.encode([bad], torch.tensor([0]))
    ids = ids["input_ids"][0][ids["attention_mask"][0].bool()].tolist()
    monkeypatch.setitem(
        explorer.methods, "TracIn-WE", _FailsOn(explorer.methods["TracIn-WE"], ids)
    )
    test = explorer._test

    def failing_test(text, label):
        if text == broken:
            raise ValueError("no prediction for this text")
        return test(text, label)

    monkeypatch.setattr(explorer, "_test", failing_test)
    bodies = (
        good[:2] + [{"text": bad}, {"text": broken}, {"text": "ok", "k": 0}] + good[2:]
    )
    answers = _concurrently(explorer, bodies)
    assert isinstance(answers[2], RuntimeError) and "breaks" in str(answers[2])
    assert isinstance(answers[3], ValueError) and "prediction" in str(answers[3])
    assert "`k`" in str(answers[4])  # refused before it waits for a batch
    for got, expected in zip(answers[:2] + answers[5:], alone, strict=True):
        _assert_same_answer(got, expected)


def test_batching_is_off_by_default_and_its_bounds_are_checked(served, run, capsys):
    explorer, _ = served
    assert (explorer.max_batch, explorer.max_wait) == (1, 0.03)
    from captum_tracin_we._cli import _parser

    parsed = _parser().parse_args(["explore", "--model", "m", "--train", "t",
                                   "--index", "unused"])  # fmt: skip
    assert (parsed.max_batch, parsed.max_wait) == (1, 0.03)  # the CLI's too
    for bad in (0, 4097, 2.5, True, "8"):
        with pytest.raises(ValueError, match="`max_batch`"):
            Explorer(explorer.tracin, explorer.tokenizer, explorer.train_texts,
                     max_batch=bad)  # fmt: skip
    for bad in (-0.01, 10.5, float("nan"), float("inf"), None, False):
        with pytest.raises(ValueError, match="`max_wait`"):
            Explorer(explorer.tracin, explorer.tokenizer, explorer.train_texts,
                     max_wait=bad)  # fmt: skip
    with pytest.raises(ValueError, match="`max_batch` must lie in"):
        prepare_explorer(_settings(run, max_batch=0))  # before the model loads
    args = ["explore", "--model", run[1], "--train", run[2], "--index", "unused"]
    for option, value, message in (
        ("--max-batch", "0", "must lie in [1, 4096] queries; got 0"),
        ("--max-batch", "2.5", "must be a whole number of queries"),
        ("--max-wait", "nan", "must lie in [0, 10] seconds; got nan"),
        ("--max-wait", "soon", "must be a number of seconds"),
    ):
        with pytest.raises(SystemExit):
            main(args + [option, value])
        assert f"argument {option}: {message}" in capsys.readouterr().err
    assert not os.path.exists("unused")


def test_waiting_queries_share_one_checkpoint_pass_for_both_methods(
    served, monkeypatch
):
    explorer, _ = served
    tracin = explorer.tracin
    assert len(explorer.methods) == 2  # TracIn-WE and the stored last layer
    load, loads = tracin.checkpoints_load_func, []

    def counting(model, checkpoint):
        loads.append(checkpoint)
        return load(model, checkpoint)

    monkeypatch.setattr(tracin, "checkpoints_load_func", counting)
    monkeypatch.setattr(explorer, "max_batch", 16)
    before = len(explorer.batches)
    answers = _concurrently(explorer, [{"text": t, "k": 3} for t in BATCH_TEXTS])
    assert all(isinstance(a, dict) for a in answers)
    batches = len(explorer.batches) - before
    assert batches < len(BATCH_TEXTS)  # some waited and went together
    # each checkpoint loaded once per batch, for every text and both methods
    assert len(loads) == batches * len(tracin.checkpoints)


def test_a_text_that_fails_inside_the_shared_pass_fails_alone(served, monkeypatch):
    from captum_tracin_we._method import influence_pass

    explorer, _ = served
    bad = "a text whose test side cannot be computed"
    good = [{"text": t, "k": 3} for t in BATCH_TEXTS[:6]]
    monkeypatch.setattr(explorer, "max_batch", 1)
    alone = [explorer.query(**body) for body in good]
    monkeypatch.setattr(explorer, "max_batch", 16)
    encoded = explorer.encode([bad], torch.tensor([0]))["input_ids"]
    test_rows = influence_pass.test_rows

    def failing(source, batches, *args, **kwargs):
        for batch in batches:
            if batch["input_ids"].shape == encoded.shape and torch.equal(
                batch["input_ids"], encoded
            ):
                raise RuntimeError("this text breaks the test side")
        return test_rows(source, batches, *args, **kwargs)

    monkeypatch.setattr(influence_pass, "test_rows", failing)
    for _ in range(2):  # the first runs alone, the others wait and go together
        answers = _concurrently(explorer, good[:3] + [{"text": bad}] + good[3:])
        assert isinstance(answers[3], RuntimeError) and "breaks" in str(answers[3])
        for got, expected in zip(answers[:3] + answers[4:], alone, strict=True):
            _assert_same_answer(got, expected)


def test_the_explorer_keeps_its_checkpoints_and_runs_each_text_once_per_checkpoint(
    served, run, capsys
):
    from captum_tracin_we._checkpoints.resident_checkpoints import ResidentCheckpoints
    from captum_tracin_we._cli import _parser
    from captum_tracin_we._explorer.batch_bounds import DEFAULT_KEEP_CHECKPOINTS_GIB
    from captum_tracin_we._explorer.launch import build_explorer

    explorer, _ = served
    tracin = explorer.tracin
    loader = tracin.checkpoints_load_func
    assert isinstance(loader, ResidentCheckpoints)
    assert loader.budget_bytes == int(DEFAULT_KEEP_CHECKPOINTS_GIB * 2**30)
    first = explorer.query(TEXT, k=3)
    reads = loader.reads
    assert loader.kept_count == len(tracin.checkpoints)
    head_calls = []
    head = tracin.model.classifier
    handle = head.register_forward_hook(lambda *args: head_calls.append(1))
    try:
        again = explorer.query(TEXT, k=3)
    finally:
        handle.remove()
    assert loader.reads == reads  # nothing read from disk again
    _assert_same_answer(again, first)
    # the prediction, then one forward per checkpoint for both methods
    assert len(head_calls) == 1 + len(tracin.checkpoints)

    parsed = _parser().parse_args(["explore", "--model", "m", "--train", "t",
                                   "--index", "unused"])  # fmt: skip
    assert parsed.keep_checkpoints_gib == DEFAULT_KEEP_CHECKPOINTS_GIB
    args = ["explore", "--model", run[1], "--train", run[2], "--index", "unused"]
    for value, message in (("-1", "finite number >= 0"), ("lots", "number of GiB")):
        with pytest.raises(SystemExit):
            main(args + ["--keep-checkpoints-gib", value])
        assert message in capsys.readouterr().err
    with pytest.raises(ValueError, match="`keep_checkpoints_gib`"):
        prepare_explorer(_settings(run, keep_checkpoints_gib=float("nan")))
    # 0 keeps none; a copy's loader is unwrapped, not bound to the copy's model
    plain = build_explorer(
        tracin.on_model_copy(), explorer.tokenizer, explorer.train_texts,
        label_names=explorer.label_names, last_layer=None, k=3, max_length=24,
        description="copy", show_progress=False, keep_checkpoints_gib=0,
    )  # fmt: skip
    assert plain.tracin.checkpoints_load_func is loader.load_func
    (words,) = plain.query(TEXT, k=3)["methods"]
    for side in ("proponents", "opponents"):
        got, expected = words[side], first["methods"][0][side]
        assert [r["index"] for r in got] == [r["index"] for r in expected]
        assert [r["score"] for r in got] == pytest.approx(
            [r["score"] for r in expected], rel=1e-5
        )
