"""Slack messages, one module per domain. Each builder returns a ``SlackMessage`` (plain text
plus one mrkdwn block); the notifier redacts it before it leaves the process."""
