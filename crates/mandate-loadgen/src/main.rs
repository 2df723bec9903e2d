//! `mandate-loadgen`: the HTTP/1.1 load generator of `scripts/load-*.sh`.
//!
//! Why not wrk: the load shares the machine's two cores with the server, and
//! every request here needs a value of its own (a DPoP proof, used once).
//! wrk gets that from a Lua `request()` per request, which cost it about a
//! core at 10k requests/s; and wrk starts each thread as soon as that
//! thread's Lua `init` has run, before the next thread's, and before the
//! clock starts, so the requests the first thread completes while the others
//! read their proofs are counted in a rate they were not timed in.
//!
//! Here every connection is opened and every input read before the clock
//! starts; the clock starts when all connections start; a response that
//! completes after the clock stops is not counted. A request is formatted
//! into a buffer its connection reuses (the template's fixed bytes and the
//! line, copied), so the per-request cost is a copy, one `write` and the
//! `read`s of the answer.
//!
//! ```text
//! mandate-loadgen http://127.0.0.1:8080/access/v1/evaluation -c 32 -d 10 -m POST \
//!   -H 'Content-Type: application/json' --body-file body.json --lines proofs.txt \
//!   --expect '"decision":true'
//! ```
//!
//! Every `@LINE@` in a header or the body is replaced by the next line of
//! `--lines`; each line is used once. Every `@CYCLE@` is replaced by a line
//! of `--cycle`, request `i` taking line `i` modulo their number: values a
//! real load repeats (the mandates of many agents), beside the fresh ones. The output has wrk's shape
//! (`Requests/sec:`, the latency percentiles, `N requests in`, `Non-2xx or
//! 3xx responses:`) so the scripts read either.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The placeholder replaced by one line of `--lines` per request.
const PLACEHOLDER: &str = "@LINE@";

/// The placeholder replaced by a line of `--cycle`, in turn.
const CYCLE: &str = "@CYCLE@";

#[derive(Parser, Debug)]
#[command(
    name = "mandate-loadgen",
    about = "HTTP/1.1 load with one fresh value per request"
)]
struct Args {
    /// `http://host:port/path` or `https://...` (HTTP/1.1 with keep-alive;
    /// over TLS every connection's handshake is done before the clock
    /// starts).
    url: String,
    /// https: the CA (PEM) the server's certificate must chain to.
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// https: a client certificate (PEM) to present, with `--key`.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// https: the client certificate's private key (PEM).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Connections, each with one request in flight.
    #[arg(short = 'c', long, default_value_t = 32)]
    connections: usize,
    /// Seconds of load.
    #[arg(short = 'd', long, default_value_t = 10)]
    duration: u64,
    /// Threads driving the connections.
    #[arg(short = 't', long, default_value_t = 1)]
    threads: usize,
    /// Request method.
    #[arg(short = 'm', long, default_value = "GET")]
    method: String,
    /// A request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// The request body, read from this file.
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// One value per request for `@LINE@`, one per line.
    #[arg(long)]
    lines: Option<PathBuf>,
    /// Values for `@CYCLE@`, one per line, taken in turn (and again).
    #[arg(long)]
    cycle: Option<PathBuf>,
    /// Stop and fail at the first answer that is not 2xx or whose body
    /// lacks this text.
    #[arg(long)]
    expect: Option<String>,
    /// Seconds the requests in flight at the stop may take to be answered
    /// (not counted) before the run ends as failed.
    #[arg(long, default_value_t = 10)]
    drain: u64,
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(report) => {
            print!("{}", report.text);
            if let Some(failure) = report.failure {
                eprintln!("mandate-loadgen: {failure}");
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("mandate-loadgen: {e}");
            std::process::exit(2);
        }
    }
}

/// What a run printed, and why it failed if it did.
#[derive(Debug)]
struct Report {
    text: String,
    failure: Option<String>,
}

