//! Admin subcommands that work directly against the configured database: migrate, tokens,
//! users, audit verify. Each change is audited like any other gateway action.

use anyhow::Context;
use gateway::audit::anchor::{self, AnchorBucket, AnchorRef, ObjectLock};
use gateway::audit::{AuditLog, KeySource, existing_key, resolve_key, verify_chain_against};
use gateway::config::{AnchorConfig, StoreConfig};
use gateway::identity::manage::{self, Actor, TokenRequest};
use gateway::store::{LastAdmin, Store, TokenRow, UserRow, now_ms};

use crate::cli::{AuditCommand, TokensCommand, UsersCommand};

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
        let store = Store::connect(&config.database_url)
            .await
            .context("cannot open the database (DATABASE_URL)")?;
        store.migrate().await.context("migrations")?;
        let (key, _) = resolve_key(config.audit_hmac_key.as_ref(), &store).await?;
        // stdout stays free for the command's own output.
        let (audit, task) = AuditLog::start(store.clone(), key, false);
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

/// `migrate`
pub async fn migrate() -> anyhow::Result<()> {
    let config = StoreConfig::from_env().context("configuration")?;
    let store = Store::connect(&config.database_url)
        .await
        .context("cannot open the database (DATABASE_URL)")?;
    store.migrate().await.context("migrations")?;
    store.close().await;
    println!("migrations applied");
    Ok(())
}

/// `tokens …`
pub async fn tokens(cmd: TokensCommand) -> anyhow::Result<()> {
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
            println!(
                "Created API token {} {:?} ({scope}, expires {}).",
                row.id,
                row.name,
                when(row.expires_at)
            );
            println!("Store it now: it is shown only once.");
            println!("{secret}");
        }
        TokensCommand::List { json } => {
            let tokens = admin.store.list_tokens().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            } else {
                print_tokens(&tokens);
            }
        }
        TokensCommand::Revoke { token } => {
            let row =
                manage::revoke_token(&admin.store, &admin.audit, &admin.actor, &token).await?;
            println!("Revoked API token {} {:?}.", row.id, row.name);
        }
    }
    Ok(())
}

/// `users …`
pub async fn users(cmd: UsersCommand) -> anyhow::Result<()> {
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
            println!("Added {} as {}.", user.email, user.role);
        }
        UsersCommand::List { json } => {
            let users = store.list_users().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else {
                print_users(&users);
            }
        }
        // The host's commands may take away the last admin (over HTTP nobody can): they are
        // how a compromised sole admin is locked out. They say so when it happens.
        UsersCommand::SetRole { email, role } => {
            let user =
                manage::set_user_role(store, audit, actor, &email, &role, LastAdmin::MayGo).await?;
            println!("{} is now {}.", user.email, user.role);
            warn_without_admin(store).await?;
        }
        UsersCommand::Lock { email } => {
            let user = manage::set_user_locked(store, audit, actor, &email, true, LastAdmin::MayGo)
                .await?;
            println!("Locked {}.", user.email);
            warn_without_admin(store).await?;
        }
        UsersCommand::Unlock { email } => {
            let user =
                manage::set_user_locked(store, audit, actor, &email, false, LastAdmin::MayGo)
                    .await?;
            println!("Unlocked {}.", user.email);
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

/// `audit …`
pub async fn audit(cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Verify => {
            // Read-only: the database under examination is evidence. No migrations, no key
            // generated, no file created.
            let config = StoreConfig::from_env().context("configuration")?;
            // Anchors first: each names an event the chain had when it was written, so
            // listed before the chain's head is read, none can name one the walk won't reach.
            let anchors = match &config.audit_anchors {
                Some(anchors) => Some(list_anchors(anchors).await?),
                None => None,
            };
            // Said whether or not the chain verifies: they are evidence either way.
            if let Some(anchors) = &anchors {
                anchors.warn();
            }
            let store = Store::open_existing(&config.database_url)
                .await
                .context("cannot open the database (DATABASE_URL)")?;
            let refs = anchors
                .as_ref()
                .map(|a| a.listing.anchors.as_slice())
                .unwrap_or(&[]);
            let report = verify_existing(&store, &config, refs).await;
            store.close().await;
            let (report, source) = report?;
            println!(
                "audit chain OK: {} events, head {}",
                report.events, report.head_hash
            );
            match &anchors {
                Some(anchors) => anchors.print(&report),
                None => eprintln!(
                    "note: no anchors configured (AUDIT_ANCHOR_BUCKET): the chain shows edits by \
                     anyone without the key, but not a rebuild by someone holding it, nor a \
                     database replaced by an older copy (see docs/deployment.md)"
                ),
            }
            if source == KeySource::Generated {
                // The key sits in the database it protects: whoever can write the database
                // could have rebuilt the whole chain, and it would still verify.
                eprintln!(
                    "warning: the chain's key was generated and is kept in this database, so a \
                     database writer could rebuild the chain undetected; set AUDIT_HMAC_KEY \
                     (see docs/configuration.md) for a chain the database alone cannot forge"
                );
            }
            Ok(())
        }
    }
}

