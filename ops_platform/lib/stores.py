"""Where backups live: a local folder (always) and an S3 bucket (when configured).

Both use the same layout, ``<root>/<env>/<id>.dump.zst`` plus ``<id>.manifest.json``. A manifest
is the commit marker: only backups with a readable manifest are listed.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ops_platform.lib import s3_encryption
from ops_platform.lib.artifacts import MANIFEST_SUFFIX, Manifest
from ops_platform.lib.codecs import READ_CHUNK
from ops_platform.lib.files import open_private, private_dir


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Write a private file (0600) under a temporary name in the same folder, fsync, rename, fsync
    the folder. A failure (a full disk) leaves the old file, if any, and no partial file."""
    private_dir(path.parent)
    temporary = path.with_name(f".{path.name}.partial")
    temporary.unlink(missing_ok=True)
    try:
        with open_private(temporary) as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class CopyCheck:
    """One stored copy of a backup checked against the manifest in the same store.
    ``ok`` is True when it matches, False when it does not (corrupt), None when it could not be
    checked (a read error, S3 unreachable, the file gone meanwhile)."""

    location: str
    name: str
    ok: bool | None
    detail: str
    size: int | None = None
    method: str = "size"

    @property
    def status(self) -> str:
        return {True: "ok", False: "corrupt", None: "error"}[self.ok]


def _size_differs(location: str, name: str, size: int, manifest: Manifest) -> CopyCheck | None:
    if size == manifest.stored_bytes:
        return None
    return CopyCheck(location, name, False, f"size {size} bytes differs from the manifest's {manifest.stored_bytes}",
                     size)


@dataclass
class ManifestListing:
    manifests: list[Manifest] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)


def collect_manifests(environment: str, names, read: Callable[[str], bytes]) -> ManifestListing:
    """Parse every committed manifest among ``names``, newest first; unreadable ones are reported."""
    listing = ManifestListing()
    for name in names:
        if not name.endswith(MANIFEST_SUFFIX) or name.startswith("."):
            continue
        try:
            manifest = Manifest.from_json(read(name))
        except (OSError, ValueError, TypeError) as error:
            listing.unreadable[name] = f"{type(error).__name__}: {error}"
            continue
        if manifest.environment == environment:
            listing.manifests.append(manifest)
    listing.manifests.sort(key=lambda m: m.created, reverse=True)
    return listing


S3_CHECKSUM_ALGORITHMS = ("SHA256", "SHA1", "CRC64NVME", "CRC32C", "CRC32")


def s3_checksum_of(head: dict, algorithm: str | None = None) -> str | None:
    """``ALGORITHM:value`` from a head_object answer (ChecksumMode ENABLED): the given algorithm's,
    or the first the store keeps; None when it keeps none."""
    for name in (algorithm,) if algorithm else S3_CHECKSUM_ALGORITHMS:
        value = head.get(f"Checksum{name}")
        if value:
            return f"{name}:{value}"
    return None


class LocalStore:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    def env_dir(self, environment: str) -> Path:
        return self.root / environment

    def path(self, environment: str, name: str) -> Path:
        return self.env_dir(environment) / name

    def location(self, environment: str, name: str) -> str:
        return str(self.path(environment, name))

    def write_manifest(self, manifest: Manifest) -> Path:
        path = self.path(manifest.environment, manifest.id + MANIFEST_SUFFIX)
        write_atomically(path, manifest.to_json().encode())
        return path

    def list_names(self, environment: str) -> list[str]:
        folder = self.env_dir(environment)
        if not folder.is_dir():
            return []
        return sorted(entry.name for entry in folder.iterdir() if entry.is_file())

    def list_manifests(self, environment: str) -> ManifestListing:
        return collect_manifests(environment, self.list_names(environment),
                                 lambda name: self.path(environment, name).read_bytes())

    def delete(self, environment: str, name: str) -> None:
        self.path(environment, name).unlink(missing_ok=True)

    def check_copy(self, manifest: Manifest) -> CopyCheck:
        """The artifact's size, then its sha256 (read in full), against this folder's manifest."""
        name = manifest.artifact
        try:
            path = self.path(manifest.environment, name)
            size = path.stat().st_size
            if mismatch := _size_differs("local", name, size, manifest):
                return mismatch
            digest = sha256_of_file(path)
        except OSError as error:
            return CopyCheck("local", name, None, f"could not be read: {type(error).__name__}: {error}")
        if digest != manifest.sha256:
            return CopyCheck("local", name, False, f"sha256 {digest[:12]}... differs from the manifest's "
                                                   f"{manifest.sha256[:12]}...", size, "sha256")
        return CopyCheck("local", name, True, "size and sha256 match the manifest", size, "sha256")


