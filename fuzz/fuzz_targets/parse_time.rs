//! Times, ranges and durations as users write them (`--from`, `diff` ranges, the agent's
//! `from=`/`to=`/`base=`, `--slower-than`): Ok or a one-line error, and whatever parses is a
//! time goprobe can format (from 1970 to year 9999), never a panic.
#![no_main]

use goprobe_input::times::{MAX_MS, format_ms, parse_duration, parse_range, parse_time};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for now in [0, 1_800_000_000_000, MAX_MS] {
        match parse_time(text, now) {
            Ok(ms) => {
                assert!(ms <= MAX_MS, "{text:?} gave {ms}");
                let _ = format_ms(ms);
            }
            Err(e) => assert!(!e.contains('\n'), "{e:?}"),
        }
        match parse_range(text, now) {
            Ok(range) => {
                assert!(range.from_ms <= range.to_ms && range.to_ms <= MAX_MS);
                let _ = (format_ms(range.from_ms), format_ms(range.to_ms));
            }
            Err(e) => assert!(!e.contains('\n'), "{e:?}"),
        }
    }
    if let Err(e) = parse_duration(text) {
        assert!(!e.contains('\n'), "{e:?}");
    }
});