/// The anchors found in S3 for `audit verify`.
struct ListedAnchors {
    location: String,
    listing: anchor::AnchorListing,
    /// The newest anchor's Object Lock, as S3 reports it.
    newest_lock: Option<ObjectLock>,
}

/// Lists every anchor and checks the newest one's content and lock.
async fn list_anchors(config: &AnchorConfig) -> anyhow::Result<ListedAnchors> {
    let location = format!("s3://{}/{}", config.bucket, config.prefix);
    let bucket = AnchorBucket::new(config)?;
    let listing = anchor::list_anchors(&bucket)
        .await
        .with_context(|| format!("cannot list the audit anchors in {location}"))?;
    // A hidden anchor's content is behind its delete marker; its key says what it anchors.
    let newest = listing
        .anchors
        .iter()
        .rev()
        .find(|a| !listing.hidden.contains(&a.key));
    let newest_lock = match newest {
        Some(newest) => {
            anchor::read_anchor(&bucket, newest)
                .await
                .with_context(|| format!("the newest anchor in {location}"))?;
            Some(bucket.lock_of(&newest.key).await?)
        }
        None => None,
    };
    Ok(ListedAnchors {
        location,
        listing,
        newest_lock,
    })
}

impl ListedAnchors {
    /// What the listing itself shows: deleted anchors, strangers, a missing lock.
    fn warn(&self) {
        if !self.listing.hidden.is_empty() {
            eprintln!(
                "warning: {} anchor(s) in {} were deleted (a delete marker hides them; their \
                 locked versions remain and are checked): someone with access to the bucket \
                 tried to remove evidence. The first: {}",
                self.listing.hidden.len(),
                self.location,
                self.listing.hidden[0]
            );
        }
        if self.listing.others > 0 {
            eprintln!(
                "note: {} other object(s) in {} are not anchors and were ignored",
                self.listing.others, self.location
            );
        }
        if let Some(lock) = &self.newest_lock
            && lock.mode.as_deref() != Some("COMPLIANCE")
        {
            eprintln!(
                "warning: S3 reports no COMPLIANCE lock on the newest anchor (mode {}): \
                 without Object Lock on the bucket anchors can be deleted (docs/deployment.md); \
                 or these credentials may not read it (s3:GetObjectRetention)",
                lock.mode.as_deref().unwrap_or("none")
            );
        }
    }

    /// The anchors' part of a successful verification.
    fn print(&self, report: &gateway::audit::VerifyReport) {
        match report.last_anchored {
            Some(last) => println!(
                "anchors OK: {} in {}, the newest at event {last} ({} events since)",
                report.anchors_checked,
                self.location,
                report.events - last
            ),
            None => eprintln!(
                "warning: no anchors in {} yet (the gateway writes one every \
                 AUDIT_ANCHOR_INTERVAL_SECS; its log says why one failed)",
                self.location
            ),
        }
    }
}

/// Verifies the chain of a database this version's migrations have all been applied to.
async fn verify_existing(
    store: &Store,
    config: &StoreConfig,
    anchors: &[AnchorRef],
) -> anyhow::Result<(gateway::audit::VerifyReport, KeySource)> {
    let pending = store.migrations_pending().await?;
    if pending > 0 {
        anyhow::bail!(
            "the database's schema is {pending} migration(s) behind this version (or holds no \
             gateway data at all): check DATABASE_URL, and run `rack-gateway-server migrate` \
             (or start the gateway) first"
        );
    }
    let (key, source) = existing_key(config.audit_hmac_key.as_ref(), store).await?;
    Ok((verify_chain_against(store, &key, anchors).await?, source))
}

fn when(ms: Option<i64>) -> String {
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

fn print_tokens(tokens: &[TokenRow]) {
    println!(
        "{:<5} {:<24} {:<16} {:<22} {:<22} {:<10} CREATED BY",
        "ID", "NAME", "ROLE", "EXPIRES", "LAST USED", "STATUS"
    );
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
        println!(
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
        );
    }
}

fn print_users(users: &[UserRow]) {
    println!(
        "{:<32} {:<24} {:<10} {:<8} LAST SEEN",
        "EMAIL", "NAME", "ROLE", "LOCKED"
    );
    for u in users {
        println!(
            "{:<32} {:<24} {:<10} {:<8} {}",
            u.email,
            u.name,
            u.role,
            if u.locked { "yes" } else { "no" },
            u.last_seen_at
                .map(|m| when(Some(m)))
                .unwrap_or_else(|| "never".into())
        );
    }
}