fn run(args: &Args) -> Result<Report, String> {
    let target = Target::parse(&args.url)?;
    let body = match &args.body_file {
        Some(p) => {
            std::fs::read_to_string(p).map_err(|e| format!("--body-file {}: {e}", p.display()))?
        }
        None => String::new(),
    };
    let template = Template::new(&args.method, &target, &args.headers, &body)?;
    let lines = match &args.lines {
        Some(p) => Some(Lines::read(p)?),
        None => None,
    };
    if template.uses_line && lines.is_none() {
        return Err(format!("{PLACEHOLDER} is used but --lines is not given"));
    }
    let cycle = match &args.cycle {
        Some(p) => Some(Lines::read(p)?),
        None => None,
    };
    match &cycle {
        None if template.uses_cycle => {
            return Err(format!("{CYCLE} is used but --cycle is not given"));
        }
        Some(c) if c.len() == 0 => return Err("--cycle: the file has no lines".into()),
        _ => {}
    }
    if args.connections == 0 || args.threads == 0 {
        return Err("--connections and --threads must be at least 1".into());
    }
    let shared = Arc::new(Shared {
        template,
        lines,
        cycle,
        next: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        expect: args.expect.as_ref().map(|e| e.as_bytes().to_vec()),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .thread_name("loadgen")
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let duration = Duration::from_secs(args.duration);
    let drain = Duration::from_secs(args.drain);
    let (outcomes, window) = if target.tls {
        let dial = TlsDial::new(args, &target)?;
        runtime.block_on(load(
            &dial,
            &target,
            &shared,
            args.connections,
            duration,
            drain,
        ))?
    } else {
        if args.cacert.is_some() || args.cert.is_some() || args.key.is_some() {
            return Err("--cacert, --cert and --key are for https:// URLs".into());
        }
        runtime.block_on(load(
            &Plain,
            &target,
            &shared,
            args.connections,
            duration,
            drain,
        ))?
    };
    Ok(summarize(args, &outcomes, window))
}

/// How a connection is opened: plain TCP or TLS over it.
trait Dial: Clone + Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn dial(
        &self,
        addr: &str,
    ) -> impl std::future::Future<Output = Result<Self::Stream, String>> + Send;
}

/// Plain TCP.
#[derive(Debug, Clone, Copy)]
struct Plain;

impl Dial for Plain {
    type Stream = TcpStream;
    async fn dial(&self, addr: &str) -> Result<TcpStream, String> {
        connect(addr).await
    }
}

/// TLS (rustls) over TCP, trusting `--cacert` and presenting `--cert`.
#[derive(Clone)]
struct TlsDial {
    connector: tokio_rustls::TlsConnector,
    name: rustls_pki_types::ServerName<'static>,
}

impl TlsDial {
    fn new(args: &Args, target: &Target) -> Result<Self, String> {
        use rustls_pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        let ca = args
            .cacert
            .as_ref()
            .ok_or("--cacert: an https:// URL needs the CA its server's certificate chains to")?;
        for c in rustls_pki_types::CertificateDer::pem_file_iter(ca)
            .map_err(|e| format!("--cacert {}: {e}", ca.display()))?
        {
            roots
                .add(c.map_err(|e| format!("--cacert {}: {e}", ca.display()))?)
                .map_err(|e| format!("--cacert {}: {e}", ca.display()))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots);
        let config = match (&args.cert, &args.key) {
            (Some(cert), Some(key)) => {
                let chain = rustls_pki_types::CertificateDer::pem_file_iter(cert)
                    .map_err(|e| format!("--cert {}: {e}", cert.display()))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("--cert {}: {e}", cert.display()))?;
                let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("--key {}: {e}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("--cert/--key: {e}"))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err("--cert and --key go together".into()),
        };
        let host = target
            .host
            .rsplit_once(':')
            .map_or(target.host.as_str(), |(h, _)| h);
        let name = rustls_pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| format!("url: `{host}`: {e}"))?;
        Ok(Self {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            name,
        })
    }
}

impl Dial for TlsDial {
    type Stream = tokio_rustls::client::TlsStream<TcpStream>;
    async fn dial(&self, addr: &str) -> Result<Self::Stream, String> {
        let tcp = connect(addr).await?;
        self.connector
            .connect(self.name.clone(), tcp)
            .await
            .map_err(|e| format!("tls handshake with {addr}: {e}"))
    }
}

/// Opens every connection, starts them together, stops them after
/// `duration`; the elapsed time is from the start to the stop.
async fn load<D: Dial>(
    dial: &D,
    target: &Target,
    shared: &Arc<Shared>,
    connections: usize,
    duration: Duration,
    drain: Duration,
) -> Result<(Vec<Outcome>, Window), String> {
    let mut streams = Vec::with_capacity(connections);
    for _ in 0..connections {
        streams.push(dial.dial(&target.addr).await?);
    }
    let start = Arc::new(tokio::sync::Barrier::new(connections + 1));
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|s| {
            tokio::spawn(connection(
                s,
                dial.clone(),
                target.addr.clone(),
                Arc::clone(shared),
                Arc::clone(&start),
            ))
        })
        .collect();
    start.wait().await;
    let began = Instant::now();
    let cpu_before = cpu_ticks();
    let deadline = began + duration;
    while Instant::now() < deadline && !shared.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20).min(deadline - Instant::now())).await;
    }
    shared.stop.store(true, Ordering::Relaxed);
    let elapsed = began.elapsed();
    let cpu = cpu_before
        .zip(cpu_ticks())
        .map(|(a, b)| Duration::from_millis(b.saturating_sub(a) * 1000 / USER_HZ));
    // A request in flight at the stop gets its answer (not counted); a
    // server that never answers does not hold the run up for long.
    let drained_by = Instant::now() + drain;
    let mut outcomes = Vec::with_capacity(tasks.len());
    for t in tasks {
        let left = drained_by.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, t).await {
            Ok(done) => outcomes.push(done.map_err(|e| format!("connection task: {e}"))?),
            Err(_) => outcomes.push(Outcome {
                failure: Some(format!(
                    "a request in flight at the stop had no answer {} s later",
                    drain.as_secs()
                )),
                ..Outcome::default()
            }),
        }
    }
    Ok((outcomes, Window { elapsed, cpu }))
}

