"""``export-best``: chosen trials -> one folder per model (spec, weights, torch.export, ONNX, TorchScript, metrics)
and a report with pictures. Everything is written into a temporary folder beside the target and
renamed into place at the end, so a failure leaves no partial export behind.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

import fmnist
from fmnist.augment import to_input
from fmnist.errors import UsageError
from fmnist.metrics import classification_report
from space import ModelSpec, build, flops, param_count, zoo

from . import figures, record
from .artifacts import load_weights, read_state_dict
from .document import Document
from .table import pct
from .dashboard import describe_budget, short_name
from .front import dominated_seeds, front
from .options import OBJECTIVES

TOLERANCE = 1e-3  # max |difference| of logits between PyTorch and the exported files


def select(study: optuna.Study, trials: Sequence[int] = (), max_params: int | None = None,
           top: int | None = None, by: str = "acc") -> list[FrozenTrial]:
    """The trials to export: --trial numbers, else the --top K by an objective, else the front."""
    all_trials = study.get_trials(deepcopy=False)
    finished = [t for t in all_trials if t.state == TrialState.COMPLETE and record.is_ours(t)]
    if not finished:
        raise UsageError(f"study {study.study_name!r} has no finished trials of fmnist-search to export")
    if trials:
        chosen = []
        for n in trials:
            if not 0 <= n < len(all_trials):
                raise UsageError(f"--trial {n}: no such trial (the study has trials 0-{len(all_trials) - 1})")
            if all_trials[n].state == TrialState.COMPLETE and not record.is_ours(all_trials[n]):
                raise UsageError(f"--trial {n}: not trained by fmnist-search (no spec recorded)")
            if all_trials[n].state != TrialState.COMPLETE:
                raise UsageError(f"--trial {n}: the trial is {all_trials[n].state.name.lower()}; "
                                  f"only finished trials can be exported")
            chosen.append(all_trials[n])
    elif top is not None:
        if by not in OBJECTIVES:
            raise UsageError(f"--by: unknown objective {by!r} (valid: {', '.join(OBJECTIVES)})")
        key = record.OBJECTIVE_ATTR[by]
        ranked = [t for t in finished if t.user_attrs.get(key) is not None]
        if not ranked:
            raise UsageError(f"--by {by}: no finished trial recorded it")
        sign = -1 if OBJECTIVES[by][0] == "maximize" else 1
        chosen = sorted(ranked, key=lambda t: (sign * t.user_attrs[key], t.number))[:top]
    else:
        chosen = front(study)
    if max_params is not None:
        chosen = [t for t in chosen if t.user_attrs[record.PARAMS] <= max_params]
        if not chosen:
            raise UsageError(f"--max-params {max_params:,}: none of the chosen trials is that small")
    return chosen


def folder_name(t: FrozenTrial) -> str:
    return f"trial-{t.number}" + (f"-{t.user_attrs[record.PRESET]}" if record.is_seed(t) else "")


MARKER = ".fmnist-export"  # written in every export folder: what export-best may replace later


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_target(out: Path, keep: Sequence[Path] = ()) -> None:
    """Refuse an ``--out`` whose replacement could lose anything export-best did not write.

    Allowed: a path that does not exist, an empty folder, or a folder holding an earlier export
    (its marker lists every entry it wrote, and nothing else is there). Never the current folder
    or one above it, and never a folder holding ``keep`` (the study's database, its artifacts).
    """
    target = out.resolve()
    if _is_within(Path.cwd().resolve(), target):
        raise UsageError(f"--out {out}: is the current folder or holds it; export into a new folder")
    for path in keep:
        if _is_within(Path(path).resolve(), target):
            raise UsageError(f"--out {out}: holds {path}, which export-best must not replace; "
                              f"export into a new folder")
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder; export-best writes a folder, "
                          f"choose another path")
    entries = {p.name for p in out.iterdir()}
    if not entries:
        return
    if MARKER not in entries:
        raise UsageError(f"--out {out}: folder is not empty and was not written by export-best "
                          f"(no {MARKER}); choose a new folder, or empty it yourself")
    try:
        written = set(json.loads((out / MARKER).read_text())["entries"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f"--out {out}: its {MARKER} is unreadable, so export-best cannot tell what it "
                          f"wrote there; choose a new folder") from None
    foreign = sorted(entries - written - {MARKER})
    if foreign:
        raise UsageError(f"--out {out}: holds {foreign[0]!r}, which export-best did not write; move it "
                          f"out or choose a new folder")


def _readable_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


def write_atomically(out: Path, fill: Callable[[Path], None], keep: Sequence[Path] = ()) -> None:
    """Fill a fresh temporary folder beside ``out``, then swap it in; on any failure remove it.

    Only what ``check_target`` allows is ever replaced (the caller checks before any work; this
    checks again just before the swap), and the replaced export is removed only after the new one
    is in place.
    """
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        tmp.chmod(_readable_mode())  # mkdtemp makes it private; an export is for others to read
    except OSError as e:
        raise UsageError(f"--out {out}: cannot write there ({e.strerror or e})") from None
    try:
        fill(tmp)
        entries = sorted(p.name for p in tmp.iterdir())
        (tmp / MARKER).write_text(json.dumps({"written_by": "fmnist-search export-best", "entries": entries}))
        check_target(out, keep)  # nothing may have appeared there while the export was written
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            out.rename(old / out.name)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UsageError(f"--out {out}: cannot write there ({e.strerror or e}); nothing was replaced") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _max_diff(a: torch.Tensor | np.ndarray, b: torch.Tensor) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float32) - b.detach().float().numpy()).max())


def write_model_files(folder: Path, spec: ModelSpec, model: torch.nn.Module, example: torch.Tensor) -> dict:
    """spec.json, weights.pt, model.pt2 (a torch.export program), model.onnx (from that program,
    through the dynamo exporter) and model.ts (TorchScript, deprecated upstream, kept while torch
    loads it), each loaded back and checked against ``model``."""
    import onnxruntime

    folder.mkdir()
    # Trained channels-last; exported in the default layout, which torch.export's archive stores whole.
    model = model.cpu().eval().to(memory_format=torch.contiguous_format)
    (folder / "spec.json").write_text(spec.to_json())
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, folder / "weights.pt")
    back = read_state_dict(folder / "weights.pt")
    if back.keys() != state.keys() or not all(torch.equal(back[k], state[k]) for k in state):
        raise RuntimeError(f"{folder / 'weights.pt'} does not read back as written")
    with torch.no_grad():
        expected = model(example)
        program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
        torch.export.save(program, folder / "model.pt2")
        diffs = {"pt2_max_abs_diff": _max_diff(torch.export.load(folder / "model.pt2").module()(example), expected)}
        with warnings.catch_warnings():  # the exporter reports its passes as warnings
            warnings.simplefilter("ignore")
            torch.onnx.export(program, (example,), str(folder / "model.onnx"), input_names=["image"],
                              output_names=["logits"], dynamo=True, verbose=False, external_data=False)
            torch.jit.trace(model, example).save(str(folder / "model.ts"))
            diffs["torchscript_max_abs_diff"] = _max_diff(torch.jit.load(str(folder / "model.ts"))(example), expected)
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    diffs["onnx_max_abs_diff"] = _max_diff(session.run(None, {"image": example.numpy()})[0], expected)
    for name, diff in diffs.items():
        if not diff <= TOLERANCE:
            raise RuntimeError(f"{folder}: {name} {diff:.2e} between PyTorch and the exported file (> {TOLERANCE})")
    return diffs


def retrain(spec: ModelSpec, ds: fmnist.FashionMNIST, device: torch.device, epochs: int | None, seed: int,
            precision: str, log: Callable[[str], None] = print) -> tuple[torch.nn.Module, ModelSpec]:
    """The architecture trained again on all 60k training images with its tuned settings; one
    line per epoch, since this can take long."""
    if epochs:
        spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, epochs=epochs))
    data = fmnist.make_splits(ds, val_size=0, seed=seed).to(device)
    model = build(spec.arch, seed=seed)
    started = time.monotonic()

    def progress(r: fmnist.Report) -> None:
        left = (spec.train.epochs - r.epoch) * (time.monotonic() - started) / max(r.epoch, 1e-9)
        log(f"  epoch {r.epoch:g} of {spec.train.epochs}: train loss {r.train_loss:.4f}, about {left / 60:.0f} min left")

    fmnist.train(model, data, spec.train, seed=seed, precision=precision, evaluate_test=False, on_report=progress)
    return model, spec


@dataclasses.dataclass
class ExportOptions:
    device: torch.device
    precision: str = "auto"
    retrain: bool = False
    epochs: int | None = None
    seed: int = 0


def export(study: optuna.Study, chosen: list[FrozenTrial], out: Path, store, ds: fmnist.FashionMNIST,
           options: ExportOptions, log: Callable[[str], None] = print, keep: Sequence[Path] = ()) -> list[dict]:
    """Export ``chosen`` into ``out`` (an earlier export there is replaced atomically; anything else
    is refused, see ``check_target``); returns each model's metrics. ``keep``: paths never replaced.
    """
    check_target(out, keep)  # before any training or loading: refuse at once
    test = ds.test.to(options.device)
    example = to_input(ds.test.images[:8])
    amp = fmnist.pick_precision(options.device, options.precision)
    # Load every input first: a missing or corrupt weights file stops before anything is written.
    weights = {} if options.retrain else {t.number: load_weights(t, store) for t in chosen}
    results: list[dict] = []

    def fill(tmp: Path) -> None:
        for t in chosen:
            spec = ModelSpec.from_json(record.spec_text(t))
            before = t.user_attrs.get(record.TEST_ACC)
            if options.retrain:
                log(f"trial {t.number}: retraining on all {len(ds.train):,} training images ...")
                model, spec = retrain(spec, ds, options.device, options.epochs, options.seed, options.precision, log)
            else:
                model = build(spec.arch)
                model.load_state_dict(weights[t.number])
            model.to(options.device)
            report = classification_report(fmnist.predict(model, test.images, amp), test.labels)
            folder = tmp / folder_name(t)
            checks = write_model_files(folder, spec, model, example)
            metrics = {
                "trial": t.number, "preset": t.user_attrs.get(record.PRESET), "params": param_count(spec.arch),
                "flops": flops(spec.arch), "val_acc": t.user_attrs.get(record.VAL_ACC),
                "test_acc": report["accuracy"], "test_top5": report["top5"],
                "retrained": {"epochs": spec.train.epochs, "test_acc_before": before,
                              "test_acc_after": report["accuracy"]} if options.retrain else None,
                "per_class": report["per_class"], "confusion_matrix": report["confusion_matrix"],
                "curve": t.user_attrs.get(record.CURVE, []),
                "seeds_dominated": dominated_seeds(param_count(spec.arch), report["accuracy"]), **checks,
            }
            (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
            figures.confusion_plot(folder / "confusion.png", report["confusion_matrix"],
                                   f"{folder.name}: test confusion matrix")
            results.append(metrics)
            log(f"{folder.name}: {metrics['params']:,} params, test {pct(report['accuracy'])}"
                + (f" (before retraining {pct(before)})" if options.retrain and before is not None else "")
                + f"; its .pt2, ONNX and TorchScript files match PyTorch within {max(checks.values()):.1e}")
        write_report(tmp, study, chosen, results)

    write_atomically(out, fill, keep)
    return results



def write_report(folder: Path, study: optuna.Study, chosen: list[FrozenTrial], results: list[dict]) -> None:
    finished = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.user_attrs.get(record.TEST_ACC) is not None and record.is_ours(t)]
    front_numbers = {t.number for t in study.best_trials}
    figures.front_plot(
        folder / "front.png",
        trials=[(t.user_attrs[record.PARAMS], t.user_attrs[record.TEST_ACC]) for t in finished],
        front=[(t.user_attrs[record.PARAMS], t.user_attrs[record.TEST_ACC]) for t in finished if t.number in front_numbers],
        exported=[(m["params"], m["test_acc"], folder_name(t)) for t, m in zip(chosen, results)],
        seeds=[(p.reported_params or p.params, p.reported_acc / 100, short_name(p.name), p.reported_split.startswith("validation"))
               for p in zoo.PRESETS if p.reported_acc is not None])
    figures.curves_plot(folder / "curves.png", {folder_name(t): m["curve"] for t, m in zip(chosen, results)})
    doc = Document(f"fmnist-search export: study '{study.study_name}'")
    doc.paragraph(f"Exported {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {len(finished)} finished trials; "
                  f"objectives {', '.join(study.metric_names or [])}. Models were chosen on validation "
                  f"accuracy; the test accuracy below is only reported.")
    doc.image("front.png", "test accuracy against parameters: trials, front, exported models, seed models")
    doc.paragraph(f"Budget: {describe_budget(study.user_attrs.get(record.BUDGET))}. Trials stopped at a lower "
                  f"rung (pruned) are not shown; a seed model trained here appears as a trial, its star is the "
                  f"figure its project reports.")
    doc.heading("Seed models")
    doc.table(["label", "preset", "seed's model", "params", "reported accuracy", "measured on", "dominated by"],
              [[short_name(p.name), p.name, p.seed_model, f"{p.reported_params or p.params:,}",
                f"{p.reported_acc:.2f}%", p.reported_split,
                ", ".join(folder_name(t) for t, m in zip(chosen, results) if p.name in m["seeds_dominated"]) or "-"]
               for p in zoo.PRESETS if p.reported_acc is not None])
    doc.paragraph("A filled star is a test accuracy, a hollow one a validation accuracy (not comparable "
                  "with test accuracy in the strict sense; the seeds give no test figure for these).")
    doc.image("curves.png", "learning curves of the exported models on one validation-accuracy axis")
    doc.heading("Exported models")
    doc.table(["model", "params", "MFLOPs", "val acc", "test acc", "top-5", "seed models dominated"],
              [[folder_name(t), f"{m['params']:,}", f"{m['flops'] / 1e6:.2f}", pct(m["val_acc"]),
                pct(m["test_acc"]), pct(m["test_top5"]), ", ".join(m["seeds_dominated"]) or "none"]
               for t, m in zip(chosen, results)])
    doc.paragraph("A model dominates a seed model when it has no more parameters than the seed reports "
                  "and a higher test accuracy than the seed's reported accuracy.")
    for t, m in zip(chosen, results):
        name = folder_name(t)
        doc.heading(name)
        line = f"{m['params']:,} parameters; validation {pct(m['val_acc'])}, test {pct(m['test_acc'])}"
        if m["retrained"]:
            line += (f"; retrained on all training images for {m['retrained']['epochs']} epochs "
                     f"(test before {pct(m['retrained']['test_acc_before'])})")
        doc.paragraph(line + ".")
        doc.table(["class", "precision", "recall"],
                  [[c, pct(v["precision"]), pct(v["recall"])] for c, v in m["per_class"].items()])
        doc.image(f"{name}/confusion.png", f"{name} confusion matrix")
    (folder / "report.md").write_text(doc.markdown())
    (folder / "report.html").write_text(doc.html())
