//! Function patterns (`go:NAME`, `PATH:NAME`, globs or regular expressions), their declared
//! signatures and `--by` paths, and the closest-name suggestions made when nothing matches. The first byte chooses glob or regex; the rest is the
//! pattern. Suggestions must stay cheap whatever the pattern's length.
#![no_main]

use goprobe_input::pattern::Pattern;
use libfuzzer_sys::fuzz_target;

const NAMES: &[&str] = &[
    "main.main",
    "main.goprobeE2ECount",
    "net/http.(*conn).serve",
    "runtime.gopark",
    "fmt.Println",
    "main.(*T).Get[go.shape.int]",
    "",
];

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let regex = flags & 1 == 1;
    if let Ok((_, Some(params))) = goprobe_input::args::split_signature(text) {
        assert!(params.len() <= 64);
    }
    let _ = goprobe_input::args::parse_by(text);
    let mut patterns = Vec::new();
    for parsed in [Pattern::parse(text, regex), Pattern::name_only(text, regex)] {
        match parsed {
            Ok(p) => patterns.push(p),
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    for p in &patterns {
        for name in NAMES {
            let _ = p.matches(name);
        }
        let _ = p.closest(NAMES.iter().copied().chain([text]), 5);
    }
    let any = Pattern::any_of(&patterns);
    for name in NAMES {
        assert_eq!(
            any.matches(name),
            patterns.iter().any(|p| p.matches(name)),
            "{name:?}"
        );
    }
});
