//! `funclatency --by` and `--pack`: latency broken down by argument values, checked against
//! `tests/go/byarg`, which prints how many calls it made with each value and how long its
//! HTTP handlers took.
use std::time::Duration;

use goprobe_e2e::{
    Build, Finished, GoProgram, builds_with_variant, for_each_build, run_goprobe, trace_program,
    u64_field,
};
use serde_json::Value;

/// The rows of `function`, by the value of `label`.
fn rows_by<'a>(lines: &'a [Value], label: &str) -> Vec<(String, &'a Value)> {
    lines
        .iter()
        .filter_map(|l| Some((l["by"][label].as_str()?.to_string(), l)))
        .collect()
}

fn count_of(rows: &[(String, &Value)], value: &str) -> u64 {
    rows.iter()
        .filter(|(v, _)| v == value)
        .map(|(_, l)| u64_field(l, "count"))
        .sum()
}

fn expect(what: &str, got: u64, want: u64) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: {got} calls, want {want}"))
    }
}

fn default_and_stripped() -> Vec<Build> {
    let mut builds = builds_with_variant("default");
    builds.extend(builds_with_variant("stripped"));
    builds
}

const LOOKUP: &str = "go:main.goprobeE2ELookup";
const LOOKUP_SIGNATURE: &str = "go:main.goprobeE2ELookup(key string, n int, hit bool)";

/// Each key's calls counted exactly under its own value; a key longer than 128 bytes cut and
/// marked; a key whose bytes are unmapped counted as `(unreadable)`, the program unharmed.
/// Default builds name the arguments from DWARF; stripped ones by the declared signature.
#[test]
fn each_string_value_is_counted_exactly() {
    for_each_build(&default_and_stripped(), |build| {
        let pattern = if build.variant == "stripped" {
            LOOKUP_SIGNATURE
        } else {
            LOOKUP
        };
        let (truth, finished) = trace_program(
            &build.program("byarg"),
            &["-calls", "300", "-req", "3"],
            &[],
            &["--by", "key"],
            pattern,
        )?;
        let lines = finished.json();
        let rows = rows_by(&lines, "key");
        let keys = &truth["keys"];
        expect("alpha", count_of(&rows, "alpha"), u64_field(keys, "alpha"))?;
        expect("beta", count_of(&rows, "beta"), u64_field(keys, "beta"))?;
        let long = format!("{}…", "x".repeat(128));
        expect(
            "the long key",
            count_of(&rows, &long),
            u64_field(keys, "long"),
        )?;
        expect(
            "the unmapped key",
            count_of(&rows, "(unreadable)"),
            u64_field(keys, "unmapped"),
        )?;
        if rows.len() != 4 {
            return Err(format!(
                "want 4 rows, got {:?}",
                rows.iter().map(|r| &r.0).collect::<Vec<_>>()
            ));
        }
        let counters = finished.counters();
        if counters["args_unreadable"].as_u64() != Some(u64_field(keys, "unmapped")) {
            return Err(format!("args_unreadable in {counters}"));
        }
        Ok(())
    });
}

/// Integers and booleans, two at once (`n` and `hit`), and by position (`arg2`).
#[test]
fn integers_and_booleans_label_calls() {
    for_each_build(&builds_with_variant("stripped"), |build| {
        let (truth, finished) = trace_program(
            &build.program("byarg"),
            &["-calls", "100", "-req", "3"],
            &[],
            &["--by", "n,arg2"],
            LOOKUP_SIGNATURE,
        )?;
        let lines = finished.json();
        let keys = &truth["keys"];
        let count = |n: &str, hit: &str| -> u64 {
            lines
                .iter()
                .filter(|l| l["by"]["n"] == n && l["by"]["arg2"] == hit)
                .map(|l| u64_field(l, "count"))
                .sum()
        };
        expect(
            "n=10 hit=true",
            count("10", "true"),
            u64_field(keys, "alpha"),
        )?;
        expect(
            "n=50 hit=false",
            count("50", "false"),
            u64_field(keys, "beta"),
        )?;
        expect(
            "n=1 hit=false",
            count("1", "false"),
            u64_field(keys, "long") + u64_field(keys, "unmapped"),
        )
    });
}

