"""The one live status line of a study on a terminal; plain per-trial lines otherwise."""
from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Sequence, TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.study import record
from search.view.front import front


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


class Progress:
    """``write`` prints a log line above the live line; the live line shows only on a terminal."""

    def __init__(self, enabled: bool = True, stream: TextIO | None = None, out: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.out = out or sys.stdout
        self.live = enabled and self.stream.isatty()
        self.started = time.perf_counter()
        self.status = ""
        self.trial = ""
        self.done_at_start: int | None = None
        self._last_draw = 0.0

    def write(self, line: str) -> None:
        self._clear()
        print(line, file=self.out, flush=True)
        self._draw()

    def trial_started(self, number: int) -> None:
        self.trial = f"trial {number}"
        self._draw()

    def trial_progress(self, images: int, total: int) -> None:
        now = time.perf_counter()
        if self.live and now - self._last_draw > 0.5:
            self.trial = f"{self.trial.split(':')[0]}: {100 * images // max(1, total)}%"
            self._draw()

    def trial_finished(self, study: optuna.Study, trials: Sequence[FrozenTrial], done: int,
                       wanted: int) -> None:
        if not self.live:
            return
        kinds = Counter(record.kind(t) for t in trials)
        # The ETA counts every trained trial, seeds included: they cost time too, and counting only
        # sampled ones made it grow without bound while the seeds went through the rungs.
        trained = kinds["complete"] + kinds["pruned"]
        queued_seeds = sum(t.state == TrialState.WAITING and record.is_seed(t) for t in trials)
        elapsed = time.perf_counter() - self.started
        if self.done_at_start is None:
            self.done_at_start = trained - 1
        rate = (trained - self.done_at_start) / elapsed if elapsed else 0
        left = max(0, wanted - done) + queued_seeds
        eta = _clock(left / rate) if rate > 0 and left else "-"
        self.status = (f"{done}/{wanted} done, {kinds['pruned']} pruned, {kinds['failed']} failed, "
                       f"front {len(front(study))}, {_clock(elapsed)} elapsed, ETA {eta}")
        self.trial = ""
        self._draw()

    def _draw(self) -> None:
        if self.live:
            self._last_draw = time.perf_counter()
            text = " | ".join(x for x in (self.status, self.trial) if x)
            self.stream.write("\r\033[K" + text)
            self.stream.flush()

    def _clear(self) -> None:
        if self.live:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def close(self) -> None:
        self._clear()
