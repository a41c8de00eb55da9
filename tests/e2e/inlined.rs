//! Inlined functions: `goprobe funclatency 'go:fmt.Println'`, the command users type first, on a
//! program where the compiler inlined every call of fmt.Println (the binary has no such symbol).
use std::{path::Path, process::Command, time::Duration};

use goprobe_e2e::{Build, GoProgram, Goprobe, for_each_build, goprobe_bin, matrix, u64_field};

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
