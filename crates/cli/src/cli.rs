//! The command line: every command, its flags and an example for each.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use clap_complete::Shell;

/// Sign in to rack-gateway and run Convox commands through it.
#[derive(Debug, Parser)]
#[command(
    name = "rack-gateway",
    version,
    allow_external_subcommands = true,
    subcommand_required = true,
    arg_required_else_help = true,
    after_help = "Examples:
  rack-gateway login staging https://gateway.example.com   # sign in through the browser
  rack-gateway apps                                        # list apps on the current rack
  rack-gateway logs -a web --follow                        # stream logs
  rack-gateway --rack production ps -a web                 # another rack, once

Rack selection: --rack, then $RACK_GATEWAY_RACK, then the current rack (`rack-gateway switch`).
Any other command runs the stock `convox` CLI with RACK_URL pointed at the gateway:
  rack-gateway certs -a web"
)]
pub struct Cli {
    /// Rack to use (default: $RACK_GATEWAY_RACK, then the current rack).
    #[arg(long, global = true, value_name = "RACK")]
    pub rack: Option<String>,
    /// Print JSON instead of tables (listings and records: apps, ps, env, releases, builds,
    /// their info, services, scale, instances, rack, racks; other commands refuse it).
    #[arg(long, global = true)]
    pub json: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sign in to a gateway and remember it as a rack (browser sign-in, or an API token).
    #[command(after_help = "Examples:
  rack-gateway login staging https://gateway.example.com
  rack-gateway login staging https://gateway.example.com --no-browser
  rack-gateway login ci https://gateway.example.com --token rgw_…
  echo \"$TOKEN\" | rack-gateway login ci https://gateway.example.com --token -")]
    Login(LoginArgs),
    /// Sign out of a rack (ends a browser session on the gateway) and forget it.
    #[command(after_help = "Examples:
  rack-gateway logout
  rack-gateway logout staging")]
    Logout(LogoutArgs),
    /// The current rack: gateway, who you are, session expiry, and the rack itself.
    #[command(after_help = "Examples:
  rack-gateway rack
  rack-gateway --rack production rack --json")]
    Rack,
    /// List the configured racks.
    #[command(after_help = "Example:
  rack-gateway racks")]
    Racks,
    /// Make a rack the current one.
    #[command(after_help = "Example:
  rack-gateway switch production")]
    Switch {
        /// Rack name (as given to `login`).
        rack: String,
    },
    /// Print `export RACK_URL=…` for the stock convox CLI (contains your credential).
    #[command(after_help = "Example:
  eval \"$(rack-gateway env-url)\" && convox apps")]
    EnvUrl,
    /// Print a shell completion script.
    #[command(after_help = "Examples:
  rack-gateway completion bash > /etc/bash_completion.d/rack-gateway
  rack-gateway completion zsh > \"${fpath[1]}/_rack-gateway\"
  rack-gateway completion fish > ~/.config/fish/completions/rack-gateway.fish")]
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// List apps; create, inspect and delete them.
    #[command(after_help = "Examples:
  rack-gateway apps
  rack-gateway apps --json
  rack-gateway apps info web
  rack-gateway apps create myapp
  rack-gateway apps delete myapp")]
    Apps(AppsArgs),
    /// List an app's processes; stop one.
    #[command(after_help = "Examples:
  rack-gateway ps -a web
  rack-gateway ps -a web --service worker --json
  rack-gateway ps info web-7d9c5-abcde -a web
  rack-gateway ps stop web-7d9c5-abcde -a web")]
    Ps(PsArgs),
    /// Show an app's logs (all of it, one service, or one process).
    #[command(after_help = "Examples:
  rack-gateway logs -a web
  rack-gateway logs -a web --follow --since 10m
  rack-gateway logs -a web --service worker --filter error")]
    Logs(LogsArgs),
    /// Show and change an app's environment (changes make a new release).
    #[command(after_help = "Examples:
  rack-gateway env -a web
  rack-gateway env get RAILS_ENV -a web
  rack-gateway env set FEATURE=on OTHER=1 -a web --promote
  rack-gateway env unset FEATURE -a web")]
    Env(EnvArgs),
    /// List, inspect, promote and roll back releases.
    #[command(after_help = "Examples:
  rack-gateway releases -a web
  rack-gateway releases info RABCDEFGHIJ -a web
  rack-gateway releases promote RABCDEFGHIJ -a web --wait
  rack-gateway releases rollback RABCDEFGHIJ -a web")]
    Releases(ReleasesArgs),
    /// List and inspect builds; show a build's output.
    #[command(after_help = "Examples:
  rack-gateway builds -a web
  rack-gateway builds info BABCDEFGHIJ -a web
  rack-gateway builds logs BABCDEFGHIJ -a web")]
    Builds(BuildsArgs),
    /// Package a directory, build it on the rack, and promote the release.
    #[command(after_help = "Examples:
  rack-gateway deploy -a web
  rack-gateway deploy ./service -a web --wait
  rack-gateway deploy -a web --no-promote
  rack-gateway deploy -a web --dry-run          # list what would be uploaded")]
    Deploy(DeployArgs),
    /// Restart every service of an app.
    #[command(after_help = "Example:
  rack-gateway restart -a web")]
    Restart(AppOnly),
    /// Run a command in a new process of a service (interactive; exit code passed through).
    #[command(after_help = "Examples:
  rack-gateway run web bin/rails console -a web
  rack-gateway run web 'bin/migrate --check' -a web ; echo $?
  rack-gateway run worker bin/job --detach -a web")]
    Run(RunArgs),
    /// Run a command in a running process (interactive; exit code passed through).
    #[command(after_help = "Examples:
  rack-gateway exec web-7d9c5-abcde sh -a web
  rack-gateway exec web-7d9c5-abcde \"sh -c 'exit 3'\" -a web ; echo $?   # 3
  rack-gateway exec web-7d9c5-abcde -a web -- ls -la")]
    Exec(ExecArgs),
    /// Show service counts and sizes, or scale one service.
    #[command(after_help = "Examples:
  rack-gateway scale -a web
  rack-gateway scale web --count 3 -a web
  rack-gateway scale worker --cpu 512 --memory 1024 -a web")]
    Scale(ScaleArgs),
    /// List an app's services.
    #[command(after_help = "Example:
  rack-gateway services -a web")]
    Services(AppOnly),
    /// List the rack's instances.
    #[command(after_help = "Example:
  rack-gateway instances --json")]
    Instances,
    /// The gateway's audit trail, newest first (admins, or a token given gateway:audit:read).
    #[command(after_help = "Examples:
  rack-gateway audit
  rack-gateway audit --decision deny --since 1d
  rack-gateway audit --user ann@example.com --action 'convox:apps:*' --limit 200
  rack-gateway audit --request-id 01939c1e-… --json
  rack-gateway audit --since 2026-11-01 --until 2026-12-01 --all --json > november.json

