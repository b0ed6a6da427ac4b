//! Admin subcommands that work directly against the configured database: migrate, tokens,
//! users (`audit verify` is in [`crate::verify`]). Each change is audited like any other
//! gateway action.

use anyhow::Context;
use gateway::api::roles::ListedRole;
use gateway::audit::{AuditLog, resolve_key};
use gateway::config::StoreConfig;
use gateway::identity::manage::{self, Actor, TokenRequest};
use gateway::identity::roles;
use gateway::store::{LastAdmin, ListedUser, Store, TokenRow, now_ms};

use crate::cli::{AppRulesCommand, MfaCommand, RolesCommand, TokensCommand, UsersCommand};
use crate::output::outln;

/// An open store with a running audit writer.
struct Admin {
    store: Store,
    audit: AuditLog,
    task: tokio::task::JoinHandle<()>,
    actor: Actor,
}

impl Admin {
    async fn open() -> anyhow::Result<Admin> {
        let config = StoreConfig::from_env().context("configuration")?;
        let store = Store::connect_synced(&config.database_url, config.sqlite_sync)
            .await
            .context("cannot open the database (DATABASE_URL)")?;
        note_if_new(&store, &config.database_url).await;
        store.migrate().await.context("migrations")?;
        let (key, _) = resolve_key(
            config.audit_hmac_key.as_ref(),
            config.audit_hmac_key_next.as_ref(),
            &store,
        )
        .await?;
        // stdout stays free for the command's own output.
        let (audit, task) = AuditLog::start(store.clone(), key, false, Default::default());
        // Run where the gateway runs, a command has its RACK_TOKEN: a token or user named
        // after it is masked in the trail as the gateway would.
        let audit = match std::env::var("RACK_TOKEN") {
            Ok(token) if !token.trim().is_empty() => {
                audit.masking(gateway::proxy::audit_scrubber(&token))
            }
            _ => audit,
        };
        Ok(Admin {
            store,
            audit,
            task,
            actor: Actor::cli(),
        })
    }

    async fn close(self) {
        self.audit.flush().await;
        drop(self.audit);
        let _ = self.task.await;
        self.store.close().await;
    }
}

/// Says so when a command is about to set up a new database: right before the first start,
/// but a mistyped `DATABASE_URL` would otherwise leave a token that works on no gateway.
async fn note_if_new(store: &Store, database_url: &str) {
    if store.holds_no_gateway_data().await.unwrap_or(false) {
        eprintln!(
            "note: {} held no gateway data: setting up a new database there (if the gateway \
             uses another, check DATABASE_URL)",
            gateway::config::shown(database_url)
        );
    }
}

/// The database for a command that only lists: opened read-only, without migrations or an
/// audit writer, so an auditor's read-only copy (or a read-only PostgreSQL role) will do.
pub(crate) async fn open_read_only() -> anyhow::Result<Store> {
    let config = StoreConfig::from_env().context("configuration")?;
    let store = Store::open_read_only(&config.database_url)
        .await
        .context("cannot open the database (DATABASE_URL)")?;
    if let Err(e) = require_current_schema(&store).await {
        store.close().await;
        return Err(e);
    }
    Ok(store)
}

/// Fails, saying what to do, when the database holds no gateway schema or an older one: a
/// read-only command cannot migrate it, and a missing table's SQL error says nothing useful.
pub async fn require_current_schema(store: &Store) -> anyhow::Result<()> {
    let pending = store.migrations_pending().await?;
    if pending > 0 {
        anyhow::bail!(
            "the database's schema is {pending} migration(s) behind this version (or holds no \
             gateway data at all): check DATABASE_URL, and run `rack-gateway-server migrate` \
             (or start the gateway) first"
        );
    }
    Ok(())
}

/// Prints `rows` as JSON or as the table `table` prints.
fn print_list<T: serde::Serialize>(
    rows: &[T],
    json: bool,
    table: fn(&[T]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(rows)?)
    } else {
        table(rows)
    }
}

/// `migrate`
pub async fn migrate() -> anyhow::Result<()> {
    let config = StoreConfig::from_env().context("configuration")?;
    let store = Store::connect_synced(&config.database_url, config.sqlite_sync)
        .await
        .context("cannot open the database (DATABASE_URL)")?;
    store.migrate().await.context("migrations")?;
    store.close().await;
    outln!("migrations applied")?;
    Ok(())
}

