//! One module per command group; [`run`] dispatches and turns failed calls into
//! gateway-aware messages.

mod app_rules;
mod approvals;
mod apps;
mod audit;
pub(crate) mod auth;
mod builds;
mod deploy;
mod env;
mod exec;
mod logs;
mod mfa;
mod ps;
mod releases;
mod roles;
mod services;
mod sessions;
mod settings;
mod system;
mod tokens;
mod users;
mod wait;

use std::path::Path;

use clap::CommandFactory;

use crate::cli::{
    AppArg, AppRulesCommand, AppsCommand, BuildsCommand, Cli, Command, DeployApprovalCommand,
    PsCommand, ReleasesCommand, TokensCommand,
};
use crate::context::Ctx;
use crate::error::{CliError, CliResult};
use crate::explain::explain;

/// Runs the command line; returns the exit code.
pub async fn run(cli: Cli) -> CliResult<i32> {
    // A passed-through command's `--rack` chooses the credential `convox` runs with.
    let (rack, command) = match cli.command {
        Command::External(args) => {
            let (rack, args) = crate::passthrough::take_rack(cli.rack, args)?;
            (rack, Command::External(args))
        }
        other => (cli.rack, other),
    };
    let ctx = Ctx::new(cli.json, rack);
    dispatch(&ctx, command).await.map_err(|e| match e {
        CliError::Client(c) => explain(c, ctx.resolved()),
        other => other,
    })
}

/// Whether `command` prints JSON with `--json`: listings and records. Other commands print
/// what they did, or stream, and refuse the flag rather than leave a script parsing text it
/// asked to get as JSON.
fn prints_json(command: &Command) -> bool {
    match command {
        Command::Rack
        | Command::Racks
        | Command::Audit(_)
        | Command::Services(_)
        | Command::Instances
        | Command::Settings
        | Command::Scale(_) => true,
        Command::Apps(a) => matches!(a.command, None | Some(AppsCommand::Info { .. })),
        Command::Ps(a) => matches!(a.command, None | Some(PsCommand::Info { .. })),
        Command::Env(a) => a.command.is_none(),
        Command::Releases(a) => matches!(a.command, None | Some(ReleasesCommand::Info { .. })),
        Command::Builds(a) => matches!(a.command, None | Some(BuildsCommand::Info { .. })),
        Command::Tokens(a) => matches!(a.command, None | Some(TokensCommand::Create { .. })),
        Command::Users(a) => a.command.is_none(),
        Command::Sessions(a) => a.command.is_none(),
        Command::Roles(a) => a.command.is_none(),
        Command::AppRules(a) => matches!(a.command, None | Some(AppRulesCommand::Show { .. })),
        Command::DeployApproval(a) => matches!(
            a.command,
            DeployApprovalCommand::List { .. }
                | DeployApprovalCommand::Show { .. }
                | DeployApprovalCommand::Request { .. }
        ),
        _ => false,
    }
}

async fn dispatch(ctx: &Ctx, command: Command) -> CliResult<i32> {
    if ctx.json && !prints_json(&command) {
        return Err(CliError::Usage(match &command {
            Command::External(args) => format!(
                "--json before `{}` is this CLI's option, and that command is convox's: put \
                 it after the command to hand it to convox",
                args.first().map(String::as_str).unwrap_or_default()
            ),
            _ => "--json is for listings and records (apps, ps, env, releases, builds, their \
                  `info`, services, scale, instances, rack, racks, audit, settings, tokens and tokens create, users, sessions, roles, app-rules and app-rules show, deploy-approval list, show and request); this \
                  command prints what it does, or streams"
                .into(),
        }));
    }
    match command {
        Command::Login(args) => auth::login(ctx, args).await,
        Command::Logout(args) => auth::logout(ctx, args).await,
        Command::Rack => auth::rack(ctx).await,
        Command::Racks => auth::racks(ctx),
        Command::Switch { rack } => auth::switch(&rack),
        Command::EnvUrl => auth::env_url(ctx),
        Command::Completion { shell } => {
            let mut cmd = Cli::command();
            // Written whole, so that a reader that stops early (`| head`) is a closed pipe,
            // not a panic inside the generator.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "rack-gateway", &mut script);
            crate::output::write_stdout(&String::from_utf8_lossy(&script))?;
            Ok(0)
        }
        Command::Apps(args) => apps::run(ctx, args).await,
        Command::Ps(args) => ps::run(ctx, args).await,
        Command::Logs(args) => logs::run(ctx, args).await,
        Command::Env(args) => env::run(ctx, args).await,
        Command::Releases(args) => releases::run(ctx, args).await,
        Command::Builds(args) => builds::run(ctx, args).await,
        Command::Deploy(args) => deploy::run(ctx, args).await,
        Command::Restart(args) => services::restart(ctx, &args.app).await,
        Command::Run(args) => exec::run(ctx, args).await,
        Command::Exec(args) => exec::exec(ctx, args).await,
        Command::Scale(args) => services::scale(ctx, args).await,
        Command::Services(args) => services::list(ctx, &args.app).await,
        Command::Instances => system::instances(ctx).await,
        Command::Audit(args) => audit::run(ctx, args).await,
        Command::Tokens(args) => tokens::run(ctx, args).await,
        Command::Users(args) => users::run(ctx, args).await,
        Command::Sessions(args) => sessions::run(ctx, args).await,
        Command::Roles(args) => roles::run(ctx, args).await,
        Command::Settings => settings::run(ctx).await,
        Command::AppRules(args) => app_rules::run(ctx, args).await,
        Command::Mfa(args) => mfa::run(ctx, args).await,
        Command::DeployApproval(args) => approvals::run(ctx, args).await,
        Command::External(args) => crate::passthrough::run(ctx.target()?, &args),
    }
}

/// The app: `-a`, else `.convox/app`, else the current directory's name (as `convox` does).
pub fn app_name(arg: &AppArg) -> CliResult<String> {
    let name = if let Some(app) = arg.app.as_ref().filter(|a| !a.is_empty()) {
        app.clone()
    } else {
        let cwd = std::env::current_dir()
            .map_err(|e| CliError::io("reading the current directory", e))?;
        match std::fs::read_to_string(cwd.join(".convox").join("app")) {
            Ok(name) if !name.trim().is_empty() => name.trim().to_string(),
            _ => cwd
                .file_name()
                .and_then(|n| n.to_str())
                .map(|n| n.to_lowercase())
                .filter(|n| !n.is_empty() && Path::new(n) != Path::new("/"))
                .ok_or_else(|| CliError::Usage("no app given: use -a <app>".into()))?,
        }
    };
    check_name("app", &name)?;
    Ok(name)
}

/// Refuses a name that would not stay one path segment (see [`crate::cli::path_segment`]):
/// `.convox/app` comes from whatever repository is checked out.
pub fn check_name(what: &str, name: &str) -> CliResult<()> {
    crate::cli::path_segment(name).map(|_| ()).map_err(|_| {
        CliError::Usage(format!(
            "{:?} is not a valid {what} name",
            crate::output::printable(name)
        ))
    })
}

/// The commit checked out in `dir` (`git rev-parse HEAD`), when it is a git checkout and git
/// is installed.
pub(crate) fn git_head(dir: &Path) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let sha = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !sha.is_empty()).then_some(sha)
}
