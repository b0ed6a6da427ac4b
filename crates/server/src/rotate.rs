//! `audit rotate-key`: moves the audit chain to the key in `AUDIT_HMAC_KEY_NEXT`, else
//! `AUDIT_HMAC_KEY`, retiring the one it is written with (see `gateway::audit::rotate_key`).

use anyhow::Context;
use gateway::audit::{KeySource, rotate_key, shown_id};
use gateway::config::StoreConfig;
use gateway::identity::manage::Actor;
use gateway::store::{Store, StoreError};

use crate::output::outln;

/// Runs `audit rotate-key`.
pub async fn run() -> anyhow::Result<()> {
    let config = StoreConfig::from_env().context("configuration")?;
    // Run where the gateways run, with their AUDIT_HMAC_KEY and AUDIT_HMAC_KEY_NEXT: to the
    // next key, retiring the current one. Otherwise to AUDIT_HMAC_KEY.
    let mut retired = config.audit_hmac_key_retired.clone();
    let new = match (&config.audit_hmac_key_next, &config.audit_hmac_key) {
        (Some(next), current) => {
            retired.extend(current.iter().cloned());
            next
        }
        (None, Some(key)) => key,
        (None, None) => anyhow::bail!(
            "AUDIT_HMAC_KEY is not set: set it to the new key (`openssl rand -hex 32`), and \
             AUDIT_HMAC_KEY_RETIRED to the key the chain is written with now (or, where the \
             gateways run, AUDIT_HMAC_KEY_NEXT to the new key)"
        ),
    };
    // A database that is not there has no chain to rotate: none is created.
    let probe = match Store::open_read_only(&config.database_url).await {
        Ok(store) => store,
        Err(StoreError::NoDatabaseFile(path)) => anyhow::bail!(
            "there is no database file at {path}, so no audit chain to rotate (check \
             DATABASE_URL)"
        ),
        Err(e) => return Err(e).context("cannot open the database (DATABASE_URL)"),
    };
    probe.close().await;
    let store = Store::connect_synced(&config.database_url, config.sqlite_sync)
        .await
        .context("cannot open the database (DATABASE_URL)")?;
    // The chain head's key column comes with a migration.
    let migrated = store.migrate().await.context("migrations");
    let rotated = match migrated {
        Ok(()) => rotate_key(&store, new, &retired, &Actor::cli())
            .await
            .map_err(anyhow::Error::from),
        Err(e) => Err(e),
    };
    store.close().await;
    let rotated = rotated?;
    outln!(
        "audit chain moved to the key {} at event {}; the key {} is retired",
        shown_id(&rotated.new_key_id),
        rotated.seq,
        shown_id(&rotated.retired_key_id)
    )?;
    eprintln!(
        "next: gateways given the new key as AUDIT_HMAC_KEY_NEXT link with it from their next \
         event; restart every other one with it as AUDIT_HMAC_KEY (until then it refuses \
         requests with 503)"
    );
    match rotated.retired_source {
        KeySource::Configured => eprintln!(
            "keep the retired key where `audit verify` runs, in AUDIT_HMAC_KEY_RETIRED: the \
             events before event {} are linked with it",
            rotated.seq
        ),
        KeySource::Generated => eprintln!(
            "the retired key was generated and stays in the database, so that `audit verify` \
             can check the events before event {}; those remain as open to a database writer \
             as they were, the events from now on are not",
            rotated.seq
        ),
    }
    Ok(())
}
