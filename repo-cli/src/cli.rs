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
/// Default argon2id lanes of a new key (RFC 9106's second recommended option).
pub const DEFAULT_KDF_PARALLELISM: u32 = 4;

/// The whole command line.
#[derive(Debug, Parser)]
#[command(
    name = "cairn",
    version,
    about = "Deduplicating, encrypted backups",
    long_about = "cairn stores backups of files, directories and streams in a repository. \
Content is split into chunks, deduplicated across all snapshots, compressed and encrypted; \
every snapshot is a complete, independently restorable view.\n\n\
The repository is chosen with -r/--repo or CAIRN_REPOSITORY: a local directory, or a bucket \
on S3-compatible storage (s3:https://HOST/BUCKET/PREFIX or s3://BUCKET/PREFIX; credentials from \
AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE). The password comes from \
--password-file (CAIRN_PASSWORD_FILE), --password-command (CAIRN_PASSWORD_COMMAND), \
CAIRN_PASSWORD, or an interactive prompt, in that order; services open it with an unattended \
key's token instead (--key-file, CAIRN_KEY_FILE; see `cairn key add --help`).\n\n\
Exit codes: 0 success; 1 error; 3 backup saved but some files could not be read; \
10 no repository at the location; 11 locked by another process (a `cairn run` of the same \
plan); 12 wrong password; 130 interrupted. With --json, results are JSON on stdout and an error \
is one JSON object on stderr (see docs/scripting.md).",
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
    /// Repository location: a local directory or an S3 bucket and prefix
    /// (the forms are in the help text; SPEC §11.1).
    #[arg(
        short = 'r',
        long,
        env = "CAIRN_REPOSITORY",
        global = true,
        value_name = "LOCATION",
        help = "Repository location: a local directory (PATH or file:PATH), \
s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX], or s3://BUCKET[/PREFIX] (endpoint from --s3-endpoint, \
else AWS). S3 credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
    )]
    pub repo: Option<PathBuf>,

    /// S3 endpoint for s3://BUCKET locations, e.g. http://127.0.0.1:3900.
    #[arg(long, env = "AWS_ENDPOINT_URL", global = true, value_name = "URL")]
    pub s3_endpoint: Option<String>,

    /// Address S3 buckets path-style (HOST/BUCKET) even where virtual-host
    /// style would be the default (AWS endpoints); other endpoints always
    /// get path style.
    #[arg(long, global = true)]
    pub s3_path_style: bool,

    /// Also trust the certificate authorities in FILE (PEM) for https S3
    /// endpoints: a self-hosted store (MinIO, Garage, Ceph) whose
    /// certificate a private CA signed. The built-in roots stay trusted.
    /// Default: AWS_CA_BUNDLE, as the AWS tools read it.
    // Not clap's `env`: a value from the environment would count as an
    // argument given, and `cairn pg` would no longer show its help.
    #[arg(long, global = true, value_name = "FILE")]
    pub s3_ca_cert: Option<PathBuf>,

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

    /// Open with an unattended key: FILE holds the token `cairn key add
    /// --unattended` wrote (for services such as archive_command and plans;
    /// no password is asked for and no argon2 cost is paid).
    #[arg(long, env = "CAIRN_KEY_FILE", global = true, value_name = "FILE")]
    pub key_file: Option<PathBuf>,

    /// Unlock with the key file whose id starts with ID only, however costly
    /// its KDF parameters (by default, key files over the cost limit of one
    /// open are not tried).
    #[arg(long, env = "CAIRN_KEY", global = true, value_name = "ID")]
    pub key: Option<String>,

    /// Directory for the local index cache [default: $XDG_CACHE_HOME/cairn or ~/.cache/cairn].
    #[arg(long, env = "CAIRN_CACHE_DIR", global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Keep the index cache in memory only (slower start, nothing written locally).
    #[arg(long, global = true)]
    pub no_cache: bool,

    /// Pack transfers to run at once: uploads in a backup, downloads in restore,
    /// check --read-data and drill. More hides a network's round trips; each upload
    /// in flight holds a pack (up to 16 MiB by default) in memory.
    #[arg(long, env = "CAIRN_CONNECTIONS", global = true, value_name = "N",
          default_value_t = repo_core::Repository::DEFAULT_CONNECTIONS as u32,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub connections: u32,

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
        long_about = "Create a new, empty repository at the location given by -r/--repo and protect it with a \
password. The password is asked twice when read from a terminal. Losing the password means losing the \
data: there is no way to recover it.\n\n\
The key-derivation cost (argon2id) can be lowered with --kdf-memory and --kdf-iterations for slow \
machines or tests; the defaults are 65536 KiB, 3 passes and 4 lanes (computed in parallel).",
        after_help = "Examples:\n  \
cairn -r /srv/backup init\n  \
cairn -r /srv/backup init --compression 9 --pack-size 32\n  \
cairn -r /srv/backup init --cipher xaes-256-gcm\n  \
cairn -r s3:https://s3.example.com/backups/host1 init\n  \
CAIRN_PASSWORD=test cairn -r /tmp/repo init --kdf-memory 64 --kdf-iterations 1"
    )]
    Init(InitArgs),

    /// Back up files, directories or a stream.
    #[command(
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
        long_about = "List the repository's snapshots, oldest first, with their short id, time (local), \
host, tags, paths and size. Filter by host, tags (a snapshot must carry all given) and paths (a \
snapshot's paths must be exactly those given).",
        after_help = "Examples:\n  \
cairn snapshots\n  \
cairn snapshots --host web1 --tag nightly\n  \
cairn snapshots --json | jq -r '.[].id'"
    )]
    Snapshots(SnapshotsArgs),

    /// Copy snapshots from another repository into this one.
    #[command(
        long_about = "Copy snapshots of the repository given by --from-repo into the one given by -r/--repo: \
all of them, the SNAPSHOTs named (ids or unique prefixes), or those passing --host, --tag and --path. \
Only data this repository lacks is sent, encrypted with this repository's key. Time, host, tags, paths \
and metadata are kept, and each copy records the id of the snapshot it came from, so copying again \
copies nothing and an interrupted copy resumes where it stopped.\n\n\
Repositories created with `init --copy-chunker-params --from-repo SRC` cut and name data like SRC: a \
copy between them sends only what is missing and shares storage with backups made directly into either. \
Between unrelated repositories every chunk is read and named again, and the copies do not deduplicate \
with this repository's own backups.\n\n\
The source's password comes from --from-password-file, --from-password-command, CAIRN_FROM_PASSWORD, \
or a prompt.",
        after_help = "Examples:\n  \
cairn -r /mnt/offsite copy --from-repo /srv/backup --from-password-file /etc/cairn/local.pw\n  \
CAIRN_FROM_REPOSITORY=/srv/backup cairn copy --host db1 --tag nightly\n  \
cairn -r /mnt/offsite init --copy-chunker-params --from-repo /srv/backup"
    )]
    Copy(CopyArgs),

    /// List files in a snapshot.
    #[command(
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
        long_about = "Restore SNAPSHOT, or the parts of it selected with --include and --exclude, into \
the directory given by --target (created if missing). Paths are restored below the target as they \
are in the snapshot, e.g. /home/alice/x becomes TARGET/home/alice/x. Content is verified as it is \
written; permissions and times are restored, and ownership too when running as root. \
Directories stay private (0700) until the restore ends and only then get their recorded modes. \
Existing files, links and special files in the target are replaced (see --overwrite); a symlink \
below the target is replaced, never followed.\n\n\
Patterns are those of backup --exclude and find: one without `/` matches names at any depth \
(`*.log`), one starting with `/` the whole path from the snapshot's root (`/etc/*.conf`), any other \
one a path ending so at any depth (`log/*.gz`); `*` and `?` never match a `/`, `**` matches any \
number of directories. A match includes or excludes everything below it.",
        after_help = "Examples:\n  \
cairn restore latest --target /tmp/restored\n  \
cairn restore 1a2b3c4d --target /tmp/r --include /home/alice/Documents\n  \
cairn restore latest --host web1 --target /srv/restore --exclude '*.log'\n  \
cairn restore latest --target / --overwrite if-changed"
    )]
    Restore(RestoreArgs),

    /// Write one file of a snapshot to stdout.
    #[command(
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
        long_about = "Decrypt and print a repository object as JSON: the config, a snapshot, or a \
key file's public header (never the key itself). Meant for inspection and debugging.",
        after_help = "Examples:\n  \
cairn cat config\n  \
cairn cat snapshot latest\n  \
cairn cat key 5f3e"
    )]
    Cat(CatArgs),

    /// Manage the repository's passwords (keys).
    #[command(
        long_about = "A repository can be opened by several passwords: each is a key file that wraps \
the same master key. `key list` shows them, `key add` adds a password, `key remove` deletes one, \
and `key passwd` replaces the password this command was opened with. None of them touches the \
backed-up data.\n\n\
The new password for `add` and `passwd` comes from --new-password-file, else CAIRN_NEW_PASSWORD \
(for scripts and tests), else an interactive prompt that asks twice.\n\n\
The last usable key is never removed, nor the key this command was opened with (use \
`key passwd` to replace that one). `passwd` writes the new key file before it deletes the old \
one, so an interruption leaves two working passwords, never none.",
        after_help = "Examples:\n  \
cairn key list\n  \
cairn key add --new-password-file ~/.cairn-pass-bob\n  \
cairn key remove 5f3e"
    )]
    Key(KeyArgs),

    /// Forget snapshots by a retention policy.
    #[command(
        long_about = "Decide, with --keep-* rules, which snapshots to keep, and delete the snapshot \
files of the others. Snapshots are grouped (by host and paths unless --group-by says otherwise) \
and the policy is applied to each group on its own, newest snapshot first. A snapshot is kept if \
any rule keeps it; the output lists, for each kept snapshot, every rule that kept it.\n\n\
--keep-last N keeps the N newest snapshots. --keep-hourly/-daily/-weekly/-monthly/-yearly N keep \
the newest snapshot of each of the N most recent hours, days, ISO weeks (Monday to Sunday), \
months or years that have a snapshot; periods without a snapshot do not count, and while a rule \
still has counts left the group's oldest snapshot is kept too. Periods are those of the local \
time zone. N may be `unlimited`. --keep-within DURATION keeps every snapshot less than DURATION \
older than the group's newest snapshot (units y=365d, m=30d, w, d, h; e.g. 30d, 1y2m, 12h). \
--keep-tag TAG keeps snapshots carrying TAG (`a,b`: both; repeat for either).\n\n\
--host, --tag and --path restrict which snapshots are considered at all; others are left alone. \
A policy without any rule is refused. Only snapshot files are deleted: the data they referenced \
stays in the repository until `cairn prune`, or --prune runs one right after. Use --dry-run \
first.",
        after_help = "Examples:\n  \
cairn forget --keep-daily 7 --keep-weekly 5 --keep-monthly 12 --dry-run\n  \
cairn forget --keep-last 3 --keep-within 30d --host web1\n  \
cairn forget --keep-tag release --keep-yearly unlimited --group-by host --json"
    )]
    Forget(ForgetArgs),

    /// Remove data no snapshot needs (never blocks backups).
    #[command(
        long_about = "Find the data no snapshot references and free its space. Packs with no live \
data are condemned; packs whose unused share exceeds --max-unused have their live blobs copied \
into new packs first and are condemned too; packs no index names (left by interrupted backups) are \
condemned as well. Condemned packs leave the index at once but are deleted only by a later prune, \
after --grace has passed by the storage's own clock and no backup that began earlier is still \
running; if a snapshot written meanwhile needs one of them, it is put back instead. So backups \
and prunes may run at the same time from any number of hosts: nothing is locked.\n\n\
--dry-run prints the plan (what would be condemned, repacked and deleted) and changes nothing. \
--grace 0 deletes in the same run (still waiting for running backups).",
        after_help = "Examples:\n  \
cairn prune --dry-run\n  \
cairn prune --max-unused 10 --grace 6h\n  \
cairn forget --keep-daily 7 --prune --json"
    )]
    Prune(PruneArgs),

    /// Rewrite everything sealed under an older data-key epoch (after `key rotate`).
    #[command(
        long_about = "Rewrite every object sealed under a data-key epoch older than the newest: \
packs (their blobs are verified and sealed again into new packs), index files, snapshots, \
dictionaries, archived WAL, prune marks, audit records and verification records. Old \
packs are retired like prune's condemned packs: deleted after --grace by the storage's clock, once \
no backup that began earlier is still running; until then a later prune or rekey deletes them. A \
rewritten snapshot gets a new id and names the old one as its original, so `copy` still knows it; \
--json lists old and new ids. Backups and prunes may run meanwhile.\n\n\
Killed or stopped by --max-duration (exit 3), a rerun continues where it stopped. Exit 0 means \
nothing is left sealed under an older epoch except condemned packs awaiting their grace period.",
        after_help = "Examples:\n  \
cairn key rotate && cairn rekey\n  \
cairn rekey --max-duration 2h --grace 6h\n  \
cairn rekey --json"
    )]
    Rekey(RekeyArgs),

    /// Repair the index or snapshots.
    #[command(
        long_about = "`repair index` rebuilds the index from the headers of the pack files, \
replacing every index file. With --read-data it reads every pack whole: a pack whose bytes no \
longer match its name has each blob verified, the good ones copied into a new pack and the \
damaged ones dropped (the damaged pack is then deleted).\n\n\
`repair snapshots` rewrites every snapshot that references data the index no longer has: a file \
that lost a chunk keeps its name and metadata, loses its content and gets the extended attribute \
user.cairn.damaged; a directory whose listing is lost becomes empty and is marked the same way. \
The rewritten snapshot is tagged `repaired`, names the original as its parent, and replaces it. \
Everything else stays restorable. Run `cairn check --read-data` first to see what is damaged.",
        after_help = "Examples:\n  \
cairn repair index\n  \
cairn repair index --read-data && cairn repair snapshots\n  \
cairn repair snapshots --json"
    )]
    Repair(RepairArgs),

    /// Show what changed between two snapshots.
    #[command(
        long_about = "Compare snapshot A (older) with snapshot B (newer) and list every path that \
differs, in path order: `+` added, `-` removed, `M` content modified, `U` only metadata changed \
(permissions, owner, group, modification time or extended attributes), `T` type changed (e.g. a \
directory became a file). Directories end in `/`; an added or removed directory is followed by \
everything below it. A summary follows: files added, removed and changed, and the bytes of new and \
dropped data at the changed paths (each chunk counted once).\n\n\
Unchanged directories are recognised by their tree id and never read, so comparing two large, \
nearly identical snapshots is fast. A and B are `latest` (narrowed by --host, --tag, --path), a \
full id, or a unique prefix of one.",
        after_help = "Examples:\n  \
cairn diff 1a2b3c4d latest\n  \
cairn diff 1a2b3c4d 5e6f7a8b --json | jq '.totals'\n  \
cairn diff 1a2b3c4d latest | grep '^M'"
    )]
    Diff(DiffArgs),

    /// Find files and directories across snapshots.
    #[command(
        long_about = "Search snapshots for entries matching the glob PATTERN and list them per \
snapshot, with their type, size and modification time. A pattern without `/` is matched against \
the entry's name (`*.pdf`), one with `/` against its whole path: `/home/*/notes.txt` from the root, \
`docs/*.md` at any depth. `*` and `?` never match a `/`; `**` matches any number of directories. \
Quote the pattern so the shell leaves it alone.\n\n\
Every snapshot passing --host, --tag and --path is searched, or only those given with --snapshot \
(repeatable). Directories shared by several snapshots are read once.",
        after_help = "Examples:\n  \
cairn find '*.pdf'\n  \
cairn find '/home/*/.ssh/config' --host web1\n  \
cairn find 'notes.txt' --snapshot latest --snapshot 1a2b3c4d --json"
    )]
    Find(FindArgs),

    /// Show sizes, deduplication and compression.
    #[command(
        long_about = "Count the given snapshots (default: all, narrowed by --host, --tag, --path) \
and the repository. Every mode shows the restore size (files, directories and bytes a restore of \
each snapshot would write; an unchanged file counts once per snapshot) and the repository size \
(all pack files). --mode raw adds the unique chunks and trees these snapshots reference, with \
their plaintext and stored (compressed, encrypted) sizes and the compression ratio; --mode dedup \
also the dedup ratio (restore size / unique plaintext). raw and dedup look up every chunk in the \
index and take longer on large repositories.",
        after_help = "Examples:\n  \
cairn stats\n  \
cairn stats latest --mode raw\n  \
cairn stats --mode dedup --host web1 --json"
    )]
    Stats(StatsArgs),

    /// Verify the repository's structure and data.
    #[command(
        long_about = "Verify the repository without trusting the local cache: every index file \
decodes; every pack the index names exists, has the expected size and a header listing exactly \
the indexed blobs; every snapshot decodes; every tree they reach loads; every chunk a file needs \
is indexed. Packs no index names are reported as warnings (left by interrupted backups).\n\n\
--read-data also reads every pack, checks its hash and decrypts, decompresses and hashes every \
blob. --read-data-subset reads part of the packs: `n/m` (packs whose id's first byte modulo m is \
n-1), `x%` or a size like `5G`. Verified packs are remembered in the local cache's ledger: `x%` \
and size subsets take the least recently verified packs, so four `25%` runs read every pack once; \
--max-age DURATION reads only packs not verified within DURATION at this location, by any machine: \
each check stores a record in the repository naming where it ran (a host and path, or an S3 \
bucket), so a new machine skips what was verified here and a byte copy elsewhere reads its own \
packs; when nothing is due it says so. --max-duration DURATION starts no new pack after that long.\n\n\
Every problem names the pack, blob or file and the snapshots and paths it affects. Exits 1 when \
any error is found.",
        after_help = "Examples:\n  \
cairn check\n  \
cairn check --read-data-subset 25%\n  \
cairn check --read-data --max-age 30d --max-duration 1h --json"
    )]
    Check(CheckArgs),

    /// Restore a sample of a snapshot and compare it (restore drill).
    #[command(
        long_about = "A restore drill: restore SNAPSHOT's files (all, or a sample chosen with \
--sample) into a fresh scratch directory with the ordinary restore, read every restored file back \
and compare it chunk by chunk with the keyed hashes the snapshot records, check size and \
modification time, time it, print a report, and remove the scratch directory. The result is \
remembered in the local cache and recorded in the repository for `cairn report`.\n\n\
--sample N draws N files, --sample x% each file with probability x%. The draw is deterministic for \
a --seed (a random seed is chosen and printed otherwise). The scratch directory is made inside \
--scratch (default: the system's temporary directory). Exits 1 when a file differs or does not \
restore.",
        after_help = "Examples:\n  \
cairn drill\n  \
cairn drill latest --sample 100 --scratch /var/tmp\n  \
cairn drill 1a2b3c4d --sample 5% --json"
    )]
    Drill(DrillArgs),

    /// Print an integrity report on a snapshot.
    #[command(
        long_about = "Print an integrity report on SNAPSHOT for auditors: its id, time, host, paths \
and tags, the root tree id, a BLAKE3 Merkle root over the whole tree (docs/check.md §5), file count \
and total size, the backup's counters, how many of its packs were verified at this location, \
the last check and restore drill this machine remembers, and, from the repository's records, the \
newest check, drill and exporter verify of every location (any machine) with dates. As text, as \
Markdown with --markdown, or as JSON with --json.\n\n\
With --sign the JSON report, with the audit trail's heads (`audit_heads`), is signed with the \
repository's audit key: a last line `cairn-signature: ed25519 KEY SIGNATURE` covers every byte \
before it. `cairn report verify FILE --public-key KEY` checks such a file without the password.",
        after_help = "Examples:\n  \
cairn report latest\n  \
cairn report 1a2b3c4d --markdown > report.md\n  \
cairn report latest --json | jq .merkle_root\n  \
cairn report latest --sign --output report.signed\n  \
cairn report verify report.signed --public-key audit.pub",
        args_conflicts_with_subcommands = true
    )]
    Report(ReportArgs),

    /// Back up, restore and verify Redis servers.
    #[command(
        long_about = "Redis exporter. `backup` fetches the server's RDB over the replication \
protocol (like `redis-cli --rdb`, natively) and streams it into the repository as \
redis/dump.rdb, checking the RDB magic, version and CRC64 trailer on the way: a short or \
corrupt transfer fails and writes no snapshot. The Redis version, RDB version and key counts \
per database are recorded as snapshot metadata. `restore` writes the RDB to a file, or loads it \
into a running server through a throw-away local redis-server (DUMP/RESTORE ABSTTL REPLACE). \
`verify` loads the RDB into a throw-away redis-server and compares key counts per database.",
        after_help = "Examples:\n  \
cairn redis backup --url redis://:secret@127.0.0.1:6379\n  \
cairn redis restore latest --to-file /var/lib/redis/dump.rdb\n  \
cairn redis verify latest --json"
    )]
    Redis(RedisArgs),

    /// Back up, restore and verify PostgreSQL databases.
    #[command(
        long_about = "PostgreSQL exporter. `pg backup` streams `pg_dump -Fc -Z0` of each database \
straight into the repository (no temporary file; the repository compresses and deduplicates), with \
row counts of every table taken in the same transaction snapshot, plus `pg_dumpall --globals-only` \
(roles, tablespaces) as its own snapshot. `pg restore` feeds pg_restore from the repository; \
`pg verify` restores into a scratch database, compares row counts with the recorded ones and drops \
it.\n\n\
Managed servers (RDS, Neon) give no superuser: the roles are then saved without their passwords \
(`pg backup --globals`), and databases the role cannot read fail alone.\n\n\
Client programs come from the newest /usr/lib/postgresql/N/bin (or CAIRN_PG_BINDIR) and must be at \
least the server's major version.",
        after_help = "Examples:\n  \
cairn pg backup --dsn postgresql://postgres@db1/postgres --all\n  \
cairn pg restore latest --database shop --dsn postgresql://postgres@db1/postgres --create --globals\n  \
cairn pg verify latest --database shop --dsn postgresql://postgres@scratch/postgres --json"
    )]
    Pg(PgArgs),

    /// Back up, restore and verify Qdrant collections.
    #[command(
        long_about = "Qdrant exporter, over the REST API. `backup` creates a snapshot of each \
collection on the server (wait=true), streams its download into the repository as \
qdrant/<collection>.snapshot byte for byte (a tar with GNU sparse members: never re-tarred), checks \
the SHA-256 the server reports while it streams, and deletes the server-side snapshot. A \
mismatch or a dropped download fails and writes no snapshot. The Qdrant version, the collection's \
config and exact points count are recorded as snapshot metadata. `restore` uploads the stored \
snapshot (multipart, priority=snapshot, checksum=…) and waits for the recovery; `verify` does so \
into a scratch collection, compares the points count with the recorded one and deletes it.\n\n\
The API key comes from --api-key or CAIRN_QDRANT_API_KEY (preferred: it stays out of process \
lists); it is sent as the `api-key` header and never printed or recorded.",
        after_help = "Examples:\n  \
CAIRN_QDRANT_API_KEY=secret cairn qdrant backup --url http://127.0.0.1:6333 --all\n  \
cairn qdrant restore latest --url http://127.0.0.1:6333 --path qdrant/docs.snapshot\n  \
cairn qdrant verify latest --url http://127.0.0.1:6333 --json"
    )]
    Qdrant(QdrantArgs),

    /// Print a shell completion script.
    #[command(
        long_about = "Print a completion script for SHELL on standard output. Load it from your \
shell's startup file or install it where your shell looks for completions.",
        after_help = "Examples:\n  \
cairn completions bash > ~/.local/share/bash-completion/completions/cairn\n  \
cairn completions zsh > \"${fpath[1]}/_cairn\"\n  \
cairn completions fish > ~/.config/fish/completions/cairn.fish"
    )]
    Completions(CompletionsArgs),

    /// Run a backup plan (sources, repositories, retention, checks, hooks).
    #[command(
        long_about = "Run the plan file PLAN (see `cairn plan init` and docs/plans.md): back up every source into every repository, each as its own `cairn` child process, so one failing source never stops the others. Then apply the retention policy to the plan's snapshots (forget, and prune if asked), run `check` and `drill` on each repository when their cadence is due, write the JSON report and the Prometheus metrics file, and run the on_success or on_failure hook.\n\nA child that exits 3 (snapshot saved, some files unreadable) is a warning, not a failure. Exits 1 when any backup, retention, check, drill or hook failed; the others still ran. --source runs only the named sources (repeatable). --dry-run validates the plan and prints the commands without running anything.",
        after_help = "Examples:\n  \
cairn run /etc/cairn/nightly.toml\n  \
cairn run nightly.toml --source postgres --source etc\n  \
cairn run nightly.toml --dry-run\n  \
cairn run nightly.toml --json | jq '.sources[] | select(.status == \"failed\")'"
    )]
    Run(RunArgs),

    /// Write an example plan, or schedule a plan.
    #[command(
        long_about = "`plan init [PATH]` writes a commented example plan (to stdout without PATH; an existing file is never overwritten). `plan schedule PLAN` prints a systemd service and timer (default) or a cron.d line that runs `cairn run PLAN`; --install writes them (to /etc/systemd/system or /etc/cron.d, or --unit-dir) and, for systemd in the default directory, reloads systemd and enables the timer.",
        after_help = "Examples:\n  \
cairn plan init /etc/cairn/nightly.toml\n  \
cairn plan schedule /etc/cairn/nightly.toml\n  \
cairn plan schedule /etc/cairn/nightly.toml --on-calendar '*-*-* 03:15' --install\n  \
cairn plan schedule /etc/cairn/nightly.toml --cron"
    )]
    Plan(PlanArgs),

    /// Find what this machine should back up and propose a plan.
    #[command(
        long_about = "Look for what should be backed up here: PostgreSQL, Redis and Qdrant servers \
(listening TCP sockets from /proc/net/tcp and tcp6 mapped to their processes, so servers on \
other ports are found too; the usual ports; PostgreSQL and Redis unix sockets), /etc with its \
TLS material, application data under /var/lib, /srv and /opt, home directories, and git \
repositories (a bounded walk). Print a plan proposing a source for each, with a comment saying \
what was found and why, or write it with --write (never over an existing file). --json lists the \
findings instead. Sockets of other users' processes are only mapped when run as root; the \
well-known ports still are.",
        after_help = "Examples:\n  \
cairn discover\n  \
cairn discover --write /etc/cairn/nightly.toml\n  \
cairn discover --json | jq '.[] | select(.kind == \"redis\")'"
    )]
    Discover(DiscoverArgs),

    /// List the audit trail, verify it, or export its public key.
    #[command(
        long_about = "Every command that changes the repository or reads data out of it (init, backup, \
copy, forget, prune, key add/remove/passwd/rotate/retire, rekey, repair, restore, dump, drill, check, and the pg, redis \
and qdrant backups, restores and verifies; `cairn run` through its steps) appends one record to the repository's audit trail: time, \
host, user, command, arguments with secrets replaced by ***, objects created and deleted, and the \
outcome. Records are encrypted, signed with the repository's audit key (Ed25519) and hash-chained.\n\n\
`cairn audit` lists them, oldest first (--since: an RFC 3339 time or a duration back from now). \
`cairn audit verify` checks every record's name, signature, body and parents, and that the heads \
each snapshot recorded still exist; it names each removed, altered or reordered record and exits 1. \
With --public-key it needs no password: an auditor checks names, signatures and parent links, and \
sees only times, never what a record says. `cairn audit export-key` prints that public key.",
        after_help = "Examples:\n  \
cairn audit --since 7d\n  \
cairn audit --json | jq '.[] | select(.command == \"restore\")'\n  \
cairn audit export-key --output audit.pub\n  \
cairn audit verify --public-key audit.pub",
        args_conflicts_with_subcommands = true
    )]
    Audit(AuditArgs),
}

