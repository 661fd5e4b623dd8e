"""Targets: every database the platform knows, where each comes from, and ``ops_platform.yaml``.

A target comes from one of three places, listed in this order:

- ``environment``: production, staging and development, from their variables exactly as
  ``config.load_environments`` reads them (development's demo-database default included);
- ``file``: an entry of ``targets:`` in ``ops_platform.yaml``, one database whose URL is in the
  variable the entry names;
- ``discovered:<server>``: a database found on a server of ``servers:``, live, with one query;
  its name is ``<server>.<database>`` and its URL the server's with the database swapped.

The file is optional. Its path is ``OPS_PLATFORM_CONFIG``, else ``ops_platform.yaml`` in the
project folder (``PROJECT_ROOT``, beside pyproject.toml, workspace.yaml and dagster.yaml), not the
current folder: the CLI run from anywhere and the code location started by its unit then read the
same file. Without a file everything is as before: the three environments and nothing else.

The file names variables, never values: a key that would hold a URL or a credential (``url:``,
``access_key_id:``) is refused in favour of its ``*_env`` form. Every mistake is one line
(``ConfigError``) naming the file and the entry. ``load_targets`` never raises for a bad file or
an unreachable server: they become ``Problem`` lines beside the targets it could list.

Names: a target's name becomes a folder name, a backup id (``<target>-<YYYYMMDDTHHMMSSZ>``), a
Dagster partition key and a CLI argument, so each part is 1-63 lowercase letters, digits, ``_`` or
``-`` and starts with a letter or digit (``TARGET_NAME_PATTERN``); a discovered database whose
name does not fit is skipped with a notice. Servers, ``targets:`` entries and the environments
share one namespace, so ``shop`` names one thing and ``shop.orders`` reads unambiguously.

Nothing here imports Dagster; the schedule check is croniter, the parser Dagster vendors.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from croniter import croniter
from psycopg.conninfo import conninfo_to_dict

from ops_platform.config import (
    ENVIRONMENT_NAMES,
    ENVIRONMENT_PREFIXES,
    ConfigError,
    get_environment,
    load_environments,
    printable,
    uses_default_database,
)
from ops_platform.lib import postgres
from ops_platform.lib.formatting import describe, did_you_mean
from ops_platform.lib.redact import MASK, Redactor, url_password
from ops_platform.lib.restore import databases
from ops_platform.lib.restore.errors import RestoreStepError, one_line

CONFIG_VARIABLE = "OPS_PLATFORM_CONFIG"
CONFIG_FILE_NAME = "ops_platform.yaml"
PROJECT_ROOT = Path(__file__).resolve().parents[2]

OPERATIONS_TIMEZONE = "America/New_York"
# The environments' nightly backups (development has none); a server or file target without a
# schedule of its own gets production's.
ENVIRONMENT_BACKUP_CRONS = {"production": "0 2 * * *", "staging": "0 3 * * *"}
DEFAULT_SCHEDULE = ENVIRONMENT_BACKUP_CRONS["production"]

ENVIRONMENT, FILE, DISCOVERED = "environment", "file", "discovered"

NAME_PART = r"[a-z0-9][a-z0-9_-]{0,62}"
TARGET_NAME = rf"{NAME_PART}(?:\.{NAME_PART})?"
NAME_PART_PATTERN = re.compile(rf"^{NAME_PART}$")
TARGET_NAME_PATTERN = re.compile(rf"^{TARGET_NAME}$")
# What a parse_backup_id that accepts every target needs: the stamp has capitals, names have none.
BACKUP_ID_PATTERN = re.compile(rf"^(?P<target>{TARGET_NAME})-(?P<stamp>\d{{8}}T\d{{6}}Z)$")
NAME_RULE = "1-63 lowercase letters, digits, '_' or '-', starting with a letter or digit"
NAME_REASON = "it becomes a folder name, a backup id, a Dagster partition key and a CLI argument"

# Databases the platform itself creates and drops (restore scratch copies, databases kept by a
# swap, drill copies: restore/drill.DRILL_SUFFIX): never targets.
WORKING_DATABASE_GLOBS = (f"*{databases.SCRATCH_INFIX}*", f"*{databases.KEPT_INFIX}*", "*__drill*")
DISCOVERY_QUERY = "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname"
DISCOVERY_CONNECT_TIMEOUT_SECONDS = 10
DISCOVERY_STATEMENT_TIMEOUT_SECONDS = 10
DEFAULT_DESTINATION_PREFIX = "backups"
# Names the backup's own copies already use in manifests and listings (catalog.StoredCopy.store).
RESERVED_DESTINATION_NAMES = ("local", "s3")

# Problem kinds: the file is wrong (the CLI exits 2), a server could not be listed (exit 1), or a
# notice (a database skipped or already a target; exit 0).
FILE_PROBLEM, SERVER_PROBLEM, NOTICE = "file", "server", "notice"

_TOP_KEYS = ("servers", "targets", "destinations")
_SERVER_KEYS = ("url_env", "databases", "exclude", "schedule")
_TARGET_KEYS = ("url_env", "schedule")
_DESTINATION_KEYS = ("s3_bucket", "prefix", "region", "endpoint_url_env", "access_key_id_env",
                     "secret_access_key_env")
_SECRET_LOOKING_KEY = re.compile(r"url|dsn|password|passwd|secret|token|credential|key", re.IGNORECASE)
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_GLOB_CHARACTERS = re.compile(r"[*?\[]")
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


# ---------------------------------------------------------------- what the file holds


@dataclass(frozen=True)
class Server:
    """A server of ``servers:``: every database on it (or those ``databases`` names), less ``exclude``."""

    name: str
    url_env: str
    databases: tuple[str, ...] | None  # None: all
    exclude: tuple[str, ...]
    schedule: str

    def url(self, environ: Mapping[str, str] | None = None) -> str:
        """The server's URL, read from its variable now."""
        return _variable(self.url_env, f"server {self.name}", environ)