Reading the trail is itself audited (gateway:audit:read). For a whole trail as JSON lines or
CSV, run `rack-gateway-server audit export` where the gateway runs.")]
    Audit(AuditArgs),
    /// List the gateway's API tokens, create one, or revoke one (admins).
    #[command(after_help = "Examples:
  rack-gateway tokens
  rack-gateway tokens --json
  rack-gateway tokens create --name circleci --role cicd --expires-in 90d
  rack-gateway tokens revoke circleci-deploy
  rack-gateway tokens revoke 12")]
    Tokens(TokensArgs),
    /// People and their roles (admins): list, add, change a role, lock, unlock.
    #[command(after_help = "Examples:
  rack-gateway users
  rack-gateway users add ann@example.com --role deployer --name 'Ann Lee'
  rack-gateway users set-role ann@example.com ops
  rack-gateway users lock ann@example.com      # ends her sessions, stops her tokens
  rack-gateway users unlock ann@example.com
  rack-gateway users reset-mfa ann@example.com # a lost phone
  rack-gateway users forget-browsers ann@example.com # a lost laptop")]
    Users(UsersArgs),
    /// Where you are signed in: your sessions (admins: anyone's), and ending them.
    #[command(after_help = "Examples:
  rack-gateway sessions
  rack-gateway sessions revoke 42
  rack-gateway sessions revoke-all                       # this one too
  rack-gateway sessions --email ann@example.com          # admins
  rack-gateway sessions revoke-all --email ann@example.com")]
    Sessions(SessionsArgs),
    /// What the gateway runs with, defaults included; secrets only as set or not (admins).
    #[command(after_help = "Examples:
  rack-gateway settings
  rack-gateway settings --json")]
    Settings,
    /// Roles and what they grant; define, change and delete custom roles (admins).
    #[command(after_help = "Examples:
  rack-gateway roles
  rack-gateway roles create release-managers \\
    --permissions convox:apps:list,convox:releases:promote,gateway:deploy-approvals:approve \\
    --description 'approve and promote releases'
  rack-gateway roles update release-managers --permissions 'convox:apps:list,convox:releases:*'
  rack-gateway roles delete release-managers
  rack-gateway users set-role ann@example.com release-managers")]
    Roles(RolesArgs),
    /// Per-app rules: secret and protected env vars, the commands and images an approved
    /// deploy may run (setting them is for admins).
    #[command(after_help = "Examples:
  rack-gateway app-rules                         # every app that has rules
  rack-gateway app-rules show -a web
  rack-gateway app-rules set -a web --secret-env 'STRIPE_KEY,AWS_*' --protected-env DATABASE_URL
  rack-gateway app-rules set -a web --approved-command 'bin/rails db:migrate' \\
    --service-image 'web=ghcr.io/acme/web:{commit}'
  rack-gateway app-rules set -a web --secret-env ''   # empty one list, keep the others
  rack-gateway app-rules clear -a web")]
    AppRules(AppRulesArgs),
    /// Two-step sign-in: give a code from your authenticator app, for the changes that need a
    /// recent one (people, roles, API tokens).
    #[command(after_help = "Examples:
  rack-gateway mfa verify            # asks for the code
  rack-gateway mfa verify 123456")]
    Mfa(MfaArgs),
    /// Deploy approvals: CI asks for one commit of one app, a person approves it, and that
    /// deploy (upload, build, one promote) goes through for the credential that asked.
    #[command(
        name = "deploy-approval",
        visible_alias = "deploy-approvals",
        after_help = "Examples:
  # in CI, before `convox deploy` (or `rack-gateway deploy`):
  rack-gateway deploy-approval request --app web --commit \"$CIRCLE_SHA1\" \\
      --message \"$(git log -1 --pretty=%s)\" --ci-url \"$CIRCLE_BUILD_URL\" --wait
  # people:
  rack-gateway deploy-approval list --status pending
  rack-gateway deploy-approval show 12
  rack-gateway deploy-approval approve 12 --note 'release notes checked'
  rack-gateway deploy-approval reject 12 --note 'not on a Friday'"
    )]
    DeployApproval(DeployApprovalArgs),
    /// Anything else runs the stock `convox` CLI against the gateway.
    #[command(external_subcommand)]
    External(Vec<String>),
}

