//! Connection URLs: the spec's Prisma-style `DATABASE_URL` and `REDIS_URL`, with passwords masked.

use crate::secret::{MASK, Secret};
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
    /// A query parameter neither libpq nor the spec's Prisma form knows.
    #[error("unknown parameter `{0}`")]
    UnknownParameter(String),
    /// A value that cannot be used.
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

/// The spec's `DATABASE_URL`: `postgresql://user:password@host:port/db?schema=public`.
///
/// Prisma's `schema` parameter is refused by libpq, `pg_dump` and sqlx alike, so it is kept apart
/// and turned into `search_path` for them ([`DatabaseUrl::libpq_url`], [`DatabaseUrl::pg_env`]).
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
    /// The other (libpq) parameters, in order.
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
        let mut schema = None;
        let mut parameters = Vec::new();
        for (key, value) in url.query_pairs() {
            match key.as_ref() {
                "schema" => schema = Some(value.into_owned()),
                known if LIBPQ_PARAMETERS.contains(&known) => {
                    parameters.push((key.into_owned(), value.into_owned()))
                }
                unknown => return Err(UrlError::UnknownParameter(unknown.to_string())),
            }
        }
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let database = decode(url.path().trim_start_matches('/'));
        if database.is_empty() {
            return Err(UrlError::Invalid(
                "no database name after the host (…/nanika_game)".into(),
            ));
        }
        Ok(DatabaseUrl {
            user: decode(url.username()),
            password: Secret::new(url.password().map(decode).unwrap_or_default()),
            host: url
                .host_str()
                .unwrap_or("localhost")
                .trim_matches(['[', ']'])
                .to_string(),
            port: url.port().unwrap_or(5432),
            database,
            schema,
            parameters,
        })
    }

    /// A URL that libpq tools and sqlx accept, password included: give it only to a child process.
    pub fn libpq_url(&self) -> String {
        let mut url = self.base_url(Some(self.password.expose()));
        {
            let mut query = url.query_pairs_mut();
            for (key, value) in &self.parameters {
                if key != "options" {
                    query.append_pair(key, value);
                }
            }
            if let Some(options) = self.libpq_options() {
                query.append_pair("options", &options);
            }
        }
        let text = url.to_string();
        text.strip_suffix('?').map(str::to_string).unwrap_or(text)
    }

    /// The `options` libpq should send: the URL's own, plus `-c search_path=SCHEMA` for `schema`.
    pub fn libpq_options(&self) -> Option<String> {
        let own = self
            .parameters
            .iter()
            .find(|(k, _)| k == "options")
            .map(|(_, v)| v.clone());
        let search_path = self
            .schema
            .as_ref()
            .map(|schema| format!("-c search_path={}", schema.replace(' ', "\\ ")));
        match (own, search_path) {
            (Some(own), Some(path)) => Some(format!("{own} {path}")),
            (own, path) => own.or(path),
        }
    }

    /// The same connection as libpq's `PG*` environment variables, password included.
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
        if let Some(options) = self.libpq_options() {
            env.push(("PGOPTIONS", options));
        }
        env
    }

    fn base_url(&self, password: Option<&str>) -> Url {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let mut url = Url::parse(&format!("postgresql://{host}:{}/", self.port))
            .expect("a host and port make a URL");
        url.set_path(&self.database);
        let _ = url.set_username(&self.user);
        if let Some(password) = password.filter(|p| !p.is_empty()) {
            let _ = url.set_password(Some(password));
        }
        url
    }
}

impl DatabaseUrl {
    /// The URL in its original (Prisma) form with the password: keep it out of output.
    pub fn expose(&self) -> String {
        self.render(self.password.expose())
    }

    fn render(&self, password: &str) -> String {
        let mut url = self.base_url(Some(password));
        {
            let mut query = url.query_pairs_mut();
            for (key, value) in &self.parameters {
                query.append_pair(key, value);
            }
            if let Some(schema) = &self.schema {
                query.append_pair("schema", schema);
            }
        }
        let text = url.to_string();
        text.strip_suffix('?').map(str::to_string).unwrap_or(text)
    }
}

impl fmt::Display for DatabaseUrl {
    /// The URL in its original (Prisma) form with the password masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = if self.password.is_empty() { "" } else { MASK };
        // `*` is percent-encoded in a URL's password; show the mask as written.
        f.write_str(&self.render(shown).replacen("%2A%2A%2A%2A", MASK, 1))
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
        let db_text = url.path().trim_start_matches('/');
        let db = if db_text.is_empty() {
            0
        } else {
            db_text
                .parse()
                .map_err(|_| UrlError::Invalid(format!("`{db_text}` is not a database number")))?
        };
        if let Some((key, _)) = url.query_pairs().next() {
            return Err(UrlError::UnknownParameter(key.into_owned()));
        }
        Ok(RedisUrl {
            tls,
            user: url.username().to_string(),
            password: Secret::new(url.password().unwrap_or_default()),
            host: url
                .host_str()
                .unwrap_or("localhost")
                .trim_matches(['[', ']'])
                .to_string(),
            port: url.port().unwrap_or(6379),
            db,
        })
    }

    /// The URL with the password, for a client library: keep it out of output.
    pub fn expose(&self) -> String {
        self.render(self.password.expose())
    }

    fn render(&self, password: &str) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let auth = match (self.user.as_str(), password) {
            ("", "") => String::new(),
            (user, "") => format!("{user}@"),
            (user, password) => format!("{user}:{password}@"),
        };
        let db = if self.db == 0 {
            String::new()
        } else {
            format!("/{}", self.db)
        };
        format!("{scheme}://{auth}{host}:{}{db}", self.port)
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(if self.password.is_empty() { "" } else { MASK }))
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

    const SPEC_URL: &str =
        "postgresql://nanika_user:nanika_password@localhost:5432/nanika_game?schema=public";

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
    }

    #[test]
    fn schema_becomes_search_path_for_libpq() {
        let url = DatabaseUrl::parse(SPEC_URL).unwrap();
        assert_eq!(
            url.libpq_url(),
            "postgresql://nanika_user:nanika_password@localhost:5432/nanika_game?options=-c+search_path%3Dpublic"
        );
        assert!(
            url.pg_env()
                .contains(&("PGOPTIONS", "-c search_path=public".to_string()))
        );
    }

    #[test]
    fn unknown_parameters_are_named_without_the_password() {
        let err =
            DatabaseUrl::parse("postgresql://u:secretpw@h:1/d?schema=public&pool=5").unwrap_err();
        assert_eq!(err, UrlError::UnknownParameter("pool".into()));
        assert!(!err.to_string().contains("secretpw"));
    }

    #[test]
    fn special_characters_in_passwords_survive() {
        let url = DatabaseUrl::parse("postgresql://u:p%40ss%2Fw@h:1/d").unwrap();
        assert_eq!(url.password.expose(), "p@ss/w");
        assert_eq!(DatabaseUrl::parse(&url.libpq_url()).unwrap(), url);
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
}
