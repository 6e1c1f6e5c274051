"""What a study shows a person in optuna-dashboard: notes and plots, written as the study runs.

optuna-dashboard shows a study's note and its plotly figures on the study page, and a trial's
note on the trial's page; both live in the study's system attributes, so every worker and the
dashboard see them through the storage. The study note and the plots are rewritten after each
trial that finishes (fixed graph ids replace the previous plot); each trial gets a one-line note
when it ends: its figures, or why it was pruned or skipped, and the seed's own figure for a seed.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Mapping, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from space import zoo

from search.study import record
from search.study.record import Outcome
from search.view import hypervolume
from search.view.document import Document
from search.view.front import counts, front, front_rows, seed_label, seeds_summary
from search.view.table import pct

FRONT_GRAPH, CURVES_GRAPH, HV_GRAPH = "front", "front-curves", "hypervolume"  # fixed ids: a new figure replaces the old


def seed_line(name: str) -> str:
    p = zoo.preset(name)
    said = "no accuracy" if p.reported_acc is None else f"{p.reported_acc:.2f}% ({p.reported_split})"
    return f"seed model {p.seed_model} ({name}): its project reports {said} at {p.reported_params or p.params:,} parameters"


def trial_note(attrs: Mapping, outcome: str) -> str:
    """One line (Markdown) on what became of a trial; ``outcome`` is a ``record.kind``."""
    a = attrs
    size = (f"{a[record.PARAMS]:,} parameters, {a[record.FLOPS] / 1e6:.2f} MFLOPs"
            if record.PARAMS in a and record.FLOPS in a else "no spec")
    if outcome == Outcome.SKIPPED:
        line = f"**Skipped**, not trained: {a.get(record.SKIPPED, 'no reason recorded')}. {size}."
    elif outcome == Outcome.PRUNED:
        line = (f"**Pruned** after {a.get(record.IMAGES_SEEN, 0):,} training images: "
                f"{a.get(record.PRUNED_REASON, 'no reason recorded')}. {size}.")
    elif outcome == Outcome.COMPLETE:
        gain = a.get(record.HV_GAIN)
        moved = ("" if gain is None else f" Entered the front, raising its hypervolume by {gain:.4f}." if gain > 0
                 else " Did not enter the front.")
        line = (f"**Complete**: validation {pct(a.get(record.VAL_ACC))}, test {pct(a.get(record.TEST_ACC))} "
                f"(top-5 {pct(a.get(record.TEST_TOP5))}); {size}; {a.get(record.EPOCHS_RUN, 0):g} epochs in "
                f"{a.get(record.TRAIN_SECONDS, 0):.0f} s on {a.get(record.DEVICE, '?')}.{moved}")
    else:
        line = f"**{outcome.capitalize()}**. {size}."
    if record.SUMMARY in a:
        line += f" `{a[record.SUMMARY]}`"
    if a.get(record.PRESET) in zoo.names():
        line += f" This is the {seed_line(a[record.PRESET])}."
    return line


def study_note(study: optuna.Study, trials: Sequence[FrozenTrial], members: Sequence[FrozenTrial] | None = None,
               steps: Sequence[hypervolume.Step] | None = None) -> str:
    """The study's note (Markdown): budget, objectives, counts, the hypervolume and whether it still
    grows (and why the study stopped, if the rule stopped it), the front and the seeds it dominates."""
    doc = Document(f"fmnist-search study '{study.study_name}'")
    meanings = study.user_attrs.get(record.OBJECTIVE_MEANINGS) or {}
    objectives = ", ".join(f"{o}: {meanings.get(o, record.OBJECTIVES.get(o, ('', o))[1])} "
                           f"({record.OBJECTIVES.get(o, ('?',))[0]}d)" for o in study.metric_names or [])
    doc.paragraph(f"{record.describe_budget(study.user_attrs.get(record.BUDGET))}. Objectives: {objectives}.")
    doc.paragraph(f"{counts(trials)}; updated {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC.")
    ref = hypervolume.reference(study)
    steps = hypervolume.history(trials, ref) if steps is None else steps
    doc.paragraph(hypervolume.describe(steps, ref).capitalize() + ".")
    if study.user_attrs.get(record.STOPPED):
        doc.paragraph(f"Stopped by --stop-when-flat: {study.user_attrs[record.STOPPED]}.")
    members = front(study) if members is None else members
    doc.heading("Pareto front", 3)
    if not members:
        doc.paragraph("No finished trial yet.")
        return doc.markdown()
    finals = record.finals(study)
    doc.table(*front_rows(members, finals))
    doc.paragraph(f"Chosen on validation accuracy; test accuracy is only reported. "
                  f"{seeds_summary(members, finals).capitalize()}.")
    return doc.markdown()


def _hover(t: FrozenTrial) -> str:
    a = t.user_attrs
    return (f"trial {t.number}{' (' + a[record.PRESET] + ')' if record.is_seed(t) else ''}<br>"
            f"{a[record.PARAMS]:,} params, {a[record.FLOPS] / 1e6:.2f} MFLOPs<br>"
            f"val {pct(a.get(record.VAL_ACC))}, test {pct(a.get(record.TEST_ACC))}<br>{a.get(record.SUMMARY, '')}")


def front_figure(trials: Sequence[FrozenTrial], front_numbers: set[int], budget: Mapping | None = None):
    """Test accuracy against parameters on a log axis: finished trials, the front (chosen on
    validation), and the seed models' reported figures as labelled stars."""
    import plotly.graph_objects as go

    done = sorted((t for t in trials if t.state == TrialState.COMPLETE and record.is_ours(t)
                   and t.user_attrs.get(record.TEST_ACC) is not None), key=lambda t: t.user_attrs[record.PARAMS])
    members = [t for t in done if t.number in front_numbers]
    fig = go.Figure()
    for name, group, style in (("finished trials", done, dict(mode="markers", marker=dict(color="#bbbbbb", size=7))),
                               ("Pareto front (chosen on validation)", members,
                                dict(mode="lines+markers", marker=dict(color="#1f77b4", size=9)))):
        fig.add_trace(go.Scatter(name=name, x=[t.user_attrs[record.PARAMS] for t in group],
                                 y=[t.user_attrs[record.TEST_ACC] for t in group],
                                 hovertext=[_hover(t) for t in group], hoverinfo="text", **style))
    for split, symbol in (("test", "star"), ("validation", "star-open")):
        chosen = [p for p in zoo.PRESETS if p.reported_acc is not None and p.reported_split.startswith(split)]
        fig.add_trace(go.Scatter(
            name=f"seed models (their {split} figure)", mode="markers+text",
            x=[p.reported_params or p.params for p in chosen], y=[p.reported_acc / 100 for p in chosen],
            text=[seed_label(p.name) for p in chosen], textfont=dict(size=9),
            textposition=[("top center", "bottom center", "middle right", "middle left")[i % 4] for i in range(len(chosen))],
            marker=dict(symbol=symbol, size=12, color="#ff7f0e"),
            hovertext=[f"{p.name}: {p.seed_model}<br>reports {p.reported_acc:.2f}% ({p.reported_split})<br>"
                       f"{p.reported_params or p.params:,} params" for p in chosen], hoverinfo="text"))
    fig.update_layout(title=dict(text="Test accuracy against parameters" + (
        f" ({budget['epochs']} epochs at the top rung)" if budget else "")),
        xaxis=dict(type="log", title=dict(text="parameters (log scale)")),
        yaxis=dict(title=dict(text="test accuracy"), tickformat=".1%"),
        # Inside the plot, lower right where the front is not: the dashboard gives a plot a fixed height.
        legend=dict(x=0.99, y=0.02, xanchor="right", yanchor="bottom", bgcolor="rgba(255,255,255,0.7)",
                    font=dict(size=10)))
    return fig


