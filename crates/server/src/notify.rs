//! `notify test` and `notify list`: check the notification channels, and see what was sent.

use anyhow::Context;
use gateway::config::{NotifyConfig, public_url_from_lookup};
use gateway::notify::render::{self, Origin};
use gateway::notify::worker::Channels;
use gateway::notify::{Delivery, Notice, Topic};
use gateway::store::NotificationRow;

use crate::admin::{open_read_only, when};
use crate::cli::NotifyCommand;
use crate::output::outln;

/// `notify …`
pub async fn run(cmd: NotifyCommand) -> anyhow::Result<()> {
    match cmd {
        NotifyCommand::Test { to } => test(to).await,
        NotifyCommand::List {
            failed,
            limit,
            json,
        } => {
            let store = open_read_only().await?;
            let rows = store.list_notifications(failed, limit).await;
            store.close().await;
            let rows = rows?;
            if json {
                let listed: Vec<serde_json::Value> = rows.iter().map(as_json).collect();
                outln!("{}", serde_json::to_string_pretty(&listed)?)
            } else {
                print_table(&rows)
            }
        }
    }
}

async fn test(to: Vec<String>) -> anyhow::Result<()> {
    let lookup = |name: &str| std::env::var(name).ok();
    let config = NotifyConfig::from_lookup(lookup).context("configuration")?;
    if config.is_off() {
        anyhow::bail!(
            "no notification channel is configured: set SLACK_WEBHOOK_URL, or SMTP_URL and \
             EMAIL_FROM (docs/configuration.md)"
        );
    }
    let origin = Origin::new(public_url_from_lookup(lookup).context("configuration")?);
    let channels = Channels::new(&config).map_err(anyhow::Error::msg)?;
    let notice = Notice::new(Topic::Test, "Test notification: this channel reaches you")
        .fact("Sent by", "rack-gateway-server notify test")
        .link("Open the gateway", "/");
    let mut failed = 0;
    if let Some(slack) = &channels.slack {
        let payload = render::slack(&notice, &origin, false).to_string();
        failed += report("slack", slack.post(&payload).await)?;
    }
    if let Some(app) = config.slack.as_ref().and_then(|s| s.app.clone()) {
        failed += check_slack_app(app).await?;
    }
    if let Some(mailer) = &channels.mailer {
        let recipients = if to.is_empty() {
            channels.alerts_to.clone()
        } else {
            to
        };
        if recipients.is_empty() {
            outln!("email: not sent: name an address with --to (or set EMAIL_ALERTS_TO)")?;
            failed += 1;
        }
        let email = render::email(&notice, &origin);
        for address in recipients {
            let channel = format!("email to {address}");
            failed += report(&channel, mailer.send(&address, &email).await)?;
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} test message(s) not sent");
    }
    Ok(())
}

/// Checks the Slack app's bot token (approving from Slack): prints what Slack says of it; 1
/// when it would not work.
async fn check_slack_app(app: gateway::config::SlackAppConfig) -> anyhow::Result<usize> {
    let api = gateway::slack::SlackApi::new(app).map_err(anyhow::Error::msg)?;
    match api.check().await {
        Ok(check) if check.missing_scopes.is_empty() => {
            outln!(
                "slack app: the bot token works in {}, with the scopes approving from Slack needs",
                check.workspace
            )?;
            Ok(0)
        }
        Ok(check) => {
            outln!(
                "slack app: the bot token (workspace {}) lacks the scope(s) {}: add them under \
                 OAuth & Permissions and reinstall the app",
                check.workspace,
                check.missing_scopes.join(", ")
            )?;
            Ok(1)
        }
        Err(e) => {
            outln!("slack app: {e}")?;
            Ok(1)
        }
    }
}

/// Prints what became of one test message; 1 when it was not sent.
fn report(channel: &str, delivery: Delivery) -> anyhow::Result<usize> {
    match delivery {
        Delivery::Sent => {
            outln!("{channel}: sent")?;
            Ok(0)
        }
        Delivery::Retry { error, .. } => {
            outln!("{channel}: not sent (would be tried again): {error}")?;
            Ok(1)
        }
        Delivery::Failed { error } => {
            outln!("{channel}: refused: {error}")?;
            Ok(1)
        }
    }
}

fn state(row: &NotificationRow) -> &'static str {
    if row.sent_at.is_some() {
        "sent"
    } else if row.failed_at.is_some() {
        "failed"
    } else if row.attempts > 0 {
        "retrying"
    } else {
        "queued"
    }
}

fn as_json(row: &NotificationRow) -> serde_json::Value {
    serde_json::json!({
        "id": row.id,
        "channel": row.channel,
        "recipient": row.recipient,
        "topic": row.topic,
        "state": state(row),
        "audit_seq": row.audit_seq,
        "created_at": row.created_at,
        "attempts": row.attempts,
        "sent_at": row.sent_at,
        "failed_at": row.failed_at,
        "last_error": row.last_error,
    })
}

fn print_table(rows: &[NotificationRow]) -> anyhow::Result<()> {
    outln!(
        "{:<6} {:<22} {:<7} {:<28} {:<20} {:<9} {:<8} LAST ERROR",
        "ID",
        "CREATED",
        "CHANNEL",
        "TO",
        "TOPIC",
        "STATE",
        "ATTEMPTS"
    )?;
    for row in rows {
        let to = if row.recipient.is_empty() {
            "-"
        } else {
            &row.recipient
        };
        outln!(
            "{:<6} {:<22} {:<7} {:<28} {:<20} {:<9} {:<8} {}",
            row.id,
            when(Some(row.created_at)),
            row.channel,
            to,
            row.topic,
            state(row),
            row.attempts,
            row.last_error.as_deref().unwrap_or("")
        )?;
    }
    Ok(())
}
