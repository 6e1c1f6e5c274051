"""``fmnist-search``: a thin layer over functions the tests call directly.

Exit 0 on success, 2 on bad input (one line naming the problem, no traceback), 1 on an internal error.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Sequence

from fmnist.errors import UsageError, first_line, flag
from fmnist.devices import DEVICES, PRECISIONS, device_name
from space.sample import SPACES

from search.loop.options import SAMPLERS
from search.loop import prune
from search.loop.prune import PRUNERS


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad options as our one-line usage error (exit 2), not its usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


def _int_at_least(lo: int):
    """An argparse type: an integer >= lo, with a message naming what was wrong."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be at least {lo}, got {value}")
        return value
    return parse


_positive_int = _int_at_least(1)


def _device(text: str) -> str:
    try:
        return device_name(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(e.args[0]) from None


def _int_range(lo: int, hi: int):
    """An argparse type: an integer in [lo, hi]."""
    at_least = _int_at_least(lo)

    def parse(text: str) -> int:
        value = at_least(text)
        if value > hi:
            raise argparse.ArgumentTypeError(f"must be at most {hi}, got {value}")
        return value
    return parse


def _fraction(text: str) -> float:
    """A fraction strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.005, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (a fraction of the hypervolume), got {text}")
    return value


def _margin(text: str) -> float | None:
    """An accuracy margin in [0, 1], or 'off'."""
    if text.lower() == "off":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.01, or off; got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (a fraction of accuracy), got {text}")
    return value


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of minutes, got {text!r}") from None
    if not 0 < value <= 10_000_000:
        raise argparse.ArgumentTypeError(f"must be above 0 (and sensible), got {text}")
    return value


def _add_data_options(p: argparse.ArgumentParser, contract: bool = False) -> None:
    """``contract``: --seed and --val-size are a study's; left out, a rerun takes the study's."""
    p.add_argument("--data-dir", help="folder with the four Fashion-MNIST files, flat or "
                   "torchvision's FashionMNIST/raw/ layout (default: $FMNIST_DATA, else ./data)")
    p.add_argument("--no-download", action="store_true", help="never try torchvision's download")
    p.add_argument("--val-size", type=_int_at_least(0), default=None if contract else 10_000,
                   help="validation images held out of the 60k training set (default 10000"
                        + ("; a rerun: the study's)" if contract else ")"))
    p.add_argument("--train-subset", type=_positive_int, help="train on this many images only (stratified)")
    p.add_argument("--device", default="auto", type=_device,
                   help=f"{', '.join(DEVICES)} or cuda:K (default auto: a GPU when there is one)")
    p.add_argument("--threads", type=_positive_int,
                   help="CPU threads for this process (default: PyTorch's, all cores)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="default auto: bf16 on CUDA and on CPUs with native bf16")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--seed", type=_int_range(0, 2**32 - 1), default=None if contract else 0,
                   help="seed for the split, init, batches, augmentation (0 to 2**32-1; default 0"
                        + ("; a rerun: the study's)" if contract else ")"))


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

    s = sub.add_parser("search", help="run (or continue) a multi-objective study; the default command")
    s.add_argument("--trials", type=_positive_int, default=100,
                   help="sampled candidates to train in total, counting those already in the study "
                   "(enqueued seeds and free skips come on top; default 100)")
    s.add_argument("--objective", default="acc,params",
                   help="comma-separated: acc (validation accuracy), params, flops, latency (default acc,params)")
    s.add_argument("--sampler", default="tpe", choices=SAMPLERS, help="default tpe (multivariate)")
    s.add_argument("--no-enqueue-seeds", dest="enqueue_seeds", action="store_false",
                   help="do not queue the seed models as candidates (cheapest first, pruned like any other)")
    s.add_argument("--space", default=None, choices=SPACES,
                   help="stages (default; a rerun: the study's): conv-conv-pool stages, widening, BN, GAP or "
                        "small dense head; blocks: the per-block space (any padding, pooling, 1x1 reduction per block)")
    s.add_argument("--no-warm-start", dest="warm_start", action="store_false",
                   help="do not queue the stages space's ladder of known-good designs first")
    s.add_argument("--max-params", type=_positive_int, help="skip candidates with more parameters, untrained")
    s.add_argument("--max-flops", type=_positive_int, help="skip candidates with more FLOPs, untrained")
    s.add_argument("--epochs", type=_positive_int,
                   help="epochs of the whole training split at the top rung (default: sized to --timeout, "
                        "else 10 on a CPU and 20 on a GPU)")
    s.add_argument("--timeout", type=_positive_int,
                   help="finish within this many seconds: trials that cannot reach the top rung in time stop")
    s.add_argument("--stretch-cheap", action=argparse.BooleanOptionalAction, default=True,
                   help="with --timeout on a CPU and no --epochs: nets cheaper than the mid-sized reference "
                        "train longer, for about its time (at most 4x the epochs and 15); on by default, "
                        "--no-stretch-cheap: every candidate trains the top rung's epochs")
    s.add_argument("--pruner", default="pareto", choices=PRUNERS,
                   help="pareto (default): stop candidates dominated at geometric rungs; none")
    s.add_argument("--prune-factor", type=_int_at_least(2), default=prune.FACTOR,
                   help="rung spacing and the fraction kept at each rung, 1/factor (default 3)")
    s.add_argument("--prune-margin", type=_margin, default=prune.MARGIN,
                   help="also prune a trial when one no larger (in the study's params/FLOPs objectives) "
                        "was this much more accurate at the same rung (default 0.01, one point; "
                        "off: MOASHA's rule alone)")
    s.add_argument("--prune-min-trials", type=_positive_int, default=prune.MIN_TRIALS,
                   help="trials that must reach a rung before any is pruned there (default 5)")
    s.add_argument("--rung-min-images", type=_positive_int, default=prune.FIRST_RUNG_IMAGES,
                   help="the first rung: no rung earlier than this many training images (default 4000)")
    s.add_argument("--stop-when-flat", type=_fraction, nargs="?", const=0.005, metavar="FRACTION",
                   help="end the study when the front's validation hypervolume grew by less than FRACTION of "
                        "itself over the last half of the compute spent (default 0.005 when given without a value; "
                        "not before 20 trials trained); the study's note says why it stopped")
    s.add_argument("--quiet", action="store_true", help="no live status line (per-trial lines only)")
    s.add_argument("--workers", type=_positive_int, default=1,
                   help="start this many worker processes on the study (default 1): CPU threads are split "
                        "between them; with several GPUs and --device auto/cuda, one GPU each")
    s.add_argument("--worker-of", type=_positive_int, help=argparse.SUPPRESS)  # set by --workers: the first worker's pid
    s.add_argument("--worker-id", type=_int_range(0, 9999), default=0,
                   help="this worker's own stream of candidates (the split and training seeds stay --seed's); "
                        "give each worker started by hand a different one (default 0)")
    _add_study_options(s)
    _add_data_options(s, contract=True)

    sh = sub.add_parser("show", help="the study's Pareto front as a table")
    _add_study_options(sh)

    e = sub.add_parser("export-best", help="export the chosen models: spec, weights, TorchScript, ONNX, "
                       "metrics and a report with pictures")
    _add_study_options(e)
    e.add_argument("--out", type=Path, help="output folder (default exports/STUDY/); must be new, empty, "
                   "or an earlier export (which is replaced); anything else is refused")
    e.add_argument("--trial", type=_int_at_least(0), action="append", default=[],
                   help="export this trial (repeatable) instead of the Pareto front")
    e.add_argument("--top", type=_positive_int, help="export the best K trials by --by instead of the front")
    e.add_argument("--by", default="acc", help="objective ranking --top (default acc)")
    e.add_argument("--max-params", type=_positive_int, help="only chosen trials with at most this many params")
    e.add_argument("--retrain", action="store_true",
                   help="the final training: train each chosen architecture again from scratch on all 60k "
                        "training images with its tuned settings, then export that model")
    e.add_argument("--epochs", type=_positive_int, help="with --retrain: epochs instead of the trial's")
    e.add_argument("--retrain-minutes", type=_minutes,
                   help="with --retrain: epochs sized so that the whole final training takes about this many "
                        "minutes here (from each model's measured speed), split by --retrain-split")
    e.add_argument("--retrain-split", choices=("hypervolume", "equal"),
                   help="with --retrain-minutes: 'hypervolume' (default) gives each epoch where it raises the "
                        "front's hypervolume most for its time (the largest and the cheapest models get more "
                        "than an equal share); 'equal': one number of epochs for every model")
    e.add_argument("--seeds", type=_int_range(1, 100), default=1,
                   help="with --retrain: runs of each architecture (seeds --seed, --seed+1, ...); their mean and "
                        "spread are reported, the first seed's run is exported (default 1)")
    e.add_argument("--parallel", type=_positive_int,
                   help="with --retrain on a CPU: runs trained side by side, each in its own process on its share "
                        "of the threads (default: as many as there are threads, runs and memory for; on a GPU one "
                        "at a time)")
    e.add_argument("--whole-front", action="store_true",
                   help="with --retrain: train every front member, also one whose validation lead over a smaller "
                        "member trained no longer is within the noise (default: such a member is left out, and "
                        "named, so that the minutes go to models the validation split tells apart)")
    e.add_argument("--keep-tta", action="store_true",
                   help="export each model with the test-time augmentation its search used (default: choose it "
                        "again on the search's validation split, with its search weights, among those its training "
                        "allows: none, flip, flip-shift)")
    _add_data_options(e)

    d = sub.add_parser("dashboard", help="serve optuna-dashboard on the study, with its weights, and print the URL")
    _add_study_options(d)
    d.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    d.add_argument("--port", type=_int_range(0, 65535), default=8080, help="default 8080; 0: any free port")
    d.add_argument("--allow-writes", action="store_true",
                   help="on an address other than loopback, serve writes (notes, attributes) to those who "
                        "log in with the password printed at start ($FMNIST_DASHBOARD_PASSWORD to choose it); "
                        "without it such a dashboard is read-only. Deleting or renaming a study is never served")

    pr = sub.add_parser("predict", help="classify image files (PNG/JPG, any size) or an IDX file")
    pr.add_argument("--model", type=Path, required=True, help="a model folder written by export-best")
    pr.add_argument("images", type=Path, nargs="*", help="image files or IDX image files")
    pr.add_argument("--top", type=_positive_int, default=3, help="classes shown per image (default 3)")
    pr.add_argument("--eval", action="store_true", help="report accuracy on the test set")
    _add_data_options(pr)
    return parser


def _study_name(text: str) -> str:
    from search.loop.options import check_name
    try:
        return check_name(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--study: ")) from None


def _add_study_options(p: argparse.ArgumentParser) -> None:
    from search.loop.options import DEFAULT_STUDY
    from search.study.storage import DEFAULT_STORAGE, STORAGE_ENV
    p.add_argument("--storage", default=os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE,
                   help=f"SQLAlchemy URL of the Optuna storage (default ${STORAGE_ENV}, else {DEFAULT_STORAGE}); "
                        f"keep a password out of it: ${STORAGE_ENV}, or the driver's own files (~/.pgpass, PGPASSWORD)")
    p.add_argument("--study", default=DEFAULT_STUDY, type=_study_name,
                   help=f"study name (default {DEFAULT_STUDY})")
    p.add_argument("--artifact-dir", help="where trials' weights are kept (default: beside a SQLite "
                   "database, NAME-artifacts/; else studies/artifacts)")


def main(argv: Sequence[str] | None = None) -> int:
    import optuna
    import sqlalchemy

    from search import signals
    from search.study.storage import scrub
    signals.install()  # SIGTERM stops as Ctrl-C does: one line, finished work kept
    # heartbeat_interval, TPE's group and metric names are marked experimental; we rely on them.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["search", *argv]  # `fmnist-search --trials 200 ...` is the search
    args = argparse.Namespace()

    def error(message: str) -> None:  # never a storage password, whatever a driver put in a message
        print(f"fmnist-search: error: {scrub(message, getattr(args, 'storage', '') or '')}", file=sys.stderr)

    try:
        args = build_parser().parse_args(argv)
        args.argv = argv  # --workers starts its other workers with the same command line
        if args.command in ("show", "dashboard", "presets"):
            from search import viewing as commands  # torch is never imported: these answer at once
        else:
            from search import commands  # torch loads once the command's own checks pass
        return getattr(commands, args.command.replace("-", "_"))(args)
    except UsageError as e:
        error(flag(e))
        return 2
    except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as e:
        # The database failed under a running command (full disk, a file made read-only, a server
        # gone): what was committed before stays; say so in one line.
        cause = e.__cause__ or e
        error(f"the study's storage failed ({first_line(cause)}); trials finished before this are kept")
        return 2
    except KeyboardInterrupt as e:
        print(f"fmnist-search: {signals.said(e)}", file=sys.stderr)
        return signals.exit_status(e)
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as command-line tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
