//! Inlined functions: `goprobe funclatency 'go:fmt.Println'`, the command users type first, on a
//! program where the compiler inlined every call of fmt.Println (the binary has no such symbol);
//! copies the compiler split into pieces, one placed after the copy was left, counted once per
//! execution (a test program with etcd's code, and Debian's etcd itself).
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use goprobe_e2e::{
    Build, Finished, GoProgram, Goprobe, for_each_build, free_port, goprobe_bin, histogram_of,
    http_get, matrix, poll, trace_program, u64_field,
};
use serde_json::Value;

/// Other Go processes on this host that have fmt.Println (out-of-line or inlined): the literal,
/// host-wide seed command would trace them too, and tests touch only their own programs.
fn other_go_processes_with_println(ours: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == ours || pid == std::process::id() {
            continue;
        }
        let out = Command::new(goprobe_bin())
            .args(["symbols", &pid.to_string(), "fmt.Println"])
            .output();
        if out.is_ok_and(|o| o.status.success()) {
            found.push(pid);
        }
    }
    found
}

/// The symbol table has no fmt.Println (stripped builds have no symbol table to ask).
fn assert_no_println_symbol(build: &Build, program: &Path) {
    if build.variant == "stripped" {
        return;
    }
    let nm = Command::new("nm")
        .arg(program)
        .output()
        .expect("nm (binutils) is needed");
    let symbols = String::from_utf8_lossy(&nm.stdout);
    assert!(
        !symbols.lines().any(|l| l.ends_with(" fmt.Println")),
        "{program:?} has an out-of-line fmt.Println: the test needs one where it is only inlined"
    );
}

