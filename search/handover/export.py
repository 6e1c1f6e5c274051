"""``export-best``: chosen trials -> one folder per model (spec, weights, torch.export, ONNX, TorchScript, metrics)
and a report with pictures. Everything is written into a temporary folder beside the target and
renamed into place at the end, so a failure leaves no partial export behind.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
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
from space.network import with_tta, without_tta
from space.spec import tta_choices

from search.handover import final, runs, tta
from search.handover.target import check_target, write_atomically
from search.study import record
from search.study.artifacts import load_weights, read_state_dict
from search.view import figures, hypervolume
from search.view.document import Document
from search.view.front import final_figure, front, seed_label, seed_verdicts, tta_cell
from search.view.table import pct

TOLERANCE = 1e-3  # max |difference| of logits between PyTorch and the exported files

# onnxruntime's telemetry writes a device id and an event database under ~/.cache when it is
# loaded; off for this process, before the first import of it (by us or by torch.onnx).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


def folder_name(t: FrozenTrial) -> str:
    preset = t.user_attrs.get(record.PRESET)
    return f"trial-{t.number}" + (f"-{preset}" if preset in zoo.names() else "")  # a known name: a safe one


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
        with warnings.catch_warnings():  # torch 2.11's loader warns about its own read-only archive buffer
            warnings.filterwarnings("ignore", message="The given buffer is not writable", category=UserWarning)
            loaded = torch.export.load(folder / "model.pt2")
        diffs = {"pt2_max_abs_diff": _max_diff(loaded.module()(example), expected)}
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


@dataclasses.dataclass
class ExportOptions:
    device: torch.device
    precision: str = "auto"
    retrain: bool = False
    epochs: int | None = None        # of the final training, for every model
    seed: int = 0
    minutes: float | None = None     # the final training's time budget, spread over the models
    seeds: int = 1                   # runs of each architecture in the final training
    keep_tta: bool = False           # export with the search's TTA rather than choose it again on validation
    split: str = "hypervolume"       # how the minutes are split over the models: "hypervolume" or "equal"
    processes: int = 1               # final-training runs side by side on a CPU (runs.share) ...
    threads: int | None = None       # ... on this many threads each (None: one at a time, on this process's)


def export(study: optuna.Study, chosen: list[FrozenTrial], out: Path, store, ds: fmnist.FashionMNIST,
           options: ExportOptions, log: Callable[[str], None] = print, protected: Sequence[Path] = ()) -> list[dict]:
    """Export ``chosen`` into ``out`` (an earlier export there is replaced atomically; anything else
    is refused, see ``check_target``); returns each model's metrics. ``protected``: paths never replaced.
    With ``options.retrain``, each is first trained again (``search.handover.final``).
    """
    check_target(out, protected)  # before any training or loading: refuse at once
    test = ds.test.to(options.device)
    example = to_input(ds.test.images[:8])
    amp = fmnist.pick_precision(options.device, options.precision)
    specs = {t.number: ModelSpec.from_json(record.spec_text(t)) for t in chosen}
    # Load every input first: a missing or corrupt weights file stops before anything is written.
    weights = {} if options.retrain else {t.number: load_weights(t, store) for t in chosen}
    searched = dict(specs)
    tta_val = {} if options.keep_tta else choose_tta(study, chosen, specs, weights, store, ds, options, amp, log)
    results: list[dict] = []
    if options.retrain:
        data = fmnist.make_splits(ds, val_size=0, seed=options.seed).to(options.device)
        with runs.Workers(options.processes, options.threads, data, test, options.precision) \
                if options.processes > 1 else contextlib.nullcontext() as workers:
            if workers:
                log(f"measuring each model's training speed in {options.processes} processes side by side, "
                    f"{options.threads} thread(s) each, as they will train")
            schedule = final.plan(chosen, specs, data, options.device, options.precision, options.seed,
                                  options.seeds, options.minutes, options.epochs, options.split,
                                  hypervolume.reference(study)[1], workers)
            for line in final.describe(schedule, {n: s.train.epochs for n, s in specs.items()}, options.minutes):
                log(line)
            trained = final.train_all(schedule, specs, {t.number: folder_name(t) for t in chosen}, data, test,
                                      options.precision, final.Clock(schedule), log, workers)

    def fill(tmp: Path) -> None:
        for t in chosen:
            spec = specs[t.number]
            figures_final = None
            if options.retrain:
                model, spec = trained[t.number].model, trained[t.number].spec
                figures_final = {"epochs": spec.train.epochs, "split": schedule.split,
                                 "train_images": schedule.train_images,
                                 "seeds": list(schedule.seeds), "exported_seed": schedule.seeds[0],
                                 "side_by_side": schedule.processes,
                                 "tta": spec.arch.tta, "searched_tta": searched[t.number].arch.tta,
                                 **final.summary(trained[t.number].accs)}
                record.keep_final(study, t.number, figures_final)
            else:
                model = build(searched[t.number].arch)
                model.load_state_dict(weights[t.number])
                model = with_tta(without_tta(model), spec.arch.tta)
            model.to(options.device)
            report = classification_report(fmnist.predict(model, test.images, amp), test.labels)
            folder = tmp / folder_name(t)
            checks = write_model_files(folder, spec, model, example)
            spread = figures_final["std"] if figures_final else None
            metrics = {
                "trial": t.number, "preset": t.user_attrs.get(record.PRESET), "params": param_count(spec.arch),
                "flops": flops(spec.arch), "tta": spec.arch.tta, "val_acc": t.user_attrs.get(record.VAL_ACC),
                "tta_choice": {"searched": searched[t.number].arch.tta, "val_acc": tta_val.get(t.number)},
                "test_acc": report["accuracy"], "test_top5": report["top5"],
                "search": {"val_acc": t.user_attrs.get(record.VAL_ACC), "test_acc": t.user_attrs.get(record.TEST_ACC),
                           "epochs": t.user_attrs.get(record.EPOCHS_RUN)},
                "final": figures_final,
                "retrained": {"epochs": spec.train.epochs, "test_acc_before": t.user_attrs.get(record.TEST_ACC),
                              "test_acc_after": report["accuracy"]} if options.retrain else None,
                "per_class": report["per_class"], "confusion_matrix": report["confusion_matrix"],
                "curve": t.user_attrs.get(record.CURVE, []),
                **seed_verdicts(param_count(spec.arch), figures_final["mean"] if figures_final else report["accuracy"],
                                spread),
                **checks,
            }
            (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
            figures.confusion_plot(folder / "confusion.png", report["confusion_matrix"],
                                   f"{folder.name}: test confusion matrix")
            results.append(metrics)
            before = t.user_attrs.get(record.TEST_ACC)
            log(f"{folder.name}: {metrics['params']:,} params, test {pct(report['accuracy'])}"
                + (f" (search {pct(before)}; final training {final_figure(figures_final)})"
                   if options.retrain else "")
                + f"; its .pt2, ONNX and TorchScript files match PyTorch within {max(checks.values()):.1e}")
        write_report(tmp, study, chosen, results)

    write_atomically(out, fill, protected)
    return results


def choose_tta(study: optuna.Study, chosen: list[FrozenTrial], specs: dict[int, ModelSpec],
               weights: dict[int, dict], store, ds: fmnist.FashionMNIST, options: ExportOptions,
               amp: torch.dtype | None, log: Callable[[str], None]) -> dict[int, dict[str, float]]:
    """Each chosen model's test-time augmentation, chosen again on the search's validation split
    with its search weights (``search.handover.tta``): ``specs`` is updated; returns the validation
    accuracy under each choice, by trial. A model whose choice cannot be made keeps the search's."""
    budget = record.Budget.from_dict(study.user_attrs.get(record.BUDGET))
    if budget is None or budget.split_seed is None or not budget.val_images:
        log("test-time augmentation: as the search chose it (the study records no validation split to choose on)")
        return {}
    val = fmnist.make_splits(ds, budget.val_images, budget.split_seed, budget.train_subset).val.to(options.device)
    found = {}
    for t in chosen:
        spec = specs[t.number]
        if len(tta_choices(spec.train)) < 2:
            continue  # trained without flips: nothing to choose
        try:
            state = weights[t.number] if t.number in weights else load_weights(t, store)
        except UsageError as e:  # the final training needs no search weights: keep the search's choice
            log(f"{folder_name(t)}: test-time augmentation {spec.arch.tta} as searched ({e})")
            continue
        accs = tta.validation_accuracy(spec, state, val, amp)
        found[t.number] = accs
        specs[t.number] = tta.with_choice(spec, tta.choose(accs))
        log(f"{folder_name(t)}: test-time augmentation {specs[t.number].arch.tta}, chosen on validation with its "
            f"search weights ({', '.join(f'{k} {pct(v)}' for k, v in accs.items())}; the search used "
            f"{spec.arch.tta})")
    return found


