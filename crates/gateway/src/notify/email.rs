//! Sending e-mail through an SMTP server (`SMTP_URL`, `EMAIL_FROM`).
//!
//! A server's permanent refusal (a 5xx reply: no such mailbox, relaying denied, bad
//! credentials) is given up on; anything else (a 4xx reply, a dropped connection, a timeout)
//! is tried again. `SMTP_URL` may hold a password: it never appears in an error.

use std::time::Duration;

use gateway_core::config::EmailConfig;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::Delivery;
use super::render::Email;

/// How long one message may take, connection included.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// An SMTP server and the sender's address.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// A mailer for `config` (checked when the configuration was read).
    pub fn new(config: &EmailConfig) -> Result<Mailer, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(config.smtp_url.expose())
            // Not the error's text: it could quote the address, password and all.
            .map_err(|_| "SMTP_URL could not be used".to_string())?
            .timeout(Some(SEND_TIMEOUT))
            .build();
        let from = config
            .from
            .parse::<Mailbox>()
            .map_err(|e| format!("EMAIL_FROM could not be used: {e}"))?;
        Ok(Mailer { transport, from })
    }

    /// Sends `email` to `to`.
    pub async fn send(&self, to: &str, email: &Email) -> Delivery {
        let to = match to.parse::<Mailbox>() {
            Ok(to) => to,
            Err(e) => {
                return Delivery::Failed {
                    error: format!("not an address mail can be sent to: {e}"),
                };
            }
        };
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(email.body.clone());
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                return Delivery::Failed {
                    error: format!("the message could not be built: {e}"),
                };
            }
        };
        match self.transport.send(message).await {
            Ok(_) => Delivery::Sent,
            Err(e) if e.is_permanent() => Delivery::Failed {
                error: format!("the SMTP server refused it: {e}"),
            },
            Err(e) => Delivery::Retry {
                error: format!("the SMTP server did not take it: {e}"),
                after_secs: None,
            },
        }
    }
}
