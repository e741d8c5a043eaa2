# Rendered by `nanika init` for compose.yaml's `ha` profile. The postgres image runs it once, when it
# initialises an empty volume. The image's own rule (`host all all all`) does not cover physical
# replication, which pg_basebackup and a standby need: this adds it for POSTGRES_USER only (the
# superuser, who can already read everything over the same network), from the compose network
# only (`samenet`), with its scram-sha-256 password. Running it again adds nothing.
rule="host replication \"$POSTGRES_USER\" samenet scram-sha-256"
if ! grep -qxF "$rule" "$PGDATA/pg_hba.conf"; then
    printf '\n# compose.yaml profile ha: the replica copies and follows this server.\n%s\n' "$rule" >>"$PGDATA/pg_hba.conf"
fi
