"""A small threaded HTTP server for the emulators, with fault injection and request counting.

Each emulator is an ``App``: a callable taking a :class:`Request` and returning a :class:`Response`.
The server adds what both emulators share: latency, dropped connections, error rates (through
:class:`Faults`), and counters. Only the standard library is used.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def arg(self, name: str, default: str | None = None) -> str | None:
        """A query parameter, matched case-insensitively on the name."""
        for key, values in self.query.items():
            if key.lower() == name.lower() and values:
                return values[0]
        return default

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without answering
    delay: float = 0.0  # seconds to wait before answering
    hang: threading.Event | None = None  # accept, never answer: wait for this event, then close


def json_response(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(obj, default=str).encode("utf-8")
    hdrs = {"Content-Type": "application/json;charset=UTF-8"}
    hdrs.update(headers or {})
    return Response(status=status, body=body, headers=hdrs)


def text_response(status: int, text: str, content_type: str = "text/plain; charset=utf-8",
                  headers: dict[str, str] | None = None) -> Response:
    hdrs = {"Content-Type": content_type}
    hdrs.update(headers or {})
    return Response(status=status, body=text.encode("utf-8"), headers=hdrs)


App = Callable[[Request], Response]


@dataclass
class Faults:
    """Fault injection shared by both emulators; set through each emulator's admin interface.

    ``error_rate`` is the chance that a request fails with one of ``statuses`` (the emulator renders
    the body: a QBO 429 is XML, for instance); ``drop_rate`` the chance the connection is closed
    with no answer; ``slow_rate`` the chance the answer waits ``slow_seconds`` (past a client's
    timeout); ``hang_rate`` the chance the request is read and never answered (the connection stays
    open until the faults are cleared); ``latency`` is added to every answer. ``only_paths``, when
    set, limits every fault to requests whose path starts with one of them (``/oauth2`` for QBO's
    token endpoint, ``/realms`` for ION's). ``seed`` makes a run replayable.
    """

    error_rate: float = 0.0
    statuses: tuple[int, ...] = (500, 502, 503, 429)
    drop_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 5.0
    latency: float = 0.0
    hang_rate: float = 0.0
    only_paths: tuple[str, ...] = ()
    fail_next: list[int] = field(default_factory=list)  # statuses (0 = drop) for the next requests
    seed: int | None = None
    injected: dict[str, int] = field(default_factory=dict)
    _rng: random.Random = field(default_factory=random.Random, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _hung: threading.Event = field(default_factory=threading.Event, repr=False)

    def configure(self, **settings: Any) -> None:
        with self._lock:
            for key, value in settings.items():
                if key == "statuses":
                    value = tuple(int(s) for s in value)
                elif key == "only_paths":
                    value = tuple(str(p) for p in value)
                elif key == "fail_next":
                    value = [int(s) for s in value]
                elif key not in {"seed"}:
                    value = float(value)
                if key.startswith("_") or not hasattr(self, key) or key == "injected":
                    msg = f"unknown fault setting {key!r}"
                    raise ValueError(msg)
                setattr(self, key, value)
            if not self.hang_rate:
                self._release_hung()
            if "seed" in settings:
                self._rng = random.Random(settings["seed"])

    def clear(self) -> None:
        with self._lock:
            self.error_rate = self.drop_rate = self.slow_rate = self.latency = self.hang_rate = 0.0
            self.fail_next = []
            self.only_paths = ()
            self._release_hung()

    def _release_hung(self) -> None:
        self._hung.set()  # the requests held open so far are closed (without an answer)
        self._hung = threading.Event()

    def hang(self) -> threading.Event:
        """The event a never-answered request waits for (set when the hang fault is lifted)."""
        with self._lock:
            return self._hung

    def draw(self, path: str = "") -> tuple[str, int] | None:
        """Decide the fault for one request: ("drop", 0), ("slow", 0), ("hang", 0), ("status", code) or None."""
        with self._lock:
            if self.only_paths and not path.startswith(self.only_paths):
                return None
            if self.fail_next:
                code = self.fail_next.pop(0)
                kind = "drop" if code == 0 else "status"
                self.injected[kind] = self.injected.get(kind, 0) + 1
                return (kind, code)
            roll = self._rng.random()
            if roll < self.drop_rate:
                self.injected["drop"] = self.injected.get("drop", 0) + 1
                return ("drop", 0)
            roll -= self.drop_rate
            if roll < self.slow_rate:
                self.injected["slow"] = self.injected.get("slow", 0) + 1
                return ("slow", 0)
            roll -= self.slow_rate
            if roll < self.hang_rate:
                self.injected["hang"] = self.injected.get("hang", 0) + 1
                return ("hang", 0)
            roll -= self.hang_rate
            if roll < self.error_rate:
                code = self._rng.choice(self.statuses)
                self.injected[str(code)] = self.injected.get(str(code), 0) + 1
                return ("status", code)
            return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's delayed
    # ACK (~40 ms a request on Linux), which would swamp every timing the benchmarks take.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the emulators count requests instead

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        try:
            response = self.server.app(request)
        except Exception as exc:  # noqa: BLE001 - an emulator bug must answer 500, not hang the client
            response = text_response(500, f"emulator error: {type(exc).__name__}: {exc}")
        if response.delay > 0:
            time.sleep(response.delay)
        if response.hang is not None:
            response.hang.wait(600)  # the client's timeout ends it first; lifting the fault ends it here
        if response.drop or response.hang is not None:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        try:
            self.send_response(response.status)
            for key, value in response.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (timed out, or was killed)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        super().__init__(address, _Handler)


class Server:
    """Serve one App on 127.0.0.1 in a background thread. ``port=0`` picks a free port."""

    def __init__(self, app: App, host: str = "127.0.0.1", port: int = 0) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            msg = "the sandbox serves loopback only"
            raise ValueError(msg)
        self._httpd = _Server((host, port), app)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=f"sandbox:{port}",
            daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
