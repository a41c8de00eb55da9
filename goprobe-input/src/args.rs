//! What `funclatency --by` and declared signatures say, as typed: `--by 'r.URL.Path,r.Method'`
//! (paths from an argument through struct fields, or `argN`), and a pattern's trailing Go
//! parameter list, `go:main.handle(w net/http.ResponseWriter, r *net/http.Request)`, which
//! gives names and types to the arguments of binaries without DWARF.

/// Values a call can be labelled by at once.
pub const MAX_BY: usize = 2;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("--by: empty path (write ARG or ARG.FIELD..., e.g. 'query' or 'r.URL.Path')")]
    Empty,
    #[error("--by: {0:?} is not a path of Go identifiers (ARG or ARG.FIELD...)")]
    BadPath(String),
    #[error("--by: at most {MAX_BY} values (got {0})")]
    TooMany(usize),
    #[error("signature {0:?}: {1}")]
    Signature(String, &'static str),
    #[error(
        "--where {0:?}: write PATH OP VALUE, with OP one of == != < <= > >= (e.g. 'r.URL.Path == \"/slow\"', 'n >= 500')"
    )]
    BadWhere(String),
}

/// One `--by` path: an argument (`name`, or `argN` by position) and the fields to follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByPath {
    pub parts: Vec<String>,
}

impl ByPath {
    pub fn text(&self) -> String {
        self.parts.join(".")
    }

    /// The label the value is shown under: the last part (`r.URL.Path` is `path`).
    pub fn label(&self) -> String {
        self.parts
            .last()
            .map_or_else(String::new, |p| p.to_lowercase())
    }
}

fn identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
}

/// `--by`'s value: comma-separated paths.
pub fn parse_by(text: &str) -> Result<Vec<ByPath>, ArgsError> {
    let mut out = Vec::new();
    for path in text.split(',') {
        let path = path.trim();
        if path.is_empty() {
            return Err(ArgsError::Empty);
        }
        let parts: Vec<String> = path.split('.').map(|p| p.trim().to_string()).collect();
        if parts.len() > 8 || !parts.iter().all(|p| identifier(p)) {
            return Err(ArgsError::BadPath(path.chars().take(200).collect()));
        }
        out.push(ByPath { parts });
    }
    if out.len() > MAX_BY {
        return Err(ArgsError::TooMany(out.len()));
    }
    Ok(out)
}

/// `--where`'s comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// `--where PATH OP VALUE`: only calls whose value at PATH compares so are counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Where {
    pub path: ByPath,
    pub op: Op,
    pub value: String,
}

impl Where {
    /// Whether `value` (as goprobe shows it: a string, an integer, `true`/`false`) passes.
    /// Numbers compare as numbers when both sides are; anything else as text.
    pub fn matches(&self, value: &str) -> bool {
        let ordering = match (value.parse::<f64>(), self.value.parse::<f64>()) {
            (Ok(a), Ok(b)) => a.partial_cmp(&b),
            _ => Some(value.cmp(self.value.as_str())),
        };
        let Some(o) = ordering else {
            return false;
        };
        use std::cmp::Ordering::*;
        match self.op {
            Op::Eq => o == Equal,
            Op::Ne => o != Equal,
            Op::Lt => o == Less,
            Op::Le => o != Greater,
            Op::Gt => o == Greater,
            Op::Ge => o != Less,
        }
    }
}

/// `--where`'s value: `PATH OP VALUE`, VALUE a number, a word, or a quoted string.
pub fn parse_where(text: &str) -> Result<Where, ArgsError> {
    let bad = || ArgsError::BadWhere(text.chars().take(200).collect());
    const OPS: [(&str, Op); 6] = [
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("<", Op::Lt),
        (">", Op::Gt),
    ];
    let (at, sym, op) = OPS
        .iter()
        .filter_map(|&(sym, op)| text.find(sym).map(|at| (at, sym, op)))
        .min_by_key(|&(at, sym, _)| (at, std::cmp::Reverse(sym.len())))
        .ok_or_else(bad)?;
    let path = text[..at].trim();
    let value = text[at + sym.len()..].trim();
    let parts: Vec<String> = path.split('.').map(|p| p.trim().to_string()).collect();
    if parts.len() > 8 || !parts.iter().all(|p| identifier(p)) || value.is_empty() {
        return Err(bad());
    }
    let value = match value.chars().next() {
        Some(q @ ('"' | '\'')) => value
            .strip_prefix(q)
            .and_then(|v| v.strip_suffix(q))
            .ok_or_else(bad)?
            .to_string(),
        _ if value.chars().any(char::is_whitespace) => return Err(bad()),
        _ => value.to_string(),
    };
    Ok(Where {
        path: ByPath { parts },
        op,
        value,
    })
}

/// A declared parameter: its name and its type as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredParam {
    pub name: String,
    pub ty: String,
}

