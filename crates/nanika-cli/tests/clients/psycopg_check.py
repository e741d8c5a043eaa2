"""Connects with psycopg 3 to $DATABASE_URL_LIBPQ and prints `user|database|search_path`.

libpq would also take defaults from the PG* variables nanika sets, so they are removed first: the
URL alone has to carry the connection.
"""

import os

import psycopg

url = os.environ["DATABASE_URL_LIBPQ"]
for name in [name for name in os.environ if name.startswith("PG")]:
    del os.environ[name]

with psycopg.connect(url) as conn:
    row = conn.execute(
        "SELECT current_user, current_database(), current_setting('search_path')"
    ).fetchone()
print("|".join(row))
