"""A small BMC driver over sushy: power state, resets, allowed resets.

Every method makes blocking HTTP requests; activities call them through
asyncio.to_thread while they keep heartbeating. sushy's exceptions become
our own typed errors: BmcUnreachable (network), BmcAuthFailed (401/403),
BmcNotFound (no such system), BmcRefused (the endpoint policy of
bmc_policy.py said no: checked for every request, which only ever goes to the
endpoint's own scheme://host:port), BmcError (anything else the BMC answered).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import requests
import sushy
from requests.adapters import HTTPAdapter
from sushy import auth as sushy_auth
from sushy import connector as sushy_connector
from sushy import exceptions as sushy_exc
from sushy.resources import constants as res_cons

from nicotask.api import PowerAction, PowerState
from nicotask.bmc_policy import (
    EndpointPolicy,
    EndpointRefused,
    EndpointUnresolvable,
    Origin,
    origin_of,
)

T = TypeVar("T")


class BmcError(Exception):
    """The BMC answered, but not as we needed."""

    def __init__(self, endpoint: str, message: str) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.message = message


class BmcUnreachable(BmcError):
    """No HTTP answer: connection refused, DNS, TLS handshake, timeout."""


class BmcAuthFailed(BmcError):
    """The BMC refused the credentials (401 or 403)."""


class BmcNotFound(BmcError):
    """The BMC has no such ComputerSystem (or not exactly one when none was named)."""


class BmcRefused(BmcError):
    """The endpoint policy refused the request (bmc_policy.py); never retried."""


class PinnedAdapter(HTTPAdapter):
    """Sends a request only to the BMC's own origin, and only to allowed addresses.

    Mounted on the driver's session, it sees every request sushy makes,
    including redirects and absolute `@odata.id` links: anything aimed at
    another scheme://host:port is refused before a connection is made, so
    the credentials go nowhere else.
    """

    def __init__(self, origin: Origin, policy: EndpointPolicy) -> None:
        super().__init__(max_retries=0)
        self.origin = origin
        self.policy = policy

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        target = origin_of(request.url or "")
        if target != self.origin:
            raise EndpointRefused(
                f"refused a request to {target}: the BMC's endpoint is {self.origin}"
            )
        self.policy.resolve(target)
        return super().send(request, *args, **kwargs)


def pinned_session(origin: Origin, policy: EndpointPolicy) -> requests.Session:
    session = requests.Session()
    session.max_redirects = 3
    adapter = PinnedAdapter(origin, policy)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class PowerDriver(Protocol):
    """What the activities need from a BMC; tests inject fakes."""

    def power_state(self, system_id: str | None) -> PowerState | None: ...

    def reset(self, system_id: str | None, action: PowerAction) -> None: ...

    def allowed_resets(self, system_id: str | None) -> set[PowerAction]: ...


class RedfishDriverFactory(Protocol):
    def __call__(
        self, endpoint: str, username: str, password: str, verify: bool | str
    ) -> PowerDriver: ...


_ERRNO = re.compile(r"\[Errno -?\d+\] [^\"')\]]+")


def _reason(exc: BaseException) -> str:
    """The short cause of a connection failure, e.g. `[Errno 111] Connection refused`."""
    text = str(exc)
    found = _ERRNO.search(text)
    if found:
        return found.group(0).strip()
    for needle in ("Read timed out", "timed out", "CERTIFICATE_VERIFY_FAILED", "SSLError"):
        if needle in text:
            return needle
    return text.splitlines()[0] if text else type(exc).__name__


_POWER_STATES = {
    res_cons.PowerState.ON: PowerState.ON,
    res_cons.PowerState.OFF: PowerState.OFF,
}

_RESETS = {
    PowerAction.ON: res_cons.ResetType.ON,
    PowerAction.FORCE_OFF: res_cons.ResetType.FORCE_OFF,
    PowerAction.GRACEFUL_SHUTDOWN: res_cons.ResetType.GRACEFUL_SHUTDOWN,
    PowerAction.POWER_CYCLE: res_cons.ResetType.POWER_CYCLE,
    PowerAction.FORCE_RESTART: res_cons.ResetType.FORCE_RESTART,
}


class RedfishDriver:
    """One BMC, through sushy. The connection (and session) is opened lazily."""

    def __init__(
        self,
        endpoint: str,
        username: str,
        password: str,
        verify: bool | str = True,
        *,
        read_timeout: float = 30.0,
        connect_timeout: float = 5.0,
        policy: EndpointPolicy | None = None,
        allow_http: bool = True,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._policy = policy or EndpointPolicy()
        self._allow_http = allow_http
        self._username = username
        self._password = password
        self._verify = verify
        self._read_timeout = read_timeout
        self._connect_timeout = connect_timeout
        self._root: Any = None
        self._lock = threading.Lock()

    # ---- plumbing ----------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except EndpointRefused as exc:
            raise BmcRefused(self.endpoint, f"BMC {self.endpoint}: {exc}") from exc
        except EndpointUnresolvable as exc:
            raise BmcUnreachable(self.endpoint, f"BMC {self.endpoint} unreachable: {exc}") from exc
        except sushy_exc.AccessError as exc:
            raise BmcAuthFailed(
                self.endpoint, f"BMC {self.endpoint} refused the credentials ({exc.status_code})"
            ) from exc
        except sushy_exc.ResourceNotFoundError as exc:
            raise BmcNotFound(self.endpoint, f"BMC {self.endpoint}: {what}: not found") from exc
        except sushy_exc.ConnectionError as exc:
            raise BmcUnreachable(
                self.endpoint, f"BMC {self.endpoint} unreachable: {_reason(exc)}"
            ) from exc
        except sushy_exc.SushyError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BmcError(self.endpoint, f"BMC {self.endpoint}: {what}: {first}") from exc

    def _connect(self) -> Any:
        with self._lock:
            if self._root is None:
                self._root = self._call("connect", self._open)
            return self._root

    def _open(self) -> Any:
        origin = self._policy.check_endpoint(self.endpoint, allow_http=self._allow_http)
        connector = sushy_connector.Connector(
            self.endpoint,
            verify=self._verify,
            server_side_retries=1,
            server_side_retries_delay=0.1,
            default_request_timeout=self._read_timeout,
            connect_timeout=self._connect_timeout,
        )
        # Every request of this driver, whatever URL sushy builds, goes through
        # the pinned adapter (the connector keeps its session's headers).
        session = pinned_session(origin, self._policy)
        session.headers.update(connector._session.headers)
        connector._session = session
        return sushy.Sushy(
            self.endpoint,
            # Basic auth: no Redfish session to leak per request (BMCs cap them).
            auth=sushy_auth.BasicAuth(self._username, self._password),
            verify=self._verify,
            connector=connector,
            public_connector=pinned_session(origin, self._policy),
            server_side_retries=1,
            server_side_retries_delay=0.1,
        )

    def _system(self, system_id: str | None) -> Any:
        root = self._connect()
        if system_id:
            path = system_id if system_id.startswith("/") else f"/redfish/v1/Systems/{system_id}"
            return self._call(f"system {system_id}", lambda: root.get_system(path))
        members = self._call(
            "systems", lambda: list(root.get_system_collection().members_identities)
        )
        if len(members) != 1:
            raise BmcNotFound(
                self.endpoint,
                f"BMC {self.endpoint} has {len(members)} systems; set redfish.systemId",
            )
        return self._call(f"system {members[0]}", lambda: root.get_system(members[0]))

    # ---- the driver ----------------------------------------------------------

    def power_state(self, system_id: str | None) -> PowerState | None:
        """On or Off; None while the system is transitioning (PoweringOn/Off) or unknown."""
        system = self._system(system_id)
        return _POWER_STATES.get(system.power_state)

    def allowed_resets(self, system_id: str | None) -> set[PowerAction]:
        system = self._system(system_id)
        allowed = self._call("reset types", system.get_allowed_reset_system_values)
        return {ours for ours, theirs in _RESETS.items() if theirs in allowed}

    def reset(self, system_id: str | None, action: PowerAction) -> None:
        system = self._system(system_id)
        reset_type = _RESETS[action]
        self._call(f"reset {action.value}", lambda: system.reset_system(reset_type))

    def close(self) -> None:
        with self._lock:
            self._root = None


def driver_factory(policy: EndpointPolicy) -> RedfishDriverFactory:
    """Drivers whose every request is checked against `policy`."""

    def make(endpoint: str, username: str, password: str, verify: bool | str) -> PowerDriver:
        return RedfishDriver(endpoint, username, password, verify, policy=policy)

    return make
