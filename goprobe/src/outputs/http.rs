//! A small HTTP/1.1 client, enough for what goprobe sends and fetches on a trusted network: OTLP
//! pushes to a collector, and `goprobe query`/`diff` asking a running agent.
use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A plain-HTTP GET (the agent listens on loopback by default; for a remote agent, tunnel or
/// proxy). Returns the body of a 200 answer; anything else is an error with the agent's text.
pub fn http_get(url: &str, token: Option<&str>) -> anyhow::Result<String> {
    http_request(url, token, None).map_err(|e| match e {
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
    #[error("cannot reach {0}: {1}")]
    Unreachable(String, std::io::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed HTTP answer")]
    Malformed,
    #[error("HTTP {0}: {1}")]
    Status(u16, String),
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
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(unreachable)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
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
    stream.write_all(&request)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
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

    #[test]
    fn percent_coding() {
        let s = "main.(*T).Get & co/ü";
        assert_eq!(percent_decode(&percent_encode(s)), s);
        assert_eq!(percent_decode("a+b%2"), "a b%2");
    }
}