/// The timed window: how long it lasted, and the CPU this process used in
/// it (all threads), where the system says.
#[derive(Debug, Clone, Copy)]
struct Window {
    elapsed: Duration,
    cpu: Option<Duration>,
}

/// `/proc`'s unit of CPU time (USER_HZ, 100 on Linux whatever the kernel's
/// own tick).
const USER_HZ: u64 = 100;

/// This process's CPU time so far (user + system), in USER_HZ ticks, from
/// `/proc/self/stat` (Linux); `None` elsewhere.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command name (in parentheses, which may hold spaces): the
    // state is field 3, utime field 14, stime field 15.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

async fn connect(addr: &str) -> Result<TcpStream, String> {
    let s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    Ok(s)
}

/// What every connection shares.
#[derive(Debug)]
struct Shared {
    template: Template,
    lines: Option<Lines>,
    cycle: Option<Lines>,
    next: AtomicUsize,
    stop: AtomicBool,
    expect: Option<Vec<u8>>,
}

/// What one connection did.
#[derive(Debug, Default)]
struct Outcome {
    /// Microseconds from the request's first byte written to its answer's
    /// last byte read, for every answer completed before the stop.
    latencies_us: Vec<u32>,
    bytes_read: u64,
    non_2xx: u64,
    failure: Option<String>,
}

async fn connection<D: Dial>(
    mut stream: D::Stream,
    dial: D,
    addr: String,
    shared: Arc<Shared>,
    start: Arc<tokio::sync::Barrier>,
) -> Outcome {
    let mut out = Outcome {
        latencies_us: Vec::with_capacity(1 << 16),
        ..Outcome::default()
    };
    let mut request = Vec::with_capacity(8192);
    let mut response = Response::default();
    start.wait().await;
    while !shared.stop.load(Ordering::Relaxed) {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        let again = shared
            .cycle
            .as_ref()
            .and_then(|c| c.get(i % c.len().max(1)))
            .unwrap_or_default();
        let line = match &shared.lines {
            Some(lines) => match lines.get(i) {
                Some(l) => l,
                None => {
                    out.failure = Some(format!(
                        "ran out of --lines after {} requests: give more lines",
                        lines.len()
                    ));
                    shared.stop.store(true, Ordering::Relaxed);
                    break;
                }
            },
            None => "",
        };
        shared.template.render(line, again, &mut request);
        let sent = Instant::now();
        if let Err(e) = stream.write_all(&request).await {
            out.failure = Some(format!("write: {e}"));
            break;
        }
        let answer = match response.read(&mut stream).await {
            Ok(a) => a,
            Err(e) => {
                out.failure = Some(e);
                break;
            }
        };
        if shared.stop.load(Ordering::Relaxed) {
            break; // completed after the clock stopped: not counted
        }
        if answer.close {
            match dial.dial(&addr).await {
                Ok(s) => stream = s,
                Err(e) => {
                    out.failure = Some(e);
                    break;
                }
            }
        }
        out.latencies_us
            .push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
        out.bytes_read += answer.len as u64;
        let ok = (200..300).contains(&answer.status);
        if !ok {
            out.non_2xx += 1;
        }
        if let Some(expect) = &shared.expect
            && (!ok || memchr::memmem::find(response.body(&answer), expect).is_none())
        {
            out.failure = Some(format!(
                "unexpected answer: status {}, body {:?}",
                answer.status,
                String::from_utf8_lossy(response.body(&answer))
                    .chars()
                    .take(300)
                    .collect::<String>()
            ));
            shared.stop.store(true, Ordering::Relaxed);
            break;
        }
    }
    out
}

