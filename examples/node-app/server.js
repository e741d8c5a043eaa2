// A minimal Express app wired to nanika's services the way the game backend is: cookie sessions
// kept in Redis by connect-redis (node-redis v4), data in PostgreSQL through node-postgres.
//
// It reads only what `nanika exec` provides, plus APP_PORT, its own (default 3000):
//   REDIS_URL           node-redis takes it as is, a password included (redis://:PASSWORD@host:port)
//   DATABASE_URL_LIBPQ  the libpq form of DATABASE_URL: `options=-c search_path=public` stands for
//                       Prisma's `?schema=public`, and node-postgres sends it to the server
//   SESSION_SECRET      signs the session cookie
//
// From the project root: nanika exec -- node examples/node-app/server.js
// crates/nanika-cli/tests/examples.rs runs it exactly so, and prints `listening on PORT` when ready.
'use strict';

const express = require('express');
const session = require('express-session');
const RedisStore = require('connect-redis').default;
const { createClient } = require('redis');
const pg = require('pg');

for (const name of ['REDIS_URL', 'SESSION_SECRET']) {
  if (!process.env[name]) {
    console.error(`${name} is not set: run me with \`nanika exec -- node ${process.argv[1]}\``);
    process.exit(2);
  }
}
const port = Number(process.env.APP_PORT || 3000);

const redis = createClient({ url: process.env.REDIS_URL });
redis.on('error', (err) => console.error(`redis: ${err.message}`));

// Without a connection string node-postgres reads the PG* variables, which nanika sets as well.
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL_LIBPQ });

const app = express();
app.use(
  session({
    // Keys are `sess:<id>` (connect-redis's default prefix, the one `nanika sessions` backs up),
    // each with a TTL that follows the cookie's expiry.
    store: new RedisStore({ client: redis }),
    secret: process.env.SESSION_SECRET,
    resave: false,
    // No Redis key for a visitor who never logged in.
    saveUninitialized: false,
    cookie: { httpOnly: true, sameSite: 'lax', maxAge: 24 * 60 * 60 * 1000 },
  }),
);

app.post('/login', (req, res, next) => {
  const userId = Number(req.query.user);
  if (!Number.isInteger(userId)) {
    return res.status(400).json({ error: 'POST /login?user=N' });
  }
  // A new session id at login, so an id handed out before it cannot be reused (fixation).
  req.session.regenerate((err) => {
    if (err) return next(err);
    req.session.userId = userId;
    req.session.visits = 0;
    res.json({ userId, visits: 0 });
  });
});

app.get('/me', (req, res) => {
  if (req.session.userId === undefined) {
    return res.status(401).json({ error: 'not logged in' });
  }
  req.session.visits += 1;
  res.json({ userId: req.session.userId, visits: req.session.visits });
});

// destroy deletes the Redis key: the next `nanika sessions backup` drops it from the backup too.
app.post('/logout', (req, res, next) => {
  req.session.destroy((err) => {
    if (err) return next(err);
    res.clearCookie('connect.sid').status(204).end();
  });
});

// One round trip through PostgreSQL; Express 5 passes a rejected promise on to its error handler.
app.get('/db', async (req, res) => {
  const client = await pool.connect();
  try {
    const { rows: [info] } = await client.query(
      "SELECT current_setting('search_path') AS search_path, now() AS now",
    );
    // A temporary table dropped at commit: nothing is left behind in the app's database.
    await client.query('BEGIN');
    await client.query('CREATE TEMP TABLE roundtrip (id serial, note text) ON COMMIT DROP');
    const note = `hello from ${process.pid}`;
    const { rows: [{ id }] } = await client.query(
      'INSERT INTO roundtrip (note) VALUES ($1) RETURNING id',
      [note],
    );
    const { rows: [back] } = await client.query('SELECT note FROM roundtrip WHERE id = $1', [id]);
    await client.query('COMMIT');
    res.json({ searchPath: info.search_path, now: info.now, roundtrip: back.note === note });
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    client.release();
  }
});

async function main() {
  await redis.connect();
  // The loopback only, like nanika's servers.
  const server = app.listen(port, '127.0.0.1', (err) => {
    if (err) throw err;
    console.log(`listening on ${port}`);
  });
  const stop = () => {
    server.close();
    Promise.allSettled([redis.quit(), pool.end()]).then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
