//! Servers as separate processes (so each one's CPU time is its own), and what /proc says about
//! them: CPU time, resident memory and its high-water mark.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A server process, killed (and reaped) when dropped.
pub struct Proc {
    pub name: String,
    pub addr: String,
    pub log: PathBuf,
    child: Child,
    /// Sent (with kill(1)) before the kill on drop, for servers that stop children of their
    /// own (nginx's workers outlive a SIGKILLed master).
    stop_signal: Option<&'static str>,
    /// Held open: the helper subcommands exit when it closes, even if this process is killed.
    _stdin: Option<ChildStdin>,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the process has exited (with the tail of its log).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            bail!(
                "{} exited ({status}); its log ({}):\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log)
            );
        }
        Ok(())
    }

    /// CPU time (user + system) of the process and its direct children (nginx's workers).
    pub fn cpu(&self) -> Duration {
        tree_cpu(self.pid())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(sig) = self.stop_signal {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(self.pid().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last lines of a log file.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// How a spawned process tells where it listens.
pub enum Announce {
    /// A stdout line `listening <addr>` (the bench's own helper subcommands).
    StdoutLine,
    /// A JSON log line on stderr with `fields.addr` (rack-gateway-server with LOG_FORMAT=json).
    GatewayLog,
    /// Known in advance (nginx); wait until it accepts connections. Stopped with SIGTERM.
    Fixed(String),
}

/// Spawns `cmd`, its diagnostics going to `log`, and waits (bounded) until it listens.
pub fn spawn(
    name: &str,
    mut cmd: Command,
    log: PathBuf,
    announce: Announce,
) -> anyhow::Result<Proc> {
    let log_file = File::create(&log).with_context(|| format!("create {}", log.display()))?;
    cmd.stdin(Stdio::piped());
    match announce {
        Announce::StdoutLine => {
            cmd.stdout(Stdio::piped()).stderr(log_file);
        }
        Announce::GatewayLog => {
            // stdout carries the audit events: one JSON line per event, not wanted here.
            cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        }
        Announce::Fixed(_) => {
            cmd.stdout(log_file.try_clone()?).stderr(log_file);
        }
    }
    let mut child = cmd.spawn().with_context(|| format!("start {name}"))?;
    let stdin = child.stdin.take();
    let (tx, rx) = mpsc::channel::<String>();
    let stop_signal = matches!(announce, Announce::Fixed(_)).then_some("TERM");
    let fixed = match announce {
        Announce::StdoutLine => {
            let out = child.stdout.take().context("stdout")?;
            std::thread::spawn(move || {
                let mut lines = BufReader::new(out).lines();
                while let Some(Ok(line)) = lines.next() {
                    if let Some(addr) = line.strip_prefix("listening ") {
                        let _ = tx.send(addr.trim().to_string());
                    }
                }
            });
            None
        }
        Announce::GatewayLog => {
            let err = child.stderr.take().context("stderr")?;
            let mut copy = File::options().append(true).open(&log)?;
            std::thread::spawn(move || {
                let mut sent = false;
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if !sent {
                        let parsed = serde_json::from_str::<serde_json::Value>(&line).ok();
                        if let Some(a) = parsed.as_ref().and_then(|v| v["fields"]["addr"].as_str())
                        {
                            let _ = tx.send(a.to_string());
                            sent = true;
                        }
                    }
                    let _ = writeln!(copy, "{line}");
                }
            });
            None
        }
        Announce::Fixed(addr) => Some(addr),
    };
    let mut proc = Proc {
        name: name.to_string(),
        addr: String::new(),
        log,
        child,
        stop_signal,
        _stdin: stdin,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    proc.addr = match fixed {
        Some(addr) => loop {
            proc.check_alive()?;
            if std::net::TcpStream::connect(&addr).is_ok() {
                break addr;
            }
            if Instant::now() > deadline {
                bail!("{name} did not listen on {addr} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        },
        None => loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(addr) => break addr,
                Err(_) => {
                    proc.check_alive()?;
                    if Instant::now() > deadline {
                        bail!("{name} did not start within 30 s:\n{}", log_tail(&proc.log));
                    }
                }
            }
        },
    };
    Ok(proc)
}

fn clock_ticks_per_sec() -> u64 {
    static TCK: AtomicU64 = AtomicU64::new(0);
    let known = TCK.load(Ordering::Relaxed);
    if known > 0 {
        return known;
    }
    let tck = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(100);
    TCK.store(tck, Ordering::Relaxed);
    tck
}

/// Fields of /proc/PID/stat after the command name: `[0]` state, `[1]` ppid, ... `[11]` utime,
/// `[12]` stime.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

fn own_cpu_ticks(pid: u32) -> u64 {
    stat_fields(pid)
        .map(|f| {
            let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            n(11) + n(12)
        })
        .unwrap_or(0)
}

/// CPU time of `pid` plus that of its direct children.
pub fn tree_cpu(pid: u32) -> Duration {
    let mut ticks = own_cpu_ticks(pid);
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let is_child = stat_fields(child)
                .and_then(|f| f.get(1).and_then(|p| p.parse::<u32>().ok()))
                == Some(pid);
            if is_child {
                ticks += own_cpu_ticks(child);
            }
        }
    }
    Duration::from_millis(ticks * 1000 / clock_ticks_per_sec())
}

/// One process in a [`CpuReading`].
#[derive(Clone, Copy)]
struct ProcCpu {
    ppid: u32,
    /// utime + stime + cutime + cstime, in ticks: a reaped child's whole time moves into its
    /// parent's cutime/cstime.
    total: u64,
}

/// The CPU times of every process on the machine, and the time the hypervisor took from this
/// VM, to tell how much CPU the benchmark lost to others during a phase.
pub struct CpuReading {
    procs: std::collections::HashMap<u32, ProcCpu>,
    /// All CPUs' steal time (`/proc/stat`), in ticks.
    steal: u64,
    at: Instant,
}

/// The machine's steal time in ticks: CPU time the hypervisor gave to other guests while this
/// VM had work to run (0 on bare metal).
fn steal_ticks() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|stat| {
            let line = stat.lines().find(|l| l.starts_with("cpu "))?;
            line.split_whitespace().nth(8)?.parse().ok()
        })
        .unwrap_or(0)
}