/// Where to connect and what `Host` and request target to send.
#[derive(Debug, Clone)]
struct Target {
    addr: String,
    host: String,
    path: String,
    tls: bool,
}

impl Target {
    fn parse(url: &str) -> Result<Self, String> {
        let (rest, tls) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(r), _) => (r, false),
            (_, Some(r)) => (r, true),
            _ => return Err(format!("url: `{url}` is not http(s)://host:port/path")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(format!("url: `{url}` has no host"));
        }
        let addr = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_owned()
        } else {
            format!("{authority}:{}", if tls { 443 } else { 80 })
        };
        Ok(Self {
            addr,
            host: authority.to_owned(),
            path: path.to_owned(),
            tls,
        })
    }
}

/// A request with its fixed bytes formatted once.
#[derive(Debug)]
struct Template {
    /// The head up to `Content-Length: `, as pieces.
    head: Vec<Piece>,
    /// The body, as pieces.
    body: Vec<Piece>,
    /// Bytes of the body that are not lines.
    body_fixed: usize,
    /// How many `@LINE@`s the body holds.
    body_lines: usize,
    /// How many `@CYCLE@`s the body holds.
    body_cycles: usize,
    uses_line: bool,
    uses_cycle: bool,
}

#[derive(Debug)]
enum Piece {
    Text(Vec<u8>),
    Line,
    Cycle,
}

fn pieces(text: &str, out: &mut Vec<Piece>) {
    let mut rest = text;
    loop {
        // The nearer of the two placeholders.
        let next = [(PLACEHOLDER, false), (CYCLE, true)]
            .into_iter()
            .filter_map(|(p, cycle)| rest.find(p).map(|i| (i, p, cycle)))
            .min_by_key(|&(i, _, _)| i);
        let Some((i, p, cycle)) = next else { break };
        let (before, after) = rest.split_at(i);
        if !before.is_empty() {
            out.push(Piece::Text(before.as_bytes().to_vec()));
        }
        out.push(if cycle { Piece::Cycle } else { Piece::Line });
        rest = after.get(p.len()..).unwrap_or_default();
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.as_bytes().to_vec()));
    }
}

impl Template {
    fn new(method: &str, target: &Target, headers: &[String], body: &str) -> Result<Self, String> {
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(format!("--method: `{method}` is not an HTTP method"));
        }
        let mut head = format!(
            "{method} {} HTTP/1.1\r\nHost: {}\r\n",
            target.path, target.host
        );
        for h in headers {
            let Some((name, value)) = h.split_once(':') else {
                return Err(format!("--header: `{h}` is not `Name: value`"));
            };
            let name = name.trim();
            if name.is_empty()
                || name.eq_ignore_ascii_case("content-length")
                || name.eq_ignore_ascii_case("host")
            {
                return Err(format!(
                    "--header: `{name}` cannot be set (empty, Host or Content-Length)"
                ));
            }
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value.trim());
            head.push_str("\r\n");
        }
        head.push_str("Content-Length: ");
        let mut t = Self {
            head: Vec::new(),
            body: Vec::new(),
            body_fixed: 0,
            body_lines: 0,
            body_cycles: 0,
            uses_line: false,
            uses_cycle: false,
        };
        pieces(&head, &mut t.head);
        pieces(body, &mut t.body);
        for p in &t.body {
            match p {
                Piece::Text(b) => t.body_fixed += b.len(),
                Piece::Line => t.body_lines += 1,
                Piece::Cycle => t.body_cycles += 1,
            }
        }
        t.uses_line = t
            .head
            .iter()
            .chain(&t.body)
            .any(|p| matches!(p, Piece::Line));
        t.uses_cycle = t
            .head
            .iter()
            .chain(&t.body)
            .any(|p| matches!(p, Piece::Cycle));
        Ok(t)
    }

    /// Formats the request for `line` (`@LINE@`) and `again` (`@CYCLE@`)
    /// into `out`.
    fn render(&self, line: &str, again: &str, out: &mut Vec<u8>) {
        use std::io::Write as _;
        out.clear();
        let put = |pieces: &[Piece], out: &mut Vec<u8>| {
            for p in pieces {
                match p {
                    Piece::Text(b) => out.extend_from_slice(b),
                    Piece::Line => out.extend_from_slice(line.as_bytes()),
                    Piece::Cycle => out.extend_from_slice(again.as_bytes()),
                }
            }
        };
        put(&self.head, out);
        let len = self.body_fixed + self.body_lines * line.len() + self.body_cycles * again.len();
        // Writing to a Vec cannot fail.
        let _ = write!(out, "{len}\r\n\r\n");
        put(&self.body, out);
    }
}