class S3Store:
    """The bucket. ``encryption`` (AWS_S3_SSE) is sent with every object written, and
    ``encryption_problem`` says when S3 reports an object encrypted otherwise."""

    def __init__(self, client, bucket: str, prefix: str = "backups",
                 encryption: s3_encryption.ServerSideEncryption | None = None, name: str = "s3",
                 credentials: tuple[str, str] | None = None):
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.encryption = encryption
        self.name = name  # "s3" for AWS_S3_BUCKET, else the destination's name in ops_platform.yaml
        self.credentials = credentials  # a destination's own (access key id, secret); None: the standard variables

    def key(self, environment: str, name: str) -> str:
        return f"{self.prefix}/{environment}/{name}" if self.prefix else f"{environment}/{name}"

    def location(self, environment: str, name: str) -> str:
        return f"s3://{self.bucket}/{self.key(environment, name)}"

    def write_manifest(self, manifest: Manifest) -> str:
        key = self.key(manifest.environment, manifest.id + MANIFEST_SUFFIX)
        self.client.put_object(
            Bucket=self.bucket, Key=key, Body=manifest.to_json().encode(), ContentType="application/json",
            **s3_encryption.put_args(self.encryption),
        )
        return key

    def list_names(self, environment: str) -> dict[str, dict]:
        """Every object under the environment's folder, by file name, across all pages."""
        folder = self.key(environment, "")
        paginator = self.client.get_paginator("list_objects_v2")
        found = {}
        for page in paginator.paginate(Bucket=self.bucket, Prefix=folder):
            for item in page.get("Contents", []):
                name = item["Key"][len(folder):]
                if name and "/" not in name:
                    found[name] = item
        return found

    def has(self, environment: str, name: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(environment, name))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def read_bytes(self, environment: str, name: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self.key(environment, name))["Body"].read()

    def list_manifests(self, environment: str) -> ManifestListing:
        return collect_manifests(environment, self.list_names(environment),
                                 lambda name: self.read_bytes(environment, name))

    def head(self, environment: str, name: str) -> dict:
        """head_object with the checksum S3 keeps (ChecksumMode ENABLED) and its encryption."""
        return self.client.head_object(Bucket=self.bucket, Key=self.key(environment, name), ChecksumMode="ENABLED")

    def object_checksum(self, environment: str, name: str) -> tuple[int, str | None]:
        """The object's size and the checksum S3 keeps for it (``ALGORITHM:value``, e.g. the
        composite SHA256 of a multipart upload), from one HEAD request: no download."""
        head = self.head(environment, name)
        return int(head["ContentLength"]), s3_checksum_of(head)

    def encryption_problem(self, head: dict) -> str | None:
        """Why an object (its head_object answer) is not encrypted as AWS_S3_SSE asks; None when it
        is, or when no encryption is configured."""
        return self.encryption.problem(head) if self.encryption else None

    def check_copy(self, manifest: Manifest) -> CopyCheck:
        """The object's size and the checksum S3 keeps for it against this bucket's manifest
        (``s3_checksum``, recorded at upload), from one HEAD request. A manifest from before
        checksums were recorded can only have its size compared, and says so."""
        name = manifest.artifact
        recorded = manifest.checksum_in(self.name)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(manifest.environment, name),
                                           ChecksumMode="ENABLED")
        except Exception as error:  # noqa: BLE001 - reported with the copy
            return CopyCheck(self.name, name, None, f"could not be checked: {type(error).__name__}: {error}")
        size = int(head["ContentLength"])
        if mismatch := _size_differs(self.name, name, size, manifest):
            return mismatch
        if not recorded:
            return CopyCheck(self.name, name, True, "size matches; no checksum was recorded at upload, "
                                                    "so only the size was compared", size, "size")
        current = s3_checksum_of(head, recorded.split(":", 1)[0])
        if current != recorded:
            found = current or "no checksum"
            return CopyCheck(self.name, name, False, f"S3 keeps {found} for it, but {recorded} was recorded at "
                                                     "upload (the object was replaced)", size, "s3-checksum")
        return CopyCheck(self.name, name, True, "size and S3 checksum match the manifest", size, "s3-checksum")

    def object_sha256(self, environment: str, name: str) -> tuple[str, int]:
        body = self.client.get_object(Bucket=self.bucket, Key=self.key(environment, name))["Body"]
        digest = hashlib.sha256()
        size = 0
        for chunk in body.iter_chunks(READ_CHUNK):
            digest.update(chunk)
            size += len(chunk)
        return digest.hexdigest(), size

    def abort_incomplete_uploads(self, key_prefix: str, older_than=None) -> list[str]:
        """Abort multipart uploads under a key prefix (optionally only those started before a time)."""
        aborted = []
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=key_prefix):
            for upload in page.get("Uploads", []):
                if older_than is not None and upload["Initiated"] >= older_than:
                    continue
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                aborted.append(upload["Key"])
        return aborted

    def abort_incomplete_uploads_within(self, key_prefix: str, wait_seconds: float) -> list[str]:
        """``abort_incomplete_uploads``, waiting at most ``wait_seconds`` for it: when S3 is the
        thing that hangs, the caller goes on (retention aborts stale uploads after a day anyway).
        Returns the keys aborted in time; S3 errors are swallowed for the same reason."""
        aborted: list[str] = []

        def work() -> None:
            try:
                aborted.extend(self.abort_incomplete_uploads(key_prefix))
            except Exception:  # noqa: BLE001, S110 - best effort, see above
                pass

        thread = threading.Thread(target=work, name="s3-abort", daemon=True)
        thread.start()
        thread.join(wait_seconds)
        return list(aborted)

    def delete(self, environment: str, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(environment, name))

    def delete_many(self, environment: str, names: list[str]) -> None:
        """Delete files of the environment's folder, up to 1,000 per request; raises on any failure."""
        for start in range(0, len(names), 1000):
            batch = [{"Key": self.key(environment, name)} for name in names[start:start + 1000]]
            response = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                raise OSError(f"S3 refused to delete {len(errors)} object(s), e.g. {first.get('Key')}: "
                              f"{first.get('Code')} {first.get('Message')}")