def write_report(folder: Path, study: optuna.Study, chosen: list[FrozenTrial], results: list[dict]) -> None:
    finished = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.user_attrs.get(record.TEST_ACC) is not None and record.is_ours(t)]
    front_numbers = {t.number for t in front(study)}
    figures.front_plot(
        folder / "front.png",
        trials=[(t.user_attrs[record.PARAMS], t.user_attrs[record.TEST_ACC]) for t in finished],
        front=[(t.user_attrs[record.PARAMS], t.user_attrs[record.TEST_ACC]) for t in finished if t.number in front_numbers],
        exported=[(m["params"], m["test_acc"], folder_name(t)) for t, m in zip(chosen, results)],
        seeds=[(p.reported_params or p.params, p.reported_acc / 100, seed_label(p.name), p.reported_split.startswith("validation"))
               for p in zoo.PRESETS if p.reported_acc is not None])
    figures.curves_plot(folder / "curves.png", {folder_name(t): m["curve"] for t, m in zip(chosen, results)})
    ref = hypervolume.reference(study)
    steps = hypervolume.history(study.get_trials(deepcopy=False), ref)
    figures.hypervolume_plot(folder / "hypervolume.png", [s.images for s in steps], [s.seconds for s in steps],
                             [s.hv for s in steps], [s.test_hv for s in steps], ref)
    doc = Document(f"fmnist-search export: study '{study.study_name}'")
    doc.paragraph(f"Exported {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {len(finished)} finished trials; "
                  f"objectives {', '.join(study.metric_names or [])}. Models were chosen on validation "
                  f"accuracy; the test accuracy below is only reported.")
    doc.image("front.png", "test accuracy against parameters: trials, front, exported models, seed models")
    doc.paragraph(f"Budget: {record.describe_budget(study.user_attrs.get(record.BUDGET))}. Trials stopped at a lower "
                  f"rung (pruned) are not shown; a seed model trained here appears as a trial, its star is the "
                  f"figure its project reports.")
    doc.image("hypervolume.png", "the front's hypervolume against compute, in training images and device-minutes")
    doc.paragraph(hypervolume.describe(steps, ref).capitalize() + "."
                  + (f" The study was stopped by --stop-when-flat: {study.user_attrs[record.STOPPED]}."
                     if study.user_attrs.get(record.STOPPED) else ""))
    doc.heading("Seed models")
    doc.table(["label", "preset", "seed's model", "params", "reported accuracy", "measured on", "dominated by",
               "tied with"],
              [[seed_label(p.name), p.name, p.seed_model, f"{p.reported_params or p.params:,}",
                f"{p.reported_acc:.2f}%", p.reported_split,
                ", ".join(folder_name(t) for t, m in zip(chosen, results) if p.name in m["seeds_dominated"]) or "-",
                ", ".join(folder_name(t) for t, m in zip(chosen, results) if p.name in m["seeds_tied"]) or "-"]
               for p in zoo.PRESETS if p.reported_acc is not None])
    doc.paragraph("A filled star is a test accuracy, a hollow one a validation accuracy (not comparable "
                  "with test accuracy in the strict sense; the seeds give no test figure for these).")
    doc.image("curves.png", "learning curves of the exported models on one validation-accuracy axis")
    doc.heading("Exported models")
    retrained = any(m["final"] for m in results)
    doc.table(["model", "params", "MFLOPs", "TTA", "search: val acc", "search: test acc",
               *(["final: test acc of the exported run", "final: mean ± spread over seeds"] if retrained else []),
               "top-5", "seed models dominated", "tied with"],
              [[folder_name(t), f"{m['params']:,}", f"{m['flops'] / 1e6:.2f}", tta_cell(m["tta"]),
                pct(m["search"]["val_acc"]),
                pct(m["search"]["test_acc"]),
                *([pct(m["test_acc"]), final_figure(m["final"])] if retrained else []),
                pct(m["test_top5"]), ", ".join(m["seeds_dominated"]) or "none", ", ".join(m["seeds_tied"]) or "-"]
               for t, m in zip(chosen, results)])
    if retrained:
        f = next(m["final"] for m in results if m["final"])
        doc.paragraph(f"Final training: each architecture trained again from scratch on all {f['train_images']:,} "
                      f"training images (the validation split included: selection was over), "
                      f"{len(f['seeds'])} run(s) with seeds {', '.join(map(str, f['seeds']))}"
                      + (f", {f['side_by_side']} trained side by side" if f.get("side_by_side", 1) > 1 else "")
                      + f". The exported model "
                      f"is the run of seed {f['exported_seed']}, chosen before training (not by its test accuracy); "
                      f"the spread is the standard deviation of the runs' test accuracy. The search's figures "
                      f"are the search's own training of the same architecture. Epochs: "
                      + ", ".join(f"{folder_name(t)} {m['final']['epochs']}" for t, m in zip(chosen, results)
                                  if m["final"]) + "."
                      + (f" The minutes given were {final.HYPERVOLUME_SPLIT}." if f.get("split") == "hypervolume"
                         else ""))
    doc.paragraph("A model dominates a seed model when it has no more parameters than the seed reports and a "
                  "higher test accuracy (the final mean where retrained) than the seed's reported accuracy, by "
                  "more than the model's spread over seeds; within the spread they tie. With one run no spread "
                  "is measured, and any margin counts.")
    if any(m["tta"] != "none" for m in results):
        doc.paragraph("TTA flip: the model predicts the mean of its logits over each image and its left-right "
                      "mirror (two passes an image, counted in its MFLOPs); flip-shift: over those two and each "
                      "moved one pixel left, right, up and down (ten passes). Every figure of that model after "
                      "the search, and each of its exported files (ONNX, TorchScript, torch.export), includes it.")
    chosen_again = [(t, m) for t, m in zip(chosen, results) if m["tta_choice"]["val_acc"]]
    if chosen_again:
        doc.paragraph("The TTA was chosen again at export, on the search's validation split with each model's "
                      "search weights, among those its training augmentation allows (validation accuracy: "
                      + "; ".join(f"{folder_name(t)} " + ", ".join(f"{k} {pct(v)}" for k, v in
                                                                     m["tta_choice"]["val_acc"].items())
                                  for t, m in chosen_again)
                      + "). The search columns are the search's own figures, with the TTA it used.")
    for t, m in zip(chosen, results):
        name = folder_name(t)
        doc.heading(name)
        line = f"{m['params']:,} parameters; validation {pct(m['val_acc'])}, test {pct(m['test_acc'])}"
        if m["final"]:
            line += (f" (the run of seed {m['final']['exported_seed']}); final training of "
                     f"{m['final']['epochs']} epochs, all seeds {final_figure(m['final'])}, each "
                     f"{', '.join(pct(a) for a in m['final']['test_acc'])}; the search's own run "
                     f"{pct(m['search']['test_acc'])}")
        doc.paragraph(line + ".")
        doc.table(["class", "precision", "recall"],
                  [[c, pct(v["precision"]), pct(v["recall"])] for c, v in m["per_class"].items()])
        doc.image(f"{name}/confusion.png", f"{name} confusion matrix")
    (folder / "report.md").write_text(doc.markdown())
    (folder / "report.html").write_text(doc.html())
