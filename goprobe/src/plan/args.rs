//! `funclatency --by` and packs: for each traced function, how the kernel reads the values its
//! calls are labelled by ([`ArgSpec`]), from the function's parameters as the binary's DWARF,
//! a declared signature or a pack gives them, and the layouts of the standard library's structs
//! for binaries without DWARF.
use goprobe_common::{ArgSpec, args};
use goprobe_input::args::{ByPath, DeclaredParam};

use crate::inspect::{
    Arch, BinaryIndex,
    goabi::{self, Param, TypeId, Types, dwarf::Sections, stdlib},
};

/// What to label calls by.
#[derive(Debug, Clone)]
pub struct ArgRequest {
    pub by: Vec<ByPath>,
    /// The parameters the user (or a pack) declared; without them, DWARF must give them.
    pub declared: Option<Vec<DeclaredParam>>,
    /// Value names, in `by`'s order (`path`, `method`).
    pub labels: Vec<String>,
    /// Values are SQL: literals become `?`, so no value leaves the host (the `sql` pack).
    pub normalize_sql: bool,
    /// A pack's values shown otherwise (see `Pack::value_map`).
    pub value_map: goprobe_input::packs::ValueMap,
    /// `--where`: only calls whose value passes are counted.
    pub filter: Option<goprobe_input::args::Where>,
    /// A pack's layouts of its library's structs (see `Pack::layouts`).
    pub layouts: &'static [goprobe_input::packs::Layout],
}

impl ArgRequest {
    pub fn new(by: Vec<ByPath>, declared: Option<Vec<DeclaredParam>>) -> ArgRequest {
        let mut labels: Vec<String> = Vec::new();
        for path in &by {
            let mut label = path.label();
            if labels.contains(&label) {
                label = path.text();
            }
            labels.push(label);
        }
        ArgRequest {
            by,
            declared,
            labels,
            normalize_sql: false,
            value_map: &[],
            filter: None,
            layouts: &[],
        }
    }

    /// `--where`'s path: a label's (`status` of the http-server pack) when it names one,
    /// else its own.
    fn filter_path(&self) -> Option<&ByPath> {
        let filter = self.filter.as_ref()?;
        let label = match filter.path.parts.as_slice() {
            [one] if !filter.path.at_return => self.labels.iter().position(|l| l == one),
            _ => None,
        };
        Some(label.map_or(&filter.path, |i| &self.by[i]))
    }

    /// The paths the kernel reads: the labels', then `--where`'s unless it is one of them.
    pub fn reads(&self) -> Vec<&ByPath> {
        let mut reads: Vec<&ByPath> = self.by.iter().collect();
        if let Some(path) = self.filter_path()
            && !self.by.contains(path)
        {
            reads.push(path);
        }
        reads
    }

    /// Where `--where`'s value is among [`ArgRequest::reads`].
    pub fn filter_index(&self) -> Option<usize> {
        let path = self.filter_path()?;
        self.reads().iter().position(|p| *p == path)
    }
}

/// Requests by the functions they apply to: the first pattern that matches a function wins.
pub type ArgRequests = Vec<(crate::plan::Pattern, ArgRequest)>;

/// The request that applies to function `name`, if any.
pub fn request_for<'r>(requests: &'r ArgRequests, name: &str) -> Option<&'r ArgRequest> {
    requests
        .iter()
        .find(|(pattern, _)| pattern.matches(name))
        .map(|(_, request)| request)
}

