"""The Pareto front of a study as the CLI shows it, and which seed models each member dominates.

The seeds report test accuracy (a few report validation accuracy), so front members, chosen on
validation accuracy, are compared to the seeds' reported figures on test accuracy: a member
dominates a seed when it has no more parameters and a higher accuracy. A member that predicts with
flip test-time augmentation says so (TTA column): its figures, and its FLOPs, count both passes.

The front compares trials at equal training (``front``), and a final training spread over it
leaves out the members whose lead is within the validation noise (``ties``).
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from space import zoo

from search.pareto import dominates
from search.study import record
from search.view.table import format_table, pct


def seed_label(preset: str) -> str:
    """A seed model's label on a crowded plot: seed000-cnn2pooling2fully1-c -> 0:2p2f-c."""
    seed, _, model = preset.removeprefix("seed").partition("-")
    for long, short in (("cnn1pooling1fully1", "1p1f"), ("cnn2pooling2fully1", "2p2f"), ("conv2dsimple", "simple")):
        model = model.replace(long, short)
    return f"{int(seed)}" + (f":{model}" if model else "")


def seed_points() -> list[tuple[str, int, float]]:
    """(preset, parameters, reported accuracy) of every seed model with a reported accuracy."""
    return [(p.name, p.reported_params or p.params, p.reported_acc / 100)
            for p in zoo.PRESETS if p.reported_acc is not None]


def verdict(acc: float, std: float | None, seed_acc: float) -> str | None:
    """"dominates" (at no more parameters) when more accurate by more than the seed-to-seed spread
    measured for the model, "ties" when the two are within it, None when the seed is ahead. With
    one run (no spread measured) any margin counts, and the figure says it is one run."""
    margin = acc - seed_acc
    if std is not None and abs(margin) <= std:
        return "ties"
    return "dominates" if margin > 0 else None


def seed_verdicts(params: int, acc: float | None, std: float | None = None) -> dict[str, list[str]]:
    """The seed models a model of ``params`` at ``acc`` (± ``std``) dominates and ties with."""
    out: dict[str, list[str]] = {"seeds_dominated": [], "seeds_tied": []}
    for name, sp, sa in seed_points():
        v = verdict(acc, std, sa) if acc is not None and params <= sp else None
        if v:
            out["seeds_dominated" if v == "dominates" else "seeds_tied"].append(name)
    return out


def dominated_seeds(params: int, test_acc: float | None, std: float | None = None) -> list[str]:
    return seed_verdicts(params, test_acc, std)["seeds_dominated"]


def accuracy_of(t: FrozenTrial, finals: dict[int, dict]) -> tuple[float | None, float | None]:
    """A trial's test accuracy as the best known figure: the final training's mean and spread over
    seeds where it was retrained (``finals``: ``record.finals``), else the search's single run."""
    final = finals.get(t.number)
    if final and final.get("mean") is not None:
        return final["mean"], final.get("std")
    return t.user_attrs.get(record.TEST_ACC), None


def final_figure(final: dict | None) -> str:
    """The final training as people read it: 94.31% ± 0.08 (3 seeds, 40 epochs), and the TTA when
    the export chose another than the search's: (3 seeds, 40 epochs, TTA flip-shift)."""
    if not isinstance(final, dict) or final.get("mean") is None:
        return "-"
    n = len(final.get("test_acc", []))
    spread = f" ± {100 * final['std']:.2f}" if final.get("std") is not None else ""
    tta = f", TTA {final['tta']}" if final.get("tta") not in (None, final.get("searched_tta")) else ""
    return f"{pct(final['mean'])}{spread} ({n} seed{'s' if n != 1 else ''}, {final.get('epochs', '?')} epochs{tta})"


def trained_no_longer(a: FrozenTrial, b: FrozenTrial) -> bool:
    """Whether ``a`` trained no more epochs than ``b`` (a trial from before epochs were recorded: yes)."""
    ea, eb = a.user_attrs.get(record.EPOCHS_RUN), b.user_attrs.get(record.EPOCHS_RUN)
    return ea is None or eb is None or ea <= eb


