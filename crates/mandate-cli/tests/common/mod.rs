//! What the process-level tests share: the binary, scratch directories,
//! free ports, children stopped gracefully, waiting for a listener, and
//! caller tokens from the local issuer.

#![allow(dead_code, reason = "each test file uses a part")]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mandate")
}

/// A fresh scratch directory named after the test.
pub fn temp(prefix: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "mandate-{prefix}-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A loopback port for a server a test starts as a process. Not one the
/// kernel hands out for `bind(:0)` (that range is 32768 and up here): a port
/// taken that way and released is free for any other test process to be
/// given in the meantime, and two tests then talk to each other's servers.
/// Ports here come from 20000-31999, each claimed by creating a file in a
/// directory that every test process of the run shares (`NEXTEST_RUN_ID`;
/// `create_new` is atomic across processes), so no two tests of a run get
/// the same one.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let run = std::env::var("NEXTEST_RUN_ID")
        .unwrap_or_else(|_| format!("process-{}", std::process::id()));
    let dir = std::env::temp_dir().join("mandate-test-ports").join(run);
    std::fs::create_dir_all(&dir).unwrap();
    let seed = u64::from(std::process::id())
        ^ u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos(),
        );
    let start = seed.wrapping_mul(6_364_136_223_846_793_005) >> 33;
    for _ in 0..12_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(20_000 + (start + n) % 12_000).unwrap();
        let claimed = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dir.join(port.to_string()))
            .is_ok();
        if claimed && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in 20000-31999");
}

/// A child process stopped gracefully (SIGTERM, then waited for) when
/// dropped; killed only if it does not stop within 10 s.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.0.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while let Ok(None) = self.0.try_wait() {
                if Instant::now() > deadline {
                    let _ = self.0.kill();
                    let _ = self.0.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

pub fn wait_for_port(child: &mut Child, port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited: {status}");
        }
        assert!(Instant::now() < deadline, "{what} did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A caller token of tenant `acme` from the local issuer of `data`.
pub fn token(data: &Path, sub: &str, role: &str) -> String {
    let out = Command::new(bin())
        .args([
            "token",
            "--sub",
            sub,
            "--role",
            role,
            "--tenant",
            "acme",
            "--data-dir",
        ])
        .arg(data)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
