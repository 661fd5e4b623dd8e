"""What a restore will do, decided before anything is touched: which backup, into which database,
whether a database is replaced (and so needs a safety backup and a swap), and whether the role can
build a scratch database or must fall back to restoring in place.

Every refusal here is a RestoreInputError (exit 2 on the CLI): a bad database name, an existing
target without ``replace_target``, another environment's backup without ``allow_other_environment``,
a missing confirmation. ``RestoreState`` is what the Dagster steps hand each other.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from ops_platform.config import ENVIRONMENT_PREFIXES, EnvironmentConfig, printable
from ops_platform.lib.artifacts import Manifest, parse_backup_id
from ops_platform.lib.redact import Redactor
from ops_platform.lib.restore import databases
from ops_platform.lib.restore.errors import RestoreInputError, RestoreStepError, step_error
from ops_platform.lib.restore.resolve import LATEST, BackupCandidate, PassedOver, Resolution, resolve_backup
from ops_platform.lib.stores import LocalStore, S3Store

RESERVED_DATABASES = {"postgres", "template0", "template1"}
_DERIVED = re.compile(r"__(pre_)?restore_|__drill_")


@dataclass(frozen=True)
class RestoreRequest:
    """What the operator asked for (the CLI's arguments, or the launchpad's config)."""

    environment: str
    backup: str = LATEST
    target_database: str | None = None
    replace_target: bool = False
    skip_migrations: bool = False
    allow_other_environment: bool = False
    confirm: str = ""
    fix_sequences: bool = False
    create_roles: bool = False


@dataclass
class RestoreState:
    """A restore in progress, as the steps pass it on: plain data only (a run launched by the
    daemon pickles it between steps), with no client or connection. Times are seconds per step.
    ``older_than_newest`` is set when an older backup was restored because every newer one was
    proven bad, in words for the last line an operator reads."""

    environment: str
    live_database: str
    target: str
    replacing: bool
    in_place: bool
    stamp: str
    scratch: str
    backup_id: str
    source_environment: str
    candidates: list[BackupCandidate] = field(default_factory=list, repr=False)
    passed_over: list[PassedOver] = field(default_factory=list)
    older_than_newest: str | None = None
    skip_migrations: bool = False
    fix_sequences: bool = False
    create_roles: bool = False
    confirmation: str | None = None
    work_dir: str | None = None
    dump_path: str | None = None
    manifest: Manifest | None = None
    fetched_from: str | None = None
    safety_backup_id: str | None = None
    scratch_created: bool = False
    kept_database: str | None = None
    swap_outcome: str | None = None
    rows_verified: int = 0
    tables_verified: int = 0
    warnings: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def own_database(self) -> bool:
        return self.target == self.live_database

    @property
    def building(self) -> str:
        """The database the data goes into first: the scratch copy, or the target itself in place."""
        return self.target if self.in_place else self.scratch

    @property
    def resolution(self) -> Resolution:
        """The copies to fetch, as resolved."""
        return Resolution(list(self.candidates), passed_over=list(self.passed_over))

    def describe_target(self) -> str:
        return f"{self.environment}'s database {self.target}" if self.own_database else f"database {self.target}"


def confirmation_phrase(backup_id: str, database: str, oid: int) -> str:
    """What an operator types (or pastes) to replace an existing database: the backup to restore
    and the database as it is now (its oid). A confirmation remembered by the Launchpad stops
    matching once the database has been replaced (the copy swapped in has another oid) or a newer
    backup is the one ``latest`` would restore."""
    return f"{backup_id} over {database} #{oid}"


def check_confirmation(request: RestoreRequest, what: str, phrase: str) -> None:
    if request.confirm.strip() != phrase:
        typed = f"got '{printable(request.confirm, 90)}'" if request.confirm.strip() else "nothing was typed"
        raise RestoreInputError("resolve", f"replacing {what} needs confirm: '{phrase}' (the backup to restore, over "
                                           f"the database as it is now; {typed}); nothing was touched")


def check_replaceable(target: str, environment: EnvironmentConfig, live: str) -> None:
    """An existing database a restore may replace: the environment's own, or one matching
    ``<ENV>_RESTORE_REPLACEABLE_DATABASES``; never another application's."""
    if target == live or any(fnmatch.fnmatchcase(target, pattern) for pattern in environment.replaceable_databases):
        return
    allowed = ", ".join(environment.replaceable_databases) or "none set"
    raise RestoreInputError("resolve", f"refusing to replace the existing database {target}: {environment.name} may "
                                       f"replace only its own database {live} and names matching "
                                       f"{ENVIRONMENT_PREFIXES.get(environment.name, '')}RESTORE_REPLACEABLE_DATABASES "
                                       f"({allowed}); restore into a new name instead")


def check_not_the_instance(target: str, url: str, environ=None) -> None:
    """The Dagster instance's own database (DAGSTER_POSTGRES_URL on the same server) is never a target."""
    environ = os.environ if environ is None else environ
    instance_url = (environ.get("DAGSTER_POSTGRES_URL") or "").replace("postgresql+psycopg2://", "postgresql://")
    if not instance_url:
        return
    try:
        same = (databases.database_name(instance_url) == target
                and databases.server_of(instance_url) == databases.server_of(url))
    except RestoreStepError:
        return
    if same:
        raise RestoreInputError("resolve", f"refusing to restore into {target}: it holds the Dagster instance "
                                           "(run history, schedules), not an application")