/// `--pack http-server` against the program's own server: each route's requests counted
/// exactly, and the p50 within 10 % of what the handlers measured themselves.
#[test]
fn http_server_pack_reports_each_route() {
    for_each_build(&default_and_stripped(), |build| {
        let (truth, finished) = trace_program(
            &build.program("byarg"),
            &["-calls", "1", "-req", "120", "-c", "4"],
            &[],
            &["--pack", "http-server"],
            "",
        )?;
        let lines = finished.json();
        let rows = rows_by(&lines, "path");
        for route in ["/fast", "/mid", "/slow"] {
            expect(
                route,
                count_of(&rows, route),
                u64_field(&truth["routes"], route),
            )?;
            let (_, row) = rows.iter().find(|(v, _)| v == route).ok_or("no row")?;
            if row["by"]["method"] != "GET" {
                return Err(format!("{route}: method {}", row["by"]["method"]));
            }
            let want = u64_field(&truth["handler_p50_ns"], route) as f64;
            let got = u64_field(row, "p50_ns") as f64;
            if (got - want).abs() > 0.10 * want {
                return Err(format!(
                    "{route}: p50 {got} ns, the handlers measured {want} ns"
                ));
            }
        }
        if rows.len() != 3 {
            return Err(format!("want 3 rows, got {}", rows.len()));
        }
        // The status each handler wrote, read at the return through its ResponseWriter (/fast
        // wrote none: the server sends 200).
        for (route, row) in &rows {
            let want = u64_field(&truth["statuses"], route).to_string();
            if row["by"]["status"] != want.as_str() {
                return Err(format!(
                    "{route}: status {}, want {want}",
                    row["by"]["status"]
                ));
            }
        }
        Ok(())
    });
}

const FETCH: &str = "go:main.goprobeE2EFetch";
const FETCH_SIGNATURE: &str = "go:main.goprobeE2EFetch(key string) (int, error)";

/// Results, read at the RET: an error's nil-ness and an int, exact per value; `--where` on a
/// result. Default builds name the results from DWARF, stripped ones by the declared signature.
#[test]
fn results_label_calls_at_the_return() {
    for_each_build(&default_and_stripped(), |build| {
        let pattern = if build.variant == "stripped" {
            FETCH_SIGNATURE
        } else {
            FETCH
        };
        let (truth, finished) = trace_program(
            &build.program("byarg"),
            &["-calls", "200", "-req", "3"],
            &[],
            &["--by", "key,ret0,ret1"],
            pattern,
        )?;
        let lines = finished.json();
        let fetched = &truth["fetched"];
        let rows = rows_by(&lines, "ret1");
        expect(
            "nil errors",
            count_of(&rows, "nil"),
            u64_field(fetched, "nil"),
        )?;
        expect(
            "non-nil errors",
            count_of(&rows, "non-nil"),
            u64_field(fetched, "non-nil"),
        )?;
        for (value, row) in &rows {
            let (key, n) = if value == "nil" {
                ("hit", "3")
            } else {
                ("miss", "-1")
            };
            if row["by"]["key"] != key || row["by"]["ret0"] != n {
                return Err(format!("ret1={value}: by {}", row["by"]));
            }
        }
        if rows.len() != 2 {
            return Err(format!("want 2 rows, got {}", rows.len()));
        }
        // --where on a result that is not a label.
        let (truth, finished) = trace_program(
            &build.program("byarg"),
            &["-calls", "100", "-req", "3"],
            &[],
            &["--by", "key", "--where", "ret1 != nil"],
            pattern,
        )?;
        let lines = finished.json();
        let rows = rows_by(&lines, "key");
        expect(
            "miss",
            count_of(&rows, "miss"),
            u64_field(&truth["fetched"], "non-nil"),
        )?;
        if rows.len() != 1 {
            return Err(format!("want miss only, got {} rows", rows.len()));
        }
        let counters = finished.counters();
        if counters["args_filtered_out"].as_u64() != Some(u64_field(&truth["fetched"], "nil")) {
            return Err(format!("args_filtered_out in {counters}"));
        }
        Ok(())
    });
}

