"""The application's PostgreSQL database: one external asset, partitioned by environment, so
the lineage reads per environment (production's backup comes from production's database)."""

import dagster as dg

from ops_platform.defs.environments import environment_partitions

DATABASE_KEY = dg.AssetKey("database")

database = dg.AssetSpec(
    key=DATABASE_KEY,
    description="The application's PostgreSQL database, one partition per configured environment "
                "(PRODUCTION_DATABASE_URL, STAGING_DATABASE_URL, DATABASE_URL). It is managed outside "
                "Dagster; restores are recorded on it, per environment.",
    group_name="databases",
    kinds={"postgres"},
    partitions_def=environment_partitions,
)

identity = dg.IdentityPartitionMapping()
database_dep = dg.AssetDep(database, partition_mapping=identity)