/// `cairn audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// What to do besides listing.
    #[command(subcommand)]
    pub command: Option<AuditCommand>,
    /// List only records from this time on: RFC 3339, or a duration back from now (`7d`).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
}

/// `cairn audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the trail; exit 1 naming each removed, altered or reordered record.
    Verify {
        /// Check with this public key (text, or a file holding it) and no password.
        #[arg(long, value_name = "KEY")]
        public_key: Option<String>,
    },
    /// Print the audit public key (`cairn-audit-ed25519:<hex>`).
    ExportKey {
        /// Write it to this file instead.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
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
    /// argon2id lanes of the password key, computed in parallel (1 to 64).
    #[arg(long, value_name = "LANES", default_value_t = DEFAULT_KDF_PARALLELISM,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub kdf_parallelism: u32,
    /// zstd compression level for data, 0 (none) to 22. Level 1 backs up
    /// with about a quarter less CPU than 3 and stores about 7 % more.
    #[arg(long, value_name = "LEVEL", default_value_t = 3,
          value_parser = clap::value_parser!(i32).range(0..=22))]
    pub compression: i32,
    /// Target size of pack files, in MiB (1 to 1024).
    #[arg(long, value_name = "MIB", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub pack_size: u32,
    /// Create a format-version-1 repository: small files are compressed
    /// without a trained dictionary, and cairn builds older than format 2
    /// can read it. It never gains a dictionary later.
    #[arg(long)]
    pub no_dictionary: bool,
    /// Cut and name data like the repository given by --from-repo (its chunker parameters
    /// and content keys; a new password key of its own), so snapshots copied between the
    /// two deduplicate with each other and with backups made directly into this one.
    #[arg(long, requires = "from_repo", conflicts_with = "no_dictionary")]
    pub copy_chunker_params: bool,
    /// The repository whose parameters --copy-chunker-params copies.
    #[command(flatten)]
    pub from: FromRepoArgs,
    /// The AEAD that seals every object: xchacha20-poly1305 (the default) or xaes-256-gcm
    /// (AES-256, for policies that name it; uses AES-NI). Anything but the default
    /// creates a format-version-4 repository, which cairn builds before it cannot read.
    #[arg(long, value_name = "CIPHER", default_value = "xchacha20-poly1305",
          value_parser = parse_cipher, conflicts_with = "no_dictionary")]
    pub cipher: repo_core::Cipher,
}

