"""The functions a child processor runs, by name: the heavy stages and the persist copy.

The parent sends a function's name, never code: a child runs only what is listed here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from damocles_py import proofs
from damocles_py.store.layout import persist_group

TASKS: dict[str, Callable[..., Any]] = {
    fn.__name__: fn
    for fn in (proofs.add_piece, proofs.build_tree_d, proofs.pc1, proofs.pc2, proofs.c2, proofs.snap_encode,
               proofs.snap_prove, persist_group)
}


def task_name(fn: Callable[..., Any]) -> str:
    """The name a child knows `fn` by; a function not listed here cannot run in a child."""
    name = getattr(fn, "__name__", repr(fn))
    if TASKS.get(name) is not fn:
        raise ValueError(f"{name} cannot run in a child processor (not in processors.tasks.TASKS)")
    return name