/// `tokens …`
pub async fn tokens(cmd: TokensCommand) -> anyhow::Result<()> {
    if let TokensCommand::List { json } = cmd {
        let store = open_read_only().await?;
        let tokens = store.list_tokens().await;
        store.close().await;
        return print_list(&tokens?, json, print_tokens);
    }
    let admin = Admin::open().await?;
    let result = run_tokens(&admin, cmd).await;
    admin.close().await;
    result
}

async fn run_tokens(admin: &Admin, cmd: TokensCommand) -> anyhow::Result<()> {
    match cmd {
        TokensCommand::Create(args) => {
            let request = TokenRequest {
                name: args.name,
                role: args.role,
                permissions: args.permissions,
                expires_in: args.expires_in,
                owner: args.owner,
            };
            let (row, secret) =
                manage::create_token(&admin.store, &admin.audit, &admin.actor, &request).await?;
            let scope = match (&row.role, &row.permissions) {
                (Some(role), _) => format!("role {role}"),
                (None, Some(p)) => format!("permissions {}", p.join(",")),
                (None, None) => "no permissions".into(),
            };
            outln!(
                "Created API token {} {:?} ({scope}, expires {}).",
                row.id,
                row.name,
                when(row.expires_at)
            )?;
            for pattern in row.permissions.iter().flatten() {
                if gateway::rbac::convox_pattern_grants_nothing(pattern) {
                    eprintln!("warning: {pattern} grants no rack route (a typo?)");
                }
            }
            if let Some(owner) = row.owner_user_id
                && let Ok(Some(user)) = admin.store.user_by_id(owner).await
                && user.locked
            {
                eprintln!(
                    "warning: {} is locked: the token is refused until they are unlocked",
                    user.email
                );
            }
            outln!("Store it now: it is shown only once.")?;
            outln!("{secret}")?;
        }
        // Listed read-only, above.
        TokensCommand::List { .. } => {}
        TokensCommand::Revoke { token } => {
            let row =
                manage::revoke_token(&admin.store, &admin.audit, &admin.actor, &token).await?;
            outln!("Revoked API token {} {:?}.", row.id, row.name)?;
        }
    }
    Ok(())
}

/// `users …`
pub async fn users(cmd: UsersCommand) -> anyhow::Result<()> {
    if let UsersCommand::List { json } = cmd {
        let store = open_read_only().await?;
        let users = store.list_users_with_mfa().await;
        store.close().await;
        return print_list(&users?, json, print_users);
    }
    let admin = Admin::open().await?;
    let result = run_users(&admin, cmd).await;
    admin.close().await;
    result
}

async fn run_users(admin: &Admin, cmd: UsersCommand) -> anyhow::Result<()> {
    let (store, audit, actor) = (&admin.store, &admin.audit, &admin.actor);
    match cmd {
        UsersCommand::Add { email, role, name } => {
            let user = manage::add_user(store, audit, actor, &email, &name, &role).await?;
            outln!("Added {} as {}.", user.email, user.role)?;
        }
        // Listed read-only, above.
        UsersCommand::List { .. } => {}
        // The host's commands may take away the last admin (over HTTP nobody can): they are
        // how a compromised sole admin is locked out. They say so when it happens.
        UsersCommand::SetRole { email, role } => {
            let user =
                manage::set_user_role(store, audit, actor, &email, &role, LastAdmin::MayGo).await?;
            outln!("{} is now {}.", user.email, user.role)?;
            warn_without_admin(store).await?;
        }
        UsersCommand::Lock { email } => {
            let user = manage::set_user_locked(store, audit, actor, &email, true, LastAdmin::MayGo)
                .await?;
            outln!("Locked {}.", user.email)?;
            warn_without_admin(store).await?;
        }
        UsersCommand::Unlock { email } => {
            let user =
                manage::set_user_locked(store, audit, actor, &email, false, LastAdmin::MayGo)
                    .await?;
            outln!("Unlocked {}.", user.email)?;
        }
        UsersCommand::ResetMfa { email } => {
            let user = manage::reset_mfa(store, audit, actor, &email).await?;
            outln!(
                "Removed the authenticator app of {}: their next sign-in asks only the identity \
                 provider.",
                user.email
            )?;
        }
    }
    Ok(())
}

/// Tells the operator when no unlocked admin is left (nobody can manage users over HTTP).
async fn warn_without_admin(store: &Store) -> anyhow::Result<()> {
    if !store.has_unlocked_admin().await? {
        eprintln!(
            "warning: no unlocked admin is left; nobody can manage users over HTTP. Add one \
             with `rack-gateway-server users add EMAIL --role admin` (or `users set-role`)."
        );
    }
    Ok(())
}

