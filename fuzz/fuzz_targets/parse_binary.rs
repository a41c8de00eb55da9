//! Any byte string given to `BinaryIndex::parse` must give Ok or Err; when it parses, every
//! accessor a caller uses must work on every function without panicking.
#![no_main]

use goprobe_inspect as inspect;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(index) = inspect::BinaryIndex::parse("fuzz".into(), data.to_vec()) else {
        return;
    };
    for f in &index.functions {
        let _ = index.function_code(f);
        if let Ok(sites) = index.probe_sites(f) {
            let _ = index.vaddr_to_file_offset(sites.entry);
        }
        let _ = index.find(&f.name);
        let _ = index.function_at(f.addr);
    }
    for copy in index.inlined_copies(&|_| true) {
        let _ = index.inline_sites(&copy);
    }
});
