"""What each CLI subcommand does; ``search.cli`` only parses arguments and maps errors to exit codes.

torch and the modules that use it load in ``accepted``, once a command's own checks have passed:
a refused command (a study that is not there, options that clash, a folder that must not be
replaced) answers at once rather than after torch's import, which takes seconds.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from tqdm import tqdm

import fmnist
from fmnist.errors import UsageError
from space import ModelSpec, flops, param_count, zoo
from space.sample import smallest

from search import signals
from search.handover import written
from search.handover.choice import select
from search.handover.target import check_target
from search.loop import options
from search.study import artifacts, opening as studies, record, storage as storages
from search.view.front import format_counts, format_front
from search.view.progress import Progress
from search.view.table import format_table, pct
from search.viewing import existing_study

if TYPE_CHECKING:
    import torch

    from search.loop.plan import Pace, Plan, Profile


def accepted(args: argparse.Namespace) -> None:
    """The command passed its own checks: load torch, with --threads for this process (process-wide,
    so set here, not in the library)."""
    import torch
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)


def with_overrides(spec: ModelSpec, **overrides) -> ModelSpec:
    """The spec with the training settings given on the command line (None = keep)."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(spec, train=dataclasses.replace(spec.train, **changes)) if changes else spec


def load_dataset(args: argparse.Namespace) -> fmnist.FashionMNIST:
    """The data set from --data-dir (or its defaults), announcing files that are not the official ones."""
    ds = fmnist.load(args.data_dir, download=not args.no_download)
    for notice in ds.notices:
        print(notice, file=sys.stderr)
    return ds


def load_splits(args: argparse.Namespace, device: torch.device) -> fmnist.Splits:
    """Load, split and move to ``device``, printing any notice about unofficial files."""
    ds = load_dataset(args)
    return fmnist.make_splits(ds, args.val_size, args.seed, args.train_subset).to(device)


