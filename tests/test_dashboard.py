"""What a study shows in optuna-dashboard: the note and figure builders, then the real dashboard in
Chromium serving a small study."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState
from wsgi_server import serving

from search.cli import main
from search.study import record
from search.view import dashboard
from search.view.front import seed_label


def _trial(state, number_params, val=None, test=None, **attrs):
    values = [val, float(number_params)] if state == TrialState.COMPLETE else None
    user = {record.PARAMS: number_params, record.FLOPS: 10 * number_params, record.SUMMARY: "3x3x8+max>gap>10",
            **({record.VAL_ACC: val, record.TEST_ACC: test, record.CURVE: [[0.5, val - 0.1], [1.0, val]]}
               if val is not None else {}), **attrs}
    return optuna.create_trial(state=state, params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
                               user_attrs=user, system_attrs={record.SPEC: "{}"}, values=values)


@pytest.fixture
def study():
    s = optuna.create_study(study_name="d", directions=["maximize", "minimize"])
    s.set_metric_names(["acc", "params"])
    s.set_user_attr(record.BUDGET, {"epochs": 3, "train_images": 50_000, "val_images": 10_000, "split_seed": 0,
                                    "space": "stages"})
    s.add_trial(_trial(TrialState.COMPLETE, 20_000, 0.915, 0.912))
    s.add_trial(_trial(TrialState.COMPLETE, 400_000, 0.93, 0.929, preset="seed001-conv2dsimple"))
    s.add_trial(_trial(TrialState.COMPLETE, 500_000, 0.90, 0.90))  # dominated
    s.add_trial(_trial(TrialState.PRUNED, 3_000, images_seen=4096, pruned_reason="at rung 4,000 images: rank 2"))
    s.add_trial(_trial(TrialState.PRUNED, 9_000_000, skipped="over --max-params"))
    return s


def test_trial_notes_say_what_became_of_each_trial(study):
    done, seed, _, pruned, skipped = study.trials
    note = dashboard.trial_note(done.user_attrs, "complete")
    assert note.startswith("**Complete**: validation 91.50%, test 91.20%") and "20,000 parameters" in note
    assert "`3x3x8+max>gap>10`" in note and "\n" not in note
    assert "its project reports 92.80% (test (10k)) at 400,000 parameters" in dashboard.trial_note(seed.user_attrs, "complete")
    assert dashboard.trial_note(pruned.user_attrs, "pruned").startswith(
        "**Pruned** after 4,096 training images: at rung 4,000 images: rank 2.")
    assert dashboard.trial_note(skipped.user_attrs, "skipped").startswith("**Skipped**, not trained: over --max-params.")


def test_the_study_note_holds_budget_front_and_seeds(study):
    note = dashboard.study_note(study, study.trials)
    assert "trained on 50,000 images for 3 epochs" in note and "acc: validation accuracy (maximized)" in note
    assert "3 complete, 1 pruned, 1 skipped, 0 failed" in note
    front_rows = [line for line in note.splitlines() if line.startswith("| 0 ") or line.startswith("| 1 ")
                  or line.startswith("| 2 ")]
    assert [r.split(" | ")[0] for r in front_rows] == ["| 0", "| 1"]  # trial 2 is dominated: not listed
    # 91.2% test at 20,000 params beats every seed model with at least 20,000 params and less accuracy
    assert "dominates" in note and "seed000-cnn2pooling2fully1-d" not in note.split("not dominated:")[-1]


def test_the_front_figure_has_a_log_params_axis_labelled_seeds_and_test_accuracy_in_the_hover(study):
    fig = dashboard.front_figure(study.trials, {0, 1}, study.user_attrs[record.BUDGET])
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis.title.text == "parameters (log scale)"
    assert fig.layout.yaxis.title.text == "test accuracy"
    traces = {t.name: t for t in fig.data}
    front = traces["Pareto front (chosen on validation)"]
    assert list(front.x) == [20_000, 400_000] and "test 91.20%" in front.hovertext[0]
    test_seeds, val_seeds = traces["seed models (their test figure)"], traces["seed models (their validation figure)"]
    assert len(test_seeds.x) + len(val_seeds.x) == 17
    assert "4:lenet5" in val_seeds.text and "3" in test_seeds.text and val_seeds.marker.symbol == "star-open"


def test_the_curves_figure_puts_the_front_on_one_axis(study):
    fig = dashboard.curves_figure(study.best_trials)
    assert [t.name for t in fig.data] == ["trial 0 (20,000 params)", "trial 1 (400,000 params)"]
    assert fig.layout.yaxis.title.text == "validation accuracy" and list(fig.data[0].y) == pytest.approx([0.815, 0.915])


def test_short_seed_labels_are_unique():
    from space import zoo
    labels = [seed_label(n) for n in zoo.names()]
    assert len(set(labels)) == len(labels) == 17 and max(map(len, labels)) <= 12


@pytest.fixture(scope="module")
def served_study(synth_dir, tmp_path_factory):
    db = tmp_path_factory.mktemp("dash") / "d.db"
    assert main(["--data-dir", str(synth_dir), "--storage", f"sqlite:///{db}", "--study", "d", "--quiet",
                 "--val-size", "100", "--epochs", "2", "--max-flops", "3000000", "--trials", "4",
                 "--seed", "4"]) == 0
    return db


def test_the_search_leaves_notes_and_plots_for_the_dashboard(served_study):
    from optuna_dashboard._custom_plot_data import list_graph_object_ids
    from optuna_dashboard._note import get_note_from_system_attrs
    storage = optuna.storages.RDBStorage(f"sqlite:///{served_study}")
    study = optuna.load_study(study_name="d", storage=storage)
    attrs = storage.get_study_system_attrs(study._study_id)
    assert "Pareto front" in get_note_from_system_attrs(attrs, None)["body"]
    for t in study.trials:
        body = get_note_from_system_attrs(attrs, t._trial_id)["body"]
        assert body.startswith({"complete": "**Complete**", "pruned": "**Pruned**", "skipped": "**Skipped**"}[
            t.user_attrs[record.OUTCOME]]), body
        assert record.kind(t) == t.user_attrs[record.OUTCOME]
        assert None not in t.user_attrs.values()
    # One plot per fixed id, replaced as the study ran, not one per trial.
    assert sorted(list_graph_object_ids(attrs)) == sorted([dashboard.FRONT_GRAPH, dashboard.CURVES_GRAPH,
                                                           dashboard.HV_GRAPH])


def test_the_real_dashboard_in_chromium_shows_the_note_and_the_log_scale_front(served_study, tmp_path):
    import optuna_dashboard
    from browser import chromium_page

    from search.study.storage import open_storage
    study_id = optuna.load_study(study_name="d", storage=f"sqlite:///{served_study}")._study_id
    with serving(optuna_dashboard.wsgi(open_storage(f"sqlite:///{served_study}"))) as base, \
            chromium_page() as (page, errors):
        page.goto(f"{base}/dashboard/studies/{study_id}/note", wait_until="networkidle")
        page.get_by_text("Pareto front").first.wait_for(timeout=30_000)
        assert page.get_by_text("fmnist-search study 'd'").count() == 1
        page.screenshot(path=str(tmp_path / "note.png"), full_page=True)
        page.goto(f"{base}/dashboard/studies/{study_id}", wait_until="networkidle")
        page.get_by_text("Test accuracy against parameters").first.wait_for(timeout=30_000)
        axes = page.evaluate("""Array.from(document.querySelectorAll('.js-plotly-plot'))
            .filter(p => p._fullLayout && p._fullLayout.title && (p._fullLayout.title.text || '').startsWith('Test accuracy'))
            .map(p => [p._fullLayout.xaxis.type, p._fullLayout.xaxis.title.text])""")
        assert axes == [["log", "parameters (log scale)"]]
        assert page.get_by_text("4:lenet5").count() >= 1  # the seed stars are labelled
        assert page.get_by_text("Validation accuracy while training").count() >= 1
        # the hypervolume against compute: both curves drawn, and a button puts device-seconds on the x axis
        page.get_by_text("Hypervolume of the front against compute").first.wait_for(timeout=30_000)
        hv = """Array.from(document.querySelectorAll('.js-plotly-plot'))
            .filter(p => p._fullLayout && (p._fullLayout.title.text || '').startsWith('Hypervolume'))
            .map(p => [p._fullLayout.xaxis.title.text, p.data.length, p.data[0].x.length])"""
        (before,) = page.evaluate(hv)
        assert before[0] == "compute: training images, all trials" and before[1] == 2 and before[2] >= 1
        page.get_by_text("device-seconds", exact=True).first.click()
        page.wait_for_timeout(500)
        assert page.evaluate(hv)[0][0] == "compute: device-seconds, all workers"
        page.screenshot(path=str(tmp_path / "study.png"), full_page=True)
        width = page.evaluate("document.documentElement.scrollWidth")
    assert errors == []
    assert width <= 1400  # no attribute makes the page wider than the window


def test_a_margin_within_the_spread_over_seeds_is_a_tie(study):
    from search.view.front import seed_verdicts, verdict
    assert verdict(0.9070, 0.002, 0.9064) == "ties" and verdict(0.9070, None, 0.9064) == "dominates"
    assert verdict(0.9100, 0.002, 0.9064) == "dominates" and verdict(0.9050, 0.001, 0.9064) is None
    assert verdict(0.9060, 0.002, 0.9064) == "ties"  # behind, but within the spread
    # seed000-cnn2pooling2fully1-c reports 90.64% at 53,000 parameters
    record.keep_final(study, 0, {"epochs": 30, "seeds": [0, 1, 2], "test_acc": [0.905, 0.9065, 0.908],
                                 "mean": 0.9065, "std": 0.0015})
    assert "seed000-cnn2pooling2fully1-c" in seed_verdicts(20_000, 0.9065, 0.0015)["seeds_tied"]
    note = dashboard.study_note(study, study.trials)
    assert "ties with (within the spread): " in note and "seed000-cnn2pooling2fully1-c" in note.split("ties with")[1]
    assert "90.65% ± 0.15 (3 seeds, 30 epochs)" in note


def test_optuna_dashboard_serves_the_study_over_http(small_study):
    import optuna_dashboard
    with serving(optuna_dashboard.wsgi(f"sqlite:///{small_study}")) as base:
        studies_json = json.loads(urllib.request.urlopen(f"{base}/api/studies", timeout=30).read())
        (summary,) = [s for s in studies_json["study_summaries"] if s["study_name"] == "s"]
        detail = json.loads(urllib.request.urlopen(f"{base}/api/studies/{summary['study_id']}", timeout=30).read())
        assert urllib.request.urlopen(f"{base}/dashboard", timeout=30).status == 200
    assert detail["objective_names"] == ["acc", "params"]  # from study.set_metric_names
    assert detail["best_trials"], "the Pareto front is shown"
    attrs = {a["key"] for t in detail["trials"] for a in t["user_attrs"]}
    assert {"params", "flops", "test_acc", "test_top5", "curve", "summary", "outcome", "images_per_s"} <= attrs
    # The spec is a system attribute: as a user attribute it made every row of the trial table tall.
    assert "spec" not in attrs and "fmnist:spec" not in attrs


def test_the_dashboard_command_serves_the_study_on_this_machine(small_study):
    proc = subprocess.Popen([sys.executable, "-m", "search.cli", "dashboard", "--storage", f"sqlite:///{small_study}",
                             "--study", "s", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line and "/dashboard" in line, (line, proc.stderr.read() if proc.poll() else "")
        base = line.split("http://", 1)[1].split("/dashboard")[0]
        with urllib.request.urlopen(f"http://{base}/api/studies", timeout=30) as r:
            studies_json = json.loads(r.read())
        assert [s["study_name"] for s in studies_json["study_summaries"]] == ["s"]
        with urllib.request.urlopen(f"http://{base}/dashboard", timeout=30) as r:
            assert r.status == 200 and b"<html" in r.read().lower()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


