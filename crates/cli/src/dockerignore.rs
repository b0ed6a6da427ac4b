//! `.dockerignore` rules as Docker applies them to a build context: patterns are relative to
//! the context's root (a leading `/` changes nothing), `*` and `?` stop at `/`, `**` crosses
//! directories, `!` re-includes, the last matching rule wins, and a rule that matches a
//! directory excludes everything in it. `Dockerfile` and `.dockerignore` are always sent, as
//! Docker sends them: a build cannot do without them.
//!
//! The pattern language is Docker's (moby/patternmatcher: Go's `filepath.Match` plus `**`),
//! written here rather than borrowed from a glob library whose syntax differs where it
//! matters: `**` followed by more of the pattern stands for any number of whole directories
//! (`a/**b` is `a/b`, `a/x/b`, not `a/xb`), at the end for anything; a pattern that is `**`
//! and then plain text matches every path ending in that text (`**.key` is `x.key` and
//! `a/b/y.key`), but `**/` then text only whole names (`**/id_rsa` is `id_rsa` and
//! `a/id_rsa`, not `a/my_id_rsa`); `?` is one character (not one byte); `{a,b}` is literal;
//! in `[...]` only `^` negates. A rule that matches less than Docker's would upload a file the
//! user meant to keep out of the build.

use std::path::Path;

use crate::error::{CliError, CliResult};

/// Files Docker sends whatever `.dockerignore` says.
const ALWAYS_SENT: [&str; 2] = ["Dockerfile", ".dockerignore"];

/// One rule.
#[derive(Debug)]
struct Rule {
    matcher: Matcher,
    negate: bool,
}

/// How a rule matches a path.
#[derive(Debug)]
enum Matcher {
    /// `**` run straight into plain text (`**.key`, not `**/key`): every path ending in the
    /// text (Docker matches these by suffix).
    Suffix(String),
    /// Anything else, token by token.
    Tokens(Vec<Token>),
}

impl Matcher {
    /// The matcher for `pattern` (cleaned), read as `tokens`.
    fn new(pattern: &str, tokens: Vec<Token>) -> Matcher {
        // `**/name` is not a suffix match: its `/` keeps `x/my_name` out. As `Dirs` tokens
        // already mean that, only `**` run straight into text (`**.key`) is matched by suffix.
        let leading_stars_then_slash =
            pattern.starts_with("**") && pattern.trim_start_matches('*').starts_with('/');
        if !leading_stars_then_slash
            && let Some((Token::Any | Token::Dirs, rest)) = tokens.split_first()
            && let Some(text) = rest
                .iter()
                .map(|t| match t {
                    Token::Char(c) => Some(*c),
                    _ => None,
                })
                .collect::<Option<String>>()
        {
            return Matcher::Suffix(text);
        }
        Matcher::Tokens(tokens)
    }

    fn matches(&self, path: &[char]) -> bool {
        match self {
            Matcher::Suffix(text) => path.iter().collect::<String>().ends_with(text.as_str()),
            Matcher::Tokens(tokens) => matches(tokens, path),
        }
    }
}

/// One piece of a pattern.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// This character.
    Char(char),
    /// `?`: one character but `/`.
    One,
    /// `*`: any run of characters without `/`.
    Star,
    /// `**` at the end of a pattern: any run of characters, `/` included.
    Any,
    /// `**` (and a `/` after it) followed by more of the pattern: nothing, or any run of
    /// characters ending in `/` (any number of directories).
    Dirs,
    /// `[...]`: one character in (or, with `^`, not in) the ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// The rules of one `.dockerignore`.
/// The largest `.dockerignore` read (1 MiB: real ones are a few hundred bytes).
pub const MAX_FILE: u64 = 1024 * 1024;

#[derive(Debug, Default)]
pub struct DockerIgnore {
    rules: Vec<Rule>,
}

