#!/bin/sh
# OFFLINE TEST STAND-IN for the entrypoint of the official redis image (docker-library/redis),
# used only by nanika's docker runtime tests (see tests/docker/README.md). As the official one:
#   - a first argument that starts with '-' or ends with '.conf' means `redis-server <args>`;
#   - `redis-server …` as root: hand the files in the working directory (/data) that the `redis`
#     user does not own to it, and re-run this script as `redis` (official: su-exec/gosu;
#     here setpriv from util-linux);
#   - umask 0077 when it is still the default 0022;
#   - anything else is exec'd unchanged.
# One addition: the official image compiles Redis with protected-mode off by default (published
# ports are the access control in Docker). Debian's binary defaults to protected-mode yes, which
# refuses every client from outside the container while no password is set, so this script adds
# `--protected-mode no` to a `redis-server` command unless the command line or its config file
# (the first argument, when it is a file) sets protected-mode itself.
set -e

if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
	set -- redis-server "$@"
fi

if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
	find . \! -user redis -exec chown redis '{}' +
	exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

if [ "$1" = redis-server ]; then
	sets_protected_mode=
	for arg in "$@"; do
		case "$arg" in
			--protected-mode | --protected-mode\ *) sets_protected_mode=1 ;;
		esac
	done
	if [ -n "${2:-}" ] && [ "${2#-}" = "$2" ] && [ -f "$2" ] &&
		grep -Eqi '^[[:space:]]*protected-mode([[:space:]]|$)' "$2"; then
		sets_protected_mode=1
	fi
	if [ -z "$sets_protected_mode" ]; then
		set -- "$@" --protected-mode no
	fi
fi

um="$(umask)"
if [ "$um" = '0022' ]; then
	umask 0077
fi

exec "$@"
