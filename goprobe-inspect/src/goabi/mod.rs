//! Go's register ABI (ABIInternal: Go >= 1.17 on amd64, every version on arm64) and the types
//! behind it: which registers hold each argument at a function's entry, and how to reach a
//! value from there (`r.URL.Path`: the pointer in `r`'s register, `URL` at its offset, followed,
//! then `Path`). Types come from the binary's DWARF ([`dwarf`]), from a signature the user
//! declares, or from the standard-library layouts shipped here ([`stdlib`]) when the binary
//! has no DWARF.
pub mod dwarf;
pub mod stdlib;

use std::collections::HashMap;

use goprobe_common::{ArgRead, args};

/// Go's kinds (reflect.Kind numbering, as DWARF's `DW_AT_go_kind` carries it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Int,
    Uint,
    Float,
    Complex,
    Array,
    Chan,
    Func,
    Interface,
    Map,
    Pointer,
    Slice,
    String,
    Struct,
    UnsafePointer,
}

impl Kind {
    /// From `DW_AT_go_kind`.
    pub fn from_go_kind(k: u64) -> Option<Kind> {
        Some(match k {
            1 => Kind::Bool,
            2..=6 => Kind::Int,
            7..=12 => Kind::Uint,
            13 | 14 => Kind::Float,
            15 | 16 => Kind::Complex,
            17 => Kind::Array,
            18 => Kind::Chan,
            19 => Kind::Func,
            20 => Kind::Interface,
            21 => Kind::Map,
            22 => Kind::Pointer,
            23 => Kind::Slice,
            24 => Kind::String,
            25 => Kind::Struct,
            26 => Kind::UnsafePointer,
            _ => return None,
        })
    }
}

pub type TypeId = usize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u64,
    pub ty: TypeId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Type {
    pub name: String,
    pub kind: Kind,
    pub size: u64,
    /// What a pointer points to, an array's element.
    pub elem: Option<TypeId>,
    /// An array's length.
    pub len: u64,
    pub fields: Vec<Field>,
}

/// Types by id, and by Go name (`string`, `*net/http.Request`, `net/url.URL`).
#[derive(Debug, Default, Clone)]
pub struct Types {
    types: Vec<Type>,
    by_name: HashMap<String, TypeId>,
}

impl Types {
    pub fn add(&mut self, ty: Type) -> TypeId {
        if let Some(&id) = self.by_name.get(&ty.name) {
            return id;
        }
        let id = self.types.len();
        self.by_name.insert(ty.name.clone(), id);
        self.types.push(ty);
        id
    }

    pub fn get(&self, id: TypeId) -> &Type {
        &self.types[id]
    }

    pub fn get_mut(&mut self, id: TypeId) -> &mut Type {
        &mut self.types[id]
    }

    pub fn by_name(&self, name: &str) -> Option<TypeId> {
        self.by_name.get(name).copied()
    }

    /// Go's predeclared types and the interface types programs most often pass, which is all
    /// a declared signature can name besides pointers.
    pub fn with_builtins() -> Types {
        let mut t = Types::default();
        let mut scalar = |name: &str, kind: Kind, size: u64| {
            t.add(Type {
                name: name.into(),
                kind,
                size,
                elem: None,
                len: 0,
                fields: Vec::new(),
            });
        };
        scalar("bool", Kind::Bool, 1);
        for (name, size) in [
            ("int", 8),
            ("int8", 1),
            ("int16", 2),
            ("int32", 4),
            ("int64", 8),
        ] {
            scalar(name, Kind::Int, size);
        }
        scalar("rune", Kind::Int, 4);
        for (name, size) in [
            ("uint", 8),
            ("uint8", 1),
            ("uint16", 2),
            ("uint32", 4),
            ("uint64", 8),
            ("uintptr", 8),
        ] {
            scalar(name, Kind::Uint, size);
        }
        scalar("byte", Kind::Uint, 1);
        scalar("float32", Kind::Float, 4);
        scalar("float64", Kind::Float, 8);
        scalar("string", Kind::String, 16);
        scalar("unsafe.Pointer", Kind::UnsafePointer, 8);
        for name in [
            "error",
            "any",
            "interface{}",
            "context.Context",
            "net/http.ResponseWriter",
            "net/http.Handler",
            "io.Reader",
            "io.Writer",
            "io.ReadCloser",
            "net.Conn",
            "database/sql/driver.Value",
        ] {
            scalar(name, Kind::Interface, 16);
        }
        t
    }

