//! Parameters and types from a Go binary's DWARF: a function's parameters in order (receiver
//! first, results left out) with their types, and struct layouts with each field's offset.
//! Go marks every type with its kind (`DW_AT_go_kind`), which is what the register assignment
//! needs. The file is untrusted: a malformed entry ends the search, never the program, and type
//! graphs are followed to a bounded depth.
use std::{borrow::Cow, collections::HashMap};

use gimli::{AttributeValue, DebugInfoOffset, EndianSlice, RunTimeEndian, SectionId, UnitOffset};
use object::{Endianness, Object as _, read::elf::ElfFile64};

use super::{Field, Kind, Param, Type, TypeId, Types};
use crate::inline::dwarf::section_data;

type Slice<'a> = EndianSlice<'a, RunTimeEndian>;

/// `DW_AT_go_kind`, Go's own attribute.
const DW_AT_GO_KIND: gimli::DwAt = gimli::DwAt(0x2900);

/// How deep a type graph is followed (a pointer to a struct with a field of a struct type ...).
const MAX_DEPTH: u32 = 24;

const SECTIONS: &[SectionId] = &[
    SectionId::DebugAbbrev,
    SectionId::DebugInfo,
    SectionId::DebugLine,
    SectionId::DebugStr,
    SectionId::DebugLineStr,
    SectionId::DebugStrOffsets,
    SectionId::DebugAddr,
];

/// A binary's DWARF, loaded for type queries.
pub struct DwarfTypes<'d> {
    dwarf: gimli::Dwarf<Slice<'d>>,
    /// Every unit, in section order (for finding the unit of an offset).
    units: Vec<gimli::Unit<Slice<'d>>>,
    memo: HashMap<usize, TypeId>,
}

/// The loaded sections of one file (kept apart from [`DwarfTypes`], which borrows them).
pub struct Sections<'d> {
    sections: HashMap<SectionId, Cow<'d, [u8]>>,
    endian: RunTimeEndian,
}

impl<'d> Sections<'d> {
    /// `None` when the file is not ELF or has no `.debug_info`.
    pub fn load(data: &'d [u8]) -> Option<Sections<'d>> {
        let file = ElfFile64::<Endianness>::parse(data).ok()?;
        let endian = if file.is_little_endian() {
            RunTimeEndian::Little
        } else {
            RunTimeEndian::Big
        };
        let sections: HashMap<SectionId, Cow<'d, [u8]>> = SECTIONS
            .iter()
            .filter_map(|&id| Some((id, section_data(&file, id.name())?)))
            .collect();
        if sections
            .get(&SectionId::DebugInfo)
            .is_none_or(|s| s.is_empty())
        {
            return None;
        }
        Some(Sections { sections, endian })
    }

    pub fn types(&self) -> DwarfTypes<'_> {
        let load = |id: SectionId| -> Result<Slice<'_>, std::convert::Infallible> {
            let bytes = self.sections.get(&id).map_or(&[][..], |c| c.as_ref());
            Ok(EndianSlice::new(bytes, self.endian))
        };
        let dwarf = gimli::Dwarf::load(load).unwrap_or_else(|never| match never {});
        let mut units = Vec::new();
        let mut iter = dwarf.units();
        while let Ok(Some(h)) = iter.next() {
            if let Ok(unit) = dwarf.unit(h) {
                units.push(unit);
            }
        }
        DwarfTypes {
            dwarf,
            units,
            memo: HashMap::new(),
        }
    }
}

/// An attribute of one DIE, read into plain values.
struct Die {
    tag: gimli::DwTag,
    name: Option<String>,
    go_kind: Option<u64>,
    size: u64,
    ty: Option<usize>,
    offset_in_struct: Option<u64>,
    variable_parameter: bool,
    count: Option<u64>,
}