/// The lines of `--lines`, held in one buffer.
#[derive(Debug)]
struct Lines {
    text: String,
    spans: Vec<(usize, usize)>,
}

impl Lines {
    fn read(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--lines {}: {e}", path.display()))?;
        let mut spans = Vec::new();
        let mut at = 0;
        for l in text.split_inclusive('\n') {
            let trimmed = l.trim_end_matches(['\n', '\r']);
            if !trimmed.is_empty() {
                spans.push((at, at + trimmed.len()));
            }
            at += l.len();
        }
        Ok(Self { text, spans })
    }

    fn get(&self, i: usize) -> Option<&str> {
        let &(a, b) = self.spans.get(i)?;
        self.text.get(a..b)
    }

    fn len(&self) -> usize {
        self.spans.len()
    }
}

/// A connection's read buffer, reused for every answer.
#[derive(Debug, Default)]
struct Response {
    buf: Vec<u8>,
}

/// One answer's status, where its body starts, its total length, and
/// whether the connection ends with it.
#[derive(Debug, Clone, Copy)]
struct Answer {
    status: u16,
    body_start: usize,
    len: usize,
    /// The server closes the connection after it (`Connection: close`, as
    /// nginx does after `keepalive_requests`): the next request goes on a
    /// new one.
    close: bool,
}

impl Response {
    fn body(&self, a: &Answer) -> &[u8] {
        self.buf.get(a.body_start..a.len).unwrap_or_default()
    }

    /// Reads one answer (no pipelining: nothing may follow it).
    async fn read<S: AsyncRead + Unpin>(&mut self, stream: &mut S) -> Result<Answer, String> {
        self.buf.clear();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            self.buf
                .extend_from_slice(chunk.get(..n).unwrap_or_default());
            if let Some(a) = parse_answer(&self.buf)? {
                if self.buf.len() > a.len {
                    return Err("bytes after the answer (the server answered twice?)".into());
                }
                if self.buf.len() == a.len {
                    return Ok(a);
                }
            }
        }
    }
}

/// Parses an answer's head once it is all in `buf`: `None` until then.
/// Bodies must have a `Content-Length` (or be one of the bodiless statuses).
fn parse_answer(buf: &[u8]) -> Result<Option<Answer>, String> {
    let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(buf.get(..end).unwrap_or_default())
        .map_err(|_| "answer head is not UTF-8".to_owned())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("not an HTTP/1.x status line: `{status_line}`"))?;
    let mut length = None;
    let mut close = false;
    for l in lines {
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length `{value}`"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(
                "chunked answers are not supported (the scripts' servers send Content-Length)"
                    .into(),
            );
        } else if name.eq_ignore_ascii_case("connection")
            && value.trim().eq_ignore_ascii_case("close")
        {
            close = true;
        }
    }
    let body_start = end + 4;
    let length = match (length, status) {
        (Some(n), _) => n,
        (None, 204 | 304) | (None, 100..=199) => 0,
        (None, _) => return Err(format!("answer with status {status} has no Content-Length")),
    };
    Ok(Some(Answer {
        status,
        body_start,
        len: body_start + length,
        close,
    }))
}

