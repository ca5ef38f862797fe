//! `cairn plan init|schedule`: write an example plan; turn a plan into a
//! systemd timer or a cron.d entry.

use std::io::Write;
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
    if !a.cron {
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
        eprintln!("wrote {}", path.display());
    }
    if a.cron {
        eprintln!("cron reads {} by itself; nothing else to do", dir.display());
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
        _ => eprintln!("now run: systemctl daemon-reload && systemctl enable --now {timer}"),
    }
    Ok(Status::Ok)
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

/// The first `name` on PATH.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
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
}
