//! A tiny shell-like interpreter behind exec sessions, enough for tests to
//! check round trips:
//!
//! * `echo hello` prints `hello\n` and exits 0; `exit 3` exits 3;
//!   `sh -c 'exit 3'` exits 3; `false`, `true`, `a && b || c`, `a; b` work;
//!   `$VAR`, `${VAR}` and `$?` expand (VAR from the release environment);
//! * `sh`/`bash` without `-c` is interactive: each stdin line is echoed back
//!   (`line\n`), then run; `exit N` ends the session with N; end of stdin
//!   ends it with the last status;
//! * `cat` copies stdin to the output until end of stdin; `sleep N` waits;
//!   `env`/`printenv [NAME]`, `hostname` (the process id), `whoami`, `pwd`;
//! * anything else prints `sh: 1: <cmd>: not found` and gives status 127.
//!
//! The interpreter talks to the socket only through channels, so it runs (and
//! is tested) without one.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// Input from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StdinEvent {
    /// Bytes typed or piped.
    Data(Vec<u8>),
    /// End of stdin (the client's empty binary message).
    Eof,
}

/// The client went away or the server is shutting down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aborted;

/// Result of a command: keep going with a status, or leave the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Status(i32),
    Exit(i32),
}

type Step<'a> = Pin<Box<dyn Future<Output = Result<Flow, Aborted>> + Send + 'a>>;

/// One exec session.
pub struct Session {
    stdin: mpsc::Receiver<StdinEvent>,
    out: mpsc::Sender<String>,
    shutdown: watch::Receiver<bool>,
    buf: Vec<u8>,
    eof: bool,
    env: BTreeMap<String, String>,
    hostname: String,
    last: i32,
}

impl Session {
    /// A session reading `stdin`, writing `out`, with the process's `env` and `hostname`.
    pub fn new(
        stdin: mpsc::Receiver<StdinEvent>,
        out: mpsc::Sender<String>,
        shutdown: watch::Receiver<bool>,
        env: BTreeMap<String, String>,
        hostname: String,
    ) -> Self {
        Self {
            stdin,
            out,
            shutdown,
            buf: Vec::new(),
            eof: false,
            env,
            hostname,
            last: 0,
        }
    }

    /// Treats stdin as already ended (`Disable-Stdin: true`).
    pub fn with_stdin_closed(mut self) -> Self {
        self.eof = true;
        self
    }

    /// Runs `command` (the exec `Command` header) and returns its exit code.
    pub async fn run(&mut self, command: &str) -> Result<i32, Aborted> {
        let flow = if command.trim().is_empty() {
            self.interactive().await?
        } else {
            self.script(command).await?
        };
        Ok(match flow {
            Flow::Status(c) | Flow::Exit(c) => c,
        })
    }

    async fn write(&mut self, s: impl Into<String>) -> Result<(), Aborted> {
        self.out.send(s.into()).await.map_err(|_| Aborted)
    }

    /// Waits for one stdin event (buffering data).
    async fn recv(&mut self) -> Result<(), Aborted> {
        if *self.shutdown.borrow() {
            return Err(Aborted);
        }
        tokio::select! {
            ev = self.stdin.recv() => match ev {
                Some(StdinEvent::Data(d)) => self.buf.extend_from_slice(&d),
                Some(StdinEvent::Eof) => self.eof = true,
                None => return Err(Aborted),
            },
            _ = self.shutdown.changed() => return Err(Aborted),
        }
        Ok(())
    }