impl<'d> DwarfTypes<'d> {
    /// The unit holding `.debug_info` offset `offset`, and the offset within it.
    fn locate(&self, offset: usize) -> Option<(&gimli::Unit<Slice<'d>>, UnitOffset)> {
        let start_of = |u: &gimli::Unit<Slice<'d>>| u.header.offset().as_debug_info_offset();
        let index = self
            .units
            .partition_point(|u| start_of(u).is_some_and(|o| o.0 <= offset))
            .checked_sub(1)?;
        let unit = &self.units[index];
        let within = offset - start_of(unit)?.0;
        (within < unit.header.length_including_self()).then_some((unit, UnitOffset(within)))
    }

    fn read_die(&self, offset: usize) -> Option<(Die, Vec<usize>)> {
        let (unit, within) = self.locate(offset)?;
        let start = unit.header.offset().as_debug_info_offset()?.0;
        let mut tree = unit.entries_tree(Some(within)).ok()?;
        let root = tree.root().ok()?;
        let die = die_of(&self.dwarf, unit, root.entry(), start)?;
        let mut children = Vec::new();
        let mut iter = root.children();
        while let Ok(Some(child)) = iter.next() {
            children.push(start + child.entry().offset().0);
        }
        Some((die, children))
    }

    /// The type at `.debug_info` offset `offset`, added to `types`.
    pub fn type_at(&mut self, types: &mut Types, offset: usize, depth: u32) -> Option<TypeId> {
        if let Some(&id) = self.memo.get(&offset) {
            return Some(id);
        }
        let (die, children) = self.read_die(offset)?;
        let name = die
            .name
            .clone()
            .unwrap_or_else(|| format!("<type@{offset:#x}>"));
        let kind = die.go_kind.and_then(Kind::from_go_kind);
        if die.tag == gimli::DW_TAG_typedef {
            let target = die.ty?;
            if depth >= MAX_DEPTH {
                return None;
            }
            let target = self.type_at(types, target, depth + 1)?;
            let mut ty = types.get(target).clone();
            if let Some(kind) = kind {
                ty.kind = kind;
            }
            if ty.name == name {
                return Some(target);
            }
            ty.name = name;
            let id = types.add(ty);
            self.memo.insert(offset, id);
            return Some(id);
        }
        let kind = kind.or(match die.tag {
            gimli::DW_TAG_pointer_type => Some(Kind::Pointer),
            gimli::DW_TAG_structure_type => Some(Kind::Struct),
            _ => None,
        })?;
        let id = types.add(Type {
            name,
            kind,
            size: die.size,
            elem: None,
            len: 0,
            fields: Vec::new(),
        });
        self.memo.insert(offset, id);
        if depth >= MAX_DEPTH {
            return Some(id);
        }
        match kind {
            Kind::Pointer | Kind::Array => {
                let elem = die.ty.and_then(|t| self.type_at(types, t, depth + 1));
                let mut len = 0;
                if kind == Kind::Array {
                    for child in children {
                        if let Some((sub, _)) = self.read_die(child)
                            && sub.tag == gimli::DW_TAG_subrange_type
                        {
                            len = sub.count.unwrap_or(0);
                        }
                    }
                }
                let t = types.get_mut(id);
                t.elem = elem;
                t.len = len;
            }
            Kind::Struct if types.get(id).fields.is_empty() => {
                let mut fields = Vec::new();
                for child in children {
                    let Some((member, _)) = self.read_die(child) else {
                        continue;
                    };
                    if member.tag != gimli::DW_TAG_member {
                        continue;
                    }
                    let (Some(name), Some(ty)) = (member.name, member.ty) else {
                        continue;
                    };
                    let Some(ty) = self.type_at(types, ty, depth + 1) else {
                        continue;
                    };
                    fields.push(Field {
                        name,
                        offset: member.offset_in_struct.unwrap_or(0),
                        ty,
                    });
                }
                types.get_mut(id).fields = fields;
            }
            _ => {}
        }
        Some(id)
    }

