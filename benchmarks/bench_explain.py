#!/usr/bin/env python3

r"""
How fast ``captum-tracin-we explain`` answers a new ``--text`` once its index
exists, on the real pretrained MiniLM.

Setup: the demo's pipeline fine-tunes all-MiniLM-L6-v2 with transformers'
Trainer on 2,000 Rotten Tomatoes sentences (1 epoch, 3 checkpoints; cached in
benchmarks/_out/explain), then ``explain --index`` builds the index once.
Measured: ``--repeats`` re-runs, each a new ``python -m captum_tracin_we
explain`` process with a new ``--text`` and ``--top-k 5``, with the report's
default side-by-side last layer (TracInCPFast, its training side kept beside
the index: computed by the first run, read by later ones), and once more with
``--no-last-layer``, and with ``--keep-warm 10`` once a warm process runs (it
answers the command, which then imports nothing heavy); with ``--previous
REV`` also the package at git revision REV (the previous code path),
alternating. For each: the wall time of the
command (Python's start and the imports of torch and transformers included),
and the phases the command itself reports in ``scores.json`` under
``"seconds"``: "load" (model, tokenizer, data, tokenization, predictions),
"index" (TracInWE and the index, verified: checksums and the training data),
"query" (every method's scores and the word influence) and "report" (figures
and report.html). Also the floor: a new process that only imports torch and
transformers and loads the model and tokenizer.

Run:  python -m benchmarks.bench_explain [--repeats 5] [--previous REV]
"""

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from typing import List

from benchmarks._common import conditions, previous_package

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_out", "explain")
TEXTS = [
    "a gripping, funny and humane film",
    "the plot is a mess and the acting is worse",
    "an ambitious failure that is still worth seeing",
    "slow , dull and far too long",
    "one of the year's most delightful surprises",
    "it never finds its footing",
    "a warm , generous portrait of a family",
    "the jokes fall flat",
]


def prepare(train_size: int) -> str:
    r"""Fine-tunes MiniLM as the demo does (cached) and returns the output folder."""
    from captum_tracin_we.demo import DemoSettings, demo_rows, fine_tune_run

    settings = DemoSettings(train_size=train_size, test_size=4, out=OUT)
    run_dir = os.path.join(OUT, "run")
    if not any(name.startswith("checkpoint-") for name in _listdir(run_dir)):
        os.makedirs(OUT, exist_ok=True)
        train, _, names = demo_rows(settings)
        with open(os.path.join(OUT, "train.csv"), "w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["text", "label"])
            writer.writerows([text, names[label]] for text, label, _ in train)
        start = time.perf_counter()
        fine_tune_run(settings, train, names, run_dir)
        print(f"Fine-tuned in {time.perf_counter() - start:.0f} s")
    return run_dir


def _listdir(path: str):
    return os.listdir(path) if os.path.isdir(path) else []


def explain(
    run_dir: str,
    text: str,
    index: str,
    previous=None,
    last_layer: bool = True,
    keep_warm: float = 0,
) -> dict:
    r"""
    Runs the command once as a new process (with the package at git revision
    ``previous`` when given); returns its wall time and its reported phases.
    """
    out = os.path.join(OUT, "report")
    command = [
        sys.executable, "-m", "captum_tracin_we", "explain", "--model", run_dir,
        "--train", os.path.join(OUT, "train.csv"), "--text", text, "--top-k", "5",
        "--index", index, "--no-progress", "--out", out,
    ]  # fmt: skip
    if not last_layer:
        command.append("--no-last-layer")
    if keep_warm:
        command += ["--keep-warm", str(keep_warm)]
    cwd, env = None, None
    if previous:  # `python -m` puts the working folder first on sys.path
        cwd = previous_package(previous)
        env = {**os.environ, "PYTHONPATH": cwd}
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=cwd, env=env)
    wall = time.perf_counter() - start
    with open(os.path.join(out, "scores.json"), encoding="utf-8") as stream:
        phases = json.load(stream)["seconds"]
    return {**phases, "command": wall}


