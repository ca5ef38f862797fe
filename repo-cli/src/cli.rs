//! Command-line syntax: clap derive only. Every command carries an `about`
//! (one line, for `-h` and the command list), a `long_about` (for `--help`)
//! and examples in `after_help`, so `--help` teaches the command.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{ArgAction, ArgGroup, Args, Parser, Subcommand};

/// Default argon2id memory for new keys, KiB (the library's default).
pub const DEFAULT_KDF_MEMORY_KIB: u32 = 64 * 1024;
/// Default argon2id passes for new keys (the library's default).
pub const DEFAULT_KDF_ITERATIONS: u32 = 3;

/// The whole command line.
#[derive(Debug, Parser)]
#[command(
    name = "cairn",
    version,
    about = "Deduplicating, encrypted backups",
    long_about = "cairn stores backups of files, directories and streams in a repository. \
Content is split into chunks, deduplicated across all snapshots, compressed and encrypted; \
every snapshot is a complete, independently restorable view.\n\n\
The repository is chosen with -r/--repo or CAIRN_REPOSITORY. The password comes from \
--password-file (CAIRN_PASSWORD_FILE), --password-command (CAIRN_PASSWORD_COMMAND), \
CAIRN_PASSWORD, or an interactive prompt, in that order.\n\n\
Exit codes: 0 success; 1 error; 3 backup saved but some files could not be read; \
10 no repository at the location; 11 repository is locked; 12 wrong password; \
130 interrupted.",
    after_help = "Examples:\n  \
export CAIRN_REPOSITORY=/srv/backup CAIRN_PASSWORD_FILE=~/.cairn-pass\n  \
cairn init\n  \
cairn backup ~/Documents --exclude '*.tmp'\n  \
cairn snapshots\n  \
cairn restore latest --target /tmp/restored"
)]
pub struct Cli {
    /// Options every command accepts.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every command.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Repository location (a local directory).
    #[arg(
        short = 'r',
        long,
        env = "CAIRN_REPOSITORY",
        global = true,
        value_name = "PATH"
    )]
    pub repo: Option<PathBuf>,

    /// Read the password from the first line of FILE.
    #[arg(long, env = "CAIRN_PASSWORD_FILE", global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// Run CMD with `sh -c` and use the first line of its output as the password.
    #[arg(
        long,
        env = "CAIRN_PASSWORD_COMMAND",
        global = true,
        value_name = "CMD",
        hide_env_values = true
    )]
    pub password_command: Option<String>,

    /// Directory for the local index cache [default: $XDG_CACHE_HOME/cairn or ~/.cache/cairn].
    #[arg(long, env = "CAIRN_CACHE_DIR", global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Keep the index cache in memory only (slower start, nothing written locally).
    #[arg(long, global = true)]
    pub no_cache: bool,

    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// Say more (repeat for even more: -vv lists every file).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Print nothing but errors (JSON output, when asked for, still goes to stdout).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new repository.
    #[command(
        about = "Create a new repository",
        long_about = "Create a new, empty repository at the location given by -r/--repo and protect it with a \
password. The password is asked twice when read from a terminal. Losing the password means losing the \
data: there is no way to recover it.\n\n\
The key-derivation cost (argon2id) can be lowered with --kdf-memory and --kdf-iterations for slow \
machines or tests; the defaults are 65536 KiB and 3 passes.",
        after_help = "Examples:\n  \
cairn -r /srv/backup init\n  \
cairn -r /srv/backup init --compression 9 --pack-size 32\n  \
CAIRN_PASSWORD=test cairn -r /tmp/repo init --kdf-memory 64 --kdf-iterations 1"
    )]
    Init(InitArgs),

    /// Back up files, directories or a stream.
    #[command(
        about = "Back up files, directories or a stream",
        long_about = "Save PATHs (files and directories, recursively) as a new snapshot. Only new data is \
stored: files whose size, times and inode match the parent snapshot are not even read, and chunks \
already in the repository are not stored again.\n\n\
Instead of paths, a single stream can be saved: our standard input with --stdin, or the output of a \
command with --stdin-from-command -- CMD ARGS... If the command exits non-zero, the backup fails and \
no snapshot is written.\n\n\
The parent snapshot (used to skip unchanged files) is by default the latest one of the same host and \
paths; choose one with --parent, or none with --force.\n\n\
Exits with code 3 if the snapshot was saved but some files could not be read.",
        after_help = "Examples:\n  \
cairn backup ~/Documents ~/Pictures --exclude '*.tmp' --exclude-caches\n  \
pg_dump mydb | cairn backup --stdin --stdin-filename mydb.sql --tag postgres\n  \
cairn backup --stdin-from-command -- pg_dump mydb"
    )]
    Backup(BackupArgs),

    /// List snapshots.
    #[command(
        about = "List snapshots",
        long_about = "List the repository's snapshots, oldest first, with their short id, time (local), \
host, tags, paths and size. Filter by host, tags (a snapshot must carry all given) and paths (a \
snapshot's paths must be exactly those given).",
        after_help = "Examples:\n  \
cairn snapshots\n  \
cairn snapshots --host web1 --tag nightly\n  \
cairn snapshots --json | jq -r '.[].id'"
    )]
    Snapshots(SnapshotsArgs),

    /// List files in a snapshot.
    #[command(
        about = "List files in a snapshot",
        long_about = "List the paths below PATH (default: the root) in SNAPSHOT, one per line. Names are \
printed as their raw bytes, so names that are not UTF-8 come out as they were. With -l, also \
permissions, owner, group, size and modification time. With --json, one JSON object per line.\n\n\
SNAPSHOT is `latest` (narrowed by --host, --tag, --path), a full id, or a unique prefix of one.",
        after_help = "Examples:\n  \
cairn ls latest\n  \
cairn ls -l 1a2b3c4d /home/alice/Documents\n  \
cairn ls latest /etc --recursive=false"
    )]
    Ls(LsArgs),

    /// Restore a snapshot to a directory.
    #[command(
        about = "Restore a snapshot to a directory",
        long_about = "Restore SNAPSHOT, or the parts of it selected with --include and --exclude, into \
the directory given by --target (created if missing). Paths are restored below the target as they \
are in the snapshot, e.g. /home/alice/x becomes TARGET/home/alice/x. Content is verified as it is \
written; permissions and times are restored, and ownership too when running as root.\n\n\
Glob patterns starting with / match from the snapshot's root; others match at any depth. A match \
includes or excludes everything below it.",
        after_help = "Examples:\n  \
cairn restore latest --target /tmp/restored\n  \
cairn restore 1a2b3c4d --target /tmp/r --include /home/alice/Documents\n  \
cairn restore latest --host web1 --target /srv/restore --exclude '*.log'"
    )]
    Restore(RestoreArgs),

    /// Write one file of a snapshot to stdout.
    #[command(
        about = "Write one file of a snapshot to stdout",
        long_about = "Write the content of the file at PATH in SNAPSHOT to standard output, verifying \
every chunk. Useful for streams saved with `backup --stdin`, which are stored as a file named by \
--stdin-filename. For directories, use `restore`.",
        after_help = "Examples:\n  \
cairn dump latest /etc/fstab\n  \
cairn dump latest --tag postgres mydb.sql | psql mydb"
    )]
    Dump(DumpArgs),

    /// Print repository objects as JSON.
    #[command(
        about = "Print repository objects as JSON",
        long_about = "Decrypt and print a repository object as JSON: the config, a snapshot, or a \
key file's public header (never the key itself). Meant for inspection and debugging.",
        after_help = "Examples:\n  \
cairn cat config\n  \
cairn cat snapshot latest\n  \
cairn cat key 5f3e"
    )]
    Cat(CatArgs),

    /// Print a shell completion script.
    #[command(
        about = "Print a shell completion script",
        long_about = "Print a completion script for SHELL on standard output. Load it from your \
shell's startup file or install it where your shell looks for completions.",
        after_help = "Examples:\n  \
cairn completions bash > ~/.local/share/bash-completion/completions/cairn\n  \
cairn completions zsh > \"${fpath[1]}/_cairn\"\n  \
cairn completions fish > ~/.config/fish/completions/cairn.fish"
    )]
    Completions(CompletionsArgs),
}