/// `deploy-approval` and its subcommands.
#[derive(Debug, Args)]
pub struct DeployApprovalArgs {
    /// The subcommand.
    #[command(subcommand)]
    pub command: DeployApprovalCommand,
}

/// `deploy-approval …`.
#[derive(Debug, Subcommand)]
pub enum DeployApprovalCommand {
    /// Ask for approval of a deploy of one commit of an app (prints the request's number);
    /// asking again for the same one answers with the same request.
    #[command(after_help = "Example:
  rack-gateway deploy-approval request --app web --commit \"$GITHUB_SHA\" --wait --timeout 1h")]
    Request {
        /// The app.
        #[arg(short, long, value_parser = path_segment)]
        app: String,
        /// The full commit id (default: `git rev-parse HEAD` here).
        #[arg(long, value_name = "SHA")]
        commit: Option<String>,
        /// What the deploy is (shown to the people who decide).
        #[arg(short, long)]
        message: Option<String>,
        /// The pipeline's page.
        #[arg(long, value_name = "URL")]
        ci_url: Option<String>,
        /// The branch.
        #[arg(long)]
        branch: Option<String>,
        /// Wait for the decision: exit 0 when approved, 1 when rejected or expired.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long (90s, 30m, 2h; default: until it expires).
        #[arg(long, value_name = "DURATION", requires = "wait", value_parser = parse_duration)]
        timeout: Option<Duration>,
    },
    /// List requests, newest first (everyone's for those who may see them, else your own).
    #[command(after_help = "Examples:
  rack-gateway deploy-approval list
  rack-gateway deploy-approval list --status pending --json")]
    List {
        /// Only these: pending, approved, rejected, deployed or expired.
        #[arg(long)]
        status: Option<String>,
    },
    /// One request in full.
    #[command(after_help = "Example:
  rack-gateway deploy-approval show 12")]
    Show {
        /// Its number.
        id: i64,
    },
    /// Approve a pending request (a signed-in person who may approve; not your own). With an
    /// authenticator app, the gateway wants a code with the approval: asked for when not given.
    #[command(after_help = "Example:
  rack-gateway deploy-approval approve 12 --note 'release notes checked'
  rack-gateway deploy-approval approve 12 --code 123456")]
    Approve {
        /// Its number.
        id: i64,
        /// A note for the trail and the asker.
        #[arg(long)]
        note: Option<String>,
        /// A code from your authenticator app (asked for on the terminal when needed).
        #[arg(long)]
        code: Option<String>,
    },
    /// Reject a pending request.
    #[command(after_help = "Example:
  rack-gateway deploy-approval reject 12 --note 'not on a Friday'")]
    Reject {
        /// Its number.
        id: i64,
        /// Why (shown to the asker).
        #[arg(long)]
        note: Option<String>,
    },
}

/// `mfa` and its subcommands.
#[derive(Debug, Args)]
pub struct MfaArgs {
    /// The subcommand.
    #[command(subcommand)]
    pub command: MfaCommand,
}