    /// The next input line (ended by `\n`, `\r` or `\r\n`), or `None` at end of stdin.
    async fn read_line(&mut self) -> Result<Option<String>, Aborted> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n' || *b == b'\r') {
                let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
                let term = line.pop();
                if term == Some(b'\r') && self.buf.first() == Some(&b'\n') {
                    self.buf.remove(0);
                }
                return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
            }
            if self.eof {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let line = std::mem::take(&mut self.buf);
                return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
            }
            self.recv().await?;
        }
    }

    async fn sleep(&mut self, d: Duration) -> Result<(), Aborted> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            if self.eof {
                // Nothing more can arrive but a disconnect; only watch shutdown.
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => return Ok(()),
                    _ = self.shutdown.changed() => return Err(Aborted),
                    ev = self.stdin.recv() => if ev.is_none() { return Err(Aborted) },
                }
            } else {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => return Ok(()),
                    r = self.recv() => r?,
                }
            }
        }
    }

    /// Interactive shell: echo each line, run it, stop at `exit` or end of stdin.
    fn interactive(&mut self) -> Step<'_> {
        Box::pin(async move {
            while let Some(line) = self.read_line().await? {
                self.write(format!("{line}\n")).await?;
                if let Flow::Exit(c) = self.script(&line).await? {
                    return Ok(Flow::Status(c));
                }
            }
            Ok(Flow::Status(self.last))
        })
    }

    /// Runs a command list.
    fn script<'a>(&'a mut self, text: &'a str) -> Step<'a> {
        Box::pin(async move {
            let commands = match parse(text) {
                Ok(c) => c,
                Err(msg) => {
                    self.write(format!("sh: 1: {msg}\n")).await?;
                    self.last = 2;
                    return Ok(Flow::Exit(2));
                }
            };
            for (op, words) in commands {
                let run = match op {
                    Op::Seq => true,
                    Op::And => self.last == 0,
                    Op::Or => self.last != 0,
                };
                if !run || words.is_empty() {
                    continue;
                }
                let argv: Vec<String> = words.iter().map(|w| self.expand(w)).collect();
                match self.simple(argv).await? {
                    Flow::Status(s) => self.last = s,
                    Flow::Exit(c) => {
                        self.last = c;
                        return Ok(Flow::Exit(c));
                    }
                }
            }
            Ok(Flow::Status(self.last))
        })
    }

    fn expand(&self, word: &[Piece]) -> String {
        word.iter()
            .map(|p| match p {
                Piece::Lit(s) => s.clone(),
                Piece::Var(v) if v == "?" => self.last.to_string(),
                Piece::Var(v) if v == "HOSTNAME" && !self.env.contains_key(v) => {
                    self.hostname.clone()
                }
                Piece::Var(v) => self.env.get(v).cloned().unwrap_or_default(),
            })
            .collect()
    }

    /// Runs one simple command.
    fn simple(&mut self, argv: Vec<String>) -> Step<'_> {
        Box::pin(async move {
            let name = argv[0].rsplit('/').next().unwrap_or_default().to_string();
            let args = &argv[1..];
            let status = match name.as_str() {
                "sh" | "bash" | "ash" | "dash" | "zsh" => {
                    let script_at = args.iter().position(|a| {
                        a.starts_with('-') && !a.starts_with("--") && a.contains('c')
                    });
                    let flow = match script_at {
                        Some(i) => match args.get(i + 1) {
                            Some(script) => {
                                let script = script.clone();
                                self.script(&script).await?
                            }
                            None => {
                                self.write(format!("{name}: -c: option requires an argument\n"))
                                    .await?;
                                Flow::Status(2)
                            }
                        },
                        None => self.interactive().await?,
                    };
                    match flow {
                        Flow::Status(c) | Flow::Exit(c) => c,
                    }
                }
                "exit" => {
                    let code = match args.first() {
                        None => self.last,
                        Some(a) => match a.parse::<i64>() {
                            Ok(n) => n.rem_euclid(256) as i32,
                            Err(_) => {
                                self.write(format!("sh: 1: exit: Illegal number: {a}\n"))
                                    .await?;
                                2
                            }
                        },
                    };
                    return Ok(Flow::Exit(code));
                }
                "echo" => {
                    let (newline, words) = match args.first().map(String::as_str) {
                        Some("-n") => (false, &args[1..]),
                        _ => (true, args),
                    };
                    let mut s = words.join(" ");
                    if newline {
                        s.push('\n');
                    }
                    if !s.is_empty() {
                        self.write(s).await?;
                    }
                    0
                }
                "true" | ":" | "cd" => 0,
                "false" => 1,
                "cat" => {
                    if let Some(f) = args.iter().find(|a| *a != "-") {
                        self.write(format!("cat: {f}: No such file or directory\n"))
                            .await?;
                        1
                    } else {
                        loop {
                            if !self.buf.is_empty() {
                                let chunk = String::from_utf8_lossy(&std::mem::take(&mut self.buf))
                                    .into_owned();
                                self.write(chunk).await?;
                            } else if self.eof {
                                break 0;
                            } else {
                                self.recv().await?;
                            }
                        }
                    }
                }
                "sleep" => match args.first().and_then(|a| parse_sleep(a)) {
                    Some(d) => {
                        self.sleep(d).await?;
                        0
                    }
                    None => {
                        let a = args.first().cloned().unwrap_or_default();
                        self.write(format!("sleep: invalid time interval '{a}'\n"))
                            .await?;
                        1
                    }
                },
                "env" | "printenv" => match args.first() {
                    Some(k) if name == "printenv" => match self.env.get(k).cloned() {
                        Some(v) => {
                            self.write(format!("{v}\n")).await?;
                            0
                        }
                        None => 1,
                    },
                    _ => {
                        let mut s: String =
                            self.env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
                        s.push_str(&format!("HOSTNAME={}\n", self.hostname));
                        self.write(s).await?;
                        0
                    }
                },
                "hostname" => {
                    let h = format!("{}\n", self.hostname);
                    self.write(h).await?;
                    0
                }
                "whoami" => {
                    self.write("app\n").await?;
                    0
                }
                "pwd" => {
                    self.write("/app\n").await?;
                    0
                }
                _ => {
                    self.write(format!("sh: 1: {}: not found\n", argv[0]))
                        .await?;
                    127
                }
            };
            Ok(Flow::Status(status))
        })
    }
}

