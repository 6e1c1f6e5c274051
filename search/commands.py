"""What each CLI subcommand does; ``search.cli`` only parses arguments and maps errors to exit codes."""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

import fmnist
from fmnist.errors import UsageError
from fmnist.train import precision_name
from space import ModelSpec, build, flops, param_count, zoo
from space.sample import smallest

from . import artifacts
from . import options, reclaim, record, storage as storages, study as studies
from .front import format_counts, format_front
from .progress import Progress
from .table import format_table, pct
from .run import (Profile, Search, SearchConfig, enqueue_seeds, enqueue_warm_starts, pick_profile,
                  reference_rate, too_big)


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


def existing_study(args: argparse.Namespace):
    """The study named by --study, which must exist in --storage (a SQLite file is not created)."""
    path = storages.sqlite_path(args.storage)
    if path is not None and not path.is_file():
        raise UsageError(f"--storage {args.storage}: no database at {path}")
    return studies.load_existing(storages.open_storage(args.storage), args.study)


def prepare_data(args: argparse.Namespace) -> fmnist.Splits:
    """Load, split and move to the device, printing any notice about unofficial files."""
    device = fmnist.pick_device(args.device)
    fmnist.pick_precision(device, args.precision)  # reject a bad --precision before loading data
    ds = load_dataset(args)
    return fmnist.make_splits(ds, args.val_size, args.seed, args.train_subset).to(device)



def fast_kernels(device: torch.device) -> None:
    """A process-wide switch, so the CLI sets it, not the library: batches have fixed shapes, so
    cuDNN may try its kernels once and keep the fastest."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def train(args: argparse.Namespace) -> int:
    preset = zoo.preset(args.preset) if args.preset else None
    spec = preset.spec if preset else ModelSpec.from_file(args.spec)
    spec = with_overrides(spec, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    if spec.arch.num_classes != len(fmnist.CLASSES):
        raise UsageError(f"{args.spec}: arch.num_classes is {spec.arch.num_classes}; Fashion-MNIST has "
                          f"{len(fmnist.CLASSES)} classes")
    if args.save:
        writable_folder(args.save)  # before training: a bad folder must not cost the trained model
    data = prepare_data(args)
    fast_kernels(data.train.images.device)
    big = too_big(spec.arch, min(spec.train.batch_size, len(data.train)), data.train.images.device)
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


def writable_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--save {folder}: cannot create ({e.strerror or e})") from None
    if not os.access(folder, os.W_OK):
        raise UsageError(f"--save {folder}: not writable")


def save_trained(folder: Path, spec: ModelSpec, model: torch.nn.Module, result: fmnist.TrainResult) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "spec.json").write_text(spec.to_json())
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, folder / "weights.pt")
        (folder / "metrics.json").write_text(json.dumps({
            "params": param_count(spec.arch), "flops": flops(spec.arch), "val_acc": result.val_acc,
            "test_acc": result.test_acc, "test_top5": result.test_top5,
            "curve": [dataclasses.asdict(r) for r in result.curve]}, indent=2))
    except OSError as e:
        raise UsageError(f"--save {folder}: cannot write ({e.strerror or e})") from None


def presets(args: argparse.Namespace) -> int:
    rows = []
    for p in zoo.PRESETS:
        rows.append([p.name, p.seed_model, f"{p.params:,}",
                     "-" if p.reported_params is None else f"{p.reported_params:,}",
                     "exact" if p.exact else ("-" if p.gap is None else f"{p.gap:+,}"),
                     f"{p.flops / 1e6:.1f}",
                     "-" if p.reported_acc is None else f"{p.reported_acc:.2f}%", p.reported_split])
    print(format_table(["preset", "seed's model", "params", "seed's params", "gap", "MFLOPs",
                        "seed's acc", "measured on"], rows))
    return 0




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


def plan_budget(args: argparse.Namespace, device: torch.device, data: fmnist.Splits,
                stored: dict | None, rate: Callable[[], float]) -> Profile:
    """The study's stored budget when it has one (a rerun or another worker keeps it), else a new
    one: --epochs, or sized to --timeout by a brief measurement, or the device's default."""
    if stored:  # another --epochs was refused already (studies.check_contract)
        return dataclasses.replace(pick_profile(device), epochs=stored["epochs"])
    return pick_profile(device, args.epochs, args.timeout, len(data.train), rate=rate)


