"""A small HTTP proxy in front of the real judge server: counts requests, measures how many
are in flight at once, and injects faults into chosen chat-completion requests.

Faults are consumed one per ``POST /v1/chat/completions``, in arrival order:

* ``("status", code, headers)`` — answer ``code`` with an OpenAI-style error body
* ``("delay", seconds)`` — wait, then forward (a client with a shorter timeout gives up)
* ``("drop",)`` — close the connection without any response
* ``("malformed",)`` — 200 with a ``application/json`` body that is not JSON
* ``("pass",)`` — forward untouched
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")  # http://host:port (no /v1)
        self.faults: list[tuple[Any, ...]] = []
        self.chat_requests = 0
        self.forwarded = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.hold_s = 0.0  # extra wait of every forwarded request (to make overlap visible)
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                r = httpx.get(proxy.upstream + self.path, timeout=30)
                self._send(r.status_code, r.content, r.headers.get("content-type", "application/json"))

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with proxy._lock:
                    proxy.chat_requests += 1
                    fault = proxy.faults.pop(0) if proxy.faults else ("pass",)
                    proxy.bodies.append(json.loads(body or b"{}"))
                    proxy.in_flight += 1
                    proxy.max_in_flight = max(proxy.max_in_flight, proxy.in_flight)
                try:
                    self._handle(fault, body)
                finally:
                    with proxy._lock:
                        proxy.in_flight -= 1

            def _handle(self, fault: tuple[Any, ...], body: bytes) -> None:
                kind = fault[0]
                if kind == "status":
                    code, headers = fault[1], (fault[2] if len(fault) > 2 else {})
                    payload = json.dumps({"error": {"message": f"injected {code}",
                                                    "type": "injected", "code": code}}).encode()
                    self._send(code, payload, "application/json", headers)
                    return
                if kind == "drop":
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                if kind == "malformed":
                    self._send(200, b'{"id": "x", "choices": [', "application/json")
                    return
                if kind == "delay":
                    time.sleep(fault[1])
                if proxy.hold_s:
                    time.sleep(proxy.hold_s)
                r = httpx.post(proxy.upstream + self.path, content=body,
                               headers={"content-type": "application/json"}, timeout=120)
                with proxy._lock:
                    proxy.forwarded += 1
                self._send(r.status_code, r.content, r.headers.get("content-type", "application/json"))

            def _send(self, code: int, payload: bytes, ctype: str,
                      headers: dict[str, str] | None = None) -> None:
                try:
                    self.send_response(code)
                    self.send_header("content-type", ctype)
                    self.send_header("content-length", str(len(payload)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def reset(self) -> None:
        with self._lock:
            self.faults.clear()
            self.chat_requests = self.forwarded = self.max_in_flight = 0
            self.hold_s = 0.0
            self.bodies.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
