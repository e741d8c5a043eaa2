//! Connection URLs: the spec's Prisma-style `DATABASE_URL` and `REDIS_URL`, with passwords masked.
//!
//! Reading follows RFC 3986: `%XX` is decoded everywhere and a `+` stays a plus (the `+` for a
//! space belongs to HTML forms, and libpq, Prisma and redis-rs all read a password's `+` as `+`).
//! Writing encodes everything but RFC 3986's unreserved characters, so every client reads back
//! the same user, password and database, and parsing what was written gives the same value.

use crate::secret::{MASK, Secret};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use std::borrow::Cow;
use std::fmt;
use url::Url;

/// Why a connection URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not a URL at all. The message never repeats the input, which may hold a password.
    #[error("not a valid URL ({0})")]
    Malformed(String),
    /// A URL of another kind.
    #[error("the scheme `{found}` is not {expected}")]
    WrongScheme {
        /// The scheme found.
        found: String,
        /// What was expected, ready to print.
        expected: &'static str,
    },
    /// A query parameter neither libpq nor Prisma knows.
    #[error("unknown parameter `{0}`")]
    UnknownParameter(String),
    /// A value that cannot be used. The message never holds a password.
    #[error("{0}")]
    Invalid(String),
}

/// The connection parameters libpq accepts in a URL (PostgreSQL 15's list).
const LIBPQ_PARAMETERS: &[&str] = &[
    "application_name",
    "channel_binding",
    "client_encoding",
    "connect_timeout",
    "dbname",
    "fallback_application_name",
    "gssencmode",
    "gsslib",
    "host",
    "hostaddr",
    "keepalives",
    "keepalives_count",
    "keepalives_idle",
    "keepalives_interval",
    "krbsrvname",
    "options",
    "passfile",
    "password",
    "port",
    "replication",
    "requirepeer",
    "requiressl",
    "service",
    "ssl_max_protocol_version",
    "ssl_min_protocol_version",
    "sslcert",
    "sslcompression",
    "sslcrl",
    "sslcrldir",
    "sslkey",
    "sslmode",
    "sslpassword",
    "sslrootcert",
    "sslsni",
    "target_session_attrs",
    "tcp_user_timeout",
    "user",
];

/// The parameters Prisma's PostgreSQL connector reads from a URL: the list in Prisma ORM's
/// PostgreSQL connector documentation, plus the two pool lifetimes its engine (quaint) reads too.
/// Those libpq does not know are dropped from [`DatabaseUrl::libpq_url`] and
/// [`DatabaseUrl::pg_env`]; `schema` becomes `search_path` there. Names both know are passed on
/// as they are, although Prisma's `sslcert` is the server's CA certificate (libpq's
/// `sslrootcert`) and its `sslpassword` the PKCS12 file's: only TLS setups see the difference.
/// Parameters that name where to connect, which libpq lets override the URL's authority and path
/// (and a service file or password file, which could name anything): refused.
const TARGET_PARAMETERS: &[&str] = &[
    "host", "hostaddr", "port", "dbname", "user", "password", "service", "passfile",
];

const PRISMA_PARAMETERS: &[&str] = &[
    "application_name",
    "channel_binding",
    "connect_timeout",
    "connection_limit",
    "host",
    "max_connection_lifetime",
    "max_idle_connection_lifetime",
    "options",
    "pgbouncer",
    "pool_timeout",
    "schema",
    "socket_timeout",
    "sslaccept",
    "sslcert",
    "sslidentity",
    "sslmode",
    "sslpassword",
    "sslrootcert",
    "statement_cache_size",
];

/// Parameters whose values are secrets: masked wherever the URL is shown.
const SECRET_PARAMETERS: &[&str] = &["password", "sslpassword"];