/// Parse `p50 = N` from bcc-style text output (nanoseconds).
fn text_field(text: &str, field: &str) -> u64 {
    let at = text
        .find(&format!("{field} = "))
        .unwrap_or_else(|| panic!("no {field} in {text}"));
    text[at + field.len() + 3..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn seed_command_traces_inlined_println() {
    for_each_build(&matrix(), |build| {
        let program = build.program("hello");
        assert_no_println_symbol(build, &program);
        let mut go = GoProgram::start(&program, &["-n", "200", "-delay", "2ms"], &[]);
        let pid = go.pid.to_string();

        // The seed command, literally; narrowed to our binary only if another Go process on this
        // host has fmt.Println, so that nothing else is ever probed.
        let others = other_go_processes_with_println(go.pid);
        let program_str = program.to_str().unwrap();
        let seed: Vec<&str> = if others.is_empty() {
            vec!["funclatency", "go:fmt.Println"]
        } else {
            eprintln!("    other Go processes have fmt.Println ({others:?}): narrowing with -b");
            vec!["funclatency", "-b", program_str, "go:fmt.Println"]
        };
        let mut println = Goprobe::start(&seed);
        println.wait_tracing()?;
        // The out-of-line fmt.Fprintln that fmt.Println calls, measured in the same run.
        let mut fprintln =
            Goprobe::start(&["funclatency", "--json", "-p", &pid, "go:fmt.Fprintln"]);
        fprintln.wait_tracing()?;
        go.go();
        let truth = go.finish(Duration::from_secs(60))?;
        std::thread::sleep(Duration::from_millis(200));
        let text = println.interrupt();
        let json = fprintln.wait(Duration::from_secs(30));
        if !text.status.success() || !json.status.success() {
            return Err(format!("goprobe failed: {}\n{}", text.stderr, json.stderr));
        }
        let out = &text.stdout;
        let ours = out
            .split("\n\n")
            .find(|block| block.contains(&format!("Function = fmt.Println [{pid}]")))
            .ok_or_else(|| format!("no histogram for PID {pid}: {out}"))?;
        if !ours.contains("inlined copies") {
            return Err(format!(
                "the output does not say the sites were inlined: {ours}"
            ));
        }
        let rest = &out[out
            .find(&format!("Function = fmt.Println [{pid}]"))
            .unwrap()..];
        let count = text_field_count(rest);
        let want = u64_field(&truth, "println_calls");
        if count != want {
            return Err(format!("count {count}, want {want}: {rest}"));
        }
        let println_p50 = text_field(rest, "p50");
        let fprintln = json
            .json()
            .into_iter()
            .find(|l| l["function"] == "fmt.Fprintln")
            .ok_or("no Fprintln")?;
        let fprintln_p50 = u64_field(&fprintln, "p50_ns");
        // The inlined copy contains the call of Fprintln, so it cannot be faster, and the work
        // around that call is small beside a 2 ms write.
        if println_p50 < fprintln_p50 || println_p50 as f64 > fprintln_p50 as f64 * 1.10 {
            return Err(format!(
                "p50 of inlined fmt.Println {println_p50} ns vs fmt.Fprintln {fprintln_p50} ns"
            ));
        }
        Ok(())
    });
}

/// `count: N` in the avg line.
fn text_field_count(text: &str) -> u64 {
    let at = text
        .find("count: ")
        .unwrap_or_else(|| panic!("no count in {text}"));
    text[at + 7..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// `goprobe symbols` lists the inlined copies with their caller, call site and ranges.
#[test]
fn symbols_lists_inlined_copies() {
    let build = &matrix()[0];
    let program = build.program("hello");
    let out = Command::new(goprobe_bin())
        .args(["symbols", program.to_str().unwrap(), "fmt.Println"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Inlined copies"), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("fmt.Println") && l.contains("main.main"))
        .expect(&text);
    assert!(row.contains("hello/main.go:"), "{row}");
    assert!(row.contains("0x"), "{row}");
}

/// A piece of an inlined copy placed after the copy was left: a range of the copy that the
/// caller's code falls into and that falls back out into the caller's code (objdump shows it),
/// where goprobe plans neither an entry nor an exit. Before goprobe followed the caller's
/// control flow, such a piece was an entry, and reaching it counted another call. Returns
/// `caller: file:line range` for each one found among the copies matching `pattern` (-r).
fn pieces_after_exit(program: &Path, pattern: &str) -> Vec<String> {
    let out = Command::new(goprobe_bin())
        .args([
            "symbols",
            "--json",
            "-r",
            program.to_str().unwrap(),
            pattern,
        ])
        .output()
        .unwrap();
    let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let mut found = Vec::new();
    for copy in rows.iter().filter(|r| r["kind"] == "inlined") {
        let addrs = |field: &str| -> Vec<u64> {
            copy[field]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default()
        };
        let (entries, exits) = (addrs("entry_addrs"), addrs("exit_addrs"));
        let ranges: Vec<(u64, u64)> = copy["ranges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r[0].as_u64().unwrap(), r[1].as_u64().unwrap()))
            .collect();
        let inside = |a: u64| ranges.iter().any(|&(s, e)| a >= s && a < e);
        // The caller's instructions as objdump decodes them: (address, mnemonic).
        let caller = copy["caller"].as_str().unwrap();
        let Some(function) = rows.iter().find(|r| r["name"] == caller) else {
            continue;
        };
        let (start, size) = (u64_field(function, "addr"), u64_field(function, "size"));
        let instructions = objdump(program, start, start + size);
        for &(s, e) in &ranges {
            let Some(i) = instructions.iter().position(|&(a, _)| a == s) else {
                continue;
            };
            let Some(before) = i.checked_sub(1).map(|b| &instructions[b]) else {
                continue;
            };
            let Some(last) = instructions.iter().rev().find(|&&(a, _)| a < e) else {
                continue;
            };
            let falls = |mnemonic: &str| !["jmp", "ret", "ud2", "int3"].contains(&mnemonic);
            // Not after a call either: the code after a call of a panic is not reached from it.
            if !inside(before.0)
                && falls(&before.1)
                && before.1 != "call"
                && falls(&last.1)
                && !inside(e)
                && !entries.iter().any(|&a| a >= s && a < e)
                && !exits.contains(&e)
            {
                found.push(format!(
                    "{caller}: {} {s:#x}-{e:#x}",
                    copy["call_site"].as_str().unwrap_or_default()
                ));
            }
        }
    }
    found
}

/// `objdump -d` of `[start, end)`: each instruction's address and mnemonic.
fn objdump(program: &Path, start: u64, end: u64) -> Vec<(u64, String)> {
    let out = Command::new("objdump")
        .args([
            "-d",
            "--no-show-raw-insn",
            &format!("--start-address={start:#x}"),
            &format!("--stop-address={end:#x}"),
        ])
        .arg(program)
        .output()
        .expect("objdump (binutils) is needed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (addr, rest) = l.trim_start().split_once(":\t")?;
            let addr = u64::from_str_radix(addr, 16).ok()?;
            let mnemonic = rest.split_whitespace().next()?.to_string();
            Some((addr, mnemonic))
        })
        .collect()
}

/// The copies of `goprobeE2EEncodeVarint` (etcd's encodeVarintKv) in `goprobeE2EMarshalTo`
/// (gogoproto's (*KeyValue).MarshalTo) count exactly the encoder's executions in every build,
/// and at least one build places a piece of a copy after the copy was left (Go 1.19 does, as
/// for etcd itself): reaching it used to count another call.
#[test]
fn split_copies_count_once_per_execution() {
    let mut shapes = Vec::new();
    for_each_build(&matrix(), |build| {
        let program = build.program("inlinelayout");
        let (truth, out) = trace_program(
            &program,
            &["-n", "500"],
            &[],
            &["-F", "-r"],
            r"go:main\.goprobeE2E(EncodeVarint|MarshalTo)$",
        )?;
        let count = |function: &str| -> Result<u64, String> {
            out.json()
                .iter()
                .find(|l| l["function"] == function)
                .map(|l| u64_field(l, "count"))
                .ok_or_else(|| format!("no histogram for {function}: {}", out.stdout))
        };
        let marshals = count("main.goprobeE2EMarshalTo")?;
        let varints = count("main.goprobeE2EEncodeVarint")?;
        let want = (u64_field(&truth, "marshals"), u64_field(&truth, "varints"));
        if (marshals, varints) != want {
            return Err(format!(
                "counted {marshals} marshals and {varints} varints, want {want:?}: {}",
                out.stdout
            ));
        }
        let pieces = pieces_after_exit(&program, r"goprobeE2E(EncodeVarint|MarshalTo)$");
        shapes.extend(pieces.iter().map(|p| format!("{build}: {p}")));
        Ok(())
    });
    eprintln!(
        "pieces placed after their copy was left:\n  {}",
        shapes.join("\n  ")
    );
    assert!(
        !shapes.is_empty(),
        "no build places a piece of a copy after the copy was left: the test proves nothing"
    );
}

/// Debian's etcd (`etcd-server`), on loopback ports of its own, with a data directory of its own.
struct Etcd {
    child: Child,
    client_port: u16,
    dir: PathBuf,
}

impl Etcd {
    const BINARY: &str = "/usr/bin/etcd";
    const CTL: &str = "/usr/bin/etcdctl";

    fn start() -> Self {
        for bin in [Self::BINARY, Self::CTL] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: `cargo xtask setup` installs Debian's etcd-server and etcd-client"
            );
        }
        let name = format!("goprobe-e2e-{}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let (client_port, peer_port) = (free_port(), free_port());
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let child = Command::new(Self::BINARY)
            .args(["--name", &name])
            .arg(format!("--data-dir={}", dir.join("data").display()))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("{name}={peer}")])
            .args(["--initial-cluster-state", "new"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("etcd.log")).unwrap())
            .spawn()
            .expect("cannot start etcd");
        let etcd = Self {
            child,
            client_port,
            dir,
        };
        poll("etcd to answer", Duration::from_secs(30), || {
            matches!(http_get(etcd.client_port, "/health"), Ok((200, body)) if body.contains("true"))
                .then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}: {}", etcd.log()));
        etcd
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }

    /// `etcdctl ARGS` (API v3) against this etcd; its stdout.
    fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new(Self::CTL)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=127.0.0.1:{}", self.client_port))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run etcdctl");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Debian's etcd 3.4 (stripped, Go 1.19) has encodeVarintKv only as inlined copies, two of them
/// in (*KeyValue).MarshalTo with a piece placed after the copy was left. 300 puts and 50 gets
/// marshal 350 KeyValues (each put stores one, each get returns one), each with 5 non-zero
/// varint fields (key length, create and mod revisions, version, value length; no lease): 1,750
/// runs of the copies. Counting the pieces as calls gave 2,450.
#[test]
fn etcd_inlined_varints_count_once_per_execution() {
    const PUTS: u64 = 300;
    const GETS: u64 = 50;
    let etcd = Etcd::start();
    let mut probe = Goprobe::start(&[
        "funclatency",
        "-b",
        Etcd::BINARY,
        "--json",
        "-F",
        "-r",
        r"go:mvccpb\.encodeVarintKv$|mvccpb\.\(\*KeyValue\)\.MarshalTo$",
    ]);
    probe.wait_tracing().unwrap();
    let started = Instant::now();
    for i in 0..PUTS {
        etcd.ctl(&["put", &format!("/goprobe/key{i}"), &format!("value{i}")]);
    }
    for i in 0..GETS {
        let got = etcd.ctl(&["get", &format!("/goprobe/key{i}")]);
        assert!(got.contains(&format!("value{i}")), "{got}");
    }
    eprintln!(
        "{PUTS} puts and {GETS} gets in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_millis(300));
    let out: Finished = probe.interrupt();
    assert!(out.status.success(), "{}", out.stderr);

    // The 5 varints: what a stored KeyValue has that is not zero (read once goprobe is done).
    let kv: Value =
        serde_json::from_str(&etcd.ctl(&["get", "/goprobe/key7", "-w", "json"])).unwrap();
    let kv = &kv["kvs"][0];
    for field in ["key", "value", "create_revision", "mod_revision", "version"] {
        assert!(
            !kv[field].is_null() && kv[field] != 0 && kv[field] != "",
            "{field} is zero: {kv}"
        );
    }
    assert!(kv["lease"].is_null() || kv["lease"] == 0, "{kv}");

    let rows = out.json();
    let row = |function: &str| {
        histogram_of(&rows, function, etcd.pid())
            .unwrap_or_else(|| panic!("no histogram for {function}: {}", out.stdout))
    };
    let marshal = row("go.etcd.io/etcd/mvcc/mvccpb.(*KeyValue).MarshalTo");
    let varint = row("go.etcd.io/etcd/mvcc/mvccpb.encodeVarintKv");
    assert_eq!(varint["inlined_copies"], 9, "{varint}");
    assert_eq!(u64_field(marshal, "lost") + u64_field(varint, "lost"), 0);
    assert_eq!(u64_field(marshal, "count"), PUTS + GETS, "{marshal}");
    assert_eq!(
        u64_field(varint, "count"),
        5 * (PUTS + GETS),
        "{varint}\n{marshal}"
    );
}
