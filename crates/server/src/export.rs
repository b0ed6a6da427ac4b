//! `audit export`: the events an auditor asks for (a period, a person, a permission, the
//! refusals…) as JSON lines or CSV, on stdout or into a new file. Read-only, like `audit
//! verify`: it works on an auditor's copy of the database, and never creates one.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use gateway::audit::export::{ExportFilter, ExportFormat, ExportWriter};
use gateway::audit::{ActorType, Decision, EventKind};
use gateway::config::StoreConfig;
use gateway::store::{Store, now_ms};

/// Events read from the database at a time.
const PAGE: i64 = 1_000;

/// `audit export` flags.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Events at or after this time: RFC 3339 (2026-11-01T09:30:00Z), a date (2026-11-01,
    /// midnight UTC), or a time ago (7d, 12h, 30m).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Events before this time (same forms as --since).
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// Events numbered at least N (the chain's `seq`).
    #[arg(long, value_name = "N")]
    pub from_seq: Option<i64>,
    /// Events numbered at most N.
    #[arg(long, value_name = "N")]
    pub to_seq: Option<i64>,
    /// Events whose action (permission) matches; `*` matches anything, e.g. 'convox:apps:*',
    /// '*:delete', 'gateway:tokens:*'. Repeat for several.
    #[arg(long = "action", value_name = "PATTERN")]
    pub actions: Vec<String>,
    /// Events of this person (their e-mail), theirs and their tokens'.
    #[arg(long, value_name = "EMAIL")]
    pub user: Option<String>,
    /// Events made with this API token (its name).
    #[arg(long, value_name = "NAME")]
    pub token: Option<String>,
    /// Events of this kind. Repeat for several.
    #[arg(long = "kind", value_enum)]
    pub kinds: Vec<KindArg>,
    /// Events with this RBAC decision (`deny`: every refusal). Repeat for several.
    #[arg(long = "decision", value_enum)]
    pub decisions: Vec<DecisionArg>,
    /// Events of this kind of actor. Repeat for several.
    #[arg(long = "actor", value_enum)]
    pub actors: Vec<ActorArg>,
    /// The events of one request (the X-Request-Id a caller quotes).
    #[arg(long, value_name = "ID")]
    pub request_id: Option<String>,
    /// jsonl (the lines stdout carries) or csv (for a spreadsheet).
    #[arg(long, value_enum, default_value_t = FormatArg::Jsonl)]
    pub format: FormatArg,
    /// Write into this new file (mode 0600; an existing file is never overwritten) instead of
    /// stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `--kind`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KindArg {
    /// A proxied request, before it is forwarded (or its refusal).
    Request,
    /// What became of a request.
    Outcome,
    /// A gateway action: sign-ins, token and user changes, …
    Gateway,
}

/// `--decision`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DecisionArg {
    /// Allowed.
    Allow,
    /// Refused.
    Deny,
    /// No decision (outcomes, gateway actions).
    None,
}

/// `--actor`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ActorArg {
    /// A signed-in person.
    User,
    /// An API token.
    Token,
    /// Nobody identified.
    Anonymous,
    /// An operator at the server's command line.
    Cli,
}

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// JSON lines.
    Jsonl,
    /// CSV with a header.
    Csv,
}

impl ExportArgs {
    /// The filter these flags describe, with times ago counted from `now_ms`.
    fn filter(&self, now_ms: i64) -> anyhow::Result<ExportFilter> {
        let since_ms = self
            .since
            .as_deref()
            .map(|w| parse_when(w, now_ms).context("--since"))
            .transpose()?;
        let until_ms = self
            .until
            .as_deref()
            .map(|w| parse_when(w, now_ms).context("--until"))
            .transpose()?;
        if let (Some(since), Some(until)) = (since_ms, until_ms)
            && since >= until
        {
            bail!("--since must be before --until");
        }
        if let (Some(from), Some(to)) = (self.from_seq, self.to_seq)
            && from > to
        {
            bail!("--from-seq must not be past --to-seq");
        }
        if let Some(bad) = self.actions.iter().find(|p| p.trim().is_empty()) {
            bail!("--action: an empty pattern ({bad:?}) matches no event");
        }
        Ok(ExportFilter {
            since_ms,
            until_ms,
            from_seq: self.from_seq,
            to_seq: self.to_seq,
            actions: self.actions.clone(),
            user: self.user.clone(),
            token: self.token.clone(),
            kinds: self
                .kinds
                .iter()
                .map(|k| match k {
                    KindArg::Request => EventKind::Request,
                    KindArg::Outcome => EventKind::Outcome,
                    KindArg::Gateway => EventKind::Gateway,
                })
                .collect(),
            decisions: self
                .decisions
                .iter()
                .map(|d| match d {
                    DecisionArg::Allow => Decision::Allow,
                    DecisionArg::Deny => Decision::Deny,
                    DecisionArg::None => Decision::None,
                })
                .collect(),
            actor_types: self
                .actors
                .iter()
                .map(|a| match a {
                    ActorArg::User => ActorType::User,
                    ActorArg::Token => ActorType::Token,
                    ActorArg::Anonymous => ActorType::Anonymous,
                    ActorArg::Cli => ActorType::Cli,
                })
                .collect(),
            request_id: self.request_id.clone(),
        })
    }
}

