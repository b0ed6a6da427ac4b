//! `.dockerignore` rules as Docker applies them to a build context: patterns are relative to
//! the context's root (a leading `/` changes nothing), `*` and `?` stop at `/`, `**` crosses
//! directories, `!` re-includes, the last matching rule wins, and a rule that matches a
//! directory excludes everything in it.

use std::path::Path;

use globset::{GlobBuilder, GlobMatcher};

use crate::error::{CliError, CliResult};

/// One rule.
#[derive(Debug)]
struct Rule {
    matcher: GlobMatcher,
    negate: bool,
}

/// The rules of one `.dockerignore`.
#[derive(Debug, Default)]
pub struct DockerIgnore {
    rules: Vec<Rule>,
}

impl DockerIgnore {
    /// Reads `<dir>/.dockerignore` (no file: nothing is excluded).
    pub fn load(dir: &Path) -> CliResult<Self> {
        let path = dir.join(".dockerignore");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                Self::parse(&text).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(CliError::io(format!("reading {}", path.display()), e)),
        }
    }

    /// Parses rules, one per line; `#` starts a comment line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut rules = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (negate, pattern) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let pattern = clean(pattern);
            if pattern.is_empty() {
                continue;
            }
            let matcher = glob(&pattern)
                .or_else(|_| glob(&pattern.replace("**", "*")))
                .map_err(|e| format!("bad pattern {line:?}: {e}"))?;
            rules.push(Rule { matcher, negate });
        }
        Ok(Self { rules })
    }

    /// Whether any rule re-includes (then excluded directories must still be looked into).
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|r| r.negate)
    }

    /// Whether `rel` (a `/`-separated path inside the context) is left out.
    pub fn excluded(&self, rel: &str) -> bool {
        let mut excluded = false;
        for rule in &self.rules {
            let hit = rule.matcher.is_match(rel) || parents(rel).any(|p| rule.matcher.is_match(p));
            if hit {
                excluded = !rule.negate;
            }
        }
        excluded
    }
}

fn glob(pattern: &str) -> Result<GlobMatcher, globset::Error> {
    Ok(GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()?
        .compile_matcher())
}

/// `a/b/c` → `a`, `a/b`.
fn parents(rel: &str) -> impl Iterator<Item = &str> {
    rel.match_indices('/').map(move |(i, _)| &rel[..i])
}

/// Go's `filepath.Clean`, then without a leading `/`.
fn clean(pattern: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in pattern.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> DockerIgnore {
        DockerIgnore::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn docker_semantics() {
        let d = rules("# comment\nsecret.txt\n*.log\n/tmp\nnode_modules\n**/*.pyc\n");
        assert!(d.excluded("secret.txt"));
        assert!(
            !d.excluded("src/secret.txt"),
            "patterns are anchored to the root"
        );
        assert!(d.excluded("debug.log"));
        assert!(!d.excluded("logs/debug.log"), "* does not cross /");
        assert!(
            d.excluded("tmp/a/b"),
            "a matched directory excludes its contents"
        );
        assert!(d.excluded("node_modules/x/index.js"));
        assert!(d.excluded("a/b/c.pyc"));
        assert!(!d.excluded("Dockerfile"));
    }

    #[test]
    fn the_last_matching_rule_wins() {
        let d = rules("docs\n!docs/README.md\n*.md\n!KEEP.md\n");
        assert!(d.excluded("docs/guide.txt"));
        assert!(!d.excluded("docs/README.md"));
        assert!(d.excluded("NOTES.md"));
        assert!(!d.excluded("KEEP.md"));
        assert!(d.has_exceptions());
    }

    #[test]
    fn paths_are_cleaned() {
        let d = rules("./build/../dist/\n");
        assert!(d.excluded("dist/app.js"));
        assert!(!d.excluded("build/app.js"));
    }
}
