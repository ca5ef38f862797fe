//! `cairn plan init|schedule`: write an example plan; turn a plan into a
//! systemd timer or a cron.d entry.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::Status;
use crate::cli::{PlanArgs, PlanCommand, PlanInitArgs, PlanScheduleArgs};
use crate::plan;

/// Runs a `cairn plan` subcommand.
pub fn run(a: &PlanArgs) -> Result<Status> {
    match &a.command {
        PlanCommand::Init(a) => init(a),
        PlanCommand::Schedule(a) => schedule(a),
        PlanCommand::Show(a) => super::plan_pitr::show(a),
    }
}

/// Writes `text` to a new file; an existing file is an error, never
/// overwritten (a plan is configuration someone may have edited).
pub fn write_new(path: &Path, text: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {} (it is never overwritten)", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn init(a: &PlanInitArgs) -> Result<Status> {
    match &a.path {
        None => {
            let mut o = std::io::stdout().lock();
            o.write_all(plan::EXAMPLE.as_bytes())?;
            o.flush()?;
        }
        Some(p) => {
            write_new(p, plan::EXAMPLE)?;
            eprintln!(
                "wrote {}; edit it, then try it with `cairn run {} --dry-run`",
                p.display(),
                p.display()
            );
        }
    }
    Ok(Status::Ok)
}

/// The files a schedule consists of: (file name, content).
fn units(a: &PlanScheduleArgs, name: &str, exe: &Path, plan_path: &Path) -> Vec<(String, String)> {
    let unit = format!("cairn-plan-{name}");
    if a.cron {
        let line = format!(
            "# cairn backup plan {name}: written by `cairn plan schedule --cron`\n\
             SHELL=/bin/sh\n\
             PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
             {} {} {} run {}\n",
            a.cron_schedule,
            a.cron_user,
            cron_word(&exe.to_string_lossy()),
            cron_word(&plan_path.to_string_lossy())
        );
        // cron ignores /etc/cron.d files whose names contain a dot.
        return vec![(unit.replace('.', "_"), line)];
    }
    let service = format!(
        "[Unit]\n\
         Description=cairn backup plan {name}\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={} run {}\n\
         Nice=10\n\
         IOSchedulingClass=idle\n",
        systemd_word(&exe.to_string_lossy()),
        systemd_word(&plan_path.to_string_lossy())
    );
    let timer = format!(
        "[Unit]\n\
         Description=Run cairn backup plan {name}\n\
         \n\
         [Timer]\n\
         OnCalendar={}\n\
         Persistent=true\n\
         RandomizedDelaySec={}\n\
         Unit={unit}.service\n\
         \n\
         [Install]\n\
         WantedBy=timers.target\n",
        a.on_calendar, a.randomized_delay
    );
    vec![
        (format!("{unit}.service"), service),
        (format!("{unit}.timer"), timer),
    ]
}

