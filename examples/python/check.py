"""Round-trips data through nanika's PostgreSQL (psycopg 3) and Redis (redis-py).

Reads only what `nanika exec` provides: DATABASE_URL_LIBPQ (the libpq form of DATABASE_URL;
libpq, and so psycopg, rejects Prisma's `?schema=public`) and REDIS_URL. Prints a JSON summary
and exits 1 when anything read back differs from what was written.

From the project root, with a venv that has psycopg and redis (scripts/ci-client-deps makes one):
    nanika exec -- target/client-deps/venv/bin/python examples/python/check.py
"""

import json
import os
import sys
import uuid

import psycopg
import redis

token = uuid.uuid4().hex
summary = {}
problems = []

with psycopg.connect(os.environ["DATABASE_URL_LIBPQ"]) as conn:
    user, database, search_path = conn.execute(
        "SELECT current_user, current_database(), current_setting('search_path')"
    ).fetchone()
    # A temporary table lives in this connection only: nothing is left behind.
    conn.execute("CREATE TEMP TABLE roundtrip (id serial, note text)")
    (row_id,) = conn.execute(
        "INSERT INTO roundtrip (note) VALUES (%s) RETURNING id", (token,)
    ).fetchone()
    (back,) = conn.execute(
        "SELECT note FROM roundtrip WHERE id = %s", (row_id,)
    ).fetchone()
summary["postgres"] = {
    "user": user,
    "database": database,
    "search_path": search_path,
    "roundtrip": back == token,
}
if back != token:
    problems.append(f"PostgreSQL gave back {back!r} for {token!r}")
if search_path != "public":
    problems.append(f"search_path is {search_path!r}, not 'public'")

client = redis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)
key = f"nanika:example:{token}"
# A TTL, so that a run that dies before the DEL leaves nothing for long.
client.set(key, token, ex=60)
value, ttl = client.get(key), client.ttl(key)
client.delete(key)
summary["redis"] = {
    "version": client.info("server")["redis_version"],
    "roundtrip": value == token,
    "ttl_kept": 0 < ttl <= 60,
}
if value != token:
    problems.append(f"Redis gave back {value!r} for {token!r}")
if not 0 < ttl <= 60:
    problems.append(f"Redis kept a TTL of {ttl}, not 60 s at most")

summary["ok"] = not problems
print(json.dumps(summary, indent=2))
for problem in problems:
    print(f"mismatch: {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