def minimized(t: FrozenTrial, directions) -> tuple[float, ...]:
    return tuple(-v if d == optuna.study.StudyDirection.MAXIMIZE else v for v, d in zip(t.values, directions))


def front(study: optuna.Study) -> list[FrozenTrial]:
    """Pareto-optimal finished trials (on the study's own objectives) that this tool trained, smallest
    first, compared at equal training: a trial drops another from the front only when it trained no
    more epochs than the other. A timed CPU search trains cheap nets longer than the top rung
    (``search.loop.plan``), and their extra epochs are not a better design: on the fp32 hour two
    such nets (14 and 12 epochs) pushed a residual net of 8 epochs off the front, though both were
    behind it when trained its 8 epochs (docs/benchmarks.md). Every trial on Optuna's front is on
    this one."""
    ours = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if record.is_ours(t) and t.values]
    dirs = study.directions
    points = {t.number: minimized(t, dirs) for t in ours}
    # A dominator sorts before what it dominates, so checking against the members found so far is
    # enough (dominance at equal training is transitive).
    members: list[FrozenTrial] = []
    for t in sorted(ours, key=lambda t: (points[t.number], t.user_attrs.get(record.EPOCHS_RUN) or 0, t.number)):
        if not any(trained_no_longer(m, t) and dominates(points[m.number], points[t.number]) for m in members):
            members.append(t)
    return sorted(members, key=lambda t: (t.user_attrs[record.PARAMS], t.number))


def lead_noise(p: float, q: float, n: int) -> float:
    """One standard error of the difference of two accuracies measured on ``n`` images, taken as
    independent: an upper bound, since both are measured on the same validation images."""
    return math.sqrt((p * (1 - p) + q * (1 - q)) / n)


@dataclass(frozen=True)
class Tie:
    """A front member whose validation lead over a smaller one is within the noise."""
    number: int
    of: int        # the smaller member (no larger in every cost, trained no longer)
    lead: float    # validation accuracy over it
    noise: float   # one standard error of that lead


def ties(study: optuna.Study, members: list[FrozenTrial]) -> list[Tie]:
    """The members (``front``'s, smallest first) whose validation lead over a smaller kept member
    that trained no longer is at most one standard error: a final training that spreads its
    minutes over the front spends them on a difference the validation split cannot show (the
    fp32 hour's 3.7M-parameter seed led a 175,530-parameter net by 0.27 points, with 0.36 of
    noise, and took a third of the final training). Empty when the study does not maximize
    accuracy or has no recorded budget."""
    names = list(study.metric_names or [])
    budget = record.Budget.from_dict(study.user_attrs.get(record.BUDGET))
    if "acc" not in names or budget is None or not budget.val_images:
        return []
    acc = names.index("acc")
    costs = [i for i in range(len(names)) if i != acc]
    kept: list[FrozenTrial] = []
    found: list[Tie] = []
    for b in members:
        for a in kept:
            if trained_no_longer(a, b) and all(a.values[i] <= b.values[i] for i in costs):
                lead = b.values[acc] - a.values[acc]
                noise = lead_noise(a.values[acc], b.values[acc], budget.val_images)
                if lead <= noise:
                    found.append(Tie(b.number, a.number, lead, noise))
                    break
        else:
            kept.append(b)
    return found


def describe_ties(found: list[Tie]) -> str:
    """What ``export-best --retrain`` leaves out, in a line."""
    each = "; ".join(f"trial {t.number} (+{100 * t.lead:.2f} points over trial {t.of}, noise {100 * t.noise:.2f})"
                     for t in found)
    return (f"export-best --retrain leaves out {len(found)} front member(s) whose validation lead over a smaller one "
            f"trained no longer is within one standard error: {each}; --whole-front trains them too")



