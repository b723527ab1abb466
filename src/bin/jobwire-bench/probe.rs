//! Steady counts of b's windows and of a's single adds, besides CPU time (`--count`, `--callgrind`).
//!
//! On a shared machine timings move by a third from run to run, while what a process does per
//! job (the instructions it runs, the system calls it makes, the times it is switched out)
//! hardly depends on what else runs. This machine has no hardware counters (a KVM guest without
//! a virtual PMU: `perf stat -e instructions` answers "not supported"), so:
//! - `--count` attaches `perf stat -p` to each process of the window (all its threads at that
//!   moment: tokio's workers exist by then) for its task clock, context switches and system
//!   calls, in total and for the few kinds that tell the story (futex: a thread woken or put to
//!   sleep; epoll_wait: an event loop going idle; socket and pipe reads and writes);
//! - `--callgrind ROLE` counts the instructions of one process under valgrind's callgrind. The
//!   server and the worker are started under `valgrind --tool=callgrind --instr-atstart=no` by
//!   the bench; Redis is started from PATH by `jobwire::redis_server`, so for `redis` a
//!   `redis-server` script first on PATH must run it so (`exec valgrind --tool=callgrind
//!   --instr-atstart=no --callgrind-out-file=/some/dir/redis.%p /usr/bin/redis-server "$@"`).
//!   The window turns instrumentation on (`callgrind_control -i on`) and dumps at its end
//!   (`callgrind_control -d`); the dump's total over the jobs is the figure. Valgrind runs one
//!   thread at a time and some 50 times slower, so the process it measures batches more than
//!   it would (more acks per message and per Redis call at concurrency 10 and 100): read those
//!   counts next to the calls per job. At concurrency 1 without prefetch one job at a time is
//!   all there is, so that count is the same whoever is slow: the fixed cost of a job.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use clap::ValueEnum;
use tokio::process::Command;

use crate::{
    procs::{Spawned, command},
    results::{Recorder, num},
};

/// A process of a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Role {
    Redis,
    Server,
    Worker,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Redis => "redis-server",
            Role::Server => "jobwire server",
            Role::Worker => "worker process",
        }
    }

    fn file_name(self) -> &'static str {
        match self {
            Role::Redis => "redis",
            Role::Server => "server",
            Role::Worker => "worker",
        }
    }
}

/// The perf events of `--count`, with the name each gets in the figures.
const EVENTS: [(&str, &str); 6] = [
    ("context-switches", "context switches"),
    ("raw_syscalls:sys_enter", "system calls"),
    ("syscalls:sys_enter_futex", "futex calls"),
    ("syscalls:sys_enter_epoll_wait", "epoll waits"),
    (
        "syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendto,syscalls:sys_enter_sendmsg",
        "writes",
    ),
    ("syscalls:sys_enter_read,syscalls:sys_enter_recvfrom,syscalls:sys_enter_recvmsg", "reads"),
];

/// What to count in b's windows, and where the counters write.
pub(crate) struct Probes {
    pub count: bool,
    pub callgrind: Vec<Role>,
    /// Where perf's and callgrind's files go (`--probe-dir`, else the bench's temp dir).
    pub dir: PathBuf,
}

impl Probes {
    pub(crate) fn any(&self) -> bool {
        self.count || !self.callgrind.is_empty()
    }

    /// The command that starts `exe` for `role`: under callgrind when that role is counted.
    pub(crate) fn command(&self, role: Role, exe: &Path) -> Command {
        if !self.callgrind.contains(&role) {
            return command(exe);
        }
        let mut cmd = command(Path::new("valgrind"));
        cmd.args(["--tool=callgrind", "--instr-atstart=no", "-q"])
            .arg(format!("--callgrind-out-file={}/{}.%p", self.dir.display(), role.file_name()))
            .arg(exe);
        cmd
    }

