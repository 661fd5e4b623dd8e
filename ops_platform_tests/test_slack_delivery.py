"""Slack delivery through the real slack_sdk clients against the Slack-compatible test server."""

from __future__ import annotations

import logging

from ops_platform.defs.resources import OpsSlackResource
from ops_platform_tests.conftest import DB_PASSWORD, SLACK_TOKEN


def test_bot_token_and_webhook_both_deliver(slack_resource, slack_server):
    report = slack_resource.notifier().post("hello")
    assert report.ok and report.delivered == ["chat.postMessage", "webhook"]
    assert slack_server.texts() == ["hello", "hello"]
    bot = slack_server.messages()[0]
    assert bot.path == "/api/chat.postMessage" and bot.payload["channel"] == "#ops"
    assert bot.headers.get("Authorization") == f"Bearer {SLACK_TOKEN}"


def test_unconfigured_slack_logs_the_message_with_a_warning(caplog):
    caplog.set_level(logging.WARNING)
    report = OpsSlackResource().notifier(logging.getLogger("test")).post("backup done")
    assert report.ok and report.delivered == []
    assert len(caplog.records) == 1
    assert "Slack is not configured" in caplog.records[0].getMessage()
    assert "backup done" in caplog.records[0].getMessage()


def test_unconfigured_slack_on_a_development_machine_logs_the_message_without_a_warning(caplog, monkeypatch):
    """make dev says once at start-up that Slack is not set; each run then logs its message as information."""
    monkeypatch.delenv("PRODUCTION_DATABASE_URL")
    monkeypatch.delenv("STAGING_DATABASE_URL")
    caplog.set_level(logging.INFO)
    report = OpsSlackResource().notifier(logging.getLogger("test")).post("backup done")
    assert report.ok and report.delivered == []
    [record] = caplog.records
    assert record.levelno == logging.INFO and record.getMessage() == "Slack is not configured; message: backup done"


def test_token_without_channel_uses_only_the_webhook(slack_server):
    slack = OpsSlackResource(token=SLACK_TOKEN, base_url=slack_server.api_url, webhook_url=slack_server.webhook_url)
    assert slack.notifier().post("x").delivered == ["webhook"]


def test_message_text_is_redacted_before_it_leaves(slack_resource, slack_server):
    slack_resource.notifier().post(f"failed: postgresql://ops:{DB_PASSWORD}@db/app token=abc123secret")
    body = slack_server.all_bodies()
    assert DB_PASSWORD not in body and "abc123secret" not in body and "ops:***@db" in body


def test_stalled_slack_gives_up_after_its_timeout(slack_server):
    import time

    slack_server.delay_seconds = 3
    slack = OpsSlackResource(webhook_url=slack_server.webhook_url, timeout_seconds=1, max_retries=0)
    started = time.monotonic()
    report = slack.notifier().post("x")
    assert not report.ok and time.monotonic() - started < 2.5


# Secrets whose JSON form differs from their plain form: a quote, a backslash, a non-ASCII letter.
QUOTED_PASSWORD = 'pw"Quo\\te-é-Zr81secret'
QUOTED_TOKEN = 'tok\\en"é-Qm42secret'


def _encodings(secret: str) -> set[str]:
    """Every form a secret can take in a request body: plain, JSON-escaped (ASCII or not), URL-encoded."""
    import json
    from urllib.parse import quote, quote_plus

    forms = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    forms |= {quote(form, safe="") for form in list(forms)} | {quote_plus(form) for form in list(forms)}
    return forms


def test_secrets_that_json_escapes_are_redacted_in_every_leaf_of_the_blocks(slack_resource, slack_server,
                                                                           monkeypatch):
    from urllib.parse import quote

    from ops_platform.lib.messages.common import code_block, slack_message

    monkeypatch.setenv("PRODUCTION_DATABASE_URL",
                       f"postgresql://app:{quote(QUOTED_PASSWORD, safe='')}@db.example.com:5432/app")
    monkeypatch.setenv("DEPLOY_HOOK_TOKEN", QUOTED_TOKEN)
    message = slack_message([f":x: *Backup failed*: password {QUOTED_PASSWORD} rejected",
                             code_block(f"pg_dump: error: FATAL: password \"{QUOTED_PASSWORD}\"\n"
                                        f"hook answered 401 for {QUOTED_TOKEN}")],
                            link="http://dagster.example.com/runs/1")
    message.blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": QUOTED_TOKEN},
                                                           {"type": "plain_text", "text": f"é {QUOTED_PASSWORD}"}]})
    report = slack_resource.notifier().post(message)
    assert report.ok and report.delivered == ["chat.postMessage", "webhook"]
    bot, hook = slack_server.messages()
    assert "Backup failed" in bot.payload["blocks"][0]["text"]["text"]
    assert bot.payload["blocks"][1]["elements"][1]["text"] == "é ***"
    for request in (bot, hook):
        body = request.body.decode("utf-8")
        for secret in (QUOTED_PASSWORD, QUOTED_TOKEN):
            leaked = [form for form in _encodings(secret) if form in body]
            assert not leaked, (request.path, leaked)
        assert "***" in body


HOSTILE = "<!channel> see <https://evil.example/login|the fix> & <@U123>"


def test_text_from_outside_is_escaped_for_mrkdwn_in_every_message(slack_resource, slack_server, health_server,
                                                                   monkeypatch):
    """A /health body and a database error carry mentions and links: they reach Slack as text."""
    from urllib.parse import quote

    from ops_platform.lib import deploy, probes
    from ops_platform.lib.messages import backups, deployments
    from ops_platform_tests.conftest import database_url

    health_server.services = {"database": HOSTILE}
    outcome = deploy.wait_for_version(health_server.url, "1.2.3", 0.5, poll_interval=0.1)
    missing = database_url("production").rsplit("/", 1)[0] + "/" + quote(f"x{HOSTILE}", safe="")
    [database_error] = probes.probe_postgres("production", missing, probes.ProbeSettings(timeout_seconds=5))
    secret = "pw<&>Secret9"
    monkeypatch.setenv("DEPLOY_HOOK_TOKEN", secret)
    notifier = slack_resource.notifier()
    notifier.post(deployments.deployment_failed("production", "1.2.3", outcome.reason, None, "none", "", "http://d/runs/1"))
    notifier.post(backups.backup_failed("production", "dump", f"{database_error.reason} ({secret})"))
    notifier.post(f"plain {HOSTILE}")
    texts = [message.payload["blocks"][0]["text"]["text"] if message.payload.get("blocks") else message.text
             for message in slack_server.messages()]
    assert len(texts) == 6
    escaped = "&lt;!channel&gt; see &lt;https://evil.example/login|the fix&gt; &amp; &lt;@U123&gt;"
    for text in texts:
        assert "<!channel>" not in text and "<https://evil" not in text and "<@U123>" not in text, text
        assert escaped in text, text
    assert texts[0].endswith("<http://d/runs/1|View the run in Dagster>")
    body = slack_server.all_bodies()
    assert "Secret9" not in body and "***" in body
