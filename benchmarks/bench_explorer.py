#!/usr/bin/env python3

r"""
How fast the influence explorer answers typed texts, on the real pretrained
MiniLM.

Setup: the run of ``bench_explain`` (all-MiniLM-L6-v2 fine-tuned by the
demo's Trainer pipeline on 2,000 Rotten Tomatoes sentences, 4 checkpoints;
cached in benchmarks/_out/explain) and its index. The explorer is prepared as
``captum-tracin-we explore`` prepares it, and served on 127.0.0.1 on a free
port. Measured from a client over HTTP, each query ``{"text": ..., "k": 10}``
(prediction, then the top 10 proponents and opponents by TracIn-WE from the
index and by Captum's last-layer TracInCPFast, its training side stored
beside the index):

- one client, ``--queries`` held-out sentences one after another (a user
  typing): p50, p95, max, and each method's share;
- 8 concurrent clients, ``--queries`` in all;
- both of these three times in the same run, on the same server: this tree
  one query at a time (``max_batch=1``, the default: each query alone under
  the model lock, so a query waits for the ones before it); the previous
  code path, one at a time (each query reading and copying its checkpoints
  from disk, and the last layer running its own forward pass per text and
  checkpoint: what this tree does with ``keep_checkpoints_gib=0`` and
  without the shared pass); and this tree with queries answered together
  (``max_batch=16``, ``max_wait=0.03``: the queries waiting while the model
  is busy share one checkpoint pass, each text on its own batch), with the
  batch sizes seen; every answer compared with the same text's answer
  alone (this tree, one client), bitwise and to 1e-6 relative;
- 50 word views of a (text, training text) pair, as a click asks for them.

Alternatives measured in the same run, per query, on ``--baselines`` texts:
Captum's ``TracInCPFast.influence(k=10)`` both ways (it reads the whole
training set per query), and TracIn-WE without the index (the training side
recomputed).

Run:  python -m benchmarks.bench_explorer [--queries 200] [--baselines 3]
(``--baselines 0`` skips the alternatives, about 3 minutes per text)
"""

import argparse
import contextlib
import json
import os
import statistics
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import torch

from benchmarks._common import conditions
from benchmarks.bench_explain import OUT, prepare


def post(url: str, body: dict) -> tuple:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as response:
        answer = json.loads(response.read())
    return answer, time.perf_counter() - start


def held_out(count: int) -> list:
    from captum_tracin_we.demo import DemoSettings, load_rotten_tomatoes

    with open(os.path.join(OUT, "train.csv"), encoding="utf-8") as stream:
        seen = stream.read()
    _, test = load_rotten_tomatoes(2000, count + 200, DemoSettings().seed)
    return [text for text, _ in test if text not in seen][:count]


def summary(name: str, seconds: list) -> str:
    p95 = statistics.quantiles(seconds, n=20)[-1]
    return (
        f"{name}: n={len(seconds)}, p50 {statistics.median(seconds):.3f} s, "
        f"p95 {p95:.3f} s, max {max(seconds):.3f} s"
    )


def ranked(answer: dict) -> list:
    return [
        [(r["index"], r["score"]) for r in m["proponents"] + m["opponents"]]
        for m in answer["methods"]
    ]


def same(got: list, alone: list, rel: float = 1e-6) -> bool:
    r"""The same training examples in the same order, scores to ``rel``."""
    for mine, theirs in zip(got, alone, strict=True):
        if [i for i, _ in mine] != [i for i, _ in theirs]:
            return False
        for (_, a), (_, b) in zip(mine, theirs):
            if abs(a - b) > rel * max(abs(a), abs(b), 1e-30):
                return False
    return True


def one_client(url: str, texts: list) -> tuple:
    seconds, answers = [], {}
    for text in texts:
        answer, took = post(url, {"text": text, "k": 10})
        seconds.append(took)
        answers[text] = answer
    return seconds, answers


def clients_8(url: str, texts: list) -> tuple:
    seconds, answers = [], {}

    def client(n: int) -> None:
        for text in texts[n::8]:
            answer, took = post(url, {"text": text, "k": 10})
            seconds.append(took)
            answers[text] = answer

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(client, range(8)))
    return seconds, answers


