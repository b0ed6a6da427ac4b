//! The process's open-file limit, raised to fit the connections the gateway is set to serve.

use gateway::Config;

/// Descriptors the gateway needs besides its clients' connections: the database (pool, audit
/// writer, per-thread readers), the rack connection pool, logs, the listener.
const RESERVED: u64 = 256;

/// Raises the soft limit on open files as far as the hard limit allows (the default soft limit
/// is often 1024, far below what `MAX_CONNECTIONS` and `MAX_WEBSOCKETS` need: a client's
/// connection may hold one to the rack for its request, and a WebSocket session holds two
/// sockets, the client's and the rack's), and warns when that is still too few.
pub fn raise_open_files(config: &Config) {
    let needed = 2 * config.max_connections as u64 + 2 * config.websockets.total as u64 + RESERVED;
    match rlimit::increase_nofile_limit(needed) {
        Ok(limit) if limit < needed => tracing::warn!(
            limit,
            needed,
            "the open-file limit is below what MAX_CONNECTIONS and MAX_WEBSOCKETS need: raise \
             it (systemd: LimitNOFILE=) or lower them, or clients may be refused when busy"
        ),
        Ok(limit) => tracing::debug!(limit, needed, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "could not read or raise the open-file limit"),
    }
}
