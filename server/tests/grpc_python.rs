//! An outside client: Python's `grpcio` with `grpcio-reflection` learns the services through
//! reflection alone, searches, and follows the feed from its backlog into live envelopes that
//! this test publishes once the client says it has caught up (`tests/grpc_client.py`).
//!
//! The interpreter is `SOUK_TEST_PYTHON`, by default the virtual environment `.ci/run`
//! makes in `target/test-venv`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_learns_the_api_by_reflection_and_follows_the_feed() {
    let python = test_python();
    assert!(
        python.exists(),
        "{} is missing. The outside gRPC client test needs Python with grpcio and \
         grpcio-reflection: `python3 -m venv target/test-venv && target/test-venv/bin/python -m \
         pip install grpcio grpcio-reflection protobuf` (.ci/run does this), or point \
         SOUK_TEST_PYTHON at such an interpreter.",
        python.display()
    );
    let s = TestServer::start(Backend::Sqlite).await;
    let key = seller(90);
    let backlog: Vec<Vec<u8>> = (0..30)
        .map(|i| {
            listing(&key, &format!("item-{i}"), &format!("Item {i}"), 100 - i)
                .envelope()
                .bytes()
                .to_vec()
        })
        .collect();
    s.state.ingestor.ingest(backlog).await.expect("backlog");
    let grpc = s.grpc().await;

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc_client.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .arg(grpc.addr.to_string())
        .args(["30", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the Python client");
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    let mut published = false;
    while let Ok(Some(line)) = tokio::time::timeout(
        deadline.saturating_duration_since(Instant::now()),
        lines.recv(),
    )
    .await
    {
        println!("python: {line}");
        if line.starts_with("CAUGHT_UP") && !published {
            let live: Vec<Vec<u8>> = (0..5)
                .map(|i| {
                    listing(&key, &format!("live-{i}"), &format!("Live {i}"), 5)
                        .envelope()
                        .bytes()
                        .to_vec()
                })
                .collect();
            s.state.ingestor.ingest(live).await.expect("live envelopes");
            published = true;
        }
        seen.push(line);
    }
    let status = wait_for_exit(&mut child, Duration::from_secs(10), "the Python client").await;
    assert!(status.success(), "the Python client failed: {seen:?}");
    assert!(seen.iter().any(|l| l.starts_with("SERVICES ")), "{seen:?}");
    assert!(seen.iter().any(|l| l.starts_with("SEARCH 30")), "{seen:?}");
    assert!(
        seen.iter().any(|l| l.starts_with("FOLLOWED 35")),
        "{seen:?}"
    );
}
