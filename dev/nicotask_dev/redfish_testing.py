"""A hostile Redfish service for tests: its links point at another host.

    other = LinkingBmc(); bmc = LinkingBmc(links_to=other.url)
    ... drive bmc.url ...; assert other.seen == []
    bmc.close(); other.close()

A tiny threaded HTTP server on loopback: the service root's `Systems` link
goes to `links_to` (any origin), every other path answers an empty
collection. `seen` lists the paths requested, so a test can prove that no
request (and so no credential) reached the other host.
"""

from __future__ import annotations

import http.server
import json
import threading
from typing import Any


class _Handler(http.server.BaseHTTPRequestHandler):
    links_to = ""
    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.path)
        if self.path.rstrip("/") == "/redfish/v1":
            body: dict[str, Any] = {
                "@odata.id": "/redfish/v1/",
                "Id": "RootService",
                "RedfishVersion": "1.0.0",
                "Systems": {"@odata.id": f"{self.links_to}/redfish/v1/Systems"},
            }
        else:
            body = {"@odata.id": self.path, "Members": [], "Members@odata.count": 0}
        raw = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


class LinkingBmc:
    """A Redfish root on 127.0.0.1:<free port> whose Systems link points at `links_to`."""

    def __init__(self, links_to: str = "") -> None:
        self.seen: list[str] = []
        handler = type("Handler", (_Handler,), {"links_to": links_to, "seen": self.seen})
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
