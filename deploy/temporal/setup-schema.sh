#!/bin/sh
# Temporal's two databases on PostgreSQL, set up with the official admin tools
# (temporalio/admin-tools, whose version must match the server's).
#
# Safe to run again: `create` keeps an existing database, `setup-schema -v 0.0` leaves a
# newer version alone, and `update-schema` applies only the versions not applied yet. After
# upgrading both images, this same script migrates the schema to the new server's version.
set -eu

: "${POSTGRES_SEEDS:?the PostgreSQL host}"
: "${POSTGRES_USER:?the PostgreSQL user}"
: "${SQL_PASSWORD:?the PostgreSQL password (read by temporal-sql-tool)}"
DB_PORT="${DB_PORT:-5432}"
SCHEMA_DIR="${TEMPORAL_SCHEMA_DIR:-/etc/temporal/schema/postgresql/v12}"

sql_tool() {
    temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$DB_PORT" -u "$POSTGRES_USER" "$@"
}

for pair in temporal:temporal temporal_visibility:visibility; do
    database="${pair%%:*}"
    schema="${pair#*:}"
    echo "Temporal schema: database $database"
    sql_tool --db "$database" create
    sql_tool --db "$database" setup-schema -v 0.0
    sql_tool --db "$database" update-schema -d "$SCHEMA_DIR/$schema/versioned"
done
echo "Temporal schema: up to date"
