//! The plan file (docs/plans.md): a versioned TOML description of what to back
//! up, where to, how long to keep it, how often to verify it and whom to
//! tell. `cairn run` executes one; `cairn plan init` and `cairn discover`
//! write one. Every table denies unknown keys, so a typo fails with the
//! line it is on instead of silently doing less than intended.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use repo_core::RetentionPolicy;
use serde::{Deserialize, Deserializer};

/// The only plan format version this build reads and writes.
pub const VERSION: u32 = 1;

/// A whole plan file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Format version; must be [`VERSION`] (checked before the full parse).
    #[allow(dead_code)]
    pub version: u32,
    /// Name used in tags, metrics and unit names [default: the file's stem].
    #[serde(default)]
    pub name: Option<String>,
    /// Host name recorded in snapshots (where the command supports it).
    #[serde(default)]
    pub host: Option<String>,
    /// Directory for cadence bookkeeping and the last report.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Where snapshots go: each source is backed up into every one that is
    /// not the destination of a copy step ([`Plan::primaries`]).
    #[serde(rename = "repository", default)]
    pub repositories: Vec<RepositorySpec>,
    /// Copy steps, run in file order after the backups.
    #[serde(rename = "copy", default)]
    pub copies: Vec<CopySpec>,
    /// What to keep; absent: keep everything.
    #[serde(default)]
    pub retention: Option<Retention>,
    /// Structure (and data) checks, at most once per `every`.
    #[serde(default)]
    pub check: Option<CheckSpec>,
    /// Restore drills, at most once per `every`.
    #[serde(default)]
    pub drill: Option<DrillSpec>,
    /// Shell commands run after the plan.
    #[serde(default)]
    pub hooks: Hooks,
    /// Where to write the JSON report and the metrics.
    #[serde(default)]
    pub report: ReportSpec,
    /// What to back up.
    #[serde(rename = "source", default)]
    pub sources: Vec<Source>,
}

/// One `[[repository]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositorySpec {
    /// Short name for reports and metrics.
    pub name: String,
    /// A local repository's directory.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Any other location `-r` accepts (`s3:http://HOST:PORT/BUCKET/PREFIX`,
    /// `s3://BUCKET/PREFIX`); credentials come from the environment.
    #[serde(default)]
    pub url: Option<String>,
    /// File whose first line is the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Command (`sh -c`) printing the password.
    #[serde(default)]
    pub password_command: Option<String>,
    /// Index cache directory for this repository.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
}

impl RepositorySpec {
    /// What the children get as `-r`: the path or the url (exactly one is
    /// set once the plan is validated).
    pub fn location(&self) -> std::ffi::OsString {
        match (&self.path, &self.url) {
            (Some(p), _) => p.clone().into_os_string(),
            (None, Some(u)) => u.into(),
            (None, None) => std::ffi::OsString::new(),
        }
    }
}

/// One `[[copy]]`: after the backups, the snapshots this run put into
/// `from` are copied into `to` (`cairn -r TO copy --from-repo FROM`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopySpec {
    /// Source repository's name.
    pub from: String,
    /// Destination repository's name.
    pub to: String,
    /// Kill the copy (and what it started) after this long, e.g. `4h`: a
    /// network that stops answering must not hold the rest of the plan.
    #[serde(default, deserialize_with = "opt_run_time")]
    pub timeout: Option<Duration>,
}

impl CopySpec {
    /// `from->to`, the step's name in reports and failures.
    pub fn label(&self) -> String {
        format!("{}->{}", self.from, self.to)
    }
}

impl Plan {
    /// Whether `name` is the destination of a copy step: it receives
    /// copies, not backups.
    pub fn is_copy_destination(&self, name: &str) -> bool {
        self.copies.iter().any(|c| c.to == name)
    }

    /// The repositories sources are backed up into: every repository that
    /// is not a copy destination (all of them in a plan without copies).
    pub fn primaries(&self) -> impl Iterator<Item = &RepositorySpec> {
        self.repositories
            .iter()
            .filter(|r| !self.is_copy_destination(&r.name))
    }

    /// The repository named `name`.
    pub fn repository(&self, name: &str) -> Option<&RepositorySpec> {
        self.repositories.iter().find(|r| r.name == name)
    }
}

/// `[retention]`: the library's [`RetentionPolicy`] (the `keep_*` keys,
/// as `cairn forget` takes them), applied to this plan's snapshots, plus
/// whether to prune afterwards.
#[derive(Debug, Default)]
pub struct Retention {
    /// What to keep.
    pub policy: RetentionPolicy,
    /// Run a prune after forgetting (`prune`).
    pub prune: bool,
    /// `--grace` of that prune (`prune_grace`, `0` or a duration) [default: 1h].
    pub prune_grace: Option<Duration>,
}

