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
index and by Captum's last-layer TracInCPFastRandProj):

- one client, ``--queries`` held-out sentences one after another (a user
  typing): p50, p95, max, and each method's share;
- 8 concurrent clients, ``--queries`` in all (the model serves one request at
  a time, so a query waits for the ones before it);
- 50 word views of a (text, training text) pair, as a click asks for them.

Alternatives measured in the same run, per query, on ``--baselines`` texts:
Captum's ``TracInCPFast.influence(k=10)`` both ways (it reads the whole
training set per query), and TracIn-WE without the index (the training side
recomputed).

Run:  python -m benchmarks.bench_explorer [--queries 200] [--baselines 3]
"""

import argparse
import json
import os
import statistics
import time
import urllib.request
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
    one, shares = [], {name: [] for name in explorer.methods}
    for text in texts:
        answer, seconds = post(url, {"text": text, "k": 10})
        one.append(seconds)
        for method in answer["methods"]:
            shares[method["name"]].append(method["seconds"])
    many = []

    def client(n: int) -> None:
        for text in texts[n::8]:
            many.append(post(url, {"text": text, "k": 10})[1])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(client, range(8)))
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
    for text in texts[: args.baselines]:
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
    print(summary("One client, query (k=10, both methods)", one))
    for name, values in shares.items():
        print(f"  {name}: mean {statistics.mean(values):.3f} s per query")
    print(summary("8 concurrent clients, query", many))
    print(summary("One client, word view of a pair", pairs))
    p50 = statistics.median(one)
    for name, values in baseline.items():
        if not values:
            continue
        mean = statistics.mean(values)
        print(f"{name}: mean {mean:.1f} s per query ({mean / p50:.0f}x the explorer)")


if __name__ == "__main__":
    main()
