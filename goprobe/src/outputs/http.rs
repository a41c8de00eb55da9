//! A small HTTP/1.1 client, enough for what goprobe sends and fetches on a trusted network: OTLP
//! pushes to a collector, and `goprobe query`/`diff` asking a running agent.
use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

/// How long a whole request may take (connect, send, answer) unless the caller says otherwise:
/// a server that accepts and never answers must not hang goprobe (or the agent's exporter).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest a connection attempt may take, within the request's whole timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A plain-HTTP GET (the agent listens on loopback by default; for a remote agent, tunnel or
/// proxy). Returns the body of a 200 answer; anything else is an error with the agent's text.
pub fn http_get(url: &str, token: Option<&str>) -> anyhow::Result<String> {
    http_get_within(url, token, DEFAULT_TIMEOUT)
}

/// [`http_get`] that gives up after `timeout` (the whole request).
pub fn http_get_within(
    url: &str,
    token: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<String> {
    http_request_within(url, token, None, timeout)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .map_err(|e| match e {
        HttpError::Unreachable(host, e) => anyhow::anyhow!(
            "cannot reach the agent at http://{host}: {e} (is `goprobe agent` running? give --url, or --archive to read an archive file)"
        ),
        e => anyhow::anyhow!("{url}: {e}"),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("only http:// URLs are supported")]
    NotHttp,
    #[error("cannot reach {0}")]
    Unreachable(String, #[source] std::io::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed HTTP answer")]
    Malformed,
    #[error("HTTP {0}: {1}")]
    Status(u16, String),
    #[error("no complete answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
}

/// One HTTP/1.1 request over plain TCP: GET, or POST of `body` as (content type, bytes).
/// Returns the body of a 2xx answer.
pub fn http_request(
    url: &str,
    token: Option<&str>,
    body: Option<(&str, &[u8])>,
) -> Result<String, HttpError> {
    http_request_bytes(url, token, body).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// [`http_request`] for binary bodies (gzipped profiles).
pub fn http_request_bytes(
    url: &str,
    token: Option<&str>,
    body: Option<(&str, &[u8])>,
) -> Result<Vec<u8>, HttpError> {
    http_request_within(url, token, body, DEFAULT_TIMEOUT)
}

/// [`http_request_bytes`] that gives up after `timeout`, counted from the call: connecting,
/// sending and reading the answer all come out of it, so a server that accepts and then
/// answers nothing, or a byte a minute, ends in [`HttpError::Timeout`].
pub fn http_request_within(
    url: &str,
    token: Option<&str>,
    body: Option<(&str, &[u8])>,
    timeout: Duration,
) -> Result<Vec<u8>, HttpError> {
    let deadline = Instant::now() + timeout;
    // What is left of the timeout, never zero (a zero timeout means "none" to the socket).
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(HttpError::Timeout(timeout))
    };
    let timed_out = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            HttpError::Timeout(timeout)
        }
        _ => HttpError::Io(e),
    };
    let rest = url.strip_prefix("http://").ok_or(HttpError::NotHttp)?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let unreachable = |e| HttpError::Unreachable(host.to_string(), e);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(host)
        .map_err(unreachable)?
        .next()
        .ok_or_else(|| unreachable(std::io::ErrorKind::NotFound.into()))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, left()?.min(CONNECT_TIMEOUT)).map_err(unreachable)?;
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let (method, extra) = match body {
        Some((content_type, bytes)) => (
            "POST",
            format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                bytes.len()
            ),
        ),
        None => ("GET", String::new()),
    };
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}{extra}Connection: close\r\nUser-Agent: goprobe/{}\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes();
    if let Some((_, bytes)) = body {
        request.extend_from_slice(bytes);
    }
    stream.set_write_timeout(Some(left()?))?;
    stream.write_all(&request).map_err(timed_out)?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 64 << 10];
    loop {
        stream.set_read_timeout(Some(left()?))?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(timed_out(e)),
        }
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(HttpError::Malformed)?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = &raw[split + 4..];
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(HttpError::Malformed)?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    if !(200..300).contains(&status) {
        return Err(HttpError::Status(
            status,
            String::from_utf8_lossy(&body).trim().to_string(),
        ));
    }
    Ok(body)
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&body[..eol]);
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        let rest = &body[eol + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        body = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that accepts the connection and never answers hung `goprobe query --url` for
    /// a minute per read; the whole request now ends at its timeout.
    #[test]
    fn a_silent_server_times_out() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/api/v1/query", listener.local_addr().unwrap());
        // Accept, then hold the connection open without a word (and a slow drip on a second
        // connection: one byte every 100 ms never completes an answer either).
        let server = std::thread::spawn(move || {
            let (_silent, _) = listener.accept().unwrap();
            let (mut drip, _) = listener.accept().unwrap();
            for _ in 0..20 {
                if drip.write_all(b"H").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        for _ in 0..2 {
            let start = Instant::now();
            let e = http_request_within(&url, None, None, Duration::from_millis(300)).unwrap_err();
            assert!(matches!(e, HttpError::Timeout(_)), "{e}");
            assert_eq!(e.to_string(), "no complete answer within 300ms");
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "{:?}",
                start.elapsed()
            );
        }
        server.join().unwrap();
    }
}
