"""The configured environments' databases, as external assets, and the environment partitions
every per-environment asset (backups, retention, restores) shares."""


import dagster as dg

from ops_platform.config import configured_environment_names

ENVIRONMENT_NAMES = configured_environment_names()
environment_partitions = dg.StaticPartitionsDefinition(ENVIRONMENT_NAMES)


def database_key(environment: str) -> dg.AssetKey:
    return dg.AssetKey(f"{environment}_database")


database_specs = [
    dg.AssetSpec(
        key=database_key(environment),
        description=f"The {environment} application's PostgreSQL database (managed outside Dagster).",
        group_name="databases",
        kinds={"postgres"},
        metadata={"environment": environment},
    )
    for environment in ENVIRONMENT_NAMES
]
