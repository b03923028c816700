"""The progress view of a whole study (rich): one row per family with the state of each of its stages,
an overall bar, and a bar for the stage running now."""
from __future__ import annotations

import logging
import time

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

log = logging.getLogger(__name__)


class StudyView:
    def __init__(self, args, stages, enabled: bool = True, console: Console | None = None):
        self.args, self.stages, self.enabled = args, stages, enabled
        self.console = console or Console(stderr=True)
        self.state: dict[tuple, str] = {}
        self.notes: dict[str, str] = {}
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=self.console)
        self.overall = self.progress.add_task("study", total=len(stages))
        self.current = self.progress.add_task("", total=1, visible=False)
        self.live = Live(self._render(), console=self.console, refresh_per_second=2, transient=False) \
            if enabled else None
        self.t0 = time.perf_counter()

    def __enter__(self):
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.live.update(self._render())
            self.live.__exit__(*exc)

    # -------------------------------------------------------------- events

    def _key(self, stage):
        return (stage.family, stage.name if stage.name != "finetune" else stage.task)

    def skip(self, stage):
        self._mark(stage, "done")
        self.progress.advance(self.overall)
        self._refresh()

    def start(self, stage):
        self._mark(stage, "running")
        what = f"{stage.name} {stage.family}" + (f" {stage.task} seed {stage.seed}" if stage.task else "")
        log.info("study: %s", what)
        self.progress.reset(self.current, total=1, description=what, visible=True)
        self._refresh()

    def report(self, done: int, total: int) -> None:
        self.progress.update(self.current, completed=done, total=max(total, 1))

    def finish(self, stage, result):
        self._mark(stage, "done")
        self.progress.advance(self.overall)
        if stage.name == "pretrain":
            s = result["summary"]
            self.notes[stage.family] = f"val loss {s.get('val_loss', float('nan')):.3f}"
        self._refresh()

    def _mark(self, stage, what):
        key = self._key(stage)
        if stage.name != "finetune":
            self.state[key] = what
            return
        n = self.state.get(key, "0")
        done = int(n.split("/")[0]) if n[0].isdigit() else 0
        if what == "done":
            done += 1
        self.state[key] = f"{done}/{self.args.seeds}" + (" …" if what == "running" else "")

    def _refresh(self):
        if self.live:
            self.live.update(self._render())

    # -------------------------------------------------------------- drawing

    def _render(self):
        table = Table(title=f"lmforge compare — {self.args.out}", title_justify="left")
        table.add_column("family")
        cols = ["pretrain", "measure", *self.args.tasks]
        for c in cols:
            table.add_column(c)
        table.add_column("")
        planned = {self._key(s) for s in self.stages}
        marks = {"done": "[green]✓[/]", "running": "[yellow]…[/]"}
        for f in self.args.families:
            row = []
            for c in cols:
                if (f, c) not in planned:
                    row.append("[dim]—[/]")
                    continue
                v = self.state.get((f, c), "")
                row.append(marks.get(v, v) if v else "[dim]·[/]")
            table.add_row(f, *row, self.notes.get(f, ""))
        return Group(table, self.progress)
