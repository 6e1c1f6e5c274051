"""What a running search says on a terminal: the live status line, the ETA, the estimate up front."""
from __future__ import annotations

import optuna
from optuna.trial import TrialState

from search.testing.support import load_study as load


def test_live_status_line_on_a_terminal(small_study):
    import io

    from search.view.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term, log = Terminal(), io.StringIO()
    progress = Progress(enabled=True, stream=term, out=log)
    progress.trial_started(7)
    study = load(small_study)
    progress.trial_finished(study, study.trials, 3, 10)
    progress.write("trial 7: done")
    progress.close()
    assert "3/10 done" in term.getvalue() and "front" in term.getvalue() and "ETA" in term.getvalue()
    assert log.getvalue() == "trial 7: done\n"
    quiet = Terminal()
    Progress(enabled=False, stream=quiet, out=io.StringIO()).trial_started(1)
    assert quiet.getvalue() == ""


def test_the_duration_of_a_study_is_estimated_up_front():
    from search.commands import estimate
    line = estimate(200, 750_000, 5000.0)  # 150 s per top rung; 200 trials of a fifth of it each
    assert "about 150 s" not in line and "about 2 min" in line and "roughly 1.7 h" in line


def test_the_eta_counts_the_seeds_still_queued():
    import io

    from optuna.distributions import FloatDistribution

    from search.view.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    study = optuna.create_study(directions=["maximize", "minimize"])
    for i in range(3):  # seeds trained so far: none of them counts toward --trials
        study.add_trial(optuna.create_trial(state=TrialState.PRUNED, params={"x": 0.5},
                                            distributions={"x": FloatDistribution(0, 1)},
                                            user_attrs={"preset": f"seed{i}"}))
    for i in range(5):
        study.enqueue_trial({}, user_attrs={"preset": f"later{i}"})
    term = Terminal()
    progress = Progress(enabled=True, stream=term, out=io.StringIO())
    progress.trial_finished(study, study.trials, 0, 10)
    line = term.getvalue()
    assert "0/10 done" in line and "ETA -" not in line and "ETA " in line


