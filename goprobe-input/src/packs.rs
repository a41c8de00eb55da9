//! The probe packs of `funclatency --pack` and the agent's `pack = "NAME"`: named probe sets for
//! the usual suspects, each a set of functions, the signature of their arguments (so that
//! stripped binaries need no DWARF) and the values their calls are labelled by.

/// A library struct's fields that a pack follows: (struct, [(field, type, offset)]).
pub type Layout = (&'static str, &'static [(&'static str, &'static str, u64)]);

/// Named probe sets for the usual suspects.
pub struct Pack {
    pub name: &'static str,
    pub about: &'static str,
    /// Functions (a regular expression over full names) and their declared parameters.
    pub functions: &'static str,
    pub signature: &'static str,
    pub by: &'static str,
    pub normalize_sql: bool,
    /// Field offsets of the library's own structs that `by` follows (name, fields as (name,
    /// type, offset)), for the library versions `about` names: checked by the pack's test on
    /// a stripped build, since no DWARF says them there.
    pub layouts: &'static [Layout],
}

/// `serverHandler` is `struct{ srv *Server }`: one pointer, one register, as a pointer is.
pub const PACKS: &[Pack] = &[
    Pack {
        name: "http-server",
        about: "net/http servers: each request by method and path",
        functions: r"^net/http\.serverHandler\.ServeHTTP$",
        signature: "sh *net/http.Server, rw net/http.ResponseWriter, req *net/http.Request",
        by: "req.Method,req.URL.Path",
        normalize_sql: false,
        layouts: &[],
    },
    Pack {
        name: "http-client",
        about: "net/http clients: each request by method and host",
        functions: r"^net/http\.\(\*Client\)\.do$",
        signature: "c *net/http.Client, req *net/http.Request",
        by: "req.Method,req.URL.Host",
        normalize_sql: false,
        layouts: &[],
    },
    Pack {
        name: "sql",
        about: "database/sql: each query and statement by its text (any driver)",
        functions: r"^database/sql\.\(\*DB\)\.(Query|Exec)Context$",
        signature: "db *database/sql.DB, ctx context.Context, query string",
        by: "query",
        normalize_sql: true,
        layouts: &[],
    },
    Pack {
        name: "redis",
        about: "Redis commands through redigo (github.com/gomodule/redigo 1.8, Debian's): each by its name",
        functions: r"^github\.com/gomodule/redigo/redis\.\(\*conn\)\.DoWithTimeout$",
        signature: "c *github.com/gomodule/redigo/redis.conn, readTimeout int64, cmd string",
        by: "cmd",
        normalize_sql: false,
        layouts: &[],
    },
    Pack {
        name: "grpc",
        about: "gRPC servers (google.golang.org/grpc 1.33, Debian's): each unary call by its full method",
        functions: r"^google\.golang\.org/grpc\.\(\*Server\)\.processUnaryRPC$",
        signature: "s *google.golang.org/grpc.Server, t any, stream *google.golang.org/grpc/internal/transport.Stream",
        by: "stream.method",
        normalize_sql: false,
        layouts: &[(
            "google.golang.org/grpc/internal/transport.Stream",
            &[("method", "string", 72)],
        )],
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