/// libpq's environment variable for each URL parameter that has one (PostgreSQL 15, "Environment
/// Variables"). `fallback_application_name`, the `keepalives*`, `replication`, `sslpassword` and
/// `tcp_user_timeout` have none, so they reach libpq only through [`DatabaseUrl::libpq_url`].
const LIBPQ_ENV: &[(&str, &str)] = &[
    ("application_name", "PGAPPNAME"),
    ("channel_binding", "PGCHANNELBINDING"),
    ("client_encoding", "PGCLIENTENCODING"),
    ("connect_timeout", "PGCONNECT_TIMEOUT"),
    ("dbname", "PGDATABASE"),
    ("gssencmode", "PGGSSENCMODE"),
    ("gsslib", "PGGSSLIB"),
    ("host", "PGHOST"),
    ("hostaddr", "PGHOSTADDR"),
    ("krbsrvname", "PGKRBSRVNAME"),
    ("passfile", "PGPASSFILE"),
    ("password", "PGPASSWORD"),
    ("port", "PGPORT"),
    ("requirepeer", "PGREQUIREPEER"),
    ("requiressl", "PGREQUIRESSL"),
    ("service", "PGSERVICE"),
    ("ssl_max_protocol_version", "PGSSLMAXPROTOCOLVERSION"),
    ("ssl_min_protocol_version", "PGSSLMINPROTOCOLVERSION"),
    ("sslcert", "PGSSLCERT"),
    ("sslcompression", "PGSSLCOMPRESSION"),
    ("sslcrl", "PGSSLCRL"),
    ("sslcrldir", "PGSSLCRLDIR"),
    ("sslkey", "PGSSLKEY"),
    ("sslmode", "PGSSLMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("sslsni", "PGSSLSNI"),
    ("target_session_attrs", "PGTARGETSESSIONATTRS"),
    ("user", "PGUSER"),
];

/// What is percent-encoded in every part nanika writes: all but RFC 3986's unreserved characters.
/// Encoding more than the RFC requires costs nothing, and leaves no character (`+`, `%`, `'`, `$`,
/// `&`) that some client or shell reads differently from another.
const ENCODED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn encode(text: &str) -> Cow<'_, str> {
    utf8_percent_encode(text, ENCODED).into()
}

/// Decodes `%XX` (and nothing else: `+` stays a plus). `what` names the part for the error, which
/// never shows the text: it may be a password.
fn decode(raw: &str, what: impl FnOnce() -> String) -> Result<String, UrlError> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| UrlError::Invalid(format!("{} is not UTF-8 once percent-decoded", what())))
}

/// How an error may name a query parameter. A password whose `?` was not encoded spills into the
/// query, taking the `@host…` after it along: then no name is shown, since it may be part of the
/// password. Otherwise a name is shown when it looks like one.
#[derive(Debug, Clone, Copy)]
struct Naming {
    spilled: bool,
}

impl Naming {
    fn of(query: &str) -> Self {
        Naming {
            spilled: query.contains('@'),
        }
    }

    fn name<'a>(&self, name: &'a str) -> Option<&'a str> {
        let plain = !self.spilled
            && !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        plain.then_some(name)
    }

    fn unknown(&self, key: &str) -> UrlError {
        match self.name(key) {
            Some(name) => UrlError::UnknownParameter(name.to_string()),
            None => hidden_name_error("unknown parameter"),
        }
    }
}

fn hidden_name_error(what: &str) -> UrlError {
    UrlError::Invalid(format!(
        "{what} (its name is not shown: it may be part of a password; write `?`, `&` and `#` in a password as %3F, %26 and %23)"
    ))
}

/// Splits a query the way libpq does: `&` between pairs, the first `=` between name and value,
/// both percent-decoded. Not `url::form_urlencoded`, which would read a `+` as a space.
fn query_pairs(query: &str) -> Result<Vec<(String, String)>, UrlError> {
    let naming = Naming::of(query);
    let mut pairs = Vec::new();
    for piece in query.split('&').filter(|piece| !piece.is_empty()) {
        let Some((raw_key, raw_value)) = piece.split_once('=') else {
            return Err(match naming.name(piece) {
                Some(name) => UrlError::Invalid(format!("parameter `{name}` has no `=VALUE`")),
                None => hidden_name_error("a parameter has no `=VALUE`"),
            });
        };
        let key = decode(raw_key, || "a parameter's name".into())?;
        let value = decode(raw_value, || match naming.name(&key) {
            Some(name) => format!("the value of `{name}`"),
            None => "a parameter's value".into(),
        })?;
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// Refuses a `#`: a connection URL has no fragment, so one means an unencoded `#` cut it short.
fn refuse_fragment(url: &Url) -> Result<(), UrlError> {
    match url.fragment() {
        Some(_) => Err(UrlError::Invalid(
            "a `#` cuts the URL short; write a `#` in a password or name as %23".into(),
        )),
        None => Ok(()),
    }
}

fn host_of(url: &Url) -> String {
    url.host_str()
        .unwrap_or("localhost")
        .trim_matches(['[', ']'])
        .to_string()
}

fn bracketed(host: &str) -> Cow<'_, str> {
    if host.contains(':') {
        format!("[{host}]").into()
    } else {
        host.into()
    }
}

/// Whether a URL is written for a client (password and secret parameters as they are) or for
/// people (masked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shown {
    Exposed,
    Masked,
}

