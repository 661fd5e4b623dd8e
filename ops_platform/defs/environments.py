"""The configured environments, and the partitions every per-environment asset shares (the
database, its backups, retention, restores): one partition per environment, in the fixed order
production, staging, development."""

import dagster as dg

from ops_platform.config import configured_environment_names

ENVIRONMENT_NAMES = configured_environment_names()
environment_partitions = dg.StaticPartitionsDefinition(ENVIRONMENT_NAMES)