fn parse_cipher(s: &str) -> Result<repo_core::Cipher, String> {
    repo_core::Cipher::parse(s)
        .ok_or_else(|| format!("unknown cipher {s:?}: use xchacha20-poly1305 or xaes-256-gcm"))
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

    /// Skip paths matching GLOB: `*.tmp` names at any depth, `/var/*/cache` from the root,
    /// `log/*.gz` at any depth (`*` never matches `/`).
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

/// The repository snapshots are copied from (`copy`, `init --copy-chunker-params`).
#[derive(Debug, Args, Default)]
pub struct FromRepoArgs {
    /// The source repository.
    #[arg(long, env = "CAIRN_FROM_REPOSITORY", value_name = "LOCATION")]
    pub from_repo: Option<PathBuf>,
    /// Read the source repository's password from the first line of FILE.
    #[arg(long, env = "CAIRN_FROM_PASSWORD_FILE", value_name = "FILE")]
    pub from_password_file: Option<PathBuf>,
    /// Run COMMAND (with sh -c) and use the first line of its output as the source's password.
    #[arg(
        long,
        env = "CAIRN_FROM_PASSWORD_COMMAND",
        value_name = "COMMAND",
        conflicts_with = "from_password_file"
    )]
    pub from_password_command: Option<String>,
    /// Unlock the source with this key file (id or unique prefix).
    #[arg(long, env = "CAIRN_FROM_KEY", value_name = "ID")]
    pub from_key: Option<String>,
}