/// One ExecStart= word: quoted when needed, `%` and `$` escaped (systemd
/// would expand them as specifiers and variables).
fn systemd_word(s: &str) -> String {
    let esc = s.replace('%', "%%").replace('$', "$$");
    let plain = esc
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@=,%$".contains(&b));
    if plain {
        esc
    } else {
        format!("\"{}\"", esc.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// One word of a cron command: single-quoted for sh when needed, `%`
/// escaped (cron turns it into a newline).
fn cron_word(s: &str) -> String {
    let plain = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@=,".contains(&b));
    let w = if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    };
    w.replace('%', "\\%")
}

fn schedule(a: &PlanScheduleArgs) -> Result<Status> {
    // Load it: scheduling a plan that does not parse would only fail later.
    let loaded = plan::load(&a.plan)?;
    let exe = std::env::current_exe().context("cannot find the cairn executable")?;
    if a.cron {
        check_cron(&a.cron_schedule)?;
        check_cron_user(&a.cron_user)?;
    } else {
        check_calendar(&a.on_calendar)?;
    }
    let files = units(a, &loaded.name, &exe, &loaded.path);
    if !a.install {
        let mut o = std::io::stdout().lock();
        for (i, (name, text)) in files.iter().enumerate() {
            if i > 0 {
                o.write_all(b"\n")?;
            }
            let dir = if a.cron {
                "/etc/cron.d"
            } else {
                "/etc/systemd/system"
            };
            writeln!(o, "# {dir}/{name}")?;
            o.write_all(text.as_bytes())?;
        }
        o.flush()?;
        return Ok(Status::Ok);
    }
    let default_dir = PathBuf::from(if a.cron {
        "/etc/cron.d"
    } else {
        "/etc/systemd/system"
    });
    let dir = a.unit_dir.clone().unwrap_or_else(|| default_dir.clone());
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, text) in &files {
        let path = dir.join(name);
        super::run::write_atomic(&path, text.as_bytes())?;
        if a.cron {
            // cron skips cron.d files that group or others may write, and a
            // umask of 002 would make them so.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                .with_context(|| format!("cannot make {} mode 644", path.display()))?;
        }
        eprintln!("wrote {}", path.display());
    }
    if a.cron {
        let path = dir.join(&files[0].0);
        if same_dir(&dir, &default_dir) {
            eprintln!(
                "cron reads {} by itself; nothing else to do",
                default_dir.display()
            );
        } else {
            eprintln!(
                "cron reads only {}: {} is read by nothing until you copy it there \
                 (install -m 644 {} {}/)",
                default_dir.display(),
                path.display(),
                path.display(),
                default_dir.display()
            );
        }
        return Ok(Status::Ok);
    }
    let timer = &files[1].0;
    let commands = [
        vec!["daemon-reload".to_string()],
        vec!["enable".into(), "--now".into(), timer.clone()],
    ];
    let systemctl = which("systemctl");
    match (dir == default_dir, systemctl) {
        (true, Some(sc)) => {
            for args in &commands {
                let st = Command::new(&sc)
                    .args(args)
                    .status()
                    .with_context(|| format!("cannot run systemctl {}", args.join(" ")))?;
                if !st.success() {
                    bail!(
                        "systemctl {} {}",
                        args.join(" "),
                        super::describe_status(st)
                    );
                }
            }
            eprintln!("enabled {timer}; see `systemctl list-timers {timer}`");
        }
        _ if SYSTEMD_UNIT_DIRS
            .iter()
            .any(|d| same_dir(&dir, Path::new(d))) =>
        {
            eprintln!("now run: systemctl daemon-reload && systemctl enable --now {timer}")
        }
        // Anywhere else systemd does not look until the units are linked.
        _ => eprintln!(
            "systemd does not read {}: link the units, then enable the timer: \
             systemctl link {} {} && systemctl daemon-reload && systemctl enable --now {timer}",
            dir.display(),
            dir.join(&files[0].0).display(),
            dir.join(timer).display()
        ),
    }
    Ok(Status::Ok)
}

/// Whether `a` and `b` name the same directory (`b` need not exist).
fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Where systemd looks for system units (systemd.unit(5)).
const SYSTEMD_UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// The `@` schedules of cron(8) (Vixie cron and cronie).
const CRON_MACROS: &[&str] = &[
    "@reboot",
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

/// Refuses a cron schedule cron would not run: cron logs an unparsable
/// cron.d line and ignores it, so the plan would silently never run.
/// Accepted: an `@` macro, or five fields of `*`, numbers, ranges `a-b`,
/// steps `*/n` and `a-b/n`, comma lists of those, and month or weekday
/// names (`jan`, `mon`) as a field of their own, as crontab(5) allows.
fn check_cron(spec: &str) -> Result<()> {
    let bad = |why: String| {
        anyhow::anyhow!(
            "--cron-schedule {spec:?} is not a valid cron schedule: {why} \
             (five fields: minute hour day-of-month month day-of-week, e.g. '30 2 * * *', or @daily)"
        )
    };
    let spec = spec.trim();
    if spec.starts_with('@') {
        if CRON_MACROS.contains(&spec.to_ascii_lowercase().as_str()) {
            return Ok(());
        }
        return Err(bad(format!("the macros are {}", CRON_MACROS.join(", "))));
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(bad(format!("{} field(s) instead of 5", fields.len())));
    }
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    let specs: [(&str, u32, u32, &[&str]); 5] = [
        ("minute", 0, 59, &[]),
        ("hour", 0, 23, &[]),
        ("day of month", 1, 31, &[]),
        ("month", 1, 12, &MONTHS),
        ("day of week", 0, 7, &DAYS),
    ];
    for (field, (what, lo, hi, names)) in fields.iter().zip(specs) {
        if names.contains(&field.to_ascii_lowercase().as_str()) {
            continue;
        }
        cron_field(field, lo, hi).map_err(|why| bad(format!("{what} field {field:?}: {why}")))?;
    }
    Ok(())
}

/// One numeric cron field: a comma list of `*`, `n` or `a-b`, each
/// optionally `/step` (not after a single number).
fn cron_field(field: &str, lo: u32, hi: u32) -> Result<(), String> {
    let num = |s: &str| -> Result<u32, String> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "{s:?} is not a number (names only as a field of their own)"
            ));
        }
        match s.parse::<u32>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(n),
            _ => Err(format!("{s} is outside {lo}-{hi}")),
        }
    };
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        let is_range = if range == "*" {
            true
        } else if let Some((a, b)) = range.split_once('-') {
            if num(a)? > num(b)? {
                return Err(format!("range {range} runs backwards"));
            }
            true
        } else {
            num(range)?;
            false
        };
        if let Some(s) = step {
            if !is_range {
                return Err(format!("a step needs `*` or a range before it: {item:?}"));
            }
            match s.parse::<u32>() {
                Ok(n) if n > 0 && s.bytes().all(|b| b.is_ascii_digit()) => {}
                _ => return Err(format!("step {s:?} is not a positive number")),
            }
        }
    }
    Ok(())
}