def check_database_name(name: str) -> None:
    """A name a restore may create: a valid identifier of at most 63 bytes, not a system database,
    and not one of the platform's own working names."""
    if not name or not name.strip() or name != name.strip():
        raise RestoreInputError("resolve", f"invalid target database name '{printable(name)}'")
    if len(name.encode()) > databases.IDENTIFIER_MAX_BYTES or "\x00" in name or not name.isprintable():
        raise RestoreInputError("resolve", f"invalid target database name '{printable(name)}': at most 63 bytes of "
                                           "printable characters")
    if name in RESERVED_DATABASES or _DERIVED.search(name):
        raise RestoreInputError("resolve", f"refusing to restore into '{printable(name)}': a system or platform "
                                           "working database")


def backup_environment(selector: str, environment: str) -> str:
    """The environment a backup comes from: the id's own for a named backup."""
    if selector == LATEST:
        return environment
    try:
        owner, _ = parse_backup_id(selector)
    except Exception as error:  # ConfigError: one line already
        raise RestoreInputError("resolve", str(error)) from None
    return owner


def _environment_owning(database: str, environment: EnvironmentConfig,
                        others: dict[str, EnvironmentConfig]) -> str | None:
    """The other configured environment whose database ``database`` is, on the same server."""
    here = databases.server_of(environment.database_url)
    for name, other in others.items():
        if name != environment.name and databases.database_name(other.database_url) == database \
                and databases.server_of(other.database_url) == here:
            return name
    return None


def plan_restore(request: RestoreRequest, environment: EnvironmentConfig, local: LocalStore, s3: S3Store | None,
                 *, stamp: str | None = None, redactor: Redactor | None = None,
                 other_environments: dict[str, EnvironmentConfig] | None = None, confirm: bool = True,
                 destinations: Sequence[S3Store] = ()) -> RestoreState:
    """Check the request against the stores and the server, and decide what will happen. Touches
    nothing. Replacing an existing database needs ``request.confirm`` to be the state's
    ``confirmation`` (unless ``confirm`` is False: the CLI asks a person first, then passes it).
    Raises RestoreInputError for a request that cannot be done, RestoreStepError("resolve") when
    the backup cannot be found for another reason (S3 down)."""
    redactor = redactor or Redactor.from_environ()
    url = environment.database_url
    live = databases.database_name(url)
    target = request.target_database or live
    if live in RESERVED_DATABASES:
        raise RestoreInputError("resolve", f"{environment.name}'s URL points at the server's own database {live}; "
                                           "point it at the application's database to restore it")
    if request.target_database and request.target_database != live:
        check_database_name(request.target_database)
        check_not_the_instance(request.target_database, url)
        owner = _environment_owning(request.target_database, environment, other_environments or {})
        if owner:
            raise RestoreInputError("resolve", f"{request.target_database} is {owner}'s database: restore it with "
                                               f"'ops-platform restore ... {owner}', which backs it up and asks first")
    if request.replace_target and not request.target_database:
        raise RestoreInputError("resolve", "replace_target only applies with a target database")
    source_environment = backup_environment(request.backup, environment.name)
    if source_environment != environment.name and not request.allow_other_environment:
        raise RestoreInputError("resolve", f"backup {request.backup} belongs to {source_environment}, not "
                                           f"{environment.name}; say so explicitly to restore it here "
                                           "(--allow-other-environment, or allow_other_environment: true)")
    resolution = resolve_backup(environment.name, request.backup, local, s3,
                                allow_other_environment=request.allow_other_environment, redactor=redactor,
                                destinations=destinations)
    oid = databases.database_oid(url, target, redactor=redactor)
    exists = oid is not None
    phrase = confirmation_phrase(resolution.first.backup_id, target, oid) if exists else None
    if exists and target != live:
        if not request.replace_target:
            raise RestoreInputError("resolve", f"database {target} already exists; add --replace-target "
                                               "(replace_target: true) to replace it, or choose another name")
        check_replaceable(target, environment, live)
    if exists and confirm:
        what = f"{environment.name}'s database {live}" if target == live else f"database {target}"
        check_confirmation(request, what, phrase)
    in_place = not databases.can_create_databases(url, redactor=redactor)
    if in_place and not exists:
        raise step_error("resolve", f"the role in the {environment.name} URL cannot create databases and {target} "
                                    "does not exist: create it first, or use a role with CREATEDB", redactor)
    stamp = stamp or databases.make_stamp()
    first = resolution.first
    return RestoreState(
        environment=environment.name, live_database=live, target=target, replacing=exists, in_place=in_place,
        stamp=stamp, scratch=databases.scratch_name(target, stamp), backup_id=first.backup_id,
        source_environment=first.manifest.environment, candidates=resolution.candidates,
        passed_over=resolution.passed_over, skip_migrations=request.skip_migrations,
        fix_sequences=request.fix_sequences, create_roles=request.create_roles, confirmation=phrase,
        warnings=list(resolution.warnings))