    /// The parameters of function `name` (receiver first), then its results (Go marks them
    /// `DW_AT_variable_parameter`; unnamed ones, `~r0`..., are called `ret0`...), with their
    /// types added to `types`. `None` if no DWARF subprogram has that name.
    pub fn params(&mut self, types: &mut Types, name: &str) -> Option<Vec<Param>> {
        let offset = self.find_subprogram(name)?;
        let (_, children) = self.read_die(offset)?;
        let mut params = Vec::new();
        let mut results = Vec::new();
        for child in children {
            let Some((die, _)) = self.read_die(child) else {
                continue;
            };
            if die.tag != gimli::DW_TAG_formal_parameter {
                continue;
            }
            let ty = self.type_at(types, die.ty?, 0)?;
            let name = die.name.unwrap_or_default();
            if die.variable_parameter {
                let name = if name.is_empty() || name.starts_with('~') {
                    format!("ret{}", results.len())
                } else {
                    name
                };
                results.push(Param {
                    name,
                    ty,
                    result: true,
                });
            } else {
                params.push(Param {
                    name,
                    ty,
                    result: false,
                });
            }
        }
        params.extend(results);
        Some(params)
    }

    /// The struct (or other named type) called `name`, added to `types`.
    pub fn named_type(&mut self, types: &mut Types, name: &str) -> Option<TypeId> {
        let offset = self.find(&[gimli::DW_TAG_structure_type, gimli::DW_TAG_typedef], name)?;
        self.type_at(types, offset, 0)
    }

    fn find_subprogram(&self, name: &str) -> Option<usize> {
        self.find(&[gimli::DW_TAG_subprogram], name)
    }

    /// The `.debug_info` offset of the first DIE with one of `tags` named `name`.
    fn find(&self, tags: &[gimli::DwTag], name: &str) -> Option<usize> {
        for unit in &self.units {
            let Some(start) = unit.header.offset().as_debug_info_offset() else {
                continue;
            };
            let mut cursor = unit.entries();
            while let Ok(Some((_, entry))) = cursor.next_dfs() {
                if !tags.contains(&entry.tag()) {
                    continue;
                }
                if let Some(die) = die_of(&self.dwarf, unit, entry, start.0)
                    && die.name.as_deref() == Some(name)
                {
                    return Some(start.0 + entry.offset().0);
                }
            }
        }
        None
    }
}

fn die_of(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &gimli::Unit<Slice<'_>>,
    entry: &gimli::DebuggingInformationEntry<Slice<'_>>,
    start: usize,
) -> Option<Die> {
    let mut die = Die {
        tag: entry.tag(),
        name: None,
        go_kind: None,
        size: 0,
        ty: None,
        offset_in_struct: None,
        variable_parameter: false,
        count: None,
    };
    let mut attrs = entry.attrs();
    while let Ok(Some(attr)) = attrs.next() {
        match attr.name() {
            gimli::DW_AT_name => {
                die.name = dwarf
                    .attr_string(unit, attr.value())
                    .ok()
                    .map(|s| String::from_utf8_lossy(s.slice()).into_owned());
            }
            gimli::DW_AT_byte_size => die.size = attr.udata_value().unwrap_or(0),
            gimli::DW_AT_type => {
                die.ty = match attr.value() {
                    AttributeValue::UnitRef(o) => start.checked_add(o.0),
                    AttributeValue::DebugInfoRef(DebugInfoOffset(o)) => Some(o),
                    _ => None,
                };
            }
            gimli::DW_AT_data_member_location => die.offset_in_struct = attr.udata_value(),
            gimli::DW_AT_variable_parameter => {
                die.variable_parameter = matches!(attr.value(), AttributeValue::Flag(true));
            }
            gimli::DW_AT_count | gimli::DW_AT_upper_bound => die.count = attr.udata_value(),
            DW_AT_GO_KIND => die.go_kind = attr.udata_value(),
            _ => {}
        }
    }
    Some(die)
}
