"""Long dataset work (the first decode of a folder, its statistics) that outlives a page.

Why: opening a large folder the first time decodes every file (tens of seconds), and the statistics
hash every image. Run inside the page's script, a reload or a closed tab stopped that work, and the
next visit started again from zero. Here each piece of work is a task of the server process, run in a
background thread and keyed by what it computes: every session that asks for the same key attaches
to the same task and sees its progress, so a reloaded page comes back to the same progress, and a
finished result is kept for later sessions (the last MAX_KEPT, like the cache it replaces).

A failed task is dropped once its error has been shown, so fixing the files and asking again retries.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

Progress = Callable[[int, int, str], None]
MAX_KEPT = 16
POLL_S = 0.25


@dataclass
class Task:
    key: Hashable
    done: int = 0
    total: int = 0
    stage: str = "starting"
    result: Any = None
    error: BaseException | None = None
    finished: threading.Event = field(default_factory=threading.Event)

    def progress(self, done: int, total: int, stage: str) -> None:
        self.done, self.total, self.stage = done, total, stage

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0


_TASKS: OrderedDict[Hashable, Task] = OrderedDict()
_LOCK = threading.Lock()


def _run(task: Task, work: Callable[[Progress], Any]) -> None:
    try:
        task.result = work(task.progress)
    except BaseException as e:  # kept for the page to show (a LoupeError) or re-raise (a bug)
        task.error = e
    finally:
        task.finished.set()


def start(key: Hashable, work: Callable[[Progress], Any]) -> Task:
    """The task for `key`: the running or finished one if there is one, else `work` started now."""
    with _LOCK:
        task = _TASKS.get(key)
        if task is not None:
            _TASKS.move_to_end(key)
            return task
        task = _TASKS[key] = Task(key)
        threading.Thread(target=_run, args=(task, work), daemon=True, name=f"loupe-task-{key}").start()
        finished = [k for k, t in _TASKS.items() if t.finished.is_set()]
        for k in finished[: max(0, len(_TASKS) - MAX_KEPT)]:
            del _TASKS[k]
    return task


def peek(key: Hashable) -> Task | None:
    """The task for `key` if there is one (running or finished), without starting anything."""
    with _LOCK:
        return _TASKS.get(key)


def forget(match: Callable[[Hashable], bool]) -> None:
    """Drop the finished tasks whose key matches (a re-scan); running ones finish and are kept."""
    with _LOCK:
        for k in [k for k, t in _TASKS.items() if match(k) and t.finished.is_set()]:
            del _TASKS[k]


def progress_text(task: Task, label: str) -> str:
    """What the bar says: "Opening X: 13,214 files found…" once the count is known (a stage ending in
    "found"), "Decoding: 500 of 13,214" while items are worked through, else "Opening X…"."""
    if task.total and task.stage.endswith("found"):
        return f"{label}: {task.total:,} {task.stage}…"
    if task.total:
        return f"{task.stage.capitalize()}: {task.done:,} of {task.total:,}"
    return f"{label}…"


def result(key: Hashable, work: Callable[[Progress], Any], label: str, bar: Any = None) -> Any:
    """Start or attach to the task for `key`, show its progress until it ends, and return its result.

    The progress goes to `bar` (an `st.progress` element the caller placed and clears) when given, else to
    a bar drawn here and removed when the task ends. A reload stops this script run at its next bar
    update, not the task: the next run attaches again."""
    task = start(key, work)
    if not task.finished.is_set():
        own = bar is None
        if own:
            bar = st.progress(task.fraction, text=progress_text(task, label))
        while True:
            bar.progress(task.fraction, text=progress_text(task, label))
            if task.finished.wait(POLL_S):
                break
        if own:
            bar.empty()
    if task.error is not None:
        with _LOCK:
            if _TASKS.get(key) is task:
                del _TASKS[key]  # the next request retries (the files may have been fixed)
        raise task.error
    return task.result
