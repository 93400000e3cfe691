"""Sharded: an organisation hook sends every event to one URL, so a replica receives events of
repositories another shard owns. Those are forwarded to the owner (`forward_url` with {index}),
unchanged and still signed by GitHub with the shared secret, marked as forwarded so they are
never forwarded again; after the answer to GitHub (202, counted once the owner answered), with
bounded retries. One that can't be delivered is found by the owner's reconciler."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import replace
from functools import partial

import httpx

from exporter.logging import get_logger
from exporter.sources.http import RetryPolicy, deadline, make_client
from exporter.webhooks.receiver import FORWARDED, Delivery

log = get_logger(__name__)
_KEPT_HEADERS = ("x-github-event", "x-github-delivery", "x-hub-signature-256", "content-type")
Count = Callable[[str, str, str], None]


class Forwarder:
    """Counts each delivery once it is settled: `forwarded` when the owner accepted it (2xx),
    `failed` when not (logged); the thread survives anything a delivery provokes."""

    def __init__(
        self,
        url_template: str,
        shard: int,
        count: Count,
        capacity: int = 1_000,
        http: httpx.Client | None = None,
    ) -> None:
        self.url_template = url_template
        self.shard = shard
        self.count = count
        self.http = http or make_client(timeout=5.0)
        self.retry = RetryPolicy(max_retries=3, backoff=0.5, max_wait=5.0)
        self._queue: queue.Queue[tuple[int, Delivery] | None] = queue.Queue(capacity)
        self._thread = threading.Thread(target=self._work, name="webhook-forward", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.http.close()

    def __call__(self, owner: int, delivery: Delivery) -> bool:
        try:
            # Only the body and headers are sent on: the parsed payload is not kept queued.
            self._queue.put_nowait((owner, replace(delivery, payload={})))
        except queue.Full:
            return False
        return True

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            owner, delivery = item
            self.count(delivery.event, delivery.action, self._forward(owner, delivery))

    def _forward(self, owner: int, delivery: Delivery) -> str:
        """The outcome; never raises (an exception would end the thread, and every later event
        would wait in the queue unsent)."""
        try:
            status = self.retry.call(_retryable, partial(self._send, owner, delivery))
        except httpx.HTTPError as exc:
            log.warning(
                "webhook not forwarded; the owner's reconciler will record it",
                shard=owner,
                error=type(exc).__name__,
            )
            return "failed"
        except Exception as exc:  # the thread must survive anything
            log.exception(
                "webhook forwarding crashed; the owner's reconciler will record it",
                shard=owner,
                error=type(exc).__name__,
            )
            return "failed"
        if not 200 <= status < 300:
            log.warning(
                "webhook refused by its owner; the owner's reconciler will record it",
                shard=owner,
                status=status,
            )
            return "failed"
        return "forwarded"

    def _send(self, owner: int, delivery: Delivery) -> int:
        headers = {k: v for k, v in delivery.headers.items() if k in _KEPT_HEADERS}
        headers[FORWARDED] = str(self.shard)
        with deadline(10.0):
            response = self.http.post(
                self.url_template.format(index=owner), content=delivery.body, headers=headers
            )
        if response.status_code >= 500:
            response.raise_for_status()
        return response.status_code


def _retryable(exc: Exception) -> bool:
    return isinstance(exc, httpx.TransportError | httpx.HTTPStatusError)
