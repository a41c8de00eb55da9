//! A tiny synthetic Go-like ELF for tests: real x86-64 code, a Go 1.20+ pclntab, build info,
//! a Go build-id note, module data, and optionally a symtab and section headers. Small enough
//! (~16 KiB) to be mutated tens of thousands of times in the robustness test.

use object::elf;

use super::elf::{EI_CLASS, EI_DATA, EI_VERSION};

use super::pclntab::{
    PclnVersion, Pclntab,
    synth::{SynthFunc, build},
};

pub const BASE: u64 = 0x40_0000;
pub const TEXT: u64 = 0x40_1000;
const PCLN: u64 = 0x40_2000;
const DATA: u64 = 0x40_3000;
const MODULEDATA: u64 = DATA + 0x100;
const NOTE_OFF: usize = 0x200;
const END_OFF: u64 = 0x80;

/// (name, offset from TEXT, code). Gaps up to the next function are int3 padding, as Go emits.
pub const FUNCS: &[(&str, u64, &[u8])] = &[
    ("main.leaf", 0x0, &[0x48, 0x0f, 0xaf, 0xc3, 0xc3]),
    (
        "main.foo",
        0x20,
        &[
            0x49, 0x3b, 0x66, 0x10, // cmp rsp,[r14+0x10]
            0x76, 0x0c, // jbe morestack
            0x48, 0x83, 0xec, 0x18, // sub rsp,0x18
            0x48, 0x01, 0xd8, // add rax,rbx
            0x48, 0x83, 0xc4, 0x18, // add rsp,0x18
            0xc3, // ret
            0xe8, 0x00, 0x00, 0x00, 0x00, // call morestack
            0xeb, 0xe7, // jmp start
        ],
    ),
    ("main.bar", 0x60, &[0x90, 0xc3]),
];

/// Section header fields: name offset, type, flags, addr, offset, size, link, align, entsize.
type SectionRow = (u32, u32, u64, u64, u64, u64, u32, u64, u64);

#[derive(Debug, Clone)]
pub struct ElfSpec {
    pub go: bool,
    pub symtab: bool,
    pub section_headers: bool,
    pub pie: bool,
    pub moduledata: bool,
    pub header_text: bool,
    pub text_section_addr: Option<u64>,
    pub machine: u16,
    pub corrupt_pclntab: bool,
    pub pcln_version: PclnVersion,
    /// Build info in the pre-1.18 layout: pointers to Go string headers instead of inline text.
    pub old_buildinfo: bool,
}

impl Default for ElfSpec {
    fn default() -> Self {
        ElfSpec {
            go: true,
            symtab: true,
            section_headers: true,
            pie: false,
            moduledata: true,
            header_text: false,
            text_section_addr: None,
            machine: elf::EM_X86_64,
            corrupt_pclntab: false,
            pcln_version: PclnVersion::Go120,
            old_buildinfo: false,
        }
    }
}

fn put(out: &mut Vec<u8>, at: usize, v: u64, size: usize) {
    if out.len() < at + size {
        out.resize(at + size, 0);
    }
    out[at..at + size].copy_from_slice(&v.to_le_bytes()[..size]);
}

fn place(out: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    if out.len() < at + bytes.len() {
        out.resize(at + bytes.len(), 0);
    }
    out[at..at + bytes.len()].copy_from_slice(bytes);
}

impl ElfSpec {
    pub fn pclntab(&self) -> Vec<u8> {
        let funcs: Vec<SynthFunc<'_>> = FUNCS
            .iter()
            .enumerate()
            .map(|(i, &(name, off, _))| {
                let end = FUNCS.get(i + 1).map_or(END_OFF, |f| f.1);
                SynthFunc {
                    name,
                    off,
                    size: end - off,
                }
            })
            .collect();
        build(
            self.pcln_version,
            TEXT,
            if self.header_text { TEXT } else { 0 },
            &funcs,
        )
    }

