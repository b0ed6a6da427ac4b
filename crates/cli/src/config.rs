//! `~/.config/rack-gateway/config.json`: the racks this user signed in to, one credential
//! each, and the current rack. Written atomically (temporary file + rename) with mode 0600.
//!
//! Location: `$RACK_GATEWAY_CONFIG` (a file path), else `$XDG_CONFIG_HOME/rack-gateway/`,
//! else `~/.config/rack-gateway/`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{CliError, CliResult};

/// Environment variable naming the config file (tests, several identities).
pub const CONFIG_ENV: &str = "RACK_GATEWAY_CONFIG";
/// Environment variable selecting a rack (after `--rack`, before the current rack).
pub const RACK_ENV: &str = "RACK_GATEWAY_RACK";

/// How the gateway's secrets begin (the list the gateway masks them by).
pub use gateway_core::redact::SECRET_PREFIXES;

/// Where in `text` something shaped like one of the gateway's secrets starts (any case: a
/// secret retyped in capitals is still not to be shown), if it holds one.
pub fn secret_start(text: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    SECRET_PREFIXES.iter().filter_map(|p| lower.find(p)).min()
}

/// Whether `token` has the shape of a rack-gateway credential: `rgw_` (an API token) or `rgs_`
/// (a session) and URL-safe base64. Anything else is refused before it is stored or printed:
/// a credential ends up in URLs and in `eval "$(rack-gateway env-url)"`, where a gateway that
/// chose `$(…)` as a "token" would run commands on this machine.
pub fn is_credential(token: &str) -> bool {
    credential_problem(token).is_none()
}

/// Why `token` is not shaped like a rack-gateway credential (see [`is_credential`]), said so
/// that someone holding a copy cut short or copied with its quotes can tell; `None` when it is.
/// Never quotes the token.
pub fn credential_problem(token: &str) -> Option<&'static str> {
    let quote = |c: char| matches!(c, '"' | '\'' | '`' | '<' | '>');
    if token.starts_with(quote) && token.ends_with(quote) {
        let unquoted = token.trim_matches(quote);
        if credential_problem(unquoted).is_none() {
            return Some("it is wrapped in quotes; pass the token without them");
        }
    }
    if !(token.starts_with("rgw_") || token.starts_with("rgs_")) {
        return Some("rack-gateway tokens start with rgw_");
    }
    if !token[4..]
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Some(
            "after rgw_ a token holds only letters, digits, - and _; was a space, a quote or \
             a line break copied with it?",
        );
    }
    if token.len() < 20 {
        return Some("it is too short for one; was it cut short when copied?");
    }
    if token.len() > 256 {
        return Some("it is too long for one; were two pasted together?");
    }
    None
}

/// What kind of credential a rack entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenType {
    /// An API token (`rgw_…`), from `login --token`.
    ApiToken,
    /// A CLI session (`rgs_…`), from the browser sign-in.
    Session,
}

impl TokenType {
    /// How the type is named to people.
    pub fn label(self) -> &'static str {
        match self {
            TokenType::ApiToken => "api_token",
            TokenType::Session => "session",
        }
    }
}

/// One configured rack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RackEntry {
    /// The gateway's base URL (`https://gateway.example.com`).
    pub gateway_url: String,
    /// The credential.
    pub token: String,
    /// Its kind.
    pub token_type: TokenType,
    /// The signed-in person, if known.
    #[serde(default)]
    pub email: Option<String>,
    /// The role the gateway reported at login.
    #[serde(default)]
    pub role: Option<String>,
    /// When the session ends (unix milliseconds), if known.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// The API token's name, if it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_name: Option<String>,
}