@dataclass(frozen=True)
class TargetEntry:
    """An entry of ``targets:``: one database, its URL in ``url_env``."""

    name: str
    url_env: str
    schedule: str


@dataclass(frozen=True, repr=False)
class Destination:
    """An off-site copy of ``destinations:``, its endpoint and credentials read from their
    variables when the file was loaded (None: the standard AWS variables, AWS_ENDPOINT_URL_S3
    included, as for the backup's own S3 copy)."""

    name: str
    bucket: str
    prefix: str
    region: str | None = None
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    endpoint_url_env: str | None = None
    access_key_id_env: str | None = None
    secret_access_key_env: str | None = None

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def __repr__(self) -> str:
        endpoint = f"${self.endpoint_url_env}" if self.endpoint_url_env else "default"
        credentials = (f"${self.access_key_id_env}/${self.secret_access_key_env} ({MASK})"
                       if self.access_key_id_env else "the standard AWS variables")
        return (f"Destination(name={self.name!r}, location={self.location!r}, region={self.region!r}, "
                f"endpoint={endpoint}, credentials={credentials})")


@dataclass(frozen=True)
class PlatformConfig:
    """``ops_platform.yaml`` parsed and checked; empty when there is no file (``path`` None)."""

    path: Path | None = None
    servers: dict[str, Server] = field(default_factory=dict)
    targets: dict[str, TargetEntry] = field(default_factory=dict)
    destinations: dict[str, Destination] = field(default_factory=dict)

    def file_targets(self) -> list[Target]:
        return [Target(entry.name, FILE, entry.schedule, entry.url_env) for entry in self.targets.values()]


# ---------------------------------------------------------------- targets