/// `cairn copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Where the snapshots come from.
    #[command(flatten)]
    pub from: FromRepoArgs,
    /// Snapshots of the source to copy (ids or unique prefixes; default: all passing the filters).
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// Which snapshots of the source to copy.
    #[command(flatten)]
    pub filter: FilterArgs,
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
    /// What to do with a file, link or other entry that already exists in the target.
    /// Directories are always merged into; a symlink below the target is never followed.
    #[arg(long, value_enum, value_name = "WHEN", default_value = "always")]
    pub overwrite: OverwriteArg,
    /// Also restore extended attributes outside `user.*` (`security.*`, `trusted.*`, ...)
    /// that a snapshot may carry; backup records only `user.*`.
    #[arg(long)]
    pub all_xattrs: bool,
    /// Narrows `latest`.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `cairn restore --overwrite`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OverwriteArg {
    /// Replace whatever exists (a file, a symlink, a fifo) with the snapshot's entry.
    Always,
    /// Keep regular files whose size and mtime equal the snapshot's, untouched; replace the rest.
    IfChanged,
    /// Keep everything that exists, untouched (counted as skipped).
    Never,
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
    /// The compression dictionaries: id, size and zstd dictionary id of
    /// each (or of the one matching ID), verified; --raw writes the
    /// dictionary itself to standard output.
    #[command(alias = "dict", alias = "dictionaries")]
    Dictionary {
        /// Dictionary id or a unique prefix of one (default: all).
        #[arg(value_name = "ID")]
        id: Option<String>,
        /// Write the raw zstd dictionary of the one selected to standard output.
        #[arg(long, requires = "id")]
        raw: bool,
    },
}

/// `cairn key`.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// What to do with the keys.
    #[command(subcommand)]
    pub command: KeyCommand,
}

/// The `cairn key` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List the key files.
    #[command(
        long_about = "List the repository's key files, oldest first: id, creation time (local), the \
host and user that created it, and its argon2id cost. The key this command was opened with is \
marked with `*`. Key files that cannot be read, or that belong to another repository, are listed \
as damaged with the reason; they open nothing and can be removed.",
        after_help = "Examples:\n  \
cairn key list\n  \
cairn key list --json | jq -r '.[] | select(.current) | .id'"
    )]
    List,

    /// Add a password.
    #[command(
        long_about = "Add a key file that opens the repository with a new password. The existing \
passwords keep working. The new password comes from --new-password-file, else \
CAIRN_NEW_PASSWORD, else a prompt that asks twice.\n\n\
With --unattended, the key is for a service (PostgreSQL's archive_command, nightly plans): \
cairn draws a random 256-bit secret and writes it, with the key's id, as a one-line token to \
--output (mode 0600, refused if the file exists; --owner hands it to the service's user). \
Such a key is not stretched with argon2, since a random secret cannot be guessed, so opening \
with it (--key-file FILE or CAIRN_KEY_FILE) costs microseconds. Whoever can read the token \
can read and write the whole repository, as with a password; `key remove ID` revokes it.",
        after_help = "Examples:\n  \
cairn key add\n  \
cairn key add --new-password-file ~/.cairn-pass-bob\n  \
CAIRN_NEW_PASSWORD=test cairn key add --kdf-memory 64 --kdf-iterations 1\n  \
cairn key add --unattended --output /etc/cairn/pg.key --owner postgres\n  \
CAIRN_KEY_FILE=/etc/cairn/pg.key cairn snapshots"
    )]
    Add(KeyAddArgs),

    /// Remove a password.
    #[command(
        long_about = "Delete the key file ID (a full id or a unique prefix, as `key list` shows). \
Refused for the last usable key, which would make the repository impossible to open, and for \
the key this command was opened with: open with another password to remove it, or use \
`key passwd` to replace it.",
        after_help = "Examples:\n  \
cairn key remove 5f3e\n  \
cairn key remove 5f3e --json"
    )]
    Remove(KeyRemoveArgs),

    /// Change the password.
    #[command(
        long_about = "Replace the password this command was opened with: a new key file wraps the \
same master key under the new password, then the old key file is deleted. The data is not \
touched. The new key file is written first, so an interruption leaves both passwords working. \
Without --kdf-memory and --kdf-iterations, the new key keeps the old key's argon2id cost.",
        after_help = "Examples:\n  \
cairn key passwd\n  \
cairn key passwd --new-password-file ~/.cairn-pass-new"
    )]
    Passwd(KeyPasswdArgs),

    /// Start a new data-key epoch.
    #[command(
        long_about = "Start a new data-key epoch: a fresh random key that seals everything written from now on, \
granted to every key file (sealed to each key file's public key, so no other password is \
needed). Data written before keeps its epoch until `cairn rekey` rewrites it; `key retire` then \
removes an old epoch, after which a copy of its key opens nothing.\n\n\
Only the sealing key rotates. Chunk ids and chunk boundaries keep their keys, or deduplication \
against everything stored would end; for a complete re-key, `cairn copy` into a fresh \
repository.\n\n\
The first rotation makes the repository format version 4, which older cairn builds refuse. Key \
files made by older builds have no public key: rotate refuses while any other than this \
session's exists (remove them first and add them again after the rotation); this session's own \
is re-wrapped under the same password first. For an unattended key (--key-file) that means a \
new token: pass --output FILE to receive it.",
        after_help = "Examples:\n  \
cairn key rotate\n  \
cairn key rotate --json\n  \
CAIRN_KEY_FILE=/etc/cairn/pg.key cairn key rotate --output /etc/cairn/pg.key.new --owner postgres"
    )]
    Rotate(KeyRotateArgs),

    /// Remove an old data-key epoch.
    #[command(
        long_about = "Retire data-key epoch EPOCH: refused for the newest epoch and while any object (snapshot, index \
file, pack, dictionary, mark, archived WAL, audit or verification record, config) is still \
sealed under it, with the count and some of their names (`cairn rekey` rewrites them), and while \
a backup is running (its heartbeat is alive: it may still seal under the old epoch). Otherwise the epoch is removed from the \
config and its grants are deleted: from then on its key opens nothing in the repository. `key \
epochs` shows the objects per epoch without retiring anything.",
        after_help = "Examples:\n  \
cairn key retire 0\n  \
cairn key retire 1 --json"
    )]
    Retire(KeyRetireArgs),

    /// Show the data-key epochs and what is sealed under each.
    #[command(
        long_about = "Show the live data-key epochs, the newest (which seals new objects), and how \
many objects are sealed under each epoch: every snapshot, index file, pack header (which stands \
for its blobs), dictionary, mark, archived WAL file and the config is opened to count it, so \
this reads every small file of the repository. Objects that open under no live epoch are \
listed as unreadable.",
        after_help = "Examples:\n  \
cairn key epochs\n  \
cairn key epochs --json | jq '.per_epoch'"
    )]
    Epochs,
}

/// `cairn key rotate`.
#[derive(Debug, Args)]
pub struct KeyRotateArgs {
    /// Where to write the new token when this session's unattended key is
    /// re-wrapped (created 0600; never overwritten).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Give the new token file to USER (and USER's group), e.g. postgres.
    #[arg(long, value_name = "USER", requires = "output")]
    pub owner: Option<String>,
}

/// `cairn key retire`.
#[derive(Debug, Args)]
pub struct KeyRetireArgs {
    /// The epoch to retire (a number, as `key epochs` shows).
    #[arg(value_name = "EPOCH")]
    pub epoch: u32,
}

/// Where a new password comes from, and its argon2id cost.
#[derive(Debug, Args)]
pub struct NewKeyArgs {
    /// Read the new password from the first line of FILE [default: CAIRN_NEW_PASSWORD, else ask].
    #[arg(long, value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
    /// argon2id memory cost of the new key, in KiB [default: 65536 for `add`, the old key's for `passwd`].
    #[arg(long, value_name = "KIB")]
    pub kdf_memory: Option<u32>,
    /// argon2id passes of the new key [default: 3 for `add`, the old key's for `passwd`].
    #[arg(long, value_name = "N")]
    pub kdf_iterations: Option<u32>,
    /// argon2id lanes of the new key [default: 4 for `add`, the old key's for `passwd`].
    #[arg(long, value_name = "LANES", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub kdf_parallelism: Option<u32>,
}

/// `cairn key add`.
#[derive(Debug, Args)]
pub struct KeyAddArgs {
    /// The new password and its cost.
    #[command(flatten)]
    pub new: NewKeyArgs,
    /// Add an unattended key for a service instead of a password: a random
    /// 256-bit secret, written as a token to --output.
    #[arg(
        long,
        requires = "output",
        conflicts_with_all = ["new_password_file", "kdf_memory", "kdf_iterations", "kdf_parallelism"]
    )]
    pub unattended: bool,
    /// Where to write the unattended key's token (created 0600; never overwritten).
    #[arg(long, value_name = "FILE", requires = "unattended")]
    pub output: Option<PathBuf>,
    /// Give the token file to USER (and USER's group), e.g. postgres.
    #[arg(long, value_name = "USER", requires = "unattended")]
    pub owner: Option<String>,
}

/// `cairn key remove`.
#[derive(Debug, Args)]
pub struct KeyRemoveArgs {
    /// Key file id or a unique prefix of one.
    #[arg(value_name = "ID")]
    pub id: String,
}

/// `cairn key passwd`.
#[derive(Debug, Args)]
pub struct KeyPasswdArgs {
    /// The new password and its cost.
    #[command(flatten)]
    pub new: NewKeyArgs,
}

/// How a prune repacks and how long it waits (shared by `prune` and `forget --prune`).
#[derive(Debug, Clone, Copy, Args)]
pub struct PruneOptionArgs {
    /// Repack packs whose unused share exceeds PERCENT.
    #[arg(long, value_name = "PERCENT", default_value_t = 5.0)]
    pub max_unused: f64,
    /// Delete condemned packs only after this long (storage clock), e.g. 1h, 2d, 0.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = repo_core::parse_duration)]
    pub grace: std::time::Duration,
}

impl PruneOptionArgs {
    /// The library's options.
    pub fn options(&self) -> repo_core::PruneOptions {
        repo_core::PruneOptions {
            max_unused: self.max_unused / 100.0,
            grace: self.grace,
        }
    }
}

/// `cairn prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Print the plan and change nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Repacking and grace period.
    #[command(flatten)]
    pub options: PruneOptionArgs,
}

/// `cairn rekey`.
#[derive(Debug, Args)]
pub struct RekeyArgs {
    /// Stop cleanly between objects after DURATION (exit 3; a rerun continues), e.g. 2h, 90min.
    #[arg(long, value_name = "DURATION", value_parser = repo_core::parse_run_time)]
    pub max_duration: Option<std::time::Duration>,
    /// Delete the old packs only after this long (storage clock), e.g. 1h, 2d, 0.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = repo_core::parse_duration)]
    pub grace: std::time::Duration,
}

/// `cairn repair`.
#[derive(Debug, Args)]
pub struct RepairArgs {
    /// What to repair.
    #[command(subcommand)]
    pub what: RepairWhat,
}

