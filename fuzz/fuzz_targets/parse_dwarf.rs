//! The DWARF reader (inlined copies from `.debug_info`, compressed sections, ranges, line
//! tables) on arbitrary bytes, read as an ELF file. Seeded with real Go binaries (see README.md),
//! whose DWARF the mutations then damage.
#![no_main]

use goprobe_inspect::inline::dwarf;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if !dwarf::has_dwarf(data) {
        return;
    }
    let _ = dwarf::inlined_copies(data, &|_| true);
    let _ = dwarf::inlined_copies(data, &|name| name.starts_with("main."));
});