    pub fn build(&self) -> Vec<u8> {
        let mut out = vec![0u8; 0x4000];
        // Code, padded with int3.
        out[0x1000..0x1000 + END_OFF as usize].fill(0xcc);
        for &(_, off, code) in FUNCS {
            place(&mut out, 0x1000 + off as usize, code);
        }
        // Go build ID note: namesz 4 ("Go\0\0"), type 4.
        let go_id = b"synthetic-go-build-id";
        let mut note = Vec::new();
        note.extend_from_slice(&4u32.to_le_bytes());
        note.extend_from_slice(&(go_id.len() as u32).to_le_bytes());
        note.extend_from_slice(&4u32.to_le_bytes());
        note.extend_from_slice(b"Go\0\0");
        note.extend_from_slice(go_id);
        note.resize(note.len().next_multiple_of(4), 0);
        let pcln = self.pclntab();
        let buildinfo = if self.old_buildinfo {
            // Header, then *string (version) and *string (mod info); the string header at +0x40
            // points at the text at +0x60.
            let mut b = b"\xff Go buildinf:".to_vec();
            b.extend_from_slice(&[8, 0]);
            b.extend_from_slice(&(DATA + 0x40).to_le_bytes());
            b.resize(0x40, 0);
            b.extend_from_slice(&(DATA + 0x60).to_le_bytes());
            b.extend_from_slice(&8u64.to_le_bytes());
            b.resize(0x60, 0);
            b.extend_from_slice(b"go1.15.1");
            b
        } else {
            let mut b = b"\xff Go buildinf:".to_vec();
            b.extend_from_slice(&[8, 2]);
            b.resize(32, 0);
            b.push(8);
            b.extend_from_slice(b"go1.27.3");
            b.push(0);
            b
        };
        if self.go {
            place(&mut out, NOTE_OFF, &note);
            place(&mut out, (PCLN - BASE) as usize, &pcln);
            if self.corrupt_pclntab {
                put(&mut out, (PCLN - BASE) as usize + 8, u64::MAX / 2, 8);
            }
            place(&mut out, (DATA - BASE) as usize, &buildinfo);
            if self.moduledata && self.pcln_version >= PclnVersion::Go116 {
                let t = Pclntab::parse(&pcln).unwrap();
                let md = (MODULEDATA - BASE) as usize;
                put(&mut out, md, PCLN, 8);
                put(&mut out, md + 8, PCLN + t.funcname_offset(), 8);
                put(&mut out, md + 16 * 8, PCLN + t.pcln_offset(), 8);
                put(&mut out, md + 17 * 8, t.len() as u64 + 1, 8);
                put(&mut out, md + 20 * 8, TEXT, 8);
                put(&mut out, md + 21 * 8, TEXT + END_OFF, 8);
                put(&mut out, md + 22 * 8, TEXT, 8);
                put(&mut out, md + 23 * 8, TEXT + END_OFF, 8);
            }
        }

        // Symbols and strings.
        let mut strtab = vec![0u8];
        let mut symtab = vec![0u8; 24];
        let mut add_sym = |name: &str, value: u64, size: u64, shndx: u16| {
            let name_off = strtab.len() as u32;
            strtab.extend_from_slice(name.as_bytes());
            strtab.push(0);
            let mut s = [0u8; 24];
            s[..4].copy_from_slice(&name_off.to_le_bytes());
            s[4] = (elf::STB_GLOBAL << 4) | elf::STT_FUNC;
            s[6..8].copy_from_slice(&shndx.to_le_bytes());
            s[8..16].copy_from_slice(&value.to_le_bytes());
            s[16..24].copy_from_slice(&size.to_le_bytes());
            symtab.extend_from_slice(&s);
        };
        if self.go {
            add_sym("runtime.text", TEXT, 0, 2);
        }
        for &(name, off, code) in FUNCS {
            add_sym(name, TEXT + off, code.len() as u64, 2);
        }

        // Sections: name, type, flags, addr, offset, size, link, align, entsize.
        let mut shstrtab = vec![0u8];
        let mut sections: Vec<SectionRow> = vec![(0, 0, 0, 0, 0, 0, 0, 0, 0)];
        let mut name = |n: &str| {
            let off = shstrtab.len() as u32;
            shstrtab.extend_from_slice(n.as_bytes());
            shstrtab.push(0);
            off
        };
        let (a, ax, wa) = (
            u64::from(elf::SHF_ALLOC),
            u64::from(elf::SHF_ALLOC | elf::SHF_EXECINSTR),
            u64::from(elf::SHF_ALLOC | elf::SHF_WRITE),
        );
        let text_addr = self.text_section_addr.unwrap_or(TEXT);
        sections.push((
            name(".note.go.buildid"),
            elf::SHT_NOTE,
            a,
            BASE + NOTE_OFF as u64,
            NOTE_OFF as u64,
            note.len() as u64,
            0,
            4,
            0,
        ));
        sections.push((
            name(".text"),
            elf::SHT_PROGBITS,
            ax,
            text_addr,
            0x1000,
            END_OFF,
            0,
            32,
            0,
        ));
        if self.go {
            sections.push((
                name(".gopclntab"),
                elf::SHT_PROGBITS,
                a,
                PCLN,
                PCLN - BASE,
                pcln.len() as u64,
                0,
                8,
                0,
            ));
            sections.push((
                name(".go.buildinfo"),
                elf::SHT_PROGBITS,
                wa,
                DATA,
                DATA - BASE,
                buildinfo.len() as u64,
                0,
                16,
                0,
            ));
        }
        let sym_off = out.len() as u64;
        out.extend_from_slice(&symtab);
        let str_off = out.len() as u64;
        out.extend_from_slice(&strtab);
        if self.symtab {
            let strtab_index = sections.len() as u32 + 1;
            sections.push((
                name(".symtab"),
                elf::SHT_SYMTAB,
                0,
                0,
                sym_off,
                symtab.len() as u64,
                strtab_index,
                8,
                24,
            ));
            sections.push((
                name(".strtab"),
                elf::SHT_STRTAB,
                0,
                0,
                str_off,
                strtab.len() as u64,
                0,
                1,
                0,
            ));
        }
        let shstr_index = sections.len();
        let shstr_name = name(".shstrtab");
        let shstr_off = out.len() as u64;
        out.extend_from_slice(&shstrtab);
        sections.push((
            shstr_name,
            elf::SHT_STRTAB,
            0,
            0,
            shstr_off,
            shstrtab.len() as u64,
            0,
            1,
            0,
        ));
        out.resize(out.len().next_multiple_of(8), 0);
        let shoff = out.len();
        for &(n, t, f, addr, off, size, link, align, entsize) in &sections {
            let mut sh = [0u8; 64];
            sh[0..4].copy_from_slice(&n.to_le_bytes());
            sh[4..8].copy_from_slice(&t.to_le_bytes());
            sh[8..16].copy_from_slice(&f.to_le_bytes());
            sh[16..24].copy_from_slice(&addr.to_le_bytes());
            sh[24..32].copy_from_slice(&off.to_le_bytes());
            sh[32..40].copy_from_slice(&size.to_le_bytes());
            sh[40..44].copy_from_slice(&link.to_le_bytes());
            sh[48..56].copy_from_slice(&align.to_le_bytes());
            sh[56..64].copy_from_slice(&entsize.to_le_bytes());
            out.extend_from_slice(&sh);
        }

        // ELF header.
        place(&mut out, 0, &elf::ELFMAG);
        out[EI_CLASS] = elf::ELFCLASS64;
        out[EI_DATA] = elf::ELFDATA2LSB;
        out[EI_VERSION] = elf::EV_CURRENT;
        put(
            &mut out,
            16,
            u64::from(if self.pie { elf::ET_DYN } else { elf::ET_EXEC }),
            2,
        );
        put(&mut out, 18, u64::from(self.machine), 2);
        put(&mut out, 20, 1, 4);
        put(&mut out, 24, TEXT, 8); // e_entry
        put(&mut out, 32, 64, 8); // e_phoff
        if self.section_headers {
            put(&mut out, 40, shoff as u64, 8);
            put(&mut out, 58, 64, 2); // e_shentsize
            put(&mut out, 60, sections.len() as u64, 2);
            put(&mut out, 62, shstr_index as u64, 2);
        }
        put(&mut out, 52, 64, 2); // e_ehsize
        put(&mut out, 54, 56, 2); // e_phentsize
        // Program headers: RX text (from file start), R pclntab, RW data, NOTE.
        let phdrs: [(u32, u32, u64, u64); 4] = [
            (elf::PT_LOAD, elf::PF_R | elf::PF_X, 0, 0x1000 + END_OFF),
            (elf::PT_LOAD, elf::PF_R, PCLN - BASE, 0x1000),
            (elf::PT_LOAD, elf::PF_R | elf::PF_W, DATA - BASE, 0x1000),
            (elf::PT_NOTE, elf::PF_R, NOTE_OFF as u64, note.len() as u64),
        ];
        put(&mut out, 56, phdrs.len() as u64, 2);
        for (i, &(ty, flags, off, size)) in phdrs.iter().enumerate() {
            let at = 64 + i * 56;
            put(&mut out, at, u64::from(ty), 4);
            put(&mut out, at + 4, u64::from(flags), 4);
            put(&mut out, at + 8, off, 8);
            put(&mut out, at + 16, BASE + off, 8);
            put(&mut out, at + 24, BASE + off, 8);
            put(&mut out, at + 32, size, 8);
            put(&mut out, at + 40, size, 8);
            put(
                &mut out,
                at + 48,
                if ty == elf::PT_LOAD { 0x1000 } else { 4 },
                8,
            );
        }
        out
    }
}
