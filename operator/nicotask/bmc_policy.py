"""Where the worker may send BMC requests: an endpoint policy against SSRF.

A NicoRack names its BMC endpoints, and whoever may write a rack could point
one at the cluster's own services, at cloud metadata (link-local) or at the
worker's loopback, and get the rack's credentials sent there. The policy:

- `http://` only when the rack opts in (`spec.tls.allowInsecureHttp`);
- the endpoint's host name is resolved and EVERY address must be allowed:
  loopback, link-local, unspecified and multicast addresses are refused
  unless a configured network lies inside that range (e.g. `127.0.0.0/8`
  in the local dev environment); when networks are configured
  (`NICOTASK_WORKER_BMC_NETWORKS`), other addresses must be inside one;
- every request of a driver goes to the endpoint's own scheme://host:port
  (redfish.py checks each request, redirects and `@odata.id` links included).

The check runs again before every request, so a name that starts resolving
elsewhere is caught at the next request (a rebinding between the check and
the connection itself is not: pin BMCs by address, or use NetworkPolicies).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Refused unless a configured network lies inside the range.
SPECIAL_RANGES: tuple[tuple[str, Network], ...] = (
    ("loopback", ipaddress.ip_network("127.0.0.0/8")),
    ("loopback", ipaddress.ip_network("::1/128")),
    ("link-local", ipaddress.ip_network("169.254.0.0/16")),
    ("link-local", ipaddress.ip_network("fe80::/10")),
    ("unspecified", ipaddress.ip_network("0.0.0.0/32")),
    ("unspecified", ipaddress.ip_network("::/128")),
    ("multicast", ipaddress.ip_network("224.0.0.0/4")),
    ("multicast", ipaddress.ip_network("ff00::/8")),
)


class EndpointRefused(Exception):
    """The endpoint (or a request's target) is outside the policy. Not retryable."""


class EndpointUnresolvable(Exception):
    """The endpoint's host name does not resolve (may be transient)."""


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def origin_of(url: str) -> Origin:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise EndpointRefused(f"{url!r} is not an http(s) URL with a host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise EndpointRefused(f"{url!r} has an invalid port") from exc
    return Origin(scheme, parts.hostname.lower(), port)


def _plain(address: Address) -> Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class EndpointPolicy:
    networks: tuple[Network, ...] = field(default_factory=tuple)

    @classmethod
    def from_cidrs(cls, cidrs: Iterable[str]) -> EndpointPolicy:
        try:
            nets = tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs)
        except ValueError as exc:
            raise ValueError(f"NICOTASK_WORKER_BMC_NETWORKS: {exc}") from exc
        return cls(nets)

    def refusal(self, address: Address) -> str | None:
        """Why `address` may not be a BMC, or None when it may."""
        address = _plain(address)
        for kind, special in SPECIAL_RANGES:
            if address.version == special.version and address in special:
                explicit = any(
                    n.version == special.version and address in n and n.subnet_of(special)  # type: ignore[arg-type]
                    for n in self.networks
                )
                if explicit:
                    return None
                return f"{address} is a {kind} address (not allowed for BMCs)"
        if not self.networks or any(address in n for n in self.networks):
            return None
        allowed = ", ".join(str(n) for n in self.networks)
        return f"{address} is outside the allowed BMC networks ({allowed})"

    def resolve(self, origin: Origin) -> list[Address]:
        """Every address the host resolves to; EndpointRefused if any is not allowed."""
        try:
            infos = socket.getaddrinfo(origin.host, origin.port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise EndpointUnresolvable(f"cannot resolve {origin.host}: {exc}") from exc
        found = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}
        addresses = sorted(found, key=str)
        for address in addresses:
            why = self.refusal(address)
            if why is not None:
                raise EndpointRefused(f"BMC endpoint {origin} refused: {why}")
        return addresses

    def check_endpoint(self, endpoint: str, *, allow_http: bool) -> Origin:
        """The endpoint's origin after the scheme and address checks (resolves the host)."""
        origin = origin_of(endpoint)
        if origin.scheme == "http" and not allow_http:
            raise EndpointRefused(
                f"BMC endpoint {endpoint} uses http:// but the rack does not set"
                " spec.tls.allowInsecureHttp: true"
            )
        self.resolve(origin)
        return origin
