"""The freshest copy of each live task: the watch-fed kopf index, or our own newer write.

The operator watches only live tasks (finished ones are excluded server-side),
so the index holds exactly the tasks that may still need work. Our own writes
are remembered until the watch catches up, so a decision taken right after a
write (promote the next task of a rack, say) never sees the older copy.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from nicotask import lifecycle
from nicotask.api import NicoTask


def _rv(task: NicoTask) -> int:
    try:
        return int(task.metadata.resource_version or 0)
    except ValueError:  # resourceVersion is opaque; etcd's are integers
        return 0


def resource_version(task: NicoTask) -> int:
    """The task's resourceVersion as etcd's integer (0 when it is not one)."""
    return _rv(task)


def newest(*copies: NicoTask | None) -> NicoTask | None:
    """The copy with the highest resourceVersion, the first on a tie (None if none)."""
    present = [c for c in copies if c is not None]
    return max(present, key=_rv) if present else None


def _first(store: Any) -> Any:
    for value in store:
        return value
    return None


class LiveTasks:
    def __init__(self) -> None:
        self._by_uid: Any = {}  # kopf Index: uid -> Store[NicoTask]
        self._by_rack: Any = {}  # kopf Index: (namespace, rack) -> Store[uid]
        self._written: dict[str, NicoTask] = {}
        # Copies kopf's index still holds of tasks that left the watch unseen (kopf
        # re-lists after a pause or a broken watch, and drops nothing it does not
        # list again): uid -> the resourceVersion up to which its copies are stale.
        self._gone: dict[str, int] = {}

    def bind(self, by_uid: Any, by_rack: Any) -> None:
        self._by_uid, self._by_rack = by_uid, by_rack

    def _indexed(self, uid: str) -> NicoTask | None:
        store = self._by_uid.get(uid)
        task = None if store is None else _first(store)
        if task is not None and uid in self._gone and _rv(task) <= self._gone[uid]:
            return None
        return task

    def get(self, uid: str) -> NicoTask | None:
        indexed, written = self._indexed(uid), self._written.get(uid)
        if written is None:
            return indexed
        if indexed is None or _rv(written) > _rv(indexed):
            return written
        return indexed

    def remember(self, task: NicoTask) -> None:
        """A copy we just wrote (newer than the watch may have delivered yet)."""
        uid = task.metadata.uid or ""
        previous = self._written.get(uid)
        if previous is None or _rv(task) >= _rv(previous):
            self._written[uid] = task

    def forget(self, uid: str) -> None:
        self._written.pop(uid, None)

    def hide(self, task: NicoTask) -> None:
        """`task` left the watch unseen: its copies up to this one are not live tasks."""
        uid = task.metadata.uid or ""
        self._gone[uid] = max(self._gone.get(uid, 0), _rv(task))
        self._written.pop(uid, None)

    def on_rack(self, namespace: str, rack: str) -> list[NicoTask]:
        uids = self._by_rack.get((namespace, rack)) or ()
        return [t for t in (self.get(u) for u in list(uids)) if t is not None]

    def live(self) -> Iterator[NicoTask]:
        for uid in list(self._by_uid):
            task = self.get(uid)
            if task is not None and not lifecycle.is_terminal(task.status.status):
                yield task

    def __contains__(self, uid: str) -> bool:
        return self._indexed(uid) is not None

    def prune(self) -> None:
        """Drop remembered copies the watch has caught up with or that left it."""
        for uid, written in list(self._written.items()):
            indexed = self._indexed(uid)
            if indexed is None or _rv(indexed) >= _rv(written):
                del self._written[uid]
        for uid in list(self._gone):
            if uid not in self._by_uid or self._indexed(uid) is not None:
                del self._gone[uid]  # kopf dropped it, or it came back newer