fn summarize(args: &Args, outcomes: &[Outcome], window: Window) -> Report {
    let mut all: Vec<u32> = outcomes
        .iter()
        .flat_map(|o| o.latencies_us.iter().copied())
        .collect();
    all.sort_unstable();
    let n = all.len();
    let pct = |p: f64| -> u32 {
        if n == 0 {
            return 0;
        }
        let i = ((p / 100.0) * n as f64).ceil() as usize;
        all.get(i.saturating_sub(1).min(n - 1))
            .copied()
            .unwrap_or(0)
    };
    let bytes: u64 = outcomes.iter().map(|o| o.bytes_read).sum();
    let non_2xx: u64 = outcomes.iter().map(|o| o.non_2xx).sum();
    let secs = window.elapsed.as_secs_f64();
    let mut text = format!(
        "Running {}s test @ {}\n  {} threads and {} connections\n  Latency Distribution\n",
        args.duration, args.url, args.threads, args.connections
    );
    for p in [50.0, 75.0, 90.0, 99.0] {
        text.push_str(&format!("  {:>4}%  {:>8}\n", p as u32, human_us(pct(p))));
    }
    text.push_str(&format!(
        "  {n} requests in {secs:.2}s, {:.2}MB read\n",
        bytes as f64 / (1024.0 * 1024.0)
    ));
    if non_2xx > 0 {
        text.push_str(&format!("  Non-2xx or 3xx responses: {non_2xx}\n"));
    }
    if let (Some(cpu), true) = (window.cpu, n > 0) {
        // What the load itself cost: it shares the machine with the server.
        text.push_str(&format!(
            "  Generator CPU: {:.2}s in the window, {:.1}us a request\n",
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / n as f64
        ));
    }
    text.push_str(&format!(
        "Requests/sec: {:>10.2}\n",
        n as f64 / secs.max(1e-9)
    ));
    let failure = outcomes.iter().find_map(|o| o.failure.clone());
    Report { text, failure }
}