impl DockerIgnore {
    /// Reads `<dir>/.dockerignore` (no file: nothing is excluded). It must be a regular file
    /// (a link to `/dev/zero` or a FIFO would be read forever) of at most [`MAX_FILE`] bytes.
    pub fn load(dir: &Path) -> CliResult<Self> {
        use std::io::Read;
        let path = dir.join(".dockerignore");
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(CliError::io(format!("reading {}", path.display()), e)),
        };
        if !meta.is_file() {
            return Err(CliError::Usage(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_FILE + 1).read_to_end(&mut bytes))
            .map_err(|e| CliError::io(format!("reading {}", path.display()), e))?;
        if bytes.len() as u64 > MAX_FILE {
            return Err(CliError::Usage(format!(
                "{} is larger than {} KiB",
                path.display(),
                MAX_FILE / 1024
            )));
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| CliError::Usage(format!("{}: not UTF-8 text", path.display())))?;
        Self::parse(&text).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
    }

    /// Parses rules, one per line. A line starting with `#` (before any trimming) is a
    /// comment; a byte-order mark at the start of the file is not part of the first rule.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut rules = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (negate, pattern) = match line.strip_prefix('!') {
                // Docker refuses it too: an exception of nothing is a mistake, not a rule.
                Some(rest) if rest.trim().is_empty() => {
                    return Err(format!("illegal exclusion pattern {line:?}"));
                }
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let pattern = clean(pattern);
            if pattern.is_empty() {
                continue;
            }
            let tokens = tokens(&pattern).map_err(|e| format!("bad pattern {line:?}: {e}"))?;
            rules.push(Rule {
                matcher: Matcher::new(&pattern, tokens),
                negate,
            });
        }
        Ok(Self { rules })
    }

    /// Whether any rule re-includes (then excluded directories must still be looked into).
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|r| r.negate)
    }

    /// Whether `rel` (a `/`-separated path inside the context) is left out.
    pub fn excluded(&self, rel: &str) -> bool {
        if ALWAYS_SENT.contains(&rel) {
            return false;
        }
        let path: Vec<char> = rel.chars().collect();
        // The path and each of its parent directories (`a/b/c` → `a`, `a/b`).
        let mut candidates: Vec<&[char]> = path
            .iter()
            .enumerate()
            .filter(|(_, c)| **c == '/')
            .map(|(i, _)| &path[..i])
            .collect();
        candidates.push(&path);
        let mut excluded = false;
        for rule in &self.rules {
            if candidates.iter().any(|c| rule.matcher.matches(c)) {
                excluded = !rule.negate;
            }
        }
        excluded
    }
}

/// A pattern's tokens.
fn tokens(pattern: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                // Further stars add nothing.
                while chars.peek() == Some(&'*') {
                    chars.next();
                }
                if chars.peek() == Some(&'/') {
                    chars.next();
                }
                out.push(if chars.peek().is_none() {
                    Token::Any
                } else {
                    Token::Dirs
                });
            }
            '*' => out.push(Token::Star),
            '?' => out.push(Token::One),
            '\\' => out.push(Token::Char(chars.next().unwrap_or('\\'))),
            '[' => {
                let negated = chars.peek() == Some(&'^');
                if negated {
                    chars.next();
                }
                let mut ranges = Vec::new();
                let mut first = true;
                loop {
                    let Some(c) = chars.next() else {
                        return Err("unclosed [".into());
                    };
                    if c == ']' && !first {
                        break;
                    }
                    first = false;
                    let low = if c == '\\' {
                        chars.next().ok_or("unclosed [")?
                    } else {
                        c
                    };
                    let high = if chars.peek() == Some(&'-') {
                        chars.next();
                        match chars.next() {
                            Some(']') | None => return Err("bad range in [...]".into()),
                            Some('\\') => chars.next().ok_or("unclosed [")?,
                            Some(h) => h,
                        }
                    } else {
                        low
                    };
                    if high < low {
                        return Err("bad range in [...]".into());
                    }
                    ranges.push((low, high));
                }
                out.push(Token::Class { negated, ranges });
            }
            c => out.push(Token::Char(c)),
        }
    }
    Ok(out)
}

