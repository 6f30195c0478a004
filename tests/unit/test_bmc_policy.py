"""The BMC endpoint policy, and the driver's pinning of every request to the endpoint's origin.

The driver tests run two tiny local HTTP servers (the BMC and "another
host"); the BMC's Redfish links point at the other one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest

from nicotask.bmc_policy import EndpointPolicy, EndpointRefused, origin_of
from nicotask.redfish import BmcRefused, RedfishDriver
from nicotask_dev.redfish_testing import LinkingBmc


def ip(text: str) -> Any:
    return ipaddress.ip_address(text)


def test_default_policy_refuses_special_addresses() -> None:
    policy = EndpointPolicy()
    for address in ("127.0.0.1", "::1", "169.254.169.254", "fe80::1", "0.0.0.0", "224.0.0.1"):
        assert policy.refusal(ip(address)) is not None, address
    assert "link-local" in (policy.refusal(ip("169.254.169.254")) or "")
    assert "loopback" in (policy.refusal(ip("::ffff:127.0.0.1")) or "")  # v4-mapped
    for address in ("10.1.2.3", "192.0.2.7", "2001:db8::1"):
        assert policy.refusal(ip(address)) is None, address


def test_special_ranges_only_when_listed_inside_them() -> None:
    broad = EndpointPolicy.from_cidrs(["0.0.0.0/0"])
    assert broad.refusal(ip("127.0.0.1")) is not None  # a broad CIDR is no opt-in
    assert broad.refusal(ip("10.0.0.1")) is None
    dev = EndpointPolicy.from_cidrs(["127.0.0.0/8"])
    assert dev.refusal(ip("127.0.0.1")) is None
    assert dev.refusal(ip("169.254.169.254")) is not None
    assert "outside the allowed BMC networks" in (dev.refusal(ip("10.0.0.1")) or "")


def test_allowed_networks_restrict_ordinary_addresses() -> None:
    policy = EndpointPolicy.from_cidrs(["10.20.0.0/16", "2001:db8::/32"])
    assert policy.refusal(ip("10.20.3.4")) is None
    assert policy.refusal(ip("2001:db8::5")) is None
    assert policy.refusal(ip("10.21.0.1")) is not None
    with pytest.raises(ValueError, match="NICOTASK_WORKER_BMC_NETWORKS"):
        EndpointPolicy.from_cidrs(["not-a-cidr"])


def test_check_endpoint_scheme_and_resolution() -> None:
    policy = EndpointPolicy()
    with pytest.raises(EndpointRefused, match="allowInsecureHttp"):
        policy.check_endpoint("http://192.0.2.1", allow_http=False)
    assert policy.check_endpoint("http://192.0.2.1", allow_http=True) == origin_of(
        "http://192.0.2.1:80"
    )
    with pytest.raises(EndpointRefused, match="loopback"):
        policy.check_endpoint("https://localhost:8443", allow_http=False)
    with pytest.raises(EndpointRefused, match="not an http"):
        policy.check_endpoint("ftp://192.0.2.1", allow_http=True)


# ---- the driver ---------------------------------------------------------------


@pytest.fixture
def servers() -> Iterator[tuple[str, list[str], list[str]]]:
    other = LinkingBmc()
    bmc = LinkingBmc(links_to=other.url)
    yield bmc.url, bmc.seen, other.seen
    bmc.close()
    other.close()


def test_driver_refuses_links_to_another_host(servers: tuple[str, list[str], list[str]]) -> None:
    url, bmc_seen, other_seen = servers
    driver = RedfishDriver(
        url, "admin", "secret", policy=EndpointPolicy.from_cidrs(["127.0.0.0/8"])
    )
    with pytest.raises(BmcRefused, match=r"refused a request to http://127\.0\.0\.1:"):
        driver.power_state(None)
    assert bmc_seen  # the service root was read from the BMC itself
    assert other_seen == []  # the credentials never went to the other origin


def test_driver_refuses_loopback_by_default(servers: tuple[str, list[str], list[str]]) -> None:
    url, bmc_seen, _ = servers
    driver = RedfishDriver(url, "admin", "secret")
    with pytest.raises(BmcRefused, match="loopback"):
        driver.power_state(None)
    assert bmc_seen == []
