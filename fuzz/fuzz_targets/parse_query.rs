//! The agent's API query strings (`/api/v1/query?from=..&to=..&function=..`, `/api/v1/diff?
//! base=..&compare=..`, `/api/v1/profile?..&pid=..`), decoded and checked as the handlers in
//! goprobe/src/commands/agent/http.rs do: every bad value must be an error (a 400), never a
//! panic; and what `goprobe query` encodes decodes back to itself.
#![no_main]

use goprobe_input::{
    pattern::Pattern,
    query_string::{percent_decode, percent_encode, query_params},
    times::{Range, check_range, format_ms, parse_range, parse_time},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let params = query_params(query);
    let now = 1_800_000_000_000;
    let get = |name: &str, default: &str| params.get(name).cloned().unwrap_or(default.into());
    let single = parse_time(&get("from", "-1h"), now).and_then(|from_ms| {
        let range = Range {
            from_ms,
            to_ms: parse_time(&get("to", "now"), now)?,
        };
        check_range(range)?;
        Ok(vec![range])
    });
    let pair = match (params.get("base"), params.get("compare")) {
        (Some(a), Some(b)) => parse_range(a, now).and_then(|a| Ok(vec![a, parse_range(b, now)?])),
        _ => Err("give base=FROM..TO and compare=FROM..TO".to_string()),
    };
    for ranges in [single, pair].into_iter().flatten() {
        for r in ranges {
            // The answer's JSON quotes both ends.
            let _ = (format_ms(r.from_ms), format_ms(r.to_ms));
        }
    }
    if let Some(f) = params.get("function") {
        let _ = Pattern::name_only(f, false);
    }
    let _ = params.get("pid").map(|p| p.parse::<u32>());
    assert_eq!(percent_decode(&percent_encode(query)), query);
});