/// Whether `pattern` matches the whole of `path`.
///
/// Worked out token by token from the pattern's end, one row at a time (`next[s]`: whether
/// the rest of the pattern matches `path[s..]`) rather than by recursion: a rule is a line of
/// up to [`MAX_FILE`] bytes, and recursing once per token (`**/**/…`, which consume nothing)
/// would run out of stack on a hostile one. Time is tokens × path length, memory two rows.
fn matches(pattern: &[Token], path: &[char]) -> bool {
    let n = path.len();
    let mut next = vec![false; n + 1];
    next[n] = true;
    let mut row = vec![false; n + 1];
    for token in pattern.iter().rev() {
        match token {
            Token::Char(c) => one_char(path, &next, &mut row, |x| x == *c),
            Token::One => one_char(path, &next, &mut row, |x| x != '/'),
            Token::Class { negated, ranges } => one_char(path, &next, &mut row, |x| {
                ranges.iter().any(|(low, high)| *low <= x && x <= *high) != *negated
            }),
            Token::Star => {
                // Nothing, or one more character but `/` and again a run of them.
                row[n] = next[n];
                for s in (0..n).rev() {
                    row[s] = next[s] || (path[s] != '/' && row[s + 1]);
                }
            }
            Token::Any => {
                row[n] = next[n];
                for s in (0..n).rev() {
                    row[s] = next[s] || row[s + 1];
                }
            }
            Token::Dirs => {
                // Nothing, or a run ending in a `/` after which the rest matches.
                let mut after_a_slash = false;
                row[n] = next[n];
                for s in (0..n).rev() {
                    after_a_slash = after_a_slash || (path[s] == '/' && next[s + 1]);
                    row[s] = next[s] || after_a_slash;
                }
            }
        }
        std::mem::swap(&mut row, &mut next);
        if !next.contains(&true) {
            return false;
        }
    }
    next[0]
}

/// A row of [`matches()`] for a token that is one character `fits` accepts.
fn one_char(path: &[char], next: &[bool], row: &mut [bool], fits: impl Fn(char) -> bool) {
    for (s, c) in path.iter().enumerate() {
        row[s] = fits(*c) && next[s + 1];
    }
    row[path.len()] = false;
}

