-- The read-only webserver's PostgreSQL role (systemd/ops-platform-webserver-readonly.service): it reads
-- the Dagster instance and writes nothing but Dagster's partition-status cache.
--
-- Run it in the instance's database once its tables exist (`dagster instance migrate` as the user ops,
-- README "Instance"), as an administrator who may create roles and is a member of the instance's role:
--   psql -d ops_platform_dagster -v owner=ops_platform -v viewer=ops_platform_viewer -f viewer-role.sql
-- Then give the role a password (psql: \password ops_platform_viewer) and write it to
-- /etc/ops_platform/viewer.pgpass as host:port:database:ops_platform_viewer:password (chmod 600, root).
-- Running it again changes nothing.
\set ON_ERROR_STOP on

SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'viewer') AS viewer_missing \gset
\if :viewer_missing
CREATE ROLE :"viewer" LOGIN;
\endif

GRANT CONNECT ON DATABASE :"DBNAME" TO :"viewer";
GRANT USAGE ON SCHEMA public TO :"viewer";
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"viewer";
-- Tables a later Dagster version adds (created by the instance's role) are readable too.
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT SELECT ON TABLES TO :"viewer";

-- The one write. dagster-webserver keeps each partitioned asset's materialized, failed and in-progress
-- partitions in asset_keys.cached_status_data, and updates that column whenever a page asks for the
-- partitions (the Partitions tab, the asset graph, the catalog); the request fails when it cannot.
-- It is a cache of what the event log already says: this role can make a partition look wrong in
-- the UI until the next update, never launch, change or delete anything.
GRANT UPDATE (cached_status_data) ON asset_keys TO :"viewer";

-- Every page (index.html) reads the instance's id from instance_info and inserts one when there is
-- none, which this role may not do: every page would fail with "permission denied for table
-- instance_info" on an instance whose operators' webserver has not served a page yet. Insert it here.
INSERT INTO instance_info (run_storage_id)
SELECT gen_random_uuid()::text WHERE NOT EXISTS (SELECT 1 FROM instance_info);