    /// Starts counting on `procs` (role, pid). Several processes of one role (a cluster's
    /// nodes, two servers) are told apart by their place among them: `redis-server 1`, `2`...
    pub(crate) async fn open(&self, procs: &[(Role, u32)]) -> anyhow::Result<ProbeWindow> {
        let mut window = ProbeWindow { perf: Vec::new(), callgrind: Vec::new() };
        for (i, &(role, pid)) in procs.iter().enumerate() {
            let name = process_name(procs, i);
            if self.count {
                let out = self.dir.join(format!("perf-stat.{}.{pid}.csv", role.file_name()));
                let mut cmd = command(Path::new("perf"));
                cmd.args(["stat", "-x", ",", "-e", "task-clock"]);
                for (event, _) in EVENTS {
                    for e in event.split(',') {
                        cmd.args(["-e", e]);
                    }
                }
                cmd.arg("-p").arg(pid.to_string()).arg("-o").arg(&out).stderr(Stdio::inherit());
                window.perf.push((name.clone(), Spawned::spawn("perf stat", cmd)?, out));
            }
            if self.callgrind.contains(&role) {
                callgrind_control(pid, "--zero").await?;
                callgrind_control(pid, "--instr=on").await?;
                window.callgrind.push((role, name, pid));
            }
        }
        if !window.perf.is_empty() {
            // perf stat says nothing once attached; the processes are idle until `go`.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Ok(window)
    }
}

/// The name of `procs[i]` in the figures: its role's, numbered when the role has several.
fn process_name(procs: &[(Role, u32)], i: usize) -> String {
    let role = procs[i].0;
    let name = role.name();
    if procs.iter().filter(|(r, _)| *r == role).count() < 2 {
        return name.to_owned();
    }
    let place = procs[..=i].iter().filter(|(r, _)| *r == role).count();
    format!("{name} {place}")
}

/// Counters running over one window, each with the name of the process it counts.
pub(crate) struct ProbeWindow {
    perf: Vec<(String, Spawned, PathBuf)>,
    callgrind: Vec<(Role, String, u32)>,
}

impl ProbeWindow {
    /// Stops counting and records each count over `units` jobs, named after `label`; returns
    /// the thousands of instructions per job of each process counted under callgrind, in the
    /// order opened.
    pub(crate) async fn close(
        self,
        units: u64,
        label: &str,
        out: &mut Recorder<'_>,
    ) -> anyhow::Result<Vec<(Role, f64)>> {
        let per = |v: f64| v / units as f64;
        let mut instructions = Vec::with_capacity(self.callgrind.len());
        for (role, name, pid) in self.callgrind {
            callgrind_control(pid, "--dump").await?;
            callgrind_control(pid, "--instr=off").await?;
            let thousands = per(last_dump_total(pid).await?) / 1e3;
            out.record(&format!("{label}: {name} instructions"), "k/job", None, thousands);
            instructions.push((role, thousands));
        }
        for (name, mut perf, file) in self.perf {
            let pid = perf.pid()?;
            // SAFETY: signalling our own child by pid; SIGINT makes perf stat print and exit.
            unsafe { libc::kill(libc::pid_t::try_from(pid)?, libc::SIGINT) };
            perf.child.wait().await?;
            let counts = read_perf_csv(&std::fs::read_to_string(&file)?);
            let count = |events: &str| -> f64 { events.split(',').filter_map(|e| counts.get(e)).sum() };
            let mut line = vec![format!("task clock {} µs", num(per(count("task-clock") * 1e3)))];
            for (events, name) in EVENTS.iter().skip(2) {
                line.push(format!("{name} {}", num(per(count(events)))));
            }
            eprintln!("    {name} per job: {}", line.join(", "));
            for (events, event) in EVENTS.iter().take(2) {
                out.record(&format!("{label}: {name} {event}"), "per job", None, per(count(events)));
            }
        }
        Ok(instructions)
    }
}

/// `perf stat -x ,` output: event name to count (task-clock in ms).
fn read_perf_csv(text: &str) -> std::collections::HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(',').collect();
            let value = fields.first()?.parse().ok()?;
            Some(((*fields.get(2)?).to_owned(), value))
        })
        .collect()
}

async fn callgrind_control(pid: u32, what: &str) -> anyhow::Result<()> {
    let status = Command::new("callgrind_control")
        .arg(what)
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .status()
        .await
        .context("cannot run callgrind_control (valgrind installed?)")?;
    ensure!(status.success(), "callgrind_control {what} {pid} failed: is that process under callgrind?");
    Ok(())
}

/// The instructions of the last dump of the callgrind process `pid`: its out file is named by
/// its `--callgrind-out-file=` (else valgrind's default in its working directory), dumps add
/// `.1`, `.2`...
async fn last_dump_total(pid: u32) -> anyhow::Result<f64> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    let out_file = cmdline
        .split(|b| *b == 0)
        .filter_map(|arg| std::str::from_utf8(arg).ok())
        .find_map(|arg| arg.strip_prefix("--callgrind-out-file="))
        .map(|f| PathBuf::from(f.replace("%p", &pid.to_string())));
    let out_file = match out_file {
        Some(f) => f,
        None => std::fs::read_link(format!("/proc/{pid}/cwd"))?.join(format!("callgrind.out.{pid}")),
    };
    let dir = out_file.parent().context("a callgrind out file without a directory")?;
    let stem = out_file.file_name().and_then(|n| n.to_str()).context("an odd callgrind out file")?;
    let mut last: Option<(u64, PathBuf)> = None;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let number = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(stem)?.strip_prefix('.')?.parse::<u64>().ok());
        if let Some(n) = number
            && last.as_ref().is_none_or(|(m, _)| n > *m)
        {
            last = Some((n, path));
        }
    }
    let Some((_, path)) = last else { bail!("no callgrind dump of {} found", out_file.display()) };
    let text = std::fs::read_to_string(&path)?;
    let total = text
        .lines()
        .find_map(|l| l.strip_prefix("totals:").or_else(|| l.strip_prefix("summary:")))
        .with_context(|| format!("no totals in {}", path.display()))?;
    Ok(total.split_whitespace().next().context("empty totals")?.parse()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_of_one_role_are_numbered() {
        let procs = [(Role::Redis, 1), (Role::Redis, 2), (Role::Server, 3), (Role::Worker, 4), (Role::Worker, 5)];
        let names: Vec<String> = (0..procs.len()).map(|i| process_name(&procs, i)).collect();
        assert_eq!(
            names,
            ["redis-server 1", "redis-server 2", "jobwire server", "worker process 1", "worker process 2"]
        );
    }

    #[test]
    fn perf_stat_csv_reads() {
        let text = "# started on Mon\n\n1.35,msec,task-clock,1347690,100.00,0.776,CPUs utilized\n\
                    2,,context-switches,1347690,100.00,1.484,K/sec\n<not counted>,,syscalls:sys_enter_futex,0,0,,\n";
        let counts = read_perf_csv(text);
        assert_eq!(counts.get("task-clock"), Some(&1.35));
        assert_eq!(counts.get("context-switches"), Some(&2.0));
        assert_eq!(counts.get("syscalls:sys_enter_futex"), None);
    }
}
