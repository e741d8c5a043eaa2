//! Every environment variable nanika reads, in one place, each with what it means.
//!
//! The README's table is checked against [`ALL`] by a test, so a variable cannot be added
//! without being documented.

/// One environment variable nanika reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvVar {
    /// Its name.
    pub name: &'static str,
    /// What it sets, in one line.
    pub meaning: &'static str,
    /// Whether it belongs to the app's environment (`.env`), not only to nanika.
    pub in_dotenv: bool,
    /// Whether its value is a secret that is masked in every output.
    pub secret: bool,
}

macro_rules! env_vars {
    ($($(#[$doc:meta])* $ident:ident = $name:literal, $dotenv:literal, $secret:literal, $meaning:literal;)+) => {
        $($(#[$doc])* pub const $ident: &str = $name;)+
        /// All of them, in the order the README lists them.
        pub const ALL: &[EnvVar] = &[$(EnvVar { name: $name, meaning: $meaning, in_dotenv: $dotenv, secret: $secret }),+];
    };
}

env_vars! {
    /// The app's database name.
    POSTGRES_DB = "POSTGRES_DB", true, false, "database created for the app (spec: nanika_game)";
    /// The app's database role.
    POSTGRES_USER = "POSTGRES_USER", true, false, "role the app connects as (spec: nanika_user)";
    /// The app role's password.
    POSTGRES_PASSWORD = "POSTGRES_PASSWORD", true, true, "password of that role";
    /// The app's connection URL, Prisma style.
    DATABASE_URL = "DATABASE_URL", true, true, "the app's PostgreSQL URL; `?schema=public` is understood and translated for libpq tools";
    /// The app's Redis URL.
    REDIS_URL = "REDIS_URL", true, true, "the app's Redis URL";
    /// The app's session signing key.
    SESSION_SECRET = "SESSION_SECRET", true, true, "key the app signs sessions with";
    /// The app's mode.
    NODE_ENV = "NODE_ENV", true, false, "the app's mode (spec: development)";
    /// The password Redis requires.
    REDIS_PASSWORD = "REDIS_PASSWORD", true, true, "password Redis requires (optional; never written to a committed file; `REDIS_URL` carries it too: `redis://:PASSWORD@localhost:6379`)";
    /// Host port of PostgreSQL.
    POSTGRES_PORT = "POSTGRES_PORT", true, false, "host port PostgreSQL listens on (default 5432)";
    /// Host port of Redis.
    REDIS_PORT = "REDIS_PORT", true, false, "host port Redis listens on (default 6379)";
    /// The docker runtime's compose project.
    COMPOSE_PROJECT_NAME = "COMPOSE_PROJECT_NAME", true, false, "the docker runtime's compose project (default: the compose file's `name:`, nanika-game); another name also renames the containers (`NAME-db`, `NAME-redis`) and lets Docker pick the network's subnet, so a second checkout on the same engine runs beside the first";
    /// Where the project is.
    NANIKA_PROJECT_DIR = "NANIKA_PROJECT_DIR", false, false, "the project directory, instead of searching upwards from the current one";
    /// Which runtime runs the services.
    NANIKA_RUNTIME = "NANIKA_RUNTIME", false, false, "`native`, `docker` or `auto` (default), as `--runtime`";
    /// Where PostgreSQL's binaries are.
    NANIKA_PG_BIN_DIR = "NANIKA_PG_BIN_DIR", false, false, "directory of PostgreSQL 15's binaries (default: the PATH, then /usr/lib/postgresql/15/bin)";
    /// Where the cache of pristine clusters is.
    NANIKA_CACHE_DIR = "NANIKA_CACHE_DIR", false, false, "directory of the cached pristine PostgreSQL clusters new projects are copied from (default: /var/lib/nanika/cache as root, else $XDG_CACHE_HOME/nanika or ~/.cache/nanika); `off`: every new cluster runs its own initdb";
    /// Which redis-server to run.
    NANIKA_REDIS_BIN = "NANIKA_REDIS_BIN", false, false, "the redis-server binary (default: the PATH)";
}

/// The registry entry of `name`, if nanika reads it.
pub fn lookup(name: &str) -> Option<&'static EnvVar> {
    ALL.iter().find(|var| var.name == name)
}