impl RackEntry {
    /// Who this credential is, for people: the e-mail, else the token's name.
    pub fn who(&self) -> String {
        match (&self.email, &self.token_name) {
            (Some(e), _) if !e.is_empty() => e.clone(),
            (_, Some(n)) if !n.is_empty() => format!("token {n}"),
            _ => "unknown".into(),
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// The current rack's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// Racks by name.
    #[serde(default)]
    pub racks: BTreeMap<String, RackEntry>,
}

/// A rack chosen by `--rack`, `RACK_GATEWAY_RACK` or the current rack.
#[derive(Debug, Clone)]
pub struct Selected {
    /// Its name.
    pub name: String,
    /// Its entry.
    pub entry: RackEntry,
}

/// Where the config file lives.
pub fn path() -> CliResult<PathBuf> {
    if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => dirs::home_dir()
            .ok_or_else(|| {
                CliError::Config(format!(
                    "cannot find the home directory: set HOME or {CONFIG_ENV}"
                ))
            })?
            .join(".config"),
    };
    Ok(base.join("rack-gateway").join("config.json"))
}

impl Config {
    /// Reads the file; a missing file is an empty config.
    pub fn load(path: &Path) -> CliResult<Config> {
        match std::fs::read(path) {
            Ok(bytes) => Config::parse(&bytes).map_err(|e| {
                CliError::Config(format!(
                    "{} is not a valid rack-gateway config: {e}",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(CliError::io(format!("reading {}", path.display()), e)),
        }
    }

    /// The file's JSON: an object (serde would also fill the struct from an array, field by
    /// field, so `[]` read as an empty config and `["prod"]` named a current rack).
    fn parse(bytes: &[u8]) -> Result<Config, String> {
        match serde_json::from_slice::<serde_json::Value>(bytes).map_err(|e| e.to_string())? {
            value @ serde_json::Value::Object(_) => {
                serde_json::from_value(value).map_err(|e| e.to_string())
            }
            _ => Err("expected a JSON object".into()),
        }
    }

    /// Writes the file atomically with mode 0600 (its directory 0700 when created).
    pub fn save(&self, path: &Path) -> CliResult<()> {
        // A config kept elsewhere through a symlink (a dotfiles repository) is written where
        // the link points; replacing the link with a file would quietly fork it.
        let resolved;
        let path = if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            resolved = std::fs::canonicalize(path).map_err(|e| {
                CliError::io(
                    format!(
                        "following the symlink {} (to a missing file?)",
                        path.display()
                    ),
                    e,
                )
            })?;
            resolved.as_path()
        } else {
            path
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        create_private_dir(dir)?;
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| CliError::Config(format!("cannot encode the config: {e}")))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".config.json.")
            .tempfile_in(dir)
            .map_err(|e| CliError::io(format!("creating a file in {}", dir.display()), e))?;
        set_private(tmp.path())?;
        tmp.write_all(&json)
            .and_then(|()| tmp.write_all(b"\n"))
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| CliError::io(format!("writing {}", tmp.path().display()), e))?;
        tmp.persist(path)
            .map_err(|e| CliError::io(format!("replacing {}", path.display()), e.error))?;
        set_private(path)
    }

    /// The rack to use: `flag`, else `RACK_GATEWAY_RACK`, else the current rack.
    pub fn select(&self, flag: Option<&str>) -> CliResult<Selected> {
        let from_env = std::env::var(RACK_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty());
        let (name, source) = match (flag.filter(|f| !f.is_empty()), from_env) {
            (Some(f), _) => (f.to_string(), "--rack"),
            (None, Some(e)) => (e.trim().to_string(), RACK_ENV),
            (None, None) => match &self.current {
                Some(c) => (c.clone(), "the current rack"),
                None if self.racks.is_empty() => {
                    return Err(CliError::Usage(
                        "no rack selected: run `rack-gateway login <rack> <gateway-url>` first"
                            .into(),
                    ));
                }
                None => {
                    let names: Vec<&str> = self.racks.keys().map(String::as_str).collect();
                    return Err(CliError::Usage(format!(
                        "no rack selected: pick one with `rack-gateway switch <rack>` or --rack \
                         (signed in: {})",
                        names.join(", ")
                    )));
                }
            },
        };
        self.named(name, Some(source))
    }

    /// The configured rack `name`; `source` says where the name came from, for the error.
    pub fn named(&self, name: String, source: Option<&str>) -> CliResult<Selected> {
        match self.racks.get(&name) {
            Some(entry) => Ok(Selected {
                name,
                entry: entry.clone(),
            }),
            None => {
                let known: Vec<&str> = self.racks.keys().map(String::as_str).collect();
                let known = if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                };
                let from = source.map(|s| format!(" (from {s})")).unwrap_or_default();
                Err(CliError::Usage(format!(
                    "unknown rack {name:?}{from}; configured racks: {known}. \
                     Run `rack-gateway login {name} <gateway-url>` to add it"
                )))
            }
        }
    }
}

#[cfg(unix)]
fn set_private(path: &Path) -> CliResult<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| CliError::io(format!("setting the mode of {}", path.display()), e))
}

#[cfg(not(unix))]
fn set_private(_path: &Path) -> CliResult<()> {
    Ok(())
}