/// `cairn init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// argon2id memory cost of the password key, in KiB.
    #[arg(long, value_name = "KIB", default_value_t = DEFAULT_KDF_MEMORY_KIB)]
    pub kdf_memory: u32,
    /// argon2id passes of the password key.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_KDF_ITERATIONS)]
    pub kdf_iterations: u32,
    /// zstd compression level for data, 0 (none) to 22.
    #[arg(long, value_name = "LEVEL", default_value_t = 3,
          value_parser = clap::value_parser!(i32).range(0..=22))]
    pub compression: i32,
    /// Target size of pack files, in MiB (1 to 1024).
    #[arg(long, value_name = "MIB", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub pack_size: u32,
}

/// Selects snapshots where `latest` is used.
#[derive(Debug, Args, Default)]
pub struct FilterArgs {
    /// Only snapshots of this host.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Only snapshots carrying this tag (repeat or separate with commas: all must match).
    #[arg(long = "tag", value_name = "TAG", value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Only snapshots of exactly these paths (repeat for several; relative paths that exist here are made absolute, as backup records them).
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<OsString>,
}

/// `cairn backup`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("source").required(true).args(["paths", "stdin", "stdin_from_command"])))]
pub struct BackupArgs {
    /// Files and directories to back up.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// Skip paths matching GLOB (a pattern with `/` matches the whole path, one without the name).
    #[arg(short = 'e', long = "exclude", value_name = "GLOB")]
    pub excludes: Vec<String>,
    /// Read exclude globs from FILE, one per line (`#` starts a comment).
    #[arg(long = "exclude-file", value_name = "FILE")]
    pub exclude_files: Vec<PathBuf>,
    /// Do not cross into other file systems below each PATH.
    #[arg(short = 'x', long)]
    pub one_file_system: bool,
    /// Skip the contents of directories holding a valid CACHEDIR.TAG.
    #[arg(long)]
    pub exclude_caches: bool,