/// Go's `filepath.Clean` (a `..` that cannot go up is kept, as there), then without a
/// leading `/`.
fn clean(pattern: &str) -> String {
    let rooted = pattern.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in pattern.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(last) if *last != ".." => {
                    parts.pop();
                }
                // `/..` is `/`; a relative path keeps its leading `..`.
                _ if rooted => {}
                _ => parts.push(".."),
            },
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
    fn an_exception_of_nothing_is_refused() {
        for text in ["!\n", "a\n ! \n"] {
            let err = DockerIgnore::parse(text).map(|_| ());
            assert!(
                err.is_err_and(|e| e.contains("illegal exclusion pattern")),
                "{text:?}"
            );
        }
    }

    #[test]
    fn a_dockerignore_past_the_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join(".dockerignore");
        std::fs::write(&path, "a\n".repeat(MAX_FILE as usize / 2))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            DockerIgnore::load(dir.path()).is_ok(),
            "exactly at the limit"
        );
        std::fs::write(&path, "a\n".repeat(MAX_FILE as usize / 2 + 1))
            .unwrap_or_else(|e| panic!("{e}"));
        match DockerIgnore::load(dir.path()) {
            Err(err) => assert!(err.to_string().contains("larger than 1024 KiB"), "{err}"),
            Ok(_) => panic!("a .dockerignore past the limit was read"),
        }
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
        // A `..` that leaves the context matches nothing (Go's Clean keeps it).
        let d = rules("../secrets\na/../../b\n");
        assert!(!d.excluded("secrets/k"));
        assert!(!d.excluded("b"));
    }

    /// Cases where a glob library's syntax differs from Docker's; each would upload a file
    /// the user excluded, or leave out one they kept (checked against moby/patternmatcher's
    /// behaviour).
    #[test]
    fn docker_pattern_language() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            // `**` inside a segment crosses directories.
            ("**.key", &["x.key", "a/b/y.key"], &["x.pem"]),
            ("**secret", &["a/b/mysecret", "secret"], &["secrets2"]),
            // `**/` then text is whole names: the `/` stays a boundary.
            (
                "**/id_rsa",
                &["id_rsa", "a/b/id_rsa", "id_rsa/x"],
                &["id_rsa.pub", "x/my_id_rsa", "my_id_rsa"],
            ),
            (
                "**/test",
                &["test", "src/test", "src/test/a"],
                &["src/latest"],
            ),
            ("/**/id_rsa", &["id_rsa", "a/id_rsa"], &["a/my_id_rsa"]),
            ("**", &["anything", "a/b"], &[]),
            // Elsewhere `**` is whole directories, as Docker has it.
            (
                "config/**.key",
                &["config/.key", "config/x/.key"],
                &["config/a.key"],
            ),
            ("a/**b", &["a/x/b", "a/b"], &["a/xb", "a/x/c"]),
            ("logs/**", &["logs/a", "logs/a/b"], &["logsx"]),
            ("**/*.key", &["k.key", "a/b/k.key"], &["k.pem"]),
            (
                "**/secrets/**",
                &["secrets/a", "x/secrets/b/c"],
                &["secretsx/a"],
            ),
            // `?` is one character, not one byte.
            ("caf?", &["café", "cafe/x/y"], &["cafés", "caf"]),
            ("na?ve.key", &["naïve.key"], &["naive"]),
            // Braces are literal; `!` in a class is literal, `^` negates.
            ("{a,b}.txt", &["{a,b}.txt"], &["a.txt", "b.txt"]),
            ("[!a].txt", &["a.txt", "!.txt"], &["b.txt"]),
            ("[^a].txt", &["b.txt"], &["a.txt"]),
            ("[a-c]x", &["bx"], &["dx"]),
            ("foo{", &["foo{"], &["foo"]),
            ("\\*.txt", &["*.txt"], &["a.txt"]),
            ("a[/]b", &["a/b"], &["axb"]),
        ];
        for (pattern, excluded, kept) in cases {
            let d = rules(pattern);
            for path in *excluded {
                assert!(d.excluded(path), "{pattern:?} should exclude {path:?}");
            }
            for path in *kept {
                assert!(!d.excluded(path), "{pattern:?} should keep {path:?}");
            }
        }
        assert!(DockerIgnore::parse("a[b\n").is_err());
    }

    /// An exception by name re-includes that name only, not every name ending in it.
    #[test]
    fn an_exception_by_name_is_a_whole_name() {
        let d = rules("secrets/\n!**/config.yml\n");
        assert!(d.excluded("secrets/database-config.yml"));
        assert!(d.excluded("secrets/key.pem"));
        assert!(!d.excluded("secrets/config.yml"));
        assert!(!d.excluded("secrets/a/config.yml"));
    }

    /// A hostile `.dockerignore` of many `**/` in one rule (well under [`MAX_FILE`]) is
    /// matched without running out of stack.
    #[test]
    fn many_double_stars_in_a_rule_are_matched_in_bounded_stack() {
        let pattern = format!("{}x", "**/".repeat(300_000));
        let d = rules(&pattern);
        assert!(d.excluded("x") && d.excluded("a/b/x"));
        assert!(!d.excluded("a/b/y") && !d.excluded("a/bx"));
        assert!(rules(&"**/".repeat(300_000)).excluded("a/b"));
    }

    #[test]
    fn comments_bom_and_files_docker_always_sends() {
        // A byte-order mark (Windows editors) is not part of the first rule.
        let d = rules("\u{feff}.env\n*.pem\n");
        assert!(d.excluded(".env") && d.excluded("a.pem"));
        // Only a `#` in the first column starts a comment.
        let d = rules("  #notes\n# real comment\n");
        assert!(d.excluded("#notes"));
        assert!(!d.excluded("# real comment"));
        // Dockerfile and .dockerignore are sent whatever the rules say.
        let d = rules("*\n");
        assert!(!d.excluded("Dockerfile") && !d.excluded(".dockerignore"));
        assert!(d.excluded("app.js") && d.excluded("sub/Dockerfile"));
    }

    proptest::proptest! {
        /// Any pattern and path: no panic, and a pattern without wildcards excludes exactly
        /// that path and what is under it.
        #[test]
        fn patterns_never_panic_and_plain_ones_match_exactly(
            pattern in "[ab*?/.\\[\\]^!-]{0,10}",
            path in "[ab]{1,3}(/[ab.]{1,3}){0,3}",
        ) {
            if let Ok(d) = DockerIgnore::parse(&pattern) {
                let _ = d.excluded(&path);
            }
            let plain: String = pattern.chars().filter(|c| matches!(c, 'a' | 'b')).collect();
            if !plain.is_empty() {
                let d = DockerIgnore::parse(&plain).unwrap_or_else(|e| panic!("{e}"));
                let expected = path == plain || path.starts_with(&format!("{plain}/"));
                proptest::prop_assert_eq!(d.excluded(&path), expected, "{} {}", plain, path);
            }
        }
    }
}