/// `--pack http-client` on the program's own client: each route's requests under its host and
/// the status the server answered; `--where` on the http-server pack's status label.
#[test]
fn http_client_pack_and_status_filter() {
    for_each_build(&default_and_stripped(), |build| {
        let (truth, finished) = trace_program(
            &build.program("byarg"),
            &["-calls", "1", "-req", "40", "-c", "2"],
            &[],
            &["--pack", "http-client"],
            "",
        )?;
        let lines = finished.json();
        let rows = rows_by(&lines, "status");
        let addr = truth["addr"].as_str().ok_or("no addr")?;
        for route in ["/fast", "/mid", "/slow"] {
            let status = u64_field(&truth["statuses"], route).to_string();
            expect(
                &format!("{route} (status {status})"),
                count_of(&rows, &status),
                u64_field(&truth["routes"], route),
            )?;
        }
        for (status, row) in &rows {
            if row["by"]["host"] != addr || row["by"]["method"] != "GET" {
                return Err(format!("status {status}: by {}", row["by"]));
            }
        }
        if rows.len() != 3 {
            return Err(format!("want 3 rows, got {}", rows.len()));
        }
        let (truth, finished) = trace_program(
            &build.program("byarg"),
            &["-calls", "1", "-req", "40", "-c", "2"],
            &[],
            &["--pack", "http-server", "--where", "status >= 500"],
            "",
        )?;
        let lines = finished.json();
        let rows = rows_by(&lines, "path");
        expect(
            "/slow",
            count_of(&rows, "/slow"),
            u64_field(&truth["routes"], "/slow"),
        )?;
        if rows.len() != 1 {
            return Err(format!("want /slow only, got {} rows", rows.len()));
        }
        let left_out = u64_field(&truth["routes"], "/fast") + u64_field(&truth["routes"], "/mid");
        let counters = finished.counters();
        if counters["args_filtered_out"].as_u64() != Some(left_out) {
            return Err(format!("args_filtered_out in {counters}, want {left_out}"));
        }
        Ok(())
    });
}