@contextlib.contextmanager
def previous_path(explorer, on: bool):
    r"""The explorer as before this tree's two changes: its checkpoint loader
    unwrapped (each query reads and copies its checkpoints), and the stored
    last layer given no watch (its own forward pass per text and checkpoint)."""
    from captum_tracin_we._explorer import method_views

    if not on:
        yield
        return
    tracin = explorer.tracin
    kept, readers = tracin.checkpoints_load_func, method_views._layer_readers
    tracin.checkpoints_load_func = kept.load_func
    method_views._layer_readers = lambda *args: {}
    try:
        yield
    finally:
        tracin.checkpoints_load_func = kept
        method_views._layer_readers = readers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--baselines", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    from captum_tracin_we import TracInWE, tracincp_fast
    from captum_tracin_we.explorer import (
        ExplorerServer,
        ExploreSettings,
        prepare_explorer,
    )

    run_dir = prepare(2000)
    start = time.perf_counter()
    explorer = prepare_explorer(
        ExploreSettings(
            model=run_dir,
            train=os.path.join(OUT, "train.csv"),
            index=os.path.join(OUT, "index"),
            top_k=10,
            show_progress=False,
        )
    )
    print(f"Prepared in {time.perf_counter() - start:.1f} s (index reused)")
    texts = held_out(args.queries)
    server = ExplorerServer(explorer).start()
    url = server.url + "api/query"
    post(url, {"text": "a warm-up query", "k": 10})
    modes = {
        "this tree, one at a time (max_batch=1, the default)": (1, False),
        "previous path (checkpoints read per query, the last layer's own "
        "forward pass), one at a time": (1, True),
        "this tree, batched (max_batch=16, max_wait=0.03 s)": (16, False),
    }
    measured, answers = {}, {}
    for mode, (max_batch, previous) in modes.items():
        explorer.max_batch, explorer.max_wait = max_batch, 0.03
        with previous_path(explorer, previous):
            one, answers[mode, 1] = one_client(url, texts)
            before = len(explorer.batches)
            many, answers[mode, 8] = clients_8(url, texts)
        sizes = [b.size for b in explorer.batches][before:]
        measured[mode] = (one, many, sizes)
    shares = {}
    for mode in list(modes)[:2]:
        for answer in answers[mode, 1].values():
            for method in answer["methods"]:
                key = f"{method['name']}, {mode.split(' (')[0]}"
                shares.setdefault(key, []).append(method["seconds"])
    alone = answers[next(iter(modes)), 1]
    differ = {
        key: sum(not same(ranked(a), ranked(alone[t])) for t, a in found.items())
        for key, found in answers.items()
    }
    not_bitwise = {
        key: sum(ranked(a) != ranked(alone[t]) for t, a in found.items())
        for key, found in answers.items()
    }
    pairs = []
    for text in texts[:50]:
        answer, _ = post(url, {"text": text, "k": 1})
        index = answer["methods"][0]["proponents"][0]["index"]
        pairs.append(post(server.url + "api/pair", {"text": text, "index": index})[1])
    server.stop()

    baseline = {
        "TracInCPFast.influence(k=10), both ways": [],
        "TracIn-WE, no index": [],
    }
    tracin = explorer.tracin
    texts_b = texts[: args.baselines]
    fast = plain = None
    if texts_b:
        fast = tracincp_fast(
            tracin.model,
            tracin.train_dataloader,
            tracin.checkpoints,
            tracin.checkpoints_load_func,
        )
        plain = TracInWE(
            tracin.model,
            tracin.train_dataloader,
            tracin.checkpoints,
            tracin.checkpoints_load_func,
            batch_size=None,
        )
    for text in texts_b:
        test = explorer._test(text, None)
        start = time.perf_counter()
        fast.influence(test.batch, k=10, proponents=True)
        fast.influence(test.batch, k=10, proponents=False)
        baseline["TracInCPFast.influence(k=10), both ways"].append(
            time.perf_counter() - start
        )
        start = time.perf_counter()
        plain.influence(test.batch)
        baseline["TracIn-WE, no index"].append(time.perf_counter() - start)

    print(f"Conditions: {conditions()}; MiniLM, 2,000 training texts, 4 checkpoints")
    print(f"Queries: {len(texts)} held-out texts, k=10, both methods, over HTTP")
    for mode, (one, many, sizes) in measured.items():
        print(f"[{mode}]")
        print(summary("  One client, query", one))
        print(summary("  8 concurrent clients, query", many))
        if max(sizes, default=1) > 1:
            print(
                f"  8 clients: {len(sizes)} batches, sizes "
                f"{dict(sorted(Counter(sizes).items()))} (size: count)"
            )
    for name, values in shares.items():
        print(f"  {name}: mean {statistics.mean(values):.3f} s per query (alone)")
    for (mode, clients), count in differ.items():
        print(
            f"Answers unlike the same text's alone (one at a time, one client), "
            f"{mode}, {clients} client(s): {count} of {len(texts)} beyond 1e-6 "
            f"relative, {not_bitwise[mode, clients]} of {len(texts)} not bitwise "
            "equal (indices and scores)"
        )
    print(summary("One client, word view of a pair", pairs))
    p50 = statistics.median(measured[next(iter(modes))][0])
    for name, values in baseline.items():
        if not values:
            continue
        mean = statistics.mean(values)
        print(f"{name}: mean {mean:.1f} s per query ({mean / p50:.0f}x the explorer)")


if __name__ == "__main__":
    main()
