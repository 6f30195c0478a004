"""The shim's request metrics: by route template (never the raw path), status and latency."""

from __future__ import annotations

import httpx
from fastapi import FastAPI, HTTPException
from prometheus_client.parser import text_string_to_metric_families

from nicotask.shim import metrics
from nicotask.shim.app import create_app
from nicotask.shim.config import ShimSettings


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def tiny_app() -> FastAPI:
    app = FastAPI()
    metrics.install(app)

    @app.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        if item_id == "missing":
            raise HTTPException(404, "no such item")
        return {"id": item_id}

    @app.post("/boom")
    async def boom() -> None:
        raise RuntimeError("bug")

    return app


async def test_requests_counted_by_route_template_and_status() -> None:
    app = tiny_app()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app, raise_app_exceptions=False), base_url="http://t"
    ) as http:
        for item_id in ("a", "b", "c"):
            assert (await http.get(f"/items/{item_id}")).status_code == 200
        assert (await http.get("/items/missing")).status_code == 404
        assert (await http.get("/nope")).status_code == 404
        assert (await http.delete("/items/a")).status_code == 405
        assert (await http.post("/boom")).status_code == 500
        r = await http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    got = samples(r.text)

    def count(method: str, route: str, status: str) -> float:
        labels = (("method", method), ("route", route), ("status", status))
        return got.get(("nicotask_shim_requests_total", labels), 0)

    assert count("GET", "/items/{item_id}", "200") == 3
    assert count("GET", "/items/{item_id}", "404") == 1
    assert count("GET", "(unmatched)", "404") == 1
    assert count("DELETE", "/items/{item_id}", "405") == 1
    assert count("POST", "/boom", "500") == 1
    assert (
        got[
            (
                "nicotask_shim_request_duration_seconds_count",
                (("method", "GET"), ("route", "/items/{item_id}")),
            )
        ]
        == 4
    )
    # Ids never become label values.
    assert not [k for k in got if any("/items/a" in v for _, v in k[1])]
    assert got[("nicotask_shim_requests_in_flight", ())] == 1  # the scrape itself


async def test_the_shim_app_serves_its_metrics() -> None:
    app = create_app(ShimSettings())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://shim"
    ) as http:
        assert (await http.get("/nope")).status_code == 404
        r = await http.get("/metrics")
    assert r.status_code == 200
    labels = (("method", "GET"), ("route", "(unmatched)"), ("status", "404"))
    assert samples(r.text)[("nicotask_shim_requests_total", labels)] == 1


async def test_metrics_not_in_the_openapi_document() -> None:
    app = create_app(ShimSettings())
    assert "/metrics" not in app.openapi()["paths"]


def test_each_app_has_its_own_registry() -> None:
    one, two = create_app(ShimSettings()), create_app(ShimSettings())
    assert one.state.metrics.registry is not two.state.metrics.registry