def curves_figure(members: Sequence[FrozenTrial]):
    """The front's validation curves on one shared accuracy axis (Optuna keeps none for
    multi-objective studies: the dashboard's own intermediate-value plot stays empty)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for t in members:
        curve = [(e, a) for e, a in t.user_attrs.get(record.CURVE, []) if a is not None]
        if curve:
            fig.add_trace(go.Scatter(name=f"trial {t.number} ({t.user_attrs[record.PARAMS]:,} params)",
                                     x=[e for e, _ in curve], y=[a for _, a in curve], mode="lines+markers"))
    fig.update_layout(title=dict(text="Validation accuracy while training: the front's models"),
                      xaxis=dict(title=dict(text="epochs")),
                      yaxis=dict(title=dict(text="validation accuracy"), tickformat=".0%"))
    return fig


def publish_trial(trial: optuna.Trial, attrs: Mapping, outcome: str) -> None:
    """The trial's one-line note from its attributes ``attrs``, written as it ends (a note lives in
    the study's attributes)."""
    from optuna_dashboard import save_note

    save_note(trial, trial_note(attrs, outcome))


def publish_study(study: optuna.Study, trials: Sequence[FrozenTrial] | None = None) -> None:
    """The study's note and its two plots, replacing the previous ones."""
    from optuna_dashboard import save_note, save_plotly_graph_object

    trials = study.get_trials(deepcopy=False) if trials is None else trials
    members = front(study)  # one non-dominated sort serves the note and the plots
    ref = hypervolume.reference(study)
    steps = hypervolume.history(trials, ref)
    save_note(study, study_note(study, trials, members, steps))
    budget = study.user_attrs.get(record.BUDGET)
    save_plotly_graph_object(study, front_figure(trials, {t.number for t in members}, budget),
                             graph_object_id=FRONT_GRAPH)
    save_plotly_graph_object(study, curves_figure(members), graph_object_id=CURVES_GRAPH)
    save_plotly_graph_object(study, hypervolume_figure(steps, ref), graph_object_id=HV_GRAPH)