/// The Go minor version of the binary, if it is one whose standard-library layouts were
/// checked.
fn layouts(index: &BinaryIndex, types: &mut Types) -> Result<(), String> {
    let version = index
        .go_version
        .as_deref()
        .unwrap_or("an unknown Go version");
    match stdlib::minor(version) {
        Some(minor) if stdlib::add_layouts(types, minor) => Ok(()),
        _ => Err(format!(
            "built by {version}, whose standard-library field offsets goprobe has not checked (checked: {})",
            stdlib::VERIFIED_MINORS
                .iter()
                .map(|m| format!("1.{m}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The kernel's reads for `function` of `index`, or why its arguments cannot be read.
pub fn plan_args(
    index: &BinaryIndex,
    function: &str,
    request: &ArgRequest,
) -> Result<ArgSpec, String> {
    let mut types = Types::with_builtins();
    let layout_note = layouts(index, &mut types).err();
    for (name, fields) in request.layouts {
        let fields = fields
            .iter()
            .filter_map(|&(field, ty, offset)| {
                Some(goabi::Field {
                    name: field.into(),
                    offset,
                    ty: types.declared(ty)?,
                })
            })
            .collect();
        let id = types.add(goabi::Type {
            name: (*name).into(),
            kind: goabi::Kind::Struct,
            size: 0,
            elem: None,
            len: 0,
            fields: Vec::new(),
        });
        types.get_mut(id).fields = fields;
    }
    let sections = Sections::load(index.data());
    // The types paths assert (`rw.(*net/http.response)`): their fields from DWARF if the
    // binary has it, else from the layouts above; and a pointer to each.
    for path in request.reads() {
        for part in &path.parts {
            if let Some(asserted) = goprobe_input::args::ByPath::asserted(part) {
                if let Some(sections) = &sections
                    && types
                        .by_name(asserted)
                        .is_none_or(|id| types.get(id).fields.is_empty())
                {
                    let _ = sections.types().named_type(&mut types, asserted);
                }
                types.declared(&format!("*{asserted}"));
            }
        }
    }
    let params: Vec<Param> = match &request.declared {
        Some(declared) => {
            let mut params = Vec::new();
            for p in declared {
                let ty = types.declared(&p.ty).ok_or_else(|| {
                    format!(
                        "declared parameter {} has type {:?}, which goprobe cannot size: \
                         use a builtin type, an interface named in the docs, or a pointer (*T)",
                        p.name, p.ty
                    )
                })?;
                params.push(Param {
                    name: p.name.clone(),
                    ty,
                    result: p.result,
                });
            }
            // Where DWARF describes the function too, the declaration must agree with it.
            if let Some(sections) = &sections
                && let Some(described) = sections.types().params(&mut types, function)
            {
                check_declared(&types, &params, &described, index.arch == Arch::Aarch64).map_err(
                    |why| {
                        format!(
                            "the declared signature {} does not match the binary's DWARF, which \
                             gives {function}{} ({why}): fix the declaration, or leave it out \
                             to use DWARF's",
                            signature(&types, &params),
                            signature(&types, &described)
                        )
                    },
                )?;
            }
            params
        }
        None => {
            let sections = sections.as_ref().ok_or_else(|| {
                format!(
                    "{} has no DWARF to name its arguments: declare them, e.g. \
                     'go:{function}(NAME TYPE, ...)' (receiver first), or use a pack",
                    index.path.display()
                )
            })?;
            let mut dwarf = sections.types();
            dwarf.params(&mut types, function).ok_or_else(|| {
                format!(
                    "its DWARF does not describe {function}'s arguments: declare them, e.g. \
                     'go:{function}(NAME TYPE, ...)'"
                )
            })?
        }
    };
    let hint = match &layout_note {
        Some(note) => format!(": {note}"),
        None => String::new(),
    };
    let reads = request.reads();
    if reads.len() > args::MAX_VALUES {
        return Err(format!(
            "--by and --where read {} values; at most {} at once",
            reads.len(),
            args::MAX_VALUES
        ));
    }
    let itab = |concrete: &str, methods: &[&str]| index.static_itab(concrete, methods);
    let mut spec = ArgSpec::default();
    for (i, path) in reads.into_iter().enumerate() {
        let read = goabi::resolve(
            &types,
            &params,
            index.arch == Arch::Aarch64,
            &path.parts,
            path.at_return,
            &hint,
            &itab,
        )
        .map_err(|e| format!("--by {}: {e}", path.text()))?;
        spec.phases |= match read.when {
            args::AT_ENTRY => args::PHASE_ENTRY,
            args::AT_RETURN => args::PHASE_RETURN,
            _ => args::PHASE_RETURN | args::PHASE_KEEP,
        };
        spec.reads[i] = read;
    }
    Ok(spec)
}

/// Whether the `declared` arguments and results (a leading part of each list is enough) are
/// where DWARF's `described` ones are, by Go's register assignment: else the kernel would read
/// other registers than the declaration means. A place neither side can work out (a type
/// passed on the stack) ends the comparison there.
fn check_declared(
    types: &Types,
    declared: &[Param],
    described: &[Param],
    arm64: bool,
) -> Result<(), String> {
    for (what, results) in [("arguments", false), ("results", true)] {
        let declared: Vec<TypeId> = declared
            .iter()
            .filter(|p| p.result == results)
            .map(|p| p.ty)
            .collect();
        let described: Vec<TypeId> = described
            .iter()
            .filter(|p| p.result == results)
            .map(|p| p.ty)
            .collect();
        // DWARF without results (a Go that did not describe them) cannot be checked against.
        if results && described.is_empty() {
            continue;
        }
        if declared.len() > described.len() {
            return Err(format!(
                "{} {what} declared, {} in DWARF",
                declared.len(),
                described.len()
            ));
        }
        let places = goabi::assign(types, &declared, arm64)
            .into_iter()
            .zip(goabi::assign(types, &described, arm64));
        for (i, (mine, theirs)) in places.enumerate() {
            if mine == goabi::Place::Stack || theirs == goabi::Place::Stack {
                break;
            }
            if mine != theirs {
                let name = |ty: TypeId| types.get(ty).name.clone();
                return Err(format!(
                    "{} {} is declared {}, and DWARF's is {}",
                    if results { "result" } else { "argument" },
                    i + 1,
                    name(declared[i]),
                    name(described[i])
                ));
            }
        }
    }
    Ok(())
}

/// `(name type, ...) (results)`, as a signature is declared.
fn signature(types: &Types, params: &[Param]) -> String {
    let list = |results: bool| {
        params
            .iter()
            .filter(|p| p.result == results)
            .map(|p| format!("{} {}", p.name, types.get(p.ty).name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let results = list(true);
    if results.is_empty() {
        format!("({})", list(false))
    } else {
        format!("({}) ({results})", list(false))
    }
}

pub use goprobe_input::packs::{PACKS, Pack, pack};

/// The functions of `pack` in the binaries `prefix` names (`go`, or a path).
pub fn pack_pattern(
    pack: &Pack,
    prefix: &str,
) -> Result<crate::plan::Pattern, goprobe_input::pattern::PatternError> {
    crate::plan::Pattern::parse(&format!("{prefix}:{}", pack.functions), true)
}

/// What a pack labels calls by.
pub fn pack_request(pack: &Pack) -> ArgRequest {
    let by = goprobe_input::args::parse_by(pack.by).expect("packs' paths are valid");
    let (_, declared) =
        goprobe_input::args::split_signature(&format!("f({}) {}", pack.signature, pack.results))
            .expect("packs' signatures are valid");
    let mut request = ArgRequest::new(by, declared);
    if !pack.labels.is_empty() {
        request.labels = pack.labels.iter().map(|l| l.to_string()).collect();
    }
    ArgRequest {
        normalize_sql: pack.normalize_sql,
        value_map: pack.value_map,
        layouts: pack.layouts,
        ..request
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_parse() {
        for p in PACKS {
            let r = pack_request(p);
            assert!(!r.by.is_empty(), "{}", p.name);
            assert!(regex::Regex::new(p.functions).is_ok());
        }
        assert_eq!(
            pack_request(pack("http-server").unwrap()).labels,
            ["method", "path", "status"]
        );
        assert_eq!(
            pack_request(pack("grpc").unwrap()).labels,
            ["method", "code"]
        );
        for p in PACKS {
            let r = pack_request(p);
            assert_eq!(r.labels.len(), r.by.len(), "{}", p.name);
        }
        assert!(pack("nope").err().unwrap().contains("http-server"));
    }
}
