//! Plans: `cairn run` (isolation of failing sources, two repositories,
//! report, metrics, hooks, retention, cadence), `cairn plan init|schedule`
//! and `cairn discover`.

use std::ffi::OsStr;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::harness::{Env, PASSWORD, stderr, write};
use super::pg::PgServer;
use super::qdrant_fake::{Collection, FakeQdrant, Knobs};
use super::redis::Server;

/// `cairn` with none of the harness's repository or password settings:
/// everything must come from the plan.
fn cairn(args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
    for v in [
        "CAIRN_REPOSITORY",
        "CAIRN_PASSWORD",
        "CAIRN_PASSWORD_FILE",
        "CAIRN_PASSWORD_COMMAND",
        "CAIRN_CACHE_DIR",
    ] {
        c.env_remove(v);
    }
    c.args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run cairn")
}

/// Two initialized repositories (`a` in the first env's directory, which
/// also holds the plan, state and reports; `b` in the second's).
struct Setup {
    a: Env,
    b: Env,
}

impl Setup {
    fn new() -> Self {
        let s = Setup {
            a: Env::init(),
            b: Env::init(),
        };
        write(&s.a.path("pw"), format!("{PASSWORD}\n").as_bytes());
        write(&s.a.path("src/one.txt"), b"first file");
        write(&s.a.path("src/sub/two.txt"), &vec![7u8; 100_000]);
        s
    }

    /// The `[[repository]]` tables for both repositories.
    fn repositories(&self) -> String {
        let mut t = String::new();
        for (name, env) in [("a", &self.a), ("b", &self.b)] {
            t.push_str(&format!(
                "[[repository]]\nname = \"{name}\"\npath = {:?}\npassword_file = {:?}\ncache_dir = {:?}\n\n",
                env.repo(),
                self.a.path("pw"),
                env.path("cache"),
            ));
        }
        t
    }

    /// [`Setup::repositories`] and a third, `name` at `path`, with a's
    /// password and no cache directory of its own.
    fn repositories_and(&self, name: &str, path: &std::path::Path) -> String {
        format!(
            "{}[[repository]]\nname = \"{name}\"\npath = {path:?}\npassword_file = {:?}\n",
            self.repositories(),
            self.a.path("pw")
        )
    }

    /// Writes `plan.toml` (header, `body`, then the given repositories).
    fn plan(&self, body: &str, repositories: &str) -> PathBuf {
        let text = format!(
            "version = 1\nname = \"nightly\"\nstate_dir = \"state\"\n\n\
             [report]\njson = \"report.json\"\nmetrics = \"metrics/cairn.prom\"\n\n\
             [hooks]\n\
             on_success = \"printf '%s|%s|%s' \\\"$CAIRN_PLAN\\\" \\\"$CAIRN_PLAN_STATUS\\\" \\\"$CAIRN_PLAN_FAILED\\\" > success-marker\"\n\
             on_failure = \"printf '%s|%s|%s|%s' \\\"$CAIRN_PLAN\\\" \\\"$CAIRN_PLAN_STATUS\\\" \\\"$CAIRN_PLAN_FAILED\\\" \\\"$CAIRN_PLAN_REPORT\\\" > failure-marker\"\n\n\
             {body}\n{repositories}"
        );
        let p = self.a.path("plan.toml");
        write(&p, text.as_bytes());
        p
    }

    /// `cairn run PLAN`, from the plan's directory (hooks write there).
    fn run(&self, plan: &Path) -> Output {
        self.run_env(plan, &[])
    }

    /// `cairn run PLAN` with extra environment variables.
    fn run_env(&self, plan: &Path, envs: &[(&str, &OsStr)]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
        c.envs(envs.iter().copied());
        for v in [
            "CAIRN_REPOSITORY",
            "CAIRN_PASSWORD",
            "CAIRN_PASSWORD_FILE",
            "CAIRN_PASSWORD_COMMAND",
            "CAIRN_CACHE_DIR",
        ] {
            c.env_remove(v);
        }
        c.current_dir(self.a.dir.path())
            .arg("run")
            .arg(plan)
            .stdin(Stdio::null())
            .output()
            .expect("run cairn")
    }

    fn report(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.a.path("report.json")).expect("report"))
            .expect("report JSON")
    }

    fn metrics(&self) -> String {
        std::fs::read_to_string(self.a.path("metrics/cairn.prom")).expect("metrics")
    }
}

/// Snapshots of `env`'s repository carrying tag `source:NAME`.
fn of_source(env: &Env, name: &str) -> Vec<serde_json::Value> {
    let tag = format!("source:{name}");
    env.snapshots()
        .into_iter()
        .filter(|s| s["tags"].as_array().unwrap().iter().any(|t| t == &tag))
        .collect()
}

/// The value of one metric line (`name{labels}`), if present.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().expect("metric value"))
}

fn series(name: &str, source: &str, repo: &str) -> String {
    format!("{name}{{plan=\"nightly\",source=\"{source}\",repository=\"{repo}\"}}")
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn good_sources(s: &Setup) -> String {
    format!(
        "[[source]]\nname = \"files\"\ntype = \"paths\"\npaths = [{:?}]\ntags = [\"docs\"]\n\n\
         [[source]]\nname = \"stream\"\ntype = \"command\"\ncommand = [\"sh\", \"-c\", \"printf streamed-data\"]\nstdin_filename = \"stream.txt\"\n\n",
        s.a.path("src")
    )
}

/// The issue's acceptance test: a plan with a failing source still backs
/// up the others, reports the failure, runs the on_failure hook and exits
/// non-zero.
#[test]
fn failing_sources_do_not_stop_the_others() {
    let s = Setup::new();
    let body = format!(
        "{}[[source]]\nname = \"broken\"\ntype = \"command\"\ncommand = [\"sh\", \"-c\", \"echo dump-exploded >&2; exit 1\"]\nstdin_filename = \"broken.txt\"\n\n\
         [[source]]\nname = \"redis-down\"\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{}\"\n",
        good_sources(&s),
        closed_port()
    );
    let plan = s.plan(&body, &s.repositories());
    let out = s.run(&plan);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("broken") && err.contains("redis-down"),
        "{err}"
    );

    // The working sources are in both repositories, the failed ones in none.
    for env in [&s.a, &s.b] {
        for good in ["files", "stream"] {
            let snaps = of_source(env, good);
            assert_eq!(snaps.len(), 1, "{good}: {snaps:?}");
            let tags = snaps[0]["tags"].as_array().unwrap();
            assert!(tags.iter().any(|t| t == "plan:nightly"), "{tags:?}");
        }
        assert!(
            of_source(env, "files")[0]["tags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == "docs")
        );
        assert_eq!(env.snapshots().len(), 2);
    }
    // The stream holds the command's output.
    let dumped =
        s.a.ok(["dump", "latest", "stream.txt", "--tag", "source:stream"]);
    assert_eq!(dumped.stdout, b"streamed-data");

    // The report names each failure per repository, with its error text.
    let r = s.report();
    assert_eq!(r["status"], "failure");
    let results = r["sources"].as_array().unwrap();
    assert_eq!(results.len(), 8);
    for x in results {
        let name = x["source"].as_str().unwrap();
        let failed = name == "broken" || name == "redis-down";
        let want = if failed { "failed" } else { "ok" };
        assert_eq!(x["status"], want, "{x}");
        if failed {
            let e = x["error"].as_str().unwrap();
            let why = if name == "broken" {
                "status 1"
            } else {
                "refused"
            };
            assert!(e.contains(why), "{name}: {e}");
            assert!(x["snapshot_ids"].as_array().unwrap().is_empty());
        } else {
            assert_eq!(x["snapshot_ids"].as_array().unwrap().len(), 1, "{x}");
            assert!(x["bytes_added"].as_u64().unwrap() > 0, "{x}");
        }
    }
    let broken = results.iter().find(|x| x["source"] == "broken").unwrap();
    assert!(
        broken["stderr"].as_str().unwrap().contains("dump-exploded"),
        "{broken}"
    );
    assert_eq!(
        r["failed"],
        serde_json::json!(["broken", "redis-down"]),
        "{r}"
    );

    // on_failure ran with the documented environment; on_success did not.
    let marker = std::fs::read_to_string(s.a.path("failure-marker")).expect("on_failure ran");
    let report_path = s.a.path("report.json");
    assert_eq!(
        marker,
        format!(
            "nightly|failure|broken,redis-down|{}",
            report_path.display()
        )
    );
    assert!(!s.a.path("success-marker").exists());

    // Metrics: success per source and repository, and the run.
    let m = s.metrics();
    for repo in ["a", "b"] {
        for (src, v) in [
            ("files", 1.0),
            ("stream", 1.0),
            ("broken", 0.0),
            ("redis-down", 0.0),
        ] {
            assert_eq!(
                metric(&m, &series("cairn_source_success", src, repo)),
                Some(v),
                "{src}@{repo}:\n{m}"
            );
        }
        assert!(
            metric(
                &m,
                &series("cairn_source_last_success_timestamp_seconds", "files", repo)
            )
            .unwrap()
                > 1.6e9
        );
        // Never saved: 0, so "older than a day" fires for it too.
        assert_eq!(
            metric(
                &m,
                &series(
                    "cairn_source_last_success_timestamp_seconds",
                    "broken",
                    repo
                )
            ),
            Some(0.0)
        );
        assert!(metric(&m, &series("cairn_source_bytes_added", "files", repo)).unwrap() > 0.0);
    }
    assert_eq!(metric(&m, "cairn_run_success{plan=\"nightly\"}"), Some(0.0));
    assert!(metric(&m, "cairn_run_timestamp_seconds{plan=\"nightly\"}").is_some());
    assert!(m.contains("# TYPE cairn_source_success gauge"));
    // Written atomically: no temporary file is left next to it.
    let left: Vec<_> = std::fs::read_dir(s.a.path("metrics"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["cairn.prom"]);
}

/// Issue 11 item 4: a repository that cannot be opened. Its sources get a
/// last-success series of 0 (never), as does its check; the summary says
/// what failed without made-up counts.
#[test]
fn a_missing_repository_is_reported_without_bogus_counts() {
    let s = Setup::new();
    let gone = s.a.path("gone");
    let repos = s.repositories_and("offsite", &gone);
    let body = format!(
        "[retention]\nkeep_last = 1\n\n[check]\nevery = \"1d\"\n\n{}",
        good_sources(&s)
    );
    let plan = s.plan(&body, &repos);
    let out = s.run(&plan);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let m = s.metrics();
    for src in ["files", "stream"] {
        let key = series(
            "cairn_source_last_success_timestamp_seconds",
            src,
            "offsite",
        );
        assert_eq!(metric(&m, &key), Some(0.0), "{key}\n{m}");
        let key = series("cairn_source_last_success_timestamp_seconds", src, "a");
        assert!(metric(&m, &key).unwrap() > 1.6e9, "{key}\n{m}");
    }
    assert_eq!(
        metric(
            &m,
            "cairn_check_last_success_timestamp_seconds{plan=\"nightly\",repository=\"offsite\"}"
        ),
        Some(0.0),
        "{m}"
    );

    let text = String::from_utf8_lossy(&out.stdout);
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in\n{text}"))
            .to_string()
    };
    let gone = gone.display().to_string();
    // A backup that saved nothing shows no size, not "0 B".
    let l = line("files   offsite");
    assert!(l.contains("FAILED") && !l.contains(" B "), "{l}");
    for step in ["retention", "check"] {
        let l = line(&format!("{step} offsite: FAILED: "));
        assert!(l.contains(&gone), "{l}");
        assert!(!l.contains("removed") && !l.contains("read data"), "{l}");
    }
    let l = line("retention a: ok");
    assert!(l.contains("removed 0 snapshot(s)"), "{l}");
    let l = line("check a: ok");
    assert!(l.contains("read data: none"), "{l}");
    let r = s.report();
    let offsite = &r["repositories"][2];
    assert_eq!(offsite["retention"]["detail"], "", "{offsite}");
    assert_eq!(offsite["check"]["detail"], "", "{offsite}");
}

#[test]
fn all_success_exits_zero_and_runs_on_success() {
    let s = Setup::new();
    let plan = s.plan(&good_sources(&s), &s.repositories());
    // While another run holds the plan's lock, a second run refuses.
    std::fs::create_dir_all(s.a.path("state")).unwrap();
    let held = Command::new("flock")
        .arg(s.a.path("state/lock"))
        .arg(env!("CARGO_BIN_EXE_cairn"))
        .arg("run")
        .arg(&plan)
        .current_dir(s.a.dir.path())
        .output()
        .expect("flock (util-linux)");
    // Exit 11: a lock held by another process (docs/scripting.md).
    assert_eq!(held.status.code(), Some(11));
    assert!(
        stderr(&held).contains("plan nightly is already running"),
        "{}",
        stderr(&held)
    );
    assert!(s.b.snapshots().is_empty());

    let out = s.run(&plan);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("plan nightly: success"), "{text}");
    assert_eq!(
        std::fs::read_to_string(s.a.path("success-marker")).expect("on_success ran"),
        "nightly|success|"
    );
    assert!(!s.a.path("failure-marker").exists());
    assert_eq!(s.report()["status"], "success");
    assert_eq!(
        metric(&s.metrics(), "cairn_run_success{plan=\"nightly\"}"),
        Some(1.0)
    );
    assert_eq!(s.b.snapshots().len(), 2);
}

