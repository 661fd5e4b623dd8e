"""Removes secrets from text before it reaches a log, metadata or Slack.

Two layers: known secret values (passwords parsed from the configured URLs, tokens from the
environment) are replaced wherever they appear, and common secret shapes (URL userinfo,
credential-like query parameters, Slack tokens) are masked even when their value is unknown.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote, urlsplit

from ops_platform.lib.formatting import slack_escape

MASK = "***"

_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s/]*)@")
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&;\s](?:password|passwd|pwd|token|secret|api[_-]?key|access[_-]?key|signature|sig|"
    r"x-amz-signature|x-amz-credential|x-amz-security-token|auth)=)(?P<value>[^&\s\"']+)",
    re.IGNORECASE,
)
_CONNINFO_PASSWORD = re.compile(r"(?P<key>\bpassword\s*=\s*)(?P<value>'[^']*'|\S+)", re.IGNORECASE)
_SLACK_TOKEN = re.compile(r"xox[abposr]-[A-Za-z0-9-]+")
_SLACK_WEBHOOK = re.compile(r"(hooks\.slack\.com/services/)[A-Za-z0-9/_-]+")

_SECRET_VARIABLE = re.compile(r"(PASSWORD|SECRET|TOKEN|_KEY$|WEBHOOK_URL)", re.IGNORECASE)
_URL_VARIABLE = re.compile(r"_URL$")


def url_password(url: str) -> str | None:
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password else None


def secrets_from_environ(environ: Mapping[str, str] | None = None) -> set[str]:
    """Every value in the environment that is a secret: tokens, keys and URL passwords."""
    environ = os.environ if environ is None else environ
    found: set[str] = set()
    for key, value in environ.items():
        if not value:
            continue
        if _SECRET_VARIABLE.search(key) and not key.startswith("DAGSTER_"):
            found.add(value)
        if _URL_VARIABLE.search(key) or "://" in value:
            password = url_password(value)
            if password:
                found.add(password)
    found |= destination_credentials(environ)
    return {secret for secret in found if len(secret) >= 4}


def destination_credentials(environ: Mapping[str, str]) -> set[str]:
    """The values of the credential variables that ``ops_platform.yaml``'s destinations name
    (``access_key_id_env``, ``secret_access_key_env``): any variable name may hold them. A file
    that cannot be read yields none here (it is reported where it is loaded)."""
    try:
        from ops_platform.lib.targets import config_path

        path = config_path(environ)
        if path is None:
            return set()
        names = _credential_variables(str(path), path.stat().st_mtime_ns)
    except Exception:  # noqa: BLE001 - see above
        return set()
    return {value.strip() for name in names if (value := environ.get(name, "")).strip()}


@functools.lru_cache(maxsize=8)
def _credential_variables(path: str, _mtime_ns: int) -> tuple[str, ...]:
    import yaml

    with open(path, encoding="utf-8") as handle:
        document = yaml.safe_load(handle)
    destinations = document.get("destinations") if isinstance(document, dict) else None
    names = []
    for body in (destinations or {}).values() if isinstance(destinations, dict) else ():
        if isinstance(body, dict):
            names += [body[key] for key in ("access_key_id_env", "secret_access_key_env")
                      if isinstance(body.get(key), str)]
    return tuple(names)


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()):
        # A Slack message's text is escaped before it is redacted: its secrets are in that form.
        known = {s for s in secrets if s}
        ordered = sorted(known | {slack_escape(s) for s in known}, key=len, reverse=True)
        self._secrets = ordered

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, extra: Iterable[str] = ()):
        return cls([*secrets_from_environ(environ), *extra])

    def __call__(self, text: object) -> str:
        return self.redact(text)

    def redact(self, text: object) -> str:
        result = str(text)
        for secret in self._secrets:
            result = result.replace(secret, MASK)
        result = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", result)
        result = _QUERY_SECRET.sub(lambda m: f"{m['key']}{MASK}", result)
        result = _CONNINFO_PASSWORD.sub(lambda m: f"{m['key']}{MASK}", result)
        result = _SLACK_TOKEN.sub(MASK, result)
        result = _SLACK_WEBHOOK.sub(lambda m: f"{m.group(1)}{MASK}", result)
        return result


def redact(text: object, environ: Mapping[str, str] | None = None) -> str:
    return Redactor.from_environ(environ).redact(text)


def tail(text: str, lines: int = 15, limit: int = 1500) -> str:
    """The last lines of a process's output, for an error message."""
    kept = "\n".join(text.strip().splitlines()[-lines:])
    return kept[-limit:]
