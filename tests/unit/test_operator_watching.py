"""What the operator's kopf watch brings, and the diff-base it does without.

kopf builds a diff-base (a deep copy of the object) on every watch event for its
change-detecting handlers; the operator registers none, so it keeps an empty one.
"""

from __future__ import annotations

import kopf

from nicotask import api
from nicotask.operator import handlers
from nicotask.operator.handlers import NoDiffBase, configure_watching
from nicotask.settings import Settings


def _configured(**env: object) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    configure_watching(settings, Settings(**env))  # type: ignore[arg-type]
    return settings


def test_live_tasks_only_and_the_shard_selector() -> None:
    s = _configured()
    key = (api.GROUP, api.TASKS)
    assert s.watching.field_selectors[key] == api.LIVE_FIELD_SELECTOR
    assert key not in s.watching.label_selectors
    assert _configured(site_selector="site=a").watching.label_selectors[key] == "site=a"
    assert isinstance(s.persistence.diffbase_storage, NoDiffBase)


def test_no_handler_needs_a_diff_base() -> None:
    # An empty diff-base is only right while no handler detects changes: on.create,
    # on.update, on.resume, on.field, daemons and timers all compare against it.
    registry = kopf.get_default_registry()
    assert handlers.TASKS  # the import registered the handlers
    assert list(registry._changing.get_all_handlers()) == []
    assert list(registry._spawning.get_all_handlers()) == []
    assert [h.id for h in registry._watching.get_all_handlers()] == ["task_event"]


def test_the_diff_base_is_empty_and_never_stored() -> None:
    body = kopf.Body(
        {
            "apiVersion": api.API_VERSION,
            "kind": "NicoTask",
            "metadata": {"name": "t", "annotations": {"a": "b"}},
            "spec": {"rackRef": "r"},
            "status": {"status": "Running"},
        }
    )
    storage = NoDiffBase()
    assert storage.build(body=body) == {}
    assert storage.fetch(body=body) == {}
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    assert patch == {}
