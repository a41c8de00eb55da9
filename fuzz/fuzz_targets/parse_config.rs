//! The agent's config parser (`goprobe agent --config`, SIGHUP reloads) on arbitrary text: it
//! must answer Ok or an error of one line with a location, and a config it accepts must compile
//! (its patterns were checked while reading: `ProbeConfig::patterns` relies on that).
#![no_main]

use std::path::Path;

use goprobe_input::agent_config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(Path::new("agent.toml"), text) {
        Ok(config) => {
            for (i, probe) in config.probes.iter().enumerate() {
                let _ = config.probe_name(i);
                let _ = probe.patterns();
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(!message.contains('\n'), "a multi-line error: {message:?}");
            assert!(message.starts_with("agent.toml:"), "{message:?}");
        }
    }
});