def fast_kernels(device: torch.device) -> None:
    """A process-wide switch, so the CLI sets it, not the library: batches have fixed shapes, so
    cuDNN may try its kernels once and keep the fastest."""
    import torch
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def train(args: argparse.Namespace) -> int:
    preset = zoo.preset(args.preset) if args.preset else None
    spec = preset.spec if preset else ModelSpec.from_file(args.spec)
    spec = with_overrides(spec, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    if args.save:
        check_save(args.save)  # before training: a bad folder must not cost the trained model
    accepted(args)
    if spec.arch.num_classes != len(fmnist.CLASSES):
        raise UsageError(f"{args.spec}: arch.num_classes is {spec.arch.num_classes}; Fashion-MNIST has "
                          f"{len(fmnist.CLASSES)} classes")
    from space import build
    from search.loop.trial import too_big
    device = fmnist.pick_device(args.device)
    fmnist.pick_precision(device, args.precision)  # a bad --precision refused before the data is loaded
    data = load_splits(args, device)
    fast_kernels(device)
    big = too_big(spec.arch, min(spec.train.batch_size, len(data.train)), device)
    if big:
        raise UsageError(f"{args.preset or args.spec}: too large to train here: {big}")
    model = build(spec.arch, seed=args.seed)
    name = preset.name if preset else str(args.spec)
    print(f"{name}: {param_count(spec.arch):,} params, {flops(spec.arch) / 1e6:.1f} MFLOPs; "
          f"train {len(data.train):,} / val {len(data.val):,} / test {len(data.test):,} images "
          f"on {data.train.images.device}; {spec.train.epochs} epochs, batch {spec.train.batch_size}")

    bar = tqdm(total=1, unit="img", unit_scale=True, disable=args.quiet, dynamic_ncols=True, leave=False)

    def on_progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        if done % (50 * spec.train.batch_size) < spec.train.batch_size or done == total:
            bar.refresh()

    def on_report(r: fmnist.Report) -> None:
        tqdm.write(f"epoch {r.epoch:g}: train loss {r.train_loss:.4f}, val acc {pct(r.val_acc)}",
                   file=sys.stdout)

    result = fmnist.train(model, data, spec.train, seed=args.seed, precision=args.precision,
                          compile=args.compile, on_report=on_report, on_progress=on_progress)
    bar.close()
    if result.stop_reason:
        print(f"stopped: {result.stop_reason}")
    rows = [["params", f"{param_count(spec.arch):,}"],
            ["validation acc", pct(result.val_acc)],
            ["test acc", pct(result.test_acc)],
            ["test top-5", pct(result.test_top5)],
            ["images/s", f"{result.images_per_s:,.0f} ({result.device}, {result.precision})"]]
    if preset and preset.reported_acc is not None:
        rows.append([f"seed {preset.seed} reported", f"{preset.reported_acc:.2f}% ({preset.reported_split})"])
    print(format_table(["", name], rows))
    if args.save:
        save_trained(args.save, spec, model, result)
        print(f"saved to {args.save}")
    return 0 if not result.stop_reason else 1


SAVED = ("spec.json", "weights.pt", "metrics.json")
SAVE_MARKER = ".fmnist-train"  # in a folder train --save wrote: what it wrote, so it may replace that


def check_save(folder: Path) -> None:
    """Refuse a --save folder where the files train writes would replace someone else's (or where
    nothing can be written), before training; the folder is created only when the model is saved."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--save {folder}: is a file, not a folder")
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise UsageError(f"--save {folder}: cannot write in {probe}")
    present = [name for name in SAVED if (folder / name).exists() or (folder / name).is_symlink()]
    if not present:
        return
    if not (folder / SAVE_MARKER).is_file():
        raise UsageError(f"--save {folder}: holds {present[0]}, which train did not write; choose another folder")
    other = written.foreign(folder, SAVE_MARKER, written.read_manifest(folder, SAVE_MARKER, "--save"), only=present)
    if other is not None:
        raise UsageError(f"--save {folder}: holds {other}, which train did not write (or which changed since); "
                         f"choose another folder")


def save_trained(folder: Path, spec: ModelSpec, model: torch.nn.Module, result: fmnist.TrainResult) -> None:
    import torch
    check_save(folder)  # again: nothing may have appeared there while the model trained
    metrics = json.dumps({
        "params": param_count(spec.arch), "flops": flops(spec.arch), "val_acc": result.val_acc,
        "test_acc": result.test_acc, "test_top5": result.test_top5,
        "curve": [dataclasses.asdict(r) for r in result.curve]}, indent=2)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with signals.held():  # each file whole, and the manifest naming them
            for name, write in (("spec.json", lambda p: p.write_text(spec.to_json())),
                                ("weights.pt", lambda p: torch.save({k: v.cpu() for k, v in model.state_dict().items()}, p)),
                                ("metrics.json", lambda p: p.write_text(metrics))):
                part = folder / f".{name}.part"
                write(part)
                part.replace(folder / name)
            written.write_manifest(folder, SAVE_MARKER, "fmnist-search train", [folder / n for n in SAVED])
    except OSError as e:
        for name in SAVED:  # a full disk: no half-written file left beside the user's
            (folder / f".{name}.part").unlink(missing_ok=True)
        raise UsageError(f"--save {folder}: cannot write ({e.strerror or e})") from None


# An average trial costs about this fraction of a top-rung training: most stop at the first rung
# (measured: 3.6M images over 125 trials with a 150k-image top rung, docs/benchmarks.md).
TRIAL_SHARE_OF_TOP = 1 / 5


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def estimate(trials: int, top_images: int, rate: float) -> str:
    """A rough duration of a study without --timeout, said up front."""
    study = trials * top_images * TRIAL_SHARE_OF_TOP / rate
    return (f"estimate: one top-rung training of a mid-sized net takes about {duration(top_images / rate)} "
            f"here; {trials} trials take roughly {duration(study)} (most stop at a low rung; --timeout bounds it)")


def stretch_note(plan: Plan) -> str:
    if not plan.stretches:
        return ""
    return (f"; nets cheaper than the reference train longer, up to {plan.stretch_epochs} epochs "
            f"(about the reference's training time; --no-stretch-cheap: all {plan.epochs})")


def plan_budget(args: argparse.Namespace, device: torch.device, data: fmnist.Splits,
                contract: studies.Contract, rate: Callable[[], float]) -> Profile:
    """The study's stored budget when it has one (a rerun or another worker keeps it), else a new
    one: --epochs, or sized to --timeout by a brief measurement, or the device's default."""
    from search.loop.plan import pick_profile
    if contract.epochs is not None and args.epochs is None:  # the study's own
        return dataclasses.replace(pick_profile(device), epochs=contract.epochs)
    return pick_profile(device, args.epochs, args.timeout, len(data.train), rate=rate)


def study_pace(stored: dict | None, data: fmnist.Splits, precision: str, space: str,
               rate: Callable[[], float], seed: int) -> Pace:
    """The pace the study's budget holds (a rerun or another worker: the same architecture gets the
    same epochs, so it is known as a duplicate), else the pace measured here."""
    from search.loop.plan import Pace, measure_pace
    budget = record.Budget.from_dict(stored)
    if budget is not None and budget.pace is not None:
        return Pace(*budget.pace)
    return measure_pace(data, precision, space, rate, seed)


def _started_by_workers(args: argparse.Namespace) -> bool:
    """A worker that --workers started: its first worker reached the storage a moment ago, so a
    server it cannot reach is in an outage, waited for as during the trials."""
    return args.worker_of is not None


def find_study(args: argparse.Namespace, objectives: tuple[str, ...], sampler):
    """(storage, study) as they are before this command writes anything: the storage is opened
    only where it already holds Optuna's tables (else None), the study only where it exists."""
    found = storages.tables(args.storage, wait=_started_by_workers(args))
    storages.check_tables(args.storage, found, create=True)  # another application's database: refused
    if not storages.has_optuna_tables(found):
        return None, None
    storage = storages.open_storage(args.storage, create=False, wait=_started_by_workers(args))
    return storage, studies.check_study(storage, args.study, objectives, sampler)


@dataclasses.dataclass
class Planned:
    """What planning a search found and decided, before anything was written."""
    plan: Plan
    contract: studies.Contract
    profile: Profile
    data: fmnist.Splits
    device: torch.device
    precision: str               # as the trainer will run it: bfloat16 or fp32
    sampler: object
    folder: Path                 # the weights' artifact folder
    storage: object | None       # opened already where it holds Optuna's tables
    existing: object | None      # the study, where it exists
    rate: Callable[[], float]    # the reference training speed here, measured when first needed


def search(args: argparse.Namespace) -> int:
    """Plan (everything checked, nothing written), open the study once, run it."""
    # A worker started by --workers prints its trials only; the first worker speaks for the study.
    say = print if args.worker_of is None else (lambda *a, **k: None)
    planned = plan_search(args, say)
    study, store = open_search(args, planned, say)
    return run_search(args, planned, study, store, say)


def plan_search(args: argparse.Namespace, say: Callable[[str], None]) -> Planned:
    """Every check that can refuse the command, before anything is written: the storage and the
    study as they are, the contract (a rerun takes the study's), the options, the artifact folder,
    the data; then the budget, measured here, and the frozen plan."""
    import optuna
    started = time.monotonic()  # --timeout counts from here: loading and planning are part of it
    objectives = options.parse_objectives(args.objective)
    storages.check_url(args.storage)
    given = {"split_seed": args.seed, "val_images": args.val_size, "train_subset": args.train_subset,
             "epochs": args.epochs, "space": args.space}
    storage, existing = find_study(args, objectives, None)
    stored = existing.user_attrs.get(record.BUDGET) if existing is not None else None
    contract = studies.resolve_contract(args.study, stored, given)
    args.seed, args.val_size, args.train_subset = contract.split_seed, contract.val_images, contract.train_subset
    if existing is not None and stored:
        say(f"continuing study {args.study!r} with its own split and budget: {contract.describe()}")
    check_search(args, objectives, contract.space)
    folder = artifacts.artifact_dir(args.storage, args.artifact_dir)
    artifacts.check_folder(folder)
    if existing is not None:
        artifacts.check_shared(existing, folder)
    sampler = options.make_sampler(args.sampler, options.worker_seed(args.seed, args.worker_id))
    if existing is not None:
        existing.sampler = sampler
    accepted(args)
    import torch
    from fmnist.trainer import precision_name
    from search.loop import workers
    from search.loop.plan import Plan, reference_rate
    if args.workers > 1 and args.device in ("auto", "cuda") and torch.cuda.device_count() > 1:
        args.device = f"cuda:{args.worker_id % torch.cuda.device_count()}"  # one GPU per worker
    device = fmnist.pick_device(args.device)
    precision = precision_name(fmnist.pick_precision(device, args.precision))  # a bad one refused before the data
    workers.check_workers(args)
    data = load_splits(args, device)
    fast_kernels(device)
    # We print our own line per trial; Optuna's warning for an interrupted trial carries a traceback.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rate = functools.cache(lambda: reference_rate(data, args.precision, args.seed))  # measured when needed
    profile = plan_budget(args, device, data, contract, rate)
    pace = functools.partial(study_pace, stored, data, args.precision, contract.space, rate, args.seed)
    plan = Plan.of(args, objectives, contract.space, profile, pace,
                   None if args.timeout is None else max(1.0, args.timeout - (time.monotonic() - started)))
    return Planned(plan, contract, profile, data, device, precision, sampler, folder, storage, existing, rate)


def open_search(args: argparse.Namespace, p: Planned, say: Callable[[str], None]):
    """The study opened against the plan, once: created with its budget where it is new; its
    weights folder. From here on, the command writes."""
    storage = p.storage or storages.open_storage(args.storage, wait=_started_by_workers(args))
    study = studies.open_study(storage, args.study, p.plan.objectives, p.sampler, p.existing)
    pace = None if p.plan.pace is None else (p.plan.pace.fixed, p.plan.pace.per_flop)
    stored = study.user_attrs.get(record.BUDGET)
    if stored and pace is not None and "pace" not in stored:  # a study first run without a timeout
        study.set_user_attr(record.BUDGET, {**stored, "pace": list(pace)})
    if stored is None:
        budget = record.Budget(epochs=p.profile.epochs, train_images=len(p.data.train), val_images=len(p.data.val),
                               split_seed=args.seed, space=p.contract.space, profile=p.profile.name,
                               train_subset=args.train_subset, pace=pace)
        study.set_user_attr(record.BUDGET, budget.to_dict())
        # Workers that created the study together: the last budget written is the study's; one
        # whose own was overwritten by a different one stops here.
        studies.resolve_contract(args.study, study.user_attrs[record.BUDGET],
                                 {**dataclasses.asdict(p.contract), "epochs": p.profile.epochs})
    store = artifacts.open_store(p.folder)
    artifacts.mark_shared(study, store)
    if storages.sqlite_path(args.storage) is None and not args.artifact_dir:
        say(f"note: weights go to {store.folder} on this machine; with workers on other machines, give "
            f"every worker the same shared --artifact-dir so that export-best finds all of them")
    return study, store


def run_search(args: argparse.Namespace, p: Planned, study, store, say: Callable[[str], None]) -> int:
    """The loop, with the other workers of --workers beside it; one path for an interrupt."""
    from search.loop import workers
    from search.loop.run import Search, enqueue_seeds, enqueue_warm_starts
    runner = Search(study, p.plan, p.data, progress=Progress(enabled=not args.quiet), store=store)
    say(p.profile.describe(len(p.data.train), len(p.data.val), runner.rungs if args.pruner != "none" else [])
        + stretch_note(p.plan) + f"; space {p.contract.space}; {p.device}, {p.precision}")
    left = max(0, args.trials - runner.done())
    if args.timeout is None and left:
        say(estimate(left, len(p.data.train) * p.profile.epochs, p.rate()))
    reclaimed = runner.reclaim()
    if reclaimed:
        say(f"trials {', '.join(map(str, reclaimed))} were left running by a process that is gone: "
            f"marked failed, their configurations queued again")
    if args.warm_start and p.contract.space == "stages" and enqueue_warm_starts(study):
        say("queued the stages space's warm starts (a ladder of known-good designs)")
    if args.enqueue_seeds:
        queued = enqueue_seeds(study)
        if queued:
            say(f"queued {len(queued)} seed models as candidates (cheapest first, through the same rungs)")
    done = runner.done()
    extra = " (parallel workers finishing together can pass the total)" if done > args.trials else ""
    say(f"study {args.study!r} in {storages.shown(args.storage)}: {done} of {args.trials} trials done{extra}")
    # The others start once the study, its budget and its queue exist: they take them as they are.
    others = workers.start_workers(args) if args.workers > 1 else []
    if others:
        workers.watch(others, runner.reclaim)
    try:
        runner.run()
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: the runner released its trials; tell, wait, show
        say(f"\n{signals.said(e)}: finished trials are kept; the interrupted one is queued again. "
            "Run the same command to continue.")
        workers.wait_for(others, e)
        say(format_front(study))
        return signals.exit_status(e)
    failed = workers.wait_for(others)
    if others and runner.reclaim():  # a worker killed after this one's last trial
        runner.run()
    say(format_counts(study))
    say(format_front(study))
    return 2 if failed else 0


def check_search(args: argparse.Namespace, objectives: tuple[str, ...], space: str) -> None:
    """The search's own options against each other and the space, before anything is written."""
    if "acc" in objectives and args.val_size == 0:
        raise UsageError("--val-size 0: the acc objective is validation accuracy, so selection needs "
                         "validation images (the test set is never used to choose)")
    least = smallest(space)
    for flag, limit, size, name in (("--max-params", args.max_params, param_count(least), "parameters"),
                                    ("--max-flops", args.max_flops, flops(least), "FLOPs")):
        if limit is not None and limit < size:
            raise UsageError(f"{flag} {limit:,}: no candidate fits; the {space} space's smallest model "
                             f"has {size:,} {name}")


def export_best(args: argparse.Namespace) -> int:
    given = [flag for flag, value in (("--retrain-minutes", args.retrain_minutes), ("--seeds", args.seeds > 1 or None),
                                      ("--epochs", args.epochs), ("--parallel", args.parallel)) if value is not None]
    if given and not args.retrain:
        raise UsageError(f"{given[0]}: belongs to the final training; add --retrain")
    if args.whole_front and not args.retrain:
        raise UsageError("--whole-front: belongs to the final training (without --retrain the whole front is exported)")
    if args.whole_front and (args.trial or args.top is not None):
        raise UsageError("--whole-front: the front is not what is exported with --trial or --top")
    if args.retrain_minutes is not None and args.epochs is not None:
        raise UsageError("--epochs and --retrain-minutes: give one (epochs by hand, or sized to the minutes)")
    if args.retrain_split is not None and args.retrain_minutes is None:
        raise UsageError("--retrain-split: splits --retrain-minutes over the models; add --retrain-minutes")
    out = args.out or Path("exports") / options.folder_safe(args.study)
    folder = artifacts.artifact_dir(args.storage, args.artifact_dir)
    protected = [folder, *storages.sqlite_files(args.storage)]
    check_target(out, protected)  # refuse a bad --out before opening anything
    study = existing_study(args)
    chosen = select(study, args.trial, args.max_params, args.top, args.by,
                    leave_ties=args.retrain and not args.whole_front, log=print)
    accepted(args)
    from search.handover import runs
    from search.handover.export import ExportOptions, export
    store = artifacts.open_store(folder)
    device = fmnist.pick_device(args.device)
    # --parallel refused, if it must be, before the data is loaded and the TTA chosen
    processes, threads = runs.share(device, args.parallel, len(chosen) * args.seeds) if args.retrain else (1, None)
    ds = load_dataset(args)
    print(f"exporting {len(chosen)} model(s) of study {args.study!r} to {out}")
    export(study, chosen, out, store, ds, ExportOptions(device, args.precision, args.retrain, args.epochs, args.seed,
                                                         args.retrain_minutes, args.seeds, args.keep_tta,
                                                         args.retrain_split or "hypervolume", processes, threads),
           protected=protected)
    print(f"done: {out / 'report.html'} and {out / 'report.md'}")
    return 0


def predict(args: argparse.Namespace) -> int:
    if not args.images and not args.eval:
        raise UsageError("predict: give image files, or --eval for the test set")
    accepted(args)
    from search.handover.predict import load_model, read_inputs
    device = fmnist.pick_device(args.device)
    amp = fmnist.pick_precision(device, args.precision)
    model, batch = load_model(args.model, device)
    model.to(device)
    if args.images:
        names, images = read_inputs(args.images)
        probs = fmnist.predict(model, images.to(device), amp, batch).softmax(1).cpu()
        for name, p in zip(names, probs):
            top = p.topk(min(args.top, len(p)))
            print(f"{name}: " + ", ".join(f"{fmnist.CLASSES[i]} {100 * v:.1f}%"
                                          for v, i in zip(top.values.tolist(), top.indices.tolist())))
    if args.eval:
        test = load_dataset(args).test.to(device)
        logits = fmnist.predict(model, test.images, amp, batch)
        print(f"test accuracy {pct(fmnist.accuracy(logits, test.labels))}, "
              f"top-5 {pct(fmnist.accuracy(logits, test.labels, 5))} on {len(test):,} images")
    return 0