/// `mfa …`.
#[derive(Debug, Subcommand)]
pub enum MfaCommand {
    /// Give this session a code from your authenticator app (or a backup code): changes to
    /// people, roles and API tokens are then allowed for the gateway's window (10 minutes by
    /// default).
    #[command(after_help = "Examples:
  rack-gateway mfa verify            # asks for the code
  rack-gateway mfa verify 123456
  rack-gateway mfa verify abcde-23456  # a backup code
  rack-gateway mfa verify --key      # a security key, in your browser

At the prompt, Enter alone (or `key`) uses a security key in your browser instead of a code;
so does the prompt of every command that asks for a code.")]
    Verify {
        /// The code; asked for when left out (read from stdin when it is not a terminal).
        code: Option<String>,
        /// Confirm with a security key or passkey instead: the CLI opens (or prints, with
        /// RACK_GATEWAY_NO_BROWSER=1) a page where you use it.
        #[arg(long)]
        key: bool,
    },
}

/// `users` and its subcommands.
#[derive(Debug, Args)]
pub struct UsersArgs {
    /// A subcommand (default: list).
    #[command(subcommand)]
    pub command: Option<UsersCommand>,
}

/// `sessions [--email E]` and its subcommands.
#[derive(Debug, Args)]
pub struct SessionsArgs {
    /// Someone else's sessions (admins: `gateway:sessions:manage`).
    #[arg(long, global = true)]
    pub email: Option<String>,
    /// A subcommand (default: list).
    #[command(subcommand)]
    pub command: Option<SessionsCommand>,
}

/// `sessions …`.
#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// End one session (its next request is refused, on every gateway instance).
    #[command(after_help = "Example:
  rack-gateway sessions revoke 42")]
    Revoke {
        /// The session's id (`rack-gateway sessions` lists them).
        id: i64,
    },
    /// End every session: yours (this one too), or someone's with `--email`.
    #[command(after_help = "Examples:
  rack-gateway sessions revoke-all
  rack-gateway sessions revoke-all --email ann@example.com")]
    RevokeAll,
}

/// `users …`.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add someone, who can then sign in (from an allowed domain).
    #[command(after_help = "Example:
  rack-gateway users add ann@example.com --role deployer --name 'Ann Lee'")]
    Add {
        /// Their e-mail.
        email: String,
        /// Their role: viewer, ops, deployer, admin, cicd, or a custom role.
        #[arg(long)]
        role: String,
        /// Their name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Change someone's role (not your own).
    #[command(after_help = "Example:
  rack-gateway users set-role ann@example.com ops")]
    SetRole {
        /// Their e-mail.
        email: String,
        /// The new role.
        role: String,
    },
    /// Lock someone out: their sessions end and their tokens stop, at once (not yourself).
    #[command(after_help = "Example:
  rack-gateway users lock ann@example.com")]
    Lock {
        /// Their e-mail.
        email: String,
    },
    /// Let someone in again.
    #[command(after_help = "Example:
  rack-gateway users unlock ann@example.com")]
    Unlock {
        /// Their e-mail.
        email: String,
    },
    /// Remove someone's authenticator app and backup codes (a lost phone): their next sign-in
    /// asks only the identity provider, and they can set up a new app (not your own).
    #[command(after_help = "Example:
  rack-gateway users reset-mfa ann@example.com")]
    ResetMfa {
        /// Their e-mail.
        email: String,
    },
    /// Forget every browser someone trusted at a sign-in (a lost laptop): their next sign-in
    /// asks for their code again. Their sessions stay (`sessions revoke-all --email` ends them).
    #[command(after_help = "Example:
  rack-gateway users forget-browsers ann@example.com")]
    ForgetBrowsers {
        /// Their e-mail.
        email: String,
    },
}

/// `roles` and its subcommands.
#[derive(Debug, Args)]
pub struct RolesArgs {
    /// A subcommand (default: list every role and what it grants).
    #[command(subcommand)]
    pub command: Option<RolesCommand>,
}

