//! What `funclatency --by` and declared signatures say, as typed: `--by 'r.URL.Path,r.Method'`
//! (paths from an argument through struct fields, or `argN`), and a pattern's trailing Go
//! parameter list, `go:main.handle(w net/http.ResponseWriter, r *net/http.Request)`, which
//! gives names and types to the arguments of binaries without DWARF.

/// Values a call can be labelled by at once.
pub const MAX_BY: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("--by: empty path (write ARG or ARG.FIELD..., e.g. 'query' or 'r.URL.Path')")]
    Empty,
    #[error(
        "--by: {0:?} is not a path of Go identifiers (ARG, ARG.FIELD..., a result: retN or its name, an assertion: ARG.(*pkg.T).FIELD, and @return at the end to read it at the return)"
    )]
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

/// One `--by` path: an argument (`name`, or `argN` by position) or a result (`retN`, or its
/// name), and the fields to follow. A part `(*T)` asserts that the interface so far holds a
/// `*T` (calls where it holds another type say so); `@return` at the end reads the value when
/// the call returns, through the pointer the argument held at its entry (what the callee wrote
/// there: an HTTP handler's status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByPath {
    pub parts: Vec<String>,
    pub at_return: bool,
}

impl ByPath {
    pub fn text(&self) -> String {
        let mut text = self.parts.join(".");
        if self.at_return {
            text.push_str("@return");
        }
        text
    }

    /// The label the value is shown under: the last part (`r.URL.Path` is `path`).
    pub fn label(&self) -> String {
        self.parts
            .last()
            .map_or_else(String::new, |p| p.to_lowercase())
    }

    /// The type a part asserts (`(*net/http.response)` gives `net/http.response`).
    pub fn asserted(part: &str) -> Option<&str> {
        part.strip_prefix("(*")?.strip_suffix(')')
    }
}

fn identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
}

/// A Go type name with its package path (`net/http.response`, `main.T`).
fn qualified_type(s: &str) -> bool {
    s.rsplit_once('.').is_some_and(|(package, name)| {
        identifier(name)
            && !package.is_empty()
            && package
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
    })
}

/// `path` split at its dots, `(*T)` parts whole; `None` if a part is neither an identifier nor
/// an assertion, or an assertion comes first.
fn path_parts(path: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut rest = path.trim();
    while !rest.is_empty() {
        let (part, next) = if rest.starts_with("(*") {
            let close = rest.find(')')?;
            (&rest[..=close], &rest[close + 1..])
        } else {
            match rest.find('.') {
                Some(dot) => (&rest[..dot], &rest[dot..]),
                None => (rest, ""),
            }
        };
        let part = part.trim();
        let valid = match ByPath::asserted(part) {
            Some(ty) => !parts.is_empty() && qualified_type(ty),
            None => identifier(part),
        };
        if !valid {
            return None;
        }
        parts.push(part.to_string());
        rest = match next.strip_prefix('.') {
            Some(r) if !r.is_empty() => r,
            Some(_) => return None,
            None if next.is_empty() => "",
            None => return None,
        };
    }
    (!parts.is_empty() && parts.len() <= 8).then_some(parts)
}

/// One path as typed, `@return` included.
fn parse_path(text: &str) -> Option<ByPath> {
    let text = text.trim();
    let (path, at_return) = match text.strip_suffix("@return") {
        Some(path) => (path, true),
        None => (text, false),
    };
    Some(ByPath {
        parts: path_parts(path)?,
        at_return,
    })
}