/// `cairn repair index|snapshots`.
#[derive(Debug, Subcommand)]
pub enum RepairWhat {
    /// Rebuild the index from the pack headers.
    Index {
        /// Read every pack whole and salvage damaged ones.
        #[arg(long)]
        read_data: bool,
    },
    /// Rewrite snapshots that reference lost data.
    Snapshots {
        /// Delete snapshot files that are damaged (they cannot be decrypted,
        /// so nothing in them can be restored); without it they are skipped
        /// with a warning.
        #[arg(long)]
        forget_damaged: bool,
    },
}

/// `cairn forget`.
#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Keep the N newest snapshots.
    #[arg(short = 'l', long, value_name = "N", value_parser = parse_keep_count)]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[arg(short = 'H', long, value_name = "N", value_parser = parse_keep_count)]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days that have one.
    #[arg(short = 'd', long, value_name = "N", value_parser = parse_keep_count)]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one.
    #[arg(short = 'w', long, value_name = "N", value_parser = parse_keep_count)]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months that have one.
    #[arg(short = 'm', long, value_name = "N", value_parser = parse_keep_count)]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years that have one.
    #[arg(short = 'y', long, value_name = "N", value_parser = parse_keep_count)]
    pub keep_yearly: Option<u32>,
    /// Keep snapshots less than DURATION older than the group's newest (e.g. 30d, 1y2m, 12h).
    #[arg(long, value_name = "DURATION", value_parser = repo_core::parse_duration)]
    pub keep_within: Option<std::time::Duration>,
    /// Keep snapshots carrying these tags (`a,b` needs both; repeat to keep either).
    #[arg(long = "keep-tag", value_name = "TAG[,TAG]")]
    pub keep_tags: Vec<String>,
    /// Group snapshots by these fields before applying the policy (`""`: one group).
    #[arg(long, value_name = "host,paths,tags", default_value = "host,paths",
          value_parser = clap::value_parser!(repo_core::GroupBy))]
    pub group_by: repo_core::GroupBy,
    /// Show what would be kept and removed, and remove nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Then run a prune (skipped with --dry-run); see `cairn prune --help`.
    #[arg(long)]
    pub prune: bool,
    /// Options of that prune.
    #[command(flatten)]
    pub prune_options: PruneOptionArgs,
    /// Which snapshots to consider; the others are left alone.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// A `--keep-*` count: a number, or `unlimited`.
fn parse_keep_count(s: &str) -> Result<u32, String> {
    if s == "unlimited" {
        return Ok(u32::MAX);
    }
    s.parse()
        .map_err(|_| format!("{s:?} is not a count (a number, or `unlimited`)"))
}

/// `cairn diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The older snapshot: `latest`, an id, or a unique prefix of one.
    #[arg(value_name = "A")]
    pub a: String,
    /// The newer snapshot: `latest`, an id, or a unique prefix of one.
    #[arg(value_name = "B")]
    pub b: String,
    /// Narrows `latest`.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `cairn find`.
#[derive(Debug, Args)]
pub struct FindArgs {
    /// Glob matched against names (no `/`) or paths (with `/`).
    #[arg(value_name = "PATTERN")]
    pub pattern: String,
    /// Search only this snapshot (`latest`, an id or a prefix; repeat for several).
    #[arg(short, long = "snapshot", value_name = "ID")]
    pub snapshots: Vec<String>,
    /// Which snapshots to search (and what `latest` means).
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `cairn stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Snapshots to count (`latest`, ids or prefixes) [default: all passing the filters].
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// What to compute.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = StatsModeArg::RestoreSize)]
    pub mode: StatsModeArg,
    /// Which snapshots to count (and what `latest` means).
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `cairn stats --mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatsModeArg {
    /// Files, directories and bytes a restore would write.
    RestoreSize,
    /// Also unique chunks and trees, plaintext and stored sizes, compression ratio.
    Raw,
    /// Also the dedup ratio.
    Dedup,
}

/// `cairn check`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("data").args(["read_data", "read_data_subset"])))]
pub struct CheckArgs {
    /// Also read every pack and verify every blob (decrypt, decompress, hash).
    #[arg(long)]
    pub read_data: bool,
    /// Read only some packs: `n/m`, `x%` (least recently verified first) or a size like `5G`.
    #[arg(long, value_name = "SUBSET")]
    pub read_data_subset: Option<repo_core::ReadData>,
    /// Read only packs not verified at this location (by any machine: the repository records
    /// where each check ran) within DURATION (e.g. 30d, 1y2m, 12h; units y=365d, m=30d, w, d, h, min, s).
    #[arg(long, value_name = "DURATION", requires = "data",
          value_parser = repo_core::parse_duration)]
    pub max_age: Option<std::time::Duration>,
    /// Start no new pack after DURATION (e.g. 1h, 90min, 1h30min; units w, d, h, min, s).
    #[arg(long, value_name = "DURATION", requires = "data",
          value_parser = repo_core::parse_run_time)]
    pub max_duration: Option<std::time::Duration>,
}

/// `cairn drill`.
#[derive(Debug, Args)]
pub struct DrillArgs {
    /// `latest`, a snapshot id, or a unique prefix of one.
    #[arg(value_name = "SNAPSHOT", default_value = "latest")]
    pub snapshot: String,
    /// Files to restore: `all`, a count (`100`) or a share (`5%`).
    #[arg(long, value_name = "N|x%|all", default_value = "all")]
    pub sample: repo_core::Sample,
    /// Seed of the sample, to draw the same files again.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Directory to make the scratch directory in [default: the system's temporary directory].
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,
    /// Narrows `latest`.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `cairn report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// `report verify FILE`.
    #[command(subcommand)]
    pub command: Option<ReportCommand>,
    /// `latest`, a snapshot id, or a unique prefix of one.
    #[arg(value_name = "SNAPSHOT", required = true)]
    pub snapshot: Option<String>,
    /// Print Markdown instead of text.
    #[arg(long, conflicts_with = "json")]
    pub markdown: bool,
    /// Sign the report (its JSON form, with the audit trail's heads) with
    /// the repository's audit key; `report verify` checks it.
    #[arg(long, conflicts_with = "markdown")]
    pub sign: bool,
    /// Write the report to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Narrows `latest`.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `cairn report` subcommands.
#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Check a signed report without the password; exit 1 if it was altered.
    Verify {
        /// The signed report.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The repository's audit public key (text, or a file holding it).
        #[arg(long, value_name = "KEY")]
        public_key: String,
    },
}

/// `cairn pg`.
#[derive(Debug, Args)]
pub struct PgArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: PgCommand,
}

