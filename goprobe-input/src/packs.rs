//! The probe packs of `funclatency --pack` and the agent's `pack = "NAME"`: named probe sets for
//! the usual suspects, each a set of functions, the signature of their arguments (so that
//! stripped binaries need no DWARF) and the values their calls are labelled by.

/// A library struct's fields that a pack follows: (struct, [(field, type, offset)]).
pub type Layout = (&'static str, &'static [(&'static str, &'static str, u64)]);

/// Values shown otherwise: (label, value as read, value shown).
pub type ValueMap = &'static [(&'static str, &'static str, &'static str)];

/// gRPC's status codes by number (google.golang.org/grpc/codes), and what a handler's error
/// that carries none (`(other type)`) and a nil one mean.
const GRPC_CODES: ValueMap = &[
    ("code", "(nil)", "OK"),
    ("code", "(other type)", "Unknown"),
    ("code", "0", "OK"),
    ("code", "1", "Canceled"),
    ("code", "2", "Unknown"),
    ("code", "3", "InvalidArgument"),
    ("code", "4", "DeadlineExceeded"),
    ("code", "5", "NotFound"),
    ("code", "6", "AlreadyExists"),
    ("code", "7", "PermissionDenied"),
    ("code", "8", "ResourceExhausted"),
    ("code", "9", "FailedPrecondition"),
    ("code", "10", "Aborted"),
    ("code", "11", "OutOfRange"),
    ("code", "12", "Unimplemented"),
    ("code", "13", "Internal"),
    ("code", "14", "Unavailable"),
    ("code", "15", "DataLoss"),
    ("code", "16", "Unauthenticated"),
];

/// Named probe sets for the usual suspects.
pub struct Pack {
    pub name: &'static str,
    pub about: &'static str,
    /// Functions (a regular expression over full names) and their declared parameters.
    pub functions: &'static str,
    pub signature: &'static str,
    /// Their results, as Go writes them after the parameters (`(*net/http.Response, error)`),
    /// or empty.
    pub results: &'static str,
    pub by: &'static str,
    /// What `by`'s values are called, if not their last field's name in lower case.
    pub labels: &'static [&'static str],
    pub normalize_sql: bool,
    /// Field offsets of the library's own structs that `by` follows (name, fields as (name,
    /// type, offset)), for the library versions `about` names: checked by the pack's test on
    /// a stripped build, since no DWARF says them there.
    pub layouts: &'static [Layout],
    pub value_map: ValueMap,
}

/// `serverHandler` is `struct{ srv *Server }`: one pointer, one register, as a pointer is.
pub const PACKS: &[Pack] = &[
    Pack {
        name: "http-server",
        about: "net/http servers: each request by method, path and status (HTTP/1; HTTP/2's say `(other type)`)",
        functions: r"^net/http\.serverHandler\.ServeHTTP$",
        signature: "sh *net/http.Server, rw net/http.ResponseWriter, req *net/http.Request",
        results: "",
        by: "req.Method,req.URL.Path,rw.(*net/http.response).status@return",
        labels: &[],
        normalize_sql: false,
        layouts: &[],
        // A handler that wrote nothing: the server sends 200 after it returns.
        value_map: &[("status", "0", "200")],
    },
    Pack {
        name: "http-client",
        about: "net/http clients: each request by method, host and status (`(nil)`: no response, an error)",
        functions: r"^net/http\.\(\*Client\)\.do$",
        signature: "c *net/http.Client, req *net/http.Request",
        results: "(*net/http.Response, error)",
        by: "req.Method,req.URL.Host,ret0.StatusCode",
        labels: &["method", "host", "status"],
        normalize_sql: false,
        layouts: &[],
        value_map: &[],
    },
    Pack {
        name: "sql",
        about: "database/sql: each query and statement by its text (any driver)",
        functions: r"^database/sql\.\(\*DB\)\.(Query|Exec)Context$",
        signature: "db *database/sql.DB, ctx context.Context, query string",
        results: "",
        by: "query",
        labels: &[],
        normalize_sql: true,
        layouts: &[],
        value_map: &[],
    },
    Pack {
        name: "redis",
        about: "Redis commands through redigo (github.com/gomodule/redigo 1.8, Debian's): each by its name",
        functions: r"^github\.com/gomodule/redigo/redis\.\(\*conn\)\.DoWithTimeout$",
        signature: "c *github.com/gomodule/redigo/redis.conn, readTimeout int64, cmd string",
        results: "",
        by: "cmd",
        labels: &[],
        normalize_sql: false,
        layouts: &[],
        value_map: &[],
    },
    Pack {
        name: "grpc",
        about: "gRPC servers (google.golang.org/grpc 1.33, Debian's): each unary call by its full method and status code",
        functions: r"^google\.golang\.org/grpc\.\(\*Server\)\.processUnaryRPC$",
        signature: "s *google.golang.org/grpc.Server, t any, stream *google.golang.org/grpc/internal/transport.Stream",
        // The handler's error, which carries the status the server sent (nil: OK).
        results: "(err error)",
        by: "stream.method,err.(*google.golang.org/grpc/internal/status.Error).e.Code",
        labels: &["method", "code"],
        normalize_sql: false,
        layouts: &[
            (
                "google.golang.org/grpc/internal/transport.Stream",
                &[("method", "string", 72)],
            ),
            (
                "google.golang.org/grpc/internal/status.Error",
                &[(
                    "e",
                    "*google.golang.org/genproto/googleapis/rpc/status.Status",
                    0,
                )],
            ),
            (
                "google.golang.org/genproto/googleapis/rpc/status.Status",
                &[("Code", "int32", 0)],
            ),
        ],
        value_map: GRPC_CODES,
    },
];

pub fn pack(name: &str) -> Result<&'static Pack, String> {
    PACKS.iter().find(|p| p.name == name).ok_or_else(|| {
        format!(
            "no pack named {:?} (packs: {})",
            name.chars().take(64).collect::<String>(),
            PACKS.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
        )
    })
}