def hypervolume_figure(steps: Sequence[hypervolume.Step], ref: tuple[float, int]):
    """The front's hypervolume against compute, on validation and (for information) test; a
    button switches the x axis between training images and device-seconds."""
    import plotly.graph_objects as go

    x_images, x_seconds = [s.images for s in steps], [round(s.seconds, 1) for s in steps]
    hover = [f"after trial {s.number}<br>{s.images:,} training images, {s.seconds / 60:.1f} device-minutes<br>"
             f"validation {s.hv:.4f}, test {s.test_hv:.4f}" for s in steps]
    fig = go.Figure()
    for name, values, line in (("validation (what the search selects on)", [s.hv for s in steps],
                                dict(shape="hv", color="#1f77b4")),
                               ("test (for information)", [s.test_hv for s in steps],
                                dict(shape="hv", dash="dot", color="#ff7f0e"))):
        fig.add_trace(go.Scatter(name=name, x=x_images, y=values, mode="lines", line=line,
                                 hovertext=hover, hoverinfo="text"))
    axes = {"images": dict(title=dict(text="compute: training images, all trials")),
            "seconds": dict(title=dict(text="compute: device-seconds, all workers"))}
    fig.update_layout(
        title=dict(text=f"Hypervolume of the front against compute (error x log10 params; reference "
                        f"{100 * ref[0]:g}% error, {ref[1]:,} params)"),
        xaxis=axes["images"], yaxis=dict(title=dict(text="hypervolume")),
        legend=dict(x=0.99, y=0.02, xanchor="right", yanchor="bottom", bgcolor="rgba(255,255,255,0.7)",
                    font=dict(size=10)),
        updatemenus=[dict(type="buttons", direction="right", x=0.0, y=1.15, xanchor="left", showactive=True,
                          buttons=[dict(label=label, method="update",
                                        args=[{"x": [x, x]}, {"xaxis": axes[key]}])
                                   for label, key, x in (("training images", "images", x_images),
                                                         ("device-seconds", "seconds", x_seconds))])])
    return fig