/// `cairn pg` subcommands.
#[derive(Debug, Subcommand)]
pub enum PgCommand {
    /// Back up PostgreSQL databases and globals.
    #[command(
        long_about = "For each database: open a REPEATABLE READ transaction, export its snapshot, \
count the rows of every user table in it, and stream `pg_dump --snapshot=… -Fc -Z0` into a \
snapshot tagged `postgres` holding `postgres/<db>.dump`. Before the databases, \
`pg_dumpall --globals-only` is saved as `postgres/globals.sql` in a snapshot tagged \
`postgres-globals`. If pg_dump fails or the connection drops, that database's snapshot is not \
written; the other databases are still backed up, the failure is listed (`failed` in --json) and \
the command exits 1.\n\n\
Roles (--globals): `auto` (default) saves them with their password hashes, and when the role \
cannot read pg_authid (not a superuser: RDS, Neon, Cloud SQL) falls back to \
`pg_dumpall --globals-only --no-role-passwords` with a warning; `full` insists on the passwords, \
`no-passwords` does not try, `skip` saves no globals. The globals never cost the databases. \
With --all, databases the role has no CONNECT privilege on are skipped with a warning; a \
database with a table the role cannot read fails (grant pg_read_all_data, or dump as the \
owner).\n\n\
The connection string comes from --dsn, CAIRN_PG_DSN or the first line of --dsn-file. Its \
password is taken out and given to psql, pg_dump, pg_dumpall and pg_restore as PGPASSWORD in \
their environment, never as an argument; a password in --dsn itself shows in `ps` (a warning \
says so).",
        after_help = "Examples:\n  \
cairn pg backup --dsn postgresql://postgres@localhost/postgres --all\n  \
CAIRN_PG_DSN=postgresql://backup:secret@db1/postgres cairn pg backup --all\n  \
cairn pg backup --dsn 'host=/run/postgresql user=postgres' --database shop --database crm\n  \
CAIRN_PG_DSN=postgresql://app@mydb.rds.amazonaws.com/postgres cairn pg backup --all --globals no-passwords"
    )]
    Backup(PgBackupArgs),

    /// Restore a PostgreSQL database from a snapshot.
    #[command(
        long_about = "Feed the snapshot's dump to pg_restore (through a pipe, --exit-on-error). \
Without --create it restores into --database (default: the dumped database), which must exist. \
With --create the database is made: under the dumped name by `pg_restore --create`, under \
--database NEW by CREATE DATABASE from template0 with the recorded encoding and locale; if the \
restore fails it is dropped again, so no half-restored database is left (one that existed and \
is replaced with --clean is not dropped). --clean drops objects first. --globals first replays \
the roles saved with the same backup through psql (roles that exist already only produce errors \
that are ignored).\n\n\
SNAPSHOT `latest` takes the newest dump of --database when the repository holds dumps of a \
database of that name, or of --path postgres/NAME.dump; a `latest` that could mean dumps of \
several databases (after `pg backup --all`) is refused.\n\n\
--jobs N (N > 1) runs `pg_restore -j N`, which restores tables and builds indexes in parallel but \
cannot read a pipe: the dump is then first written to a private temporary file (mode 0600, in a \
new 0700 directory under --temp-dir, default $TMPDIR) as large as the dump, which is removed \
afterwards, also when the restore fails.",
        after_help = "Examples:\n  \
cairn pg restore latest --dsn postgresql://postgres@localhost/postgres --create --globals\n  \
cairn pg restore latest --database shop --dsn postgresql://postgres@localhost/postgres --clean\n  \
cairn pg restore latest --path postgres/shop.dump --create --database shop_copy --dsn postgresql://postgres@localhost/postgres\n  \
cairn pg restore 1a2b3c4d --dsn postgresql://postgres@localhost/postgres --database shop_copy\n  \
cairn pg restore latest --dsn postgresql://postgres@localhost/postgres --create --jobs 4 --temp-dir /var/tmp"
    )]
    Restore(PgRestoreArgs),

    /// Verify a PostgreSQL backup by restoring it into a scratch database.
    #[command(
        long_about = "Create a scratch database, restore the snapshot's dump into it (without owners \
and privileges), count the rows of every table, compare them with the counts recorded at backup, \
and drop the scratch database. Exits 1 if any table differs. --scratch-dsn (or \
CAIRN_PG_SCRATCH_DSN) does it on a separate server: a test restore on another instance. \
`latest` takes the newest dump of --database NAME (or --path postgres/NAME.dump); it is refused \
while it could mean dumps of several databases. A damaged repository is named as such (pack and \
blob), not as pg_restore's complaint about a short input.",
        after_help = "Examples:\n  \
cairn pg verify latest --dsn postgresql://postgres@localhost/postgres\n  \
cairn pg verify latest --database shop --scratch-dsn postgresql://postgres@scratch-host/postgres\n  \
cairn pg verify latest --dsn postgresql://postgres@localhost/postgres --json | jq .ok"
    )]
    Verify(PgVerifyArgs),

    /// Stream a physical base backup (point-in-time recovery) into the repository.
    #[command(
        long_about = "Run `pg_basebackup -Ft -D - -X none` and stream its tar into a snapshot tagged \
`postgres-base` holding `postgres/base.tar`, which includes the `backup_manifest`. WAL is not \
in it: the server's archive_command (`cairn pg archive-wal %p`) puts WAL into the repository, \
and `pg restore-cluster` replays it from there. The snapshot records where the backup starts and \
ends in the WAL (pg.start_lsn, pg.stop_lsn, pg.start_wal, pg.stop_wal, pg.timeline, \
pg.system_identifier, pg.wal_segment_size, pg.stop_time). Only changed chunks are stored again, \
so a second base backup adds roughly what the database changed.\n\n\
The role needs the REPLICATION attribute and pg_hba.conf a `replication` line; a cluster with \
tablespaces outside the data directory is not supported (pg_basebackup writes only one tar to \
standard output). Without --fast, pg_basebackup first waits for a spread checkpoint.",
        after_help = "Examples:\n  \
cairn pg basebackup --dsn postgresql://postgres@localhost/postgres --fast\n  \
CAIRN_PG_DSN=postgresql://replicator:secret@db1/postgres cairn pg basebackup --json"
    )]
    Basebackup(PgBasebackupArgs),

    /// Restore a base backup into a new data directory, to a moment.
    #[command(
        long_about = "Extract a base backup (tag `postgres-base`) into --pgdata, which must be missing \
or empty, check it with `pg_verifybackup -n`, and write `recovery.signal` and the recovery \
settings into postgresql.auto.conf: a restore_command that fetches WAL from this repository \
(`cairn … pg restore-wal %f %p`, with -r and --password-file of this command), the \
recovery target and recovery_target_action. Start the server to replay.\n\n\
A target before the base backup's end (pg.stop_time / pg.stop_lsn) is refused before anything \
is written: use an older base backup (`latest` picks the newest one that ends before the \
target). Without a target the server replays every archived segment. Run as root, the files are \
given to --owner (default: the owner of the data directory or its parent, else `postgres`), mode \
0700.",
        after_help = "Examples:\n  \
cairn pg restore-cluster latest --pgdata /var/lib/postgresql/15/restored --target-time '2026-12-07 11:59:00+00'\n  \
cairn pg restore-cluster 1a2b3c4d --pgdata /srv/pg --target-lsn 0/3000060 --target-action pause\n  \
cairn pg restore-cluster latest --pgdata /srv/pg --owner postgres   # replay all archived WAL"
    )]
    RestoreCluster(PgRestoreClusterArgs),

    /// Prove point-in-time recovery: restore, replay, start, count, clean up.
    #[command(
        long_about = "Restore the newest base backup into a scratch cluster (a new 0700 temporary \
directory, a free loopback port, archiving off), replay archived WAL to the target (default: \
the end of the archive), wait until the server is promoted, count the rows of every table in \
every database, stop the server and remove the directory. Reports the recovery time measured \
from the start of extraction to the promoted server (RTO) and the newest moment recovered \
(RPO: the last replayed transaction's time and WAL position). Exits 1 if recovery fails.",
        after_help = "Examples:\n  \
cairn pg pitr-verify --json\n  \
cairn pg pitr-verify --target-time '2026-12-07 11:59:00+00' --scratch /var/tmp"
    )]
    PitrVerify(PgPitrVerifyArgs),
    /// Archive one WAL file: PostgreSQL's `archive_command`.
    #[command(
        name = "archive-wal",
        long_about = "Store the WAL file PATH (PostgreSQL's `%p`, relative to the data directory, which is the current directory when PostgreSQL runs the command) in the repository, compressed and encrypted, as one object named by the cluster and the file name (SPEC §28). Exits 0 only once the file is durably stored (fsync'd on a local repository, acknowledged by the server on S3); PostgreSQL then recycles the segment. Archiving a file that is stored already with the same content exits 0 (PostgreSQL retries after a crash); other content under the same name exits 1 and keeps the stored file. Prints nothing unless -v or --json.

Takes no lock and reads no index: only the config and a key file are read before the file is written. A segment names its cluster in its first page; a timeline history or backup label file is filed under the system identifier of --system-identifier, else the one in `global/pg_control` of --pgdata (default: the current directory).",
        after_help = "Examples (postgresql.conf):
  archive_mode = on
  archive_command = 'CAIRN_REPOSITORY=/backup/repo CAIRN_PASSWORD_FILE=/etc/cairn/pw cairn pg archive-wal %p'"
    )]
    ArchiveWal(PgArchiveWalArgs),

    /// Fetch one archived WAL file: PostgreSQL's `restore_command`.
    #[command(
        name = "restore-wal",
        long_about = "Write the archived WAL file NAME (PostgreSQL's `%f`) of this cluster to DEST (`%p`). The cluster is the one whose system identifier is in `global/pg_control` of --pgdata (default: the current directory, which is the data directory when PostgreSQL runs the command), or --system-identifier. One read of one object: no lock, no index, no listing.

A file that is not archived exits 1 and prints nothing: PostgreSQL asks for files that do not exist (the next timeline's history, the segment after the last) and takes exit 1 as \"not there\". A damaged object or an unreachable repository exits 1 with a message.

--prefetch N reads ahead (SPEC §28.4.1): after serving a segment it makes sure a detached worker fetches the next N into `pg_wal/cairn-prefetch/`; a later call serves a spooled segment only after checking it (SHA-256, header, size), else fetches it. With --json a restored file prints `{\"file\", \"source\": \"spool\" | \"repository\"}`.",
        after_help = "Examples (postgresql.conf of the server being recovered):
  restore_command = 'CAIRN_REPOSITORY=/backup/repo CAIRN_PASSWORD_FILE=/etc/cairn/pw cairn pg restore-wal %f %p'
  # read 8 segments ahead while the server replays, remove the spool at the end:
  restore_command = 'cairn -r /backup/repo --key-file /etc/cairn/pg.key pg restore-wal --prefetch 8 %f %p'
  recovery_end_command = 'cairn pg restore-wal --clean-spool'"
    )]
    RestoreWal(PgRestoreWalArgs),

    /// Report archived WAL per cluster and timeline, and its gaps.
    #[command(
        name = "wal-verify",
        long_about = "List the archived WAL (one listing, nothing decrypted but a timeline history file where needed) and report, per cluster and timeline, the range of archived segments and every gap in it. Recovery from the newest base backup (snapshots tagged `postgres-base`) must be possible: every segment from its start to the newest archived one, following timeline switches through the history files, must be there. A gap there, or a missing history file, is an error: exit 1. Gaps before it are reported, not errors.",
        after_help = "Examples:\n  \
cairn pg wal-verify\n  \
cairn pg wal-verify --json | jq '.clusters[].errors'"
    )]
    WalVerify,
}

/// `cairn pg archive-wal`.
#[derive(Debug, Args)]
pub struct PgArchiveWalArgs {
    /// The WAL file (`%p`).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// The cluster's data directory, for `global/pg_control` [default: .].
    #[arg(long, value_name = "DIR", env = "PGDATA")]
    pub pgdata: Option<PathBuf>,
    /// File history and backup label files under this system identifier
    /// instead of the one in `global/pg_control`.
    #[arg(long, value_name = "N")]
    pub system_identifier: Option<u64>,
}

/// `cairn pg restore-wal`.
#[derive(Debug, Args)]
pub struct PgRestoreWalArgs {
    /// The WAL file name (`%f`).
    #[arg(value_name = "NAME", required_unless_present = "clean_spool")]
    pub name: Option<String>,
    /// Where to write it (`%p`).
    #[arg(value_name = "DEST", required_unless_present = "clean_spool")]
    pub dest: Option<PathBuf>,
    /// After serving a segment, fetch the next N in the background into
    /// `pg_wal/cairn-prefetch/` of the data directory, so the next calls
    /// only rename a file (0: off). Pair with `--clean-spool` as
    /// recovery_end_command.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub prefetch: u32,
    /// Stop the prefetch worker and remove its spool directory (the
    /// recovery_end_command `pg restore-cluster` writes); nothing else.
    #[arg(long, conflicts_with_all = ["name", "dest"])]
    pub clean_spool: bool,
    /// The background worker `--prefetch` starts (internal).
    #[arg(long, hide = true)]
    pub prefetch_worker: bool,
    /// The cluster's data directory, for `global/pg_control` [default: .].
    #[arg(long, value_name = "DIR", env = "PGDATA")]
    pub pgdata: Option<PathBuf>,
    /// Fetch the WAL of this system identifier instead of the one in
    /// `global/pg_control`.
    #[arg(long, value_name = "N")]
    pub system_identifier: Option<u64>,
}

/// `cairn pg backup`.
#[derive(Debug, Args)]
pub struct PgBackupArgs {
    /// Connection string (URL or key=value) of the server; its database is
    /// the one used for server-wide queries and pg_dumpall.
    #[arg(long, value_name = "URL", env = "CAIRN_PG_DSN", hide_env_values = true)]
    pub dsn: Option<String>,
    /// Read the connection string from the first line of this file instead
    /// (keeps a password out of `ps`).
    #[arg(long, value_name = "PATH")]
    pub dsn_file: Option<PathBuf>,
    /// A database to back up (repeatable).
    #[arg(
        long = "database",
        value_name = "NAME",
        required_unless_present = "all"
    )]
    pub databases: Vec<String>,
    /// Back up every database that accepts connections (templates excluded).
    #[arg(long, conflicts_with = "databases")]
    pub all: bool,
    /// Which roles and tablespaces to save: `auto` (full, else without
    /// passwords, with a warning), `full`, `no-passwords` or `skip`.
    #[arg(long, value_name = "MODE", value_enum, default_value = "auto")]
    pub globals: crate::exporters::pg_globals::GlobalsMode,
    /// Extra tag for the snapshots (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Host name to record instead of this machine's.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
}