impl<'de> Deserialize<'de> for Retention {
    /// The table is handed to `RetentionPolicy`'s own deserializer with
    /// `prune` and `prune_grace` taken out on the way, key by key, so an
    /// unknown key still fails with its own line (a copied table would
    /// only know the table's).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(RetentionVisitor)
    }
}

struct RetentionVisitor;

impl<'de> serde::de::Visitor<'de> for RetentionVisitor {
    type Value = Retention;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a [retention] table")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Retention, A::Error> {
        let mut extra = PlanOnly {
            map,
            prune: false,
            prune_grace: None,
        };
        let policy =
            RetentionPolicy::deserialize(serde::de::value::MapAccessDeserializer::new(&mut extra))?;
        Ok(Retention {
            policy,
            prune: extra.prune,
            prune_grace: extra.prune_grace,
        })
    }
}

/// The keys of `[retention]` that are the plan's, not the policy's.
#[derive(Clone, Copy)]
enum PlanKey {
    Prune,
    PruneGrace,
}

/// A map that hides `prune` and `prune_grace` from the policy, keeping
/// their values.
struct PlanOnly<A> {
    map: A,
    prune: bool,
    prune_grace: Option<Duration>,
}

impl<'de, A: serde::de::MapAccess<'de>> serde::de::MapAccess<'de> for &mut PlanOnly<A> {
    type Error = A::Error;

    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let mut seed = Some(seed);
        loop {
            let key = self.map.next_key_seed(KeyFilter { seed: &mut seed })?;
            match key {
                None => return Ok(None),
                Some(Filtered::Policy(v)) => return Ok(Some(v)),
                Some(Filtered::Plan(PlanKey::Prune)) => self.prune = self.map.next_value()?,
                Some(Filtered::Plan(PlanKey::PruneGrace)) => {
                    // Parsed inside the value's deserializer, so an error names its line.
                    self.prune_grace = self.map.next_value::<Grace>()?.0;
                }
            }
        }
    }

    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

/// `prune_grace`, parsed while its value is being read.
#[derive(Deserialize)]
struct Grace(#[serde(deserialize_with = "opt_duration")] Option<Duration>);

/// A present duration must parse ([`repo_core::parse_duration`]).
fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    repo_core::parse_duration(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

enum Filtered<T> {
    Policy(T),
    Plan(PlanKey),
}

/// Reads a key: the plan's own are returned as such, any other goes to the
/// policy's seed while the key's deserializer (and so its line) is live.
struct KeyFilter<'a, K> {
    seed: &'a mut Option<K>,
}

impl<'de, K: serde::de::DeserializeSeed<'de>> serde::de::DeserializeSeed<'de> for KeyFilter<'_, K> {
    type Value = Filtered<K::Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, K: serde::de::DeserializeSeed<'de>> serde::de::Visitor<'de> for KeyFilter<'_, K> {
    type Value = Filtered<K::Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Self::Value, E> {
        use serde::de::IntoDeserializer;
        match key {
            "prune" => Ok(Filtered::Plan(PlanKey::Prune)),
            "prune_grace" => Ok(Filtered::Plan(PlanKey::PruneGrace)),
            _ => {
                let seed = self
                    .seed
                    .take()
                    .ok_or_else(|| E::custom("a key was read twice"))?;
                seed.deserialize(key.into_deserializer())
                    .map(Filtered::Policy)
            }
        }
    }
}

/// `[check]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    /// Minimum time between two successful checks of a repository.
    #[serde(deserialize_with = "duration")]
    pub every: Duration,
    /// `--read-data`.
    #[serde(default)]
    pub read_data: bool,
    /// `--read-data-subset`, e.g. `5%`, `1/7`, `2G`.
    #[serde(default)]
    pub read_data_subset: Option<String>,
}

/// `[drill]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillSpec {
    /// Minimum time between two successful drills of a repository.
    #[serde(deserialize_with = "duration")]
    pub every: Duration,
    /// `--sample`: `all`, a count or a share [default: all].
    #[serde(default)]
    pub sample: Option<String>,
    /// `--scratch` directory.
    #[serde(default)]
    pub scratch: Option<PathBuf>,
}

/// `[hooks]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// Run with `sh -c` when everything succeeded.
    #[serde(default)]
    pub on_success: Option<String>,
    /// Run with `sh -c` when anything failed.
    #[serde(default)]
    pub on_failure: Option<String>,
}

/// `[report]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSpec {
    /// JSON report path [default: STATE_DIR/last-report.json].
    #[serde(default)]
    pub json: Option<PathBuf>,
    /// Prometheus textfile-collector file.
    #[serde(default)]
    pub metrics: Option<PathBuf>,
}