/// `roles …`.
#[derive(Debug, Subcommand)]
pub enum RolesCommand {
    /// Define a custom role: a name and the permissions it grants (never more than you hold).
    #[command(after_help = "Example:
  rack-gateway roles create log-readers --permissions convox:apps:list,convox:logs:read")]
    Create {
        /// Its name: 2–40 lowercase letters, digits and dashes, not a built-in role's.
        name: String,
        /// The permission patterns it grants, comma-separated
        /// (`convox:<resource>:<action>`, `gateway:<resource>:<action>`, `*` for any part).
        #[arg(long, value_delimiter = ',', required = true)]
        permissions: Vec<String>,
        /// What it is for.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Replace a custom role's permissions; applies on the next request of everyone who holds
    /// it.
    #[command(after_help = "Example:
  rack-gateway roles update log-readers --permissions convox:apps:list,convox:logs:read,convox:builds:logs")]
    Update {
        /// The role.
        name: String,
        /// The whole new list, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        permissions: Vec<String>,
        /// A new description (kept when left out).
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete a custom role nobody holds.
    #[command(after_help = "Example:
  rack-gateway roles delete log-readers")]
    Delete {
        /// The role.
        name: String,
    },
}

/// `app-rules` and its subcommands.
#[derive(Debug, Args)]
pub struct AppRulesArgs {
    /// A subcommand (default: list every app that has rules).
    #[command(subcommand)]
    pub command: Option<AppRulesCommand>,
}

/// `app-rules …`.
#[derive(Debug, Subcommand)]
pub enum AppRulesCommand {
    /// Show one app's rules.
    #[command(after_help = "Example:
  rack-gateway app-rules show -a web")]
    Show {
        /// The app.
        #[command(flatten)]
        app: AppArg,
    },
    /// Set an app's rules: each list given replaces that list (give '' to empty it), the
    /// others are kept. Needs a recent code (`rack-gateway mfa verify`).
    #[command(after_help = "Examples:
  rack-gateway app-rules set -a web --secret-env 'STRIPE_KEY,AWS_*' --protected-env DATABASE_URL
  rack-gateway app-rules set -a web --approved-command 'bin/rails db:migrate'
  rack-gateway app-rules set -a web --service-image 'web=ghcr.io/acme/web:{commit}'")]
    Set {
        /// The app.
        #[command(flatten)]
        app: AppArg,
        /// Env var names whose values only admins see (comma-separated; `*` for any run of
        /// characters, as in `AWS_*`).
        #[arg(long, value_delimiter = ',', value_name = "NAMES")]
        secret_env: Option<Vec<String>>,
        /// Env var names only admins may set, change or unset (comma-separated patterns).
        #[arg(long, value_delimiter = ',', value_name = "NAMES")]
        protected_env: Option<Vec<String>>,
        /// A command an approved deploy may run on the app, exactly as given to `convox run`
        /// (repeat for more).
        #[arg(long = "approved-command", value_name = "COMMAND")]
        approved_commands: Option<Vec<String>>,
        /// SERVICE=PATTERN: the image a service must run in a release promoted through an
        /// approved deploy; `{commit}` is the approved commit, `*` any run of characters,
        /// SERVICE `*` every service (repeat for more; '' empties the list).
        #[arg(long = "service-image", value_name = "SERVICE=PATTERN")]
        service_images: Option<Vec<String>>,
    },
    /// Remove all of an app's rules. Needs a recent code.
    #[command(after_help = "Example:
  rack-gateway app-rules clear -a web")]
    Clear {
        /// The app.
        #[command(flatten)]
        app: AppArg,
    },
}

/// `tokens` and its subcommands.
#[derive(Debug, Args)]
pub struct TokensArgs {
    /// A subcommand (default: list).
    #[command(subcommand)]
    pub command: Option<TokensCommand>,
}

/// `tokens …`.
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token; its secret is printed once, alone on the last line. Nobody creates one
    /// holding more than they hold; a person with an authenticator app gives a code with it
    /// (asked for when not given).
    #[command(after_help = "Examples:
  rack-gateway tokens create --name circleci --role cicd --expires-in 90d
  rack-gateway tokens create --name reader --permissions convox:apps:list,convox:logs:read
  rack-gateway tokens create --name ci --role cicd --owner ann@example.com --code 123456")]
    Create {
        /// A name to recognise it by, e.g. `circleci-deploy`.
        #[arg(long)]
        name: String,
        /// A role: viewer, ops, deployer, admin, cicd, or a custom role.
        #[arg(
            long,
            conflicts_with = "permissions",
            required_unless_present = "permissions"
        )]
        role: Option<String>,
        /// Explicit permissions instead of a role, comma-separated.
        #[arg(long, value_delimiter = ',')]
        permissions: Option<Vec<String>>,
        /// Expire after 90m, 12h, 30d, 52w (default: never; a token creating one passes on
        /// its own expiry).
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
        /// The user it acts for (default: you); locking them stops it.
        #[arg(long, value_name = "EMAIL")]
        owner: Option<String>,
        /// A code from your authenticator app (asked for on the terminal when needed).
        #[arg(long)]
        code: Option<String>,
    },
    /// Revoke a token: refused from its next request on, on every instance.
    #[command(after_help = "Example:
  rack-gateway tokens revoke circleci-deploy")]
    Revoke {
        /// Its id, or the name of the one usable token of that name.
        token: String,
    },
}

