//! Redaction of command lines (`exec`'s and `run`'s command) for the audit trail.

use serde_json::Value;

use super::{
    REDACTED, clip, is_secret_name, mask_gateway_tokens, masked_value, redact_json, redact_query,
};

/// Longest command line an audit event keeps.
pub const MAX_AUDITED_COMMAND: usize = 1024;

/// Redacts a command line (`exec`'s and `run`'s command) for the audit trail, word by word
/// (words are split at any whitespace, which is kept as it was):
/// - `NAME=value` with a secret-looking name keeps the name: `DB_PASSWORD=[redacted]`;
/// - the word after a secret-looking flag (`--token X`), a secret-looking header name
///   (`X-Api-Key: X`), or `Bearer`/`Basic` is masked — a quoted value of several words whole;
/// - `user:password` after `-u`/`--user` (curl, …) keeps the user;
/// - a word that is a JSON object is redacted as event details are;
/// - a credential by its shape (a URL with a password, a gateway token) is masked;
/// - after a MySQL or MariaDB client's name, a password glued to `-p` (`mysql -phunter2`).
///
/// Quotes around a word are kept. The result is clipped to [`MAX_AUDITED_COMMAND`] bytes.
pub fn redact_command(command: &str) -> String {
    // Masking can change how the rest of a word reads, so that redacting the result again
    // would mask more (each found by fuzzing): a query value masked takes away the `/` that
    // ended a URL's authority, which then reaches an `@`; a stray control character masked
    // with a password leaves a word that now parses as JSON, whose `env` values are secret.
    // So the text is redacted again until nothing changes. Each pass only puts masks over
    // text; two or three are enough for any command seen.
    let mut out = redact_once(command);
    for _ in 0..8 {
        let again = redact_once(&out);
        if again == out {
            return clip(out, MAX_AUDITED_COMMAND);
        }
        out = again;
    }
    // Still changing: each pass uncovered more to mask (fuzzing built one such text from a
    // chain of URL-like words, each masked only once the one before it was). Hostile input
    // gets no more passes (each costs a walk over the text); none of it is kept.
    REDACTED.to_string()
}

/// One pass of [`redact_command`], unclipped.
fn redact_once(command: &str) -> String {
    let is_quote = |c: char| c == '\'' || c == '"';
    let mut out = String::with_capacity(command.len().min(MAX_AUDITED_COMMAND + 32));
    let mut next = Next::Keep;
    // A client that takes its password glued to `-p` has been named (in other programs `-p`
    // means anything: a port, a path).
    let mut glued_password = false;
    // Inside a masked quoted value that spans words: the quote that ends it.
    let mut masking_until: Option<char> = None;
    let mut rest = command;
    while !rest.is_empty() {
        let word_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (word, after) = rest.split_at(word_end);
        let space_end = after
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(after.len());
        let (space, after) = after.split_at(space_end);
        rest = after;
        if let Some(quote) = masking_until {
            // The rest of a masked quoted value, spacing included, up to its closing quote.
            if word.ends_with(quote) {
                masking_until = None;
                out.push(quote);
                out.push_str(space);
            }
            continue;
        }
        // The word without the quotes around it, which are kept as they are.
        let start = word.len() - word.trim_start_matches(is_quote).len();
        let inner = word[start..].trim_end_matches(is_quote);
        let (open, close) = (&word[..start], &word[start + inner.len()..]);
        let program = inner.rsplit_once('/').map_or(inner, |(_, name)| name);
        glued_password |= GLUED_PASSWORD_CLIENTS.contains(&program);
        let replaced = match std::mem::replace(&mut next, Next::Keep) {
            _ if inner.is_empty() => None,
            Next::Keep
                if glued_password
                    && inner.len() > 2
                    && inner.starts_with("-p")
                    && !inner.starts_with("--") =>
            {
                // `-phunter2`, `-p'hunter2'`, or `-p"two words"` masked up to its quote.
                match inner[2..].chars().next().filter(|c| is_quote(*c)) {
                    Some(q) if !close.starts_with(q) => {
                        out.push_str(open);
                        out.push_str("-p");
                        out.push(q);
                        out.push_str(REDACTED);
                        masking_until = Some(q);
                        continue;
                    }
                    Some(q) => Some(format!("-p{q}{REDACTED}")),
                    None => Some(format!("-p{REDACTED}")),
                }
            }
            // `Authorization: Bearer x`, `Authorization: Token x`: the scheme, then the secret.
            Next::Mask if is_auth_scheme(inner) || is_other_scheme(inner) => {
                next = Next::Mask;
                None
            }
            Next::Mask => {
                // A quoted value of several words: masked up to its closing quote.
                if let Some(quote) = open.chars().next()
                    && !close.starts_with(quote)
                {
                    masking_until = Some(quote);
                    out.push(quote);
                    out.push_str(REDACTED);
                    continue;
                }
                Some(REDACTED.to_string())
            }
            Next::UserPassword => match inner.split_once(':') {
                // The user is kept, unless it holds a token itself (found by fuzzing); a
                // quoted `"user:two words"` is masked up to its closing quote.
                Some((user, _)) => {
                    let masked = format!("{}:{REDACTED}", without_tokens(user));
                    if let Some(quote) = open.chars().next()
                        && !close.starts_with(quote)
                    {
                        out.push_str(open);
                        out.push_str(&masked);
                        masking_until = Some(quote);
                        continue;
                    }
                    Some(masked)
                }
                None => redact_command_word(inner, close, &mut next),
            },
            Next::Keep | Next::Until(_) => redact_command_word(inner, close, &mut next),
        };
        if let Next::Until(quote) = next {
            // `NAME="two words"`: the rest of the value, up to its closing quote, is masked.
            next = Next::Keep;
            out.push_str(open);
            out.push_str(replaced.as_deref().unwrap_or(inner));
            masking_until = Some(quote);
            continue;
        }
        match replaced {
            Some(masked) => {
                out.push_str(open);
                out.push_str(&masked);
                out.push_str(close);
            }
            None => out.push_str(word),
        }
        out.push_str(space);
    }
    out
}