/// One `[[source]]`; `type` selects the kind.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Source {
    /// Files and directories (`cairn backup PATHS`).
    Paths(PathsSource),
    /// PostgreSQL databases (`cairn pg backup`).
    Postgres(PostgresSource),
    /// A Redis server's RDB (`cairn redis backup`).
    Redis(RedisSource),
    /// Qdrant collections (`cairn qdrant backup`).
    Qdrant(QdrantSource),
    /// Any command's standard output (`cairn backup --stdin-from-command`).
    Command(CommandSource),
}

/// `type = "paths"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathsSource {
    /// Source name.
    pub name: String,
    /// Extra snapshot tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Kill the backup (and what it started) after this long, e.g. `2h`, `90min`.
    #[serde(default, deserialize_with = "opt_run_time")]
    pub timeout: Option<Duration>,
    /// What to back up.
    pub paths: Vec<PathBuf>,
    /// `--exclude` globs.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// `--exclude-file` files.
    #[serde(default)]
    pub exclude_file: Vec<PathBuf>,
    /// `--exclude-caches`.
    #[serde(default)]
    pub exclude_caches: bool,
    /// `--one-file-system`.
    #[serde(default)]
    pub one_file_system: bool,
}

/// `type = "postgres"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSource {
    /// Source name.
    pub name: String,
    /// Extra snapshot tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Kill the backup (and what it started) after this long, e.g. `2h`, `90min`.
    #[serde(default, deserialize_with = "opt_run_time")]
    pub timeout: Option<Duration>,
    /// Connection string.
    pub dsn: String,
    /// Databases to dump.
    #[serde(default)]
    pub databases: Vec<String>,
    /// Dump every database instead.
    #[serde(default)]
    pub all: bool,
    /// After the backup, `cairn pg verify` each database snapshot (restored
    /// into a scratch database on this same server, row counts compared).
    #[serde(default)]
    pub verify: bool,
    /// Verify on this separate server instead (`pg verify --scratch-dsn`).
    #[serde(default)]
    pub scratch_dsn: Option<String>,
    /// `pg backup --globals`: `auto` (default), `full`, `no-passwords`, `skip`.
    #[serde(default)]
    pub globals: Option<String>,
}

/// `type = "redis"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSource {
    /// Source name.
    pub name: String,
    /// Extra snapshot tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Kill the backup (and what it started) after this long, e.g. `2h`, `90min`.
    #[serde(default, deserialize_with = "opt_run_time")]
    pub timeout: Option<Duration>,
    /// `redis://[user:pass@]host:port`.
    pub url: String,
    /// After the backup, `cairn redis verify` the snapshot (loaded into a
    /// throw-away local redis-server, key counts compared).
    #[serde(default)]
    pub verify: bool,
}

/// `type = "qdrant"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QdrantSource {
    /// Source name.
    pub name: String,
    /// Extra snapshot tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Kill the backup (and what it started) after this long, e.g. `2h`, `90min`.
    #[serde(default, deserialize_with = "opt_run_time")]
    pub timeout: Option<Duration>,
    /// `http://host:6333`.
    pub url: String,
    /// Collections to back up.
    #[serde(default)]
    pub collections: Vec<String>,
    /// Back up every collection instead.
    #[serde(default)]
    pub all: bool,
    /// File holding the API key (passed as `CAIRN_QDRANT_API_KEY`).
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// After the backup, `cairn qdrant verify` each collection snapshot
    /// (restored into a scratch collection on this same server, points
    /// counted).
    #[serde(default)]
    pub verify: bool,
}

/// `type = "command"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSource {
    /// Source name.
    pub name: String,
    /// Extra snapshot tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Kill the backup (and what it started) after this long, e.g. `2h`, `90min`.
    #[serde(default, deserialize_with = "opt_run_time")]
    pub timeout: Option<Duration>,
    /// The program and its arguments (not a shell line).
    pub command: Vec<String>,
    /// Name of the stream in the snapshot.
    pub stdin_filename: String,
}

impl Source {
    /// The source's name.
    pub fn name(&self) -> &str {
        match self {
            Source::Paths(s) => &s.name,
            Source::Postgres(s) => &s.name,
            Source::Redis(s) => &s.name,
            Source::Qdrant(s) => &s.name,
            Source::Command(s) => &s.name,
        }
    }

    /// The `type` value.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Paths(_) => "paths",
            Source::Postgres(_) => "postgres",
            Source::Redis(_) => "redis",
            Source::Qdrant(_) => "qdrant",
            Source::Command(_) => "command",
        }
    }

    /// How long a backup of this source may take.
    pub fn timeout(&self) -> Option<Duration> {
        match self {
            Source::Paths(s) => s.timeout,
            Source::Postgres(s) => s.timeout,
            Source::Redis(s) => s.timeout,
            Source::Qdrant(s) => s.timeout,
            Source::Command(s) => s.timeout,
        }
    }

    /// Whether each snapshot is verified after the backup (`verify = true`).
    pub fn verify(&self) -> bool {
        match self {
            Source::Postgres(s) => s.verify,
            Source::Redis(s) => s.verify,
            Source::Qdrant(s) => s.verify,
            Source::Paths(_) | Source::Command(_) => false,
        }
    }

    /// The user's extra tags.
    pub fn tags(&self) -> &[String] {
        match self {
            Source::Paths(s) => &s.tags,
            Source::Postgres(s) => &s.tags,
            Source::Redis(s) => &s.tags,
            Source::Qdrant(s) => &s.tags,
            Source::Command(s) => &s.tags,
        }
    }
}

