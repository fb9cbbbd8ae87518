"""A local HTTP receiver on 127.0.0.1 that records every request (alert payloads in tests).

It answers like the services the alert clients expect: Slack Web API calls (``…/chat.*``)
get ``{"ok": true}``, anything else gets PagerDuty's Events API v2 ``202`` reply. Nothing
leaves the machine: the clients are pointed at ``receiver.url``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


@dataclass(frozen=True)
class Request:
    """One request as received: method, path, lower-case headers, raw body."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON (or a form as a dict of single values)."""
        if self.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}
        return json.loads(self.body or b"null")


class Receiver:
    """``with Receiver() as r:`` serves on ``r.url``; ``r.requests`` lists what arrived."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("content-length") or 0)
                request = Request(
                    "POST",
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                )
                receiver.requests.append(request)
                if "/chat." in self.path:
                    status, reply = 200, {"ok": True, "channel": "C0", "ts": "1.0"}
                else:
                    status, reply = 202, {"status": "success", "message": "Event processed"}
                body = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def alert_environment(receiver: Receiver) -> dict[str, str]:
    """Every alert variable set, with both services pointed at ``receiver`` (127.0.0.1)."""
    from notes_pipeline.core import alerts

    return {
        alerts.PAGERDUTY_ROUTING_KEY: "routing-key-test",
        alerts.PAGERDUTY_EVENTS_URL: f"{receiver.url}/v2/enqueue",
        alerts.SLACK_TOKEN: "xoxb-test",
        alerts.SLACK_CHANNEL: "#notes-migration",
        alerts.SLACK_API_URL: f"{receiver.url}/api/",
    }
