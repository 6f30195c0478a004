"""kopf peering settings of the operator (found by the fault soak).

kopf pauses every replica that sees another live replica of the same priority.
With two replicas on kopf's default priority (0) both paused and no task was
served: each replica needs its own priority for one to be active.
"""

from __future__ import annotations

import kopf

from nicotask.operator.handlers import configure_peering
from nicotask.settings import Settings


def _configured(**env: object) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    configure_peering(settings, Settings(**env))  # type: ignore[arg-type]
    return settings


def test_without_peering_the_operator_is_standalone() -> None:
    assert _configured().peering.standalone is True


def test_two_replicas_get_distinct_priorities() -> None:
    a, b = _configured(peering="p"), _configured(peering="p")
    assert a.peering.name == b.peering.name == "p"
    assert a.peering.mandatory and b.peering.mandatory
    assert a.peering.priority != b.peering.priority
    assert a.peering.priority > 0 and b.peering.priority > 0


def test_priority_and_lifetime_can_be_set() -> None:
    s = _configured(peering="p", peering_priority=7, peering_lifetime_seconds=10)
    assert (s.peering.priority, s.peering.lifetime) == (7, 10)
    assert _configured(peering="p").peering.lifetime == 60