def make_s3_client(max_attempts: int | None = None, connect_timeout: float = 5, read_timeout: float = 60,
                   region_name: str | None = None, endpoint_url: str | None = None,
                   credentials: tuple[str, str] | None = None):
    """A boto3 S3 client with botocore's standard retries (``AWS_MAX_ATTEMPTS``, default 5) and
    timeouts on every call. Credentials (unless given: a destination's own), and the endpoint
    unless given (``AWS_ENDPOINT_URL_S3``), come from the standard AWS variables."""
    from botocore.config import Config

    from ops_platform.lib import settings

    if max_attempts is None:
        max_attempts = settings.value_of(settings.S3_MAX_ATTEMPTS)
    config = Config(
        retries={"mode": "standard", "total_max_attempts": max_attempts},  # the first try included, as AWS_MAX_ATTEMPTS means
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    keys = {"aws_access_key_id": credentials[0], "aws_secret_access_key": credentials[1]} if credentials else {}
    return new_boto3_session().client("s3", config=config, region_name=region_name, endpoint_url=endpoint_url, **keys)


_SESSION_LOCK = threading.Lock()


@functools.cache
def _service_model_loader():
    from botocore.loaders import create_loader

    return create_loader()


def new_boto3_session():
    """A boto3 session of its own (credentials and region read now, from the environment) that
    shares the process's parsed service models. A plain new session parses S3's model again: a
    restore from S3 made three clients, and held about 30 MiB more for it."""
    import boto3
    import botocore.session

    with _SESSION_LOCK:
        loader = _service_model_loader()
        core = botocore.session.get_session()
        core.register_component("data_loader", loader)
        session = boto3.session.Session(botocore_session=core)
        loader.search_paths[:] = list(dict.fromkeys(loader.search_paths))  # boto3 appends its data path each time
        return session


def stores_from_environ(environ=None, *, max_attempts: int = 2, read_timeout: float = 20) -> tuple[LocalStore, S3Store | None]:
    """The stores the code location uses (BACKUP_DIR, AWS_S3_BUCKET, AWS_S3_PREFIX), for commands
    that read them directly. Few retries: an operator at a terminal wants a quick answer."""
    from ops_platform.config import backup_root

    environ = os.environ if environ is None else environ
    bucket = environ.get("AWS_S3_BUCKET", "").strip()
    prefix = environ.get("AWS_S3_PREFIX", "").strip() or "backups"
    s3 = S3Store(make_s3_client(max_attempts=max_attempts, read_timeout=read_timeout), bucket, prefix) if bucket else None
    return LocalStore(backup_root(environ)), s3


def destination_store(destination, *, max_attempts: int | None = None, read_timeout: float = 60) -> S3Store:
    """An off-site copy of ``destinations:`` (lib/targets.Destination) as a store named after it,
    with its own endpoint and credentials and the same retries and timeouts as the main bucket."""
    credentials = ((destination.access_key_id, destination.secret_access_key)
                   if destination.access_key_id else None)
    client = make_s3_client(max_attempts=max_attempts, read_timeout=read_timeout, region_name=destination.region,
                            endpoint_url=destination.endpoint_url, credentials=credentials)
    return S3Store(client, destination.bucket, destination.prefix, name=destination.name, credentials=credentials)


def destination_stores(environ=None, *, max_attempts: int | None = None, read_timeout: float = 60) -> list[S3Store]:
    """Every destination of ``ops_platform.yaml`` as a store, in file order (none without a file).
    Raises ConfigError (one line) for a bad file."""
    from ops_platform.lib.targets import load_platform_config

    platform = load_platform_config(environ)
    return [destination_store(destination, max_attempts=max_attempts, read_timeout=read_timeout)
            for destination in platform.destinations.values()]
