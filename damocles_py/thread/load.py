"""How many sealing threads run each heavy stage and how many wait for it (`worker list`, metrics).

Counted from the threads' own status, so both views agree with the thread table: a thread waiting
for a stage (its `limitation.concurrent`/`staggered` slot, an ext_lock or a free child) has
thread_state "waiting" with that stage set.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from damocles_py.thread.runtime import ThreadStatus

# The stages a handler runs through StageContext.stage, in the order a sector meets them.
HEAVY_STAGES = ("add_pieces", "tree_d", "pc1", "pc2", "c1", "c2", "snap_encode", "snap_prove", "transfer")


@dataclass(frozen=True)
class StageLoad:
    stage: str
    running: int
    waiting: int


def stage_loads(statuses: Iterable[ThreadStatus], always: Iterable[str] = ()) -> list[StageLoad]:
    """Per stage with threads running or waiting, plus the `always` ones (at 0 if idle)."""
    running: dict[str, int] = dict.fromkeys(always, 0)
    waiting: dict[str, int] = dict.fromkeys(always, 0)
    for st in statuses:
        if st.stage and st.thread_state in ("running", "waiting"):
            counts = running if st.thread_state == "running" else waiting
            counts[st.stage] = counts.get(st.stage, 0) + 1
            (waiting if counts is running else running).setdefault(st.stage, 0)
    order = {s: i for i, s in enumerate(HEAVY_STAGES)}
    stages = sorted(running, key=lambda s: (order.get(s, len(order)), s))
    return [StageLoad(s, running[s], waiting[s]) for s in stages]