/// A duration like `7d` or `12h` (the units of `cairn forget --keep-within`).
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    repo_core::parse_duration(&s).map_err(serde::de::Error::custom)
}

/// A run time like `2h`, `90min`, `30s` (the units of `cairn check --max-duration`).
fn opt_run_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    repo_core::parse_run_time(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Tag-safe names: they end up in tags (which `--tag` splits at commas),
/// metric labels and unit file names.
fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        bail!(
            "{what} name {name:?} must be non-empty and use only letters, digits, `-`, `_` and `.`"
        );
    }
    Ok(())
}

/// A loaded, validated plan and where it came from.
#[derive(Debug)]
pub struct Loaded {
    /// The plan, with relative paths resolved against the file's directory.
    pub plan: Plan,
    /// The plan's name (its `name`, else the file's stem).
    pub name: String,
    /// Absolute path of the plan file.
    pub path: PathBuf,
}

impl Loaded {
    /// The state directory: `state_dir`, else `/var/lib/cairn/plans/NAME`
    /// for root, else `$XDG_STATE_HOME/cairn/plans/NAME` or
    /// `~/.local/state/cairn/plans/NAME`.
    pub fn state_dir(&self) -> Result<PathBuf> {
        if let Some(d) = &self.plan.state_dir {
            return Ok(d.clone());
        }
        let base = if nix::unistd::geteuid().is_root() {
            PathBuf::from("/var/lib/cairn")
        } else if let Some(x) = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
        {
            x.join("cairn")
        } else if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            PathBuf::from(h).join(".local/state/cairn")
        } else {
            bail!("no state_dir in the plan and no home directory to default to");
        };
        Ok(base.join("plans").join(&self.name))
    }

    /// The JSON report path.
    pub fn report_path(&self) -> Result<PathBuf> {
        match &self.plan.report.json {
            Some(p) => Ok(p.clone()),
            None => Ok(self.state_dir()?.join("last-report.json")),
        }
    }
}

/// Reads, parses and validates the plan at `path`.
pub fn load(path: &Path) -> Result<Loaded> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read plan {}", path.display()))?;
    let abs = std::path::absolute(path)
        .with_context(|| format!("invalid plan path {}", path.display()))?;
    let stem = abs
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plan".into());
    let base = abs.parent().map(Path::to_path_buf).unwrap_or_default();
    parse(&text, &stem, &base)
        .with_context(|| format!("invalid plan {}", path.display()))
        .map(|(plan, name)| Loaded {
            plan,
            name,
            path: abs,
        })
}

/// Parses and validates plan text; relative paths are resolved against
/// `base`, and `default_name` names a plan without `name`.
pub fn parse(text: &str, default_name: &str, base: &Path) -> Result<(Plan, String)> {
    // The version first, on its own, so a future plan fails with a clear
    // message rather than with its first unknown key.
    #[derive(Deserialize)]
    struct VersionOnly {
        version: Option<toml::Value>,
    }
    let v: VersionOnly = toml::from_str(text).map_err(toml_error)?;
    match v.version {
        None => bail!("missing `version = {VERSION}` at the top of the plan"),
        Some(toml::Value::Integer(n)) if n == i64::from(VERSION) => {}
        Some(other) => bail!(
            "plan version {other} is not supported by this cairn (it reads version {VERSION})"
        ),
    }
    let mut plan: Plan = toml::from_str(text).map_err(toml_error)?;
    let name = plan
        .name
        .clone()
        .unwrap_or_else(|| default_name.to_string());
    check_name("plan", &name)?;
    validate(&plan)?;
    resolve(&mut plan, base);
    Ok((plan, name))
}

/// toml's message (with the line, a snippet and a caret), without its
/// trailing newline.
fn toml_error(e: toml::de::Error) -> anyhow::Error {
    anyhow::anyhow!("{}", e.to_string().trim_end())
}