@dataclass(frozen=True, repr=False)
class Target:
    """One database the platform knows. It holds no URL: ``database_url()`` reads it from the
    variable when called, so a Target can be logged, pickled or shown without a secret."""

    name: str
    source: str  # "environment", "file" or "discovered:<server>"
    schedule: str | None  # cron in OPERATIONS_TIMEZONE; None: not scheduled (development)
    url_env: str | None  # the variable with the URL (the server's for a discovered database); None: the default
    server: str | None = None
    database: str | None = None  # a discovered database's name on its server

    @property
    def kind(self) -> str:
        """``environment``, ``file`` or ``discovered``."""
        return self.source.split(":", 1)[0]

    @property
    def origin(self) -> str:
        """Where it came from, in words: ``environment``, ``file`` or ``server shop``."""
        return f"server {self.server}" if self.kind == DISCOVERED else self.kind

    def database_url(self, environ: Mapping[str, str] | None = None) -> str:
        """The database's URL, read from the environment now. ConfigError when its variable is unset."""
        if self.kind == ENVIRONMENT:
            return get_environment(self.name, environ).database_url
        url = _variable(self.url_env or "", f"target {self.name}", environ)
        if self.database is None:
            return url
        try:
            return databases.database_url_for(url, self.database)
        except RestoreStepError:
            raise ConfigError(f"target {self.name}: {self.url_env} is not a valid PostgreSQL connection string") from None

    def database_name(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The database's name on its server (None when its URL cannot be read now)."""
        if self.database is not None:
            return self.database
        try:
            return databases.database_name(self.database_url(environ))
        except (ConfigError, RestoreStepError):
            return None

    def to_json(self, environ: Mapping[str, str] | None = None) -> dict:
        return {"name": self.name, "source": self.kind, "server": self.server,
                "database": self.database_name(environ), "schedule": self.schedule,
                "timezone": OPERATIONS_TIMEZONE if self.schedule else None, "url_env": self.url_env}

    def __repr__(self) -> str:
        url = f"${self.url_env}" if self.url_env else "the default"
        if self.database is not None:
            url += f" with database {self.database}"
        return f"Target(name={self.name!r}, source={self.source!r}, schedule={self.schedule!r}, url={url})"


@dataclass(frozen=True)
class Problem:
    """One line about something that kept a target from being listed, or that the operator should know."""

    kind: str  # FILE_PROBLEM, SERVER_PROBLEM or NOTICE
    message: str
    server: str | None = None

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class TargetsResult:
    """The targets that could be listed, and the problems met on the way."""

    targets: list[Target]
    problems: list[Problem] = field(default_factory=list)
    config: PlatformConfig | None = None  # None when the file could not be read

    @property
    def names(self) -> list[str]:
        return [target.name for target in self.targets]

    def get(self, name: str) -> Target | None:
        return next((target for target in self.targets if target.name == name), None)

    @property
    def file_is_bad(self) -> bool:
        return any(problem.kind == FILE_PROBLEM for problem in self.problems)

    @property
    def unreachable_servers(self) -> list[str]:
        return [problem.server for problem in self.problems if problem.kind == SERVER_PROBLEM]


def environment_targets(environ: Mapping[str, str] | None = None) -> list[Target]:
    """The configured environments as targets, in the fixed order, with their schedules as today."""
    default = uses_default_database(environ)
    return [Target(name, ENVIRONMENT, ENVIRONMENT_BACKUP_CRONS.get(name),
                   None if default and name == "development" else f"{ENVIRONMENT_PREFIXES[name]}DATABASE_URL")
            for name in load_environments(environ)]


def load_targets(environ: Mapping[str, str] | None = None, discover: bool = True) -> TargetsResult:
    """Every target: the environments, the file's ``targets:`` and, with ``discover``, the databases
    found now on each server of ``servers:`` (listed in parallel). Never raises for a bad file
    (the environments and one FILE_PROBLEM) or a server that cannot be listed (its SERVER_PROBLEM)."""
    environ = os.environ if environ is None else environ
    targets = environment_targets(environ)
    try:
        platform = load_platform_config(environ)
    except ConfigError as error:
        return TargetsResult(targets, [Problem(FILE_PROBLEM, str(error))])
    targets += platform.file_targets()
    problems: list[Problem] = []
    if discover and platform.servers:
        claimed = {key: target.name for target in targets if (key := _database_key_of(target, environ))}
        servers = list(platform.servers.values())
        with ThreadPoolExecutor(max_workers=min(8, len(servers)), thread_name_prefix="discovery") as pool:
            found = list(pool.map(lambda server: discover_server(server, environ), servers))
        for server, (discovered, server_problems) in zip(servers, found):
            problems += server_problems
            address = databases.server_of(server.url(environ)) if discovered else None
            for target in discovered:
                key = (*address, target.database)
                if key in claimed:
                    owner = claimed[key]
                    problems.append(_already_a_target(server, target, owner, platform))
                    continue
                claimed[key] = target.name
                targets.append(target)
    return TargetsResult(targets, problems, platform)


def resolve_target(name: str, environ: Mapping[str, str] | None = None) -> Target | None:
    """The target ``name`` names, without asking any server: an entry of ``targets:``, or
    ``<server>.<database>`` of a server in ``servers:`` (whether that database still exists is the
    caller's to find out, as for any database). None when the name is neither; ConfigError for a
    bad file."""
    platform = load_platform_config(environ)
    if name in platform.targets:
        return next(target for target in platform.file_targets() if target.name == name)
    server_name, dot, database = name.partition(".")
    server = platform.servers.get(server_name)
    if not dot or server is None or not NAME_PART_PATTERN.match(database):
        return None
    return Target(name, f"{DISCOVERED}:{server.name}", server.schedule, server.url_env, server.name, database)


def probed_targets(registered: Iterable[str], environ: Mapping[str, str] | None = None
                   ) -> tuple[dict[str, str], list[str]]:
    """The databases beyond the environments that the health sweep connects to, by name, with their
    URLs: every ``targets:`` entry, and every registered ``<server>.<database>`` of a server of the
    file that its ``databases``/``exclude`` still select, whether or not it is on the server now
    (a database that disappears fails its checks and alerts; one dropped on purpose is added to
    ``exclude``). And one line per target left out (its variable unset, or a bad file)."""
    environ = os.environ if environ is None else environ
    try:
        platform = load_platform_config(environ)
    except ConfigError as error:
        return {}, [str(error)]
    found: dict[str, str] = {}
    problems: list[str] = []
    candidates = platform.file_targets()
    for name in sorted(set(registered)):
        server_name, dot, database = name.partition(".")
        server = platform.servers.get(server_name)
        if dot and server is not None and select_databases(server, [database])[0] == [database]:
            candidates.append(Target(name, f"{DISCOVERED}:{server.name}", server.schedule, server.url_env,
                                     server.name, database))
    for target in candidates:
        try:
            found[target.name] = target.database_url(environ)
        except ConfigError as error:
            problems.append(str(error))
    return found, problems


def _already_a_target(server: Server, target: Target, owner: str, platform: PlatformConfig) -> Problem:
    """A discovered database that another target already is: listed once, under the first name.
    Two servers of the file reaching one database is the file's mistake; a server holding an
    environment's or a ``targets:`` database is expected, and only noted."""
    owner_server = owner.split(".", 1)[0] if "." in owner else None
    if owner_server in platform.servers:
        return Problem(FILE_PROBLEM, f"{_label(platform.path)}: servers {owner_server} and {server.name} both include "
                                     f"database {target.database} (as {owner}); exclude it from one of them",
                       server.name)
    return Problem(NOTICE, f"server {server.name}: database {target.database} is already the target {owner}; "
                           "it is listed once, as that", server.name)


def _database_key_of(target: Target, environ: Mapping[str, str]) -> tuple[str, str, str] | None:
    try:
        return _database_key(target.database_url(environ))
    except (ConfigError, RestoreStepError):
        return None


def _database_key(url: str) -> tuple[str, str, str]:
    """(host, port, database): two URLs with the same key reach the same database."""
    return (*databases.server_of(url), databases.database_name(url))


# ---------------------------------------------------------------- discovery


def list_databases(url: str) -> list[str]:
    """The names of the server's databases that accept connections, templates left out: one
    query on the database the URL names (the maintenance database when it names none)."""
    dbname = conninfo_to_dict(url).get("dbname") or databases.MAINTENANCE_DATABASE
    with databases.connect(url, dbname, connect_timeout=DISCOVERY_CONNECT_TIMEOUT_SECONDS,
                           statement_timeout=DISCOVERY_STATEMENT_TIMEOUT_SECONDS,
                           lock_timeout=DISCOVERY_STATEMENT_TIMEOUT_SECONDS) as connection:
        return [row[0] for row in connection.execute(DISCOVERY_QUERY)]


def discover_server(server: Server, environ: Mapping[str, str] | None = None) -> tuple[list[Target], list[Problem]]:
    """The server's databases now, as targets ``<server>.<database>`` (see ``select_databases``),
    and problems: one SERVER_PROBLEM when it cannot be listed, never an exception."""
    environ = os.environ if environ is None else environ
    try:
        url = server.url(environ)
    except ConfigError as error:
        return [], [Problem(SERVER_PROBLEM, str(error), server.name)]
    redactor = Redactor.from_environ(environ, extra=[url_password(url) or "", _conninfo_password(url)])
    try:
        names = list_databases(url)
    except Exception as error:  # noqa: BLE001 - one server that cannot be listed never stops the others
        message = f"server {server.name}: cannot list its databases: {describe(error)}"
        return [], [Problem(SERVER_PROBLEM, one_line(redactor(message)), server.name)]
    chosen, problems = select_databases(server, names, never=_instance_database(url, environ))
    targets = [Target(f"{server.name}.{name}", f"{DISCOVERED}:{server.name}", server.schedule, server.url_env,
                      server.name, name) for name in chosen]
    return targets, problems


def select_databases(server: Server, names: Iterable[str], never: Iterable[str] = ()) -> tuple[list[str], list[Problem]]:
    """Which of the server's databases are targets. Always left out: the platform's working
    databases (``WORKING_DATABASE_GLOBS``), ``never`` (the Dagster instance's database) and the
    maintenance database ``postgres`` unless ``databases`` names it (it is usually empty, so its
    backup would fail ``not_empty``). Then ``databases`` (all, or names and globs), then
    ``exclude``; a name that cannot be a target name is skipped with a notice."""
    names = list(names)
    never = set(never)
    explicit = {entry for entry in server.databases or () if not _GLOB_CHARACTERS.search(entry)}
    chosen, problems = [], []
    for name in names:
        if name in never or _matches(name, WORKING_DATABASE_GLOBS):
            continue
        if name == databases.MAINTENANCE_DATABASE and name not in explicit:
            continue
        if server.databases is not None and not _matches(name, server.databases):
            continue
        if _matches(name, server.exclude):
            continue
        if not NAME_PART_PATTERN.match(name):
            problems.append(Problem(NOTICE, f"server {server.name}: database '{printable(name)}' is skipped: a target "
                                            f"name must be {NAME_RULE} ({NAME_REASON}); rename it or add it to "
                                            "exclude", server.name))
            continue
        chosen.append(name)
    for name in sorted(explicit - set(names)):
        problems.append(Problem(NOTICE, f"server {server.name}: database {name}, listed in databases, is not on the "
                                        "server (or does not accept connections)", server.name))
    return chosen, problems


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _instance_database(url: str, environ: Mapping[str, str]) -> set[str]:
    """The Dagster instance's database when it is on this server (DAGSTER_POSTGRES_URL)."""
    instance_url = (environ.get("DAGSTER_POSTGRES_URL") or "").strip().replace("postgresql+psycopg2://", "postgresql://")
    if not instance_url:
        return set()
    try:
        if databases.server_of(instance_url) == databases.server_of(url):
            return {databases.database_name(instance_url)}
    except RestoreStepError:
        pass
    return set()


def _conninfo_password(url: str) -> str:
    try:
        return conninfo_to_dict(url).get("password") or ""
    except Exception:  # noqa: BLE001 - a malformed URL has no password to hide
        return ""


# ---------------------------------------------------------------- the file


def config_path(environ: Mapping[str, str] | None = None) -> Path | None:
    """The file to read: ``OPS_PLATFORM_CONFIG`` (which must exist), else ``ops_platform.yaml``
    in the project folder when it is there, else None (no file: the environments only)."""
    environ = os.environ if environ is None else environ
    explicit = (environ.get(CONFIG_VARIABLE) or "").strip()
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"{CONFIG_VARIABLE} names {printable(explicit, 200)}, which is not a file")
        return path
    default = PROJECT_ROOT / CONFIG_FILE_NAME
    return default if default.is_file() else None