/// Clients whose `-p` carries the password glued to it (`mysql -phunter2`; a separate word
/// after `-p` is not a password to them).
const GLUED_PASSWORD_CLIENTS: &[&str] = &[
    "mysql",
    "mysqldump",
    "mysqladmin",
    "mysqlimport",
    "mysqlshow",
    "mysqlcheck",
    "mysqlslap",
    "mysqlsh",
    "mysqlpump",
    "mysqlbinlog",
    "mariadb",
    "mariadb-dump",
    "mariadb-admin",
    "mariadb-import",
    "mariadb-show",
    "mariadb-check",
    "mariadb-binlog",
];

/// What [`redact_command`] does with the next word.
enum Next {
    Keep,
    /// It is a secret (the value of a secret flag or header).
    Mask,
    /// It is `user:password` (after `-u`/`--user`).
    UserPassword,
    /// This word opened a quoted secret (`NAME="two words"`): what follows, up to the quote,
    /// is part of it.
    Until(char),
}

/// `text` with any gateway token in it masked.
fn without_tokens(text: &str) -> std::borrow::Cow<'_, str> {
    mask_gateway_tokens(text).map_or(std::borrow::Cow::Borrowed(text), std::borrow::Cow::Owned)
}

/// A variable's or flag's name: letters, digits, `_`, `-`, `.`.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Reads as an HTTP header's name (`X-Api-Key`, `Authorization`), not a task name such as
/// `key:generate` or `credentials:edit`, which share the `name:value` shape.
fn is_header_name(name: &str) -> bool {
    let letters = |c: char| c.is_ascii_alphanumeric() || c == '-';
    !name.is_empty()
        && name.chars().all(letters)
        && (name.contains('-')
            || name.eq_ignore_ascii_case("authorization")
            || name.eq_ignore_ascii_case("cookie"))
}

/// Authorization schemes other than Bearer and Basic, recognised only right after a
/// secret header's name (a word like `token` elsewhere says nothing).
fn is_other_scheme(word: &str) -> bool {
    [
        "token",
        "digest",
        "negotiate",
        "ntlm",
        "apikey",
        "aws4-hmac-sha256",
    ]
    .iter()
    .any(|s| word.eq_ignore_ascii_case(s))
}

fn is_auth_scheme(word: &str) -> bool {
    word.eq_ignore_ascii_case("bearer") || word.eq_ignore_ascii_case("basic")
}

