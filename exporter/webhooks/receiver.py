"""The webhook listener's WSGI app: checks a delivery (path, method, size, signature, JSON) and
answers at once — 2xx for every valid event, the recording happens after the answer (GitHub gives
up after 10 s and does not redeliver by itself). Every answer is counted."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from exporter.logging import get_logger
from exporter.telemetry import Telemetry
from exporter.webhooks.signature import verify

log = get_logger(__name__)
StartResponse = Callable[..., Any]
FORWARDED = "x-cipe-forwarded"
# Label values come from the request: only these are kept, anything else is "other".
EVENTS = frozenset({"workflow_job", "workflow_run", "ping"})
ACTIONS = frozenset(
    {"queued", "waiting", "in_progress", "completed", "requested", "requested_action", ""}
)


@dataclass(frozen=True)
class _Answer:
    status: str
    outcome: str = "rejected"
    action: str = ""


@dataclass(frozen=True)
class Delivery:
    event: str
    action: str
    payload: dict[str, Any]
    body: bytes
    headers: Mapping[str, str]

    @property
    def forwarded(self) -> bool:
        return FORWARDED in self.headers


def event_label(event: str | None) -> str:
    return event if event in EVENTS else "other"


def action_label(action: object) -> str:
    return action if isinstance(action, str) and action in ACTIONS else "other"


class WebhookReceiver:
    """`route(delivery)` decides what happens next and returns the outcome known now: `queued`
    (recorded or forwarded later, counted then), `ignored`, `failed`, or `rejected` (a 400)."""

    def __init__(
        self,
        path: str,
        secret: bytes,
        max_body_bytes: int,
        telemetry: Telemetry,
        route: Callable[[Delivery], str],
    ) -> None:
        self.path = path
        self.secret = secret
        self.max_body_bytes = max_body_bytes
        self.telemetry = telemetry
        self.route = route

    def count(self, event: str, action: str, outcome: str) -> None:
        self.telemetry.webhook_events.labels(
            event_label(event), action_label(action), outcome
        ).inc()

    def rejected_by_server(self, status: int, headers: dict[str, str]) -> None:
        """A request the HTTP server answered itself (too large, malformed)."""
        self.count(headers.get("x-github-event", ""), "", "rejected")
        log.warning("webhook refused", status=status)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        headers = {
            key[5:].replace("_", "-").lower(): str(value)
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        event = headers.get("x-github-event", "")
        answer = self._answer(environ, headers, event)
        if answer.outcome != "queued":
            self.count(event, answer.action, answer.outcome)
        start_response(answer.status, [("Content-Type", "text/plain; charset=utf-8")])
        return [answer.status.split(" ", 1)[1].encode() + b"\n"]

    def _answer(self, environ: dict[str, Any], headers: dict[str, str], event: str) -> _Answer:
        refused = self._refusal(environ)
        if refused is not None:
            return refused
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        if not verify(self.secret, body, headers.get("x-hub-signature-256")):
            log.warning(
                "webhook refused: no valid X-Hub-Signature-256", github_event=event_label(event)
            )
            return _Answer("401 Unauthorized")
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            payload = None
        if not isinstance(payload, dict):
            return _Answer("400 Bad Request")
        action = str(payload.get("action", ""))
        outcome = self.route(Delivery(event, action, payload, body, headers))
        if outcome == "rejected":
            return _Answer("400 Bad Request", action=action)
        return _Answer("202 Accepted" if outcome == "queued" else "200 OK", outcome, action)

    def _refusal(self, environ: dict[str, Any]) -> _Answer | None:
        """What is refused before the body is read: another path, another method, too large."""
        if environ.get("PATH_INFO") != self.path:
            return _Answer("404 Not Found")
        if environ.get("REQUEST_METHOD") != "POST":
            return _Answer("405 Method Not Allowed")
        if int(environ.get("CONTENT_LENGTH") or 0) > self.max_body_bytes:
            return _Answer("413 Content Too Large")
        return None