/// A time as unix ms ([`gateway::audit::export::parse_time`]).
fn parse_when(text: &str, now_ms: i64) -> anyhow::Result<i64> {
    gateway::audit::export::parse_time(text, now_ms).map_err(anyhow::Error::msg)
}

/// Runs `audit export`.
pub async fn run(args: ExportArgs) -> anyhow::Result<()> {
    let filter = args.filter(now_ms())?;
    let format = match args.format {
        FormatArg::Jsonl => ExportFormat::JsonLines,
        FormatArg::Csv => ExportFormat::Csv,
    };
    let config = StoreConfig::from_env().context("configuration")?;
    // Opened before the output file is made: a wrong DATABASE_URL leaves no empty export.
    let store = Store::open_read_only(&config.database_url)
        .await
        .context("cannot open the database (DATABASE_URL)")?;
    let out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(new_file(path)?),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let exported = match ExportWriter::new(out, format) {
        Ok(writer) => export(&store, &filter, writer).await,
        Err(e) => Err(ExportError::Write(e)),
    };
    store.close().await;
    let counts = match exported {
        Ok(counts) => counts,
        Err(ExportError::Write(e)) if args.output.is_none() => return Err(stdout_error(e)),
        Err(ExportError::Write(e)) => {
            let path = args.output.as_deref().unwrap_or(std::path::Path::new(""));
            return Err(anyhow::Error::new(e)
                .context(format!("cannot write {} (left incomplete)", path.display())));
        }
        Err(ExportError::Read(e)) => {
            return Err(anyhow::Error::new(e).context("cannot read the audit events"));
        }
    };
    let range = match (counts.first, counts.last) {
        (Some(first), Some(last)) => format!(", #{first}–#{last}"),
        _ => String::new(),
    };
    let into = args
        .output
        .as_ref()
        .map(|p| format!(" into {}", p.display()))
        .unwrap_or_default();
    if counts.kept == 0 {
        eprintln!(
            "exported 0 of the {} events read{into}: none matched",
            counts.read
        );
    } else {
        eprintln!(
            "exported {} of the {} events read{range}{into}; each carries its chain hash, \
             which `rack-gateway-server audit verify` checks against the database",
            counts.kept, counts.read,
        );
    }
    Ok(())
}

/// What an export went through.
#[derive(Debug, Default)]
struct Counts {
    read: u64,
    kept: u64,
    first: Option<i64>,
    last: Option<i64>,
}

#[derive(Debug)]
enum ExportError {
    Read(gateway::store::StoreError),
    Write(std::io::Error),
}

/// Reads the chain in pages, in order, and writes the events `filter` keeps.
async fn export<W: Write>(
    store: &Store,
    filter: &ExportFilter,
    mut writer: ExportWriter<W>,
) -> Result<Counts, ExportError> {
    let mut counts = Counts::default();
    let mut after = filter.from_seq.map_or(0, |from| from.saturating_sub(1));
    'pages: loop {
        let rows = store
            .audit_rows(after, PAGE)
            .await
            .map_err(ExportError::Read)?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            counts.read += 1;
            after = row.seq;
            if filter.keeps(row) {
                writer.write(row).map_err(ExportError::Write)?;
                counts.kept += 1;
                counts.first.get_or_insert(row.seq);
                counts.last = Some(row.seq);
            }
            if filter.done_after(row.seq) {
                break 'pages;
            }
        }
    }
    writer.finish().map_err(ExportError::Write)?;
    Ok(counts)
}

/// A new file at `path`, readable by its owner only (events name people and addresses).
fn new_file(path: &std::path::Path) -> anyhow::Result<std::io::BufWriter<std::fs::File>> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(file) => Ok(std::io::BufWriter::new(file)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
            "{} exists: an export never overwrites a file (remove it or choose another name)",
            path.display()
        ),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot create {}", path.display()))),
    }
}

/// A failed write to stdout: a reader that went away ends the command quietly (status 141).
fn stdout_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        crate::output::StdoutClosed.into()
    } else {
        anyhow::Error::new(e).context("cannot write to stdout")
    }
}