/// `cairn pg restore`.
#[derive(Debug, Args)]
pub struct PgRestoreArgs {
    /// `latest` (of tag `postgres`), a snapshot id, or a unique prefix of one.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// Connection string of the server (its database is the one connected to with --create).
    #[arg(long, value_name = "URL", env = "CAIRN_PG_DSN", hide_env_values = true)]
    pub dsn: Option<String>,
    /// Read the connection string from the first line of this file instead
    /// (keeps a password out of `ps`).
    #[arg(long, value_name = "PATH")]
    pub dsn_file: Option<PathBuf>,
    /// Database to restore into (default: the dumped one); with `latest`, also
    /// picks the newest dump of a database of that name, if there is one.
    #[arg(long, value_name = "NAME")]
    pub database: Option<String>,
    /// Create the database (the dumped one, or --database NEW); it must not
    /// exist, unless with --clean. Dropped again if the restore fails.
    #[arg(long)]
    pub create: bool,
    /// Drop objects (with --create: the database) before recreating them.
    #[arg(long)]
    pub clean: bool,
    /// Restore roles and tablespaces saved with the backup first.
    #[arg(long)]
    pub globals: bool,
    /// Parallel pg_restore jobs; above 1 the dump is written to a temporary file first.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: u32,
    /// Directory for that temporary file [default: $TMPDIR, else /tmp].
    #[arg(long, value_name = "DIR")]
    pub temp_dir: Option<PathBuf>,
    /// Narrows `latest` (`--path postgres/NAME.dump`: the newest dump of NAME).
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `cairn pg verify`.
#[derive(Debug, Args)]
pub struct PgVerifyArgs {
    /// `latest` (of tag `postgres`), a snapshot id, or a unique prefix of one.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// Connection string of a server to restore into (a scratch database is created there).
    #[arg(long, value_name = "URL", env = "CAIRN_PG_DSN", hide_env_values = true)]
    pub dsn: Option<String>,
    /// Read the connection string from the first line of this file instead
    /// (keeps a password out of `ps`).
    #[arg(long, value_name = "PATH")]
    pub dsn_file: Option<PathBuf>,
    /// Restore on this separate server instead of --dsn's (a test restore on
    /// another instance); takes precedence over --dsn.
    #[arg(
        long,
        value_name = "URL",
        env = "CAIRN_PG_SCRATCH_DSN",
        hide_env_values = true
    )]
    pub scratch_dsn: Option<String>,
    /// With `latest`: the newest dump of this database.
    #[arg(long, value_name = "NAME")]
    pub database: Option<String>,
    /// Narrows `latest` (`--path postgres/NAME.dump`: the newest dump of NAME).
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `cairn pg basebackup`.
#[derive(Debug, Args)]
pub struct PgBasebackupArgs {
    /// Connection string of the server (the role needs REPLICATION).
    #[arg(long, value_name = "URL", env = "CAIRN_PG_DSN", hide_env_values = true)]
    pub dsn: Option<String>,
    /// Read the connection string from the first line of this file instead
    /// (keeps a password out of `ps`).
    #[arg(long, value_name = "PATH")]
    pub dsn_file: Option<PathBuf>,
    /// Start with an immediate checkpoint (`pg_basebackup --checkpoint=fast`)
    /// instead of waiting for a spread one.
    #[arg(long)]
    pub fast: bool,
    /// Limit the transfer rate (`pg_basebackup --max-rate`, e.g. `50M`).
    #[arg(long, value_name = "RATE")]
    pub max_rate: Option<String>,
    /// Extra tag for the snapshot (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Host name to record instead of this machine's.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
}

/// The recovery target of `pg restore-cluster` and `pg pitr-verify` (at most one).
#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct PgTargetArgs {
    /// Stop at this moment: RFC 3339 or `YYYY-MM-DD HH:MM:SS[.ffffff]+ZZ`, with its zone.
    #[arg(long, value_name = "TIME")]
    pub target_time: Option<String>,
    /// Stop at this WAL position (`X/Y`).
    #[arg(long, value_name = "LSN")]
    pub target_lsn: Option<String>,
    /// Stop after this transaction id commits.
    #[arg(long, value_name = "XID")]
    pub target_xid: Option<String>,
    /// Stop at this restore point (`pg_create_restore_point`).
    #[arg(long, value_name = "NAME")]
    pub target_name: Option<String>,
}

/// `recovery_target_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PgTargetAction {
    /// End recovery and accept writes (a new timeline).
    Promote,
    /// Stay in recovery, read-only, until `pg_wal_replay_resume()`.
    Pause,
    /// Stop the server (restart it with other settings to go on).
    Shutdown,
}

/// `cairn pg restore-cluster`.
#[derive(Debug, Args)]
pub struct PgRestoreClusterArgs {
    /// `latest` (of tag `postgres-base`; with a target: the newest ending
    /// before it), a snapshot id, or a unique prefix of one.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// The data directory to create (missing or empty).
    #[arg(long, value_name = "DIR")]
    pub pgdata: PathBuf,
    /// Where recovery stops [default: the end of the archived WAL].
    #[command(flatten)]
    pub target: PgTargetArgs,
    /// What the server does at the target.
    #[arg(long, value_enum, value_name = "ACTION", default_value = "promote")]
    pub target_action: PgTargetAction,
    /// Owner of the restored files when run as root [default: the data
    /// directory's (or its parent's) owner, else `postgres`].
    #[arg(long, value_name = "USER")]
    pub owner: Option<String>,
    /// The restore_command to write instead of cairn's own (`%f` and `%p` as in PostgreSQL).
    #[arg(long, value_name = "COMMAND")]
    pub restore_command: Option<String>,
    /// Also write `archive_mode = off` (a copy that must not archive into the repository).
    #[arg(long)]
    pub no_archive: bool,
    /// Skip `pg_verifybackup`.
    #[arg(long)]
    pub no_verify: bool,
    /// Segments cairn's restore_command fetches ahead in the background
    /// (`restore-wal --prefetch`, SPEC §28.4.1; 0: one at a time)
    /// [default: 8 for an S3 repository, 0 for a local one].
    #[arg(long, value_name = "N")]
    pub prefetch: Option<u32>,
}

/// `cairn pg pitr-verify`.
#[derive(Debug, Args)]
pub struct PgPitrVerifyArgs {
    /// The base backup to start from [default: the newest; with a target,
    /// the newest ending before it].
    #[arg(value_name = "SNAPSHOT", default_value = "latest")]
    pub snapshot: String,
    /// Where recovery stops [default: the end of the archived WAL].
    #[command(flatten)]
    pub target: PgTargetArgs,
    /// Directory for the scratch cluster [default: $TMPDIR, else /tmp].
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,
    /// Owner of the scratch cluster when run as root [default: `postgres`].
    #[arg(long, value_name = "USER")]
    pub owner: Option<String>,
    /// Role to count rows as [default: the owner's name, else `postgres`].
    #[arg(long, value_name = "ROLE")]
    pub user: Option<String>,
    /// Give up when the server has not finished recovery after this long (`90min`, `2h`).
    #[arg(long, value_name = "DURATION", default_value = "6h")]
    pub timeout: String,
    /// Fetch WAL with this command instead of cairn's own restore-wal
    /// (`%f` and `%p` as in PostgreSQL).
    #[arg(long, value_name = "COMMAND")]
    pub restore_command: Option<String>,
}

/// `cairn redis`.
#[derive(Debug, Args)]
pub struct RedisArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: RedisCommand,
}

/// The `cairn redis` subcommands.
#[derive(Debug, Subcommand)]
pub enum RedisCommand {
    /// Back up a Redis server's RDB.
    #[command(
        long_about = "Connect to the server (AUTH with the URL's user and password), read INFO \
server and INFO keyspace, then ask for the RDB only (REPLCONF capa eof, REPLCONF rdb-only 1, \
SYNC) and stream it into a new snapshot tagged `redis` as redis/dump.rdb. Both the disk-based \
(`$<len>`) and the diskless (`$EOF:<marker>`) transfer are handled; the marker is not stored. \
The RDB magic and version are checked first and the CRC64 trailer at the end; a transfer that \
is short or does not match fails and writes no snapshot. The user needs the +sync and +replconf \
permissions. Diskless servers wait repl-diskless-sync-delay (5 s by default) before sending. \
The URL comes from --url, CAIRN_REDIS_URL or the first line of --url-file; a password in --url \
itself shows in `ps` (a warning says so).",
        after_help = "Examples:\n  \
cairn redis backup --url redis://127.0.0.1:6379\n  \
cairn redis backup --url redis://backup:secret@db1:6379 --tag nightly\n  \
cairn redis backup --url redis://127.0.0.1:6379 --json"
    )]
    Backup(RedisBackupArgs),
    /// Restore a Redis snapshot to a file or a running server.
    #[command(
        long_about = "With --to-file, write the snapshot's RDB to PATH: stop the server without \
saving (SHUTDOWN NOSAVE), put the file at its dir/dbfilename and start it (with appendonly no). \
With --url, load it into a running server: a throw-away redis-server is started on the RDB \
(no TCP port: a unix socket in a private 0700 directory, a random password set in a 0600 \
config file), and every key of every database is copied to the target with DUMP and RESTORE \
key abs-ttl payload ABSTTL REPLACE (same database number, same expiry time; existing keys with \
the same names are replaced, others are left alone). Holding more keys than the RDB, before or \
after the copy, is an error. A password in --url shows in `ps`: use --url-file.",
        after_help = "Examples:\n  \
cairn redis restore latest --to-file /tmp/dump.rdb\n  \
cairn redis restore 1a2b3c4d --url redis://:secret@127.0.0.1:6379\n  \
cairn redis restore latest --url redis://127.0.0.1:6380 --json"
    )]
    Restore(RedisRestoreArgs),
    /// Load a Redis snapshot into a throw-away server and compare key counts.
    #[command(
        long_about = "Start a throw-away redis-server (unix socket only, random password) on the \
snapshot's RDB, read INFO keyspace, and compare the keys per database with those in the RDB \
itself: keys without an expiry time must all load; keys with one may be fewer, but only by \
those whose expiry time has passed (Redis does not load them). Exits 1 on any other \
difference or when the RDB does not load.",
        after_help = "Examples:\n  \
cairn redis verify latest\n  \
cairn redis verify 1a2b3c4d --json"
    )]
    Verify(RedisVerifyArgs),
}

/// `cairn redis backup`.
#[derive(Debug, Args)]
pub struct RedisBackupArgs {
    /// The server: `redis://[user:pass@]host:port`.
    #[arg(
        long,
        value_name = "URL",
        env = "CAIRN_REDIS_URL",
        hide_env_values = true
    )]
    pub url: Option<String>,
    /// Read the URL from the first line of this file instead (keeps a
    /// password out of `ps`).
    #[arg(long, value_name = "PATH")]
    pub url_file: Option<PathBuf>,
    /// Extra tags (besides `redis`).
    #[arg(long = "tag", value_name = "TAG", value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Host name to record instead of this machine's.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
}