fn parse_sleep(a: &str) -> Option<Duration> {
    let (num, mult) = match a.chars().last()? {
        's' => (&a[..a.len() - 1], 1.0),
        'm' => (&a[..a.len() - 1], 60.0),
        'h' => (&a[..a.len() - 1], 3600.0),
        _ => (a, 1.0),
    };
    let secs: f64 = num.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64((secs * mult).min(1e9)))
}

/// How a command joins the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Seq,
    And,
    Or,
}

/// Part of a word: literal text or a variable to expand.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Var(String),
}

type Word = Vec<Piece>;

/// Splits a command list into `(operator before it, words)`, handling quotes,
/// backslashes, comments, `;`, `&&`, `||`, newlines (a lone `|` or `&` acts as `;`).
fn parse(text: &str) -> Result<Vec<(Op, Vec<Word>)>, String> {
    let mut commands: Vec<(Op, Vec<Word>)> = vec![(Op::Seq, Vec::new())];
    let mut word: Word = Vec::new();
    let mut in_word = false;
    let mut chars = text.chars().peekable();

    fn push_lit(word: &mut Word, c: char) {
        if let Some(Piece::Lit(s)) = word.last_mut() {
            s.push(c);
        } else {
            word.push(Piece::Lit(c.to_string()));
        }
    }
    fn end_word(commands: &mut [(Op, Vec<Word>)], word: &mut Word, in_word: &mut bool) {
        if *in_word {
            if let Some(last) = commands.last_mut() {
                last.1.push(std::mem::take(word));
            }
            *in_word = false;
        }
    }
    fn var(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<Piece> {
        match chars.peek().copied() {
            Some('?') => {
                chars.next();
                Some(Piece::Var("?".into()))
            }
            Some('{') => {
                chars.next();
                let name: String = chars.by_ref().take_while(|c| *c != '}').collect();
                Some(Piece::Var(name))
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let mut name = String::new();
                while let Some(c) = chars.peek().copied() {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        name.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                Some(Piece::Var(name))
            }
            _ => None,
        }
    }

    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => end_word(&mut commands, &mut word, &mut in_word),
            '\n' | ';' | '&' | '|' => {
                end_word(&mut commands, &mut word, &mut in_word);
                let op = match (c, chars.peek()) {
                    ('&', Some('&')) => {
                        chars.next();
                        Op::And
                    }
                    ('|', Some('|')) => {
                        chars.next();
                        Op::Or
                    }
                    _ => Op::Seq,
                };
                commands.push((op, Vec::new()));
            }
            '#' if !in_word => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        commands.push((Op::Seq, Vec::new()));
                        break;
                    }
                }
            }
            '\'' => {
                in_word = true;
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == '\'' {
                        closed = true;
                        break;
                    }
                    push_lit(&mut word, c);
                }
                if !closed {
                    return Err("Syntax error: Unterminated quoted string".into());
                }
                if word.is_empty() {
                    word.push(Piece::Lit(String::new()));
                }
            }
            '"' => {
                in_word = true;
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => match chars.peek().copied() {
                            Some(n @ ('"' | '\\' | '$' | '`')) => {
                                chars.next();
                                push_lit(&mut word, n);
                            }
                            _ => push_lit(&mut word, '\\'),
                        },
                        '$' => match var(&mut chars) {
                            Some(p) => word.push(p),
                            None => push_lit(&mut word, '$'),
                        },
                        c => push_lit(&mut word, c),
                    }
                }
                if !closed {
                    return Err("Syntax error: Unterminated quoted string".into());
                }
                if word.is_empty() {
                    word.push(Piece::Lit(String::new()));
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next()
                    && n != '\n'
                {
                    push_lit(&mut word, n);
                }
            }
            '$' => {
                in_word = true;
                match var(&mut chars) {
                    Some(p) => word.push(p),
                    None => push_lit(&mut word, '$'),
                }
            }
            c => {
                in_word = true;
                push_lit(&mut word, c);
            }
        }
    }
    end_word(&mut commands, &mut word, &mut in_word);
    Ok(commands)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Harness {
        stdin: mpsc::Sender<StdinEvent>,
        out: mpsc::Receiver<String>,
        task: tokio::task::JoinHandle<Result<i32, Aborted>>,
        _shutdown: watch::Sender<bool>,
    }

    fn start(command: &str) -> Harness {
        let (in_tx, in_rx) = mpsc::channel(16);
        let (out_tx, out_rx) = mpsc::channel(16);
        let (sd_tx, sd_rx) = watch::channel(false);
        let env: BTreeMap<String, String> = [("SECRET".to_string(), "hunter2".to_string())].into();
        let command = command.to_string();
        let task = tokio::spawn(async move {
            let mut s = Session::new(in_rx, out_tx, sd_rx, env, "web-abc-12345".into());
            s.run(&command).await
        });
        Harness {
            stdin: in_tx,
            out: out_rx,
            task,
            _shutdown: sd_tx,
        }
    }

    async fn finish(mut h: Harness) -> (String, Result<i32, Aborted>) {
        let code = match h.task.await {
            Ok(c) => c,
            Err(_) => Err(Aborted),
        };
        let mut out = String::new();
        while let Ok(s) = h.out.try_recv() {
            out.push_str(&s);
        }
        (out, code)
    }

    async fn run(command: &str, input: &[&str]) -> (String, Result<i32, Aborted>) {
        let h = start(command);
        for i in input {
            let _ = h.stdin.send(StdinEvent::Data(i.as_bytes().to_vec())).await;
        }
        let _ = h.stdin.send(StdinEvent::Eof).await;
        finish(h).await
    }

    #[tokio::test]
    async fn simple_commands() {
        assert_eq!(run("echo hello", &[]).await, ("hello\n".into(), Ok(0)));
        assert_eq!(run("exit 3", &[]).await, (String::new(), Ok(3)));
        assert_eq!(run("sh -c 'exit 3'", &[]).await, (String::new(), Ok(3)));
        assert_eq!(
            run("bash -c 'echo a; exit 4'", &[]).await,
            ("a\n".into(), Ok(4))
        );
        assert_eq!(
            run("false || echo fallback", &[]).await,
            ("fallback\n".into(), Ok(0))
        );
        assert_eq!(run("false && echo no", &[]).await, (String::new(), Ok(1)));
        assert_eq!(
            run("sh -c 'echo $SECRET'", &[]).await,
            ("hunter2\n".into(), Ok(0))
        );
        assert_eq!(
            run("sh -c 'false; echo $?'", &[]).await,
            ("1\n".into(), Ok(0))
        );
        assert_eq!(
            run("nope", &[]).await,
            ("sh: 1: nope: not found\n".into(), Ok(127))
        );
        assert_eq!(run("exit 256", &[]).await, (String::new(), Ok(0)));
        assert_eq!(run("echo 'unterminated", &[]).await.1, Ok(2));
        assert_eq!(run("hostname", &[]).await.0, "web-abc-12345\n");
    }

    #[tokio::test]
    async fn interactive_and_cat() {
        let (out, code) = run("sh", &["hello\n", "echo hi\r", "exit 5\n", "never\n"]).await;
        assert_eq!(out, "hello\nsh: 1: hello: not found\necho hi\nhi\nexit 5\n");
        assert_eq!(code, Ok(5));
        let (out, code) = run("cat", &["abc", "def\n"]).await;
        assert_eq!(out, "abcdef\n");
        assert_eq!(code, Ok(0));
        let (_, code) = run("bash", &["false\n"]).await;
        assert_eq!(code, Ok(1));
    }

    #[tokio::test]
    async fn disconnect_aborts() {
        let h = start("sleep 3600");
        let Harness {
            stdin,
            out,
            task,
            _shutdown,
        } = h;
        drop(stdin);
        let res = tokio::time::timeout(Duration::from_secs(5), task).await;
        assert!(matches!(res, Ok(Ok(Err(Aborted)))));
        drop(out);
    }
}
