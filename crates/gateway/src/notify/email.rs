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
    /// [`SEND_TIMEOUT`], for the whole exchange: the transport's own timeout bounds only
    /// the connection, and a server that accepts and then says nothing would hold the
    /// notifier (one task sends every message) until the gateway restarts.
    send_timeout: Duration,
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
        Ok(Mailer {
            transport,
            from,
            send_timeout: SEND_TIMEOUT,
        })
    }

    /// Sends `email` to `to`.
    pub async fn send(&self, to: &str, email: &Email) -> Delivery {
        // An address alone, never a name-addr: `x<y@evil.com>` is no address at all.
        let to = match to.parse::<lettre::Address>() {
            Ok(to) => Mailbox::new(None, to),
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
        match tokio::time::timeout(self.send_timeout, self.transport.send(message)).await {
            Ok(Ok(_)) => Delivery::Sent,
            Ok(Err(e)) if e.is_permanent() => Delivery::Failed {
                error: format!("the SMTP server refused it: {e}"),
            },
            Ok(Err(e)) => Delivery::Retry {
                error: format!("the SMTP server did not take it: {e}"),
                after_secs: None,
            },
            Err(_) => Delivery::Retry {
                error: format!(
                    "the SMTP server did not finish taking it within {} s",
                    self.send_timeout.as_secs()
                ),
                after_secs: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_core::config::Secret;

    /// A server that takes the connection and never says a word (no greeting): the send
    /// gives up in its time and is tried again later, instead of holding the notifier.
    #[tokio::test]
    async fn a_server_that_never_answers_is_given_up_on_in_time() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"))
            .port();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        let config = EmailConfig {
            smtp_url: Secret::new(format!("smtp://127.0.0.1:{port}")),
            from: "Gateway <gateway@example.com>".into(),
            alerts_to: Vec::new(),
        };
        let mut mailer = Mailer::new(&config).unwrap_or_else(|e| panic!("{e}"));
        mailer.send_timeout = Duration::from_millis(300);
        let email = Email {
            subject: "hello".into(),
            body: "world".into(),
        };
        let started = std::time::Instant::now();
        let sent = tokio::time::timeout(
            Duration::from_secs(10),
            mailer.send("ann@example.com", &email),
        )
        .await
        .unwrap_or_else(|_| panic!("the send was not given up on"));
        assert!(started.elapsed() < Duration::from_secs(5));
        match sent {
            Delivery::Retry { error, .. } => assert!(error.contains("did not finish"), "{error}"),
            other => panic!("{other:?}"),
        }
        silent.abort();
    }
}
