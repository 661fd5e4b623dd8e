"""Slack delivery that never fails the work it reports on.

Messages go through ``slack_sdk``: a bot token (``chat.postMessage``) and/or an incoming webhook
(``WebhookClient``), each with slack_sdk's own retry handlers. Every text is redacted first. A
message is built by ``messages.common.slack_message``, which escapes its text for mrkdwn; a plain
string posted here is escaped the same way.
With neither configured, messages go to the log: as a warning each, or as information when the
one warning was given elsewhere (``make dev`` gives it once at start-up on a development machine).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import (
    BackoffRetryIntervalCalculator,
)
from slack_sdk.webhook import WebhookClient

from ops_platform.lib.formatting import slack_escape
from ops_platform.lib.redact import Redactor

DEFAULT_TIMEOUT_SECONDS = 10


def retry_handlers(max_retries: int = 3, backoff_factor: float = 0.5):
    interval = BackoffRetryIntervalCalculator(backoff_factor=backoff_factor)
    return [
        ConnectionErrorRetryHandler(max_retry_count=max_retries, interval_calculator=interval),
        ServerErrorRetryHandler(max_retry_count=max_retries, interval_calculator=interval),
        RateLimitErrorRetryHandler(max_retry_count=max_retries),
    ]


def slack_configured(environ: Mapping[str, str]) -> bool:
    """Whether messages have somewhere to go: a webhook, or a bot token with its channel."""
    def present(name: str) -> bool:
        return bool(environ.get(name, "").strip())

    return present("SLACK_WEBHOOK_URL") or (present("SLACK_BOT_TOKEN") and present("SLACK_CHANNEL"))


def make_web_client(token: str, base_url: str | None = None, timeout: int = DEFAULT_TIMEOUT_SECONDS,
                    max_retries: int = 3) -> WebClient:
    kwargs = {"base_url": base_url} if base_url else {}
    return WebClient(token=token, timeout=timeout, retry_handlers=retry_handlers(max_retries), **kwargs)


def make_webhook_client(url: str, timeout: int = DEFAULT_TIMEOUT_SECONDS, max_retries: int = 3) -> WebhookClient:
    return WebhookClient(url, timeout=timeout, retry_handlers=retry_handlers(max_retries))


@dataclass
class SlackMessage:
    text: str
    blocks: list[dict] | None = None


@dataclass
class DeliveryReport:
    delivered: list[str]
    errors: list[str]

    @property
    def ok(self) -> bool:
        return not self.errors


class SlackNotifier:
    def __init__(
        self,
        *,
        web_client: WebClient | None = None,
        channel: str | None = None,
        webhook_client: WebhookClient | None = None,
        redactor: Redactor | None = None,
        log: logging.Logger | None = None,
        warn_when_unconfigured: bool = True,
    ):
        self.web_client = web_client if channel else None
        self.warn_when_unconfigured = warn_when_unconfigured
        self.channel = channel
        self.webhook_client = webhook_client
        self.redactor = redactor or Redactor.from_environ()
        self.log = log or logging.getLogger("ops_platform.slack")

    @property
    def configured(self) -> bool:
        return bool(self.web_client or self.webhook_client)

    def _redact_blocks(self, value):
        """Every leaf string of the blocks, redacted on its own. (Redacting their JSON text would
        miss a secret that JSON escapes: one with a quote, a backslash or a non-ASCII letter.)"""
        if isinstance(value, str):
            return self.redactor(value)
        if isinstance(value, list):
            return [self._redact_blocks(item) for item in value]
        if isinstance(value, dict):
            return {key: self._redact_blocks(item) for key, item in value.items()}
        return value

    def post(self, message: SlackMessage | str) -> DeliveryReport:
        """Deliver to every configured destination. Never raises."""
        if isinstance(message, str):
            message = SlackMessage(slack_escape(message))
        text = self.redactor(message.text)
        blocks = self._redact_blocks(message.blocks)
        if not self.configured:
            if self.warn_when_unconfigured:
                self.log.warning("Slack is not configured (set SLACK_WEBHOOK_URL or SLACK_BOT_TOKEN + "
                                 "SLACK_CHANNEL); message: %s", text)
            else:
                self.log.info("Slack is not configured; message: %s", text)
            return DeliveryReport([], [])
        report = DeliveryReport([], [])
        attempts: list[tuple[str, Callable[[], None]]] = []
        if self.web_client:
            attempts.append(("chat.postMessage", lambda: self.web_client.chat_postMessage(
                channel=self.channel, text=text, blocks=blocks)))
        if self.webhook_client:
            def send_webhook():
                response = self.webhook_client.send(text=text, blocks=blocks)
                if response.status_code != 200:
                    raise RuntimeError(f"webhook answered HTTP {response.status_code}")
            attempts.append(("webhook", send_webhook))
        for name, attempt in attempts:
            try:
                attempt()
                report.delivered.append(name)
            except Exception as error:  # noqa: BLE001 - Slack trouble must never fail the work
                reason = self.redactor(f"{type(error).__name__}: {error}").splitlines()[0][:300]
                report.errors.append(f"{name}: {reason}")
                self.log.warning("Slack delivery via %s failed after retries: %s", name, reason)
        return report


def notifier_from_environ(environ: Mapping[str, str] | None = None,
                          log: logging.Logger | None = None) -> SlackNotifier:
    """The notifier the Slack variables describe, for work outside a Dagster run (the Dagster
    resource ``OpsSlackResource`` builds the same from the same variables)."""
    environ = os.environ if environ is None else environ
    token, channel, base_url, webhook = (environ.get(name, "").strip() or None for name in (
        "SLACK_BOT_TOKEN", "SLACK_CHANNEL", "SLACK_API_URL", "SLACK_WEBHOOK_URL"))
    return SlackNotifier(web_client=make_web_client(token, base_url) if token and channel else None, channel=channel,
                         webhook_client=make_webhook_client(webhook) if webhook else None,
                         redactor=Redactor.from_environ(environ), log=log)