/// `audit` flags: the filters go to the gateway as they are.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Events at or after this time: RFC 3339, a date (UTC), or a time ago (7d, 12h, 30m).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Events before this time (same forms).
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// Actions (permissions) matching; `*` matches anything ('convox:apps:*'). Repeatable.
    #[arg(long = "action", value_name = "PATTERN")]
    pub actions: Vec<String>,
    /// One person's events (their e-mail): theirs and their tokens'.
    #[arg(long, value_name = "EMAIL")]
    pub user: Option<String>,
    /// One API token's events (its name).
    #[arg(long, value_name = "NAME")]
    pub token: Option<String>,
    /// request, outcome or gateway. Repeatable.
    #[arg(long = "kind", value_name = "KIND", value_parser = ["request", "outcome", "gateway"])]
    pub kinds: Vec<String>,
    /// allow, deny (every refusal) or none. Repeatable.
    #[arg(long = "decision", value_name = "DECISION", value_parser = ["allow", "deny", "none"])]
    pub decisions: Vec<String>,
    /// The events of one request (its X-Request-Id).
    #[arg(long, value_name = "ID")]
    pub request_id: Option<String>,
    /// How many events (1–1000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub limit: u16,
    /// Only events numbered below N (to page back: the number the last page suggests).
    #[arg(long, value_name = "N")]
    pub before: Option<i64>,
    /// Every matching event (up to 100 000), page after page.
    #[arg(long, conflicts_with = "limit")]
    pub all: bool,
}

impl AuditArgs {
    /// The filters as query pairs.
    pub fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        let mut one = |name: &'static str, value: &Option<String>| {
            if let Some(v) = value {
                query.push((name, v.clone()));
            }
        };
        one("since", &self.since);
        one("until", &self.until);
        one("user", &self.user);
        one("token", &self.token);
        one("request_id", &self.request_id);
        for (name, values) in [
            ("action", &self.actions),
            ("kind", &self.kinds),
            ("decision", &self.decisions),
        ] {
            query.extend(values.iter().map(|v| (name, v.clone())));
        }
        query
    }
}

/// `-a/--app`, shared by the app-scoped commands and their subcommands.
#[derive(Debug, Clone, Args)]
pub struct AppArg {
    /// App name (default: the name in .convox/app, else the current directory's name).
    #[arg(short, long, global = true, value_name = "APP")]
    pub app: Option<String>,
}

/// Commands that only need an app.
#[derive(Debug, Args)]
pub struct AppOnly {
    /// The app.
    #[command(flatten)]
    pub app: AppArg,
}

/// `login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// A name for the rack (your choice: `staging`, `production`…).
    pub rack: String,
    /// The gateway's URL (`https://gateway.example.com`).
    pub url: String,
    /// Use this API token instead of signing in through the browser (`-` reads it from stdin).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Print the sign-in URL instead of opening a browser.
    #[arg(long)]
    pub no_browser: bool,
    /// Allow a plain `http://` gateway URL on a host other than this machine (credentials
    /// then cross the network readable by anyone on the way).
    #[arg(long)]
    pub insecure_http: bool,
}

/// `logout`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The rack (default: the selected rack).
    pub rack: Option<String>,
}

/// `apps`.
#[derive(Debug, Args)]
pub struct AppsArgs {
    /// The app.
    #[command(flatten)]
    pub app: AppArg,
    /// A subcommand (default: list).
    #[command(subcommand)]
    pub command: Option<AppsCommand>,
}

/// `apps …`.
#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    /// Show an app.
    #[command(after_help = "Example:
  rack-gateway apps info web")]
    Info {
        /// App name (default: -a, .convox/app, the directory's name).
        #[arg(value_parser = path_segment)]
        name: Option<String>,
    },
    /// Create an app.
    #[command(after_help = "Example:
  rack-gateway apps create myapp")]
    Create {
        /// App name.
        #[arg(value_parser = path_segment)]
        name: String,
        /// App generation.
        #[arg(short, long)]
        generation: Option<String>,
    },
    /// Delete an app.
    #[command(after_help = "Example:
  rack-gateway apps delete myapp")]
    Delete {
        /// App name.
        #[arg(value_parser = path_segment)]
        name: String,
    },
}

/// `ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// The app.
    #[command(flatten)]
    pub app: AppArg,
    /// Only processes of this service.
    #[arg(short, long)]
    pub service: Option<String>,
    /// Only processes running this release.
    #[arg(long)]
    pub release: Option<String>,
    /// A subcommand (default: list).
    #[command(subcommand)]
    pub command: Option<PsCommand>,
}

/// `ps …`.
#[derive(Debug, Subcommand)]
pub enum PsCommand {
    /// Show a process.
    #[command(after_help = "Example:
  rack-gateway ps info web-7d9c5-abcde -a web")]
    Info {
        /// Process id.
        #[arg(value_parser = path_segment)]
        pid: String,
    },
    /// Stop a process (a service's process is replaced).
    #[command(after_help = "Example:
  rack-gateway ps stop web-7d9c5-abcde -a web")]
    Stop {
        /// Process id.
        #[arg(value_parser = path_segment)]
        pid: String,
    },
}

