//! The deploy files, checked offline with the tools that consume them: `systemd-analyze
//! verify` for the unit, the Kubernetes schemas (PyPI `kubernetes-validate`) for the
//! manifests, `promtool check rules` and `promtool test rules` for the alerting rules, and
//! `goprobe agent --check` for every shipped config. `cargo xtask setup` installs the tools.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use goprobe_e2e::{goprobe_bin, run_goprobe};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn tool(name: &str, candidates: &[PathBuf]) -> PathBuf {
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| panic!("{name} is not installed: `cargo xtask setup` installs it"))
}

/// Run a command; panic with its output unless it succeeds. Returns stdout and stderr.
fn run(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{command:?} failed:\n{text}");
    text
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("goprobe-e2e-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// `systemd-analyze verify` on the unit. It insists that ExecStart's binary exists, so the
/// unit is checked with its path pointing at the goprobe under test; nothing else changes.
#[test]
fn systemd_unit_verifies() {
    let unit = fs::read_to_string(deploy().join("systemd/goprobe.service")).unwrap();
    let analyze = tool(
        "systemd-analyze (Debian's systemd)",
        &[
            "/usr/bin/systemd-analyze".into(),
            "/bin/systemd-analyze".into(),
        ],
    );
    let dir = scratch("systemd");
    let path = dir.join("goprobe.service");
    fs::write(
        &path,
        unit.replace("/usr/local/bin/goprobe", goprobe_bin().to_str().unwrap()),
    )
    .unwrap();
    let out = run(Command::new(&analyze).arg("verify").arg(&path));
    assert!(!out.contains("goprobe.service:"), "warnings:\n{out}");

    // And verify really checks: a misspelt directive fails.
    fs::write(
        &path,
        unit.replace("/usr/local/bin/goprobe", goprobe_bin().to_str().unwrap())
            .replace("NoNewPrivileges=yes", "NoNewPrivileges=perhaps"),
    )
    .unwrap();
    let out = Command::new(&analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("goprobe.service:") && text.contains("perhaps"),
        "{text}"
    );
    fs::remove_dir_all(&dir).unwrap();

    // Least privilege: the bounding and ambient sets agree, and each capability has its reason.
    let set = |key: &str| -> Vec<String> {
        unit.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in the unit"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    let caps = set("CapabilityBoundingSet=");
    assert_eq!(caps, set("AmbientCapabilities="));
    for cap in &caps {
        assert!(
            unit.lines().any(|l| l.starts_with(&format!("#   {cap} "))),
            "{cap} has no reason in the unit's comment"
        );
    }
    assert!(!caps.iter().any(|c| c == "CAP_SYS_ADMIN"), "{caps:?}");
}

#[test]
fn prometheus_rules_check_and_pass_their_tests() {
    let promtool = tool(
        "promtool (Debian's prometheus)",
        &["/usr/bin/promtool".into(), "/usr/local/bin/promtool".into()],
    );
    let dir = deploy().join("prometheus");
    let out = run(Command::new(&promtool)
        .args(["check", "rules", "goprobe-rules.yml"])
        .current_dir(&dir));
    assert!(out.contains("SUCCESS"), "{out}");
    let out = run(Command::new(&promtool)
        .args(["test", "rules", "goprobe-rules.test.yml"])
        .current_dir(&dir));
    assert!(out.contains("SUCCESS"), "{out}");
    // The tests cover every alert, each with a case that fires and one that does not.
    let rules = fs::read_to_string(dir.join("goprobe-rules.yml")).unwrap();
    let tests = fs::read_to_string(dir.join("goprobe-rules.test.yml")).unwrap();
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        let cases: Vec<&str> = tests
            .split("- eval_time:")
            .filter(|case| case.contains(&format!("alertname: {alert}\n")))
            .collect();
        assert!(
            cases.iter().any(|c| c.contains("exp_alerts: []")),
            "{alert}: no test where it does not fire"
        );
        assert!(
            cases.iter().any(|c| c.contains("exp_labels:")),
            "{alert}: no test where it fires"
        );
    }
}

fn kubernetes_validate() -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("GOPROBE_KUBERNETES_VALIDATE") {
        candidates.push(PathBuf::from(p));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(
            Path::new(&home).join(".cache/goprobe/kubernetes-validate/bin/kubernetes-validate"),
        );
    }
    tool("kubernetes-validate (PyPI)", &candidates)
}

#[test]
fn kubernetes_manifests_match_the_schemas() {
    let validate = kubernetes_validate();
    let dir = deploy().join("kubernetes");
    let mut manifests: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    manifests.sort();
    assert!(manifests.len() >= 4, "{manifests:?}");
    let out = run(Command::new(&validate).arg("--strict").args(&manifests));
    for m in &manifests {
        let name = m.file_name().unwrap().to_str().unwrap();
        assert!(
            out.lines()
                .any(|l| l.contains(name) && l.contains("passed")),
            "{name} was not validated:\n{out}"
        );
    }
    // A field the schema does not have is caught.
    let daemonset = fs::read_to_string(dir.join("daemonset.yaml")).unwrap();
    let scratch = scratch("kubernetes");
    let broken = scratch.join("daemonset.yaml");
    fs::write(&broken, daemonset.replace("hostPID: true", "hostPid: true")).unwrap();
    let out = Command::new(&validate)
        .arg("--strict")
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a misspelt field passed validation");
    fs::remove_dir_all(&scratch).unwrap();

    // What the DaemonSet must and must not have (comments aside).
    let daemonset: String = daemonset
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(daemonset.contains("hostPID: true"));
    assert!(daemonset.contains("privileged: false"));
    assert!(!daemonset.contains("privileged: true"));
    assert!(daemonset.contains("automountServiceAccountToken: false"));
    let host_paths: Vec<&str> = daemonset
        .split("hostPath:")
        .skip(1)
        .filter_map(|rest| rest.lines().nth(1)?.trim().strip_prefix("path: "))
        .collect();
    assert_eq!(host_paths.len(), 2, "{host_paths:?}");
    for path in host_paths {
        assert!(
            ["/sys/kernel/btf", "/var/lib/goprobe"].contains(&path),
            "unexpected host mount {path}"
        );
    }
}

/// Every shipped config passes `goprobe agent --check`: the example and the ConfigMap's.
#[test]
fn shipped_configs_are_valid() {
    let out = run_goprobe(&[
        "agent",
        "--check",
        "--config",
        deploy().join("agent.toml").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "deploy/agent.toml: {}", out.stderr);
    let configmap = fs::read_to_string(deploy().join("kubernetes/configmap.yaml")).unwrap();
    let embedded: String = configmap
        .split("agent.toml: |\n")
        .nth(1)
        .expect("the ConfigMap holds agent.toml")
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let dir = scratch("configmap");
    let path = dir.join("agent.toml");
    fs::write(&path, embedded).unwrap();
    let out = run_goprobe(&["agent", "--check", "--config", path.to_str().unwrap()]);
    fs::remove_dir_all(&dir).unwrap();
    assert!(
        out.status.success(),
        "the ConfigMap's agent.toml: {}",
        out.stderr
    );
}

/// The dashboard is valid JSON with the panels it promises, on metrics the agent exports.
#[test]
fn grafana_dashboard_is_complete() {
    let text = fs::read_to_string(deploy().join("grafana/goprobe-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let has = |kind: &str, title: &str| {
        panels
            .iter()
            .any(|p| p["type"] == kind && p["title"].as_str().unwrap().contains(title))
    };
    assert!(has("heatmap", "Latency heatmap"));
    assert!(has("timeseries", "p50"));
    assert!(has("timeseries", "p99"));
    assert!(has("stat", "Events dropped"));
    assert!(has("stat", "Probes attached"));
    let exported = [
        "goprobe_function_latency_seconds_bucket",
        "goprobe_function_latency_seconds_count",
        "goprobe_function_latency_seconds_sum",
        "goprobe_agent_processes_traced",
        "goprobe_agent_probes_attached",
        "goprobe_agent_events_total",
        "goprobe_agent_events_dropped_total",
        "goprobe_agent_attach_errors_total",
        "goprobe_agent_inspection_failures_total",
        "goprobe_agent_archive_errors_total",
        "goprobe_agent_build_info",
    ];
    for word in text.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
        if word.starts_with("goprobe_") {
            assert!(
                exported.contains(&word),
                "the dashboard uses unknown metric {word}"
            );
        }
    }
}

/// The seccomp profile the DaemonSet names is shipped, and it allows bpf() with CAP_BPF and
/// perf_event_open() with CAP_PERFMON, without CAP_SYS_ADMIN: no rule that refuses them applies
/// to a holder of the capability. (tests/e2e/containers.rs runs the agent under it.)
#[test]
fn seccomp_profile_allows_bpf_with_its_capabilities() {
    let daemonset = fs::read_to_string(deploy().join("kubernetes/daemonset.yaml")).unwrap();
    let localhost = daemonset
        .lines()
        .find_map(|l| l.trim().strip_prefix("localhostProfile: "))
        .expect("the DaemonSet uses a Localhost seccomp profile");
    let name = localhost.rsplit('/').next().unwrap();
    let text = fs::read_to_string(deploy().join("seccomp").join(name))
        .unwrap_or_else(|e| panic!("deploy/seccomp/{name} ({localhost}): {e}"));
    let profile: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        profile["defaultAction"], "SCMP_ACT_ERRNO",
        "allow-list profile"
    );
    let rules = profile["syscalls"].as_array().unwrap();
    let caps = |rule: &serde_json::Value, key: &str| -> Vec<String> {
        rule[key]["caps"]
            .as_array()
            .map(|a| a.iter().map(|c| c.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    for (syscall, cap) in [("bpf", "CAP_BPF"), ("perf_event_open", "CAP_PERFMON")] {
        let naming: Vec<&serde_json::Value> = rules
            .iter()
            .filter(|r| r["names"].as_array().unwrap().iter().any(|n| n == syscall))
            .collect();
        assert!(
            naming.iter().any(|r| r["action"] == "SCMP_ACT_ALLOW"
                && caps(r, "includes") == [cap]
                && r["args"].as_array().is_none_or(|a| a.is_empty())),
            "{syscall}: no rule allows it with {cap}"
        );
        for r in naming.iter().filter(|r| r["action"] != "SCMP_ACT_ALLOW") {
            assert!(
                caps(r, "excludes").iter().any(|c| c == cap),
                "{syscall}: a refusing rule applies to holders of {cap}: {r}"
            );
        }
    }
}