/// `user:password@`, encoded, the password as `shown`; empty when there is neither.
fn userinfo(user: &str, password: &Secret, shown: Shown) -> String {
    let mut out = encode(user).into_owned();
    if !password.is_empty() {
        out.push(':');
        match shown {
            Shown::Exposed => out.push_str(&encode(password.expose())),
            Shown::Masked => out.push_str(MASK),
        }
    }
    if !out.is_empty() {
        out.push('@');
    }
    out
}

/// The search_path value for Prisma's `schema`: as it is when PostgreSQL reads it unchanged
/// unquoted (so `SHOW search_path` says `public`), else double-quoted as Prisma itself sends it.
fn search_path_value(schema: &str) -> String {
    let plain = schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '$'));
    if plain {
        schema.to_string()
    } else {
        format!("\"{}\"", schema.replace('"', "\"\""))
    }
}

/// Escapes one word of libpq's `options`, which splits at white space unless a backslash
/// escapes it, and reads `\\` as a backslash.
fn options_word(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    for c in word.chars() {
        if c == '\\' || c.is_ascii_whitespace() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The spec's `DATABASE_URL`: `postgresql://user:password@host:port/db?schema=public`, with any
/// of Prisma's and libpq's parameters.
///
/// Prisma's `schema` is refused by libpq, `pg_dump` and sqlx alike, so it is kept apart and turned
/// into `search_path` for them ([`DatabaseUrl::libpq_url`], [`DatabaseUrl::pg_env`]), which also
/// leave out Prisma's own parameters (`connection_limit`, `pool_timeout`, …).
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    /// The role to connect as.
    pub user: String,
    /// The role's password, empty when none is given.
    pub password: Secret,
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Database name.
    pub database: String,
    /// Prisma's `schema`, when given.
    pub schema: Option<String>,
    /// The other parameters, libpq's and Prisma's, decoded, in the order written.
    pub parameters: Vec<(String, String)>,
}

impl DatabaseUrl {
    /// Parses a `postgres://` or `postgresql://` URL.
    pub fn parse(raw: &str) -> Result<Self, UrlError> {
        let url = Url::parse(raw).map_err(|e| UrlError::Malformed(e.to_string()))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(UrlError::WrongScheme {
                found: url.scheme().to_string(),
                expected: "postgresql://",
            });
        }
        refuse_fragment(&url)?;
        let query = url.query().unwrap_or_default();
        let naming = Naming::of(query);
        let mut schema = None;
        let mut parameters: Vec<(String, String)> = Vec::new();
        for (key, value) in query_pairs(query)? {
            let known = LIBPQ_PARAMETERS.contains(&key.as_str())
                || PRISMA_PARAMETERS.contains(&key.as_str());
            if !known {
                return Err(naming.unknown(&key));
            }
            if TARGET_PARAMETERS.contains(&key.as_str()) {
                // libpq lets these override the URL's own host, port, database and user: what
                // every check reads from the URL would no longer be where clients go.
                return Err(UrlError::Invalid(format!(
                    "the `{key}` parameter would send clients elsewhere than the URL's own host, port, database and user; write those in the URL itself (postgresql://USER:PASSWORD@HOST:PORT/DB)"
                )));
            }
            let twice =
                parameters.iter().any(|(k, _)| *k == key) || (key == "schema" && schema.is_some());
            if twice {
                return Err(UrlError::Invalid(format!(
                    "parameter `{key}` is given twice"
                )));
            }
            if key == "schema" {
                if value.is_empty() {
                    return Err(UrlError::Invalid("`schema` is empty".into()));
                }
                schema = Some(value);
            } else {
                parameters.push((key, value));
            }
        }
        let path = url.path();
        let database = decode(path.strip_prefix('/').unwrap_or(path), || {
            "the database name".into()
        })?;
        if database.is_empty() {
            return Err(UrlError::Invalid(
                "no database name after the host (…/nanika_game)".into(),
            ));
        }
        Ok(DatabaseUrl {
            user: decode(url.username(), || "the user name".into())?,
            password: Secret::new(decode(url.password().unwrap_or_default(), || {
                "the password".into()
            })?),
            host: host_of(&url),
            port: url.port().unwrap_or(5432),
            database,
            schema,
            parameters,
        })
    }

    /// A URL that libpq tools (psql, pg_dump, psycopg) and sqlx accept, password included: give it
    /// only to a child process. libpq's parameters are kept, `schema` is in `options` as
    /// `-c search_path=…`, Prisma's own parameters are left out.
    pub fn libpq_url(&self) -> String {
        self.render_libpq(Shown::Exposed)
    }

    /// [`DatabaseUrl::libpq_url`] with its password masked, to show.
    pub fn masked_libpq_url(&self) -> String {
        self.render_libpq(Shown::Masked)
    }

    /// The `options` libpq should send: the URL's own, plus `-c search_path=SCHEMA` for `schema`.
    pub fn libpq_options(&self) -> Option<String> {
        let own = self
            .parameters
            .iter()
            .find(|(k, _)| k == "options")
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty());
        let search_path = self.schema.as_ref().map(|schema| {
            format!(
                "-c {}",
                options_word(&format!("search_path={}", search_path_value(schema)))
            )
        });
        match (own, search_path) {
            (Some(own), Some(path)) => Some(format!("{own} {path}")),
            (own, path) => own.or(path),
        }
    }

    /// libpq variables that would send a tool elsewhere than [`DatabaseUrl::pg_env`] says when
    /// inherited from the user's shell (a host address, a service or password file): remove them
    /// from every child that gets `pg_env`.
    pub const REDIRECTING_ENV: &'static [&'static str] = &[
        "PGHOSTADDR",
        "PGSERVICE",
        "PGSERVICEFILE",
        "PGPASSFILE",
        "PGSYSCONFDIR",
    ];

    /// The same connection as libpq's `PG*` environment variables, password included. Parameters
    /// libpq has no variable for (see `LIBPQ_ENV`) are only in [`DatabaseUrl::libpq_url`].
    pub fn pg_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("PGHOST", self.host.clone()),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", self.user.clone()),
            ("PGDATABASE", self.database.clone()),
        ];
        if !self.password.is_empty() {
            env.push(("PGPASSWORD", self.password.expose().to_string()));
        }
        // A parameter wins over the URL's own part, as in libpq (`?host=/run/postgresql`).
        for (key, value) in self.libpq_parameters() {
            let Some(&(_, name)) = LIBPQ_ENV.iter().find(|(k, _)| *k == key) else {
                continue;
            };
            match env.iter_mut().find(|(n, _)| *n == name) {
                Some(slot) => slot.1 = value.to_string(),
                None => env.push((name, value.to_string())),
            }
        }
        if let Some(options) = self.libpq_options() {
            env.push(("PGOPTIONS", options));
        }
        env
    }

    /// The URL in its original (Prisma) form with the password: keep it out of output.
    pub fn expose(&self) -> String {
        self.render_prisma(Shown::Exposed)
    }

    /// The parameters libpq knows, but `options` (see [`DatabaseUrl::libpq_options`]).
    fn libpq_parameters(&self) -> impl Iterator<Item = (&str, &str)> {
        self.parameters
            .iter()
            .filter(|(k, _)| k != "options" && LIBPQ_PARAMETERS.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    fn render_prisma(&self, shown: Shown) -> String {
        let schema = self.schema.as_deref().map(|s| ("schema", s));
        let others = self
            .parameters
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()));
        self.render(shown, schema.into_iter().chain(others))
    }

    fn render_libpq(&self, shown: Shown) -> String {
        let options = self.libpq_options();
        let options = options.as_deref().map(|o| ("options", o));
        self.render(shown, self.libpq_parameters().chain(options))
    }

    fn render<'a>(&self, shown: Shown, query: impl Iterator<Item = (&'a str, &'a str)>) -> String {
        let mut out = format!(
            "postgresql://{}{}:{}/{}",
            userinfo(&self.user, &self.password, shown),
            bracketed(&self.host),
            self.port,
            encode(&self.database)
        );
        for (index, (key, value)) in query.enumerate() {
            out.push(if index == 0 { '?' } else { '&' });
            out.push_str(&encode(key));
            out.push('=');
            if shown == Shown::Masked && SECRET_PARAMETERS.contains(&key) && !value.is_empty() {
                out.push_str(MASK);
            } else {
                out.push_str(&encode(value));
            }
        }
        out
    }
}

