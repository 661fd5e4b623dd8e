"""Posting from a sensor without doubling or losing a message.

A sensor records what it is about to post in its cursor (the outbox), then posts within a
budget that ends well before the tick's time limit, with a tighter Slack client. Whatever is not
posted by then stays in the outbox for the next tick; an item counts as sent once it was
attempted (a Slack error is logged, never retried into a duplicate)."""

import time
from collections.abc import Callable

from ops_platform.defs.resources import OpsSlackResource
from ops_platform.lib.slack import SlackMessage

MAX_POSTS_PER_TICK = 10
POST_BUDGET_SECONDS = 15.0
SENSOR_SLACK_TIMEOUT_SECONDS = 5
SENSOR_SLACK_MAX_RETRIES = 1


def post_outbox(slack: OpsSlackResource, log, outbox: list[dict],
                render: Callable[[dict], SlackMessage | None]) -> list[dict]:
    """Post queued items in order within the tick's budget; return those still to send. An item
    ``render`` cannot turn into a message (a malformed cursor) is dropped."""
    if not outbox:
        return []
    notifier = slack.model_copy(update={"timeout_seconds": SENSOR_SLACK_TIMEOUT_SECONDS,
                                        "max_retries": SENSOR_SLACK_MAX_RETRIES}).notifier(log)
    started = time.monotonic()
    sent = 0
    for item in outbox:
        if sent >= MAX_POSTS_PER_TICK or time.monotonic() - started >= POST_BUDGET_SECONDS:
            break
        try:
            message = render(item)
        except (TypeError, ValueError, KeyError):
            message = None
        if message is not None:
            notifier.post(message)
        sent += 1
    return outbox[sent:]