/// `cairn redis restore`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["to_file", "url", "url_file"])))]
pub struct RedisRestoreArgs {
    /// `latest`, a snapshot id, or a unique prefix of one.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// Write the RDB to this file.
    #[arg(long, value_name = "PATH")]
    pub to_file: Option<PathBuf>,
    /// Load the keys into this running server: `redis://[user:pass@]host:port`.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Read that URL from the first line of this file (keeps a password out of `ps`).
    #[arg(long, value_name = "PATH")]
    pub url_file: Option<PathBuf>,
    /// The redis-server binary for the throw-away server (--url).
    #[arg(long, value_name = "PATH", default_value = "redis-server")]
    pub redis_server: PathBuf,
    /// Narrows `latest`.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `cairn redis verify`.
#[derive(Debug, Args)]
pub struct RedisVerifyArgs {
    /// `latest`, a snapshot id, or a unique prefix of one.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// The redis-server binary for the throw-away server.
    #[arg(long, value_name = "PATH", default_value = "redis-server")]
    pub redis_server: PathBuf,
    /// Narrows `latest`.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `cairn qdrant`.
#[derive(Debug, Args)]
pub struct QdrantArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: QdrantCommand,
}

/// Where a Qdrant server is and how to authenticate, shared by the
/// `cairn qdrant` subcommands.
#[derive(Debug, Args)]
pub struct QdrantServerArgs {
    /// The server's REST endpoint: http://host:6333 or https://….
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// API key, sent as the `api-key` header (prefer the environment variable).
    #[arg(
        long,
        env = "CAIRN_QDRANT_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
}

/// The `cairn qdrant` subcommands.
#[derive(Debug, Subcommand)]
pub enum QdrantCommand {
    /// Back up Qdrant collections through collection snapshots.
    #[command(
        long_about = "For each collection (--collection, repeatable, or --all): read its info and \
exact points count, create a snapshot (POST /collections/<name>/snapshots?wait=true), stream the \
download into a new snapshot tagged `qdrant` holding qdrant/<name>.snapshot (chunk profile \
`tiny`), checking size and SHA-256 against what the server reported before the snapshot is \
written, then delete the snapshot on the server (also when the backup failed). A collection that \
fails does not stop the others; the command exits 1 if any failed. If the server-side snapshot \
name already existed before (two snapshots in the same second share a name and overwrite each \
other), the file is left on the server.",
        after_help = "Examples:\n  \
cairn qdrant backup --url http://127.0.0.1:6333 --all\n  \
CAIRN_QDRANT_API_KEY=secret cairn qdrant backup --url https://q1:6333 --collection docs --tag nightly\n  \
cairn --json qdrant backup --url http://127.0.0.1:6333 --all | jq '.snapshots[].bytes_added'"
    )]
    Backup(QdrantBackupArgs),
    /// Restore a Qdrant collection from a snapshot.
    #[command(
        long_about = "Upload the stored collection snapshot byte for byte (POST \
/collections/<name>/snapshots/upload?wait=true&priority=snapshot&checksum=<recorded SHA-256>, \
multipart field `snapshot`, streamed from the repository) and wait until the server has \
recovered it. The collection (--collection, default: the recorded name) is created if missing \
and replaced by the snapshot's data otherwise. Prints the points count afterwards.",
        after_help = "Examples:\n  \
cairn qdrant restore latest --url http://127.0.0.1:6333 --path qdrant/docs.snapshot\n  \
cairn qdrant restore 1a2b3c4d --url http://127.0.0.1:6333 --collection docs_copy --json"
    )]
    Restore(QdrantRestoreArgs),
    /// Verify a Qdrant snapshot by restoring it into a scratch collection.
    #[command(
        long_about = "Upload the stored snapshot into a new collection named \
<name>-cairn-verify-<random>, count its points exactly, compare with the count recorded at \
backup, and delete the scratch collection. Exits 1 when the counts differ or the upload fails.",
        after_help = "Examples:\n  \
cairn qdrant verify latest --url http://127.0.0.1:6333\n  \
cairn qdrant verify 1a2b3c4d --url http://127.0.0.1:6333 --json | jq .ok"
    )]
    Verify(QdrantVerifyArgs),
}

/// `cairn qdrant backup`.
#[derive(Debug, Args)]
pub struct QdrantBackupArgs {
    /// Server and API key.
    #[command(flatten)]
    pub server: QdrantServerArgs,
    /// Collections to back up (repeat the option or list several after it).
    #[arg(
        long = "collection",
        value_name = "NAME",
        num_args = 1..,
        required_unless_present = "all"
    )]
    pub collections: Vec<String>,
    /// Back up every collection on the server.
    #[arg(long, conflicts_with = "collections")]
    pub all: bool,
    /// Extra tags (besides `qdrant`).
    #[arg(long = "tag", value_name = "TAG", value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Host name to record instead of this machine's.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
}

/// `cairn qdrant restore`.
#[derive(Debug, Args)]
pub struct QdrantRestoreArgs {
    /// `latest` (of tag `qdrant`), a snapshot id, or a unique prefix of one.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// Server and API key.
    #[command(flatten)]
    pub server: QdrantServerArgs,
    /// Collection to restore into (default: the one backed up).
    #[arg(long, value_name = "NAME")]
    pub collection: Option<String>,
    /// Narrows `latest`.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `cairn qdrant verify`.
#[derive(Debug, Args)]
pub struct QdrantVerifyArgs {
    /// `latest` (of tag `qdrant`), a snapshot id, or a unique prefix of one.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// Server and API key (a scratch collection is created and deleted there).
    #[command(flatten)]
    pub server: QdrantServerArgs,
    /// Narrows `latest`.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `cairn completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to print a script for.
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// `cairn run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The plan file.
    #[arg(value_name = "PLAN")]
    pub plan: PathBuf,
    /// Run only this source (repeatable) [default: all].
    #[arg(long = "source", value_name = "NAME")]
    pub sources: Vec<String>,
    /// Print what would run and check what would fail (each repository opens, each source's programs and files are there); exit 1 if anything would. Runs nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

/// `cairn plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: PlanCommand,
}

/// The `cairn plan` subcommands.
#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// Write a commented example plan.
    #[command(
        long_about = "Write a commented example plan to PATH (never over an existing file), or to \
stdout without PATH. It backs up /etc into two repositories, keeps 30 daily and 12 monthly \
snapshots, checks weekly and drills monthly; the database sources are there, commented out.",
        after_help = "Examples:\n  \
cairn plan init > nightly.toml\n  \
cairn plan init /etc/cairn/nightly.toml"
    )]
    Init(PlanInitArgs),
    /// Print or install a systemd timer (or cron line) running a plan.
    #[command(
        long_about = "Print a systemd service (Type=oneshot, running `cairn run PLAN` with absolute \
paths) and timer (OnCalendar=--on-calendar, Persistent=true so a missed run happens at boot, \
RandomizedDelaySec) named cairn-plan-NAME, or with --cron a cron.d entry. --install writes the \
files to /etc/systemd/system or /etc/cron.d (or --unit-dir); for systemd in the default \
directory it then runs `systemctl daemon-reload` and `systemctl enable --now` on the timer, \
otherwise it prints the commands to run.",
        after_help = "Examples:\n  \
cairn plan schedule /etc/cairn/nightly.toml\n  \
cairn plan schedule /etc/cairn/nightly.toml --on-calendar 'Mon..Fri 22:00' --install\n  \
cairn plan schedule /etc/cairn/nightly.toml --cron --cron-schedule '15 3 * * *' --install"
    )]
    Schedule(PlanScheduleArgs),
    /// Print the postgresql.conf lines a plan's postgres-pitr sources need.
    #[command(
        long_about = "For each source of type postgres-pitr, print the settings that archive the \
server's WAL into the plan's (first primary) repository with `cairn pg archive-wal %p`, and the \
restore_command that `cairn pg restore-cluster` writes for a restore, with this executable's \
absolute path and the repository's password_file or password_command. Put them into the \
server's postgresql.conf (archive_mode needs a restart, archive_command a reload).",
        after_help = "Examples:\n  \
cairn plan show /etc/cairn/nightly.toml\n  \
cairn plan show /etc/cairn/nightly.toml --source main-db >> /etc/postgresql/15/main/conf.d/cairn.conf"
    )]
    Show(PlanShowArgs),
}

/// `cairn plan show`.
#[derive(Debug, Args)]
pub struct PlanShowArgs {
    /// The plan file.
    #[arg(value_name = "PLAN")]
    pub plan: PathBuf,
    /// Only this source.
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
}

/// `cairn plan init`.
#[derive(Debug, Args)]
pub struct PlanInitArgs {
    /// Where to write the plan [default: stdout].
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,
}

/// `cairn plan schedule`.
#[derive(Debug, Args)]
pub struct PlanScheduleArgs {
    /// The plan file.
    #[arg(value_name = "PLAN")]
    pub plan: PathBuf,
    /// A systemd service and timer (the default).
    #[arg(long, conflicts_with = "cron")]
    pub systemd: bool,
    /// A cron.d entry instead.
    #[arg(long)]
    pub cron: bool,
    /// The timer's OnCalendar= (systemd.time(7)).
    #[arg(
        long,
        value_name = "SPEC",
        default_value = "*-*-* 02:30:00",
        conflicts_with = "cron"
    )]
    pub on_calendar: String,
    /// The timer's RandomizedDelaySec=.
    #[arg(
        long,
        value_name = "SPAN",
        default_value = "15min",
        conflicts_with = "cron"
    )]
    pub randomized_delay: String,
    /// The five cron time fields, or a macro such as @daily (checked before anything is written).
    #[arg(
        long,
        value_name = "FIELDS",
        default_value = "30 2 * * *",
        requires = "cron"
    )]
    pub cron_schedule: String,
    /// The user a cron.d entry runs as.
    #[arg(long, value_name = "USER", default_value = "root", requires = "cron")]
    pub cron_user: String,
    /// Write the files instead of printing them.
    #[arg(long)]
    pub install: bool,
    /// Directory to install into [default: /etc/systemd/system, or /etc/cron.d with --cron].
    #[arg(long, value_name = "DIR", requires = "install")]
    pub unit_dir: Option<PathBuf>,
}

/// `cairn discover`.
#[derive(Debug, Args)]
pub struct DiscoverArgs {
    /// Write the proposed plan to PATH (never over an existing file).
    #[arg(long, value_name = "PATH")]
    pub write: Option<PathBuf>,
    /// Look below DIR instead of / for files (for tests and chroots).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// The proc file system to read sockets and processes from.
    #[arg(long, value_name = "DIR", default_value = "/proc", hide = true)]
    pub proc: PathBuf,
    /// How deep to look for git repositories below /srv, /opt, /home and /var/lib.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub git_depth: usize,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_valid() {
        super::Cli::command().debug_assert();
    }
}