/// Split a pattern's function name from a trailing parameter list:
/// `main.handle(w net/http.ResponseWriter, r *net/http.Request)` gives `main.handle` and the
/// two parameters. A name without one (`database/sql.(*DB).QueryContext`: its parentheses are
/// the receiver's) is returned whole. Go's grouping applies: in `(a, b string)` both are strings.
pub fn split_signature(name: &str) -> Result<(&str, Option<Vec<DeclaredParam>>), ArgsError> {
    let Some(body) = name.strip_suffix(')') else {
        return Ok((name, None));
    };
    // The '(' that opens the list: the last one at depth 0 scanning back from the end.
    let mut depth = 0usize;
    let mut open = None;
    for (i, c) in body.char_indices().rev() {
        match c {
            ')' => depth += 1,
            '(' if depth == 0 => {
                open = Some(i);
                break;
            }
            '(' => depth -= 1,
            _ => {}
        }
    }
    let bad = |why| ArgsError::Signature(name.chars().take(200).collect(), why);
    let open = open.ok_or_else(|| bad("unbalanced parentheses"))?;
    let function = &name[..open];
    // `(*T)` right after a dot is a receiver, not a parameter list: `main.(*T)` names no method.
    if function.is_empty() || function.ends_with('.') {
        return Ok((name, None));
    }
    let list = &body[open + 1..];
    let mut params: Vec<DeclaredParam> = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    for item in split_top_level(list) {
        let item = item.trim();
        if item.is_empty() {
            if list.trim().is_empty() {
                break;
            }
            return Err(bad("an empty parameter"));
        }
        match item.split_once(char::is_whitespace) {
            Some((pname, ty)) => {
                let (pname, ty) = (pname.trim(), ty.trim());
                if !identifier(pname) {
                    return Err(bad("a parameter name is not an identifier"));
                }
                if ty.is_empty() || ty.len() > 200 {
                    return Err(bad("a parameter has no type"));
                }
                for earlier in pending.drain(..) {
                    params.push(DeclaredParam {
                        name: earlier,
                        ty: ty.into(),
                    });
                }
                params.push(DeclaredParam {
                    name: pname.into(),
                    ty: ty.into(),
                });
            }
            None if identifier(item) => pending.push(item.into()),
            None => return Err(bad("write each parameter as NAME TYPE")),
        }
        if params.len() + pending.len() > 64 {
            return Err(bad("more than 64 parameters"));
        }
    }
    if !pending.is_empty() {
        return Err(bad("the last parameter has no type (write NAME TYPE)"));
    }
    Ok((function, Some(params)))
}

/// `list` split at commas outside brackets and parentheses (`map[string]int`, `func(int) error`).
fn split_top_level(list: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in list.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&list[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let by = parse_by("r.URL.Path, r.Method").unwrap();
        assert_eq!(by[0].parts, ["r", "URL", "Path"]);
        assert_eq!(by[0].label(), "path");
        assert_eq!(by[1].text(), "r.Method");
        assert!(parse_by("").is_err());
        assert!(parse_by("a,b,c").is_err());
        assert!(parse_by("r..x").is_err());
        assert!(parse_by("r.URL[0]").is_err());
    }

    #[test]
    fn conditions() {
        let w = parse_where("r.URL.Path == \"/slow\"").unwrap();
        assert_eq!(w.path.parts, ["r", "URL", "Path"]);
        assert!(w.matches("/slow") && !w.matches("/fast"));
        let w = parse_where("n >= 500").unwrap();
        assert_eq!(w.op, Op::Ge);
        assert!(w.matches("500") && w.matches("503") && !w.matches("404"));
        assert!(!parse_where("n <= 9").unwrap().matches("10"));
        assert!(parse_where("hit != true").unwrap().matches("false"));
        assert!(parse_where("n").is_err());
        assert!(parse_where("== 3").is_err());
        assert!(parse_where("a.b == 'x").is_err());
        assert!(parse_where("a == x y").is_err());
    }

    #[test]
    fn signatures() {
        let (f, p) =
            split_signature("main.handle(w net/http.ResponseWriter, r *net/http.Request)").unwrap();
        assert_eq!(f, "main.handle");
        let p = p.unwrap();
        assert_eq!(p[1].name, "r");
        assert_eq!(p[1].ty, "*net/http.Request");
        let (f, p) = split_signature("database/sql.(*DB).QueryContext").unwrap();
        assert_eq!((f, p), ("database/sql.(*DB).QueryContext", None));
        let (f, p) = split_signature("main.(*T).Get(t *main.T, a, b string)").unwrap();
        assert_eq!(f, "main.(*T).Get");
        let p = p.unwrap();
        assert_eq!((p[1].ty.as_str(), p[2].ty.as_str()), ("string", "string"));
        let (_, p) = split_signature("main.f(f func(int) error, m map[string]int)").unwrap();
        assert_eq!(p.unwrap()[0].ty, "func(int) error");
        assert_eq!(split_signature("main.f()").unwrap().1, Some(vec![]));
        assert!(split_signature("main.f(a)").is_err());
        assert!(split_signature("main.f(a b").is_ok()); // no trailing ')': a plain name
        assert!(split_signature("main.f a b)").is_err());
        assert_eq!(split_signature("main.(*T)").unwrap().1, None);
    }
}
