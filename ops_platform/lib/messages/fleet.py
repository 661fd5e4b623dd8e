"""Slack messages about the fleet: a database found on a server, or gone from it."""

from ops_platform.lib.messages.common import slack_message
from ops_platform.lib.slack import SlackMessage


def discovery_message(item: dict) -> SlackMessage:
    """``item`` is an outbox entry of target_discovery_sensor: ``found`` or ``gone``."""
    if item["event"] == "found":
        return slack_message([f":new: *New database {item['target']} found* on server {item['server']}, first "
                              f"backup at {item['first_backup']}"])
    return slack_message([f":wave: *Database {item['target']} is gone* from server {item['server']}: it is no "
                          "longer backed up; its backups stay, under retention"])