fn assert_refused(out: &Finished, expect: &[&str]) {
    assert_eq!(out.status.code(), Some(2), "stderr: {}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "want one line, got: {}", out.stderr);
    for needle in expect {
        assert!(
            lines[0].contains(needle),
            "{needle:?} not in {:?}",
            lines[0]
        );
    }
}

/// An unknown pack, a field that does not exist, a type mismatch and a stripped binary without
/// a signature: one line each, exit 2, and the program (waiting to start) runs on unharmed.
#[test]
fn bad_arguments_get_one_line() {
    let out = run_goprobe(&["funclatency", "--pack", "nope", "-p", "1"]);
    assert_refused(&out, &["no pack named \"nope\"", "http-server"]);
    let out = run_goprobe(&["funclatency", "--by", "a..b", "-p", "1", LOOKUP]);
    assert_refused(&out, &["--by", "not a path"]);
    for build in default_and_stripped() {
        let mut program =
            GoProgram::start(&build.program("byarg"), &["-calls", "3", "-req", "3"], &[]);
        let pid = program.pid.to_string();
        let signature = if build.variant == "stripped" {
            LOOKUP_SIGNATURE
        } else {
            LOOKUP
        };
        let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
            (
                vec!["--by", "key.Path", signature],
                vec!["key.Path", "string has no field"],
            ),
            (
                vec!["--by", "nope", signature],
                vec!["named \"nope\"", "key, n, hit"],
            ),
            (vec!["--pack", "sql"], vec!["no function matches"]),
            (
                vec!["--by", "key@return", signature],
                vec!["@return reads what a pointer argument leads to"],
            ),
            (
                vec!["--by", "key.(*main.T).x", signature],
                vec!["string is not an interface"],
            ),
        ];
        if build.variant == "default" {
            // A declaration that DWARF contradicts would read the wrong registers.
            let swapped = format!("{LOOKUP}(n int, key string)");
            let out = run_goprobe(&["funclatency", "-p", &pid, "--by", "key", &swapped]);
            assert_refused(
                &out,
                &["does not match the binary's DWARF", "(key string, n int"],
            );
        }
        for (args, needles) in cases {
            let mut all = vec!["funclatency", "-p", &pid];
            all.extend(args.iter().copied());
            let out = run_goprobe(&all);
            assert_refused(&out, &needles);
        }
        if build.variant == "stripped" {
            let out = run_goprobe(&["funclatency", "-p", &pid, "--by", "key", LOOKUP]);
            assert_refused(&out, &["no DWARF", "declare them"]);
        }
        program.go();
        let truth = program
            .finish(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{build}: the program was harmed: {e}"));
        assert_eq!(truth["keys"]["alpha"], 3, "{build}");
    }
}

/// A server the test starts on 127.0.0.1 and stops when dropped.
struct Server {
    child: std::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Drop for Server {
    /// SIGTERM first, so that a server cleans up what outlives it (PostgreSQL's System V shared
    /// memory segment), then SIGKILL if it has not gone within 10 s.
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = goprobe_e2e::wait_timeout(&mut self.child, Duration::from_secs(10));
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Server {
    fn start(
        name: &str,
        setup: &[&[&str]],
        command: impl Fn(&std::path::Path, u16) -> Vec<String>,
    ) -> Server {
        let dir = std::env::temp_dir().join(format!("goprobe-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for step in setup {
            let mut c = std::process::Command::new(step[0]);
            c.args(
                step[1..]
                    .iter()
                    .map(|a| a.replace("{dir}", &dir.display().to_string())),
            );
            let out = c.output().unwrap_or_else(|e| panic!("{}: {e}", step[0]));
            assert!(
                out.status.success(),
                "{step:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let port = goprobe_e2e::free_port();
        let argv = command(&dir, port);
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let child = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", argv[0]));
        let server = Server { child, port, dir };
        let ready = goprobe_e2e::poll(name, Duration::from_secs(60), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        assert!(
            ready.is_ok(),
            "{name} did not listen on {port}: {}",
            std::fs::read_to_string(server.dir.join("server.log")).unwrap_or_default()
        );
        server
    }

    /// Debian's MariaDB, in a data directory of its own, without grant tables (the test's
    /// client logs in as root without a password).
    fn mariadb() -> Server {
        Server::start(
            "mariadb",
            &[&[
                "mariadb-install-db",
                "--no-defaults",
                "--datadir={dir}/data",
                "--user=root",
                "--skip-test-db",
            ]],
            |dir, port| {
                vec![
                    "mariadbd".into(),
                    "--no-defaults".into(),
                    format!("--datadir={}/data", dir.display()),
                    format!("--socket={}/sock", dir.display()),
                    format!("--pid-file={}/pid", dir.display()),
                    format!("--port={port}"),
                    "--bind-address=127.0.0.1".into(),
                    "--user=root".into(),
                    "--skip-grant-tables".into(),
                    "--skip-log-bin".into(),
                ]
            },
        )
    }

    /// Debian's PostgreSQL, in a cluster of its own made by `initdb` (as the `postgres` user,
    /// since PostgreSQL refuses to run as root), trusting local connections.
    fn postgres() -> Server {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|d| d.flatten().map(|e| e.path().join("bin")).max())
            .expect("PostgreSQL under /usr/lib/postgresql (cargo xtask setup installs it)");
        let as_postgres = [
            "setpriv",
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
        ];
        let initdb = bin.join("initdb").display().to_string();
        let mut init = as_postgres.to_vec();
        init.extend([
            &initdb,
            "-D",
            "{dir}/data",
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
        ]);
        let server = Server::start(
            "postgres",
            &[&["chown", "postgres:postgres", "{dir}"], &init],
            |dir, port| {
                let mut argv: Vec<String> = as_postgres.iter().map(|a| a.to_string()).collect();
                argv.extend([
                    bin.join("postgres").display().to_string(),
                    "-D".into(),
                    format!("{}/data", dir.display()),
                    "-p".into(),
                    port.to_string(),
                    "-k".into(),
                    dir.display().to_string(),
                    "-c".into(),
                    "listen_addresses=127.0.0.1".into(),
                    "-c".into(),
                    "fsync=off".into(),
                ]);
                argv
            },
        );
        // It listens before it accepts connections: wait until it answers as ready.
        let ready = goprobe_e2e::poll("PostgreSQL to accept", Duration::from_secs(30), || {
            std::process::Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &server.port.to_string()])
                .status()
                .ok()?
                .success()
                .then_some(())
        });
        assert!(
            ready.is_ok(),
            "{}",
            std::fs::read_to_string(server.dir.join("server.log")).unwrap_or_default()
        );
        server
    }

    /// Debian's Redis, without persistence.
    fn redis() -> Server {
        Server::start("redis", &[], |dir, port| {
            vec![
                "redis-server".into(),
                "--port".into(),
                port.to_string(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--save".into(),
                String::new(),
                "--appendonly".into(),
                "no".into(),
                "--dir".into(),
                dir.display().to_string(),
            ]
        })
    }
}

/// `--pack sql` against Debian's MariaDB through Debian's go-sql-driver/mysql: two statements
/// with exact counts, one of them slowed by `SLEEP(0.005)`, both normalised (`SELECT 7 + 1`,
/// `SELECT 8 + 1`, ... are one statement, `SELECT ? + ?`).
#[test]
fn sql_pack_reports_each_statement_normalised() {
    let server = Server::mariadb();
    check_sql_pack("-mysql", server.port, "SELECT SLEEP(?)");
}

/// The same against Debian's PostgreSQL through Debian's lib/pq: the pack reads
/// `database/sql`, so it holds for any driver.
#[test]
fn sql_pack_on_postgres_through_lib_pq() {
    let server = Server::postgres();
    check_sql_pack("-postgres", server.port, "SELECT pg_sleep(?)");
}

/// `dbclients` with `flag` pointed at a database on `port`, traced with `--pack sql`, on default
/// and stripped builds: `SELECT ? + ?` and the `slow` statement each with their exact counts,
/// the slow one's p50 above its 5 ms sleep, and no literal in any row.
fn check_sql_pack(flag: &str, port: u16, slow_statement: &str) {
    let addr = format!("127.0.0.1:{port}");
    for_each_build(&default_and_stripped(), |build| {
        let (truth, finished) = trace_program(
            &build.program("dbclients"),
            &[flag, &addr, "-fast", "150", "-slow", "30"],
            &[],
            &["--pack", "sql"],
            "",
        )?;
        let lines = finished.json();
        let rows = rows_by(&lines, "query");
        expect(
            "SELECT ? + ?",
            count_of(&rows, "SELECT ? + ?"),
            u64_field(&truth, "fast"),
        )?;
        expect(
            slow_statement,
            count_of(&rows, slow_statement),
            u64_field(&truth, "slow"),
        )?;
        let (_, slow) = rows
            .iter()
            .find(|(v, _)| v == slow_statement)
            .ok_or("no slow row")?;
        if u64_field(slow, "p50_ns") < 5_000_000 {
            return Err(format!("the slow statement's p50 is {} ns", slow["p50_ns"]));
        }
        if rows
            .iter()
            .any(|(v, _)| v.chars().any(|c| c.is_ascii_digit()))
        {
            return Err(format!(
                "a literal left the program: {:?}",
                rows.iter().map(|r| &r.0).collect::<Vec<_>>()
            ));
        }
        Ok(())
    });
}

/// `--pack redis` against Debian's Redis through Debian's redigo: SET and GET counted exactly.
#[test]
fn redis_pack_counts_each_command() {
    let server = Server::redis();
    let addr = format!("127.0.0.1:{}", server.port);
    for_each_build(&default_and_stripped(), |build| {
        let (truth, finished) = trace_program(
            &build.program("dbclients"),
            &["-redis", &addr, "-set", "120", "-get", "210"],
            &[],
            &["--pack", "redis"],
            "",
        )?;
        let lines = finished.json();
        let rows = rows_by(&lines, "cmd");
        expect("SET", count_of(&rows, "SET"), u64_field(&truth, "set"))?;
        expect("GET", count_of(&rows, "GET"), u64_field(&truth, "get"))?;
        if rows.len() != 2 {
            return Err(format!(
                "want 2 rows, got {:?}",
                rows.iter().map(|r| &r.0).collect::<Vec<_>>()
            ));
        }
        Ok(())
    });
}

/// `--pack http-server` on Debian's caddy (a stripped Go binary) serving two files: each path's
/// requests counted exactly.
#[test]
fn http_server_pack_on_caddy() {
    let dir = std::env::temp_dir().join(format!("goprobe-e2e-caddy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("site")).unwrap();
    std::fs::write(dir.join("site/a.txt"), "a\n").unwrap();
    std::fs::write(dir.join("site/b.txt"), "b\n".repeat(1000)).unwrap();
    let port = goprobe_e2e::free_port();
    let caddyfile = dir.join("Caddyfile");
    std::fs::write(
        &caddyfile,
        format!(
            "{{\n\tadmin off\n\tauto_https off\n}}\nhttp://127.0.0.1:{port} {{\n\troot * {}\n\tfile_server\n}}\n",
            dir.join("site").display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("caddy.log")).unwrap();
    let mut caddy = std::process::Command::new("caddy")
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&caddyfile)
        .env("HOME", &dir)
        .env("XDG_DATA_HOME", &dir)
        .env("XDG_CONFIG_HOME", &dir)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("caddy (Debian's caddy, installed by cargo xtask setup)");
    let ready = goprobe_e2e::poll("caddy to listen", Duration::from_secs(30), || {
        goprobe_e2e::http_get(port, "/a.txt").ok()
    });
    let result = ready.and_then(|_| {
        let pid = caddy.id().to_string();
        let mut probe = goprobe_e2e::Goprobe::start(&[
            "funclatency",
            "--json",
            "-v",
            "-p",
            &pid,
            "--pack",
            "http-server",
        ]);
        probe.wait_tracing()?;
        for (path, n) in [("/a.txt", 30), ("/b.txt", 50)] {
            for _ in 0..n {
                let (status, _) = goprobe_e2e::http_get(port, path)?;
                if status != 200 {
                    return Err(format!("GET {path}: {status}"));
                }
            }
        }
        let finished = probe.interrupt();
        let lines = finished.json();
        let rows = rows_by(&lines, "path");
        expect("/a.txt", count_of(&rows, "/a.txt"), 30)?;
        expect("/b.txt", count_of(&rows, "/b.txt"), 50)?;
        // Caddy's file server answered each with 200, which the pack read at the return.
        for (path, row) in &rows {
            if row["by"]["status"] != "200" {
                return Err(format!("{path}: status {}", row["by"]["status"]));
            }
        }
        Ok(())
    });
    let _ = caddy.kill();
    let _ = caddy.wait();
    let log = std::fs::read_to_string(dir.join("caddy.log")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = result {
        panic!("{e}\ncaddy's log:\n{log}");
    }
}

/// `--pack grpc` against a gRPC server built with Debian's google.golang.org/grpc: each
/// method's calls counted exactly under its full method, the failing one included.
#[test]
fn grpc_pack_reports_each_method() {
    for_each_build(&default_and_stripped(), |build| {
        let (truth, finished) = trace_program(
            &build.program("grpcpair"),
            &["-fast", "120", "-slow", "25", "-fail", "15"],
            &[],
            &["--pack", "grpc"],
            "",
        )?;
        let lines = finished.json();
        let rows = rows_by(&lines, "method");
        for method in ["Fast", "Slow", "Fail"] {
            expect(
                method,
                count_of(&rows, &format!("/goprobe.test.Pair/{method}")),
                u64_field(&truth, method),
            )?;
        }
        if rows.len() != 3 {
            return Err(format!(
                "want 3 rows, got {:?}",
                rows.iter().map(|r| &r.0).collect::<Vec<_>>()
            ));
        }
        // The status code, from the handler's error at the return (nil: OK).
        for (method, row) in &rows {
            let want = if method.ends_with("/Fail") {
                "NotFound"
            } else {
                "OK"
            };
            if row["by"]["code"] != want {
                return Err(format!("{method}: code {}, want {want}", row["by"]["code"]));
            }
        }
        Ok(())
    });
}

/// `--where`: only the calls whose value passes are counted, and -v says how many were left
/// out; the value tested need not be a label.
#[test]
fn where_keeps_only_matching_calls() {
    for_each_build(&builds_with_variant("stripped"), |build| {
        let (truth, finished) = trace_program(
            &build.program("byarg"),
            &["-calls", "100", "-req", "3"],
            &[],
            &["--by", "key", "--where", "n >= 50"],
            LOOKUP_SIGNATURE,
        )?;
        let lines = finished.json();
        let rows = rows_by(&lines, "key");
        let keys = &truth["keys"];
        expect(
            "beta (n = 50)",
            count_of(&rows, "beta"),
            u64_field(keys, "beta"),
        )?;
        if rows.len() != 1 {
            return Err(format!(
                "want beta only, got {:?}",
                rows.iter().map(|r| &r.0).collect::<Vec<_>>()
            ));
        }
        let left_out =
            u64_field(keys, "alpha") + u64_field(keys, "long") + u64_field(keys, "unmapped");
        let counters = finished.counters();
        if counters["args_filtered_out"].as_u64() != Some(left_out) {
            return Err(format!("args_filtered_out in {counters}, want {left_out}"));
        }
        Ok(())
    });
}
