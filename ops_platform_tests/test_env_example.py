"""``.env.example`` as systemd reads an ``EnvironmentFile``: every value is what the platform
expects, with no comment glued to it, and development's app URLs are not the UI's own port."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from ops_platform import config
from ops_platform.lib import settings

EXAMPLE = Path(__file__).resolve().parents[1] / ".env.example"


def systemd_environment(text: str) -> dict[str, str]:
    """KEY=value lines as systemd's EnvironmentFile= parses them: lines starting with # or ; are
    comments; a value in quotes loses them; an unquoted value keeps everything up to its trailing
    whitespace, a "# comment" included."""
    found = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        found[key.strip()] = value
    return found


def test_env_example_works_as_a_systemd_environment_file():
    environ = systemd_environment(EXAMPLE.read_text())
    glued = {key: value for key, value in environ.items() if " #" in value or "\t#" in value}
    assert not glued, f"a trailing comment becomes part of these values: {glued}"
    assert settings.problems(settings.ALL, environ) == []
    assert environ["SLACK_CHANNEL"] == "#ops"
    assert environ["PRODUCTION_MIGRATE_COMMAND"] == "npx prisma migrate deploy"
    assert set(config.load_environments(environ)) == {"production"}
    for variable in ("API_URL", "FRONTEND_URL"):
        assert not environ[variable] or urlsplit(environ[variable]).port != 3000, variable