pub(crate) fn when(ms: Option<i64>) -> String {
    match ms {
        None => "never".into(),
        Some(ms) => {
            let t = std::time::UNIX_EPOCH
                + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
            humantime_like(t)
        }
    }
}

fn humantime_like(t: std::time::SystemTime) -> String {
    // Seconds precision is enough for a listing.
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    gateway::audit::format_time(t)
}

fn print_tokens(tokens: &[TokenRow]) -> anyhow::Result<()> {
    outln!(
        "{:<5} {:<24} {:<16} {:<22} {:<22} {:<10} CREATED BY",
        "ID",
        "NAME",
        "ROLE",
        "EXPIRES",
        "LAST USED",
        "STATUS"
    )?;
    let now = now_ms();
    for t in tokens {
        let status = if t.revoked_at.is_some() {
            "revoked"
        } else if t.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        };
        let scope = t.role.clone().unwrap_or_else(|| "custom".into());
        outln!(
            "{:<5} {:<24} {:<16} {:<22} {:<22} {:<10} {}",
            t.id,
            t.name,
            scope,
            when(t.expires_at),
            t.last_used_at
                .map(|m| when(Some(m)))
                .unwrap_or_else(|| "never".into()),
            status,
            t.created_by
        )?;
    }
    Ok(())
}

/// `roles …`
pub async fn roles(cmd: RolesCommand) -> anyhow::Result<()> {
    if let RolesCommand::List { json } = cmd {
        let store = open_read_only().await?;
        let custom = store.list_roles().await;
        store.close().await;
        let roles = gateway::api::roles::listed_roles(custom?);
        return print_list(&roles, json, print_roles);
    }
    let admin = Admin::open().await?;
    let result = run_roles(&admin, cmd).await;
    admin.close().await;
    result
}

async fn run_roles(admin: &Admin, cmd: RolesCommand) -> anyhow::Result<()> {
    let (store, audit, actor) = (&admin.store, &admin.audit, &admin.actor);
    match cmd {
        RolesCommand::Create {
            name,
            permissions,
            description,
        } => {
            let role =
                roles::create_role(store, audit, actor, &name, &description, &permissions).await?;
            outln!(
                "Defined role {} ({}).",
                role.name,
                role.permissions.join(",")
            )?;
        }
        RolesCommand::Update {
            name,
            permissions,
            description,
        } => {
            let role = roles::update_role(
                store,
                audit,
                actor,
                &name,
                description.as_deref(),
                &permissions,
            )
            .await?;
            outln!(
                "Changed role {} ({}; held by {} user(s) and {} token(s)).",
                role.name,
                role.permissions.join(","),
                role.users,
                role.tokens
            )?;
        }
        RolesCommand::Delete { name } => {
            let role = roles::delete_role(store, audit, actor, &name).await?;
            outln!("Deleted role {}.", role.name)?;
        }
        // Listed read-only, above.
        RolesCommand::List { .. } => {}
    }
    Ok(())
}

/// `app-rules …`
pub async fn app_rules(cmd: AppRulesCommand) -> anyhow::Result<()> {
    if let AppRulesCommand::List { json } = cmd {
        let store = open_read_only().await?;
        let rows = store.list_app_rules().await;
        store.close().await;
        let shown: Vec<gateway::api::app_rules::ShownRules> =
            rows?.into_iter().map(Into::into).collect();
        return print_list(&shown, json, print_app_rules);
    }
    // Read before the database is opened: a file that cannot be read changes nothing.
    let rules = match &cmd {
        AppRulesCommand::Set { file, .. } => Some(read_rules(file)?),
        _ => None,
    };
    let admin = Admin::open().await?;
    let (store, audit, actor) = (&admin.store, &admin.audit, &admin.actor);
    let result = match (cmd, rules) {
        (AppRulesCommand::Set { app, .. }, Some(rules)) => {
            match gateway::app_rules::set_rules(store, audit, actor, &app, rules).await {
                Ok(Some(_)) => outln!("Set the rules of app {app}."),
                Ok(None) => outln!("App {app} has no rules now."),
                Err(e) => Err(e.into()),
            }
        }
        (AppRulesCommand::Clear { app }, _) => {
            match gateway::app_rules::clear_rules(store, audit, actor, &app).await {
                Ok(_) => outln!("Cleared the rules of app {app}."),
                Err(e) => Err(e.into()),
            }
        }
        _ => Ok(()),
    };
    admin.close().await;
    result
}

