//! Field offsets of the standard-library structs that packs and `--by` paths read, for binaries
//! without DWARF (as Debian ships Go programs). Each offset was taken from the DWARF of real
//! builds by each Go toolchain of the test matrix, and `goprobe-inspect/tests/stdlib_offsets.rs`
//! checks every one of them against the DWARF of a fresh build by every Go installed (CI: the
//! default matrix; `cargo xtask test --full`: all of it). Versions that no build checked get no
//! layout: goprobe says so rather than guessing.
use super::{Field, Kind, Type, Types};

/// Go minor versions (1.N) whose layouts below were checked against DWARF.
pub const VERIFIED_MINORS: &[u32] = &[19, 21, 22, 23, 24, 25, 26, 27];

/// A field: its name, its type (as [`Types::declared`] reads it), and its offset by Go minor
/// version range (inclusive).
pub struct KnownField {
    pub name: &'static str,
    pub ty: &'static str,
    pub offsets: &'static [(u32, u32, u64)],
}

pub struct KnownStruct {
    pub name: &'static str,
    pub fields: &'static [KnownField],
}

const fn field(
    name: &'static str,
    ty: &'static str,
    offsets: &'static [(u32, u32, u64)],
) -> KnownField {
    KnownField { name, ty, offsets }
}

/// Every version of the matrix.
const ALL: u32 = 19;
const LAST: u32 = 27;

pub const KNOWN: &[KnownStruct] = &[
    KnownStruct {
        name: "net/http.Request",
        fields: &[
            field("Method", "string", &[(ALL, LAST, 0)]),
            field("URL", "*net/url.URL", &[(ALL, LAST, 16)]),
            field("Proto", "string", &[(ALL, LAST, 24)]),
            field("ContentLength", "int64", &[(ALL, LAST, 88)]),
            field("Host", "string", &[(ALL, LAST, 128)]),
            field("RemoteAddr", "string", &[(ALL, LAST, 176)]),
            field("RequestURI", "string", &[(ALL, LAST, 192)]),
        ],
    },
    KnownStruct {
        // What a client's request returns.
        name: "net/http.Response",
        fields: &[
            field("Status", "string", &[(ALL, LAST, 0)]),
            field("StatusCode", "int", &[(ALL, LAST, 16)]),
        ],
    },
    KnownStruct {
        // The HTTP/1 server's ResponseWriter: the status its handler wrote (0: none yet,
        // which the server then sends as 200).
        name: "net/http.response",
        fields: &[field("status", "int", &[(ALL, 26, 120), (27, LAST, 128)])],
    },
    KnownStruct {
        name: "net/url.URL",
        fields: &[
            field("Scheme", "string", &[(ALL, LAST, 0)]),
            field("Host", "string", &[(ALL, LAST, 40)]),
            field("Path", "string", &[(ALL, LAST, 56)]),
            field("RawQuery", "string", &[(ALL, 25, 96), (26, LAST, 88)]),
        ],
    },
];

/// The Go minor version of a `go1.N[.P]` version string.
pub fn minor(version: &str) -> Option<u32> {
    let rest = version.strip_prefix("go1.")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Add the known layouts for Go 1.`minor` to `types`; false (nothing added) for a version no
/// build checked.
pub fn add_layouts(types: &mut Types, minor: u32) -> bool {
    if !VERIFIED_MINORS.contains(&minor) {
        return false;
    }
    for known in KNOWN {
        let id = types.add(Type {
            name: known.name.into(),
            kind: Kind::Struct,
            size: 0,
            elem: None,
            len: 0,
            fields: Vec::new(),
        });
        let mut fields = Vec::new();
        for f in known.fields {
            let Some(&(_, _, offset)) = f
                .offsets
                .iter()
                .find(|(from, to, _)| (*from..=*to).contains(&minor))
            else {
                continue;
            };
            let Some(ty) = types.declared(f.ty) else {
                continue;
            };
            fields.push(Field {
                name: f.name.into(),
                offset,
                ty,
            });
        }
        let t = types.get_mut(id);
        if t.fields.is_empty() {
            t.fields = fields;
        }
    }
    // `*net/url.URL` was made before `net/url.URL` had fields: it points to the same id.
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(minor("go1.27.3"), Some(27));
        assert_eq!(minor("go1.19"), Some(19));
        assert_eq!(minor("devel"), None);
        let mut t = Types::with_builtins();
        assert!(!add_layouts(&mut t, 20));
        assert!(add_layouts(&mut t, 27));
        let url = t.get(t.by_name("net/url.URL").unwrap());
        assert_eq!(
            url.fields
                .iter()
                .find(|f| f.name == "RawQuery")
                .unwrap()
                .offset,
            88
        );
    }
}
