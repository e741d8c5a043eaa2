//! Development data: a few users with known passwords, a lobby and sample messages. Running it
//! again changes nothing. Bulk mode adds load data with COPY, in the same one transaction, so an
//! interrupted or failed seed adds nothing at all.

use crate::error::{OpsError, Result};
use crate::interrupt::{Interrupt, race};
use crate::pg::{Ended, Session};
use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, SaltString};
use nanika_config::urls::DatabaseUrl;
use serde::Serialize;
use sqlx::postgres::PgConnection;
use std::io::Read;

/// The development users: (username, e-mail, password). The passwords are for local use only.
pub const DEV_USERS: &[(&str, &str, &str)] = &[
    ("alice", "alice@example.test", "alice-dev-password"),
    ("bob", "bob@example.test", "bob-dev-password"),
    ("carol", "carol@example.test", "carol-dev-password"),
];

/// The room every seeded message is in.
pub const LOBBY: &str = "lobby";

/// The sample messages: (author, body).
const SAMPLE_MESSAGES: &[(&str, &str)] = &[
    ("alice", "Welcome to the lobby!"),
    ("bob", "Hi Alice, ready for a game?"),
    ("carol", "Count me in."),
    ("alice", "Starting a match in five minutes."),
];

/// What a seed added.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SeedReport {
    /// Users added.
    pub users: u64,
    /// Rooms added.
    pub rooms: u64,
    /// Messages added.
    pub messages: u64,
}

/// An argon2id hash of `password`, as the app stores them.
pub fn hash_password(password: &str) -> Result<String> {
    let mut random = [0u8; 16];
    fs_err::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .map_err(OpsError::io("cannot read /dev/urandom for a salt"))?;
    let salt = SaltString::encode_b64(&random).expect("16 bytes make a valid salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| OpsError::Refused {
            message: format!("cannot hash a password: {e}"),
            hint: "report this".into(),
        })
}

/// Adds the development data that is not there yet, in one transaction.
pub async fn seed(conn: &mut PgConnection) -> Result<SeedReport> {
    let mut tx = sqlx::Connection::begin(conn)
        .await
        .map_err(OpsError::sql("cannot begin the seed"))?;
    let report = add_dev_data(&mut tx).await?;
    tx.commit()
        .await
        .map_err(OpsError::sql("cannot commit the seed"))?;
    Ok(report)
}

/// Adds the development data (see [`seed`]) and, when asked, `users` load users and `messages`
/// load messages (see [`add_load`]), all in one transaction on a connection of its own to `url`.
/// `progress(done, total)` is called after each batch of load rows.
///
/// When `interrupt` is raised before the commit, the work is abandoned and its session ended,
/// so the server rolls the whole transaction back: nothing is added, and the error says so.
pub async fn run(
    url: &DatabaseUrl,
    users: u64,
    messages: u64,
    progress: &mut dyn FnMut(u64, u64),
    interrupt: &Interrupt,
) -> Result<SeedReport> {
    let Some(mut session) = Session::open(url, interrupt).await? else {
        return Err(interrupt.error(Vec::new(), "nothing was added"));
    };
    let done = match race(interrupt, async {
        let mut tx = sqlx::Connection::begin(session.conn())
            .await
            .map_err(OpsError::sql("cannot begin the seed"))?;
        let mut report = add_dev_data(&mut tx).await?;
        if users + messages > 0 {
            add_load(&mut tx, users, messages, &mut report, progress).await?;
        }
        Ok::<_, OpsError>((tx, report))
    })
    .await
    {
        // The commit is not raced: once sent, the seed either happened or not, and a dropped
        // COMMIT would leave no way to tell which.
        Some(Ok((tx, report))) => Some(
            tx.commit()
                .await
                .map(|()| report)
                .map_err(OpsError::sql("cannot commit the seed")),
        ),
        Some(Err(error)) => Some(Err(error)),
        None => None,
    };
    match done {
        Some(result) => {
            session.close().await;
            result
        }
        None => {
            let cleaned = match session.abandon().await {
                Ended::Yes => "ended the seed's session, so the server rolled back its transaction",
                Ended::NotYet => {
                    "asked the server to end the seed's session; it rolls back its transaction when it does"
                }
            };
            Err(interrupt.error(vec![cleaned.into()], "no row was added"))
        }
    }
}