    /// The type a declared signature names: a builtin, a known type, `*T` (a pointer to any
    /// named type; its fields are known only if `T` is), `[]T`, `map[K]V`, `chan T` or
    /// `func(...)`. `None` for a name that tells nothing of its size.
    pub fn declared(&mut self, text: &str) -> Option<TypeId> {
        let text = text.trim();
        if let Some(id) = self.by_name(text) {
            return Some(id);
        }
        let (kind, size, elem) = if let Some(pointee) = text.strip_prefix('*') {
            let elem = self.declared(pointee).or_else(|| {
                // A pointer to a type goprobe knows nothing of: still one register.
                valid_type_name(pointee).then(|| {
                    self.add(Type {
                        name: pointee.into(),
                        kind: Kind::Struct,
                        size: 0,
                        elem: None,
                        len: 0,
                        fields: Vec::new(),
                    })
                })
            })?;
            (Kind::Pointer, 8, Some(elem))
        } else if text.starts_with("[]") {
            (Kind::Slice, 24, None)
        } else if text.starts_with("map[") {
            (Kind::Map, 8, None)
        } else if text.starts_with("chan ") || text.starts_with("<-chan ") {
            (Kind::Chan, 8, None)
        } else if text.starts_with("func(") {
            (Kind::Func, 8, None)
        } else {
            return None;
        };
        Some(self.add(Type {
            name: text.into(),
            kind,
            size,
            elem,
            len: 0,
            fields: Vec::new(),
        }))
    }
}

fn valid_type_name(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
}

/// Where one parameter is at the function's entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// In integer registers `first..first + count` (ABI order).
    Registers { first: u32, count: u32 },
    /// In floating-point registers: goprobe does not read those.
    Float,
    /// On the stack (too many arguments, or a type the ABI does not split): not read either.
    Stack,
}

/// Integer argument registers of the ABI: rax, rbx, rcx, rdi, rsi, r8..r11 on amd64; x0..x15
/// on arm64.
pub fn int_registers(arm64: bool) -> u32 {
    if arm64 { 16 } else { 9 }
}

/// Register needs of a value of type `ty`: (integer, float), or `None` if the ABI passes it on
/// the stack whatever the registers left (arrays longer than 1).
fn needs(types: &Types, ty: TypeId, depth: u32) -> Option<(u32, u32)> {
    let t = types.get(ty);
    if depth > 16 {
        return None;
    }
    Some(match t.kind {
        Kind::Bool
        | Kind::Int
        | Kind::Uint
        | Kind::Pointer
        | Kind::Map
        | Kind::Chan
        | Kind::Func
        | Kind::UnsafePointer => (1, 0),
        Kind::Float => (0, 1),
        Kind::Complex => (0, 2),
        Kind::String | Kind::Interface => (2, 0),
        Kind::Slice => (3, 0),
        Kind::Array => match t.len {
            0 => (0, 0),
            1 => needs(types, t.elem?, depth + 1)?,
            _ => return None,
        },
        Kind::Struct => {
            let mut total = (0, 0);
            for f in &t.fields {
                let (i, fl) = needs(types, f.ty, depth + 1)?;
                total = (total.0 + i, total.1 + fl);
            }
            total
        }
    })
}