/// A cron.d user field is one word; anything else would shift the command.
fn check_cron_user(user: &str) -> Result<()> {
    let ok = !user.is_empty()
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'$'));
    if !ok {
        bail!("--cron-user {user:?} is not a user name");
    }
    Ok(())
}

/// Refuses an OnCalendar= that systemd would ignore (leaving a timer that
/// never fires), when systemd-analyze is there to ask.
fn check_calendar(spec: &str) -> Result<()> {
    let Some(sa) = which("systemd-analyze") else {
        return Ok(());
    };
    let out = Command::new(sa)
        .args(["calendar", spec])
        .output()
        .context("cannot run systemd-analyze")?;
    if !out.status.success() {
        bail!(
            "--on-calendar {spec:?} is not a valid systemd calendar specification: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The first executable `name` on PATH.
pub(super) fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| super::preflight::is_executable(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_their_reader() {
        assert_eq!(systemd_word("/usr/bin/cairn"), "/usr/bin/cairn");
        assert_eq!(systemd_word("/a b/50%"), "\"/a b/50%%\"");
        assert_eq!(cron_word("/etc/x.toml"), "/etc/x.toml");
        assert_eq!(cron_word("/a b/it's"), "'/a b/it'\\''s'");
        assert_eq!(cron_word("/a%b"), "'/a\\%b'");
    }

    #[test]
    fn cron_schedules_are_checked_field_by_field() {
        for ok in [
            "30 2 * * *",
            "*/15 * * * *",
            "0 0-23/2 1,15 * 1-5",
            "0 3 * jan sun",
            "0 3 * DEC 7",
            "  5 4 * * 0  ",
            "@daily",
            "@Reboot",
        ] {
            assert!(check_cron(ok).is_ok(), "{ok}: {:?}", check_cron(ok));
        }
        for (bad, why) in [
            ("every day", "2 field(s)"),
            ("30 2 * *", "4 field(s)"),
            ("30 2 * * * *", "6 field(s)"),
            ("60 2 * * *", "minute field \"60\": 60 is outside 0-59"),
            ("0 24 * * *", "outside 0-23"),
            ("0 0 0 * *", "outside 1-31"),
            ("0 0 * 13 *", "outside 1-12"),
            ("0 0 * * 8", "outside 0-7"),
            ("5-1 * * * *", "runs backwards"),
            ("*/0 * * * *", "step \"0\""),
            ("5/2 * * * *", "a step needs"),
            ("x * * * *", "not a number"),
            ("0 0 * jan-mar *", "names only"),
            ("1,,2 * * * *", "not a number"),
            ("@sometimes", "the macros are"),
            ("+5 * * * *", "not a number"),
        ] {
            let err = check_cron(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert!(check_cron_user("backup").is_ok());
        assert!(check_cron_user("root run").is_err());
    }
}
