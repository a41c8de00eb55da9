//! Inlined copies from DWARF: every `DW_TAG_inlined_subroutine` of a wanted function.
//!
//! The pclntab's inline trees (Go ≥ 1.18, read in `inline.rs`) survive stripping and stay the
//! first source; DWARF serves binaries whose pclntab trees goprobe cannot read (Go < 1.18) and
//! cross-checks the pclntab in tests. Go's DWARF: one compile unit per package, every function a
//! `DW_TAG_subprogram` at depth 1 (an abstract one, `DW_AT_inline`, for inlinable functions; the
//! out-of-line body of one names it through `DW_AT_abstract_origin`), and every inlined call a
//! `DW_TAG_inlined_subroutine` below the subprogram of the code that holds it, with
//! `DW_AT_abstract_origin` (often `DW_FORM_ref_addr` into another unit), `DW_AT_low_pc`/`high_pc`
//! or `DW_AT_ranges`, and `DW_AT_call_file`/`DW_AT_call_line`. A nested inlined call is a child
//! DIE, and its ranges lie inside its parent's.
//!
//! What DWARF lacks (checked against the pclntab in `tests/inspect_dwarf.rs`): in Go 1.19, a
//! method wrapper (`DW_AT_trampoline`, e.g. `pkg.(*T).M` with `pkg.T.M` inlined) has no
//! inlined-subroutine children, so copies inlined into wrappers are missing. Where DWARF has
//! a copy, its code ranges equal the pclntab's, and its call site is the more exact one (the
//! pclntab's is the caller's entry when no caller instruction was left at the call).
//!
//! The Go linker compresses DWARF by default since Go 1.11: first as GNU `.zdebug_*` sections,
//! in later releases (Go 1.19 and 1.27 here) as `SHF_COMPRESSED` zlib `.debug_*` sections.
//! object finds both compression headers; without its `compression` feature (not in this
//! build) the zlib streams are inflated by [`zlib_decompress`] (flate2).
//!
//! Speed: one pass over `.debug_info` reads attributes only of subprograms and inlined
//! subroutines (every other DIE's attributes are skipped by form), names an inlined subroutine
//! by its abstract origin's offset (each origin is read, and `wanted` asked, once), and resolves
//! addresses, ranges and files only for the copies kept. `.debug_line` and the range lists are
//! inflated only when something matched.
//!
//! The input is untrusted: nothing here panics on malformed data; an unreadable unit is skipped,
//! a binary without readable DWARF gives `None`.

use std::{borrow::Cow, collections::HashMap, convert::Infallible, rc::Rc, sync::Arc};

use gimli::{
    Abbreviations, AttributeValue, DebugInfoOffset, EndianSlice, RunTimeEndian, SectionId,
    UnitHeader, constants as dw,
};
use object::{CompressionFormat, Endianness, Object, ObjectSection, read::elf::ElfFile64};

use super::InlinedCopy;

type Slice<'a> = EndianSlice<'a, RunTimeEndian>;

/// Inlining is never this deep; a longer origin chain means a corrupt (maybe cyclic) tree.
const MAX_ORIGIN_CHAIN: usize = 8;

/// Sections read in the first pass (naming and matching), and the ones needed only to resolve
/// matches.
const SCAN_SECTIONS: &[SectionId] = &[
    SectionId::DebugInfo,
    SectionId::DebugAbbrev,
    SectionId::DebugStr,
    SectionId::DebugLineStr,
];
const RESOLVE_SECTIONS: &[SectionId] = &[
    SectionId::DebugLine,
    SectionId::DebugRanges,
    SectionId::DebugRngLists,
    SectionId::DebugAddr,
    SectionId::DebugStrOffsets,
];

/// Whether the file has DWARF debug info (`.debug_info` or `.zdebug_info`).
pub fn has_dwarf(data: &[u8]) -> bool {
    ElfFile64::<Endianness>::parse(data)
        .is_ok_and(|file| find_section(&file, ".debug_info").is_some())
}