/// `logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The app.
    #[command(flatten)]
    pub app: AppArg,
    /// Keep streaming new lines until Ctrl-C: the default, as with `convox logs` (accepted
    /// for scripts that say so).
    #[arg(short, long, conflicts_with = "no_follow")]
    pub follow: bool,
    /// Print the recent lines and stop, rather than following.
    #[arg(long)]
    pub no_follow: bool,
    /// Only lines newer than this (`30s`, `10m`, `2h`; the rack's default is 2m).
    #[arg(long, value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// Only this service's lines.
    #[arg(value_parser = path_segment, short, long, conflicts_with = "process")]
    pub service: Option<String>,
    /// Only this process's lines.
    #[arg(value_parser = path_segment, short, long)]
    pub process: Option<String>,
    /// Only lines containing this text.
    #[arg(long)]
    pub filter: Option<String>,
    /// Only the last N lines of history.
    #[arg(long)]
    pub tail: Option<u32>,
    /// Leave out each line's time and stream.
    #[arg(long)]
    pub no_prefix: bool,
}

/// `env`.
#[derive(Debug, Args)]
pub struct EnvArgs {
    /// The app.
    #[command(flatten)]
    pub app: AppArg,
    /// Read (and base changes on) this release instead of the newest one (as `convox env`).
    #[arg(value_parser = path_segment, long, global = true)]
    pub release: Option<String>,
    /// A subcommand (default: list).
    #[command(subcommand)]
    pub command: Option<EnvCommand>,
}

/// `env …`.
#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Print one variable's value.
    #[command(after_help = "Example:
  rack-gateway env get RAILS_ENV -a web")]
    Get {
        /// Variable name.
        key: String,
    },
    /// Set variables (a new release; `--promote` to roll it out).
    #[command(after_help = "Examples:
  rack-gateway env set FEATURE=on -a web
  rack-gateway env set A=1 B=2 -a web --promote
  cat .env | rack-gateway env set --replace -a web")]
    Set {
        /// `KEY=value` pairs (read from stdin when none are given and stdin is not a terminal).
        pairs: Vec<String>,
        /// Promote the new release.
        #[arg(short, long)]
        promote: bool,
        /// Replace the whole environment with the given variables.
        #[arg(long)]
        replace: bool,
    },
    /// Remove variables (a new release; `--promote` to roll it out).
    #[command(after_help = "Example:
  rack-gateway env unset FEATURE OTHER -a web --promote")]
    Unset {
        /// Variable names.
        #[arg(required = true)]
        keys: Vec<String>,
        /// Promote the new release.
        #[arg(short, long)]
        promote: bool,
    },
}

/// `releases`.
#[derive(Debug, Args)]
pub struct ReleasesArgs {
    /// The app.
    #[command(flatten)]
    pub app: AppArg,
    /// How many releases to list (the rack's default is 10).
    #[arg(short, long)]
    pub limit: Option<u32>,
    /// A subcommand (default: list).
    #[command(subcommand)]
    pub command: Option<ReleasesCommand>,
}

/// `releases …`.
#[derive(Debug, Subcommand)]
pub enum ReleasesCommand {
    /// Show a release (its environment included).
    #[command(after_help = "Example:
  rack-gateway releases info RABCDEFGHIJ -a web")]
    Info {
        /// Release id.
        #[arg(value_parser = path_segment)]
        id: String,
    },
    /// Promote a release (default: the newest).
    #[command(after_help = "Examples:
  rack-gateway releases promote -a web
  rack-gateway releases promote RABCDEFGHIJ -a web --wait")]
    Promote {
        /// Release id.
        #[arg(value_parser = path_segment)]
        id: Option<String>,
        /// Promote even if the app is updating.
        #[arg(long)]
        force: bool,
        /// Wait until the app runs the release.
        #[arg(long)]
        wait: bool,
    },
    /// Roll back: a new release with an older one's build and environment, promoted.
    #[command(after_help = "Example:
  rack-gateway releases rollback RABCDEFGHIJ -a web")]
    Rollback {
        /// The release to go back to.
        #[arg(value_parser = path_segment)]
        id: String,
        /// Promote even if the app is updating.
        #[arg(long)]
        force: bool,
        /// Wait until the app runs the release.
        #[arg(long)]
        wait: bool,
    },
}

/// `builds`.
#[derive(Debug, Args)]
pub struct BuildsArgs {
    /// The app.
    #[command(flatten)]
    pub app: AppArg,
    /// How many builds to list (the rack's default is 10).
    #[arg(short, long)]
    pub limit: Option<u32>,
    /// A subcommand (default: list).
    #[command(subcommand)]
    pub command: Option<BuildsCommand>,
}

/// `builds …`.
#[derive(Debug, Subcommand)]
pub enum BuildsCommand {
    /// Show a build.
    #[command(after_help = "Example:
  rack-gateway builds info BABCDEFGHIJ -a web")]
    Info {
        /// Build id.
        #[arg(value_parser = path_segment)]
        id: String,
    },
    /// Show a build's output (streamed while it runs).
    #[command(after_help = "Example:
  rack-gateway builds logs BABCDEFGHIJ -a web")]
    Logs {
        /// Build id.
        #[arg(value_parser = path_segment)]
        id: String,
    },
}

