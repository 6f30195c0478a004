"""The operator's start-up check of Temporal: which setting each problem names, in one line.

A fake client answers as a Temporal would; the integration tests
(tests/e2e/test_operator_startup.py) run the real operator against real
servers for the wrong address and the wrong namespace.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from temporalio.service import RPCError, RPCStatusCode

from nicotask.operator import temporal_check
from nicotask.operator.temporal_check import Problem, check_temporal, wait_until_usable
from nicotask.settings import Settings


class FakeService:
    def __init__(self, describe: BaseException | None) -> None:
        self.describe = describe

    async def describe_namespace(self, req: Any, **_: Any) -> object:
        if self.describe is not None:
            raise self.describe
        return object()


class FakeClient:
    """describe_namespace and list_workflows fail as told (or answer)."""

    def __init__(
        self, describe: BaseException | None = None, listing: BaseException | None = None
    ) -> None:
        self.workflow_service = FakeService(describe)
        self.listing = listing
        self.queries: list[str] = []

    def list_workflows(self, query: str, **_: Any) -> AsyncIterator[object]:
        self.queries.append(query)
        listing = self.listing

        async def gen() -> AsyncIterator[object]:
            if listing is not None:
                raise listing
            for item in ():
                yield item

        return gen()


def _rpc(status: RPCStatusCode, message: str) -> RPCError:
    return RPCError(message, status, b"")


SETTINGS = Settings(temporal_address="temporal.example:7233", temporal_namespace="nico")


async def test_a_usable_temporal_passes_and_both_follower_queries_were_asked() -> None:
    client = FakeClient()
    assert await check_temporal(SETTINGS, client) is None  # type: ignore[arg-type]
    assert len(client.queries) == 2
    assert any("ExecutionStatus = 'Running'" in q for q in client.queries)
    assert any("CloseTime >= " in q for q in client.queries)
    assert all("TaskQueue = 'nicotask'" in q for q in client.queries)


@pytest.mark.parametrize(
    ("client", "setting", "words"),
    [
        (
            FakeClient(describe=_rpc(RPCStatusCode.NOT_FOUND, "Namespace nico is not found.")),
            "NICOTASK_TEMPORAL_NAMESPACE",
            "namespace 'nico' does not exist at temporal.example:7233",
        ),
        (
            FakeClient(describe=_rpc(RPCStatusCode.UNAVAILABLE, "connection refused")),
            "NICOTASK_TEMPORAL_ADDRESS",
            "no Temporal frontend answers at temporal.example:7233 (connection refused)",
        ),
        (
            FakeClient(describe=RuntimeError("Failed client connect: dns error\nmore")),
            "NICOTASK_TEMPORAL_ADDRESS",
            "(Failed client connect: dns error)",
        ),
        (
            FakeClient(describe=_rpc(RPCStatusCode.PERMISSION_DENIED, "Request unauthorized.")),
            "NICOTASK_TEMPORAL_API_KEY",
            "not allowed to describe namespace 'nico'",
        ),
        (
            # A visibility store without advanced queries (or without a system
            # search attribute) refuses the follower's query.
            FakeClient(
                listing=_rpc(
                    RPCStatusCode.INVALID_ARGUMENT, "invalid query: operator 'AND' not allowed"
                )
            ),
            "NICOTASK_TEMPORAL_NAMESPACE",
            "cannot answer the follower's query",
        ),
        (
            FakeClient(listing=_rpc(RPCStatusCode.UNIMPLEMENTED, "not supported")),
            "NICOTASK_TEMPORAL_NAMESPACE",
            "advanced visibility",
        ),
        (
            FakeClient(listing=_rpc(RPCStatusCode.PERMISSION_DENIED, "List is disabled")),
            "NICOTASK_TEMPORAL_API_KEY",
            "not allowed to list the workflows of namespace 'nico'",
        ),
    ],
)
async def test_each_problem_names_the_setting_to_change(
    client: FakeClient, setting: str, words: str
) -> None:
    problem = await check_temporal(SETTINGS, client)  # type: ignore[arg-type]
    assert problem is not None
    assert problem.setting == setting
    assert words in problem.message
    assert setting in problem.line()
    assert "\n" not in problem.line()


async def test_a_client_certificate_is_the_credential_named_when_there_is_no_api_key() -> None:
    settings = Settings(temporal_tls=True, temporal_tls_cert_file="/tls/tls.crt")
    client = FakeClient(describe=_rpc(RPCStatusCode.UNAUTHENTICATED, "bad certificate"))
    problem = await check_temporal(settings, client)  # type: ignore[arg-type]
    assert problem is not None and problem.setting == "NICOTASK_TEMPORAL_TLS_CERT_FILE"


async def test_waiting_logs_one_line_per_problem_without_a_trace_then_passes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    answers: list[FakeClient] = [
        FakeClient(describe=_rpc(RPCStatusCode.NOT_FOUND, "Namespace nico is not found.")),
        FakeClient(describe=_rpc(RPCStatusCode.NOT_FOUND, "Namespace nico is not found.")),
        FakeClient(describe=_rpc(RPCStatusCode.NOT_FOUND, "Namespace nico is not found.")),
        FakeClient(),
    ]

    async def next_client() -> Any:
        return answers.pop(0)

    with caplog.at_level(logging.INFO, logger="nicotask.operator"):
        await asyncio.wait_for(wait_until_usable(SETTINGS, next_client, backoff=0.01), timeout=5)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # the same problem is not repeated at once
    assert errors[0].exc_info is None
    assert "NICOTASK_TEMPORAL_NAMESPACE" in errors[0].getMessage()
    assert any("Temporal check passed" in r.getMessage() for r in caplog.records)


async def test_a_client_that_cannot_be_built_is_an_address_problem(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0

    async def broken() -> Any:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise FileNotFoundError("[Errno 2] No such file or directory: '/tls/ca.crt'")
        return FakeClient()

    monkeypatch.setattr(temporal_check, "MAX_BACKOFF_SECONDS", 0.01)
    with caplog.at_level(logging.ERROR, logger="nicotask.operator"):
        await asyncio.wait_for(wait_until_usable(SETTINGS, broken, backoff=0.01), timeout=5)
    (record,) = caplog.records
    assert "NICOTASK_TEMPORAL_ADDRESS" in record.getMessage()
    assert "/tls/ca.crt" in record.getMessage()
    assert record.exc_info is None


def test_problem_line_is_one_line() -> None:
    line = Problem("NICOTASK_TEMPORAL_ADDRESS", "x").line()
    assert line == "Temporal check failed (NICOTASK_TEMPORAL_ADDRESS): x"
