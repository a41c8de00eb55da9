//! The DWARF readers (inlined copies from `.debug_info`, compressed sections, ranges, line
//! tables; functions' parameters and struct layouts for `--by`) on arbitrary bytes, read as an
//! ELF file. Seeded with real Go binaries (see README.md),
//! whose DWARF the mutations then damage.
#![no_main]

use goprobe_inspect::{
    goabi::{Types, dwarf::Sections},
    inline::dwarf,
};

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if !dwarf::has_dwarf(data) {
        return;
    }
    let _ = dwarf::inlined_copies(data, &|_| true);
    let _ = dwarf::inlined_copies(data, &|name| name.starts_with("main."));
    if let Some(sections) = Sections::load(data) {
        let mut types = Types::with_builtins();
        let mut dwarf = sections.types();
        let _ = dwarf.params(&mut types, "main.main");
        let _ = dwarf.params(&mut types, "main.goprobeE2ELookup");
        let _ = dwarf.named_type(&mut types, "net/http.Request");
    }
});
