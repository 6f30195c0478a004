"""Git's smart HTTP protocol on loopback: `git http-backend` behind a tiny HTTP server.

Flux's source-controller clones only http(s):// and ssh:// URLs (its GitRepository
schema refuses file://, and go-git speaks no git://), so the GitOps tests serve the
bare repositories of a folder this way, read-only (no push over HTTP: the tests push
to the bare repository on disk).
``python -m nicotask_dev.devenv.githttp --root DIR --port N`` runs it as a process.
"""

from __future__ import annotations

import argparse
import gzip
import os
import subprocess
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .ports import LOOPBACK


def git_http_backend() -> str:
    exec_path = subprocess.run(
        ["git", "--exec-path"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return str(Path(exec_path) / "git-http-backend")


def cgi_environ(
    root: Path, method: str, path: str, content_type: str, content_length: int
) -> dict[str, str]:
    """The CGI variables git http-backend reads (it serves `root`/PATH_INFO)."""
    path_info, _, query = path.partition("?")
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GIT_PROJECT_ROOT": str(root),
        "GIT_HTTP_EXPORT_ALL": "1",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(root),
        "REQUEST_METHOD": method,
        "PATH_INFO": path_info,
        "QUERY_STRING": query,
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(content_length),
        "REMOTE_ADDR": LOOPBACK,
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
    }


def parse_cgi(output: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body) of a CGI response (`Status: 404 Not Found` sets the code)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        head, found, body = output.partition(sep)
        if found:
            break
    else:
        head, body = output, b""
    status, headers = 200, []
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.split()[0])
        elif name:
            headers.append((name.strip(), value.strip()))
    return status, headers, body


class _Handler(BaseHTTPRequestHandler):
    root: Path
    backend: str

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("Content-Encoding") == "gzip":  # git's client gzips big requests
            body = gzip.decompress(body)
        env = cgi_environ(
            self.root, self.command, self.path, self.headers.get("Content-Type", ""), len(body)
        )
        proc = subprocess.run([self.backend], input=body, env=env, capture_output=True)
        status, headers, out = parse_cgi(proc.stdout)
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = _serve
    do_POST = _serve

    def log_message(self, format: str, *args: object) -> None:
        print(f"{self.address_string()} {format % args}", flush=True)


def serve(root: Path, port: int) -> None:
    handler = type("Handler", (_Handler,), {"root": root, "backend": git_http_backend()})
    server = ThreadingHTTPServer((LOOPBACK, port), handler)
    print(f"serving {root} on http://{LOOPBACK}:{port}/", flush=True)
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    serve(args.root.resolve(), args.port)


if __name__ == "__main__":
    main()