/// Adds the development data that is not there yet, in the caller's transaction.
async fn add_dev_data(tx: &mut PgConnection) -> Result<SeedReport> {
    let mut report = SeedReport::default();
    for (username, email, password) in DEV_USERS {
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT id FROM users WHERE lower(username) = lower($1)")
                .bind(username)
                .fetch_optional(&mut *tx)
                .await
                .map_err(OpsError::sql(
                    "cannot read users (has `nanika db migrate` run?)",
                ))?;
        if exists.is_none() {
            // Hash only for users that are added: argon2 is slow on purpose.
            let hash = hash_password(password)?;
            let added = sqlx::query("INSERT INTO users (username, email, password_hash) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(username)
                .bind(email)
                .bind(hash)
                .execute(&mut *tx)
                .await
                .map_err(OpsError::sql(format!("cannot add user {username}")))?;
            report.users += added.rows_affected();
        }
    }
    let rooms = sqlx::query(
        "INSERT INTO chat_rooms (name, created_by) SELECT $1, id FROM users WHERE lower(username) = 'alice' ON CONFLICT (name) DO NOTHING",
    )
    .bind(LOBBY)
    .execute(&mut *tx)
    .await
    .map_err(OpsError::sql("cannot add the lobby"))?;
    report.rooms = rooms.rows_affected();
    for (author, body) in SAMPLE_MESSAGES {
        let added = sqlx::query(
            "INSERT INTO chat_messages (room_id, author_id, body) \
             SELECT r.id, u.id, $3 FROM chat_rooms r, users u WHERE r.name = $1 AND lower(u.username) = $2 \
             AND NOT EXISTS (SELECT 1 FROM chat_messages m WHERE m.room_id = r.id AND m.author_id = u.id AND m.body = $3)",
        )
        .bind(LOBBY)
        .bind(author)
        .bind(body)
        .execute(&mut *tx)
        .await
        .map_err(OpsError::sql("cannot add the sample messages"))?;
        report.messages += added.rows_affected();
    }
    Ok(report)
}

/// Rows sent to COPY at a time.
const COPY_BATCH: u64 = 10_000;

/// Adds `users` load users (`load_user_N`, all with the password `load-password`, hashed once)
/// and `messages` messages spread over them in the lobby, with COPY, in the caller's
/// transaction, counting them into `report`. `progress(done, total)` is called after each batch.
async fn add_load(
    tx: &mut PgConnection,
    users: u64,
    messages: u64,
    report: &mut SeedReport,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    let total = users + messages;
    let first: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users WHERE username LIKE 'load\\_user\\_%'")
            .fetch_one(&mut *tx)
            .await
            .map_err(OpsError::sql("cannot count load users"))?;
    if users > 0 {
        let hash = hash_password("load-password")?;
        let first = first as u64 + 1;
        report.users += copy_rows(
            tx,
            "COPY users (username, email, password_hash) FROM STDIN",
            users,
            |n| {
                format!(
                    "load_user_{id}\tload_user_{id}@example.test\t{hash}\n",
                    id = first + n
                )
            },
            &mut |sent| progress(sent, total),
        )
        .await?;
    }
    if messages > 0 {
        let room: i64 = sqlx::query_scalar("SELECT id FROM chat_rooms WHERE name = $1")
            .bind(LOBBY)
            .fetch_one(&mut *tx)
            .await
            .map_err(OpsError::sql("cannot find the lobby"))?;
        let authors: Vec<i64> = sqlx::query_scalar("SELECT id FROM users ORDER BY id")
            .fetch_all(&mut *tx)
            .await
            .map_err(OpsError::sql("cannot list users"))?;
        report.messages += copy_rows(
            tx,
            "COPY chat_messages (room_id, author_id, body) FROM STDIN",
            messages,
            |n| {
                format!(
                    "{room}\t{}\tload message {n}\n",
                    authors[(n % authors.len() as u64) as usize]
                )
            },
            &mut |sent| progress(users + sent, total),
        )
        .await?;
    }
    Ok(())
}

/// Sends `count` rows, made by `row(n)`, through one COPY in batches; `progress(sent)` after each.
async fn copy_rows(
    conn: &mut PgConnection,
    statement: &'static str,
    count: u64,
    row: impl Fn(u64) -> String,
    progress: &mut dyn FnMut(u64),
) -> Result<u64> {
    let failed = || OpsError::sql(format!("`{statement}` failed"));
    let mut copy = conn.copy_in_raw(statement).await.map_err(failed())?;
    let mut batch = String::new();
    for n in 0..count {
        batch += &row(n);
        if (n + 1) % COPY_BATCH == 0 || n + 1 == count {
            copy.send(batch.as_bytes()).await.map_err(failed())?;
            progress(n + 1);
            batch.clear();
        }
    }
    copy.finish().await.map_err(failed())
}