impl CpuReading {
    pub fn take() -> CpuReading {
        let mut procs = std::collections::HashMap::new();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<u32>().ok())
                else {
                    continue;
                };
                let Some(f) = stat_fields(pid) else { continue };
                let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                procs.insert(
                    pid,
                    ProcCpu {
                        ppid: n(1) as u32,
                        total: n(11) + n(12) + n(13) + n(14),
                    },
                );
            }
        }
        CpuReading {
            procs,
            steal: steal_ticks(),
            at: Instant::now(),
        }
    }

    /// Whether `pid` is one of `roots` or descends from one (per this reading).
    fn descends(&self, pid: u32, roots: &[u32]) -> bool {
        let mut p = pid;
        for _ in 0..64 {
            if roots.contains(&p) {
                return true;
            }
            match self.procs.get(&p) {
                Some(info) if info.ppid > 1 => p = info.ppid,
                _ => return false,
            }
        }
        false
    }

    /// CPU used since `self` by user-space processes other than `roots` and their descendants
    /// (this benchmark, its servers and wrk; the PostgreSQL server), plus the VM's steal time,
    /// as a percentage of one core. Kernel threads are left out: they mostly work for the
    /// benchmark (loopback networking, the journal committing fsyncs).
    pub fn foreign_pct_until(&self, later: &CpuReading, roots: &[u32]) -> f64 {
        let kernel =
            |r: &CpuReading, pid: u32| pid == 2 || r.procs.get(&pid).is_some_and(|p| p.ppid == 2);
        let mut ticks: i64 = 0;
        for (pid, after) in &later.procs {
            if kernel(later, *pid) || later.descends(*pid, roots) || self.descends(*pid, roots) {
                continue;
            }
            let before = self.procs.get(pid).map(|p| p.total).unwrap_or(0);
            ticks += after.total as i64 - before as i64;
        }
        // Processes that ended: their whole time moved to their parent; take off what they
        // had used before this phase.
        for (pid, before) in &self.procs {
            if later.procs.contains_key(pid) || kernel(self, *pid) || self.descends(*pid, roots) {
                continue;
            }
            ticks -= before.total as i64;
        }
        ticks += later.steal.saturating_sub(self.steal) as i64;
        let wall = later.at.duration_since(self.at).as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        let secs = ticks.max(0) as f64 / clock_ticks_per_sec() as f64;
        (secs / wall * 100.0).round()
    }
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Resets the process's peak RSS (VmHWM) to its current RSS; false when the kernel refuses.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Peak resident memory (VmHWM) in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// Current resident memory (VmRSS) in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// Samples VmRSS every 10 ms until stopped; the largest sample (KiB).
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut max = 0;
            while !flag.load(Ordering::Relaxed) {
                max = max.max(rss_kib(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(10));
            }
            max
        });
        RssSampler { stop, handle }
    }

    pub fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or(0)
    }
}