def load_platform_config(environ: Mapping[str, str] | None = None) -> PlatformConfig:
    """``ops_platform.yaml`` parsed and checked against the environment (each variable it names
    is set; no target reaches a database another target is; no two copies go to one place).
    Raises ConfigError with one line naming the file and the entry; no file: an empty config."""
    environ = os.environ if environ is None else environ
    path = config_path(environ)
    if path is None:
        return PlatformConfig()
    return _FileReader(path, environ).read()


def file_names_destinations(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the file has a non-empty ``destinations:`` section, read loosely (the file may be
    wrong): a backup then counts its off-site copies as missing rather than forgetting them."""
    try:
        path = config_path(environ)
        document = yaml.safe_load(path.read_text(encoding="utf-8")) if path else None
    except (ConfigError, OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(document, dict) and bool(document.get("destinations"))


def check_schedule(cron: object) -> str | None:
    """Why ``cron`` is not a schedule Dagster accepts (five fields, a day that exists), or None."""
    if not isinstance(cron, str) or not cron.strip():
        return "must be a cron expression in quotes, e.g. \"0 2 * * *\""
    try:
        if not croniter.is_valid(cron):
            return f"'{printable(cron)}' is not a valid cron expression (minute hour day-of-month month day-of-week)"
        fields = croniter.expand(cron)[0]
    except Exception:  # noqa: BLE001 - croniter raises several types for a bad expression
        return f"'{printable(cron)}' is not a valid cron expression (minute hour day-of-month month day-of-week)"
    if len(fields) != 5:
        return f"'{printable(cron)}' has {len(fields)} fields; a schedule has five (minute hour day-of-month month day-of-week)"
    if fields[3] == [2] and len(fields[2]) == 1 and fields[2][0] in (30, 31):
        return f"'{printable(cron)}' never fires: February has no day {fields[2][0]}"
    return None


def glob_problem(pattern: object) -> str | None:
    """Why ``pattern`` is not a usable glob, or None. fnmatch would take an unclosed ``[`` as a
    plain character and silently match nothing the operator meant."""
    if not isinstance(pattern, str) or not pattern.strip():
        return "must be a non-empty glob pattern in quotes, e.g. \"*_scratch\""
    if not pattern.isprintable():
        return f"'{printable(pattern)}' holds a character that is not printable"
    index = 0
    while index < len(pattern):
        if pattern[index] != "[":
            index += 1
            continue
        end = index + 1
        if end < len(pattern) and pattern[end] == "!":
            end += 1
        if end < len(pattern) and pattern[end] == "]":
            end += 1
        end = pattern.find("]", end)
        if end < 0:
            return f"'{printable(pattern)}' is not a valid glob: a '[' is never closed"
        index = end + 1
    return None


class _DuplicateKey(yaml.constructor.ConstructorError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
        seen = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise _DuplicateKey(None, None, f"'{printable(str(key))}' is given twice", key_node.start_mark)
            if isinstance(key, (str, int, float, bool)):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _label(path: Path | None) -> str:
    return printable(str(path), 200) if path else CONFIG_FILE_NAME


def _variable(variable: str, owner: str, environ: Mapping[str, str] | None) -> str:
    environ = os.environ if environ is None else environ
    value = (environ.get(variable) or "").strip()
    if not value:
        raise ConfigError(f"{owner}: {variable or 'its URL variable'} is not set")
    return value


class _FileReader:
    """Parses and checks one file; every error is ``ConfigError('<file>: <where>: <what>')``."""

    def __init__(self, path: Path, environ: Mapping[str, str]):
        self.path = path
        self.label = _label(path)
        self.environ = environ

    def fail(self, where: str, message: str) -> ConfigError:
        return ConfigError(one_line(f"{self.label}: {where}: {message}" if where else f"{self.label}: {message}"))

    def read(self) -> PlatformConfig:
        document = self._load()
        if document is None:
            document = {}
        if not isinstance(document, dict):
            raise self.fail("", f"must be a mapping with {', '.join(_TOP_KEYS)} at the top, not a {_kind(document)}")
        self._check_keys("", document, _TOP_KEYS)
        sections = {key: self._section(document, key) for key in _TOP_KEYS}
        servers = {name: self._server(name, body) for name, body in sections["servers"].items()}
        targets = {name: self._target(name, body) for name, body in sections["targets"].items()}
        destinations = {name: self._destination(name, body) for name, body in sections["destinations"].items()}
        for name in targets:
            if name in servers:
                raise self.fail(f"targets.{name}", f"'{name}' is also a server; a name may be a server or a target, "
                                                   "not both")
        self._check_distinct_databases(targets)
        self._check_distinct_places(destinations)
        return PlatformConfig(self.path, servers, targets, destinations)

    def _load(self):
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise self.fail("", f"cannot be read: {describe(error)}") from None
        try:
            return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            if isinstance(error, _DuplicateKey):
                raise self.fail(where, f"{error.problem} (each name and key may appear once)") from None
            problem = error.problem or error.context or "malformed"
            if "alias" in (error.context or ""):
                problem += " (quote a value that starts with *, e.g. schedule: \"*/30 * * * *\")"
            raise self.fail(where, f"not valid YAML: {problem}") from None
        except yaml.YAMLError as error:
            raise self.fail("", f"not valid YAML: {describe(error)}") from None

    def _section(self, document: dict, key: str) -> dict:
        body = document.get(key)
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise self.fail(key, f"must be a mapping of names to entries, not a {_kind(body)}")
        for name in body:
            self._check_name(key, name)
        return body

    def _check_name(self, section: str, name: object) -> None:
        where = f"{section}.{printable(str(name))}"
        if not isinstance(name, str) or not NAME_PART_PATTERN.match(name):
            raise self.fail(where, f"a name must be {NAME_RULE}, since {NAME_REASON}")
        if section == "destinations":
            if name in RESERVED_DESTINATION_NAMES:
                raise self.fail(where, f"'{name}' is the name of the backup's own "
                                       f"{'local folder' if name == 'local' else 'S3 copy (AWS_S3_BUCKET)'}; "
                                       "choose another name")
        elif name in ENVIRONMENT_NAMES:
            raise self.fail(where, f"'{name}' is an environment's name (set by "
                                   f"{ENVIRONMENT_PREFIXES[name]}DATABASE_URL); choose another name")

    def _check_keys(self, where: str, body: dict, allowed: tuple[str, ...]) -> None:
        for key in body:
            if key in allowed:
                continue
            text = printable(str(key))
            place = f"{where}.{text}" if where else text
            if isinstance(key, str) and f"{key}_env" in allowed:
                raise self.fail(place, f"would keep a value in the file; secrets stay in the environment: name the "
                                       f"variable that holds it with {key}_env")
            if isinstance(key, str) and _SECRET_LOOKING_KEY.search(key):
                variables = " or ".join(k for k in allowed if k.endswith("_env"))
                raise self.fail(place, "looks like a secret; secrets stay in the environment: the file names "
                                       "variables" + (f" ({variables})" if variables else ""))
            hint = did_you_mean(text, allowed)
            raise self.fail(place, f"unknown key{hint}; known: {', '.join(allowed)}")

    def _entry(self, where: str, body: object, allowed: tuple[str, ...], required: tuple[str, ...]) -> dict:
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise self.fail(where, f"must be a mapping with {', '.join(required)}, not a {_kind(body)}")
        self._check_keys(where, body, allowed)
        for key in required:
            if body.get(key) in (None, ""):
                raise self.fail(where, f"{key} is missing")
        return body

    def _variable_name(self, where: str, key: str, value: object) -> str:
        if not isinstance(value, str) or not _VARIABLE_NAME.match(value.strip()):
            raise self.fail(f"{where}.{key}", "must be the name of an environment variable (e.g. SHOP_SERVER_URL), "
                                              "not the value itself")
        return value.strip()

    def _url_variable(self, where: str, value: object) -> str:
        variable = self._variable_name(where, "url_env", value)
        url = (self.environ.get(variable) or "").strip()
        if not url:
            raise self.fail(f"{where}.url_env", f"{variable} is not set")
        try:
            postgres.connection_params(url, self.environ)
        except ConfigError:
            raise self.fail(f"{where}.url_env", f"{variable} is not a valid PostgreSQL connection string") from None
        return variable

    def _schedule(self, where: str, body: dict) -> str:
        if body.get("schedule") is None:
            return DEFAULT_SCHEDULE
        problem = check_schedule(body["schedule"])
        if problem:
            raise self.fail(f"{where}.schedule", f"{problem} ({OPERATIONS_TIMEZONE})")
        return " ".join(body["schedule"].split())

    def _globs(self, where: str, value: object, names_must_fit: bool) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(where, f"must be a list of names or glob patterns, e.g. [\"*_scratch\"], not a "
                                   f"{_kind(value)}")
        for pattern in value:
            problem = glob_problem(pattern)
            if problem:
                raise self.fail(where, problem)
            if names_must_fit and not _GLOB_CHARACTERS.search(pattern) and not NAME_PART_PATTERN.match(pattern):
                raise self.fail(where, f"'{printable(pattern)}' can never be a target: a name must be {NAME_RULE}, "
                                       f"since {NAME_REASON}")
        return tuple(value)

    def _server(self, name: str, body: object) -> Server:
        where = f"servers.{name}"
        body = self._entry(where, body, _SERVER_KEYS, ("url_env",))
        url_env = self._url_variable(where, body["url_env"])
        chosen = body.get("databases", "all")
        if isinstance(chosen, str) and chosen.strip().lower() == "all":
            selection = None
        elif isinstance(chosen, list) and chosen:
            selection = self._globs(f"{where}.databases", chosen, names_must_fit=True)
        else:
            raise self.fail(f"{where}.databases", "must be all or a non-empty list of database names (globs allowed)")
        exclude = self._globs(f"{where}.exclude", body.get("exclude") or [], names_must_fit=False)
        return Server(name, url_env, selection, exclude, self._schedule(where, body))

    def _target(self, name: str, body: object) -> TargetEntry:
        where = f"targets.{name}"
        body = self._entry(where, body, _TARGET_KEYS, ("url_env",))
        variable = self._url_variable(where, body["url_env"])
        if variable in {f"{prefix}DATABASE_URL" for prefix in ENVIRONMENT_PREFIXES.values()}:
            environment = next(env for env, prefix in ENVIRONMENT_PREFIXES.items()
                               if f"{prefix}DATABASE_URL" == variable)
            raise self.fail(f"{where}.url_env", f"{variable} is the {environment} environment's database, a target "
                                                "already")
        return TargetEntry(name, variable, self._schedule(where, body))

    def _destination(self, name: str, body: object) -> Destination:
        where = f"destinations.{name}"
        body = self._entry(where, body, _DESTINATION_KEYS, ("s3_bucket",))
        bucket = body["s3_bucket"]
        if not isinstance(bucket, str) or not _BUCKET_NAME.match(bucket):
            raise self.fail(f"{where}.s3_bucket", "must be an S3 bucket name (3-63 lowercase letters, digits, '.' "
                                                  "or '-'), without s3:// or a path (use prefix)")
        prefix = body.get("prefix", DEFAULT_DESTINATION_PREFIX)
        if not isinstance(prefix, str) or not prefix.isprintable() or ".." in prefix.split("/"):
            raise self.fail(f"{where}.prefix", "must be a key prefix such as backups or team/backups")
        region = body.get("region")
        if region is not None and (not isinstance(region, str) or not re.match(r"^[a-z0-9-]{2,32}$", region)):
            raise self.fail(f"{where}.region", "must be a region name such as eu-west-1")
        variables = {key: self._variable_name(where, key, body[key]) for key in
                     ("endpoint_url_env", "access_key_id_env", "secret_access_key_env") if body.get(key) is not None}
        if ("access_key_id_env" in variables) != ("secret_access_key_env" in variables):
            given, missing = (("access_key_id_env", "secret_access_key_env") if "access_key_id_env" in variables
                              else ("secret_access_key_env", "access_key_id_env"))
            raise self.fail(where, f"{given} needs {missing} too (or neither: the standard AWS variables)")
        values = {}
        for key, variable in variables.items():
            value = (self.environ.get(variable) or "").strip()
            if not value:
                raise self.fail(f"{where}.{key}", f"{variable} is not set")
            values[key] = value
        endpoint = values.get("endpoint_url_env")
        if endpoint is not None and not re.match(r"^https?://[^\s/]+", endpoint):
            raise self.fail(f"{where}.endpoint_url_env", f"{variables['endpoint_url_env']} must be an http(s) URL")
        return Destination(name, bucket, prefix.strip("/"), region, endpoint, values.get("access_key_id_env"),
                           values.get("secret_access_key_env"), variables.get("endpoint_url_env"),
                           variables.get("access_key_id_env"), variables.get("secret_access_key_env"))

    def _check_distinct_databases(self, targets: dict[str, TargetEntry]) -> None:
        """No entry of ``targets:`` reaches an environment's database or another entry's (each would
        be backed up twice under two names)."""
        seen: dict[tuple[str, str, str], str] = {}
        for environment in load_environments(self.environ).values():
            try:
                seen.setdefault(_database_key(environment.database_url), environment.name)
            except RestoreStepError:
                continue
        for entry in targets.values():
            key = _database_key(self.environ[entry.url_env].strip())
            if key in seen:
                raise self.fail(f"targets.{entry.name}", f"{entry.url_env} reaches database {key[2]} on "
                                                         f"{key[0] or 'the local socket'}:{key[1]}, which is the "
                                                         f"target {seen[key]} already")
            seen[key] = entry.name

    def _check_distinct_places(self, destinations: dict[str, Destination]) -> None:
        """No two copies in one place: each would count as a copy of its own."""
        main_bucket = (self.environ.get("AWS_S3_BUCKET") or "").strip()
        seen: dict[tuple, str] = {}
        if main_bucket:
            main_prefix = (self.environ.get("AWS_S3_PREFIX") or "").strip().strip("/") or DEFAULT_DESTINATION_PREFIX
            seen[((self.environ.get("AWS_ENDPOINT_URL_S3") or "").strip() or None, main_bucket, main_prefix)] = "the backup's own S3 copy (AWS_S3_BUCKET)"
        default_endpoint = (self.environ.get("AWS_ENDPOINT_URL_S3") or "").strip() or None
        for destination in destinations.values():
            key = (destination.endpoint_url or default_endpoint, destination.bucket, destination.prefix)
            if key in seen:
                raise self.fail(f"destinations.{destination.name}", f"writes to {destination.location}, where "
                                                                    f"{seen[key]} writes; each copy needs a place "
                                                                    "of its own")
            seen[key] = f"destinations.{destination.name}"


def _kind(value: object) -> str:
    return {dict: "mapping", list: "list", str: "string", bool: "true/false", int: "number",
            float: "number", type(None): "nothing"}.get(type(value), type(value).__name__)


def fleet_step_key(target: str) -> str:
    """The key of ``fleet_backup_job``'s step backing up ``target`` (Dagster mapping keys allow
    letters, digits and '_' only)."""
    return f"backup_target[{fleet_mapping_key(target)}]"


def fleet_mapping_key(target: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", target)