    /// Tag the snapshot (repeat or separate with commas).
    #[arg(long = "tag", value_name = "TAG", value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Record this host name instead of the machine's.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Compare with this snapshot (id or prefix) instead of the latest of the same host and paths.
    #[arg(long, value_name = "ID", conflicts_with = "force")]
    pub parent: Option<String>,
    /// Use no parent: read every file again.
    #[arg(short, long)]
    pub force: bool,
    /// Chunker profile: `default` (files), `small` (streams, databases) or `tiny`.
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,

    /// Back up our standard input as one file.
    #[arg(long, conflicts_with_all = ["paths", "stdin_from_command"])]
    pub stdin: bool,
    /// Back up the standard output of the command given after `--`.
    #[arg(long, requires = "command", conflicts_with = "paths")]
    pub stdin_from_command: bool,
    /// Name of the stream in the snapshot [default: `stdin`, or the command's name].
    #[arg(long, value_name = "NAME")]
    pub stdin_filename: Option<String>,
    /// The command for --stdin-from-command, and its arguments.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// `cairn snapshots`.
#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    /// Which snapshots to list.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `cairn ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// `latest`, a snapshot id, or a unique prefix of one.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// Directory or file in the snapshot to list [default: /].
    #[arg(value_name = "PATH")]
    pub path: Option<OsString>,
    /// Long listing: permissions, owner, group, size, modification time.
    #[arg(short, long)]
    pub long: bool,
    /// Descend into subdirectories (`--recursive=false` lists one level).
    #[arg(long, value_name = "BOOL", default_value_t = true, num_args = 0..=1,
          default_missing_value = "true", action = ArgAction::Set)]
    pub recursive: bool,
    /// Narrows `latest`.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `cairn restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// `latest`, a snapshot id, or a unique prefix of one.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// Directory to restore into (created if missing).
    #[arg(short, long, value_name = "DIR")]
    pub target: PathBuf,
    /// Restore only paths matching GLOB (and everything below them).
    #[arg(short, long = "include", value_name = "GLOB")]
    pub includes: Vec<String>,
    /// Skip paths matching GLOB (and everything below them).
    #[arg(short, long = "exclude", value_name = "GLOB")]
    pub excludes: Vec<String>,
    /// Restore the recorded numeric uid/gid, not the ids of the recorded names (as root).
    #[arg(long)]
    pub numeric_ids: bool,
    /// Narrows `latest`.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `cairn dump`.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// `latest`, a snapshot id, or a unique prefix of one.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// The file in the snapshot.
    #[arg(value_name = "PATH")]
    pub path: OsString,
    /// Narrows `latest`.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `cairn cat`.
#[derive(Debug, Args)]
pub struct CatArgs {
    /// What to print.
    #[command(subcommand)]
    pub object: CatObject,
}

/// Objects `cairn cat` prints.
#[derive(Debug, Subcommand)]
pub enum CatObject {
    /// The repository config.
    Config,
    /// A snapshot (`latest`, an id, or a unique prefix).
    Snapshot {
        /// `latest`, a snapshot id, or a unique prefix of one.
        #[arg(value_name = "ID")]
        id: String,
        /// Narrows `latest`.
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// A decrypted index file: its packs and their blobs (an id or a unique prefix).
    Index {
        /// Index file id or a unique prefix of one.
        #[arg(value_name = "ID")]
        id: String,
    },
    /// The public header of a key file (an id or a unique prefix).
    Key {
        /// Key file id or a unique prefix of one.
        #[arg(value_name = "ID")]
        id: String,
    },
}

/// `cairn completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to print a script for.
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_valid() {
        super::Cli::command().debug_assert();
    }
}