/// One word of a command on its own: its masked form, or `None` to keep it; sets `next` when
/// the word says what the following one is.
fn redact_command_word(inner: &str, close: &str, next: &mut Next) -> Option<String> {
    let flag = inner.trim_start_matches('-');
    if let Some((name, value)) = inner.split_once('=') {
        let name_bare = name.trim_start_matches('-');
        // Only a name (`DB_PASSWORD=`, `--token=`), not the text before the `=` of a URL's
        // query (`https://u:p@h/?signature=x`).
        if is_plain_name(name_bare) {
            if masked_value(name_bare).is_some() {
                // A credential given as the name (`rgw_…=1`): nothing of the word is kept.
                return Some(REDACTED.to_string());
            }
            if is_secret_name(name_bare) {
                if let Some(quote) = value.chars().next().filter(|c| *c == '"' || *c == '\'')
                    && !close.starts_with(quote)
                    && !(value.len() > 1 && value.ends_with(quote))
                {
                    *next = Next::Until(quote);
                }
                return Some(format!("{name}={REDACTED}"));
            }
            if matches!(name, "-u" | "--user")
                && let Some((user, _)) = value.split_once(':')
            {
                return Some(format!("{name}={}:{REDACTED}", without_tokens(user)));
            }
        }
    }
    // A word holding a URL is judged by its shape alone. Masking it can take away an `=` or
    // leave a word ending in `:`, which the rules below read: redacting the result again
    // masked more (found by fuzzing).
    if inner.starts_with('{')
        && let Ok(value) = serde_json::from_str::<Value>(inner)
    {
        let redacted = redact_json(value.clone());
        let text = (redacted != value).then(|| redacted.to_string());
        // Keys are not redacted as values are: a token in one is masked in the text. (Not
        // the URL rule over the whole text: JSON is judged by its structure.)
        return mask_gateway_tokens(text.as_deref().unwrap_or(inner)).or(text);
    }
    if inner.contains("://") {
        // Its password and tokens by shape, and its query as a query (`?api_key=…`).
        let masked = masked_value(inner);
        if let Some((base, query)) = masked.as_deref().unwrap_or(inner).split_once('?') {
            let redacted = redact_query(query);
            if redacted != query {
                return Some(format!("{base}?{redacted}"));
            }
        }
        return masked;
    }
    // A word that says what the next one is may still hold a credential itself (a token
    // glued to a flag): it goes through the shape check below too (found by fuzzing).
    if inner.contains('=') {
        // `NAME=value` of a name that is not secret: only a credential's shape counts.
    } else if inner.starts_with('-') && matches!(inner, "-u" | "--user") {
        *next = Next::UserPassword;
    } else if inner.starts_with('-') && is_secret_name(flag) {
        *next = Next::Mask;
    } else if let Some(header) = inner.strip_suffix(':')
        && is_secret_name(header)
    {
        *next = Next::Mask;
    } else if let Some((header, value)) = inner.split_once(':')
        && is_header_name(header)
        && !value.is_empty()
        && is_secret_name(header)
    {
        // A header and its value in one word: `X-Api-Key:abc`, `Authorization:Bearer abc`.
        if is_auth_scheme(value) {
            *next = Next::Mask;
        } else {
            return Some(format!("{header}:{REDACTED}"));
        }
    } else if is_auth_scheme(inner) {
        *next = Next::Mask;
    }
    masked_value(inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// A secret given the ways a command line gives one never reaches the audited text,
        /// whatever words and spacing surround it.
        #[test]
        fn secrets_in_commands_are_masked(
            before in proptest::collection::vec("(-u|--user|-H|[a-z./-]{1,8})", 0..4),
            after in proptest::collection::vec("[a-z./-]{1,8}", 0..4),
            space in "[ \t]{1,3}",
            shape in 0usize..7,
        ) {
            let secret = "Zq9Secret7Value";
            let given = match shape {
                0 => format!("DB_PASSWORD={secret}"),
                1 => format!("--token{space}{secret}"),
                2 => format!("--api-key='{secret}'"),
                3 => format!("-H{space}'Authorization:{space}Bearer{space}{secret}'"),
                4 => format!("-u{space}admin:{secret}"),
                5 => format!("/usr/bin/mysql{space}-uroot{space}-p{secret}"),
                _ => format!("postgres://u:{secret}@db/x"),
            };
            let command = [before.join(&space), given, after.join(&space)].join(&space);
            let audited = redact_command(&command);
            proptest::prop_assert!(!audited.contains(secret), "{command:?} → {audited:?}");
            proptest::prop_assert_eq!(redact_command(&audited), audited.clone(), "idempotent");
        }
    }

    #[test]
    fn a_command_that_never_settles_is_masked_whole() {
        // Found by the `redact` fuzz target (2026-12-03): still changing after nine passes.
        let command = concat!(
            "\n\n\n\n\n\n\n8\n{\"u[\":tf\nh##\"*\n\n\nsi\n\n\n\n{\n\n\n\n7\n{\"u[\":tb\nhA\n\n\n\n",
            "7\n{\"u[\":tb\nh\n8\nstgrxample.q\0\0\0\"]}\nurl=p\"ros\nuooki/\0el=p\"rosy\nuooki/\0",
            "epa~x=@oos\nwrl=p\"ros\nuooki/\0el=\0\0xPnv&!tps://a@x=@oost?Pros\nuooki/\0el=p\"ros",
            "\nuooki/\0epavx=@oost?a\0\0\0xPnv&!tps://a@x=@oot?a\0\0\0xPnv&!tps://a@x=@oost?Ppa@x",
            "=@oost?a\0\0\0xPnv&!tps://a@x=@ootpa@x=@oost?a\0\0\0xPn:v&!tps://Y@,=@oot?a\0\0\0xPn",
            "v&!tps://a@x=@oost?Pl=`\0\0R=0&!tps://Y@,=@oot?a\0\0\0xPnv&!tps://a@x=@oost?Pl=`\0\0",
            "R=0\0\0#//a@x=@oot?a\0\0\0xPnv&!tps://a@x=@oost?Ppa@x=@oost?a\0\0\0xPnv&!tps://a@x=@",
            "ootpa@x=@oost?a\0\0\0xPn:v&!tps#//Y@,=@oot?a\0\0\0xPnv&!tps://a@x=@oost?Pl=`\0\0R=0\0",
            "\0#f",
        );
        let audited = redact_command(command);
        assert_eq!(audited, REDACTED);
        assert_eq!(redact_command(&audited), audited, "idempotent");
        assert_eq!(
            redact_command("bin/rails db:migrate"),
            "bin/rails db:migrate"
        );
    }

    #[test]
    fn commands_keep_their_shape_and_lose_their_secrets() {
        for (command, audited) in [
            ("bin/rails db:migrate", "bin/rails db:migrate"),
            ("sh -c 'exit 3'", "sh -c 'exit 3'"),
            (
                "env DB_PASSWORD=hunter2 RAILS_ENV=production bin/job",
                "env DB_PASSWORD=[redacted] RAILS_ENV=production bin/job",
            ),
            (
                "deploy --token abc123 --app web",
                "deploy --token [redacted] --app web",
            ),
            ("login --password=hunter2", "login --password=[redacted]"),
            (
                "mysql --password\thunter2 db",
                "mysql --password\t[redacted] db",
            ),
            (
                "psql postgres://u:pw@db/x",
                "psql postgres://u:[redacted]@db/x",
            ),
            (
                "curl -H 'Authorization: Bearer abc' x",
                "curl -H 'Authorization: Bearer [redacted]' x",
            ),
            (
                "curl -H \"X-Api-Key: sk_live_abc123\" https://api",
                "curl -H \"X-Api-Key: [redacted]\" https://api",
            ),
            (
                "curl -u admin:hunter2 https://x",
                "curl -u admin:[redacted] https://x",
            ),
            (
                "curl --user=admin:hunter2 x",
                "curl --user=admin:[redacted] x",
            ),
            (
                "curl -d '{\"password\":\"hunter2\",\"a\":1}' x",
                "curl -d '{\"a\":1,\"password\":\"[redacted]\"}' x",
            ),
            (
                "login --password \"two words\" --app web",
                "login --password \"[redacted]\" --app web",
            ),
            ("echo \"API_KEY=abc\"", "echo \"API_KEY=[redacted]\""),
            ("use rgw_abcdef", "use [redacted]"),
            (
                "curl -H x-token:rgw_Zq9S3cretValue-0123456789_abc x",
                "curl -H x-token:[redacted] x",
            ),
            ("curl -H X-Api-Key:abc x", "curl -H X-Api-Key:[redacted] x"),
            (
                "curl -H 'Authorization:Bearer abc123' x",
                "curl -H 'Authorization:Bearer [redacted]' x",
            ),
            ("rake db:migrate", "rake db:migrate"),
            ("php artisan key:generate", "php artisan key:generate"),
            // Review: a URL's query is a query; JSON holding a URL is still JSON; quoted
            // values of several words and other schemes are masked whole.
            (
                "curl https://api/x?api_key=sk_live_1&a=1",
                "curl https://api/x?api_key=[redacted]&a=1",
            ),
            (
                "curl -d {\"callback\":\"https://x\",\"password\":\"pw\"}",
                "curl -d {\"callback\":\"https://x\",\"password\":\"[redacted]\"}",
            ),
            (
                "env DB_PASSWORD=\"correct horse\" bin/job",
                "env DB_PASSWORD=[redacted]\" bin/job",
            ),
            (
                "curl -u \"admin:pass word\" x",
                "curl -u \"admin:[redacted]\" x",
            ),
            (
                "curl -H 'Authorization: Token ghp_x' x",
                "curl -H 'Authorization: Token [redacted]' x",
            ),
            ("env rgw_Zq9S3cretValue_key=1 x", "env [redacted] x"),
            // Found by fuzzing: a token in a JSON key, masked on the first pass, not the second.
            (
                "-d {\"Key_rgs_Key_N1meeeeeeeeeeeeeeeeee\":\"k\"}",
                "-d {\"Key_[redacted]\":\"[redacted]\"}",
            ),
            // Found by fuzzing: a token as the user of `-u user:password`.
            (
                "curl -u rgw_0123456789abcdefghij:pw x",
                "curl -u [redacted]:[redacted] x",
            ),
            // Found by fuzzing: a flag that announces a secret, with a token glued to it.
            (
                "x --api-key,rgs_7777777771777jlin y",
                "x --api-key,[redacted] [redacted]",
            ),
            // Found by fuzzing: masked, this URL lost its `=` and then read as a header name
            // (`…"token":`) whose value follows; a URL is judged by its shape alone.
            (
                "x tps://a=b@h/\"token\": B",
                "x tps://[redacted]@h/\"token\": B",
            ),
            // Found by fuzzing: the URL's shape decides, however often it is redacted.
            (
                "curl tps://.cg=xa@p&signature=z",
                "curl tps://[redacted]@p&signature=z",
            ),
            // Found by fuzzing: masking the query value `c://u:p@h` took away the `/` that
            // ended the first URL's authority, so a second pass read `h&fo=…&w:v@h` as one,
            // with a password in it.
            (
                "x p?c://h&fo=c://u:p@h&w:v@h",
                "x p?c://h&fo=[redacted]&w:[redacted]@h",
            ),
            ("x p?c://h&fo=c://u:p@h&v@h", "x p?[redacted]"),
            // Found by fuzzing: the NUL in the password kept the word from being JSON; masked
            // with it, the word is JSON, and its `env` value a secret.
            (
                "-d {\"env\":\"h://u\u{0}@h/?x=y\"}",
                "-d {\"env\":\"h://[redacted]@h/?x=[redacted]\"}",
            ),
            ("bin/rails credentials:edit", "bin/rails credentials:edit"),
            (
                "mysql -p\"hunter 2\" -e 'select 1'",
                "mysql -p\"[redacted]\" -e 'select 1'",
            ),
            ("mysql -p'hunter2' app", "mysql -p'[redacted]' app"),
            (
                "mysql -h db -uroot -phunter2 app",
                "mysql -h db -uroot -p[redacted] app",
            ),
            (
                "sh -c 'mariadb-dump -pHunter2 app > /tmp/x'",
                "sh -c 'mariadb-dump -p[redacted] app > /tmp/x'",
            ),
            ("mysql -p app", "mysql -p app"),
            (
                "env MYSQL_PWD=hunter2 PWD=/app mysql",
                "env MYSQL_PWD=[redacted] PWD=/app mysql",
            ),
            ("bin/server -p8080", "bin/server -p8080"),
            ("  spaced   out  ", "  spaced   out  "),
            ("", ""),
        ] {
            assert_eq!(redact_command(command), audited, "{command}");
            assert_eq!(redact_command(audited), audited, "{command}: again");
        }
        assert!(redact_command(&"x".repeat(5000)).len() < MAX_AUDITED_COMMAND + 32);
    }
}
