//! `rack-gateway`: the command-line client of rack-gateway. It signs in to a gateway, keeps
//! one credential per rack in `~/.config/rack-gateway/config.json`, runs the everyday Convox
//! commands natively through the gateway, and hands anything else to the stock `convox` CLI.

mod browser;
mod cli;
mod commands;
mod config;
mod context;
mod dockerignore;
mod error;
mod explain;
mod gateway_api;
mod mfa;
mod output;
mod passthrough;
mod pkce;
mod stdin;
mod tarball;
mod terminal;
mod upload;

use clap::Parser;

fn main() {
    convox_api::client::install_crypto_provider();
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fail(&anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    let code = runtime.block_on(commands::run(cli));
    // Do not wait for a stdin reader thread blocked on a terminal read.
    runtime.shutdown_background();
    match code {
        // A status the rack reported that a process cannot exit with (256 would read as 0,
        // success) becomes 255, a failure.
        Ok(code) => std::process::exit(if (0..=255).contains(&code) { code } else { 255 }),
        Err(e) => fail(&anyhow::Error::new(e)),
    }
}

/// Prints `ERROR: …` (as `convox` does) and exits 1.
fn fail(e: &anyhow::Error) -> ! {
    output::close_open_line();
    // `{e}`, not `{e:#}`: every error here already says its cause in its own message, and the
    // alternate form would repeat it ("…: Permission denied: Permission denied").
    // Messages carry the gateway's and the rack's words: printable, never escape sequences.
    eprintln!("ERROR: {}", output::printable(&e.to_string()));
    std::process::exit(1)
}
