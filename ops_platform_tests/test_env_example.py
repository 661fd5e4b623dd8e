"""``.env.example`` as systemd reads an ``EnvironmentFile``: every value is what the platform
expects, with no comment glued to it, and development's app URLs are not the UI's own port."""

from __future__ import annotations

from urllib.parse import urlsplit

from ops_platform import config
from ops_platform.lib import settings
from ops_platform_tests.deploy_units import ENV_FILES, env_file


def test_env_example_works_as_a_systemd_environment_file():
    environ = env_file(ENV_FILES["/etc/ops_platform/ops_platform.env"])
    glued = {key: value for key, value in environ.items() if " #" in value or "\t#" in value}
    assert not glued, f"a trailing comment becomes part of these values: {glued}"
    assert settings.problems(settings.ALL, environ) == []
    assert environ["SLACK_CHANNEL"] == "#ops"
    assert environ["PRODUCTION_MIGRATE_COMMAND"] == "npx prisma migrate deploy"
    assert set(config.load_environments(environ)) == {"production"}
    for variable in ("API_URL", "FRONTEND_URL"):
        assert not environ[variable] or urlsplit(environ[variable]).port != 3000, variable
