//! Standard input for exec sessions: read on a thread of its own (a terminal read blocks),
//! handed over in chunks; the channel closes at end of input.

use std::io::Read;

use tokio::sync::mpsc;

/// Starts reading stdin; the receiver yields chunks and ends at EOF.
pub fn spawn_reader() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    });
    rx
}

/// All of stdin as text (for `--token -` and `env set` from a pipe).
pub fn read_all() -> std::io::Result<String> {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s)?;
    Ok(s)
}