fn validate(plan: &Plan) -> Result<()> {
    if plan.repositories.is_empty() {
        bail!("the plan names no [[repository]]");
    }
    if plan.sources.is_empty() {
        bail!("the plan names no [[source]]");
    }
    let mut seen = std::collections::BTreeSet::new();
    for r in &plan.repositories {
        check_name("repository", &r.name)?;
        if !seen.insert(r.name.as_str()) {
            bail!("two repositories are named {:?}", r.name);
        }
        match (&r.password_file, &r.password_command) {
            (Some(_), Some(_)) => bail!(
                "repository {:?}: give password_file or password_command, not both",
                r.name
            ),
            (None, None) => bail!(
                "repository {:?}: needs password_file or password_command (a plan runs unattended)",
                r.name
            ),
            _ => {}
        }
        match (&r.path, &r.url) {
            (Some(_), Some(_)) => bail!("repository {:?}: give path or url, not both", r.name),
            (None, None) => bail!("repository {:?}: needs path or url", r.name),
            (None, Some(u)) => check_url(&r.name, u)?,
            (Some(_), None) => {}
        }
    }
    validate_copies(plan)?;
    let mut seen = std::collections::BTreeSet::new();
    for s in &plan.sources {
        check_name("source", s.name())?;
        if !seen.insert(s.name()) {
            bail!("two sources are named {:?}", s.name());
        }
        for t in s.tags() {
            if t.is_empty() || t.contains(',') {
                bail!(
                    "source {:?}: tag {t:?} must be non-empty and have no comma",
                    s.name()
                );
            }
        }
        match s {
            Source::Paths(p) if p.paths.is_empty() => {
                bail!("source {:?}: `paths` is empty", p.name)
            }
            Source::Postgres(p) if p.all != p.databases.is_empty() => bail!(
                "source {:?}: give either `databases` or `all = true`",
                p.name
            ),
            Source::Postgres(p)
                if p.globals.as_deref().is_some_and(|g| {
                    <crate::exporters::pg_globals::GlobalsMode as clap::ValueEnum>::from_str(
                        g, false,
                    )
                    .is_err()
                }) =>
            {
                bail!(
                    "source {:?}: `globals` must be auto, full, no-passwords or skip",
                    p.name
                )
            }
            Source::Qdrant(q) if q.all != q.collections.is_empty() => bail!(
                "source {:?}: give either `collections` or `all = true`",
                q.name
            ),
            Source::Command(c) if c.command.is_empty() => {
                bail!("source {:?}: `command` is empty", c.name)
            }
            _ => {}
        }
    }
    if let Some(r) = &plan.retention
        && r.policy == RetentionPolicy::default()
    {
        bail!("[retention] has no keep_* rule (remove the table to keep everything)");
    }
    if let Some(c) = &plan.check {
        if c.read_data && c.read_data_subset.is_some() {
            bail!("[check]: give read_data or read_data_subset, not both");
        }
        if let Some(s) = &c.read_data_subset {
            s.parse::<repo_core::ReadData>()
                .map_err(|e| anyhow::anyhow!("[check] read_data_subset {s:?}: {e}"))?;
        }
    }
    if let Some(d) = &plan.drill
        && let Some(s) = &d.sample
    {
        s.parse::<repo_core::Sample>()
            .map_err(|e| anyhow::anyhow!("[drill] sample {s:?}: {e}"))?;
    }
    Ok(())
}

/// A repository url: non-empty, and without credentials, which would show
/// on every child's command line (`ps`).
fn check_url(name: &str, url: &str) -> Result<()> {
    if url.trim().is_empty() {
        bail!("repository {name:?}: `url` is empty");
    }
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        bail!(
            "repository {name:?}: the url carries credentials; remove them and set \
             AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the \
             environment of `cairn run` instead"
        );
    }
    Ok(())
}

/// Copy steps name known, distinct repositories; each repository receives
/// copies from one step at most; a step copies from a repository that
/// gets backups or from the destination of an earlier step (so the steps,
/// run in order, form a tree from the primaries, without cycles); and at
/// least one repository gets backups.
fn validate_copies(plan: &Plan) -> Result<()> {
    let mut filled: Vec<&str> = Vec::new();
    for (i, c) in plan.copies.iter().enumerate() {
        let step = format!("copy step {} ({} -> {})", i + 1, c.from, c.to);
        for n in [&c.from, &c.to] {
            if plan.repository(n).is_none() {
                let known: Vec<&str> = plan.repositories.iter().map(|r| r.name.as_str()).collect();
                bail!(
                    "{step}: no [[repository]] is named {n:?} (the plan has {})",
                    known.join(", ")
                );
            }
        }
        if c.from == c.to {
            bail!("{step}: copies a repository into itself");
        }
        if filled.contains(&c.to.as_str()) {
            bail!(
                "{step}: {:?} already receives copies from an earlier step; \
                 a repository gets copies from one step only",
                c.to
            );
        }
        if plan.is_copy_destination(&c.from) && !filled.contains(&c.from.as_str()) {
            bail!(
                "{step}: {:?} gets no backups, only copies, and no earlier step fills it; \
                 move the step that copies into {:?} before this one",
                c.from,
                c.from
            );
        }
        filled.push(&c.to);
    }
    if plan.primaries().next().is_none() {
        bail!("every repository is a copy destination: none would receive the backups");
    }
    Ok(())
}