/// `--by`'s value: comma-separated paths.
pub fn parse_by(text: &str) -> Result<Vec<ByPath>, ArgsError> {
    let mut out = Vec::new();
    for path in text.split(',') {
        let path = path.trim();
        if path.is_empty() {
            return Err(ArgsError::Empty);
        }
        out.push(
            parse_path(path).ok_or_else(|| ArgsError::BadPath(path.chars().take(200).collect()))?,
        );
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
    let Some(path) = parse_path(path) else {
        return Err(bad());
    };
    if value.is_empty() {
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
    Ok(Where { path, op, value })
}

/// A declared parameter or result: its name and its type as written. Unnamed results are
/// `ret0`, `ret1`, ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredParam {
    pub name: String,
    pub ty: String,
    pub result: bool,
}

/// The index of the `(` that opens the parenthesised list ending `text` (which ends in `)`).
fn list_start(text: &str) -> Option<usize> {
    let body = text.strip_suffix(')')?;
    let mut depth = 0usize;
    for (i, c) in body.char_indices().rev() {
        match c {
            ')' => depth += 1,
            '(' if depth == 0 => return Some(i),
            '(' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// A declared signature's results, split off its end: `main.f(x int) (int, error)` and
/// `main.f(x int) error` give `main.f(x int)` and the results.
fn split_results(name: &str) -> Result<(&str, Vec<DeclaredParam>), ArgsError> {
    let bad = |why| ArgsError::Signature(name.chars().take(200).collect(), why);
    let trimmed = name.trim_end();
    // `) (results)`: a list that follows a parameter list.
    if let Some(open) = list_start(trimmed)
        && trimmed[..open].ends_with(char::is_whitespace)
        && trimmed[..open].trim_end().ends_with(')')
    {
        let list = &trimmed[open + 1..trimmed.len() - 1];
        let results = parse_list(list, true).map_err(bad)?;
        return Ok((trimmed[..open].trim_end(), results));
    }
    // `) T`: one unnamed result after a parameter list.
    if !trimmed.ends_with(')')
        && let Some(close) = trimmed.rfind(") ")
    {
        let ty = trimmed[close + 2..].trim();
        if !ty.is_empty() && !ty.contains(char::is_whitespace) {
            let results = parse_list(ty, true).map_err(bad)?;
            return Ok((&trimmed[..=close], results));
        }
    }
    Ok((trimmed, Vec::new()))
}

/// A parameter list's items (`a, b string, r *net/http.Request`); results may be types alone.
fn parse_list(list: &str, results: bool) -> Result<Vec<DeclaredParam>, &'static str> {
    let mut params: Vec<DeclaredParam> = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    let items = split_top_level(list);
    let named = items
        .iter()
        .any(|item| item.trim().split_once(char::is_whitespace).is_some());
    for item in items {
        let item = item.trim();
        if item.is_empty() {
            if list.trim().is_empty() {
                break;
            }
            return Err("an empty parameter");
        }
        if results && !named {
            // `(int, error)`: types alone.
            if item.len() > 200 {
                return Err("a result type is too long");
            }
            params.push(DeclaredParam {
                name: format!("ret{}", params.len()),
                ty: item.into(),
                result: true,
            });
            continue;
        }
        match item.split_once(char::is_whitespace) {
            Some((pname, ty)) => {
                let (pname, ty) = (pname.trim(), ty.trim());
                if !identifier(pname) {
                    return Err("a parameter name is not an identifier");
                }
                if ty.is_empty() || ty.len() > 200 {
                    return Err("a parameter has no type");
                }
                for earlier in pending.drain(..) {
                    params.push(DeclaredParam {
                        name: earlier,
                        ty: ty.into(),
                        result: results,
                    });
                }
                params.push(DeclaredParam {
                    name: pname.into(),
                    ty: ty.into(),
                    result: results,
                });
            }
            None if identifier(item) => pending.push(item.into()),
            None => return Err("write each parameter as NAME TYPE"),
        }
        if params.len() + pending.len() > 64 {
            return Err("more than 64 parameters");
        }
    }
    if !pending.is_empty() {
        return Err("the last parameter has no type (write NAME TYPE)");
    }
    Ok(params)
}

/// Split a pattern's function name from a trailing parameter list and results:
/// `main.handle(w net/http.ResponseWriter, r *net/http.Request)` gives `main.handle` and the
/// two parameters; `main.f(x int) (int, error)` adds results `ret0` and `ret1`. A name without
/// one (`database/sql.(*DB).QueryContext`: its parentheses are the receiver's) is returned
/// whole. Go's grouping applies: in `(a, b string)` both are strings.
pub fn split_signature(name: &str) -> Result<(&str, Option<Vec<DeclaredParam>>), ArgsError> {
    let bad = |why| ArgsError::Signature(name.chars().take(200).collect(), why);
    let (head, results) = split_results(name)?;
    let Some(open) = list_start(head) else {
        if head.ends_with(')') {
            return Err(bad("unbalanced parentheses"));
        }
        return Ok((name, None));
    };
    let function = &head[..open];
    // `(*T)` right after a dot is a receiver, not a parameter list: `main.(*T)` names no method.
    if function.is_empty() || function.ends_with('.') {
        if !results.is_empty() {
            return Err(bad("results without a parameter list"));
        }
        return Ok((name, None));
    }
    let list = &head[open + 1..head.len() - 1];
    let mut params = parse_list(list, false).map_err(bad)?;
    params.extend(results);
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
        assert!(parse_by("a,b,c,d").is_err());
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
    fn results_and_assertions() {
        let (f, p) = split_signature("main.f(x int) (int, error)").unwrap();
        assert_eq!(f, "main.f");
        let p = p.unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(
            (p[2].name.as_str(), p[2].ty.as_str(), p[2].result),
            ("ret1", "error", true)
        );
        let (f, p) = split_signature("main.f(x int) error").unwrap();
        assert_eq!(f, "main.f");
        assert_eq!(p.unwrap()[1].name, "ret0");
        let (_, p) = split_signature("main.(*T).f(t *main.T) (n int, err error)").unwrap();
        assert_eq!(p.unwrap()[2].name, "err");
        let by = parse_by("rw.(*net/http.response).status@return, ret0").unwrap();
        assert_eq!(by[0].parts, ["rw", "(*net/http.response)", "status"]);
        assert!(by[0].at_return);
        assert_eq!(by[0].label(), "status");
        assert_eq!(by[0].text(), "rw.(*net/http.response).status@return");
        assert!(!by[1].at_return);
        assert!(parse_by("(*main.T).x").is_err());
        assert!(parse_by("w.(*T).x").is_err());
        assert!(parse_by("w.(*main.T)x").is_err());
        assert!(parse_by("w.status@ret").is_err());
        let w = parse_where("rw.(*net/http.response).status@return >= 500").unwrap();
        assert!(w.path.at_return && w.matches("503"));
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
