//! `souk-testkit-esplora`: the Esplora-shaped chain stand-in as a process, for tests written in
//! other languages (the Python and Kotlin binding tests). It binds a free loopback port, prints
//! `listening on http://127.0.0.1:PORT` on stdout, and serves until its standard input closes
//! or it is signalled — so a test that dies takes the chain with it.
//!
//! Usage: `souk-testkit-esplora [regtest|testnet|signet|bitcoin]` (default `regtest`).

use std::io::{Read, Write};
use std::process::ExitCode;

use bitcoin::Network;
use souk_testkit::Esplora;

fn main() -> ExitCode {
    let network = match std::env::args().nth(1).as_deref() {
        None | Some("regtest") => Network::Regtest,
        Some("testnet") => Network::Testnet,
        Some("signet") => Network::Signet,
        Some("bitcoin") => Network::Bitcoin,
        Some(other) => {
            eprintln!(
                "souk-testkit-esplora: unknown network {other:?} (regtest, testnet, signet or bitcoin)"
            );
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("souk-testkit-esplora: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let chain = match runtime.block_on(Esplora::start(network)) {
        Ok(chain) => chain,
        Err(e) => {
            eprintln!("souk-testkit-esplora: cannot bind a loopback port: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout();
    if writeln!(stdout, "listening on {}", chain.url)
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    // Serve until stdin reaches its end (the parent closed it or exited).
    let mut sink = [0u8; 256];
    let mut stdin = std::io::stdin();
    while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
    drop(chain);
    ExitCode::SUCCESS
}