#[test]
fn retention_keeps_the_policy_and_prunes() {
    let s = Setup::new();
    let one = format!(
        "[[repository]]\nname = \"a\"\npath = {:?}\npassword_command = \"cat {}\"\ncache_dir = {:?}\n",
        s.a.repo(),
        s.a.path("pw").display(),
        s.a.path("cache")
    );
    let body = format!(
        "[retention]\nkeep_last = 2\nprune = true\nprune_grace = \"0\"\n\n{}",
        good_sources(&s)
    );
    let plan = s.plan(&body, &one);
    // A snapshot outside the plan is left alone by its retention.
    s.a.ok(["backup", s.a.path("src").to_str().unwrap()]);
    for i in 0..3 {
        write(&s.a.path("src/one.txt"), format!("version {i}").as_bytes());
        let out = s.run(&plan);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    assert_eq!(of_source(&s.a, "files").len(), 2);
    assert_eq!(of_source(&s.a, "stream").len(), 2);
    assert_eq!(s.a.snapshots().len(), 5);
    let r = s.report();
    let ret = &r["repositories"][0]["retention"];
    assert_eq!(ret["status"], "ok", "{ret}");
    assert_eq!(ret["detail"], "removed 2 snapshot(s), pruned", "{ret}");
    // The newest version is the one kept last.
    let out = s.a.ok(["dump", "latest", "--tag", "source:files"]
        .into_iter()
        .chain([s.a.path("src/one.txt").to_str().unwrap()]));
    assert_eq!(out.stdout, b"version 2");
    s.a.ok(["check"]);
}

#[test]
fn check_runs_when_due_only() {
    let s = Setup::new();
    let body = format!(
        "[check]\nevery = \"1d\"\nread_data = true\n\n[drill]\nevery = \"1d\"\n\n{}",
        good_sources(&s)
    );
    let plan = s.plan(&body, &s.repositories());
    let out = s.run(&plan);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = s.report();
    for repo in r["repositories"].as_array().unwrap() {
        assert_eq!(repo["check"]["status"], "ok", "{repo}");
        assert_eq!(repo["drill"]["status"], "ok", "{repo}");
        assert_eq!(repo["drill"]["detail"], "drilled files, stream", "{repo}");
    }
    let first = metric(
        &s.metrics(),
        "cairn_check_last_success_timestamp_seconds{plan=\"nightly\",repository=\"a\"}",
    )
    .expect("check timestamp");
    let out = s.run(&plan);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = s.report();
    for repo in r["repositories"].as_array().unwrap() {
        assert_eq!(repo["check"]["status"], "skipped", "{repo}");
        assert!(
            repo["check"]["detail"]
                .as_str()
                .unwrap()
                .starts_with("not due until"),
            "{repo}"
        );
        assert_eq!(repo["drill"]["status"], "skipped", "{repo}");
    }
    assert_eq!(
        metric(
            &s.metrics(),
            "cairn_check_last_success_timestamp_seconds{plan=\"nightly\",repository=\"a\"}"
        ),
        Some(first)
    );
}

#[test]
fn last_success_survives_a_failing_run() {
    let s = Setup::new();
    let flag = s.a.path("flag");
    write(&flag, b"");
    let body = format!(
        "[[source]]\nname = \"flaky\"\ntype = \"command\"\ncommand = [\"sh\", \"-c\", \"test -e {} && printf ok\"]\nstdin_filename = \"flaky.txt\"\n",
        flag.display()
    );
    let plan = s.plan(&body, &s.repositories());
    let out = s.run(&plan);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let key = series("cairn_source_last_success_timestamp_seconds", "flaky", "b");
    let first = metric(&s.metrics(), &key).expect("timestamp after success");
    assert_eq!(
        metric(&s.metrics(), &series("cairn_source_success", "flaky", "b")),
        Some(1.0)
    );

    assert!(first > 1.6e9, "{first}");
    // Move the recorded success into the past (the state file of
    // docs/plans.md), so a run that wrongly stamped "now" is told apart even
    // within the same second.
    let state_path = s.a.path("state/state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    assert_eq!(state["last_success"]["flaky"]["b"].as_f64(), Some(first));
    state["last_success"]["flaky"]["b"] = serde_json::json!(1_000_000_000);
    std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();

    std::fs::remove_file(&flag).unwrap();
    let out = s.run(&plan);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let m = s.metrics();
    assert_eq!(
        metric(&m, &series("cairn_source_success", "flaky", "b")),
        Some(0.0)
    );
    assert_eq!(metric(&m, &key), Some(1e9), "{m}");
    assert_eq!(
        std::fs::read_to_string(s.a.path("failure-marker")).unwrap(),
        format!(
            "nightly|failure|flaky|{}",
            s.a.path("report.json").display()
        )
    );
}

#[test]
fn plan_init_parses_and_typos_are_named() {
    let env = Env::empty();
    let out = cairn(&["plan", "init"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let p = env.path("example.toml");
    write(&p, &out.stdout);
    // It parses; its placeholder repositories do not exist here, and the
    // dry run says so.
    let out = cairn(&["run", p.to_str().unwrap(), "--dry-run"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("forget --keep-daily 30 --keep-monthly 12"),
        "{text}"
    );
    assert!(text.contains("plan example would fail:"), "{text}");
    assert!(
        text.contains("repository local: /srv/backup/cairn: does not exist"),
        "{text}"
    );

    // `plan init PATH` writes the same, and never overwrites.
    let q = env.path("init.toml");
    let out = cairn(&["plan", "init", q.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&q).unwrap(), std::fs::read(&p).unwrap());
    std::fs::write(&q, "mine").unwrap();
    let out = cairn(&["plan", "init", q.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&q).unwrap(), "mine");

    let typo = String::from_utf8(std::fs::read(&p).unwrap())
        .unwrap()
        .replace("keep_monthly = 12", "keep_montly = 12");
    std::fs::write(&p, &typo).unwrap();
    let line = typo
        .lines()
        .position(|l| l.starts_with("keep_montly"))
        .unwrap()
        + 1;
    let out = cairn(&["run", p.to_str().unwrap(), "--dry-run"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("unknown field `keep_montly`"), "{err}");
    assert!(err.contains(&format!("line {line}")), "{err}");
}

/// Issue 11 item 2: `--dry-run` opens every repository and looks for each
/// source's programs and files; it names every problem and exits 1, and a
/// plan without problems passes without changing anything.
#[test]
fn dry_run_names_what_would_fail() {
    let s = Setup::new();
    let gone = s.a.path("gone");
    let no_pw = s.a.path("no-such-password");
    let repos = format!(
        "[[repository]]\nname = \"gone\"\npath = {gone:?}\npassword_file = {:?}\n\n\
         [[repository]]\nname = \"nopw\"\npath = {:?}\npassword_file = {no_pw:?}\n\n\
         [[repository]]\nname = \"wrongpw\"\npath = {:?}\npassword_command = \"echo not-the-password\"\n\n\
         [[repository]]\nname = \"plain\"\npath = {:?}\npassword_file = {:?}\n\n",
        s.a.path("pw"),
        s.b.repo(),
        s.b.repo(),
        s.a.path("src"),
        s.a.path("pw"),
    );
    let missing = s.a.path("src/missing");
    let body = format!(
        "[[source]]\nname = \"files\"\ntype = \"paths\"\npaths = [{:?}, {missing:?}]\n\n\
         [[source]]\nname = \"tool\"\ntype = \"command\"\ncommand = [\"cairn-no-such-program\"]\nstdin_filename = \"x\"\n\n\
         [[source]]\nname = \"db\"\ntype = \"postgres\"\ndsn = \"host=/nowhere\"\nall = true\n",
        s.a.path("src")
    );
    let plan = s.plan(&body, &repos);
    // The plan's state_dir ("state") cannot be created: a file is in the way.
    write(&s.a.path("state"), b"");
    let empty_bin = s.a.path("empty-bin");
    std::fs::create_dir_all(&empty_bin).unwrap();
    let dry = |json: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
        c.env_remove("CAIRN_PASSWORD")
            .env("CAIRN_PG_BINDIR", &empty_bin)
            .arg("run")
            .arg(&plan)
            .arg("--dry-run")
            .stdin(Stdio::null());
        if json {
            c.arg("--json");
        }
        c.output().unwrap()
    };
    let out = dry(false);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("plan nightly would fail: 10 problem(s)"),
        "{}\n{}",
        stderr(&out),
        String::from_utf8_lossy(&out.stdout)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        format!(
            "plan nightly: state_dir: {} is not a directory",
            s.a.path("state").display()
        ),
        format!("repository gone: {}: does not exist", gone.display()),
        format!(
            "repository nopw: cannot read password file {}",
            no_pw.display()
        ),
        format!("repository wrongpw: cannot open {}: ", s.b.repo().display()),
        format!(
            "repository plain: {} is not a cairn repository",
            s.a.path("src").display()
        ),
        format!("source files: path {}: does not exist", missing.display()),
        "source tool: command \"cairn-no-such-program\": not found on PATH".into(),
        format!(
            "source db: psql: {} does not exist",
            empty_bin.join("psql").display()
        ),
        "source db: pg_dumpall: ".into(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in\n{text}");
    }
    assert!(!text.contains("is valid"), "{text}");
    let v: serde_json::Value = serde_json::from_slice(&dry(true).stdout).unwrap();
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(v["problems"].as_array().unwrap().len(), 10, "{v}");
    assert_eq!(v["problems"][1]["object"], "repository gone", "{v}");

    // The same sources and repositories, all in order: exit 0, nothing run.
    std::fs::remove_file(s.a.path("state")).unwrap();
    let plan = s.plan(&good_sources(&s), &s.repositories());
    let out = cairn(&["run", plan.to_str().unwrap(), "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("plan nightly is valid"), "{text}");
    assert!(s.a.snapshots().is_empty() && s.b.snapshots().is_empty());
    assert!(!s.a.path("state").exists());
}

#[test]
fn plan_schedule_prints_and_installs_units() {
    let s = Setup::new();
    let plan = s.plan(&good_sources(&s), &s.repositories());
    let exe = env!("CARGO_BIN_EXE_cairn");
    let out = cairn(&["plan", "schedule", plan.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "# /etc/systemd/system/cairn-plan-nightly.service",
        "# /etc/systemd/system/cairn-plan-nightly.timer",
        "Type=oneshot",
        &format!("ExecStart={exe} run {}", plan.display()),
        "OnCalendar=*-*-* 02:30:00",
        "Persistent=true",
        "RandomizedDelaySec=15min",
        "Unit=cairn-plan-nightly.service",
        "WantedBy=timers.target",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }

    let out = cairn(&["plan", "schedule", plan.to_str().unwrap(), "--cron"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let cron = String::from_utf8(out.stdout).unwrap();
    assert!(
        cron.contains(&format!("\n30 2 * * * root {exe} run {}\n", plan.display())),
        "{cron}"
    );

    let dir = s.a.path("units");
    let out = cairn(&[
        "plan",
        "schedule",
        plan.to_str().unwrap(),
        "--on-calendar",
        "Mon *-*-* 04:00",
        "--install",
        "--unit-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // systemd does not read that directory: the units must be linked.
    assert!(
        stderr(&out).contains(&format!(
            "systemd does not read {}: link the units, then enable the timer: systemctl link {} {} \
             && systemctl daemon-reload && systemctl enable --now cairn-plan-nightly.timer",
            dir.display(),
            dir.join("cairn-plan-nightly.service").display(),
            dir.join("cairn-plan-nightly.timer").display()
        )),
        "{}",
        stderr(&out)
    );
    let timer = std::fs::read_to_string(dir.join("cairn-plan-nightly.timer")).unwrap();
    assert!(timer.contains("OnCalendar=Mon *-*-* 04:00\n"), "{timer}");
    let service = std::fs::read_to_string(dir.join("cairn-plan-nightly.service")).unwrap();
    assert!(service.contains(&format!("ExecStart={exe} run {}\n", plan.display())));
    // systemd's own parser accepts the pair, where it is installed.
    if let Ok(v) = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join("cairn-plan-nightly.timer"))
        .arg(dir.join("cairn-plan-nightly.service"))
        .output()
    {
        assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
        // And so a calendar it would ignore is refused before anything is written.
        let out = cairn(&[
            "plan",
            "schedule",
            plan.to_str().unwrap(),
            "--on-calendar",
            "bogus 99:99",
        ]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("not a valid systemd calendar"),
            "{}",
            stderr(&out)
        );
    }

    let out = cairn(&[
        "plan",
        "schedule",
        plan.to_str().unwrap(),
        "--cron",
        "--install",
        "--unit-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let installed = std::fs::read_to_string(dir.join("cairn-plan-nightly")).unwrap();
    assert_eq!(
        format!("# /etc/cron.d/cairn-plan-nightly\n{installed}"),
        cron
    );
}

/// A minimal plan for commands that only parse it (`plan schedule`).
fn parse_only_plan(env: &Env) -> PathBuf {
    let p = env.path("nightly.toml");
    write(
        &p,
        b"version = 1\n[[repository]]\nname = \"r\"\npath = \"repo\"\npassword_file = \"pw\"\n\
          [[source]]\nname = \"etc\"\ntype = \"paths\"\npaths = [\"/etc\"]\n",
    );
    p
}

/// Issue 11 item 5: a schedule cron would ignore is refused before
/// anything is printed or written, and `--install` into another directory
/// says that cron does not read it.
#[test]
fn plan_schedule_validates_cron_and_says_who_reads_the_file() {
    let env = Env::empty();
    let plan = parse_only_plan(&env);
    let plan = plan.to_str().unwrap();
    let dir = env.path("crondir");
    let d = dir.to_str().unwrap();
    for bad in [
        "every day",
        "60 2 * * *",
        "0 3 * * mon-fri",
        "*/0 * * * *",
        "@sometimes",
    ] {
        for install in [false, true] {
            let mut args = vec!["plan", "schedule", plan, "--cron", "--cron-schedule", bad];
            if install {
                args.extend(["--install", "--unit-dir", d]);
            }
            let out = cairn(&args);
            assert_eq!(out.status.code(), Some(1), "{bad}: {}", stderr(&out));
            assert!(
                stderr(&out).contains(&format!(
                    "--cron-schedule {bad:?} is not a valid cron schedule"
                )),
                "{bad}: {}",
                stderr(&out)
            );
            assert!(out.stdout.is_empty(), "{bad}");
            assert!(!dir.exists(), "{bad}: something was written");
        }
    }

    let exe = env!("CARGO_BIN_EXE_cairn");
    for good in ["*/15 0-6,22 1-31/2 jan sun", "@daily"] {
        let out = cairn(&[
            "plan",
            "schedule",
            plan,
            "--cron",
            "--cron-schedule",
            good,
            "--install",
            "--unit-dir",
            d,
        ]);
        assert!(out.status.success(), "{good}: {}", stderr(&out));
        let file = dir.join("cairn-plan-nightly");
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.contains(&format!("\n{good} root {exe} run {plan}\n")),
            "{text}"
        );
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "cron reads only /etc/cron.d: {} is read by nothing until you copy it there",
                file.display()
            )),
            "{err}"
        );
        assert!(!err.contains("by itself"), "{err}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "{mode:o}");
    }
}

#[test]
fn discover_finds_files_and_proposes_a_valid_plan() {
    let env = Env::empty();
    let root = env.path("root");
    write(&root.join("etc/hostname"), b"box\n");
    write(&root.join("etc/letsencrypt/live/x/privkey.pem"), b"k");
    write(&root.join("srv/app/.git/HEAD"), b"ref: refs/heads/main\n");
    write(&root.join("srv/app/main.py"), b"print()\n");
    write(&root.join("var/lib/x/data.db"), b"data");
    write(&root.join("var/lib/dpkg/status"), b"pkgs");
    write(&root.join("home/alice/projects/tool/.git/HEAD"), b"ref\n");
    let empty_proc = env.path("proc");
    std::fs::create_dir_all(&empty_proc).unwrap();
    let r = root.to_str().unwrap();
    let out = cairn(&[
        "discover",
        "--root",
        r,
        "--proc",
        empty_proc.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let found: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let has = |kind: &str, rel: &str, source: &str| {
        let path = root.join(rel).display().to_string();
        found
            .iter()
            .any(|f| f["kind"] == kind && f["path"] == path.as_str() && f["source"] == source)
    };
    assert!(has("etc", "etc", "etc"), "{found:#?}");
    assert!(has("tls", "etc/letsencrypt", "etc"), "{found:#?}");
    assert!(has("app-data", "srv/app", "app-data"), "{found:#?}");
    assert!(has("app-data", "var/lib/x", "app-data"), "{found:#?}");
    assert!(has("git", "srv/app", "app-data"), "{found:#?}");
    assert!(has("git", "home/alice/projects/tool", "home"), "{found:#?}");
    assert!(
        !found
            .iter()
            .any(|f| f["path"].as_str().is_some_and(|p| p.ends_with("dpkg"))),
        "{found:#?}"
    );

    let plan = env.path("proposed.toml");
    let out = cairn(&[
        "discover",
        "--root",
        r,
        "--proc",
        empty_proc.to_str().unwrap(),
        "--write",
        plan.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&plan).unwrap();
    assert!(text.contains("# includes git repository"), "{text}");
    // It parses, and only its placeholder repository would fail.
    let out = cairn(&["run", plan.to_str().unwrap(), "--dry-run", "--json"]);
    let dry: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        dry["commands"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c.as_str().unwrap().contains(&format!(
                "{} {}",
                root.join("var/lib/x").display(),
                root.join("srv/app").display()
            ))),
        "{dry}"
    );
    let problems = dry["problems"].as_array().unwrap();
    assert!(!problems.is_empty(), "{dry}");
    assert!(
        problems.iter().all(|p| p["object"] == "repository main"),
        "{dry}"
    );
}

/// Issue 11 item 6: Docker volumes and /root are proposed (the rest of
/// /var/lib/docker is skipped with a note saying why), and PostgreSQL's
/// data directory is not called orphaned when two servers run (sources
/// `postgres-5432`, `postgres-5433`). The servers are a fake /proc: two
/// `postgres` processes whose fds link to LISTEN sockets.
#[test]
fn discover_proposes_docker_volumes_and_root_and_sees_running_postgres() {
    let env = Env::empty();
    let root = env.path("root");
    write(
        &root.join("var/lib/docker/volumes/shop_db/_data/PG_VERSION"),
        b"15\n",
    );
    write(&root.join("var/lib/docker/volumes/metadata.db"), b"bolt");
    write(
        &root.join("var/lib/docker/overlay2/abc/diff/bin/sh"),
        b"elf",
    );
    write(&root.join("var/lib/postgresql/15/main/PG_VERSION"), b"15\n");
    write(&root.join("root/.bashrc"), b"alias ll='ls -l'\n");
    write(&root.join("root/tools/.git/HEAD"), b"ref\n");

    let proc = env.path("proc");
    let mut tcp = String::from(
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n",
    );
    for (i, (pid, port, inode)) in [(101u32, 5432u16, 9001u64), (102, 5433, 9002)]
        .into_iter()
        .enumerate()
    {
        // 127.0.0.1 as the kernel prints it on a little-endian machine.
        tcp.push_str(&format!(
            "   {i}: 0100007F:{port:04X} 00000000:0000 0A 00000000:00000000 00:00000000 00000000   113        0 {inode} 1 0 100 0 0 10 0\n"
        ));
        write(&proc.join(format!("{pid}/comm")), b"postgres\n");
        std::fs::create_dir_all(proc.join(format!("{pid}/fd"))).unwrap();
        std::os::unix::fs::symlink(
            format!("socket:[{inode}]"),
            proc.join(format!("{pid}/fd/7")),
        )
        .unwrap();
    }
    write(&proc.join("net/tcp"), tcp.as_bytes());

    let args = [
        "discover",
        "--root",
        root.to_str().unwrap(),
        "--proc",
        proc.to_str().unwrap(),
    ];
    let out = cairn(&[&args[..], &["--json"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let found: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let at = |rel: &str| {
        let path = root.join(rel).display().to_string();
        found
            .iter()
            .find(|f| f["path"] == path.as_str())
            .unwrap_or_else(|| panic!("nothing about {rel}: {found:#?}"))
            .clone()
    };
    let v = at("var/lib/docker/volumes");
    assert_eq!(
        (&v["kind"], &v["source"]),
        (&"docker".into(), &"docker-volumes".into()),
        "{v}"
    );
    assert!(
        v["why"].as_str().unwrap().starts_with("1 Docker volume(s)"),
        "{v}"
    );
    let d = at("var/lib/docker");
    assert_eq!(d["kind"], "note", "{d}");
    assert!(d["why"].as_str().unwrap().contains("images"), "{d}");
    let r = at("root");
    assert_eq!(
        (&r["kind"], &r["source"]),
        (&"home".into(), &"home".into()),
        "{r}"
    );
    let g = at("root/tools");
    assert_eq!(
        (&g["kind"], &g["source"]),
        (&"git".into(), &"home".into()),
        "{g}"
    );
    if cfg!(target_endian = "little") {
        for port in [5432, 5433] {
            let name = format!("postgres-{port}");
            assert!(
                found
                    .iter()
                    .any(|f| f["kind"] == "postgres" && f["source"] == name.as_str()),
                "{name}: {found:#?}"
            );
        }
        let pg = at("var/lib/postgresql");
        assert_eq!(pg["kind"], "note", "{pg}");
        assert!(
            !pg["why"].as_str().unwrap().contains("no running server"),
            "{pg}"
        );
    }

    // The proposed plan carries both, and parses.
    let out = cairn(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&format!(
            "paths = [{:?}]",
            root.join("var/lib/docker/volumes")
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("paths = [{:?}]", root.join("root"))),
        "{text}"
    );
    // What was skipped, and why, is in the plan for its reader.
    for (rel, why) in [
        (
            "var/lib/docker",
            "everything but volumes/ (images, containers, build cache)",
        ),
        (
            "var/lib/postgresql",
            "PostgreSQL data files: backed up with pg_dump",
        ),
    ] {
        let want = format!("\n# - {}: {why}", root.join(rel).display());
        assert!(text.contains(&want), "missing {want:?} in\n{text}");
    }
    if cfg!(target_endian = "little") {
        assert!(!text.contains("no running server"), "{text}");
    }
    let plan = env.path("p.toml");
    write(&plan, text.as_bytes());
    let out = cairn(&["run", plan.to_str().unwrap(), "--dry-run"]);
    let dry = String::from_utf8_lossy(&out.stdout);
    assert!(dry.contains("plan p: "), "{}\n{dry}", stderr(&out));
    assert!(!stderr(&out).contains("invalid plan"), "{}", stderr(&out));
}

/// Issue 11 item 6 against a real server: with a throw-away PostgreSQL
/// listening (named `postgres-PORT` when other servers run too, as on a
/// busy test machine), /var/lib/postgresql is not called orphaned.
#[test]
fn discover_sees_a_real_running_postgres() {
    let env = Env::empty();
    let root = env.path("root");
    write(&root.join("var/lib/postgresql/15/main/PG_VERSION"), b"15\n");
    let pg = PgServer::start();
    let out = cairn(&["discover", "--root", root.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let found: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let address = format!("127.0.0.1:{}", pg.port);
    assert!(
        found
            .iter()
            .any(|f| f["kind"] == "postgres" && f["address"] == address.as_str()),
        "postgres on {address} not found: {found:#?}"
    );
    let note = found
        .iter()
        .find(|f| f["path"] == root.join("var/lib/postgresql").to_str().unwrap())
        .unwrap_or_else(|| panic!("{found:#?}"));
    assert_eq!(note["kind"], "note", "{note}");
    assert!(
        !note["why"].as_str().unwrap().contains("no running server"),
        "{note}"
    );
}

#[test]
fn discover_maps_a_listening_redis_to_its_process() {
    let env = Env::empty();
    let root = env.path("root");
    std::fs::create_dir_all(&root).unwrap();
    let redis = Server::start(env.dir.path());
    let out = cairn(&["discover", "--root", root.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let found: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let address = format!("127.0.0.1:{}", redis.port);
    let f = found
        .iter()
        .find(|f| f["kind"] == "redis" && f["address"] == address.as_str())
        .unwrap_or_else(|| panic!("redis on {address} not found: {found:#?}"));
    assert_eq!(f["process"], "redis-server", "{f}");
    assert_eq!(f["pid"], redis.child.id(), "{f}");

    // The proposed plan backs it up, and the plan parses.
    let out = cairn(&["discover", "--root", root.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&format!("url = \"redis://{address}\"")),
        "{text}"
    );
    let plan = env.path("p.toml");

    // Pointed at a real repository, the proposal passes a dry run and
    // backs the server up.
    let repo = Env::init();
    write(&repo.path("pw"), PASSWORD.as_bytes());
    let text = text
        .replacen(
            "version = 1\n",
            &format!("version = 1\nstate_dir = {:?}\n", env.path("state")),
            1,
        )
        .replace("\"/backup/cairn\"", &format!("{:?}", repo.repo()))
        .replace("\"/etc/cairn/password\"", &format!("{:?}", repo.path("pw")));
    write(&plan, text.as_bytes());
    let name = f["source"].as_str().unwrap();
    let out = cairn(&["run", plan.to_str().unwrap(), "--source", name, "--dry-run"]);
    assert!(out.status.success(), "{}\n{text}", stderr(&out));
    let out = cairn(&["run", plan.to_str().unwrap(), "--source", name]);
    assert!(out.status.success(), "{}\n{text}", stderr(&out));
    let snaps = of_source(&repo, name);
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["paths"], serde_json::json!(["redis/dump.rdb"]));
}

#[test]
fn a_hanging_source_is_killed_at_its_timeout() {
    let s = Setup::new();
    let body = format!(
        "{}[[source]]\nname = \"hangs\"\ntype = \"command\"\ncommand = [\"sh\", \"-c\", \"sleep 600\"]\nstdin_filename = \"never.txt\"\ntimeout = \"1s\"\n",
        good_sources(&s)
    );
    let one = format!(
        "[[repository]]\nname = \"a\"\npath = {:?}\npassword_file = {:?}\n",
        s.a.repo(),
        s.a.path("pw")
    );
    let plan = s.plan(&body, &one);
    let out = s.run(&plan);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r = s.report();
    let hung = r["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["source"] == "hangs")
        .unwrap()
        .clone();
    assert_eq!(hung["status"], "failed");
    assert!(
        hung["error"]
            .as_str()
            .unwrap()
            .contains("timed out after 1s"),
        "{hung}"
    );
    assert_eq!(of_source(&s.a, "files").len(), 1);
    assert!(of_source(&s.a, "hangs").is_empty());
}

#[test]
fn plan_commands_have_help_with_examples() {
    for cmd in [
        &["run", "--help"][..],
        &["plan", "init", "--help"],
        &["plan", "schedule", "--help"],
        &["discover", "--help"],
    ] {
        let out = cairn(cmd);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Examples:"), "{cmd:?}: {text}");
        assert!(
            text.contains(&format!("cairn {}", cmd[0])),
            "{cmd:?}: {text}"
        );
    }
}

/// Sends inline commands whose replies are one line each, checking none is
/// an error.
fn redis_cmds(port: u16, cmds: &[&str]) {
    use std::io::{BufRead, BufReader, Write};
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect redis");
    let mut r = BufReader::new(conn.try_clone().unwrap());
    for c in cmds {
        conn.write_all(format!("{c}\r\n").as_bytes()).unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(!line.starts_with('-'), "{c}: {line}");
    }
}

/// The one-repository `[[repository]]` table of `s.a`.
fn repository_a(s: &Setup) -> String {
    format!(
        "[[repository]]\nname = \"a\"\npath = {:?}\npassword_file = {:?}\ncache_dir = {:?}\n",
        s.a.repo(),
        s.a.path("pw"),
        s.a.path("cache")
    )
}

/// `verify = true` on a redis source: after the backup, `cairn redis
/// verify` loads the snapshot into a throw-away server and its key counts
/// match; the report and metrics say so.
#[test]
fn plan_verifies_a_redis_backup() {
    let s = Setup::new();
    let redis = Server::start(s.a.dir.path());
    redis_cmds(
        redis.port,
        &[
            "SET a 1",
            "HSET h f v",
            "RPUSH l x y",
            "SELECT 2",
            "SET b 2",
        ],
    );
    let body = format!(
        "[[source]]\nname = \"cache\"\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{}\"\nverify = true\n",
        redis.port
    );
    let plan = s.plan(&body, &repository_a(&s));
    // The verify's throw-away server comes first in PATH: a wrapper that
    // logs its start, and refuses to start once `refuse` exists.
    let bin = s.a.path("wrapbin");
    std::fs::create_dir(&bin).unwrap();
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v redis-server"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let (log, refuse) = (s.a.path("redis-server.log"), s.a.path("refuse"));
    write(
        &bin.join("redis-server"),
        format!(
            "#!/bin/sh\n[ -e {refuse:?} ] && exit 1\necho \"$*\" >> {log:?}\nexec {} \"$@\"\n",
            real.trim()
        )
        .as_bytes(),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        bin.join("redis-server"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_cairn"))
            .env_remove("CAIRN_REPOSITORY")
            .env_remove("CAIRN_PASSWORD")
            .env_remove("CAIRN_PASSWORD_FILE")
            .env_remove("CAIRN_PASSWORD_COMMAND")
            .env_remove("CAIRN_CACHE_DIR")
            .env("PATH", &path)
            .current_dir(s.a.dir.path())
            .arg("run")
            .arg(&plan)
            .stdin(Stdio::null())
            .output()
            .expect("run cairn")
    };
    let out = run();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let started = std::fs::read_to_string(&log).expect("verify started a redis-server");
    assert_eq!(started.lines().count(), 1, "{started}");
    let r = s.report();
    let x = &r["sources"][0];
    assert_eq!(x["status"], "ok", "{x}");
    assert_eq!(x["verified"], true, "{x}");
    assert!(x["verify_duration_s"].as_f64().is_some(), "{x}");
    let snaps = of_source(&s.a, "cache");
    assert_eq!(snaps.len(), 1);
    let id = x["snapshot_ids"][0].as_str().unwrap();
    let listed = snaps[0]["id"].as_str().unwrap();
    assert!(
        id.starts_with(listed) || listed.starts_with(id),
        "{id} vs {listed}"
    );
    assert_eq!(
        metric(&s.metrics(), &series("cairn_source_verified", "cache", "a")),
        Some(1.0)
    );

    // When the snapshot cannot be loaded, the source fails.
    write(&refuse, b"");
    let out = run();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let x = &s.report()["sources"][0];
    assert_eq!(
        (&x["status"], &x["verified"]),
        (&"failed".into(), &false.into()),
        "{x}"
    );
    assert!(
        x["error"].as_str().unwrap().contains("verify failed"),
        "{x}"
    );
    assert!(s.a.path("failure-marker").exists());
}

/// A qdrant source end to end in a plan, against the fake server: the
/// plan's host is recorded, the snapshot id and bytes added are read from
/// `qdrant backup`'s nested JSON, and `verify = true` restores into a
/// scratch collection. When the restore loses a point, verify fails: the
/// source fails in the report and metrics, on_failure runs, exit 1.
#[test]
fn plan_qdrant_source_with_verify() {
    let s = Setup::new();
    let fake = FakeQdrant::start(Knobs::default());
    let points = (0..50u64)
        .map(|id| (id, vec![id as f32, 1.0, 2.0, 3.0]))
        .collect();
    fake.state().collections.insert(
        "docs".into(),
        Collection {
            config: serde_json::json!({"params": {"vectors": {"size": 4, "distance": "Dot"}}}),
            points,
        },
    );
    let body = format!(
        "[[source]]\nname = \"vectors\"\ntype = \"qdrant\"\nurl = \"{}\"\ncollections = [\"docs\"]\nverify = true\n",
        fake.url
    );
    let plan = s.plan(&body, &repository_a(&s));
    let text = std::fs::read_to_string(&plan).unwrap().replacen(
        "version = 1\n",
        "version = 1\nhost = \"vec-host\"\n",
        1,
    );
    write(&plan, text.as_bytes());

    let out = s.run(&plan);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = s.report();
    let x = &r["sources"][0];
    assert_eq!(
        (&x["status"], &x["verified"]),
        (&"ok".into(), &true.into()),
        "{x}"
    );
    let snaps = of_source(&s.a, "vectors");
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["host"], "vec-host");
    assert_eq!(
        snaps[0]["paths"],
        serde_json::json!(["qdrant/docs.snapshot"])
    );
    let id = x["snapshot_ids"][0].as_str().unwrap();
    let listed = snaps[0]["id"].as_str().unwrap();
    assert!(
        id.starts_with(listed) || listed.starts_with(id),
        "{id} vs {listed}"
    );
    assert!(x["bytes_added"].as_u64().unwrap() > 0, "{x}");
    {
        // Verify uploaded the snapshot once and deleted its scratch collection.
        let st = fake.state();
        assert_eq!(st.uploads.len(), 1);
        assert!(st.uploads[0].collection.starts_with("docs-cairn-verify-"));
        assert_eq!(st.collections.keys().collect::<Vec<_>>(), ["docs"]);
    }
    assert!(s.a.path("success-marker").exists());
    let m = s.metrics();
    assert_eq!(
        metric(&m, &series("cairn_source_verified", "vectors", "a")),
        Some(1.0)
    );

    // A snapshot that restores with a point missing: verify fails.
    fake.knobs(|k| k.lose_point_on_recover = true);
    let out = s.run(&plan);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r = s.report();
    assert_eq!(r["status"], "failure");
    assert_eq!(r["failed"], serde_json::json!(["vectors"]));
    let x = &r["sources"][0];
    assert_eq!(
        (&x["status"], &x["verified"]),
        (&"failed".into(), &false.into()),
        "{x}"
    );
    let e = x["error"].as_str().unwrap();
    assert!(
        e.contains("verify failed") && e.contains("49") && e.contains("50"),
        "{e}"
    );
    // The backup itself was saved (and is reported); only verify failed.
    assert_eq!(x["snapshot_ids"].as_array().unwrap().len(), 1, "{x}");
    assert_eq!(of_source(&s.a, "vectors").len(), 2);
    let marker = std::fs::read_to_string(s.a.path("failure-marker")).expect("on_failure ran");
    assert!(marker.starts_with("nightly|failure|vectors|"), "{marker}");
    let m = s.metrics();
    assert_eq!(
        metric(&m, &series("cairn_source_verified", "vectors", "a")),
        Some(0.0)
    );
    assert_eq!(
        metric(&m, &series("cairn_source_success", "vectors", "a")),
        Some(0.0)
    );
    assert_eq!(
        fake.state().collections.keys().collect::<Vec<_>>(),
        ["docs"]
    );
}

/// Issue 12.9: a plan's Redis URL (and PostgreSQL DSN) reaches its `cairn`
/// child in the environment, not in its arguments. While the child waits
/// for the server's answer to AUTH, no command line on the machine holds
/// the password, though AUTH carried it.
#[test]
fn plan_children_get_passwords_outside_their_arguments() {
    use std::io::{BufRead, BufReader};
    const SECRET: &str = "plan-secret-Zk3";
    let s = Setup::new();
    let gate = TcpListener::bind("127.0.0.1:0").unwrap();
    let plan = s.plan(
        &format!(
            "[[source]]\nname = \"cache\"\ntype = \"redis\"\nurl = \"redis://:{SECRET}@127.0.0.1:{}\"\n",
            gate.local_addr().unwrap().port()
        ),
        &s.repositories(),
    );
    let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
    for v in ["CAIRN_REPOSITORY", "CAIRN_PASSWORD", "CAIRN_REDIS_URL"] {
        c.env_remove(v);
    }
    let child = c
        .current_dir(s.a.dir.path())
        .arg("run")
        .arg(&plan)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (conn, _) = gate.accept().unwrap();
    drop(gate);
    // AUTH <password>: an array of two bulk strings, five lines.
    let mut r = BufReader::new(conn);
    let mut auth = String::new();
    for _ in 0..5 {
        r.read_line(&mut auth).unwrap();
    }
    assert!(auth.contains(SECRET), "AUTH carried the password: {auth:?}");
    let mut seen = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) {
            seen += 1;
            assert!(
                !String::from_utf8_lossy(&cmdline).contains(SECRET),
                "password in the command line of {}: {:?}",
                e.path().display(),
                String::from_utf8_lossy(&cmdline)
            );
        }
    }
    assert!(seen > 2, "read the command lines");
    drop(r);
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "the source failed: {}", stderr(&out));
    assert!(!stderr(&out).contains(SECRET), "{}", stderr(&out));
}

/// Bytes of a local repository's pack files (`data/`).
fn pack_bytes(repo: &Path) -> u64 {
    fn walk(d: &Path) -> u64 {
        std::fs::read_dir(d)
            .map(|rd| {
                rd.flatten()
                    .map(|e| {
                        let m = e.metadata().unwrap();
                        if m.is_dir() { walk(&e.path()) } else { m.len() }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(&repo.join("data"))
}

/// Unix seconds of an RFC 3339 time as `snapshots --json` prints it.
fn unix_of(rfc3339: &str) -> f64 {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339");
    t.unix_timestamp_nanos() as f64 / 1e9
}

fn copy_series(name: &str, from: &str, to: &str) -> String {
    format!("{name}{{plan=\"nightly\",from=\"{from}\",to=\"{to}\"}}")
}

fn repo_series(name: &str, repo: &str) -> String {
    format!("{name}{{plan=\"nightly\",repository=\"{repo}\"}}")
}

/// Issue 14: with `[[copy]] from = "a" to = "b"`, every source is backed
/// up once, into `a` (one pg_dump, counted by a wrapper), and `b` holds
/// copies of exactly those snapshots (same time, host, paths, tags; the
/// original recorded). Retention, check and drill run in both; the report
/// and metrics carry the copy and each repository's size and freshness.
#[test]
fn a_copy_step_backs_up_once_and_copies_the_same_snapshots() {
    let s = Setup::new();
    let pg = PgServer::start();
    pg.sql("postgres", "CREATE DATABASE shop");
    pg.sql(
        "shop",
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2)",
    );
    // pg_dump behind a wrapper that counts the dumps.
    let bin = s.a.path("pgbin");
    std::fs::create_dir(&bin).unwrap();
    for p in ["psql", "pg_dumpall", "pg_restore"] {
        std::os::unix::fs::symlink(pg.bindir.join(p), bin.join(p)).unwrap();
    }
    let count = s.a.path("pg_dump.count");
    write(
        &bin.join("pg_dump"),
        format!(
            "#!/bin/sh\n[ \"$1\" = --version ] && exec {real} --version\necho dump >> {count}\nexec {real} \"$@\"\n",
            real = pg.bindir.join("pg_dump").display(),
            count = count.display()
        )
        .as_bytes(),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("pg_dump"), std::fs::Permissions::from_mode(0o755)).unwrap();

    let body = format!(
        "[retention]\nkeep_last = 5\n\
         [check]\nevery = \"1d\"\n\
         [drill]\nevery = \"1d\"\n\
         [[source]]\nname = \"files\"\ntype = \"paths\"\npaths = [{:?}]\n\n\
         [[source]]\nname = \"db\"\ntype = \"postgres\"\ndsn = {:?}\ndatabases = [\"shop\"]\n\n\
         [[copy]]\nfrom = \"a\"\nto = \"b\"\n\n",
        s.a.path("src"),
        pg.dsn("postgres"),
    );
    // `host` is a top-level key: before every table.
    let plan = s.plan(&body, &s.repositories());
    let text = std::fs::read_to_string(&plan).unwrap();
    write(&plan, format!("host = \"db1\"\n{text}").as_bytes());

    let out = s.run_env(&plan, &[("CAIRN_PG_BINDIR", bin.as_os_str())]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dumps = std::fs::read_to_string(&count).expect("pg_dump ran");
    assert_eq!(dumps.lines().count(), 1, "pg_dump ran once: {dumps:?}");

    // `a` holds the backups (files; pg's globals and shop), `b` copies of
    // exactly those: same time, host, paths, tags, the original recorded.
    let made = s.a.snapshots();
    let copied = s.b.snapshots();
    assert_eq!(made.len(), 3, "{made:?}");
    assert_eq!(copied.len(), 3, "{copied:?}");
    for m in &made {
        assert!(m["original"].is_null(), "{m}");
        let c = copied
            .iter()
            .find(|c| c["original"] == m["id"])
            .unwrap_or_else(|| panic!("no copy of {m} in {copied:?}"));
        for f in ["time", "host", "paths", "tags"] {
            assert_eq!(c[f], m[f], "{f}: {c} vs {m}");
        }
        assert_eq!(m["host"], "db1");
    }

    // The report: backups into `a` only, then the copy, then both repositories.
    let r = s.report();
    assert_eq!(r["status"], "success", "{r}");
    let sources = r["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 2, "{r}");
    assert!(sources.iter().all(|x| x["repository"] == "a"), "{r}");
    let made_ids: Vec<&serde_json::Value> = sources
        .iter()
        .flat_map(|x| x["snapshot_ids"].as_array().unwrap())
        .collect();
    let c = &r["copies"][0];
    assert_eq!(
        (c["from"].as_str(), c["to"].as_str()),
        (Some("a"), Some("b")),
        "{c}"
    );
    assert_eq!(c["status"], "ok", "{c}");
    assert_eq!(c["snapshots_copied"], 3, "{c}");
    assert_eq!(c["snapshots_skipped"], 0, "{c}");
    assert!(c["bytes_copied"].as_u64().unwrap() > 0, "{c}");
    let asked: Vec<&serde_json::Value> = c["source_snapshot_ids"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(asked, made_ids, "{c}");
    for (src, dst) in asked.iter().zip(c["snapshot_ids"].as_array().unwrap()) {
        let copy = copied
            .iter()
            .find(|x| &x["id"] == dst)
            .expect("copy listed");
        assert_eq!(&&copy["original"], src);
    }
    assert_eq!(c["sources"], serde_json::json!(["files", "db"]), "{c}");
    for (i, name) in ["a", "b"].iter().enumerate() {
        let x = &r["repositories"][i];
        assert_eq!(x["repository"], *name);
        for step in ["retention", "check", "drill"] {
            assert_eq!(x[step]["status"], "ok", "{step} {name}: {x}");
        }
        assert_eq!(x["drill"]["detail"], "drilled files, db", "{x}");
        assert_eq!(x["snapshots"], 3, "{x}");
    }

    // Metrics: the copy, each repository's bytes and newest snapshot.
    let m = s.metrics();
    let ts = metric(
        &m,
        &copy_series("cairn_copy_last_success_timestamp_seconds", "a", "b"),
    );
    assert!(ts.unwrap() > 1.6e9, "{m}");
    assert_eq!(
        metric(&m, &copy_series("cairn_copy_success", "a", "b")),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, &copy_series("cairn_copy_snapshots_copied", "a", "b")),
        Some(3.0),
        "{m}"
    );
    assert!(
        metric(&m, &copy_series("cairn_copy_duration_seconds", "a", "b")).is_some(),
        "{m}"
    );
    let newest = made
        .iter()
        .map(|x| unix_of(x["time"].as_str().unwrap()))
        .fold(0.0, f64::max);
    for (name, env) in [("a", &s.a), ("b", &s.b)] {
        assert_eq!(
            metric(&m, &repo_series("cairn_repository_stored_bytes", name)),
            Some(pack_bytes(&env.repo()) as f64),
            "{name}: {m}"
        );
        let t = metric(
            &m,
            &repo_series("cairn_repository_latest_snapshot_timestamp_seconds", name),
        )
        .unwrap_or_else(|| panic!("{name}: {m}"));
        assert!((t - newest).abs() < 1e-3, "{name}: {t} vs {newest}");
        // Each source's last success, in `b` by the copy's arrival.
        for src in ["files", "db"] {
            let t = metric(
                &m,
                &series("cairn_source_last_success_timestamp_seconds", src, name),
            );
            assert!(t.unwrap() > 1.6e9, "{src}@{name}: {m}");
        }
    }
    // Backups ran into `a` only: no per-run backup series for `b`.
    assert_eq!(
        metric(&m, &series("cairn_source_success", "files", "b")),
        None,
        "{m}"
    );
}

/// A copy step whose destination is missing fails on its own: reported as
/// `copy:a->gone`, the other copy step, retention and checks still run,
/// on_failure runs, and its last-success series is 0.
#[test]
fn a_failing_copy_is_reported_and_the_rest_runs() {
    let s = Setup::new();
    let gone = s.a.path("gone");
    let repos = s.repositories_and("gone", &gone);
    let body = format!(
        "[retention]\nkeep_last = 5\n[check]\nevery = \"1d\"\n\
         [[copy]]\nfrom = \"a\"\nto = \"gone\"\n[[copy]]\nfrom = \"a\"\nto = \"b\"\n{}",
        good_sources(&s)
    );
    let plan = s.plan(&body, &repos);
    let out = s.run(&plan);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r = s.report();
    assert_eq!(
        r["failed"],
        serde_json::json!(["copy:a->gone", "retention:gone", "check:gone"]),
        "{r}"
    );
    let failed = &r["copies"][0];
    assert_eq!(failed["status"], "failed", "{failed}");
    let e = failed["error"].as_str().unwrap();
    assert!(e.contains(&gone.display().to_string()), "{e}");
    assert_eq!(failed["exit_code"], 10, "not a repository: {failed}");
    // The other copy step and the steps per repository still ran.
    assert_eq!(r["copies"][1]["status"], "ok", "{r}");
    assert_eq!(s.b.snapshots().len(), 2);
    assert_eq!(r["repositories"][0]["retention"]["status"], "ok", "{r}");
    assert_eq!(r["repositories"][1]["check"]["status"], "ok", "{r}");
    assert!(!gone.exists(), "nothing created at the missing destination");
    let marker = std::fs::read_to_string(s.a.path("failure-marker")).expect("on_failure ran");
    assert!(marker.starts_with("nightly|failure|"), "{marker}");
    // The summary names it too.
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("copy a->gone: FAILED: "), "{text}");

    let m = s.metrics();
    assert_eq!(
        metric(&m, &copy_series("cairn_copy_success", "a", "gone")),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            &copy_series("cairn_copy_last_success_timestamp_seconds", "a", "gone")
        ),
        Some(0.0),
        "{m}"
    );
    assert!(
        metric(
            &m,
            &copy_series("cairn_copy_last_success_timestamp_seconds", "a", "b")
        )
        .unwrap()
            > 1.6e9
    );
    // Its inventory could not be read: no made-up size.
    assert_eq!(
        metric(&m, &repo_series("cairn_repository_stored_bytes", "gone")),
        None,
        "{m}"
    );
    assert!(r["repositories"][2]["error"].is_string(), "{r}");
    let run1: Vec<serde_json::Value> = s.a.snapshots().iter().map(|x| x["id"].clone()).collect();

    // The destination appears: the next run catches up on what the failed
    // one left behind (run 1's snapshots and its own); the step that
    // worked copies only this run's.
    let at_gone = |args: &[&str]| {
        let out = cairn(
            &[
                &[
                    "-r",
                    gone.to_str().unwrap(),
                    "--password-file",
                    s.a.path("pw").to_str().unwrap(),
                ][..],
                args,
            ]
            .concat(),
        );
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        out.stdout
    };
    at_gone(&["init", "--kdf-memory", "64", "--kdf-iterations", "1"]);
    let out = s.run(&plan);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = s.report();
    let c = &r["copies"][0];
    assert_eq!(
        (c["status"].as_str(), c["catch_up"].as_bool()),
        (Some("ok"), Some(true)),
        "{c}"
    );
    assert_eq!(c["snapshots_copied"], 4, "{c}");
    assert_eq!(c["sources"], serde_json::json!(["files", "stream"]), "{c}");
    let c = &r["copies"][1];
    assert_eq!(
        (c["catch_up"].as_bool(), c["snapshots_copied"].as_u64()),
        (Some(false), Some(2)),
        "{c}"
    );
    let listed: serde_json::Value =
        serde_json::from_slice(&at_gone(&["--json", "snapshots"])).unwrap();
    let originals: Vec<serde_json::Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["original"].clone())
        .collect();
    assert_eq!(originals.len(), 4);
    for id in &run1 {
        assert!(originals.contains(id), "{id} caught up: {originals:?}");
    }
    assert_eq!(s.b.snapshots().len(), 4);
    // Caught up: the next run copies only its own again.
    let out = s.run(&plan);
    assert!(out.status.success(), "{}", stderr(&out));
    let c = &s.report()["copies"][0];
    assert_eq!(
        (c["catch_up"].as_bool(), c["snapshots_copied"].as_u64()),
        (Some(false), Some(2)),
        "{c}"
    );
}

/// A plan whose copy step names an unknown repository fails to load, the
/// dry run included, naming the step and the repositories there are.
#[test]
fn dry_run_names_a_copy_step_with_unknown_repositories() {
    let s = Setup::new();
    let body = format!(
        "[[copy]]\nfrom = \"a\"\nto = \"offsite\"\n{}",
        good_sources(&s)
    );
    let plan = s.plan(&body, &s.repositories());
    let out = cairn(&["run", plan.to_str().unwrap(), "--dry-run"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(
            "copy step 1 (a -> offsite): no [[repository]] is named \"offsite\" (the plan has a, b)"
        ),
        "{err}"
    );
    // A valid copy step: the dry run prints its command, and `b` gets no backup.
    let plan = s.plan(
        &format!("[[copy]]\nfrom = \"a\"\nto = \"b\"\n{}", good_sources(&s)),
        &s.repositories(),
    );
    let out = cairn(&["run", plan.to_str().unwrap(), "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let b = s.b.repo().display().to_string();
    let a = s.a.repo().display().to_string();
    let copy_line = text
        .lines()
        .find(|l| l.contains(" copy --from-repo "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        copy_line.contains(&format!("-r {b} --json"))
            && copy_line.contains(&format!("--from-repo {a} SNAPSHOT…")),
        "{copy_line}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.contains(&format!("-r {b} ")) && l.contains(" backup ")),
        "no backup into the copy destination: {text}"
    );
}

/// A `url` repository reaches the children as `-r` exactly as written,
/// and the dry run opens it through a child (so any location `-r`
/// accepts is checked the way the run will use it).
#[test]
fn a_url_repository_is_given_to_children_as_written() {
    let s = Setup::new();
    let url_repos = |b: &str| {
        format!(
            "[[repository]]\nname = \"a\"\npath = {:?}\npassword_file = {:?}\n\n\
             [[repository]]\nname = \"b\"\nurl = {b:?}\npassword_file = {:?}\n",
            s.a.repo(),
            s.a.path("pw"),
            s.a.path("pw"),
        )
    };
    let b = s.b.repo().display().to_string();
    let body = format!("[[copy]]\nfrom = \"a\"\nto = \"b\"\n{}", good_sources(&s));
    let plan = s.plan(&body, &url_repos(&b));
    let out = cairn(&["run", plan.to_str().unwrap(), "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains(&format!("-r {b} --json ")) && l.contains(" copy --from-repo ")),
        "{text}"
    );

    // Not a repository there: the child's error, under the repository's name.
    let missing = s.a.path("nothing-here").display().to_string();
    let plan = s.plan(&body, &url_repos(&missing));
    let out = cairn(&["run", plan.to_str().unwrap(), "--dry-run", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{v}");
    assert_eq!(problems[0]["object"], "repository b", "{v}");
    assert!(
        problems[0]["problem"].as_str().unwrap().contains(&missing),
        "{v}"
    );

    // The run itself: backups into a, copies into b through the url.
    let plan = s.plan(&body, &url_repos(&b));
    let out = s.run(&plan);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(s.b.snapshots().len(), 2);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("copy a->b: ok (copied 2 snapshot(s), 0 already there, "),
        "{text}"
    );
    assert!(
        text.contains("repository b: ") && text.contains(" stored, newest snapshot "),
        "{text}"
    );
}

/// Copy steps chain in file order: `a -> b`, then `b -> c` copies what
/// the first put into `b` in this run.
#[test]
fn copy_steps_chain_in_file_order() {
    let s = Setup::new();
    let c = Env::init();
    let repos = s.repositories_and("c", &c.repo());
    let body = format!(
        "[[copy]]\nfrom = \"a\"\nto = \"b\"\n[[copy]]\nfrom = \"b\"\nto = \"c\"\n{}",
        good_sources(&s)
    );
    let plan = s.plan(&body, &repos);
    let out = s.run(&plan);
    assert!(out.status.success(), "{}", stderr(&out));
    let (a, b, cc) = (s.a.snapshots(), s.b.snapshots(), c.snapshots());
    assert_eq!((a.len(), b.len(), cc.len()), (2, 2, 2));
    // A copy records the first repository's id (copy keeps the original
    // through a chain); b's and c's copies are of the same snapshots of a.
    for x in b.iter().chain(&cc) {
        let orig = a
            .iter()
            .find(|z| z["id"] == x["original"])
            .unwrap_or_else(|| panic!("{x} is a copy of one of a's: {a:?}"));
        assert_eq!(x["time"], orig["time"]);
        assert_eq!(x["paths"], orig["paths"]);
    }
    let originals = |v: &[serde_json::Value]| {
        let mut o: Vec<String> = v.iter().map(|x| x["original"].to_string()).collect();
        o.sort();
        o
    };
    assert_eq!(originals(&b), originals(&cc));
    let r = s.report();
    assert_eq!(
        r["copies"][1]["sources"],
        serde_json::json!(["files", "stream"]),
        "{r}"
    );
    // Only `a` got backups.
    let sources = r["sources"].as_array().unwrap();
    assert!(sources.iter().all(|x| x["repository"] == "a"), "{r}");
    // The next run (no catch-up): the second step copies exactly the ids
    // the first reported in `b`.
    let out = s.run(&plan);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = s.report();
    let (first, second) = (&r["copies"][0], &r["copies"][1]);
    assert_eq!(second["catch_up"], false, "{r}");
    assert_eq!(second["source_snapshot_ids"], first["snapshot_ids"], "{r}");
    assert_eq!(second["snapshots_copied"], 2, "{r}");
    assert_eq!(c.snapshots().len(), 4);
}

/// A copy step that hangs (here: the source's password command, only
/// inside the copy child) is killed at its `timeout` and reported; the
/// backups and retention still ran.
#[test]
fn a_hanging_copy_is_killed_at_its_timeout() {
    let s = Setup::new();
    // Sleeps only where it is the copy's source password: that variable
    // is set in the copy child alone.
    let script = s.a.path("pw.sh");
    write(
        &script,
        format!(
            "if [ -n \"$CAIRN_FROM_PASSWORD_COMMAND\" ]; then sleep 600; fi\ncat {}\n",
            s.a.path("pw").display()
        )
        .as_bytes(),
    );
    let repos = format!(
        "[[repository]]\nname = \"a\"\npath = {:?}\npassword_command = \"sh {}\"\n\n\
         [[repository]]\nname = \"b\"\npath = {:?}\npassword_file = {:?}\n",
        s.a.repo(),
        script.display(),
        s.b.repo(),
        s.a.path("pw"),
    );
    let body = format!(
        "[retention]\nkeep_last = 5\n[[copy]]\nfrom = \"a\"\nto = \"b\"\ntimeout = \"1s\"\n{}",
        good_sources(&s)
    );
    let plan = s.plan(&body, &repos);
    let out = s.run(&plan);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r = s.report();
    let c = &r["copies"][0];
    assert_eq!(c["status"], "failed", "{c}");
    assert!(
        c["error"].as_str().unwrap().contains("timed out after 1s"),
        "{c}"
    );
    assert_eq!(r["failed"], serde_json::json!(["copy:a->b"]), "{r}");
    assert_eq!(s.a.snapshots().len(), 2);
    assert!(s.b.snapshots().is_empty());
    assert_eq!(r["repositories"][0]["retention"]["status"], "ok", "{r}");
}

/// Issue 14 end to end: a plan backs up into a local repository and
/// copies off-site to an S3 repository (`url = "s3:http://…"`) on the
/// 3-node Garage cluster. The copies are the same snapshots; the
/// repository's size and freshness come from S3; the secret key is on no
/// command line (every one is captured while the copy child runs) and in
/// no output, report or metrics.
#[test]
fn a_plan_copies_off_site_to_s3() {
    use cairn_testkit::garage::Garage;
    let s = Setup::new();
    let garage = Garage::shared();
    let bucket = garage.new_bucket();
    let url = garage.location_in(&garage.endpoint(), &bucket, "plans/offsite");
    let aws: Vec<(&str, String)> = garage.env().into_iter().collect();
    let env_of = |c: &mut Command| {
        for v in [
            "AWS_ENDPOINT_URL",
            "AWS_PROFILE",
            "AWS_REGION",
            "AWS_SESSION_TOKEN",
        ] {
            c.env_remove(v);
        }
        c.envs(aws.iter().map(|(k, v)| (*k, v.as_str())))
            .env("AWS_EC2_METADATA_DISABLED", "true");
    };
    let at_url = |args: &[&str]| {
        let mut c = s.a.cmd_at(OsStr::new(&url));
        env_of(&mut c);
        let out = c.args(args).output().expect("run cairn");
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        out.stdout
    };
    at_url(&["init", "--kdf-memory", "64", "--kdf-iterations", "1"]);

    // The local repository's password command also records every command
    // line on the machine when it runs inside the copy child.
    let cmdlines = s.a.path("cmdlines.txt");
    let script = s.a.path("pw.sh");
    write(
        &script,
        format!(
            "if [ -n \"$CAIRN_FROM_PASSWORD_COMMAND\" ]; then\n\
             for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < \"$f\"; echo; done >> {} 2>/dev/null\n\
             fi\ncat {}\n",
            cmdlines.display(),
            s.a.path("pw").display()
        )
        .as_bytes(),
    );
    let repos = format!(
        "[[repository]]\nname = \"local\"\npath = {:?}\npassword_command = \"sh {}\"\n\n\
         [[repository]]\nname = \"offsite\"\nurl = {url:?}\npassword_file = {:?}\ncache_dir = {:?}\n",
        s.a.repo(),
        script.display(),
        s.a.path("pw"),
        s.b.path("cache"),
    );
    let body = format!(
        "[retention]\nkeep_last = 5\n[check]\nevery = \"1d\"\n\
         [[copy]]\nfrom = \"local\"\nto = \"offsite\"\ntimeout = \"10min\"\n{}",
        good_sources(&s)
    );
    let plan = s.plan(&body, &repos);
    let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
    for v in [
        "CAIRN_REPOSITORY",
        "CAIRN_PASSWORD",
        "CAIRN_PASSWORD_FILE",
        "CAIRN_PASSWORD_COMMAND",
        "CAIRN_CACHE_DIR",
    ] {
        c.env_remove(v);
    }
    env_of(&mut c);
    let out = c
        .current_dir(s.a.dir.path())
        .arg("run")
        .arg(&plan)
        .stdin(Stdio::null())
        .output()
        .expect("run cairn");
    assert!(out.status.success(), "{}", stderr(&out));

    let made = s.a.snapshots();
    let listed: serde_json::Value =
        serde_json::from_slice(&at_url(&["--json", "snapshots"])).expect("json");
    let copied = listed.as_array().unwrap();
    assert_eq!((made.len(), copied.len()), (2, 2), "{listed}");
    for m in &made {
        let c = copied
            .iter()
            .find(|c| c["original"] == m["id"])
            .unwrap_or_else(|| panic!("no copy of {m} in {listed}"));
        for f in ["time", "host", "paths", "tags"] {
            assert_eq!(c[f], m[f], "{f}");
        }
    }
    let r = s.report();
    assert_eq!(r["copies"][0]["status"], "ok", "{r}");
    let off = &r["repositories"][1];
    assert_eq!(off["repository"], "offsite");
    assert_eq!(off["check"]["status"], "ok", "{off}");
    assert_eq!(off["retention"]["status"], "ok", "{off}");
    assert!(off["stored_bytes"].as_u64().unwrap() > 0, "{off}");
    let m = s.metrics();
    let newest = made
        .iter()
        .map(|x| unix_of(x["time"].as_str().unwrap()))
        .fold(0.0, f64::max);
    let t = metric(
        &m,
        &repo_series(
            "cairn_repository_latest_snapshot_timestamp_seconds",
            "offsite",
        ),
    )
    .unwrap_or_else(|| panic!("{m}"));
    assert!((t - newest).abs() < 1e-3, "{t} vs {newest}");
    assert!(metric(&m, &repo_series("cairn_repository_stored_bytes", "offsite")).unwrap() > 0.0);

    // The secret: on no command line while the copy ran, nowhere written.
    let lines = std::fs::read_to_string(&cmdlines).expect("the copy child asked for a password");
    assert!(
        lines.contains(" copy --from-repo "),
        "the copy child was seen: {lines}"
    );
    assert!(lines.contains(&url), "{lines}");
    let secret = garage.secret_key();
    for (what, text) in [
        ("command lines", lines.clone()),
        ("stdout", String::from_utf8_lossy(&out.stdout).into_owned()),
        ("stderr", stderr(&out)),
        ("report", r.to_string()),
        ("metrics", m),
    ] {
        assert!(!text.contains(secret), "secret key in {what}");
    }
}