/// Where each parameter (receiver first) is at the entry, by Go's register assignment: each
/// argument takes the next free integer and float registers it needs, whole, or goes on the
/// stack (and takes none) if they do not suffice.
pub fn assign(types: &Types, params: &[TypeId], arm64: bool) -> Vec<Place> {
    let (max_int, max_float) = (int_registers(arm64), if arm64 { 16 } else { 15 });
    let (mut int, mut float) = (0, 0);
    params
        .iter()
        .map(|&ty| match needs(types, ty, 0) {
            Some((i, f)) if int + i <= max_int && float + f <= max_float => {
                let place = if i == 0 && f > 0 {
                    Place::Float
                } else {
                    Place::Registers {
                        first: int,
                        count: i,
                    }
                };
                int += i;
                float += f;
                place
            }
            _ => Place::Stack,
        })
        .collect()
}

/// A parameter or result of a function, as DWARF, a declared signature or a pack gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub ty: TypeId,
    /// A result: in the result registers at the RET.
    pub result: bool,
}

/// The methods of the interfaces a path can assert the dynamic type of (`rw.(*T)`), sorted by
/// name as Go lays them out in an itab; an itab is found by its concrete methods in that order.
pub fn interface_methods(name: &str) -> Option<&'static [&'static str]> {
    Some(match name {
        "net/http.ResponseWriter" => &["Header", "Write", "WriteHeader"],
        "net.Conn" => &[
            "Close",
            "LocalAddr",
            "Read",
            "RemoteAddr",
            "SetDeadline",
            "SetReadDeadline",
            "SetWriteDeadline",
            "Write",
        ],
        "io.ReadCloser" => &["Close", "Read"],
        "io.WriteCloser" => &["Close", "Write"],
        "io.ReadWriteCloser" => &["Close", "Read", "Write"],
        "context.Context" => &["Deadline", "Done", "Err", "Value"],
        "error" => &["Error"],
        _ => return None,
    })
}

/// How a path reaches the static itab of an asserted type: `(concrete, interface methods)` to
/// its address, or why not (see `BinaryIndex::static_itab`).
pub type ItabFinder<'a> = &'a dyn Fn(&str, &[&str]) -> Result<u64, String>;

/// Why a `--by` path cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("no argument or result named {name:?} (arguments: {known})")]
    NoArgument { name: String, known: String },
    #[error("{path}: {ty} has no field {field:?}{known}")]
    NoField {
        path: String,
        ty: String,
        field: String,
        known: String,
    },
    #[error(
        "{path} is of type {ty}; --by reads strings, integers and booleans (follow a field of a struct: {path}.FIELD)"
    )]
    NotAValue { path: String, ty: String },
    #[error("{path}: argument {name:?} is {why}, where goprobe does not read it")]
    NotInRegisters {
        path: String,
        name: String,
        why: &'static str,
    },
    #[error("{path}: fields of a struct passed by value are not read; declare a pointer")]
    StructByValue { path: String },
    #[error("{path}: more than {max} pointers to follow", max = args::MAX_STEPS)]
    TooDeep { path: String },
    #[error("{path}: {why}")]
    Unsupported { path: String, why: String },
    #[error("{path}: the field offsets of {ty} are not known for this binary{hint}")]
    UnknownLayout {
        path: String,
        ty: String,
        hint: String,
    },
}