/// Every inlined copy of a function whose name satisfies `wanted`, sorted by caller address and
/// then by first range. `None` when the file has no readable DWARF.
pub fn inlined_copies(data: &[u8], wanted: &dyn Fn(&str) -> bool) -> Option<Vec<InlinedCopy>> {
    let file = ElfFile64::<Endianness>::parse(data).ok()?;
    let endian = if file.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    let scan: HashMap<SectionId, Cow<'_, [u8]>> = SCAN_SECTIONS
        .iter()
        .filter_map(|&id| Some((id, section_data(&file, id.name())?)))
        .collect();
    if scan.get(&SectionId::DebugInfo).is_none_or(|s| s.is_empty()) {
        return None;
    }
    let dwarf = make_dwarf(&[&scan], endian);
    let units: Vec<UnitHeader<Slice<'_>>> = {
        let mut iter = dwarf.units();
        let mut units = Vec::new();
        while let Ok(Some(h)) = iter.next() {
            units.push(h);
        }
        units
    };
    let mut scanner = Scanner {
        dwarf: &dwarf,
        units: &units,
        abbrevs: HashMap::new(),
        names: HashMap::new(),
        wanted_origin: HashMap::new(),
        wanted,
    };
    let mut hits = Vec::new();
    for (ui, header) in units.iter().enumerate() {
        // A malformed unit ends its own scan; the hits found before the error are kept.
        let _ = scanner.scan_unit(ui, header, &mut hits);
    }
    if hits.is_empty() {
        return Some(Vec::new());
    }

    let resolve: HashMap<SectionId, Cow<'_, [u8]>> = RESOLVE_SECTIONS
        .iter()
        .filter_map(|&id| Some((id, section_data(&file, id.name())?)))
        .collect();
    let full = make_dwarf(&[&scan, &resolve], endian);
    let len = |id: SectionId| resolve.get(&id).map_or(0, |s| s.len());
    let limits = Limits {
        addr: len(SectionId::DebugAddr),
        rnglists: len(SectionId::DebugRngLists),
        str_offsets: len(SectionId::DebugStrOffsets),
    };
    let mut copies = Vec::with_capacity(hits.len());
    let mut i = 0;
    while i < hits.len() {
        let ui = hits[i].unit;
        let group = hits[i..].iter().take_while(|h| h.unit == ui).count();
        let unit = units
            .get(ui)
            .filter(|h| scanner.root_ok(h, limits))
            .and_then(|h| full.unit(*h).ok());
        for hit in &hits[i..i + group] {
            if let Some(copy) = scanner.resolve(&full, unit.as_ref(), hit, limits) {
                copies.push(copy);
            }
        }
        i += group;
    }
    copies.sort_by(|a, b| {
        (a.caller_addr, a.ranges.first(), &a.name).cmp(&(b.caller_addr, b.ranges.first(), &b.name))
    });
    Some(copies)
}

/// The contents of a section, inflated if it is compressed (`SHF_COMPRESSED` zlib, or a GNU
/// `.zdebug_*` section when asked for `.debug_*`). `None` if absent or unreadable.
pub fn section_data<'d>(file: &ElfFile64<'d, Endianness>, name: &str) -> Option<Cow<'d, [u8]>> {
    let section = find_section(file, name)?;
    let compressed = section.compressed_data().ok()?;
    match compressed.format {
        CompressionFormat::None => Some(Cow::Borrowed(compressed.data)),
        CompressionFormat::Zlib => {
            zlib_decompress(compressed.data, compressed.uncompressed_size).map(Cow::Owned)
        }
        _ => None,
    }
}

fn find_section<'d, 'f>(
    file: &'f ElfFile64<'d, Endianness>,
    name: &str,
) -> Option<object::read::elf::ElfSection64<'d, 'f, Endianness>> {
    file.section_by_name(name).or_else(|| {
        let rest = name.strip_prefix(".debug_")?;
        file.section_by_name(&format!(".zdebug_{rest}"))
    })
}

fn make_dwarf<'a>(
    stores: &[&'a HashMap<SectionId, Cow<'_, [u8]>>],
    endian: RunTimeEndian,
) -> gimli::Dwarf<Slice<'a>> {
    let load = |id: SectionId| -> Result<Slice<'a>, Infallible> {
        let bytes: &'a [u8] = stores
            .iter()
            .find_map(|s| s.get(&id))
            .map_or(&[], |c| c.as_ref());
        Ok(EndianSlice::new(bytes, endian))
    };
    let mut dwarf = gimli::Dwarf::load(load).unwrap_or_else(|never| match never {});
    // Go uses one abbreviation table for every unit: parse it once.
    dwarf.populate_abbreviations_cache(gimli::AbbreviationsCacheStrategy::Duplicates);
    dwarf
}

/// A DW_TAG_subprogram enclosing the DIEs being read.
struct Subprogram<'a> {
    depth: isize,
    name: Option<AttributeValue<Slice<'a>>>,
    origin: Option<usize>,
    low_pc: Option<AttributeValue<Slice<'a>>>,
}

/// A wanted DW_TAG_inlined_subroutine, with its attributes still raw (their resolution needs
/// sections that are only loaded when something matched).
struct Hit<'a> {
    unit: usize,
    name: Rc<str>,
    caller_name: Option<AttributeValue<Slice<'a>>>,
    caller_origin: Option<usize>,
    caller_low_pc: Option<AttributeValue<Slice<'a>>>,
    low_pc: Option<AttributeValue<Slice<'a>>>,
    high_pc: Option<AttributeValue<Slice<'a>>>,
    ranges: Option<AttributeValue<Slice<'a>>>,
    call_file: Option<u64>,
    call_line: Option<u64>,
}

struct Scanner<'s, 'a> {
    dwarf: &'s gimli::Dwarf<Slice<'a>>,
    /// Every unit header, in section order (for finding the unit of an offset).
    units: &'s [UnitHeader<Slice<'a>>],
    abbrevs: HashMap<usize, Option<Arc<Abbreviations>>>,
    /// The name of the DIE at a `.debug_info` offset (following abstract origins).
    names: HashMap<usize, Option<Rc<str>>>,
    /// Whether the function an abstract origin names is wanted (its name if so).
    wanted_origin: HashMap<usize, Option<Rc<str>>>,
    wanted: &'s dyn Fn(&str) -> bool,
}

