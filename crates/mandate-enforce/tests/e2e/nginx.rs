//! The ghost-execution case through real nginx, running the shipped
//! `deploy/nginx/mandate.conf` with this test's ports.

use std::process::{Child, Command, Stdio};

use super::*;

/// nginx in a process group of its own: stopped gracefully (SIGQUIT to the
/// master, which stops its workers), waited for, and then the whole group is
/// killed, so no worker outlives the test holding a listening socket.
struct Nginx(Child);

fn signal_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let pgid = self.0.id();
        let _ = Command::new("kill")
            .args(["-QUIT", &pgid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        signal_group(pgid, "-KILL");
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nginx_binary() -> String {
    for candidate in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if std::path::Path::new(candidate).exists() {
            return candidate.to_owned();
        }
    }
    panic!("nginx is required for this test (Debian package `nginx`; .ci/run installs it)");
}

fn start_nginx(
    dir: &std::path::Path,
    upstream: SocketAddr,
    gateway: SocketAddr,
) -> (Nginx, SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/nginx/mandate.conf"
    ))
    .unwrap();
    let conf = shipped
        .replace("127.0.0.1:9000", &upstream.to_string())
        .replace("127.0.0.1:8081", &gateway.to_string())
        .replace("127.0.0.1:8088", &port.to_string());
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("tmp")).unwrap();
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    std::fs::write(prefix.join("mandate.conf"), conf).unwrap();
    let child = {
        use std::os::unix::process::CommandExt as _;
        Command::new(nginx_binary())
            .arg("-p")
            .arg(&prefix)
            .args(["-c", "mandate.conf", "-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(port).is_err() {
        assert!(Instant::now() < deadline, "nginx did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (Nginx(child), port)
}

#[test]
fn ghost_execution_through_nginx_auth_request() {
    let dir = temp("nginx");
    let (authority, _state) = start_authority(&dir, "127.0.0.1:0");
    let upstream = stub_github();
    let (_, mandate) = grant(&dir, authority.addr, &pr_request(123));
    let (gateway, gw) = start_gateway(
        &dir,
        authority.addr,
        upstream.addr,
        Delivery::Push,
        "https://api.github.com",
    );
    let (_nginx, port) = start_nginx(&dir, upstream.addr, gateway.addr);

    let (st, body) = read_pr(port, &mandate, 123);
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["number"], 123);
    let (st, body) = read_pr(port, &mandate, 124);
    assert_eq!(st, 403);
    assert_eq!(body["reasons"], json!(["resource_not_permitted"]));

    // A mandate header near 10 KB (a three-hop chain's size) gets a
    // decision, not nginx's "400 Request Header Or Cookie Too Large".
    let big = format!("{mandate}~{}", "A".repeat(10 * 1024));
    let (st, body) = read_pr(port, &big, 123);
    assert_eq!(st, 403, "{body}");
    assert!(body["reasons"].is_array(), "{body}");

    merge(authority.addr, 123, "delivery-nginx");
    let (_, body) = until_denied(port, &mandate, 123);
    assert_eq!(body["reasons"], json!(["completed"]), "{body}");
    gw.stop();
}
