//! Query strings, both ways: the `?a=b&c=d` of the agent's API requests, percent-decoded, and
//! the values `goprobe query` puts in them.
use std::collections::HashMap;

/// The parameters of a query string (`from=-1h&function=main.*`), names and values
/// percent-decoded; a name without `=` has an empty value, and a later repeat wins.
pub fn query_params(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_coding() {
        let s = "main.(*T).Get & co/ü";
        assert_eq!(percent_decode(&percent_encode(s)), s);
        assert_eq!(percent_decode("a+b%2"), "a b%2");
    }

    #[test]
    fn parameters() {
        let p = query_params("from=-1h&function=main.%28%2AT%29.Get&&x&to=now&to=@5");
        assert_eq!(p["from"], "-1h");
        assert_eq!(p["function"], "main.(*T).Get");
        assert_eq!(p["x"], "");
        assert_eq!(p["to"], "@5");
        assert_eq!(p.len(), 4);
    }
}
