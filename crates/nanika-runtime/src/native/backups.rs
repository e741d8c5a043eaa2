//! pgBackRest's place in a project's state, when `nanika.toml` turns backups on: its config,
//! repository, logs and locks in `pgbackrest/` under PostgreSQL's home (the server user's, as
//! PostgreSQL runs `archive-push` itself), and the archive settings PostgreSQL gets on top of
//! the committed `postgresql.conf`. With backups off none of this exists and the committed file
//! is installed as it is.

use super::layout::StateLayout;
use super::safe_fs::{Dir, Expect};
use crate::error::Result;
use nanika_config::settings::BackupSettings;
use std::path::PathBuf;

/// The stanza: one per project, as each project has its own config and repository.
pub const STANZA: &str = "nanika";

/// The directories pgBackRest writes, under [`dir`].
const SUBDIRS: [&str; 4] = ["repo", "log", "lock", "spool"];

/// The record of a `nanika backup restore` under way (`.nanika/run/restore.json`): written before
/// PostgreSQL is stopped, removed once the restored cluster runs or the one from before is back.
/// While it exists the cluster may be half-restored: `up` refuses, the schedule pauses, `doctor`
/// fails, `down --volumes` refuses, and `nanika backup restore --abandon` puts the cluster from
/// before back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RestoreMarker {
    /// The copy of the cluster from before, in PostgreSQL's home.
    pub aside: String,
    /// What was being restored to, as the user gave it.
    pub target: String,
    /// How far it got: `copying` (the cluster untouched, its copy maybe partial) or
    /// `restoring` (the copy whole, the cluster being replaced).
    pub step: String,
}

/// [`RestoreMarker::step`] while the cluster is copied aside.
pub const STEP_COPYING: &str = "copying";
/// [`RestoreMarker::step`] once pgBackRest may have changed the cluster.
pub const STEP_RESTORING: &str = "restoring";

/// Where the marker is.
pub fn restore_marker_file(layout: &StateLayout) -> PathBuf {
    layout.run.join("restore.json")
}

/// The marker of an unfinished restore, when there is one.
pub fn unfinished_restore(layout: &StateLayout) -> Option<RestoreMarker> {
    super::supervisor::read_json(&restore_marker_file(layout))
}

/// What an unfinished restore means for the user, in one sentence with the way out.
pub fn unfinished_restore_message(layout: &StateLayout, marker: &RestoreMarker) -> String {
    if marker.step == STEP_COPYING {
        return format!(
            "a `nanika backup restore` to {} stopped while copying the cluster aside: the cluster is untouched but PostgreSQL is stopped; `nanika backup restore --abandon` removes the partial copy {}/{} and starts it",
            marker.target,
            layout.postgres_home.display(),
            marker.aside
        );
    }
    format!(
        "a `nanika backup restore` to {} did not finish: PostgreSQL's cluster may be half-restored; the cluster from before is in {}/{}; `nanika backup restore --abandon` puts it back and starts it",
        marker.target,
        layout.postgres_home.display(),
        marker.aside
    )
}

/// `pgbackrest/` in PostgreSQL's home.
pub fn dir(layout: &StateLayout) -> PathBuf {
    layout.postgres_home.join("pgbackrest")
}

/// The config file every pgBackRest command of nanika's is given (`--config`).
pub fn config_file(layout: &StateLayout) -> PathBuf {
    dir(layout).join("pgbackrest.conf")
}

/// The repository: the backups and the archived WAL.
pub fn repository(layout: &StateLayout) -> PathBuf {
    dir(layout).join("repo")
}

/// The `pgbackrest` command line's start: the config and the stanza.
pub fn base_args(layout: &StateLayout) -> Vec<String> {
    vec![
        format!("--config={}", config_file(layout).display()),
        format!("--stanza={STANZA}"),
    ]
}

/// The settings added to the installed `postgresql.conf`, with a comment saying where they come
/// from. `archive_mode` takes effect only when PostgreSQL starts.
pub fn archive_settings(layout: &StateLayout, pgbackrest: &std::path::Path) -> String {
    format!(
        "\n# Added by nanika, not in the committed file: nanika.toml turns [backups] on, so\n\
         # every WAL segment goes to pgBackRest's repository.\n\
         archive_mode = on\n\
         archive_command = '{} {} archive-push %p'\n",
        pgbackrest.display(),
        base_args(layout).join(" ")
    )
}

/// The config's text.
fn config_text(layout: &StateLayout, settings: &BackupSettings, port: u16) -> String {
    let base = dir(layout);
    format!(
        "# Written by nanika from nanika.toml [backups]; rewritten by every `nanika up`.\n\
         [global]\n\
         repo1-path={repo}\n\
         repo1-retention-full={full}\n\
         repo1-retention-diff={diff}\n\
         log-path={base}/log\n\
         lock-path={base}/lock\n\
         spool-path={base}/spool\n\
         log-level-console=warn\n\
         log-level-file=info\n\
         start-fast=y\n\
         compress-type=lz4\n\
         \n\
         [{STANZA}]\n\
         pg1-path={data}\n\
         pg1-port={port}\n\
         pg1-socket-path={socket}\n\
         pg1-user=postgres\n",
        repo = repository(layout).display(),
        full = settings.retention_full,
        diff = settings.retention_diff,
        base = base.display(),
        data = layout.postgres_data().display(),
        socket = layout.postgres_socket_dir().display(),
    )
}

/// Makes `pgbackrest/` and its directories (the server user's, owner-only) and writes the
/// config for `settings` and `port`. Existing directories must be nanika's or the server user's
/// and owner-only; nothing is followed through a link.
pub fn install(layout: &StateLayout, settings: &BackupSettings, port: u16) -> Result<()> {
    // The paths go into `archive_command`, a shell command inside a quoted postgresql.conf
    // value where `%` is special: refused rather than quoted three ways.
    let base = dir(layout);
    if let Some(bad) = base
        .to_string_lossy()
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/._-+@,=:".contains(*c)))
    {
        return Err(crate::error::RuntimeError::Other(format!(
            "backups need a state path without spaces, quotes or shell characters; {} has {bad:?}",
            base.display()
        )));
    }
    let home = layout.open_postgres_home()?;
    let me = nix::unistd::Uid::effective().as_raw();
    let owners = [me, layout.server_user.as_ref().map_or(me, |u| u.uid)];
    let expect = Expect {
        owners: &owners,
        mode: Some(0o700),
    };
    let (base, _) = home.make_dir_expecting("pgbackrest", 0o700, expect)?;
    give_to_server(layout, &base)?;
    for name in SUBDIRS {
        let (sub, _) = base.make_dir_expecting(name, 0o700, expect)?;
        give_to_server(layout, &sub)?;
    }
    let name = "pgbackrest.conf";
    let temp = format!(".{name}.tmp");
    base.remove_file(&temp)?;
    {
        let mut file = base.create_file(&temp, 0o600)?;
        std::io::Write::write_all(&mut file, config_text(layout, settings, port).as_bytes())
            .map_err(crate::error::RuntimeError::io(format!(
                "cannot write {}",
                base.join(&temp).display()
            )))?;
        layout.give_file_to_server(&file, &base.join(&temp))?;
    }
    base.rename_over(&temp, name)
}

fn give_to_server(layout: &StateLayout, dir: &Dir) -> Result<()> {
    match &layout.server_user {
        Some(user) => dir.set_owner(user.uid, user.gid),
        None => Ok(()),
    }
}