/// Makes every relative path absolute against the plan's directory, so the
/// plan means the same whatever directory it is run from (systemd runs it
/// from `/`).
fn resolve(plan: &mut Plan, base: &Path) {
    let fix = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    if let Some(d) = &mut plan.state_dir {
        fix(d);
    }
    for r in &mut plan.repositories {
        if let Some(p) = &mut r.path {
            fix(p);
        }
        if let Some(f) = &mut r.password_file {
            fix(f);
        }
        if let Some(c) = &mut r.cache_dir {
            fix(c);
        }
    }
    if let Some(d) = &mut plan.drill
        && let Some(s) = &mut d.scratch
    {
        fix(s);
    }
    if let Some(p) = &mut plan.report.json {
        fix(p);
    }
    if let Some(p) = &mut plan.report.metrics {
        fix(p);
    }
    for s in &mut plan.sources {
        match s {
            Source::Paths(p) => {
                p.paths.iter_mut().for_each(fix);
                p.exclude_file.iter_mut().for_each(fix);
            }
            Source::Qdrant(q) => {
                if let Some(f) = &mut q.api_key_file {
                    fix(f);
                }
            }
            _ => {}
        }
    }
}

/// The commented example `cairn plan init` writes. It parses (a unit test
/// and the CLI tests hold it to that).
pub const EXAMPLE: &str = r#"# cairn backup plan (run it with `cairn run THIS_FILE`; schedule it with
# `cairn plan schedule THIS_FILE --install`). Format: docs/plans.md.
version = 1

# Name used in snapshot tags (plan:NAME), metrics and unit names.
# Default: the file name without its extension.
# name = "nightly"

# Host name recorded in the snapshots (every source type).
# host = "db1"

# Where cadence bookkeeping (last check, last drill, last success per source)
# and the last JSON report are kept. Default: /var/lib/cairn/plans/NAME as
# root, else ~/.local/state/cairn/plans/NAME.
# state_dir = "/var/lib/cairn/plans/nightly"

# Each source is backed up once, into every repository that is not the
# destination of a [[copy]] step; the copy steps then copy the snapshots just
# made to the others ("store in two places": one dump, two identical copies).
# Without [[copy]], every source is backed up into every repository.
# Relative paths are relative to this file's directory.
[[repository]]
name = "local"
path = "/srv/backup/cairn"
password_file = "/etc/cairn/password"
# cache_dir = "/var/cache/cairn"

[[repository]]
name = "offsite"
path = "/mnt/offsite/cairn"
# Or object storage, instead of `path` (credentials from the environment:
# AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or AWS_PROFILE; never in the url):
# url = "s3:https://s3.example.com/my-bucket/cairn"
password_command = "cat /etc/cairn/password"

[[copy]]
from = "local"
to = "offsite"

# Keep 30 daily and 12 monthly snapshots of each source (cairn forget);
# then free the space (cairn prune). Remove the table to keep everything.
[retention]
keep_daily = 30
keep_monthly = 12
# keep_last = 3
# keep_weekly = 8
# keep_yearly = 5
# keep_within = "2d"
# keep_tags = ["release"]
prune = true
# prune_grace = "1h"

# Verify each repository at most once a week, reading 5% of its packs
# (least recently verified first, so twenty runs read everything).
[check]
every = "7d"
read_data_subset = "5%"

# Restore-drill the latest snapshot of each source at most once a month.
[drill]
every = "30d"
sample = "5%"
# scratch = "/var/tmp"

# Run with `sh -c` after the plan, with CAIRN_PLAN, CAIRN_PLAN_FILE,
# CAIRN_PLAN_STATUS (success|failure), CAIRN_PLAN_REPORT (the JSON report)
# and CAIRN_PLAN_FAILED (comma-separated failed sources) in the environment.
[hooks]
# on_success = "curl -fsS https://hc.example/ping/UUID"
on_failure = "logger -t cairn \"plan $CAIRN_PLAN failed: $CAIRN_PLAN_FAILED\""

[report]
# json = "/var/lib/cairn/nightly-report.json"
# For node_exporter's textfile collector:
# metrics = "/var/lib/node_exporter/textfile_collector/cairn.prom"

# Sources. `type` is one of paths, postgres, redis, qdrant, command; every
# source may carry extra `tags`.
[[source]]
name = "etc"
type = "paths"
paths = ["/etc"]
# exclude = ["*.tmp"]
# exclude_file = ["/etc/cairn/excludes"]
exclude_caches = true
one_file_system = true

# Every database and the roles (pg_dumpall --globals-only).
# [[source]]
# name = "postgres"
# type = "postgres"
# dsn = "host=/var/run/postgresql user=postgres dbname=postgres"
# all = true
# # databases = ["shop", "crm"]
# # Restore each database into a scratch database on the same server after
# # the backup and compare row counts (cairn pg verify):
# verify = true
# # ... on a separate server instead (a test restore on another instance):
# # scratch_dsn = "host=pg-scratch user=postgres dbname=postgres"
# # Roles: auto (with passwords, else without them: managed services such as
# # RDS or Neon give no superuser), full, no-passwords or skip:
# # globals = "auto"