/// `deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The app.
    #[command(flatten)]
    pub app: AppArg,
    /// The directory to deploy.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Build only; do not promote the release.
    #[arg(long)]
    pub no_promote: bool,
    /// After promoting, wait until the app runs the new release.
    #[arg(long)]
    pub wait: bool,
    /// Promote even if the app is updating.
    #[arg(long)]
    pub force: bool,
    /// Build description.
    #[arg(short, long)]
    pub description: Option<String>,
    /// Manifest file name (default: convox.yml).
    #[arg(short, long)]
    pub manifest: Option<String>,
    /// Build without the layer cache.
    #[arg(long)]
    pub no_cache: bool,
    /// The commit the build is of, sent as its git-sha (default: `git rev-parse HEAD` in the
    /// directory, when it is a git checkout, as `convox deploy` does). An approved deploy
    /// request lets only a build of its commit be promoted.
    #[arg(long, value_name = "SHA")]
    pub git_sha: Option<String>,
    /// Package the directory and list what would be uploaded; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The app.
    #[command(flatten)]
    pub app: AppArg,
    /// The service whose image and environment to use.
    #[arg(value_parser = path_segment)]
    pub service: String,
    /// The command (words are joined with spaces; use `--` before words starting with `-`).
    #[arg(required = true, num_args = 1..)]
    pub command: Vec<String>,
    /// Start the process in the background and print its id.
    #[arg(short, long)]
    pub detach: bool,
    /// Run this release instead of the active one.
    #[arg(value_parser = path_segment, long)]
    pub release: Option<String>,
    /// Seconds the process may live.
    #[arg(short, long, default_value_t = 3600)]
    pub timeout: u64,
}

/// `exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The app.
    #[command(flatten)]
    pub app: AppArg,
    /// Process id (see `rack-gateway ps`).
    #[arg(value_parser = path_segment)]
    pub pid: String,
    /// The command (words are joined with spaces; use `--` before words starting with `-`).
    #[arg(required = true, num_args = 1..)]
    pub command: Vec<String>,
}

/// `scale`.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// The app.
    #[command(flatten)]
    pub app: AppArg,
    /// The service to scale (required with a change; filters the table otherwise).
    #[arg(value_parser = path_segment)]
    pub service: Option<String>,
    /// Desired process count.
    #[arg(long)]
    pub count: Option<i64>,
    /// CPU units per process.
    #[arg(long)]
    pub cpu: Option<i64>,
    /// Memory (MB) per process.
    #[arg(long)]
    pub memory: Option<i64>,
    /// Autoscale minimum.
    #[arg(long)]
    pub min: Option<i64>,
    /// Autoscale maximum.
    #[arg(long)]
    pub max: Option<i64>,
}

/// A value that becomes one segment of a request path (an app, service, process, release or
/// build): `.` and `..` would be resolved away by URL parsing (`ps info ..` asked for the
/// app's process list), and `/` or `\` would split it.
pub fn path_segment(s: &str) -> Result<String, String> {
    if is_dot_segment(s) || s.contains(['/', '\\']) || s.chars().any(char::is_control) {
        return Err(format!(
            "{:?} is not a valid name or id here",
            crate::output::printable(s)
        ));
    }
    Ok(s.to_string())
}

/// Whether `s` as a segment of a URL's path would not stay one: nothing, `.` or `..` (URL
/// parsing resolves these away, and `%2E` and `%2e` are dots to it too).
pub fn is_dot_segment(s: &str) -> bool {
    matches!(s, "" | "." | "..")
}

/// Parses `30s`, `10m`, `2h`, `1h30m` (also a bare number of seconds).
fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 30s, 10m, 2h: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_an_example() {
        fn walk(cmd: &clap::Command, path: &str) {
            for sub in cmd.get_subcommands() {
                let name = format!("{path} {}", sub.get_name());
                if sub.get_name() == "help" {
                    continue;
                }
                let help = sub
                    .get_after_help()
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                assert!(help.contains("rack-gateway "), "{name} has no example");
                walk(sub, &name);
            }
        }
        walk(&Cli::command(), "rack-gateway");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").ok(), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m").ok(), Some(Duration::from_secs(600)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn unknown_commands_pass_through() {
        let cli = Cli::try_parse_from(["rack-gateway", "--rack", "x", "certs", "-a", "web"]);
        match cli.map(|c| (c.rack, c.command)) {
            Ok((Some(rack), Command::External(args))) => {
                assert_eq!(rack, "x");
                assert_eq!(args, ["certs", "-a", "web"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn app_flag_works_after_a_subcommand() {
        let cli = Cli::try_parse_from(["rack-gateway", "env", "get", "K", "-a", "web"]);
        match cli.map(|c| c.command) {
            Ok(Command::Env(args)) => assert_eq!(args.app.app.as_deref(), Some("web")),
            other => panic!("{other:?}"),
        }
    }
}
