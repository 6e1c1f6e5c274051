"""``fmnist-search``: a thin layer over functions the tests call directly.

Exit 0 on success, 2 on bad input (one line naming the problem, no traceback), 1 on an internal error.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from fmnist.errors import FmnistError

from . import commands

SUBCOMMANDS = ("train", "presets")


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad options as our one-line usage error (exit 2), not its usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise FmnistError(f"{message} (see {self.prog} --help)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="folder with the four Fashion-MNIST files, flat or "
                   "torchvision's FashionMNIST/raw/ layout (default: $FMNIST_DATA, else ./data)")
    p.add_argument("--no-download", action="store_true", help="never try torchvision's download")
    p.add_argument("--val-size", type=_nonneg_int, default=10_000,
                   help="validation images held out of the 60k training set (default 10000)")
    p.add_argument("--train-subset", type=_positive_int, help="train on this many images only (stratified)")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda (default auto)")
    p.add_argument("--precision", default="auto",
                   help="auto|bf16|fp32 (auto: bf16 on CUDA and on CPUs with native bf16)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--seed", type=int, default=0, help="seed for the split, init, batches, augmentation")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fmnist-search", description="Architecture and training-settings search "
                     "for Fashion-MNIST.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    t = sub.add_parser("train", help="train one model: a preset or a spec file")
    which = t.add_mutually_exclusive_group(required=True)
    which.add_argument("--preset", help="a name from `fmnist-search presets`")
    which.add_argument("--spec", type=Path, help="a ModelSpec JSON file ({\"arch\": ..., \"train\": ...})")
    t.add_argument("--epochs", type=_positive_int, help="override the spec's epochs")
    t.add_argument("--batch-size", type=_positive_int, help="override the spec's batch size")
    t.add_argument("--lr", type=float, help="override the spec's learning rate")
    t.add_argument("--save", type=Path, help="write the spec and trained weights to this folder")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_data_options(t)

    sub.add_parser("presets", help="list the seed zoo: params, FLOPs, the seeds' own figures")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise FmnistError("no command given (commands: " + ", ".join(SUBCOMMANDS) + ")")
        return getattr(commands, args.command)(args)
    except FmnistError as e:
        print(f"fmnist-search: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fmnist-search: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
