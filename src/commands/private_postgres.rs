//! A throwaway PostgreSQL cluster, for `demo` on a machine where none answers and for the
//! fault suite's server restart: made with the machine's own PostgreSQL binaries in a
//! temporary directory, stopped and removed when dropped. `initdb` and `postgres` refuse to
//! run as root, so as root they run as the `postgres` user (which the distribution's
//! packages create).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions;

/// Where distributions install the server binaries, one directory per major version.
const BIN_ROOT: &str = "/usr/lib/postgresql";

/// The server used when DATABASE_URL is not set, if it answers; else a private cluster.
pub const LOCAL_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// How to get the binaries, in one line.
pub const HOW_TO_INSTALL: &str = "install PostgreSQL's server binaries (Debian/Ubuntu: `apt-get install postgresql`; they are looked for in /usr/lib/postgresql/*/bin) or set DATABASE_URL to a server that answers";

/// A running private cluster. Dropping it stops the server and removes its directory.
pub struct PrivateCluster {
    bin: PathBuf,
    root: PathBuf,
    port: u16,
    run_as_postgres: bool,
}

impl PrivateCluster {
    /// The server binaries of the newest installed version, if any.
    pub fn find_binaries() -> Option<PathBuf> {
        let installed = std::fs::read_dir(BIN_ROOT)
            .ok()?
            .filter_map(Result::ok)
            .filter(|entry| entry.path().join("bin").join("initdb").is_file())
            .filter_map(|entry| entry.file_name().into_string().ok());
        let newest = newest_version(installed)?;
        Some(Path::new(BIN_ROOT).join(newest).join("bin"))
    }

    /// Makes and starts a cluster from `bin` under a new temporary directory, on a free
    /// port of 127.0.0.1, trusting local connections (it lives only as long as its owner).
    pub fn start(bin: &Path) -> anyhow::Result<PrivateCluster> {
        let root = std::env::temp_dir().join(format!(
            "invite-sync-postgres-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(root.join("socket"))
            .with_context(|| format!("{} could not be created", root.display()))?;
        let cluster = PrivateCluster {
            bin: bin.to_owned(),
            root,
            port: free_port().context("no free port on 127.0.0.1 for the private PostgreSQL")?,
            run_as_postgres: is_root(),
        };
        if cluster.run_as_postgres {
            let owned = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(&cluster.root)
                .status()
                .context("chown could not run")?;
            if !owned.success() {
                bail!("the private cluster's directory could not be given to the postgres user (is there one? `useradd --system postgres` makes it)");
            }
        }
        let data = cluster.data();
        cluster.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth=trust".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--no-sync".as_ref(),
            ],
        )?;
        cluster.pg_ctl("start")?;
        Ok(cluster)
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Restarts the server (a fast shutdown: sessions are ended, as a crash or a failover
    /// would end them) on the same port, waiting until it accepts connections again.
    pub fn restart(&self) -> anyhow::Result<()> {
        self.pg_ctl("restart")
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// `pg_ctl action`, waiting up to 60 s for it to take effect.
    fn pg_ctl(&self, action: &str) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.root.join("socket").display()
        );
        let data = self.data();
        let log = self.root.join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-o".as_ref(),
                options.as_ref(),
                action.as_ref(),
            ],
        )
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = if self.run_as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        };
        // The postgres user may not reach the caller's working directory.
        command.current_dir(&self.root);
        command
    }

    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> anyhow::Result<()> {
        let output = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("{program} could not run"))?;
        if !output.status.success() {
            bail!(
                "{program} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let data = self.data();
        if data.join("postmaster.pid").exists() {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(&data)
                .args(["-m", "fast", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Whether a PostgreSQL server accepts a connection at `url` within 3 s.
pub async fn answers(url: &str) -> bool {
    let Ok(options) = url.parse::<PgConnectOptions>() else {
        return false;
    };
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(3), options.connect()).await,
        Ok(Ok(_))
    )
}

/// A port of 127.0.0.1 that was free a moment ago, for a program that binds it itself.
pub fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The newest of the installed versions named like the directories under
/// `/usr/lib/postgresql` (`9.6`, `15`), compared as numbers: `15` is newer than `9.6`.
fn newest_version(names: impl IntoIterator<Item = String>) -> Option<String> {
    names
        .into_iter()
        .filter_map(|name| {
            let version = name
                .split('.')
                .map(|part| part.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, name))
        })
        .max()
        .map(|(_, name)| name)
}

fn is_root() -> bool {
    // The effective uid, as /proc tells it: no libc call needed.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::newest_version;

    fn newest(names: &[&str]) -> Option<String> {
        newest_version(names.iter().map(|name| (*name).to_owned()))
    }

    #[test]
    fn the_newest_version_is_chosen_by_number_not_by_name() {
        assert_eq!(newest(&["9.6", "15", "10"]).as_deref(), Some("15"));
        assert_eq!(newest(&["9.6", "9.5"]).as_deref(), Some("9.6"));
        assert_eq!(newest(&["16", "15"]).as_deref(), Some("16"));
    }

    #[test]
    fn directories_that_are_no_version_are_left_out() {
        assert_eq!(newest(&["common", "15", ".hidden"]).as_deref(), Some("15"));
        assert_eq!(newest(&["common"]), None);
        assert_eq!(newest(&[]), None);
    }
}
