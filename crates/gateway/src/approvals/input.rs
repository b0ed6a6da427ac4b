//! What a deploy request may say, checked before anything is stored: the text ends up on a
//! page a person reads to decide, and in the audit trail.

use gateway_core::text::is_hidden;

/// Longest message a request may carry (a commit subject, a pipeline's words).
pub const MAX_MESSAGE_CHARS: usize = 500;
/// Longest note a decision may carry.
pub const MAX_NOTE_CHARS: usize = 500;
const MAX_URL_CHARS: usize = 500;
const MAX_BRANCH_CHARS: usize = 200;
/// Convox app names are at most 30 characters; a little room beyond.
const MAX_APP_CHARS: usize = 64;

/// A deploy request's fields, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    /// The app.
    pub app: String,
    /// The full commit id, lower case.
    pub git_commit: String,
    /// What CI says about it.
    pub message: String,
    /// The pipeline's `http(s)` address.
    pub ci_url: Option<String>,
    /// The branch.
    pub branch: Option<String>,
}

impl Asked {
    /// Checks the raw fields; the error names the field and what it takes.
    pub fn check(
        app: &str,
        git_commit: &str,
        message: Option<&str>,
        ci_url: Option<&str>,
        branch: Option<&str>,
    ) -> Result<Asked, String> {
        if !is_app_name(app) {
            return Err(format!(
                "app: a Convox app name (letters, digits and '-', at most {MAX_APP_CHARS} \
                 characters)"
            ));
        }
        let commit = git_commit.trim().to_ascii_lowercase();
        if !matches!(commit.len(), 40 | 64) || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(
                "git_commit: the full commit id (40 or 64 hexadecimal characters, as `git \
                 rev-parse HEAD` prints it): an abbreviated one could name another commit"
                    .into(),
            );
        }
        let message = text(
            "message",
            message.unwrap_or_default(),
            MAX_MESSAGE_CHARS,
            true,
        )?;
        let ci_url = match ci_url.map(str::trim).filter(|u| !u.is_empty()) {
            None => None,
            Some(url) => Some(web_address(url)?),
        };
        let branch = match branch.map(str::trim).filter(|b| !b.is_empty()) {
            None => None,
            Some(b) => Some(text("branch", b, MAX_BRANCH_CHARS, false)?),
        };
        Ok(Asked {
            app: app.to_string(),
            git_commit: commit,
            message,
            ci_url,
            branch,
        })
    }
}

/// A decision's note: trimmed, at most [`MAX_NOTE_CHARS`], no hidden characters; empty is none.
pub fn check_note(note: Option<&str>) -> Result<Option<String>, String> {
    match note.map(str::trim).filter(|n| !n.is_empty()) {
        None => Ok(None),
        Some(n) => text("note", n, MAX_NOTE_CHARS, true).map(Some),
    }
}

/// Whether `name` can be a Convox app (and a single path segment on the rack).
pub fn is_app_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_APP_CHARS
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
}

/// `value` trimmed, refused when longer than `max` characters or holding characters that
/// hide or reorder text (line breaks only where `lines`).
fn text(field: &str, value: &str, max: usize, lines: bool) -> Result<String, String> {
    let value = value.trim();
    if value.chars().count() > max {
        return Err(format!("{field}: at most {max} characters"));
    }
    if value
        .chars()
        .any(|c| is_hidden(c) && !(lines && (c == '\n' || c == '\t')))
    {
        return Err(format!(
            "{field}: control or invisible characters are not taken (they could make the text \
             read differently from what it is)"
        ));
    }
    Ok(value.to_string())
}

/// An `http` or `https` address with a host, as sent.
fn web_address(value: &str) -> Result<String, String> {
    let problem = "ci_url: an http or https address (the pipeline's page)";
    if value.chars().count() > MAX_URL_CHARS {
        return Err(format!("ci_url: at most {MAX_URL_CHARS} characters"));
    }
    let url = url::Url::parse(value).map_err(|_| problem.to_string())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(problem.into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("ci_url: an address without credentials in it".into());
    }
    if value.chars().any(is_hidden) {
        return Err(problem.into());
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn a_request_is_checked_field_by_field() {
        let ok = Asked::check(
            "web",
            &SHA.to_uppercase(),
            Some(" Fix the thing \n"),
            Some("https://ci.example.com/p/1"),
            Some("main"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.git_commit, SHA);
        assert_eq!(ok.message, "Fix the thing");
        assert_eq!(ok.ci_url.as_deref(), Some("https://ci.example.com/p/1"));

        let refused = |app: &str, sha: &str, msg: &str, url: &str, branch: &str| {
            Asked::check(app, sha, Some(msg), Some(url), Some(branch)).err()
        };
        assert!(refused("", SHA, "", "", "").is_some_and(|e| e.starts_with("app:")));
        assert!(refused("../x", SHA, "", "", "").is_some_and(|e| e.starts_with("app:")));
        assert!(refused("web", "0123456", "", "", "").is_some_and(|e| e.contains("full commit")));
        assert!(refused("web", &"g".repeat(40), "", "", "").is_some());
        assert!(
            refused("web", SHA, "a\u{202E}b", "", "").is_some_and(|e| e.starts_with("message:"))
        );
        assert!(refused("web", SHA, &"x".repeat(501), "", "").is_some());
        assert!(refused("web", SHA, "", "javascript:alert(1)", "").is_some());
        assert!(refused("web", SHA, "", "https://u:p@ci.example.com/", "").is_some());
        assert!(refused("web", SHA, "", "", "main\nx").is_some_and(|e| e.starts_with("branch:")));
        assert_eq!(refused("web", SHA, "", "", ""), None);
    }

    #[test]
    fn notes() {
        assert_eq!(check_note(Some("  ")), Ok(None));
        assert_eq!(check_note(Some(" ok \n")), Ok(Some("ok".into())));
        assert!(check_note(Some(&"n".repeat(501))).is_err());
    }
}