FLOOR = (
    "import torch; from transformers import AutoModelForSequenceClassification, "
    "AutoTokenizer; AutoModelForSequenceClassification.from_pretrained({0!r}); "
    "AutoTokenizer.from_pretrained({0!r})"
)


def floor(run_dir: str) -> float:
    r"""
    Wall time of a new process that only imports torch and transformers and
    loads the final checkpoint and its tokenizer: what any command that
    answers with this model pays before it computes anything.
    """
    final = sorted(
        (n for n in os.listdir(run_dir) if n.startswith("checkpoint-")),
        key=lambda n: int(n.split("-")[1]),
    )[-1]
    code = FLOOR.format(os.path.join(run_dir, final))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - start


START_UP = {
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "python -c 'import captum_tracin_we'": [
        sys.executable, "-c", "import captum_tracin_we",
    ],
    "captum-tracin-we explain --help": [
        sys.executable, "-m", "captum_tracin_we", "explain", "--help",
    ],
}  # fmt: skip


def start_up_lines(repeats: int) -> List[str]:
    r"""Item 1's start-up goals: ``--help`` within half of ``import torch``,
    ``import captum_tracin_we`` within 1.3x it (new processes, median)."""
    medians = {}
    for name, command in START_UP.items():
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            times.append(time.perf_counter() - start)
        medians[name] = statistics.median(times)
    torch_s = medians["python -c 'import torch'"]
    return [
        f"  {name}: {value:.2f} s ({value / torch_s:.2f}x import torch)"
        for name, value in medians.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--previous",
        help="a git revision: also run its package's command (the previous code "
        "path) in the same run, alternating with this tree's",
    )
    args = parser.parse_args()
    run_dir = prepare(args.train)
    index = os.path.join(OUT, "index")
    first = explain(run_dir, "a first question builds the index", index)
    print(
        f"First run (builds what is missing beside the index): {first['command']:.1f} s"
    )
    with open(os.path.join(OUT, "train.csv"), encoding="utf-8") as stream:
        count = sum(1 for _ in csv.DictReader(stream))
    paths = {
        "this tree": {},
        "this tree, --no-last-layer": {"last_layer": False},
        "this tree, --keep-warm 10 (answered by the warm process)": {"keep_warm": 10},
    }
    if args.previous:
        paths[f"previous ({args.previous})"] = {"previous": args.previous}
    explain(run_dir, "a question that starts the warm process", index, keep_warm=10)
    time.sleep(60)  # it loads the model, data and index in the background
    runs = {name: [] for name in paths}
    floors = []
    for i in range(args.repeats):  # alternating, so that drift hits all alike
        for name, options in paths.items():
            runs[name].append(explain(run_dir, TEXTS[i % len(TEXTS)], index, **options))
        floors.append(floor(run_dir))
    print(f"Conditions: {conditions()}")
    print(
        f"MiniLM, {count} training texts, 3 checkpoints, one new --text per run, "
        "--top-k 5, index attached with verify=True, the report's default "
        f"side-by-side last layer (TracInCPFast) unless said; median of "
        f"{args.repeats}"
    )
    for name, values in runs.items():
        print(f"{name}:")
        for phase in ("load", "index", "query", "report", "command"):
            times = [run[phase] for run in values]
            print(f"  {phase:8s}: {statistics.median(times):.2f} s "
                  f"(min {min(times):.2f}, max {max(times):.2f})")  # fmt: skip
    print(
        f"Floor (a new process importing torch and transformers and loading the "
        f"model and tokenizer, nothing else): {statistics.median(floors):.2f} s "
        f"(min {min(floors):.2f}, max {max(floors):.2f})"
    )
    print(f"Start-up, new processes, median of {max(args.repeats, 5)}:")
    print("\n".join(start_up_lines(max(args.repeats, 5))))


if __name__ == "__main__":
    main()
