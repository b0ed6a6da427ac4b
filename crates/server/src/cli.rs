//! Command-line interface.

use clap::{Args, Parser, Subcommand};

/// rack-gateway: a security gateway in front of a Convox rack.
#[derive(Debug, Parser)]
#[command(name = "rack-gateway-server", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (configuration from the environment; see docs/configuration.md).
    Serve,
    /// Run it all locally: fake Convox rack, gateway, sign-in provider, SQLite, a token per role.
    ///
    /// Example: rack-gateway-server dev --port 8447 --rack-port 5443
    Dev(crate::dev::DevArgs),
    /// Apply database migrations and exit (DATABASE_URL).
    Migrate,
    /// Manage API tokens in the configured database.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Manage users in the configured database.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage custom roles in the configured database.
    #[command(subcommand)]
    Roles(RolesCommand),
    /// Per-app rules (secret and protected env vars, approved commands, service images) in
    /// the configured database.
    #[command(subcommand)]
    AppRules(AppRulesCommand),
    /// Inspect the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Slack and e-mail notifications: send a test, list what was sent or given up on.
    #[command(subcommand)]
    Notify(NotifyCommand),
    /// Two-step sign-in's key: move stored authenticator secrets to a new MFA_ENCRYPTION_KEY.
    #[command(subcommand)]
    Mfa(MfaCommand),
}

/// `mfa …`
#[derive(Debug, Subcommand)]
pub enum MfaCommand {
    /// Seal every stored authenticator secret with MFA_ENCRYPTION_KEY, opening each with the
    /// key it was sealed with (in MFA_ENCRYPTION_KEY_RETIRED), in one transaction. Backup
    /// codes made before keep working while their key stays in MFA_ENCRYPTION_KEY_RETIRED.
    ///
    /// Example: MFA_ENCRYPTION_KEY=NEW MFA_ENCRYPTION_KEY_RETIRED=OLD rack-gateway-server mfa
    /// rotate-key
    RotateKey {
        /// Also delete every backup code (after a leaked key: codes made under it could be
        /// found from the database); people make new ones on /account/mfa.
        #[arg(long)]
        drop_backup_codes: bool,
    },
}

/// `notify …`
#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send a test message now on every configured channel (SLACK_WEBHOOK_URL, SMTP_URL) and
    /// say what each answered; exits 1 when one failed. Needs no database.
    ///
    /// Example: rack-gateway-server notify test --to me@example.com
    Test {
        /// E-mail the test to this address (default: EMAIL_ALERTS_TO).
        #[arg(long)]
        to: Vec<String>,
    },
    /// List the newest notifications: queued, sent, and given up on (with why).
    List {
        /// Only those given up on.
        #[arg(long)]
        failed: bool,
        /// At most this many.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=1000))]
        limit: i64,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `tokens …`
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create an API token; the secret is printed once, alone on the last line of stdout.
    ///
    /// Example: rack-gateway-server tokens create --name circleci --role deployer --expires-in 90d
    Create(TokenCreate),
    /// List API tokens (never their secrets).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id or name; it stops working on its next request.
    Revoke {
        /// Token id (from `tokens list`) or name.
        token: String,
    },
}

/// `tokens create` arguments.
#[derive(Debug, Args)]
pub struct TokenCreate {
    /// A name to recognise the token by, e.g. `circleci-deploy`.
    #[arg(long)]
    pub name: String,
    /// Role: viewer, ops, deployer, admin, cicd, or a custom role (defined on /roles).
    #[arg(
        long,
        conflicts_with = "permissions",
        required_unless_present = "permissions"
    )]
    pub role: Option<String>,
    /// Explicit permissions instead of a role, comma-separated (e.g. `convox:apps:list,convox:logs:read`).
    #[arg(long)]
    pub permissions: Option<String>,
    /// Expire after a duration: 90m, 12h, 30d, 52w.
    #[arg(long)]
    pub expires_in: Option<String>,
    /// The user the token acts for (locking them stops the token).
    #[arg(long)]
    pub owner: Option<String>,
}

/// `users …`
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add a user.
    ///
    /// Example: rack-gateway-server users add alice@example.com --role deployer --name "Alice"
    Add {
        /// E-mail address.
        email: String,
        /// Role: viewer, ops, deployer, admin, cicd, or a custom role (defined on /roles).
        #[arg(long)]
        role: String,
        /// Display name.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List users.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Change a user's role (effective on their next request).
    SetRole {
        /// E-mail address.
        email: String,
        /// New role.
        role: String,
    },
    /// Lock a user: every request they (or tokens acting for them) make is refused.
    Lock {
        /// E-mail address.
        email: String,
    },
    /// Unlock a user.
    Unlock {
        /// E-mail address.
        email: String,
    },
    /// Remove a user's authenticator app (a lost phone): their next sign-in asks only their
    /// identity provider, and they can set up a new one on /account/mfa.
    ResetMfa {
        /// E-mail address.
        email: String,
    },
}

/// `roles …`
#[derive(Debug, Subcommand)]
pub enum RolesCommand {
    /// List every role (built-in and custom) and what it grants.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Define a custom role.
    ///
    /// Example: rack-gateway-server roles create log-readers --permissions
    /// convox:apps:list,convox:logs:read --description "read logs"
    Create {
        /// Its name: 2–40 lowercase letters, digits and dashes, not a built-in role's.
        name: String,
        /// The permission patterns it grants, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        permissions: Vec<String>,
        /// What it is for.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Replace a custom role's permissions (effective on the next request of its holders).
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
    Delete {
        /// The role.
        name: String,
    },
}

/// `app-rules …`
#[derive(Debug, Subcommand)]
pub enum AppRulesCommand {
    /// List every app that has rules, and its rules.
    List {
        /// Print JSON (as `GET /api/v1/app-rules`) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Set all of an app's rules from a JSON file, as `PUT /api/v1/app-rules/{app}` takes it
    /// (a list left out is emptied).
    ///
    /// Example: rack-gateway-server app-rules set web --file web-rules.json
    Set {
        /// The app.
        app: String,
        /// The JSON file (`-` for stdin): {"secret_env": [...], "protected_env": [...],
        /// "approved_commands": [...], "service_images": {"service": "pattern"}}.
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// Remove all of an app's rules.
    Clear {
        /// The app.
        app: String,
    },
}

/// `audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Re-compute the audit hash chain from the database and check every link.
    Verify,
    /// Write audit events as JSON lines or CSV, all of them or those the flags select (a
    /// period, a person, a token, permissions, refusals). Reads only: works on a copy.
    ///
    /// Example: rack-gateway-server audit export --since 2026-10-01 --until 2026-11-01
    /// --decision deny --format csv --output october-refusals.csv
    Export(Box<crate::export::ExportArgs>),
    /// Move the audit chain to a new key: AUDIT_HMAC_KEY_NEXT if set (then AUDIT_HMAC_KEY is
    /// the one retired), else AUDIT_HMAC_KEY (then AUDIT_HMAC_KEY_RETIRED holds the current
    /// one; not needed when it was generated and kept in the database).
    ///
    /// Gateways started with the new key as AUDIT_HMAC_KEY_NEXT carry on with it; any other
    /// refuses requests (503) until restarted with it as AUDIT_HMAC_KEY.
    RotateKey,
}