def search(args: argparse.Namespace) -> int:
    import optuna
    started = time.monotonic()  # --timeout counts from here: loading and planning are part of it
    # A worker started by --workers prints its trials only; the first worker speaks for the study.
    say = print if WORKER_OF not in os.environ else (lambda *a, **k: None)
    objectives = options.parse_objectives(args.objective)
    if "acc" in objectives and args.val_size == 0:
        raise UsageError("--val-size 0: the acc objective is validation accuracy, so selection needs "
                          "validation images (the test set is never used to choose)")
    least = smallest(args.space)  # before the storage is opened: a refused command writes nothing
    for flag, limit, size, name in (("--max-params", args.max_params, param_count(least), "parameters"),
                                    ("--max-flops", args.max_flops, flops(least), "FLOPs")):
        if limit is not None and limit < size:
            raise UsageError(f"{flag} {limit:,}: no candidate fits; the {args.space} space's smallest model "
                              f"has {size:,} {name}")
    sampler = options.make_sampler(args.sampler, options.worker_seed(args.seed, args.worker_id))
    if args.workers > 1 and args.device in ("auto", "cuda") and torch.cuda.device_count() > 1:
        args.device = f"cuda:{args.worker_id % torch.cuda.device_count()}"  # one GPU per worker
    device = fmnist.pick_device(args.device)
    fast_kernels(device)
    storage = storages.open_storage(args.storage)
    existing = studies.check_study(storage, args.study, objectives)  # before the data: fail fast
    stored = existing.user_attrs.get(record.BUDGET) if existing is not None else None
    wanted = {"split_seed": args.seed, "val_images": args.val_size, "train_subset": args.train_subset,
              "epochs": args.epochs}
    studies.check_contract(args.study, stored, wanted)
    folder = artifacts.artifact_dir(args.storage, args.artifact_dir)
    if existing is not None:
        artifacts.check_shared(existing, folder)
    space = stored.get("space", "blocks") if stored else args.space
    data = prepare_data(args)
    # We print our own line per trial; Optuna's warning for an interrupted trial carries a traceback.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rate = functools.cache(lambda: reference_rate(data, args.precision, args.seed))  # measured when needed
    profile = plan_budget(args, device, data, stored, rate)
    study = studies.open_study(storage, args.study, objectives, sampler)
    if record.BUDGET not in study.user_attrs:
        budget = {"profile": profile.name, "epochs": profile.epochs, "train_images": len(data.train),
                  "val_images": len(data.val), "split_seed": args.seed, "space": space}
        study.set_user_attr(record.BUDGET, budget | ({"train_subset": args.train_subset} if args.train_subset else {}))
        # Workers that created the study together: the last budget written is the study's; one
        # whose own was overwritten by a different one stops here.
        studies.check_contract(args.study, study.user_attrs[record.BUDGET], {**wanted, "epochs": profile.epochs})
    config = SearchConfig(objectives=objectives, trials=args.trials, epochs=profile.epochs, space=space,
                          max_params=args.max_params, max_flops=args.max_flops,
                          profile_max_flops=profile.max_flops,
                          timeout=None if args.timeout is None else max(1.0, args.timeout - (time.monotonic() - started)),
                          seed=args.seed, precision=args.precision, compile=args.compile,
                          pruner=args.pruner, prune_factor=args.prune_factor,
                          prune_min_trials=args.prune_min_trials, prune_margin=args.prune_margin,
                          rung_min_images=args.rung_min_images)
    store = artifacts.open_store(folder)
    artifacts.mark_shared(study, store)
    if storages.sqlite_path(args.storage) is None and not args.artifact_dir:
        say(f"note: weights go to {store.folder} on this machine; with workers on other machines, give "
            f"every worker the same shared --artifact-dir so that export-best finds all of them")
    runner = Search(study, config, data, progress=Progress(enabled=not args.quiet), store=store)
    say(profile.describe(len(data.train), len(data.val), runner.rungs if args.pruner != "none" else [])
          + f"; space {space}; {device}, {precision_name(fmnist.pick_precision(device, args.precision))}")
    left = max(0, args.trials - runner.done())
    if args.timeout is None and left:
        say(estimate(left, len(data.train) * profile.epochs, rate()))
    reclaimed = reclaim.reclaim_orphans(study, storage)
    if reclaimed:
        say(f"trials {', '.join(map(str, reclaimed))} were left running by a process that is gone: "
              f"marked failed, their configurations queued again")
    if args.warm_start and space == "stages" and enqueue_warm_starts(study):
        say("queued the stages space's warm starts (a ladder of known-good designs)")
    if args.enqueue_seeds:
        queued = enqueue_seeds(study)
        if queued:
            say(f"queued {len(queued)} seed models as candidates (cheapest first, through the same rungs)")
    done = runner.done()
    extra = " (parallel workers finishing together can pass the total)" if done > args.trials else ""
    say(f"study {args.study!r} in {args.storage}: {done} of {args.trials} trials done{extra}")
    # The others start once the study, its budget and its queue exist: they take them as they are.
    others = start_workers(args) if args.workers > 1 else []
    if others:
        watch(others, lambda: reclaim.reclaim_orphans(study, storage))
    try:
        runner.run()
    except KeyboardInterrupt:
        say("\ninterrupted: finished trials are kept; the interrupted one is queued again. "
              "Run the same command to continue.")
        wait_for(others)
        say(format_front(study))
        return 130
    failed = wait_for(others)
    if others and reclaim.reclaim_orphans(study, storage):  # a worker killed after this one's last trial
        runner.run()
    say(format_counts(study))
    say(format_front(study))
    return 2 if failed else 0


