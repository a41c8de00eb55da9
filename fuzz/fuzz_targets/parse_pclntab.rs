//! The pclntab parser and the x86-64 probe-site decoder on arbitrary bytes.
#![no_main]

use goprobe_inspect as inspect;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(table) = inspect::pclntab::Pclntab::parse(data) {
        let _ = table.functions(0x40_1000);
        let _ = table.end_pc(0x40_1000);
    }
    let _ = inspect::disasm::x86_64_sites(data, 0x40_1000);
});