impl fmt::Display for DatabaseUrl {
    /// The URL in its original (Prisma) form with the password masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render_prisma(Shown::Masked))
    }
}

impl serde::Serialize for DatabaseUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// The spec's `REDIS_URL`: `redis://[user:password@]host:port[/db]`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// Whether TLS is used (`rediss://`).
    pub tls: bool,
    /// ACL user name, empty for the default user.
    pub user: String,
    /// Password, empty when none is given.
    pub password: Secret,
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Logical database number.
    pub db: u32,
}

impl RedisUrl {
    /// Parses a `redis://` or `rediss://` URL.
    pub fn parse(raw: &str) -> Result<Self, UrlError> {
        let url = Url::parse(raw).map_err(|e| UrlError::Malformed(e.to_string()))?;
        let tls = match url.scheme() {
            "redis" => false,
            "rediss" => true,
            other => {
                return Err(UrlError::WrongScheme {
                    found: other.to_string(),
                    expected: "redis://",
                });
            }
        };
        refuse_fragment(&url)?;
        let db_text = url.path().trim_start_matches('/');
        let db = if db_text.is_empty() {
            0
        } else {
            db_text.parse().map_err(|_| {
                // The path may hold the rest of a password whose `/` was not encoded.
                UrlError::Invalid("the path after the port is not a database number".into())
            })?
        };
        let query = url.query().unwrap_or_default();
        if let Some((key, _)) = query_pairs(query)?.first() {
            return Err(Naming::of(query).unknown(key));
        }
        Ok(RedisUrl {
            tls,
            user: decode(url.username(), || "the user name".into())?,
            password: Secret::new(decode(url.password().unwrap_or_default(), || {
                "the password".into()
            })?),
            host: host_of(&url),
            port: url.port().unwrap_or(6379),
            db,
        })
    }