fn create_private_dir(dir: &Path) -> CliResult<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| CliError::io(format!("creating {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_object_is_a_config() {
        for bad in ["[]", "[\"prod\"]", "null", "3", "\"x\""] {
            assert_eq!(
                Config::parse(bad.as_bytes()).err().as_deref(),
                Some("expected a JSON object"),
                "{bad}"
            );
        }
        assert_eq!(Config::parse(b"{}"), Ok(Config::default()));
        let c = Config::parse(br#"{"current":"prod","racks":{}}"#);
        assert_eq!(c.map(|c| c.current), Ok(Some("prod".into())));
        assert!(Config::parse(b"{").is_err(), "truncated");
    }

    #[test]
    fn credentials_have_the_gateways_shape() {
        assert!(is_credential(
            "rgw_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcdefg"
        ));
        assert!(is_credential("rgs_AbCdEfGhIjKlMnOpQrStUvWxYz"));
        for bad in [
            "rgs_$(touch$IFS'pwned')aaaaaaaaaaaaa",
            "rgw_short",
            "token-from-elsewhere-0123456789",
            "rgw_with space and more characters",
            "rgw_quote'aaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert!(!is_credential(bad), "{bad}");
        }
    }

    #[test]
    fn a_token_that_is_not_one_is_told_why() {
        let why = |t: &str| credential_problem(t).unwrap_or_default();
        assert!(why("ghp_0123456789abcdefghij").contains("start with rgw_"));
        assert!(why("rgw_abc").contains("too short"));
        assert!(why("rgw_AbCdEfGhIjKlMnOpQrStUvWxYz\"").contains("a quote"));
        assert!(why("'rgw_AbCdEfGhIjKlMnOpQrStUvWxYz'").contains("wrapped in quotes"));
        assert!(why(&format!("rgw_{}", "a".repeat(300))).contains("too long"));
        // Whatever is wrong, the token itself is never repeated.
        let secret = "rgw_Secret0123456789'";
        assert!(!why(secret).contains("Secret0123"));
    }

    fn entry(url: &str) -> RackEntry {
        RackEntry {
            gateway_url: url.into(),
            token: "rgw_x".into(),
            token_type: TokenType::ApiToken,
            email: None,
            role: Some("ops".into()),
            expires_at: None,
            token_name: Some("ci".into()),
        }
    }

    #[test]
    #[cfg(unix)]
    fn save_writes_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let real = dir.path().join("dotfiles").join("config.json");
        let link = dir.path().join("config.json");
        let mut config = Config::default();
        config.racks.insert("a".into(), entry("http://a"));
        config.save(&real).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink(&real, &link).unwrap_or_else(|e| panic!("{e}"));
        config.current = Some("a".into());
        config.save(&link).unwrap_or_else(|e| panic!("{e}"));
        let is_link = std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink());
        assert!(is_link, "the symlink was replaced by a file");
        let back = Config::load(&real).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, config);
        // A link to nothing is an error, not a file created in its place.
        let dangling = dir.path().join("dangling.json");
        std::os::unix::fs::symlink(dir.path().join("gone.json"), &dangling)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(config.save(&dangling).is_err());
    }

    #[test]
    fn save_is_private_and_round_trips() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("sub").join("config.json");
        let mut config = Config::default();
        config.racks.insert("a".into(), entry("http://a"));
        config.current = Some("a".into());
        config.save(&path).unwrap_or_else(|e| panic!("{e}"));
        config.save(&path).unwrap_or_else(|e| panic!("{e}"));
        let back = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, config);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0);
            assert_eq!(mode, 0o600);
        }
        // No temporary files left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn missing_file_is_empty_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("config.json");
        assert_eq!(Config::load(&path).ok(), Some(Config::default()));
        std::fs::write(&path, "{nope").unwrap_or_else(|e| panic!("{e}"));
        assert!(Config::load(&path).is_err());
    }

    #[test]
    fn the_flag_wins_then_the_current_rack() {
        let mut config = Config::default();
        config.racks.insert("a".into(), entry("http://a"));
        config.racks.insert("b".into(), entry("http://b"));
        config.current = Some("a".into());
        // RACK_GATEWAY_RACK is covered by the integration tests (it is process-wide).
        assert_eq!(
            config.select(Some("b")).map(|s| s.name).ok(),
            Some("b".into())
        );
        if std::env::var(RACK_ENV).is_err() {
            assert_eq!(config.select(None).map(|s| s.name).ok(), Some("a".into()));
        }
        let err = config.select(Some("c")).err().map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("configured racks: a, b"));
    }
}