/// `mfa …`
pub async fn mfa(cmd: MfaCommand) -> anyhow::Result<()> {
    let MfaCommand::RotateKey { drop_backup_codes } = cmd;
    let get = |name: &str| std::env::var(name).ok();
    let Some(new) = gateway::config::mfa_encryption_key(&get)? else {
        anyhow::bail!(
            "MFA_ENCRYPTION_KEY is not set: set it to the new key (`openssl rand -hex 32`), and \
             MFA_ENCRYPTION_KEY_RETIRED to the key the secrets are sealed with now"
        );
    };
    let retired = gateway::config::mfa_encryption_key_retired(&get)?;
    let retired: Vec<&str> = retired.iter().map(|k| k.expose()).collect();
    let key = gateway::mfa::seal::MfaKey::from_hex(new.expose())
        .and_then(|k| k.with_retired(&retired))
        .context("MFA_ENCRYPTION_KEY")?;
    let admin = Admin::open().await?;
    let rotated = gateway::mfa::rotate::rotate_key(
        &admin.store,
        &admin.audit,
        &admin.actor,
        &key,
        drop_backup_codes,
    )
    .await;
    admin.close().await;
    let rotated = rotated?;
    outln!(
        "sealed {} authenticator secret(s) with MFA_ENCRYPTION_KEY ({} were already){}",
        rotated.resealed,
        rotated.already,
        if drop_backup_codes {
            format!(
                "; deleted every backup code ({} unused)",
                rotated.backup_codes_dropped
            )
        } else {
            String::new()
        }
    )?;
    eprintln!(
        "next: give every gateway the new MFA_ENCRYPTION_KEY{}",
        if drop_backup_codes {
            ", without MFA_ENCRYPTION_KEY_RETIRED"
        } else {
            ", and keep the old key in MFA_ENCRYPTION_KEY_RETIRED while backup codes made \
             under it are in use (or run this again with --drop-backup-codes)"
        }
    );
    Ok(())
}

/// App rules from a JSON file (`-`: stdin).
fn read_rules(file: &std::path::Path) -> anyhow::Result<gateway::app_rules::AppRules> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the rules from stdin")?
    } else {
        std::fs::read_to_string(file)
            .with_context(|| format!("reading the rules from {}", file.display()))?
    };
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not app rules (JSON with secret_env, protected_env, approved_commands, \
             service_images)",
            file.display()
        )
    })
}

fn print_app_rules(apps: &[gateway::api::app_rules::ShownRules]) -> anyhow::Result<()> {
    if apps.is_empty() {
        return outln!("No app has rules.");
    }
    for a in apps {
        let r = &a.rules;
        let images: Vec<String> = r
            .service_images
            .iter()
            .map(|(service, pattern)| format!("{service}={pattern}"))
            .collect();
        outln!("{}", a.app)?;
        outln!("  secret env:        {}", r.secret_env.join(","))?;
        outln!("  protected env:     {}", r.protected_env.join(","))?;
        outln!("  approved commands: {}", r.approved_commands.join(" | "))?;
        outln!("  service images:    {}", images.join(" "))?;
        outln!(
            "  set by:            {}",
            a.updated_by.as_deref().unwrap_or("-")
        )?;
    }
    Ok(())
}

fn print_roles(roles: &[ListedRole]) -> anyhow::Result<()> {
    outln!("{:<24} {:<9} {:<18} PERMISSIONS", "ROLE", "KIND", "HELD BY")?;
    for r in roles {
        let held = match (r.users, r.tokens) {
            (Some(u), Some(t)) => format!("{u} users, {t} tokens"),
            _ => "-".into(),
        };
        let kind = if r.built_in { "built-in" } else { "custom" };
        outln!(
            "{:<24} {:<9} {:<18} {}",
            r.name,
            kind,
            held,
            r.permissions.join(",")
        )?;
    }
    Ok(())
}

fn print_users(users: &[ListedUser]) -> anyhow::Result<()> {
    outln!(
        "{:<32} {:<24} {:<10} {:<8} {:<4} LAST SEEN",
        "EMAIL",
        "NAME",
        "ROLE",
        "LOCKED",
        "MFA"
    )?;
    for ListedUser { user: u, mfa, .. } in users {
        outln!(
            "{:<32} {:<24} {:<10} {:<8} {:<4} {}",
            u.email,
            u.name,
            u.role,
            if u.locked { "yes" } else { "no" },
            if *mfa { "on" } else { "off" },
            u.last_seen_at
                .map(|m| when(Some(m)))
                .unwrap_or_else(|| "never".into())
        )?;
    }
    Ok(())
}