# [[source]]
# name = "redis"
# type = "redis"
# url = "redis://127.0.0.1:6379"
# verify = true

# [[source]]
# name = "qdrant"
# type = "qdrant"
# url = "http://127.0.0.1:6333"
# all = true
# # collections = ["docs"]
# # api_key_file = "/etc/cairn/qdrant-api-key"
# verify = true

# Any program's standard output, stored as one file.
# [[source]]
# name = "ldap"
# type = "command"
# command = ["slapcat", "-n", "1"]
# stdin_filename = "ldap/data.ldif"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_parses() {
        let (plan, name) = parse(EXAMPLE, "example", Path::new("/x")).unwrap();
        assert_eq!(name, "example");
        assert_eq!(plan.repositories.len(), 2);
        assert_eq!(plan.sources.len(), 1);
        assert_eq!(plan.check.unwrap().every, Duration::from_secs(7 * 86_400));
    }

    /// `[retention]` becomes the library's policy itself; the plan's own
    /// keys are taken out, and a typo still names its line.
    #[test]
    fn retention_is_the_core_policy() {
        let head = "version = 1\n[[repository]]\nname = \"r\"\npath = \"/r\"\n\
                    password_file = \"/pw\"\n[[source]]\nname = \"s\"\ntype = \"paths\"\n\
                    paths = [\"/etc\"]\n";
        let text = format!(
            "{head}[retention]\nkeep_daily = 7\nprune = true\nkeep_within = \"1h40min\"\n\
             prune_grace = \"0\"\nkeep_tags = [\"a,b\"]\n"
        );
        let (plan, _) = parse(&text, "x", Path::new("/")).unwrap();
        let r = plan.retention.unwrap();
        assert_eq!(
            r.policy,
            RetentionPolicy {
                keep_daily: Some(7),
                keep_within: Some(Duration::from_secs(6000)),
                keep_tags: vec!["a,b".into()],
                ..Default::default()
            }
        );
        assert!(r.prune);
        assert_eq!(r.prune_grace, Some(Duration::ZERO));

        let typo = format!("{head}[retention]\nprune = true\nkeep_dialy = 7\n");
        let line = typo
            .lines()
            .position(|l| l.starts_with("keep_dialy"))
            .unwrap()
            + 1;
        let err = parse(&typo, "x", Path::new("/")).unwrap_err().to_string();
        assert!(err.contains("unknown field `keep_dialy`"), "{err}");
        assert!(err.contains(&format!("line {line}")), "{err}");

        for bad in [
            "keep_within = \"30x\"",
            "prune_grace = \"soon\"",
            "prune = 1",
        ] {
            let text = format!("{head}[retention]\nkeep_last = 1\n{bad}\n");
            let err = parse(&text, "x", Path::new("/")).unwrap_err().to_string();
            let line = text.lines().count();
            assert!(err.contains(&format!("line {line}")), "{bad}: {err}");
        }
        let none = format!("{head}[retention]\nprune = true\n");
        assert!(parse(&none, "x", Path::new("/")).is_err());
    }

    #[test]
    fn postgres_globals_mode_is_checked() {
        let text = |mode: &str| {
            format!(
                "version = 1\n[[repository]]\nname = \"r\"\npath = \"/r\"\n\
                 password_file = \"/pw\"\n[[source]]\nname = \"db\"\ntype = \"postgres\"\n\
                 dsn = \"host=/run/postgresql\"\nall = true\nglobals = \"{mode}\"\n\
                 scratch_dsn = \"host=scratch\"\n"
            )
        };
        for ok in ["auto", "full", "no-passwords", "skip"] {
            parse(&text(ok), "x", Path::new("/")).unwrap();
        }
        let err = parse(&text("nopasswords"), "x", Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no-passwords"), "{err}");
    }

    #[test]
    fn typo_names_the_key_and_line() {
        let text = EXAMPLE.replace("keep_daily = 30", "keep_dialy = 30");
        let err = parse(&text, "x", Path::new("/x")).unwrap_err().to_string();
        assert!(err.contains("keep_dialy"), "{err}");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn version_is_required_and_checked() {
        let text = EXAMPLE.replace("version = 1\n", "");
        let err = parse(&text, "x", Path::new("/x")).unwrap_err().to_string();
        assert!(err.contains("missing `version"), "{err}");
        let text = EXAMPLE.replace("version = 1\n", "version = 2\n");
        let err = parse(&text, "x", Path::new("/x")).unwrap_err().to_string();
        assert!(err.contains("version 2 is not supported"), "{err}");
    }

    #[test]
    fn relative_paths_follow_the_plan_file() {
        let text = EXAMPLE.replace("/srv/backup/cairn", "repo");
        let (plan, _) = parse(&text, "x", Path::new("/plans")).unwrap();
        assert_eq!(
            plan.repositories[0].path.as_deref(),
            Some(Path::new("/plans/repo"))
        );
    }

    const HEAD: &str =
        "version = 1\n[[source]]\nname = \"s\"\ntype = \"paths\"\npaths = [\"/etc\"]\n";

    fn repo(name: &str, location: &str) -> String {
        format!("[[repository]]\nname = \"{name}\"\n{location}\npassword_file = \"/pw\"\n")
    }

    fn copy(from: &str, to: &str) -> String {
        format!("[[copy]]\nfrom = \"{from}\"\nto = \"{to}\"\n")
    }

    /// `url` or `path`, exactly one; the url reaches children as it is
    /// written, a path is made absolute.
    #[test]
    fn repository_takes_a_path_or_a_url() {
        let text = format!(
            "{HEAD}{}{}",
            repo("l", "path = \"rel\""),
            repo("o", "url = \"s3:http://127.0.0.1:3900/bucket/cairn\"")
        );
        let (plan, _) = parse(&text, "x", Path::new("/plans")).unwrap();
        assert_eq!(plan.repositories[0].location(), "/plans/rel");
        assert_eq!(
            plan.repositories[1].location(),
            "s3:http://127.0.0.1:3900/bucket/cairn"
        );
        for (loc, want) in [
            (
                "path = \"/a\"\nurl = \"s3://b/p\"",
                "give path or url, not both",
            ),
            ("", "needs path or url"),
            ("url = \"\"", "`url` is empty"),
            (
                "url = \"s3:http://KEY:s3cr3tVALUE@h:1/b\"",
                "carries credentials",
            ),
            ("url = \"s3://KEY:s3cr3tVALUE@b/p\"", "carries credentials"),
        ] {
            let text = format!("{HEAD}{}", repo("r", loc));
            let err = format!("{:#}", parse(&text, "x", Path::new("/")).unwrap_err());
            assert!(err.contains(want), "{loc}: {err}");
            assert!(!err.contains("s3cr3tVALUE"), "{err}");
        }
    }

    /// Sources go to the primaries (repositories no copy step fills); a
    /// plan without copies keeps backing up into every repository.
    #[test]
    fn copy_destinations_get_copies_not_backups() {
        let three = format!(
            "{HEAD}{}{}{}",
            repo("local", "path = \"/l\""),
            repo("offsite", "url = \"s3://b/c\""),
            repo("tape", "path = \"/t\"")
        );
        let names = |p: &Plan| p.primaries().map(|r| r.name.clone()).collect::<Vec<_>>();
        let (plan, _) = parse(&three, "x", Path::new("/")).unwrap();
        assert_eq!(names(&plan), ["local", "offsite", "tape"]);
        let text = format!(
            "{three}{}timeout = \"90min\"\n{}",
            copy("local", "offsite"),
            copy("offsite", "tape")
        );
        let (plan, _) = parse(&text, "x", Path::new("/")).unwrap();
        assert_eq!(names(&plan), ["local"]);
        assert_eq!(plan.copies[0].timeout, Some(Duration::from_secs(5400)));
        assert_eq!(plan.copies[1].timeout, None);
        assert_eq!(plan.copies[1].label(), "offsite->tape");

        for (copies, want) in [
            (
                copy("local", "nowhere"),
                "copy step 1 (local -> nowhere): no [[repository]] is named \"nowhere\"",
            ),
            (
                copy("elsewhere", "tape"),
                "copy step 1 (elsewhere -> tape): no [[repository]] is named \"elsewhere\"",
            ),
            (copy("local", "local"), "into itself"),
            (
                format!("{}{}", copy("local", "tape"), copy("offsite", "tape")),
                "copy step 2 (offsite -> tape): \"tape\" already receives copies",
            ),
            (
                format!("{}{}", copy("offsite", "tape"), copy("local", "offsite")),
                "move the step that copies into \"offsite\" before this one",
            ),
            (
                format!(
                    "{}{}{}",
                    copy("local", "offsite"),
                    copy("offsite", "tape"),
                    copy("tape", "local")
                ),
                "copy step 1 (local -> offsite): \"local\" gets no backups",
            ),
            (
                "[[copy]]\nfrom = \"local\"\n".to_string(),
                "missing field `to`",
            ),
            (
                "[[copy]]\nfrom = \"local\"\nto = \"tape\"\nwhen = 1\n".to_string(),
                "unknown field `when`",
            ),
        ] {
            let text = format!("{three}{copies}");
            let err = format!("{:#}", parse(&text, "x", Path::new("/")).unwrap_err());
            assert!(err.contains(want), "{copies}: {err}");
        }
    }
}