    /// The URL with the password, for a client library: keep it out of output.
    pub fn expose(&self) -> String {
        self.render(Shown::Exposed)
    }

    fn render(&self, shown: Shown) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let db = if self.db == 0 {
            String::new()
        } else {
            format!("/{}", self.db)
        };
        format!(
            "{scheme}://{}{}:{}{db}",
            userinfo(&self.user, &self.password, shown),
            bracketed(&self.host),
            self.port
        )
    }
}

impl fmt::Display for RedisUrl {
    /// The URL with the password masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(Shown::Masked))
    }
}

impl serde::Serialize for RedisUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SPEC_URL: &str =
        "postgresql://nanika_user:nanika_password@localhost:5432/nanika_game?schema=public";

    /// A password with every character that means something in a URL, a shell or a .env file.
    const HARD: &str = "p+w %41@:/#?&'\"$ x";
    /// [`HARD`] as nanika writes it in a URL.
    const HARD_ENCODED: &str = "p%2Bw%20%2541%40%3A%2F%23%3F%26%27%22%24%20x";

    fn url(password: &str) -> DatabaseUrl {
        DatabaseUrl {
            user: "nanika_user".into(),
            password: Secret::new(password),
            host: "localhost".into(),
            port: 5432,
            database: "nanika_game".into(),
            schema: Some("public".into()),
            parameters: Vec::new(),
        }
    }

    #[test]
    fn the_spec_url_parses_and_masks_its_password() {
        let url = DatabaseUrl::parse(SPEC_URL).unwrap();
        assert_eq!(
            (url.user.as_str(), url.host.as_str(), url.port),
            ("nanika_user", "localhost", 5432)
        );
        assert_eq!(url.database, "nanika_game");
        assert_eq!(url.schema.as_deref(), Some("public"));
        let shown = format!("{url} {url:?}");
        assert!(!shown.contains("nanika_password"), "{shown}");
        assert_eq!(
            url.to_string(),
            "postgresql://nanika_user:****@localhost:5432/nanika_game?schema=public"
        );
        assert_eq!(url.expose(), SPEC_URL);
    }

    #[test]
    fn schema_becomes_search_path_for_libpq_with_a_percent_encoded_space() {
        let url = DatabaseUrl::parse(SPEC_URL).unwrap();
        // libpq does not read `+` as a space: `-c+search_path` fails with
        // `unrecognized configuration parameter "+search_path"`.
        assert_eq!(
            url.libpq_url(),
            "postgresql://nanika_user:nanika_password@localhost:5432/nanika_game?options=-c%20search_path%3Dpublic"
        );
        assert!(!url.libpq_url().contains('+'));
        assert!(
            url.pg_env()
                .contains(&("PGOPTIONS", "-c search_path=public".to_string()))
        );
    }

    #[test]
    fn a_schema_postgres_would_change_is_quoted_and_its_spaces_escaped() {
        let mut url = url("pw");
        url.schema = Some("My Game".into());
        assert_eq!(url.libpq_options().unwrap(), r#"-c search_path="My\ Game""#);
        url.schema = Some(r"a\b".into());
        assert_eq!(url.libpq_options().unwrap(), r#"-c search_path="a\\b""#);
    }

    #[test]
    fn schema_merges_with_the_urls_own_options() {
        let url =
            DatabaseUrl::parse("postgresql://u:p@h:1/d?options=-c%20work_mem%3D8MB&schema=game")
                .unwrap();
        assert_eq!(
            url.libpq_options().unwrap(),
            "-c work_mem=8MB -c search_path=game"
        );
        assert_eq!(
            url.libpq_url(),
            "postgresql://u:p@h:1/d?options=-c%20work_mem%3D8MB%20-c%20search_path%3Dgame"
        );
        // The original form keeps both as written.
        assert_eq!(
            url.expose(),
            "postgresql://u:p@h:1/d?schema=game&options=-c%20work_mem%3D8MB"
        );
    }

    #[test]
    fn prisma_urls_as_users_write_them_parse() {
        let raw =
            "postgresql://u:p@localhost:5432/db?schema=public&connection_limit=5&pool_timeout=10";
        let url = DatabaseUrl::parse(raw).unwrap();
        assert_eq!(url.expose(), raw, "the original form keeps every parameter");
        assert_eq!(
            url.to_string(),
            "postgresql://u:****@localhost:5432/db?schema=public&connection_limit=5&pool_timeout=10"
        );
        assert_eq!(
            url.libpq_url(),
            "postgresql://u:p@localhost:5432/db?options=-c%20search_path%3Dpublic"
        );
    }

    #[test]
    fn parameters_that_would_redirect_clients_are_refused() {
        for key in TARGET_PARAMETERS {
            let raw = format!("postgresql://u:secretpw@localhost:5432/db?{key}=elsewhere");
            let err = DatabaseUrl::parse(&raw).unwrap_err();
            assert!(err.to_string().contains(&format!("`{key}`")), "{err}");
            assert!(!err.to_string().contains("secretpw"));
        }
    }

    #[test]
    fn every_prisma_parameter_is_accepted_and_only_libpqs_reach_libpq() {
        let query = PRISMA_PARAMETERS
            .iter()
            .filter(|k| !TARGET_PARAMETERS.contains(k))
            .map(|k| format!("{k}=v{k}"))
            .collect::<Vec<_>>()
            .join("&");
        let url = DatabaseUrl::parse(&format!("postgresql://u:p@h:1/d?{query}")).unwrap();
        assert_eq!(url.schema.as_deref(), Some("vschema"));
        let targets = PRISMA_PARAMETERS
            .iter()
            .filter(|k| TARGET_PARAMETERS.contains(k))
            .count();
        assert_eq!(url.parameters.len(), PRISMA_PARAMETERS.len() - 1 - targets);
        let libpq = DatabaseUrl::parse(&url.libpq_url()).unwrap();
        let kept: Vec<&str> = libpq.parameters.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            kept,
            [
                "application_name",
                "channel_binding",
                "connect_timeout",
                "sslcert",
                "sslmode",
                "sslpassword",
                "sslrootcert",
                "options",
            ]
        );
        assert_eq!(libpq.schema, None);
        for dropped in [
            "connection_limit",
            "max_connection_lifetime",
            "max_idle_connection_lifetime",
            "pgbouncer",
            "pool_timeout",
            "socket_timeout",
            "sslaccept",
            "sslidentity",
            "statement_cache_size",
        ] {
            assert!(
                !url.libpq_url().contains(dropped),
                "{dropped} reached libpq"
            );
        }
        assert_eq!(
            libpq.libpq_options().unwrap(),
            "voptions -c search_path=vschema"
        );
        // The environment form carries the ones libpq has a variable for.
        let env = url.pg_env();
        for expected in [
            ("PGHOST", "h"),
            ("PGAPPNAME", "vapplication_name"),
            ("PGCONNECT_TIMEOUT", "vconnect_timeout"),
            ("PGSSLMODE", "vsslmode"),
            ("PGOPTIONS", "voptions -c search_path=vschema"),
        ] {
            assert!(
                env.contains(&(expected.0, expected.1.to_string())),
                "{expected:?} in {env:?}"
            );
        }
        assert_eq!(env.iter().filter(|(k, _)| *k == "PGHOST").count(), 1);
    }

    #[test]
    fn libpq_parameters_are_kept_in_both_forms() {
        let url =
            DatabaseUrl::parse("postgresql://u:p@h:1/d?target_session_attrs=any&keepalives=1")
                .unwrap();
        assert_eq!(
            url.libpq_url(),
            "postgresql://u:p@h:1/d?target_session_attrs=any&keepalives=1"
        );
        assert!(
            url.pg_env()
                .contains(&("PGTARGETSESSIONATTRS", "any".to_string()))
        );
    }

    #[test]
    fn unknown_parameters_are_named_without_the_password() {
        let err =
            DatabaseUrl::parse("postgresql://u:secretpw@h:1/d?schema=public&pool=5").unwrap_err();
        assert_eq!(err, UrlError::UnknownParameter("pool".into()));
        assert!(!err.to_string().contains("secretpw"));
        // An unencoded `?` puts the rest of a password (and the host after it) into the query:
        // no name from there is shown.
        for raw in [
            "postgresql://u:123?secretpw@h:1/d",
            "postgresql://u:123?secret=pw@h:1/d",
            "postgresql://u:123?secret=pw@h:1/d?schema=public",
        ] {
            let err = DatabaseUrl::parse(raw).unwrap_err();
            assert!(!err.to_string().contains("secret"), "{raw}: {err}");
        }
        let err = RedisUrl::parse("redis://:123?secret=pw@h:1").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn an_unencoded_hash_is_refused_without_showing_what_follows() {
        let err = DatabaseUrl::parse("postgresql://u@h:1/d?schema=public#secretpw").unwrap_err();
        assert!(err.to_string().contains("%23"), "{err}");
        assert!(!err.to_string().contains("secretpw"), "{err}");
        assert!(RedisUrl::parse("redis://h:1#secretpw").is_err());
    }

    #[test]
    fn a_dot_segment_is_no_database_name() {
        // URL parsers remove `.` and `..` (even as %2E): refused rather than read as another name.
        for raw in [
            "postgresql://u@h:1/.",
            "postgresql://u@h:1/..",
            "postgresql://u@h:1/%2E",
        ] {
            assert!(DatabaseUrl::parse(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn a_parameter_given_twice_is_refused() {
        for raw in [
            "postgresql://u@h:1/d?schema=a&schema=b",
            "postgresql://u@h:1/d?sslmode=disable&sslmode=require",
        ] {
            let err = DatabaseUrl::parse(raw).unwrap_err();
            assert!(err.to_string().contains("twice"), "{err}");
        }
    }

    #[test]
    fn a_plus_in_a_password_is_a_plus() {
        let url = DatabaseUrl::parse("postgresql://u:a+b%2Bc@h:1/d?application_name=x+y").unwrap();
        assert_eq!(url.password.expose(), "a+b+c");
        assert_eq!(
            url.parameters,
            [("application_name".to_string(), "x+y".to_string())]
        );
        assert_eq!(
            url.expose(),
            "postgresql://u:a%2Bb%2Bc@h:1/d?application_name=x%2By"
        );
        let redis = RedisUrl::parse("redis://:a+b@h:1").unwrap();
        assert_eq!(redis.password.expose(), "a+b");
    }

    #[test]
    fn user_password_and_database_are_decoded() {
        let url = DatabaseUrl::parse("postgresql://us%20er:pw%2541@h:1/my%20db").unwrap();
        assert_eq!(url.user, "us er");
        assert_eq!(url.password.expose(), "pw%41", "decoded once, not twice");
        assert_eq!(url.database, "my db");
        assert_eq!(url.expose(), "postgresql://us%20er:pw%2541@h:1/my%20db");
    }

    #[test]
    fn special_characters_are_encoded_in_every_rendered_url() {
        let url = url(HARD);
        let expected =
            format!("postgresql://nanika_user:{HARD_ENCODED}@localhost:5432/nanika_game");
        assert_eq!(url.expose(), format!("{expected}?schema=public"));
        assert_eq!(
            url.libpq_url(),
            format!("{expected}?options=-c%20search_path%3Dpublic")
        );
        assert_eq!(DatabaseUrl::parse(&url.expose()).unwrap(), url);
        let mut odd = url.clone();
        odd.user = "a b+c@d".into();
        odd.database = "g/a?m#e's".into();
        assert_eq!(
            odd.expose(),
            format!(
                "postgresql://a%20b%2Bc%40d:{HARD_ENCODED}@localhost:5432/g%2Fa%3Fm%23e%27s?schema=public"
            )
        );
        assert_eq!(DatabaseUrl::parse(&odd.expose()).unwrap(), odd);
        assert_eq!(
            DatabaseUrl::parse(&odd.libpq_url()).unwrap().database,
            odd.database
        );
    }

    #[test]
    fn display_never_contains_the_password() {
        let mut url = url(HARD);
        url.parameters = vec![
            ("sslpassword".into(), "keypass-visible".into()),
            ("password".into(), "param-visible".into()),
        ];
        for shown in [
            url.to_string(),
            format!("{url:?}"),
            url.masked_libpq_url(),
            serde_json::to_string(&url).unwrap(),
        ] {
            assert!(
                !shown.contains(HARD_ENCODED) && !shown.contains(HARD),
                "{shown}"
            );
            assert!(!shown.contains("visible"), "{shown}");
            assert!(shown.contains("nanika_user:****@"), "{shown}");
        }
        assert_eq!(
            url.masked_libpq_url(),
            "postgresql://nanika_user:****@localhost:5432/nanika_game?sslpassword=****&password=****&options=-c%20search_path%3Dpublic"
        );
    }

    #[test]
    fn text_that_is_not_utf8_once_decoded_is_refused_unshown() {
        for raw in [
            "postgresql://u:se%FFcret@h:1/d",
            "postgresql://u%FF:p@h:1/d",
            "postgresql://u:p@h:1/d%FF",
            "postgresql://u:p@h:1/d?application_name=se%FFcret",
        ] {
            let err = DatabaseUrl::parse(raw).unwrap_err();
            assert!(err.to_string().contains("UTF-8"), "{err}");
            assert!(!err.to_string().contains("cret"), "{err}");
        }
        assert!(RedisUrl::parse("redis://:se%FFcret@h:1").is_err());
    }

    #[test]
    fn redis_urls_mask_passwords() {
        let url = RedisUrl::parse("redis://:s3cret@localhost:6380/2").unwrap();
        assert_eq!(url.to_string(), "redis://:****@localhost:6380/2");
        assert_eq!(url.expose(), "redis://:s3cret@localhost:6380/2");
        assert_eq!(
            RedisUrl::parse("redis://localhost:6379")
                .unwrap()
                .to_string(),
            "redis://localhost:6379"
        );
    }

    #[test]
    fn redis_user_and_password_are_decoded_and_encoded() {
        let url = RedisUrl::parse(&format!("redis://ad%20min:{HARD_ENCODED}@h:1/3")).unwrap();
        assert_eq!(url.user, "ad min");
        assert_eq!(url.password.expose(), HARD);
        assert_eq!(
            url.expose(),
            format!("redis://ad%20min:{HARD_ENCODED}@h:1/3")
        );
        assert_eq!(url.to_string(), "redis://ad%20min:****@h:1/3");
        assert_eq!(RedisUrl::parse(&url.expose()).unwrap(), url);
    }

    /// Printable text: ASCII with all its punctuation, or any Unicode that is not a control.
    fn printable(min: usize) -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::string::string_regex(&format!("[ -~]{{{min},24}}")).unwrap(),
            proptest::string::string_regex(&format!("\\PC{{{min},12}}")).unwrap(),
        ]
    }

    proptest! {
        #[test]
        fn rendering_round_trips_and_is_stable(
            user in printable(0),
            password in printable(0),
            // `.` and `..` are dot segments to every URL parser (`%2E` too), never a name.
            database in printable(1).prop_filter("a dot segment", |d| d != "." && d != ".."),
            schema in proptest::option::of(printable(1)),
            app in printable(0),
        ) {
            let url = DatabaseUrl {
                user,
                password: Secret::new(password),
                host: "localhost".into(),
                port: 5432,
                database,
                schema,
                parameters: vec![("application_name".into(), app)],
            };
            let exposed = url.expose();
            let again = DatabaseUrl::parse(&exposed).unwrap();
            prop_assert_eq!(&again, &url);
            prop_assert_eq!(again.expose(), exposed);
            let libpq = DatabaseUrl::parse(&url.libpq_url()).unwrap();
            prop_assert_eq!(&libpq.user, &url.user);
            prop_assert_eq!(&libpq.password, &url.password);
            prop_assert_eq!(&libpq.database, &url.database);
            prop_assert_eq!(libpq.libpq_options(), url.libpq_options());
            prop_assert_eq!(libpq.libpq_url(), url.libpq_url());

            let redis = RedisUrl {
                tls: false,
                user: url.user.clone(),
                password: url.password.clone(),
                host: "localhost".into(),
                port: 6379,
                db: 1,
            };
            prop_assert_eq!(RedisUrl::parse(&redis.expose()).unwrap(), redis);
        }
    }
}