/// A latency as wrk writes one: `512.00us`, `3.27ms`, `1.20s`.
fn human_us(us: u32) -> String {
    let us = f64::from(us);
    if us < 1000.0 {
        format!("{us:.2}us")
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{:.2}s", us / 1_000_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_carries_its_line_and_the_body_length_it_makes() {
        let target = Target::parse("http://127.0.0.1:9/eval?x=1").unwrap();
        let t = Template::new(
            "POST",
            &target,
            &[
                "DPoP: @LINE@".into(),
                "Content-Type: application/json".into(),
            ],
            r#"{"p":"@LINE@"}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        t.render("abc", "", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /eval?x=1 HTTP/1.1\r\nHost: 127.0.0.1:9\r\nDPoP: abc\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"p\":\"abc\"}"
        );
    }

    #[test]
    fn a_cycled_value_goes_where_its_placeholder_is_and_counts_in_the_length() {
        let target = Target::parse("http://127.0.0.1:9/eval").unwrap();
        let t = Template::new(
            "POST",
            &target,
            &[],
            r#"{"m":"@CYCLE@","p":"@LINE@","again":"@CYCLE@"}"#,
        )
        .unwrap();
        assert!(t.uses_line && t.uses_cycle);
        let mut out = Vec::new();
        t.render("proof", "mandate-7", &mut out);
        let body = r#"{"m":"mandate-7","p":"proof","again":"mandate-7"}"#;
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "POST /eval HTTP/1.1\r\nHost: 127.0.0.1:9\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        );
    }

    #[test]
    fn an_answer_is_complete_only_when_its_content_length_has_arrived() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
        assert!(
            parse_answer(b"HTTP/1.1 200 OK\r\ncontent-le")
                .unwrap()
                .is_none()
        );
        let a = parse_answer(head).unwrap().unwrap();
        assert_eq!(
            (a.status, a.body_start, a.len),
            (200, head.len(), head.len() + 5)
        );
        let a = parse_answer(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(a.status, 403);
    }

    #[test]
    fn answers_it_cannot_delimit_are_refused_by_name() {
        let e = parse_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap_err();
        assert!(e.contains("chunked"), "{e}");
        let e = parse_answer(b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n").unwrap_err();
        assert!(e.contains("no Content-Length"), "{e}");
        let a = parse_answer(b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(a.close, "the next request must go on a new connection");
        assert!(parse_answer(b"SMTP 220\r\n\r\n").is_err());
    }

    #[test]
    fn headers_the_generator_owns_cannot_be_overridden() {
        let target = Target::parse("http://h:1/").unwrap();
        for h in ["Content-Length: 3", "host: x", "no-colon"] {
            assert!(
                Template::new("GET", &target, &[h.into()], "").is_err(),
                "{h}"
            );
        }
        assert!(Template::new("get", &target, &[], "").is_err());
        assert!(Target::parse("ftp://h/").is_err());
        assert_eq!(Target::parse("https://h/").unwrap().addr, "h:443");
        assert_eq!(
            Target::parse("http://localhost/x").unwrap().addr,
            "localhost:80"
        );
    }

    #[test]
    fn lines_are_read_without_blank_ones_or_line_ends() {
        let dir = std::env::temp_dir().join(format!("loadgen-lines-{}", std::process::id()));
        std::fs::write(&dir, "a\r\n\nbb\ncc").unwrap();
        let l = Lines::read(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(
            (l.len(), l.get(0), l.get(1), l.get(2), l.get(3)),
            (3, Some("a"), Some("bb"), Some("cc"), None)
        );
    }

    /// A server that takes requests and never answers ends the run as a
    /// failure once the drain time has passed, instead of holding it up.
    #[test]
    fn a_server_that_never_answers_cannot_hold_the_run_up() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in listener.incoming() {
                held.push(s); // accepted, read from never, answered never
            }
        });
        let args = Args {
            url: format!("http://127.0.0.1:{port}/"),
            cacert: None,
            cert: None,
            key: None,
            connections: 2,
            duration: 1,
            threads: 1,
            method: "GET".into(),
            headers: Vec::new(),
            body_file: None,
            lines: None,
            cycle: None,
            expect: None,
            drain: 1,
        };
        let report = run(&args).unwrap();
        let failure = report.failure.unwrap();
        assert!(failure.contains("no answer 1 s later"), "{failure}");
        assert!(report.text.contains(" 0 requests in "), "{}", report.text);
    }

    /// Against a real socket: every request is answered and counted, each
    /// line is used once, and an unexpected answer stops the run with its
    /// reason.
    #[test]
    fn a_run_counts_what_a_real_server_answered_and_fails_on_an_unexpected_answer() {
        use std::io::{BufRead as _, BufReader, Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let seen2 = Arc::clone(&seen);
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { return };
                let seen = Arc::clone(&seen2);
                std::thread::spawn(move || {
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    let mut w = s;
                    loop {
                        let mut len = 0;
                        let mut line = String::new();
                        let mut proof = String::new();
                        loop {
                            line.clear();
                            if r.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" {
                                break;
                            }
                            if let Some(v) = line.strip_prefix("Content-Length: ") {
                                len = v.trim().parse().unwrap();
                            }
                            if let Some(v) = line.strip_prefix("DPoP: ") {
                                proof = v.trim().to_owned();
                            }
                        }
                        let mut body = vec![0; len];
                        r.read_exact(&mut body).unwrap();
                        let answer = if proof.starts_with("bad") {
                            "no"
                        } else {
                            "yes"
                        };
                        seen.lock().unwrap().push(proof);
                        write!(
                            w,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{answer}",
                            answer.len()
                        )
                        .unwrap();
                    }
                });
            }
        });
        let dir = std::env::temp_dir().join(format!("loadgen-run-{}", std::process::id()));
        let lines: Vec<String> = (0..200_000).map(|i| format!("p{i}")).collect();
        std::fs::write(&dir, lines.join("\n")).unwrap();
        let args = |expect: &str| Args {
            url: format!("http://127.0.0.1:{port}/x"),
            cacert: None,
            cert: None,
            key: None,
            connections: 4,
            duration: 1,
            threads: 1,
            method: "POST".into(),
            headers: vec!["DPoP: @LINE@".into()],
            body_file: None,
            lines: Some(dir.clone()),
            cycle: None,
            expect: Some(expect.into()),
            drain: 10,
        };
        let report = run(&args("yes")).unwrap();
        assert!(report.failure.is_none(), "{:?}", report.failure);
        let counted: usize = report
            .text
            .lines()
            .find_map(|l| l.trim().split_once(" requests in "))
            .map(|(n, _)| n.parse().unwrap())
            .unwrap();
        let seen_now = seen.lock().unwrap().clone();
        assert!(
            counted > 0 && counted <= seen_now.len(),
            "{counted} counted, {} served",
            seen_now.len()
        );
        let distinct: std::collections::BTreeSet<_> = seen_now.iter().collect();
        assert_eq!(distinct.len(), seen_now.len(), "a line was used twice");
        assert!(report.text.contains("Requests/sec:"));
        assert!(report.text.contains("Generator CPU: "), "{}", report.text);

        let bad: Vec<String> = (0..1000).map(|i| format!("bad{i}")).collect();
        std::fs::write(&dir, bad.join("\n")).unwrap();
        let report = run(&args("yes")).unwrap();
        std::fs::remove_file(&dir).unwrap();
        let failure = report.failure.unwrap();
        assert!(
            failure.contains("unexpected answer: status 200, body \"no\""),
            "{failure}"
        );
    }

    /// Over TLS against a real rustls server that requires a client
    /// certificate: every connection's handshake presents the one given,
    /// trusts only the CA given, and the requests are answered and counted.
    #[test]
    fn over_tls_it_presents_its_client_certificate_and_trusts_only_its_ca() {
        use std::io::{BufRead as _, BufReader, Write as _};
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let server_key = rcgen::KeyPair::generate().unwrap();
        let server = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();
        let client_key = rcgen::KeyPair::generate().unwrap();
        let client = rcgen::CertificateParams::new(vec!["agent".to_owned()])
            .unwrap()
            .signed_by(&client_key, &ca)
            .unwrap();
        let dir = std::env::temp_dir().join(format!("loadgen-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("agent.pem"), client.pem()).unwrap();
        std::fs::write(dir.join("agent.key"), client_key.serialize_pem()).unwrap();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&provider),
        )
        .build()
        .unwrap();
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_client_cert_verifier(verifier)
                .with_single_cert(
                    vec![server.der().clone()],
                    rustls_pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
                )
                .unwrap(),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let presented = Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
        let seen = Arc::clone(&presented);
        std::thread::spawn(move || {
            for sock in listener.incoming() {
                let (Ok(sock), config, seen) = (sock, Arc::clone(&config), Arc::clone(&seen))
                else {
                    continue;
                };
                std::thread::spawn(move || {
                    let conn = rustls::ServerConnection::new(config).unwrap();
                    let mut tls = rustls::StreamOwned::new(conn, sock);
                    let mut r = BufReader::new(&mut tls);
                    let mut line = String::new();
                    loop {
                        // One request: its head, no body.
                        loop {
                            line.clear();
                            if r.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" {
                                break;
                            }
                        }
                        let tls = r.get_mut();
                        if let Some(c) = tls.conn.peer_certificates().and_then(<[_]>::first) {
                            seen.lock().unwrap().push(c.as_ref().to_vec());
                        }
                        if tls
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        let args = |cacert: &str| Args {
            url: format!("https://127.0.0.1:{port}/x"),
            cacert: Some(dir.join(cacert)),
            cert: Some(dir.join("agent.pem")),
            key: Some(dir.join("agent.key")),
            connections: 2,
            duration: 1,
            threads: 1,
            method: "GET".into(),
            headers: Vec::new(),
            body_file: None,
            lines: None,
            cycle: None,
            expect: Some("ok".into()),
            drain: 10,
        };
        let report = run(&args("ca.pem")).unwrap();
        assert!(report.failure.is_none(), "{:?}", report.failure);
        let served = presented.lock().unwrap().clone();
        assert!(!served.is_empty(), "{}", report.text);
        assert!(
            served.iter().all(|c| c.as_slice() == client.der().as_ref()),
            "a request came without the client certificate"
        );

        // A CA that did not sign the server's certificate: no connection.
        let other = rcgen::CertificateParams::new(vec!["other".to_owned()])
            .unwrap()
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap();
        std::fs::write(dir.join("other.pem"), other.pem()).unwrap();
        let e = run(&args("other.pem")).unwrap_err();
        assert!(e.contains("tls handshake"), "{e}");
        // Plain http:// with TLS settings is a mistake said at once.
        let mut plain = args("ca.pem");
        plain.url = format!("http://127.0.0.1:{port}/x");
        assert!(run(&plain).unwrap_err().contains("https://"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
