//! Opening a URL in the user's browser (`open` on macOS, `xdg-open` elsewhere).

use std::process::{Command, Stdio};

/// Setting this (to anything but `0` or `false`) keeps the CLI from opening a browser: it
/// prints links instead (a machine reached over SSH, say).
pub const NO_BROWSER_ENV: &str = "RACK_GATEWAY_NO_BROWSER";

/// Whether the CLI may open a browser (see [`NO_BROWSER_ENV`]).
pub fn allowed() -> bool {
    match std::env::var(NO_BROWSER_ENV) {
        Ok(v) => matches!(v.trim(), "" | "0" | "false"),
        Err(_) => true,
    }
}

/// Whether `link` is an http(s) link at all.
pub fn is_web_link(link: &str) -> bool {
    url::Url::parse(link).is_ok_and(|l| matches!(l.scheme(), "http" | "https"))
}

/// Whether a link from the gateway may be opened: http(s) on the gateway's own origin
/// (`base`). Anything else (`javascript:`, `file:`, another host, an argument for the opener)
/// is not.
pub fn is_gateway_link(link: &str, base: &str) -> bool {
    match (url::Url::parse(link), url::Url::parse(base)) {
        (Ok(link), Ok(base)) => {
            matches!(link.scheme(), "http" | "https") && link.origin() == base.origin()
        }
        _ => false,
    }
}

/// Tries to open `url`; false when no opener could be started.
pub fn open(url: &str) -> bool {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    Command::new(opener)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .is_ok()
}

/// This machine's name, sent with a sign-in so the session list says where it came from.
pub fn hostname() -> String {
    if let Ok(h) = std::env::var("HOSTNAME")
        && !h.trim().is_empty()
    {
        return h.trim().to_string();
    }
    for file in ["/proc/sys/kernel/hostname", "/etc/hostname"] {
        if let Ok(h) = std::fs::read_to_string(file)
            && !h.trim().is_empty()
        {
            return h.trim().to_string();
        }
    }
    Command::new("hostname")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_gateways_own_links_are_opened() {
        let base = "https://gw.example.com";
        assert!(is_gateway_link(
            "https://gw.example.com/api/v1/auth/cli/browser?x=1",
            base
        ));
        for link in [
            "javascript:alert(1)",
            "file:///etc/passwd",
            "--help",
            "https://evil.example.com/api/v1/auth/cli/browser",
            "http://gw.example.com/x",
            "https://gw.example.com:444/x",
        ] {
            assert!(!is_gateway_link(link, base), "{link}");
        }
    }

    #[test]
    fn only_web_links_are_taken() {
        assert!(is_web_link("http://localhost:8447/account/mfa/key?id=x"));
        assert!(!is_web_link("javascript:alert(1)"));
        assert!(!is_web_link("--help"));
    }
}
