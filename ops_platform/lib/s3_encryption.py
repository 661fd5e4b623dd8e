"""S3 server-side encryption of every object the platform writes (``AWS_S3_SSE``,
``AWS_S3_SSE_KMS_KEY_ID``): the arguments each put sends, and a check that what S3 reports for an
object is that encryption, so a bucket or an S3-compatible store that silently drops it is caught.

Without ``AWS_S3_SSE`` nothing is sent and nothing is checked (the bucket's default applies).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ops_platform.config import ConfigError

AES256 = "AES256"
KMS = "aws:kms"
ALGORITHMS = (AES256, KMS)


@dataclass(frozen=True)
class ServerSideEncryption:
    algorithm: str
    kms_key_id: str | None = None

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"server-side encryption must be {' or '.join(ALGORITHMS)}, got '{self.algorithm}'")
        if self.kms_key_id and self.algorithm != KMS:
            raise ValueError(f"a KMS key needs {KMS}, not {self.algorithm}")

    def put_args(self) -> dict[str, str]:
        """The arguments of put_object, create_multipart_upload and the transfer manager's ExtraArgs."""
        args = {"ServerSideEncryption": self.algorithm}
        if self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id
        return args

    def describe(self) -> str:
        if self.algorithm == AES256:
            return "AES256 (SSE-S3)"
        return f"{KMS} with key {self.kms_key_id}" if self.kms_key_id else f"{KMS} with the bucket's default KMS key"

    def problem(self, reported: Mapping) -> str | None:
        """Why an object is not encrypted as configured, from S3's answer to head_object or
        put_object (``ServerSideEncryption``, ``SSEKMSKeyId``); None when it is."""
        algorithm = reported.get("ServerSideEncryption")
        if algorithm != self.algorithm:
            found = f"reports {algorithm}" if algorithm else "reports no server-side encryption"
            return f"S3 {found} for it, but AWS_S3_SSE asks for {self.algorithm}"
        if self.kms_key_id and not kms_key_matches(self.kms_key_id, reported.get("SSEKMSKeyId")):
            return (f"S3 encrypted it with KMS key {reported.get('SSEKMSKeyId') or '(none reported)'}, "
                    f"not {self.kms_key_id} (AWS_S3_SSE_KMS_KEY_ID)")
        return None


def kms_key_matches(configured: str, reported: str | None) -> bool:
    """S3 reports the key's ARN (``arn:aws:kms:<region>:<account>:key/<id>``) whether the key was
    given by id or ARN. An alias (``alias/name`` or its ARN) names a key S3 does not echo, so only
    the algorithm can be confirmed for it."""
    if ":alias/" in configured or configured.startswith("alias/"):
        return True
    if not reported:
        return False
    return reported == configured or reported.endswith(f":key/{configured}") or \
        configured.endswith(f":key/{reported}")


def reported(head: Mapping) -> str:
    """What S3 says about an object's encryption, for metadata: ``AES256``, ``aws:kms <key>`` or ``none``."""
    algorithm = head.get("ServerSideEncryption")
    if not algorithm:
        return "none"
    key = head.get("SSEKMSKeyId")
    return f"{algorithm} {key}" if key else algorithm


def put_args(encryption: ServerSideEncryption | None) -> dict[str, str]:
    return encryption.put_args() if encryption else {}


def from_settings(algorithm: str | None, kms_key_id: str | None) -> ServerSideEncryption | None:
    """The encryption the two settings (already parsed) ask for; None without AWS_S3_SSE. A KMS
    key without aws:kms is refused in one line rather than silently ignored."""
    if kms_key_id and algorithm != KMS:
        raise ConfigError(f"AWS_S3_SSE_KMS_KEY_ID is set, but AWS_S3_SSE is {algorithm or 'not set'}: "
                          f"set AWS_S3_SSE={KMS} to use the key, or unset it")
    return ServerSideEncryption(algorithm, kms_key_id) if algorithm else None