def format_front(study: optuna.Study) -> str:
    members = front(study)
    if not members:
        foreign = [t for t in study.best_trials if not record.is_ours(t)]
        if foreign:
            return (f"the front holds {len(foreign)} trial(s) not trained by fmnist-search (no spec or "
                    f"parameter count recorded): nothing to show")
        return "no finished trials yet: the front is empty"
    finals = record.finals(study)
    table = format_table(*front_rows(members, finals))
    found = ties(study, members)
    return "\n".join([table, seeds_summary(members, finals), *seeds_trained_here(study),
                      *([describe_ties(found)] if found else [])])


def tta(t: FrozenTrial) -> str:
    """The trial's test-time augmentation as its spec states it ("none" for a spec without one)."""
    text = record.spec_text(t)
    return json.loads(text).get("arch", {}).get("tta", "none") if text else "none"


def tta_cell(tta: str) -> str:
    """A table's TTA cell: the augmentation's name, or "-" for none."""
    return "-" if tta == "none" else tta


FRONT_COLUMNS = ["trial", "preset", "params", "MFLOPs", "TTA", "val acc", "test acc", "epochs",
                 "final test (spread over seeds)", "seeds dominated"]


def front_rows(members: list[FrozenTrial], finals: dict[int, dict]) -> tuple[list[str], list[list[str]]]:
    """The front as one table (header, rows), whichever page shows it: the terminal, the study's
    note, the export report."""
    rows = []
    for t in members:
        a = t.user_attrs
        verdicts = seed_verdicts(a[record.PARAMS], *accuracy_of(t, finals))
        rows.append([str(t.number), a.get(record.PRESET, ""), f"{a[record.PARAMS]:,}", f"{a[record.FLOPS] / 1e6:.2f}",
                     tta_cell(tta(t)), pct(a.get(record.VAL_ACC)), pct(a.get(record.TEST_ACC)), f"{a.get(record.EPOCHS_RUN, 0):g}",
                     final_figure(finals.get(t.number)), str(len(verdicts["seeds_dominated"]))
                     + (f" (+{len(verdicts['seeds_tied'])} tied)" if verdicts["seeds_tied"] else "")])
    return FRONT_COLUMNS, rows


def seeds_summary(members: list[FrozenTrial], finals: dict[int, dict]) -> str:
    """Which seed models the front dominates, ties with (within a model's spread) or misses."""
    beaten, tied = set(), set()
    for t in members:
        verdicts = seed_verdicts(t.user_attrs[record.PARAMS], *accuracy_of(t, finals))
        beaten.update(verdicts["seeds_dominated"])
        tied.update(verdicts["seeds_tied"])
    tied -= beaten
    refs = seed_points()
    missed = [name for name, _, _ in refs if name not in beaten and name not in tied]
    text = (f"the front dominates {len(beaten)} of {len(refs)} seed models (no more parameters, higher test "
            f"accuracy than the seed reports, by more than the model's spread over seeds where measured)")
    if tied:
        text += f"; ties with (within the spread): {', '.join(sorted(tied))}"
    if missed:
        text += "; not dominated: " + ", ".join(missed)
    return text


def seeds_trained_here(study: optuna.Study) -> list[str]:
    """Our own figure beside the reported one, for each seed model trained to the top rung here."""
    lines = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        name = t.user_attrs.get(record.PRESET)
        if name in zoo.names() and t.user_attrs.get(record.TEST_ACC) is not None:
            p = zoo.preset(name)
            said = "no figure" if p.reported_acc is None else f"{p.reported_acc:.2f}% ({p.reported_split})"
            lines.append(f"{name} trained here to the top rung (trial {t.number}): test "
                         f"{pct(t.user_attrs[record.TEST_ACC])}; the seed reports {said}")
    return lines


def counts(trials) -> str:
    """How many trials of each kind: "3 complete, 1 pruned, 0 skipped, ..." (the terminal and the note)."""
    kinds = Counter(record.kind(t) for t in trials)
    return ", ".join(f"{kinds[k]} {k}" for k in record.KINDS)


def format_counts(study: optuna.Study) -> str:
    return (f"study {study.study_name!r}: {counts(study.get_trials(deepcopy=False))}; "
            f"objectives {','.join(study.metric_names or [])}")
