//! The status page in a real browser (headless Chromium from Debian, driven by Playwright from
//! PyPI; `.ci/run` installs both): it shows the server, searches, and marks each hit as checked
//! by the browser's own WebCrypto Ed25519, and flags a hit tampered in transit
//! (`tests/status_page.py`). Screenshots land in `target/status-page*.png`.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn named(config: &mut souk_server::config::Config) {
    config.server_name = "Browser test".into();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_verifies_search_results_in_the_browser() {
    let python = test_python();
    let chromium =
        std::env::var("SOUK_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string());
    assert!(
        python.exists() && std::path::Path::new(&chromium).exists(),
        "the browser test needs Chromium at {chromium} (Debian: apt-get install chromium) and \
         Playwright in {} (pip install playwright); .ci/run installs both, or set SOUK_CHROMIUM \
         and SOUK_TEST_PYTHON",
        python.display()
    );
    let s = TestServer::start_with(Backend::Sqlite, named).await;
    let key = seller(95);
    for (i, title) in ["Blue teapot", "Cast iron teapot", "Glass teapot"]
        .iter()
        .enumerate()
    {
        let (status, body) = s
            .publish(&listing(&key, &format!("teapot-{i}"), title, 30))
            .await;
        assert!(status.is_success(), "{body}");
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = souk_server::server::app(std::sync::Arc::clone(&s.state));
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });

    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    let shots = [
        target.join("status-page.png"),
        target.join("status-page-tampered.png"),
    ];
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/status_page.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .arg(format!("http://{addr}/"))
        .arg("3")
        .args(&shots)
        .env("SOUK_CHROMIUM", &chromium)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the browser test");
    let status = wait_for_exit(&mut child, Duration::from_secs(120), "the browser test").await;
    let output = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(status.success(), "browser test failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("STATUS_PAGE_OK 3"), "{stdout}\n{stderr}");
    for shot in &shots {
        let size = std::fs::metadata(shot).map(|m| m.len()).unwrap_or(0);
        assert!(size > 1_000, "screenshot {} was saved", shot.display());
    }
}
