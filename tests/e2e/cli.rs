//! Snapshots of `--help`, so help and behaviour cannot drift apart. Set GOPROBE_UPDATE_SNAPSHOTS=1
//! to rewrite them after an intended change, and review the diff.
use std::path::PathBuf;

use goprobe_e2e::run_goprobe;

fn check_snapshot(name: &str, args: &[&str]) {
    let out = run_goprobe(args);
    assert!(out.status.success(), "{args:?}: {}", out.stderr);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("snapshots")
        .join(name);
    // Reader threads collect lines; compare with a trailing newline as the file keeps it.
    let actual = format!("{}\n", out.stdout.trim_end());
    if std::env::var_os("GOPROBE_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (GOPROBE_UPDATE_SNAPSHOTS=1 writes it)",
            path.display()
        )
    });
    assert_eq!(
        actual,
        expected,
        "`goprobe {}` changed; if intended, update {}",
        args.join(" "),
        path.display()
    );
}

#[test]
fn help_snapshot() {
    check_snapshot("goprobe-help.txt", &["--help"]);
}

#[test]
fn funclatency_help_snapshot() {
    check_snapshot("funclatency-help.txt", &["funclatency", "--help"]);
}

#[test]
fn symbols_help_snapshot() {
    check_snapshot("symbols-help.txt", &["symbols", "--help"]);
}

#[test]
fn agent_help_snapshot() {
    check_snapshot("agent-help.txt", &["agent", "--help"]);
}

#[test]
fn query_help_snapshot() {
    check_snapshot("query-help.txt", &["query", "--help"]);
}

#[test]
fn diff_help_snapshot() {
    check_snapshot("diff-help.txt", &["diff", "--help"]);
}

#[test]
fn stackcount_help_snapshot() {
    check_snapshot("stackcount-help.txt", &["stackcount", "--help"]);
}

#[test]
fn profile_help_snapshot() {
    check_snapshot("profile-help.txt", &["profile", "--help"]);
}

#[test]
fn offcpu_help_snapshot() {
    check_snapshot("offcpu-help.txt", &["offcpu", "--help"]);
}
