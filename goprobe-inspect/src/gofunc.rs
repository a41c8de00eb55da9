//! Where `go:func.*` starts. Since Go 1.18 the inline trees (FUNCDATA_InlTree) are offsets from
//! that symbol, and stripped binaries do not name it: then it is found through
//! `runtime.firstmoduledata.gofunc`, whose word index in moduledata depends on the Go version.
//! Every candidate is checked against the table before use (`LineTable::check_gofunc`).
use super::{
    elf::Elf,
    pclntab::{PclnVersion, Pclntab, read_uint},
    pcvalue::LineTable,
};

/// The bytes from `go:func.*` to the end of its segment, if they check out against `pcln`.
pub fn find<'a>(
    elf: &Elf<'a>,
    tab: &Pclntab<'_>,
    pcln: &[u8],
    pcln_vaddr: u64,
    text_start: u64,
    go_version: Option<&str>,
) -> Option<&'a [u8]> {
    candidates(elf, tab, pcln_vaddr, go_version)
        .into_iter()
        .find(|bytes| {
            LineTable::parse(pcln, text_start)
                .ok()
                .and_then(|t| t.with_gofunc(bytes).check_gofunc(64))
                .is_some()
        })
}

fn candidates<'a>(
    elf: &Elf<'a>,
    tab: &Pclntab<'_>,
    pcln_vaddr: u64,
    go_version: Option<&str>,
) -> Vec<&'a [u8]> {
    if tab.version() < PclnVersion::Go118 {
        return Vec::new();
    }
    let [a, b] = elf.lookup_symbols(["go:func.*", "go.func.*"]);
    if let Some(bytes) = a.or(b).and_then(|(addr, _)| elf.rest_of_segment(addr)) {
        return vec![bytes];
    }
    let minor = go_version
        .and_then(|v| v.strip_prefix("go1."))
        .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|v| v.parse::<u32>().ok());
    // moduledata word index of `gofunc` (runtime/symtab.go): 1.18-1.19 38 (no covctrs),
    // 1.20-1.26 40, 1.27 43 (typedesclen, itaboffset, itabsize). Other versions try each.
    let mut indices = match minor {
        Some(18..=19) => vec![38],
        Some(20..=26) => vec![40],
        Some(27) => vec![43],
        _ => vec![],
    };
    indices.extend([43, 40, 38]);
    let Some(md) = find_moduledata(elf, tab, pcln_vaddr) else {
        return Vec::new();
    };
    let ptr = u64::from(tab.ptr_size());
    indices
        .into_iter()
        .filter_map(|index| elf.read_word(md + index * ptr, tab.ptr_size()))
        .filter(|&addr| addr != 0)
        .filter_map(|addr| elf.rest_of_segment(addr))
        .collect()
}

/// `runtime.firstmoduledata`: a word equal to the pclntab's address, followed by the
/// funcnametab slice and, at word 16/17, the ftab slice (stable from Go 1.16 through 1.27).
fn find_moduledata(elf: &Elf<'_>, tab: &Pclntab<'_>, pcln_vaddr: u64) -> Option<u64> {
    let ptr = tab.ptr_size();
    let step = u64::from(ptr);
    let funcnametab = pcln_vaddr.checked_add(tab.funcname_offset())?;
    let ftab = pcln_vaddr.checked_add(tab.pcln_offset())?;
    for seg in elf
        .segments
        .iter()
        .filter(|s| s.writable() && !s.executable())
    {
        let start = usize::try_from(seg.offset).ok()?;
        let bytes = elf
            .data
            .get(start..start.checked_add(usize::try_from(seg.filesz).ok()?)?)?;
        let mut at = (seg.vaddr.wrapping_neg() % step) as usize;
        while at + usize::from(ptr) <= bytes.len() {
            if read_uint(bytes, at, usize::from(ptr), elf.big_endian()) == Some(pcln_vaddr) {
                let md = seg.vaddr + at as u64;
                let word = |i: u64| elf.read_word(md + i * step, ptr);
                if word(1) == Some(funcnametab)
                    && word(16) == Some(ftab)
                    && word(17) == Some(tab.len() as u64 + 1)
                {
                    return Some(md);
                }
            }
            at += usize::from(ptr);
        }
    }
    None
}
