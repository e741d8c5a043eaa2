#!/usr/bin/env bash
# OFFLINE TEST STAND-IN for the entrypoint of the official postgres image (docker-library/postgres),
# used only by nanika's docker runtime tests (see tests/docker/README.md). It follows the official
# script's contract where nanika depends on it:
#   - a first argument starting with '-' means `postgres <args>`;
#   - `postgres …` as root: make PGDATA and the socket directory the postgres user's, then re-run
#     this script as that user (the official image uses gosu/su-exec; here setpriv);
#   - on an empty PGDATA: initdb with POSTGRES_USER as the superuser and POSTGRES_PASSWORD as its
#     password, pg_hba "host all all all scram-sha-256" (after initdb's trust lines for the socket
#     and loopback inside the container), a temporary server on the socket only (so a healthcheck
#     over TCP never sees it) to create POSTGRES_DB and run /docker-entrypoint-initdb.d/*.sql|*.sh;
#   - then `exec` the command as given (`postgres -c config_file=…` from compose.yaml).
# Any other command (`bash`, `psql …`) is exec'd unchanged.
set -Eeuo pipefail

# VAR_FILE support, as the official image: POSTGRES_PASSWORD_FILE=/run/secrets/… .
file_env() {
	local var="$1" file_var="${1}_FILE" def="${2:-}"
	if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
		echo >&2 "error: both $var and $file_var are set (but are exclusive)"
		exit 1
	fi
	local val="$def"
	if [ -n "${!var:-}" ]; then
		val="${!var}"
	elif [ -n "${!file_var:-}" ]; then
		val="$(<"${!file_var}")"
	fi
	export "$var"="$val"
	unset "$file_var"
}

setup_env() {
	file_env POSTGRES_PASSWORD
	file_env POSTGRES_USER postgres
	file_env POSTGRES_DB "$POSTGRES_USER"
	file_env POSTGRES_INITDB_ARGS
	: "${POSTGRES_HOST_AUTH_METHOD:=}"
	DATABASE_ALREADY_EXISTS=
	if [ -s "$PGDATA/PG_VERSION" ]; then
		DATABASE_ALREADY_EXISTS=true
	fi
}

# postgres --help/--version/-C …: no set-up, as the official script.
want_help() {
	local arg
	for arg; do
		case "$arg" in
			-'?' | --help | --describe-config | -V | --version | -C) return 0 ;;
		esac
	done
	return 1
}

create_directories() {
	mkdir -p "$PGDATA"
	chmod 00700 "$PGDATA" || :
	mkdir -p /var/run/postgresql || :
	chmod 03775 /var/run/postgresql || :
	if [ "$(id -u)" = 0 ]; then
		find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
		find /var/run/postgresql \! -user postgres -exec chown postgres:postgres '{}' +
	fi
}

init_database_dir() {
	if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
		cat >&2 <<-'EOE'
			Error: Database is uninitialized and superuser password is not specified.
			       You must specify POSTGRES_PASSWORD to a non-empty value for the
			       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".
			       (or POSTGRES_HOST_AUTH_METHOD=trust to allow all connections without a password)
		EOE
		exit 1
	fi
	# initdb's own default: trust for the socket and for loopback inside the container (as in
	# the official image); every other host gets the rule appended below.
	# shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a word list, as in the official image
	initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
		--encoding=UTF8 --auth-local=trust --auth-host=trust $POSTGRES_INITDB_ARGS
}

setup_hba() {
	if [ "$1" = postgres ]; then shift; fi
	local auth
	# password_encryption of the configuration given (scram-sha-256 on 15) is the method.
	auth="$(postgres -C password_encryption "$@")"
	: "${POSTGRES_HOST_AUTH_METHOD:=$auth}"
	printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"
}

# The temporary server: the given configuration, but no TCP listener at all.
temp_server_start() {
	if [ "$1" = postgres ]; then shift; fi
	set -- "$@" -c listen_addresses='' -p "${PGPORT:-5432}"
	PGUSER="${PGUSER:-$POSTGRES_USER}" pg_ctl -D "$PGDATA" -o "$(printf '%q ' "$@")" -w start
}

temp_server_stop() {
	PGUSER="${PGUSER:-postgres}" pg_ctl -D "$PGDATA" -m fast -w stop
}

process_sql() {
	local runner=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
	if [ -n "$POSTGRES_DB" ]; then
		runner+=(--dbname "$POSTGRES_DB")
	fi
	PGHOST='' PGHOSTADDR='' "${runner[@]}" "$@"
}

# POSTGRES_DB='' for psql's connection only; --set db= takes the real name (as the official script).
# shellcheck disable=SC2097,SC2098
setup_db() {
	local exists
	exists="$(POSTGRES_DB='' process_sql --dbname postgres --set db="$POSTGRES_DB" --tuples-only <<-'EOSQL'
		SELECT 1 FROM pg_database WHERE datname = :'db' ;
	EOSQL
	)"
	if [ -z "$exists" ]; then
		POSTGRES_DB='' process_sql --dbname postgres --set db="$POSTGRES_DB" <<-'EOSQL'
			CREATE DATABASE :"db" ;
		EOSQL
	fi
}

process_init_files() {
	local f
	for f; do
		case "$f" in
			*.sh)
				if [ -x "$f" ]; then
					echo "$0: running $f"
					"$f"
				else
					echo "$0: sourcing $f"
					# shellcheck disable=SC1090
					. "$f"
				fi
				;;
			*.sql) echo "$0: running $f"; process_sql -f "$f" ;;
			*) echo "$0: ignoring $f (this stand-in runs only *.sh and *.sql)" ;;
		esac
	done
}

main() {
	if [ "${1:0:1}" = '-' ]; then
		set -- postgres "$@"
	fi

	if [ "$1" = postgres ] && ! want_help "$@"; then
		setup_env
		create_directories
		if [ "$(id -u)" = 0 ]; then
			exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
		fi

		if [ -z "$DATABASE_ALREADY_EXISTS" ]; then
			init_database_dir
			setup_hba "$@"
			export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
			temp_server_start "$@"
			setup_db
			shopt -s nullglob
			process_init_files /docker-entrypoint-initdb.d/*
			shopt -u nullglob
			temp_server_stop
			unset PGPASSWORD
			printf '\nPostgreSQL init process complete; ready for start up.\n\n'
		else
			printf '\nPostgreSQL Database directory appears to contain a database; Skipping initialization\n\n'
		fi
	fi

	exec "$@"
}

main "$@"
