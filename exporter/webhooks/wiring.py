"""The webhook side of the exporter, put together: the secret, the listener (its own port: only
it is exposed to GitHub), the router, the dispatcher and, when sharded, the forwarder."""

from __future__ import annotations

from collections.abc import Mapping

from exporter.config import Config, ConfigError, WebhooksConfig, parse_listen, read_secret
from exporter.logging import SECRETS, get_logger
from exporter.server import HttpServer, ServerLimits
from exporter.telemetry import Telemetry
from exporter.webhooks.dispatch import Dispatcher, EventHandler, Router
from exporter.webhooks.forward import Forwarder
from exporter.webhooks.receiver import WebhookReceiver

log = get_logger(__name__)
# Shorter secrets can't be told apart from ordinary words by the log scrubber: refused.
MIN_SECRET_LENGTH = 4
# Below this a secret is guessable: accepted (a test hook may use one), with a warning.
GOOD_SECRET_LENGTH = 16


def webhook_secret(hooks: WebhooksConfig, environ: Mapping[str, str]) -> bytes:
    """Raises ConfigError naming the key when the secret is not available."""
    secret = read_secret(
        "github.webhooks", "secret", hooks.secret_file, hooks.secret_env or "", environ
    )
    setting = "secret_file" if hooks.secret_file else "secret_env"
    if len(secret) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"github.webhooks.{setting}: the webhook secret is shorter than "
            f"{MIN_SECRET_LENGTH} characters; use a long random value"
        )
    if len(secret) < GOOD_SECRET_LENGTH:
        log.warning(
            "the webhook secret is short: use a long random value",
            setting=f"github.webhooks.{setting}",
            length=len(secret),
        )
    SECRETS.add(secret)
    return secret.encode()


class Webhooks:
    def __init__(
        self,
        config: Config,
        hooks: WebhooksConfig,
        environ: Mapping[str, str],
        handlers: Mapping[str, EventHandler],
        telemetry: Telemetry,
    ) -> None:
        self.hooks = hooks
        self.dispatcher = Dispatcher(self._count)
        self.forwarder: Forwarder | None = None
        if config.sharding.total > 1 and hooks.forward_url:
            self.forwarder = Forwarder(hooks.forward_url, config.sharding.index, self._count)
        router = Router(config, handlers, self.dispatcher, self.forwarder)
        self.receiver = WebhookReceiver(
            hooks.path, webhook_secret(hooks, environ), hooks.max_body_bytes, telemetry, router
        )
        self.server: HttpServer | None = None

    def _count(self, event: str, action: str, outcome: str) -> None:
        self.receiver.count(event, action, outcome)

    def start(self) -> None:
        host, port = parse_listen(self.hooks.listen)
        # waitress refuses a declared body over its limit before reading it (a 413): one byte
        # above max_body_bytes, so exactly max_body_bytes is accepted.
        limits = ServerLimits(
            threads=4, channel_timeout=10, max_request_body_size=self.hooks.max_body_bytes + 1
        )
        self.server = HttpServer(
            host, port, self.receiver, limits, on_rejected=self.receiver.rejected_by_server
        )
        self.dispatcher.start()
        if self.forwarder is not None:
            self.forwarder.start()
        self.server.start()
        log.info("receiving webhooks", listen=self.server.listen, path=self.hooks.path)

    @property
    def port(self) -> int:
        return self.server.port if self.server is not None else 0

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        self.dispatcher.stop()
        if self.forwarder is not None:
            self.forwarder.stop()