WORKER_OF = "FMNIST_SEARCH_WORKER_OF"  # set in the workers --workers starts: the first worker's pid


def start_workers(args: argparse.Namespace) -> list[subprocess.Popen]:
    """Workers 1..N-1 of --workers N: the same command, each with its own --worker-id, quiet, and
    its share of the CPU threads (this process is worker 0)."""
    threads = max(1, (args.threads or torch.get_num_threads()) // args.workers)
    torch.set_num_threads(threads)
    base = list(args.argv)
    gpus = torch.cuda.device_count() if args.device.startswith("cuda:") else 0
    for flag in ("--workers", "--worker-id", "--threads") + (("--device",) if gpus else ()):
        while flag in base:
            i = base.index(flag)
            del base[i:i + 2]
        base = [a for a in base if not a.startswith(flag + "=")]
    print(f"starting {args.workers - 1} more worker(s) on the study, {threads} thread(s) each")
    env = {**os.environ, WORKER_OF: str(os.getpid())}
    return [subprocess.Popen([sys.executable, "-m", "search.cli", *base, "--quiet", "--worker-id",
                              str(args.worker_id + k), "--threads", str(threads),
                              *(["--device", f"cuda:{(args.worker_id + k) % gpus}"] if gpus else [])], env=env)
            for k in range(1, args.workers)]


def watch(workers: list[subprocess.Popen], reclaim_dead: Callable[[], list[int]], every: float = 1.0) -> None:
    """A background check of the workers this one started: when one dies (kill -9, out of memory),
    its trial is failed and queued again within a second, not when a worker next finishes a trial."""
    def loop() -> None:
        handled: set[int] = set()
        while True:
            finished = [w for w in workers if w.poll() is not None]
            killed = {w.pid for w in finished if w.returncode < 0} - handled
            if killed:
                try:
                    reclaim_dead()
                except Exception:  # the storage away a moment: the next trial end reclaims it
                    pass
                handled |= killed
            if len(finished) == len(workers):
                return
            time.sleep(every)

    threading.Thread(target=loop, name="fmnist-worker-watch", daemon=True).start()


def wait_for(workers: list[subprocess.Popen]) -> list[int]:
    """Wait for the other workers; the exit codes of those that failed (one killed by a signal is
    said, not counted: its trial was queued again and the study goes on without it)."""
    codes = []
    for w in workers:
        while True:
            try:
                code = w.wait()
                break
            except KeyboardInterrupt:  # Ctrl-C reaches them too: let them finish their own way
                continue
        if code < 0:
            print(f"worker {w.pid} was killed (signal {-code}); its trial was queued again")
        elif code not in (0, 130):
            codes.append(code)
    return codes


def show(args: argparse.Namespace) -> int:
    study = existing_study(args)
    print(format_counts(study))
    print(format_front(study))
    return 0


def dashboard(args: argparse.Namespace) -> int:
    """optuna-dashboard on the study's storage with its weights folder, on 127.0.0.1 by default."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    import optuna_dashboard

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args) -> None:  # one line per request would bury the URL
            pass

    study = existing_study(args)
    folder = artifacts.artifact_dir(args.storage, args.artifact_dir)
    app = optuna_dashboard.wsgi(storages.open_storage(args.storage), artifact_store=artifacts.open_store(folder))
    try:
        server = make_server(args.host, args.port, app, handler_class=Quiet)
    except OSError as e:
        raise UsageError(f"--host {args.host} --port {args.port}: cannot listen ({e.strerror or e})") from None
    print(f"optuna-dashboard for study {study.study_name!r} ({args.storage}, weights in {folder}): "
          f"http://{args.host}:{server.server_port}/dashboard  (Ctrl-C to stop)", flush=True)
    with server:
        server.serve_forever()
    return 0


def export_best(args: argparse.Namespace) -> int:
    from .export import ExportOptions, check_target, export, select
    out = args.out or Path("exports") / options.folder_safe(args.study)
    folder = artifacts.artifact_dir(args.storage, args.artifact_dir)
    keep = [folder, *storages.sqlite_files(args.storage)]
    check_target(out, keep)  # refuse a bad --out before opening anything
    study = existing_study(args)
    chosen = select(study, args.trial, args.max_params, args.top, args.by)
    store = artifacts.open_store(folder)
    device = fmnist.pick_device(args.device)
    ds = load_dataset(args)
    print(f"exporting {len(chosen)} model(s) of study {args.study!r} to {out}")
    export(study, chosen, out, store, ds, ExportOptions(device, args.precision, args.retrain, args.epochs, args.seed),
           keep=keep)
    print(f"done: {out / 'report.html'} and {out / 'report.md'}")
    return 0


def predict(args: argparse.Namespace) -> int:
    from .predict import load_model, read_inputs
    if not args.images and not args.eval:
        raise UsageError("predict: give image files, or --eval for the test set")
    device = fmnist.pick_device(args.device)
    amp = fmnist.pick_precision(device, args.precision)
    model = load_model(args.model).to(device)
    if args.images:
        names, images = read_inputs(args.images)
        probs = fmnist.predict(model, images.to(device), amp).softmax(1).cpu()
        for name, p in zip(names, probs):
            top = p.topk(min(args.top, len(p)))
            print(f"{name}: " + ", ".join(f"{fmnist.CLASSES[i]} {100 * v:.1f}%"
                                          for v, i in zip(top.values.tolist(), top.indices.tolist())))
    if args.eval:
        test = load_dataset(args).test.to(device)
        logits = fmnist.predict(model, test.images, amp)
        print(f"test accuracy {pct(fmnist.accuracy(logits, test.labels))}, "
              f"top-5 {pct(fmnist.accuracy(logits, test.labels, 5))} on {len(test):,} images")
    return 0