/// How to read `path` (`r.URL.Path`: an argument, then fields; `ret0`: a result) from `params`,
/// at the entry, at the RET, or through a pointer kept from the entry (`at_return`).
pub fn resolve(
    types: &Types,
    params: &[Param],
    arm64: bool,
    path: &[String],
    at_return: bool,
    layout_hint: &str,
    itab: ItabFinder<'_>,
) -> Result<ArgRead, PathError> {
    let joined = path.join(".");
    let unsupported = |why: String| PathError::Unsupported {
        path: joined.clone(),
        why,
    };
    let root = path.first().map(String::as_str).unwrap_or("");
    let arguments: Vec<&Param> = params.iter().filter(|p| !p.result).collect();
    let results: Vec<&Param> = params.iter().filter(|p| p.result).collect();
    let by_position = |prefix: &str, list: &[&Param]| {
        root.strip_prefix(prefix)
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n < list.len())
    };
    let (list, index) = if let Some(i) = arguments.iter().position(|p| p.name == root) {
        (&arguments, i)
    } else if let Some(i) = results.iter().position(|p| p.name == root) {
        (&results, i)
    } else if let Some(i) = by_position("arg", &arguments) {
        (&arguments, i)
    } else if let Some(i) = by_position("ret", &results) {
        (&results, i)
    } else {
        let mut known: Vec<&str> = arguments.iter().map(|p| p.name.as_str()).collect();
        if !results.is_empty() {
            known.push("results:");
            known.extend(results.iter().map(|p| p.name.as_str()));
        }
        return Err(PathError::NoArgument {
            name: root.into(),
            known: known.join(", ").replace(", results:,", "; results:"),
        });
    };
    let param = list[index];
    let tys: Vec<TypeId> = list.iter().map(|p| p.ty).collect();
    let places = assign(types, &tys, arm64);
    let (mut first, count) = match places.get(index) {
        Some(&Place::Registers { first, count }) => (first, count),
        Some(Place::Float) => {
            return Err(PathError::NotInRegisters {
                path: joined,
                name: param.name.clone(),
                why: "in a floating-point register",
            });
        }
        _ => {
            return Err(PathError::NotInRegisters {
                path: joined,
                name: param.name.clone(),
                why: "passed on the stack",
            });
        }
    };
    let when = match (param.result, at_return) {
        (true, _) => args::AT_RETURN,
        (false, false) => args::AT_ENTRY,
        (false, true) => args::AT_RETURN_THROUGH,
    };
    let mut guard: Option<(u32, u64)> = None;
    let mut ty = param.ty;
    // None: the value is still in registers; Some((loads, offset)): in memory at the address
    // reached by `loads`, plus `offset`.
    let mut memory: Option<(Vec<u32>, u64)> = None;
    for field in &path[1..] {
        let t = types.get(ty);
        if let Some(asserted) = field.strip_prefix("(*").and_then(|f| f.strip_suffix(')')) {
            // `rw.(*T)`: the interface's data word is a *T when its itab is T's.
            if t.kind != Kind::Interface {
                return Err(unsupported(format!(
                    "{} is not an interface, which (*{asserted}) asserts",
                    t.name
                )));
            }
            if memory.is_some() || guard.is_some() {
                return Err(unsupported(
                    "only an interface argument or result itself can be asserted, not one in a struct".into(),
                ));
            }
            let methods = interface_methods(&t.name).ok_or_else(|| {
                unsupported(format!(
                    "goprobe cannot assert the dynamic type of a {} (it can for error, net/http.ResponseWriter, net.Conn, io.ReadCloser, context.Context and a few more)",
                    t.name
                ))
            })?;
            let address = itab(asserted, methods)
                .map_err(|why| unsupported(format!("cannot check for a *{asserted}: {why}")))?;
            // The caller declared `*T` (with T's fields, where it knows them).
            let Some(pointer) = types.by_name(&format!("*{asserted}")) else {
                return Err(PathError::UnknownLayout {
                    path: joined,
                    ty: asserted.into(),
                    hint: layout_hint.into(),
                });
            };
            guard = Some((first, address));
            first += 1;
            ty = pointer;
            continue;
        }
        let owner = match (t.kind, &mut memory) {
            (Kind::Pointer, None) => {
                memory = Some((Vec::new(), 0));
                t.elem.map(|e| types.get(e))
            }
            (Kind::Pointer, Some((loads, offset))) => {
                loads.push(u32::try_from(*offset).unwrap_or(u32::MAX));
                *offset = 0;
                t.elem.map(|e| types.get(e))
            }
            (Kind::Struct, Some(_)) => Some(t),
            (Kind::Struct, None) => return Err(PathError::StructByValue { path: joined }),
            _ => {
                return Err(PathError::NoField {
                    path: joined,
                    ty: t.name.clone(),
                    field: field.clone(),
                    known: String::new(),
                });
            }
        };
        let Some(owner) = owner else {
            return Err(PathError::NotAValue {
                path: joined,
                ty: t.name.clone(),
            });
        };
        if owner.kind == Kind::Struct && owner.fields.is_empty() {
            return Err(PathError::UnknownLayout {
                path: joined,
                ty: owner.name.clone(),
                hint: layout_hint.into(),
            });
        }
        let Some(f) = owner.fields.iter().find(|f| &f.name == field) else {
            let mut names: Vec<&str> = owner.fields.iter().map(|f| f.name.as_str()).collect();
            names.truncate(12);
            return Err(PathError::NoField {
                path: joined,
                ty: owner.name.clone(),
                field: field.clone(),
                known: format!(" (fields: {})", names.join(", ")),
            });
        };
        if let Some((_, offset)) = memory.as_mut() {
            *offset += f.offset;
        }
        ty = f.ty;
    }
    let t = types.get(ty);
    let (kind, size) = match t.kind {
        Kind::Bool => (args::KIND_BOOL, 1),
        Kind::Int => (args::KIND_INT, t.size as u32),
        Kind::Uint => (args::KIND_UINT, t.size as u32),
        Kind::String => (args::KIND_STRING, 16),
        Kind::Interface => (args::KIND_IFACE, 8),
        _ => {
            return Err(PathError::NotAValue {
                path: joined,
                ty: t.name.clone(),
            });
        }
    };
    let mut read = ArgRead {
        kind,
        size,
        register: first,
        register2: first + 1,
        when,
        ..ArgRead::default()
    };
    if let Some((register, address)) = guard {
        read.guard_register = register;
        read.guard = address;
    }
    if kind != args::KIND_STRING && count == 0 {
        return Err(PathError::NotAValue {
            path: joined,
            ty: t.name.clone(),
        });
    }
    match memory {
        Some((loads, offset)) => {
            if loads.len() + 1 > args::MAX_STEPS {
                return Err(PathError::TooDeep { path: joined });
            }
            for (i, &load) in loads.iter().enumerate() {
                read.offsets[i] = load;
            }
            read.offsets[loads.len()] = u32::try_from(offset).unwrap_or(u32::MAX);
            read.steps = loads.len() as u32 + 1;
        }
        None if when == args::AT_RETURN_THROUGH => {
            return Err(unsupported(format!(
                "@return reads what a pointer argument leads to when the call returns; {} is a value, read at the entry",
                param.name
            )));
        }
        None => {}
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(types: &mut Types, list: &[(&str, &str)]) -> Vec<Param> {
        list.iter()
            .map(|(name, ty)| Param {
                name: name.trim_start_matches('>').into(),
                ty: types.declared(ty).unwrap(),
                result: name.starts_with('>'),
            })
            .collect()
    }

    #[test]
    fn registers_follow_the_abi() {
        let mut t = Types::with_builtins();
        let p = params(
            &mut t,
            &[
                ("w", "net/http.ResponseWriter"),
                ("r", "*net/http.Request"),
                ("f", "float64"),
                ("s", "string"),
                ("b", "[]byte"),
                ("n", "int"),
            ],
        );
        let tys: Vec<TypeId> = p.iter().map(|p| p.ty).collect();
        assert_eq!(
            assign(&t, &tys, false),
            vec![
                Place::Registers { first: 0, count: 2 },
                Place::Registers { first: 2, count: 1 },
                Place::Float,
                Place::Registers { first: 3, count: 2 },
                Place::Registers { first: 5, count: 3 },
                Place::Registers { first: 8, count: 1 },
            ]
        );
        // A string needs two registers; one is left: on the stack, and what follows still fits.
        let more = params(&mut t, &[("s", "string"), ("n", "int")]);
        let mut all = tys.clone();
        all.extend(more.iter().map(|p| p.ty));
        let places = assign(&t, &all, false);
        assert_eq!(places[6], Place::Stack);
        assert_eq!(places[7], Place::Stack);
    }

    fn no_itab(_: &str, _: &[&str]) -> Result<u64, String> {
        Err("none".into())
    }

    #[test]
    fn paths_become_loads_and_offsets() {
        let mut t = Types::with_builtins();
        stdlib::add_layouts(&mut t, 27);
        let p = params(
            &mut t,
            &[("w", "net/http.ResponseWriter"), ("r", "*net/http.Request")],
        );
        let path = |s: &str| s.split('.').map(String::from).collect::<Vec<_>>();
        let resolve = |p: &[Param], s: &str| resolve(&t, p, false, &path(s), false, "", &no_itab);
        let read = resolve(&p, "r.URL.Path").unwrap();
        assert_eq!(
            (read.kind, read.register, read.steps, read.when),
            (args::KIND_STRING, 2, 2, args::AT_ENTRY)
        );
        assert_eq!(&read.offsets[..2], &[16, 56]);
        let read = resolve(&p, "r.Method").unwrap();
        assert_eq!((read.steps, read.offsets[0]), (1, 0));
        assert!(matches!(
            resolve(&p, "r.Nope"),
            Err(PathError::NoField { .. })
        ));
        assert!(matches!(
            resolve(&p, "r.URL"),
            Err(PathError::NotAValue { .. })
        ));
        assert!(matches!(
            resolve(&p, "x"),
            Err(PathError::NoArgument { .. })
        ));
        // An interface's value is its first word: nil or not.
        let read = resolve(&p, "w").unwrap();
        assert_eq!((read.kind, read.register), (args::KIND_IFACE, 0));
        let read = resolve(&p, "arg1.Host").unwrap();
        assert_eq!((read.steps, read.register), (1, 2));
    }

    #[test]
    fn results_are_read_at_the_return() {
        let mut t = Types::with_builtins();
        stdlib::add_layouts(&mut t, 27);
        let p = params(
            &mut t,
            &[("s", "string"), (">ret0", "int"), (">err", "error")],
        );
        let path = |s: &str| s.split('.').map(String::from).collect::<Vec<_>>();
        let read = resolve(&t, &p, false, &path("ret0"), false, "", &no_itab).unwrap();
        assert_eq!((read.register, read.when), (0, args::AT_RETURN));
        let read = resolve(&t, &p, false, &path("err"), false, "", &no_itab).unwrap();
        assert_eq!((read.kind, read.register), (args::KIND_IFACE, 1));
        assert_eq!(
            resolve(&t, &p, false, &path("ret1"), false, "", &no_itab).unwrap(),
            read
        );
        assert!(resolve(&t, &p, false, &path("s"), true, "", &no_itab).is_err());
    }

    #[test]
    fn an_assertion_guards_on_the_itab() {
        let mut t = Types::with_builtins();
        t.add(Type {
            name: "net/http.response".into(),
            kind: Kind::Struct,
            size: 0,
            elem: None,
            len: 0,
            fields: vec![Field {
                name: "status".into(),
                offset: 144,
                ty: t.by_name("int").unwrap(),
            }],
        });
        t.declared("*net/http.response").unwrap();
        let p = params(
            &mut t,
            &[
                ("sh", "*net/http.Server"),
                ("rw", "net/http.ResponseWriter"),
            ],
        );
        let path = vec!["rw".into(), "(*net/http.response)".into(), "status".into()];
        let itab = |ty: &str, methods: &[&str]| {
            assert_eq!((ty, methods.len()), ("net/http.response", 3));
            Ok(0x1234)
        };
        let read = resolve(&t, &p, false, &path, true, "", &itab).unwrap();
        assert_eq!(
            (read.register, read.guard_register, read.guard, read.when),
            (2, 1, 0x1234, args::AT_RETURN_THROUGH)
        );
        assert_eq!((read.steps, read.offsets[0]), (1, 144));
        assert!(resolve(&t, &p, false, &path, true, "", &no_itab).is_err());
    }
}