impl<'a> Scanner<'_, 'a> {
    fn abbreviations(&mut self, header: &UnitHeader<Slice<'a>>) -> Option<Arc<Abbreviations>> {
        self.abbrevs
            .entry(header.debug_abbrev_offset().0)
            .or_insert_with(|| self.dwarf.abbreviations(header).ok())
            .clone()
    }

    fn scan_unit(
        &mut self,
        ui: usize,
        header: &UnitHeader<Slice<'a>>,
        hits: &mut Vec<Hit<'a>>,
    ) -> gimli::Result<()> {
        let Some(abbrevs) = self.abbreviations(header) else {
            return Ok(());
        };
        let mut entries = header.entries_raw(&abbrevs, None)?;
        let mut stack: Vec<Subprogram<'a>> = Vec::new();
        while !entries.is_empty() {
            let depth = entries.next_depth();
            let Some(abbrev) = entries.read_abbreviation()? else {
                continue;
            };
            while stack.last().is_some_and(|s| s.depth >= depth) {
                stack.pop();
            }
            match abbrev.tag() {
                dw::DW_TAG_subprogram => {
                    let mut sub = Subprogram {
                        depth,
                        name: None,
                        origin: None,
                        low_pc: None,
                    };
                    for &spec in abbrev.attributes() {
                        let attr = entries.read_attribute(spec)?;
                        match attr.name() {
                            dw::DW_AT_name => sub.name = Some(attr.value()),
                            dw::DW_AT_abstract_origin | dw::DW_AT_specification => {
                                sub.origin = ref_offset(attr.value(), header);
                            }
                            dw::DW_AT_low_pc => sub.low_pc = Some(attr.value()),
                            _ => {}
                        }
                    }
                    stack.push(sub);
                }
                dw::DW_TAG_inlined_subroutine => {
                    let mut hit = Hit {
                        unit: ui,
                        name: Rc::from(""),
                        caller_name: None,
                        caller_origin: None,
                        caller_low_pc: None,
                        low_pc: None,
                        high_pc: None,
                        ranges: None,
                        call_file: None,
                        call_line: None,
                    };
                    let mut origin = None;
                    for &spec in abbrev.attributes() {
                        let attr = entries.read_attribute(spec)?;
                        match attr.name() {
                            dw::DW_AT_abstract_origin => origin = ref_offset(attr.value(), header),
                            dw::DW_AT_low_pc => hit.low_pc = Some(attr.value()),
                            dw::DW_AT_high_pc => hit.high_pc = Some(attr.value()),
                            dw::DW_AT_ranges => hit.ranges = Some(attr.value()),
                            dw::DW_AT_call_file => hit.call_file = attr.udata_value(),
                            dw::DW_AT_call_line => hit.call_line = attr.udata_value(),
                            _ => {}
                        }
                    }
                    let Some(name) = origin.and_then(|o| self.wanted_name(o)) else {
                        continue;
                    };
                    hit.name = name;
                    if let Some(sub) = stack.last() {
                        hit.caller_name = sub.name;
                        hit.caller_origin = sub.origin;
                        hit.caller_low_pc = sub.low_pc;
                    }
                    hits.push(hit);
                }
                _ => entries.skip_attributes(abbrev.attributes())?,
            }
        }
        Ok(())
    }

    /// The name of the function at abstract origin `offset`, if it is wanted.
    fn wanted_name(&mut self, offset: usize) -> Option<Rc<str>> {
        if let Some(known) = self.wanted_origin.get(&offset) {
            return known.clone();
        }
        let name = self.name_at(offset).filter(|n| (self.wanted)(n));
        self.wanted_origin.insert(offset, name.clone());
        name
    }

    /// The `DW_AT_name` of the DIE at a `.debug_info` offset, or of its abstract origin or
    /// specification.
    fn name_at(&mut self, offset: usize) -> Option<Rc<str>> {
        let mut chain = Vec::new();
        let mut at = offset;
        let mut found = None;
        for _ in 0..MAX_ORIGIN_CHAIN {
            if let Some(known) = self.names.get(&at) {
                found = known.clone();
                break;
            }
            chain.push(at);
            match self.read_name(at) {
                Some(Named::Name(n)) => {
                    found = Some(n);
                    break;
                }
                Some(Named::Origin(next)) if next != at => at = next,
                _ => break,
            }
        }
        for at in chain {
            self.names.insert(at, found.clone());
        }
        found
    }

    fn read_name(&mut self, offset: usize) -> Option<Named> {
        let i = self.units.partition_point(|h| {
            h.offset()
                .as_debug_info_offset()
                .is_some_and(|o| o.0 <= offset)
        });
        let header = self.units.get(i.checked_sub(1)?)?;
        let unit_offset = DebugInfoOffset(offset).to_unit_offset(header)?;
        let abbrevs = self.abbreviations(header)?;
        let mut entries = header.entries_raw(&abbrevs, Some(unit_offset)).ok()?;
        let abbrev = entries.read_abbreviation().ok()??;
        let mut origin = None;
        for &spec in abbrev.attributes() {
            let attr = entries.read_attribute(spec).ok()?;
            match attr.name() {
                dw::DW_AT_name => {
                    let s = self.string(attr.value())?;
                    return Some(Named::Name(Rc::from(String::from_utf8_lossy(s).as_ref())));
                }
                dw::DW_AT_abstract_origin | dw::DW_AT_specification => {
                    origin = ref_offset(attr.value(), header);
                }
                _ => {}
            }
        }
        origin.map(Named::Origin)
    }

    /// A string attribute in a form readable without the unit's root DIE.
    fn string(&self, value: AttributeValue<Slice<'a>>) -> Option<&'a [u8]> {
        match value {
            AttributeValue::String(s) => Some(s.slice()),
            AttributeValue::DebugStrRef(o) => {
                self.dwarf.debug_str.get_str(o).ok().map(|s| s.slice())
            }
            AttributeValue::DebugLineStrRef(o) => {
                self.dwarf.debug_line_str.get_str(o).ok().map(|s| s.slice())
            }
            _ => None,
        }
    }

    /// Whether `gimli::Unit::new` can read the unit's root DIE without an index that gimli
    /// would multiply past `usize` (a debug-build panic in gimli 0.32).
    fn root_ok(&mut self, header: &UnitHeader<Slice<'a>>, limits: Limits) -> bool {
        let Some(abbrevs) = self.abbreviations(header) else {
            return false;
        };
        let Ok(mut entries) = header.entries_raw(&abbrevs, None) else {
            return false;
        };
        let Ok(Some(abbrev)) = entries.read_abbreviation() else {
            return false;
        };
        for &spec in abbrev.attributes() {
            let Ok(attr) = entries.read_attribute(spec) else {
                return false;
            };
            let ok = match attr.value() {
                AttributeValue::DebugAddrIndex(i) => i.0 < limits.addr,
                AttributeValue::DebugStrOffsetsIndex(i) => i.0 < limits.str_offsets,
                _ => true,
            };
            if !ok {
                return false;
            }
        }
        true
    }

    fn resolve(
        &mut self,
        dwarf: &gimli::Dwarf<Slice<'a>>,
        unit: Option<&gimli::Unit<Slice<'a>>>,
        hit: &Hit<'a>,
        limits: Limits,
    ) -> Option<InlinedCopy> {
        let unit = unit?;
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        if let Some(value) = hit.ranges {
            ranges = range_list(dwarf, unit, value, limits)?;
        } else if let Some(low) = hit.low_pc {
            let low = address(dwarf, unit, low, limits)?;
            let high = hit.high_pc.and_then(|h| {
                address(dwarf, unit, h, limits).or_else(|| low.checked_add(h.udata_value()?))
            })?;
            ranges.push((low, high));
        }
        ranges.retain(|&(s, e)| s < e);
        if ranges.is_empty() {
            return None;
        }
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (s, e) in ranges {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        let caller = hit
            .caller_name
            .and_then(|v| string(dwarf, unit, v, limits))
            .or_else(|| Some(self.name_at(hit.caller_origin?)?.to_string()))
            .unwrap_or_default();
        let caller_addr = hit
            .caller_low_pc
            .and_then(|v| address(dwarf, unit, v, limits))
            .unwrap_or(0);
        let call_file = hit
            .call_file
            .and_then(|f| file_name(dwarf, unit, f, limits))
            .unwrap_or_default();
        Some(InlinedCopy {
            name: hit.name.to_string(),
            caller,
            caller_addr,
            call_file,
            call_line: hit
                .call_line
                .and_then(|l| u32::try_from(l).ok())
                .unwrap_or(0),
            call_pc: None,
            ranges: merged,
        })
    }
}

enum Named {
    Name(Rc<str>),
    Origin(usize),
}

/// A reference attribute as a `.debug_info` offset.
fn ref_offset(value: AttributeValue<Slice<'_>>, header: &UnitHeader<Slice<'_>>) -> Option<usize> {
    match value {
        // Not `UnitOffset::to_debug_info_offset`, whose addition is unchecked.
        AttributeValue::UnitRef(o) => header.offset().as_debug_info_offset()?.0.checked_add(o.0),
        AttributeValue::DebugInfoRef(o) => Some(o.0),
        _ => None,
    }
}

/// File `index` of the unit's line program header, joined to its directory.
fn file_name(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &gimli::Unit<Slice<'_>>,
    index: u64,
    limits: Limits,
) -> Option<String> {
    let header = unit.line_program.as_ref()?.header();
    let file = header.file(index)?;
    let name = string(dwarf, unit, file.path_name(), limits)?;
    let dir = file
        .directory(header)
        .and_then(|d| string(dwarf, unit, d, limits))
        .unwrap_or_default();
    Some(if name.starts_with('/') || dir.is_empty() || dir == "." {
        name
    } else {
        format!("{}/{name}", dir.trim_end_matches('/'))
    })
}

/// Lengths of the sections that gimli 0.32 indexes by `index * size` without an overflow
/// check (a panic in debug builds): indices are checked against them first.
#[derive(Clone, Copy)]
struct Limits {
    addr: usize,
    rnglists: usize,
    str_offsets: usize,
}

/// An address attribute (`DW_FORM_addr`, or `DW_FORM_addrx` into `.debug_addr`).
fn address(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &gimli::Unit<Slice<'_>>,
    value: AttributeValue<Slice<'_>>,
    limits: Limits,
) -> Option<u64> {
    match value {
        AttributeValue::Addr(a) => Some(a),
        AttributeValue::DebugAddrIndex(i) if i.0 < limits.addr => dwarf.address(unit, i).ok(),
        _ => None,
    }
}

/// A string attribute, in any form.
fn string(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &gimli::Unit<Slice<'_>>,
    value: AttributeValue<Slice<'_>>,
    limits: Limits,
) -> Option<String> {
    if let AttributeValue::DebugStrOffsetsIndex(i) = value
        && i.0 >= limits.str_offsets
    {
        return None;
    }
    let s = dwarf.attr_string(unit, value).ok()?;
    Some(String::from_utf8_lossy(s.slice()).into_owned())
}

/// The ranges of a `DW_AT_ranges` list (`.debug_ranges`, or `.debug_rnglists` in DWARF 5).
fn range_list(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &gimli::Unit<Slice<'_>>,
    value: AttributeValue<Slice<'_>>,
    limits: Limits,
) -> Option<Vec<(u64, u64)>> {
    let offset = match value {
        AttributeValue::RangeListsRef(o) => dwarf.ranges_offset_from_raw(unit, o),
        // gimli adds the base and the offset read there unchecked: only 32-bit offsets.
        AttributeValue::DebugRngListsIndex(i)
            if i.0 < limits.rnglists && unit.header.format() == gimli::Format::Dwarf32 =>
        {
            dwarf.ranges_offset(unit, i).ok()?
        }
        _ => return None,
    };
    let mut iter = dwarf.ranges(unit, offset).ok()?;
    let mut ranges = Vec::new();
    // Entry by entry (`next_raw`/`convert_raw`, the steps of `next`), so that `.debug_addr`
    // indices are checked before gimli multiplies them. Every entry consumes input: bounded.
    while let Ok(Some(raw)) = iter.next_raw() {
        let indices_ok = match raw {
            gimli::RawRngListEntry::BaseAddressx { addr } => addr.0 < limits.addr,
            gimli::RawRngListEntry::StartxEndx { begin, end } => {
                begin.0 < limits.addr && end.0 < limits.addr
            }
            gimli::RawRngListEntry::StartxLength { begin, .. } => begin.0 < limits.addr,
            _ => true,
        };
        if !indices_ok {
            return None;
        }
        if let Ok(Some(r)) = iter.convert_raw(raw) {
            ranges.push((r.begin, r.end));
        }
    }
    Some(ranges)
}

/// Inflate a zlib stream whose uncompressed size is `size` (from the section's compression
/// header), with flate2. `None` if the stream is malformed, its checksum is wrong, or it does not
/// inflate to exactly `size` bytes; never more than `size` bytes are allocated, whatever the
/// (untrusted) stream claims.
pub fn zlib_decompress(input: &[u8], size: u64) -> Option<Vec<u8>> {
    use std::io::Read as _;
    let size = usize::try_from(size).ok()?;
    // Debug sections of even the largest Go binaries are well under this.
    if size > 1 << 30 {
        return None;
    }
    let mut out = Vec::with_capacity(size.min(input.len().saturating_mul(16)));
    let mut decoder = flate2::read::ZlibDecoder::new(input);
    decoder
        .by_ref()
        .take(size as u64 + 1)
        .read_to_end(&mut out)
        .ok()?;
    (out.len() == size).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `zlib.compress(TEXT, 9)` by Python: dynamic Huffman blocks.
    const DYNAMIC: &[&str] = &[
        "78da8d995b6e55310c45ff19c51d429c871f0c075444a1b4bcaa327cc4dfddd6d962ff5b49ce8ae378e53c3d3e3fdcc6",
        "fbdbefcf0fb71faf8f1fbfde3efc7c797bbe7d7af9731bb72fafdfbeff7af7f42fc6ae63ec3e665ec7ecfb98751d53f7",
        "319bcce5f741e73a689efb20bf0e5a30529065c39af23ac8e1e3ea3a28819211dc0b8208ef09f319231e104598c78428",
        "421d8308f5855f48b03b8e45b817eca011f00b7111f201393c097983754d82fec08c93a02f48ad49d06fd8c649d0179e",
        "2ec27ee3ba08fbc21909fb83bc08fb842082de611b17413f215317419f30e322e80f161a827ec2662f823ee1f02f82de",
        "618316ab364882a0371c8ba187f45a8c3d446dc27e03d54dd82fe0b5097bc3b1087b5c16cb7ac8e74dd02740dd047de0",
        "bd42d0078e45d007aeab94a83394198f29ab3f5321719642f56c6183ce51f6fab8923727941c3ca9e4f329e56cf850ce",
        "999b72667d2ae7df97524b7c2b75c98f52e3dc957ae9a1d45e4fa58e7b0957420ce57609536eaa98caad174bb941632b",
        "b7711ce5660f57ba8408a5e38854ba9728a513caa17455694a879653e9f672098d636ea507cda3f4b3e94a6f9c21b4d9",
        "994ac79e2535ff43f1883245496a2a76534b11a5da8272d511dcad5c90c00ac1262b95914a58938d217c9e0d5350d990",
        "b8db58ca26dad84a46d8384a7ad970cd2e95bcb791925f8e920493296d334c2ab51825551d6356db2493696db34c2ab6",
        "cdca5da9d46652d937e6b6a74d5aca8564cc6e777b3230e5aab429ddbbc604b7daa45be9088c296e62942b9d8a4da9ed",
        "312ab96dd2521a32a39e8b3b4f45172bc392fa4e63aa8b4dac31d7b536da51da6b63b6eb2d4c6afc8df9ee6adc4a5112",
        "63c68b4b63c68baa645bf22e63ce8b1267cc7aa38d7614bd34eabd2d2cb44953fb84928030f76d7899fce25e1de9ddc1",
        "98fdb63462fadb929209704b7166c0edc01ce9e1c79803b7c3cc24b8950666c1add0300d6e65cba59737a3228c78a909",
        "6381662adcca3d75618c921e3e8dc970bbd6980db74b92f970bb729910b70b3ca49767634adc9a0be6c4ad556152dc1a",
        "1f66c5ad8d0aede99f7971ff8f5052c3c8cc18076366dc5ad9d4febc5037c62d65768cd4981d3701607adc7422a5df5e",
        "c60cb9a90e53e4264ecc919b863149c6a595f2bfd1a82463d456fe81324b6e63b9b4ae90be313560ffc3ff17facee810",
    ];

    fn text() -> Vec<u8> {
        (0..200)
            .map(|i| format!("line {i}: the quick brown fox {} jumps\n", i * i % 97))
            .collect::<String>()
            .into_bytes()
    }

    fn unhex(parts: &[&str]) -> Vec<u8> {
        let s: String = parts.concat();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// A zlib stream of stored blocks (at most 65535 bytes each).
    /// A zlib stream of `data` (flate2, no compression: stored blocks).
    fn stored_zlib(data: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::none());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn inflates_stored_fixed_and_dynamic_blocks() {
        let t = text();
        assert_eq!(zlib_decompress(&unhex(DYNAMIC), t.len() as u64), Some(t));
        assert_eq!(
            zlib_decompress(&unhex(&["78dacb48cdc9c957c8402701680308b1"]), 23).as_deref(),
            Some(&b"hello hello hello hello"[..])
        );
        assert_eq!(
            zlib_decompress(&unhex(&["7801010700f8ff73746f726564210bef02b3"]), 7).as_deref(),
            Some(&b"stored!"[..])
        );
        let big: Vec<u8> = (0..150_000u32).map(|i| (i * 7 % 251) as u8).collect();
        assert_eq!(
            zlib_decompress(&stored_zlib(&big), big.len() as u64),
            Some(big)
        );
        assert_eq!(zlib_decompress(&stored_zlib(&[]), 0), Some(vec![]));
    }

    #[test]
    fn rejects_bad_streams_without_panicking() {
        let good = unhex(DYNAMIC);
        let n = text().len() as u64;
        // Wrong size, either way: the header's size must be exact.
        assert_eq!(zlib_decompress(&good, n - 1), None);
        assert_eq!(zlib_decompress(&good, n + 1), None);
        // A lying, huge size does not allocate it.
        assert_eq!(zlib_decompress(&good, u64::from(u32::MAX) * 4), None);
        // Truncated anywhere.
        for len in 0..good.len() {
            assert_eq!(zlib_decompress(&good[..len], n), None, "{len}");
        }
        // Checksum, header.
        let mut bad = good.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(zlib_decompress(&bad, n), None);
        let mut bad = good.clone();
        bad[0] = 0x79;
        assert_eq!(zlib_decompress(&bad, n), None);
        // Every single-bit flip, and random bodies: no panic, no endless loop.
        for i in 2..good.len() * 8 {
            let mut m = good.clone();
            m[i / 8] ^= 1 << (i % 8);
            let _ = zlib_decompress(&m, n);
        }
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut m = vec![0x78, 0xda];
            for _ in 0..(x % 300) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                m.push(x as u8);
            }
            let _ = zlib_decompress(&m, 1 << 20);
        }
    }

    /// A minimal ELF64 with the given sections (name, flags, contents).
    fn elf_with(sections: &[(&str, u64, Vec<u8>)]) -> Vec<u8> {
        let mut out = vec![0u8; 64];
        let mut shstrtab = vec![0u8];
        let mut rows = Vec::new(); // (name, type, flags, offset, size)
        for (name, flags, data) in sections {
            while !out.len().is_multiple_of(8) {
                out.push(0);
            }
            rows.push((
                shstrtab.len() as u32,
                1u32,
                *flags,
                out.len() as u64,
                data.len() as u64,
            ));
            shstrtab.extend_from_slice(name.as_bytes());
            shstrtab.push(0);
            out.extend_from_slice(data);
        }
        rows.push((shstrtab.len() as u32, 3, 0, out.len() as u64, 0));
        shstrtab.extend_from_slice(b".shstrtab\0");
        let last = rows.len() - 1;
        rows[last].4 = shstrtab.len() as u64;
        out.extend_from_slice(&shstrtab);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let shoff = out.len() as u64;
        out.extend_from_slice(&[0u8; 64]);
        for (name, ty, flags, offset, size) in &rows {
            out.extend_from_slice(&name.to_le_bytes());
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&flags.to_le_bytes());
            out.extend_from_slice(&0u64.to_le_bytes()); // addr
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&size.to_le_bytes());
            out.extend_from_slice(&[0u8; 8]); // link, info
            out.extend_from_slice(&1u64.to_le_bytes()); // addralign
            out.extend_from_slice(&0u64.to_le_bytes()); // entsize
        }
        out[..8].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
        out[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        out[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[40..48].copy_from_slice(&shoff.to_le_bytes());
        out[52..54].copy_from_slice(&64u16.to_le_bytes());
        out[54..56].copy_from_slice(&56u16.to_le_bytes());
        out[58..60].copy_from_slice(&64u16.to_le_bytes());
        out[60..62].copy_from_slice(&(rows.len() as u16 + 1).to_le_bytes());
        out[62..64].copy_from_slice(&(rows.len() as u16).to_le_bytes());
        out
    }

    /// `.debug_abbrev` and `.debug_info` (DWARF 4) shaped like Go's: `main.main` holds an inlined
    /// `fmt.Println` (unit reference, high_pc as a size) with `main.add` nested in it, and a
    /// second `main.add` (section reference, high_pc an address); abstract subprograms name
    /// them; a variable's attributes are skipped.
    fn tiny_dwarf() -> (Vec<u8>, Vec<u8>) {
        let abbrev: Vec<u8> = [
            &[1, 0x11, 1, 0x03, 0x08, 0, 0][..], // compile_unit: name
            &[2, 0x2e, 1, 0x03, 0x08, 0x11, 0x01, 0x12, 0x01, 0, 0], // subprogram: name, low, high
            &[3, 0x2e, 0, 0x03, 0x08, 0x20, 0x0b, 0, 0], // abstract: name, inline
            &[
                4, 0x1d, 1, 0x31, 0x13, 0x11, 0x01, 0x12, 0x06, 0x58, 0x0b, 0x59, 0x0b, 0, 0,
            ],
            &[5, 0x34, 0, 0x03, 0x08, 0x02, 0x18, 0, 0], // variable: name, exprloc
            &[
                6, 0x1d, 0, 0x31, 0x10, 0x11, 0x01, 0x12, 0x01, 0x59, 0x05, 0, 0,
            ],
            &[0],
        ]
        .concat();
        let mut info = vec![0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 8]; // length, version 4, abbrev 0, 8-byte addresses
        let die = |info: &mut Vec<u8>, bytes: &[u8]| -> u32 {
            let at = info.len() as u32;
            info.extend_from_slice(bytes);
            at
        };
        die(&mut info, b"\x01t\0");
        let println = die(&mut info, b"\x03fmt.Println\0\x01");
        let add = die(&mut info, b"\x03main.add\0\x01");
        let mut main = b"\x02main.main\0".to_vec();
        main.extend_from_slice(&0x1000u64.to_le_bytes());
        main.extend_from_slice(&0x1100u64.to_le_bytes());
        die(&mut info, &main);
        die(&mut info, b"\x05v\0\x01\x9c");
        let mut inl = vec![4];
        inl.extend_from_slice(&println.to_le_bytes());
        inl.extend_from_slice(&0x1010u64.to_le_bytes());
        inl.extend_from_slice(&0x20u32.to_le_bytes());
        inl.extend_from_slice(&[1, 7]);
        die(&mut info, &inl);
        let nested = |low: u64, high: u64, line: u16| {
            let mut d = vec![6];
            d.extend_from_slice(&add.to_le_bytes());
            d.extend_from_slice(&low.to_le_bytes());
            d.extend_from_slice(&high.to_le_bytes());
            d.extend_from_slice(&line.to_le_bytes());
            d
        };
        die(&mut info, &nested(0x1018, 0x1020, 300));
        die(&mut info, &[0]); // end of fmt.Println's children
        die(&mut info, &nested(0x1040, 0x1048, 9));
        die(&mut info, &[0, 0]); // end of main.main's and the unit's children
        let len = info.len() as u32 - 4;
        info[..4].copy_from_slice(&len.to_le_bytes());
        (abbrev, info)
    }

    fn expected() -> Vec<InlinedCopy> {
        let copy = |name: &str, line, ranges| InlinedCopy {
            name: name.into(),
            caller: "main.main".into(),
            caller_addr: 0x1000,
            call_file: String::new(), // no line program
            call_line: line,
            call_pc: None,
            ranges,
        };
        vec![
            copy("fmt.Println", 7, vec![(0x1010, 0x1030)]),
            copy("main.add", 300, vec![(0x1018, 0x1020)]),
            copy("main.add", 9, vec![(0x1040, 0x1048)]),
        ]
    }

    #[test]
    fn reads_inlined_subroutines_plain_and_compressed() {
        let (abbrev, info) = tiny_dwarf();
        let all = |_: &str| true;
        let plain = elf_with(&[
            (".debug_abbrev", 0, abbrev.clone()),
            (".debug_info", 0, info.clone()),
        ]);
        assert!(has_dwarf(&plain));
        assert_eq!(inlined_copies(&plain, &all), Some(expected()));
        assert_eq!(
            inlined_copies(&plain, &|n| n == "fmt.Println"),
            Some(expected()[..1].to_vec())
        );
        assert_eq!(inlined_copies(&plain, &|_| false), Some(vec![]));

        // SHF_COMPRESSED: an Elf64_Chdr (ELFCOMPRESS_ZLIB, size, alignment), then zlib.
        let chdr = |data: &[u8]| {
            let mut out = 1u32.to_le_bytes().to_vec();
            out.extend_from_slice(&[0; 4]);
            out.extend_from_slice(&(data.len() as u64).to_le_bytes());
            out.extend_from_slice(&1u64.to_le_bytes());
            out.extend_from_slice(&stored_zlib(data));
            out
        };
        let compressed = elf_with(&[
            (
                ".debug_abbrev",
                u64::from(object::elf::SHF_COMPRESSED),
                chdr(&abbrev),
            ),
            (
                ".debug_info",
                u64::from(object::elf::SHF_COMPRESSED),
                chdr(&info),
            ),
        ]);
        assert_eq!(inlined_copies(&compressed, &all), Some(expected()));

        // GNU .zdebug_*: "ZLIB", the size big-endian, then zlib.
        let gnu = |data: &[u8]| {
            let mut out = b"ZLIB".to_vec();
            out.extend_from_slice(&(data.len() as u64).to_be_bytes());
            out.extend_from_slice(&stored_zlib(data));
            out
        };
        let zdebug = elf_with(&[
            (".zdebug_abbrev", 0, gnu(&abbrev)),
            (".zdebug_info", 0, gnu(&info)),
        ]);
        assert!(has_dwarf(&zdebug));
        assert_eq!(inlined_copies(&zdebug, &all), Some(expected()));
    }

    #[test]
    fn no_dwarf_is_none() {
        let go = crate::testelf::ElfSpec::default().build();
        assert!(!has_dwarf(&go));
        assert_eq!(inlined_copies(&go, &|_| true), None);
        assert_eq!(inlined_copies(b"not an elf", &|_| true), None);
        assert_eq!(inlined_copies(&[], &|_| true), None);
        let empty = elf_with(&[(".debug_info", 0, vec![])]);
        assert_eq!(inlined_copies(&empty, &|_| true), None);
    }

    #[test]
    fn garbage_dwarf_does_not_panic() {
        let (abbrev, info) = tiny_dwarf();
        // Every byte of both sections set to a few values, one at a time.
        for (which, len) in [(0, abbrev.len()), (1, info.len())] {
            for i in 0..len {
                for v in [0x00, 0x01, 0x7f, 0x80, 0xff, 0x10, 0x1d, 0x2e] {
                    let (mut a, mut d) = (abbrev.clone(), info.clone());
                    if which == 0 {
                        a[i] = v;
                    } else {
                        d[i] = v;
                    }
                    let elf = elf_with(&[(".debug_abbrev", 0, a), (".debug_info", 0, d)]);
                    let _ = inlined_copies(&elf, &|_| true);
                }
            }
        }
        // Random sections, and compressed sections whose contents are not zlib.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        };
        for round in 0..300 {
            let flags = if round % 2 == 0 {
                0
            } else {
                u64::from(object::elf::SHF_COMPRESSED)
            };
            let names = [
                ".debug_info",
                ".debug_abbrev",
                ".debug_line",
                ".debug_ranges",
                ".debug_rnglists",
                ".debug_addr",
                ".debug_str",
            ];
            let sections: Vec<(&str, u64, Vec<u8>)> = names
                .iter()
                .map(|&n| (n, flags, random(round % 97 + 1)))
                .collect();
            let _ = inlined_copies(&elf_with(&sections), &|_| true);
            // Real abbreviations and a random unit, and the other way round.
            let _ = inlined_copies(
                &elf_with(&[
                    (".debug_abbrev", 0, abbrev.clone()),
                    (".debug_info", 0, [&info[..11], &random(round)[..]].concat()),
                ]),
                &|_| true,
            );
            let _ = inlined_copies(
                &elf_with(&[
                    (".debug_abbrev", 0, random(round % 50)),
                    (".debug_info", 0, info.clone()),
                ]),
                &|_| true,
            );
        }
    }
}
