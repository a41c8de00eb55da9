//! goprobe and containers, in a real runtime (podman, with runc): a static Go test program
//! (tests/go/incontainer) runs alone in an image FROM scratch, and
//! - `funclatency` on the host counts its calls exactly, with `-p` and host-wide;
//! - the agent on the host labels its series with the container, and a probe's `container`
//!   selector picks it out of two containers of the same image;
//! - goprobe's own image (deploy/container/Containerfile) runs with exactly the DaemonSet's
//!   security settings (read from deploy/kubernetes/daemonset.yaml) and the seccomp profile it
//!   names (deploy/seccomp/goprobe.json), and counts the calls in other containers exactly,
//!   one of another user's binary that only its owner may read; with the runtime's default
//!   seccomp profile it exits 2 blaming seccomp, and without CAP_SYS_PTRACE or
//!   CAP_DAC_READ_SEARCH it names and counts each process it cannot inspect, and why.
//!
//! The image's Debian base is built offline of any registry, with mmdebstrap from the host's
//! apt sources, once: it stays as `localhost/goprobe-e2e-base:bookworm` (`podman rmi` it to
//! rebuild). Everything else the tests create (containers, images, files) is removed.
use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Output, Stdio},
    time::{Duration, Instant},
};

use goprobe_e2e::{
    Goprobe, Lines, builds_with_variant, free_port, goprobe_bin, histogram_of, http_get,
    metric_sum, poll, u64_field,
};
use serde_json::Value;

const FUNCTION: &str = "main.goprobeE2EContainer";
const COUNT: &str = "goprobe_function_latency_seconds_count";
const BASE: &str = "localhost/goprobe-e2e-base:bookworm";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tag(what: &str) -> String {
    format!("goprobe-e2e-{what}-{}", std::process::id())
}

/// `podman`, with runc when it is installed: crun refuses hybrid cgroup hierarchies.
fn podman() -> Command {
    assert!(
        ["/usr/bin/podman", "/usr/local/bin/podman"]
            .iter()
            .any(|p| Path::new(p).is_file()),
        "podman is not installed: `cargo xtask setup` installs it"
    );
    let mut command = Command::new("podman");
    if ["/usr/sbin/runc", "/usr/bin/runc"]
        .iter()
        .any(|p| Path::new(p).is_file())
    {
        command.args(["--runtime", "runc"]);
    }
    command
}

/// Resource limits for the containers: podman's defaults (nofile 1048576, nproc 4194304) are
/// above the hard limits of a shell without CAP_SYS_RESOURCE, and then no container starts.
/// This process's own limits, with nproc at most 32768: runc could not set more on a machine
/// whose shell had 96369.
fn ulimits() -> Vec<String> {
    let limit = |resource, name: &str, cap: libc::rlim_t| {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a plain syscall with a valid pointer.
        unsafe { libc::getrlimit(resource, &mut l) };
        let value = l.rlim_cur.min(cap);
        format!("--ulimit={name}={value}:{value}")
    };
    vec![
        limit(libc::RLIMIT_NOFILE, "nofile", 1 << 20),
        limit(libc::RLIMIT_NPROC, "nproc", 32768),
    ]
}

fn output(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// Run a command; panic with its output unless it succeeds. Returns stdout.
fn run(command: &mut Command) -> String {
    let out = output(command);
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(tag(name));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// An image built by a test, removed when dropped.
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = podman().args(["rmi", "-f", &self.0]).output();
    }
}

/// An image of the incontainer program of `variant` (a static build: FROM scratch); `private`:
/// the binary readable by its owner only, user 1000, who runs it.
fn program_image(variant: &str, private: bool) -> Image {
    // Static builds only: nothing else is in the image.
    let build = builds_with_variant(variant)
        .into_iter()
        .rfind(|b| ["default", "stripped"].contains(&b.variant.as_str()))
        .expect("a static build (default or stripped) in GOPROBE_GO_MATRIX");
    let name = format!("prog-{variant}{}", if private { "-private" } else { "" });
    let dir = Scratch::new(&name);
    let binary = dir.0.join("incontainer");
    fs::copy(build.program("incontainer"), &binary).unwrap();
    let containerfile = if private {
        use std::os::unix::fs::PermissionsExt as _;
        // COPY keeps the mode bits.
        fs::set_permissions(&binary, fs::Permissions::from_mode(0o700)).unwrap();
        "FROM scratch\nCOPY --chown=1000:1000 incontainer /incontainer\nUSER 1000\n"
    } else {
        "FROM scratch\nCOPY incontainer /incontainer\n"
    };
    fs::write(
        dir.0.join("Containerfile"),
        format!("{containerfile}ENTRYPOINT [\"/incontainer\"]\n"),
    )
    .unwrap();
    let image = Image(format!("localhost/{}:latest", tag(&name)));
    run(podman().args(["build", "-q", "-t", &image.0]).arg(&dir.0));
    image
}

/// A container running the incontainer program, attached to its stdin and stdout; removed
/// when dropped.
struct Container {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines,
    stderr: Lines,
    /// The program's PID on the host.
    pid: u32,
    /// The full container ID.
    id: String,
}

impl Container {
    /// Start it and wait for its ready line (it then waits for "go").
    fn start(name: &str, image: &Image, args: &[&str]) -> Self {
        let name = tag(name);
        let mut child = podman()
            .args(["run", "-i", "--rm", "--name", &name])
            .args(ulimits())
            .arg(&image.0)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start podman");
        let stdin = child.stdin.take();
        let stdout = Lines::collect(child.stdout.take().unwrap());
        let stderr = Lines::collect(child.stderr.take().unwrap());
        let mut container = Container {
            name,
            child,
            stdin,
            stdout,
            stderr,
            pid: 0,
            id: String::new(),
        };
        let ready =
            container
                .stdout
                .wait_for("the program's ready line", Duration::from_secs(60), |l| {
                    l.starts_with("ready ")
                });
        if let Err(e) = ready {
            panic!("{e}\npodman: {}", container.stderr.text());
        }
        // The program's first process in its own PID namespace.
        assert_eq!(container.stdout.snapshot()[0], "ready 1");
        let inspect = run(podman().args([
            "inspect",
            "--format",
            "{{.State.Pid}} {{.Id}}",
            &container.name,
        ]));
        let (pid, id) = inspect.trim().split_once(' ').unwrap();
        container.pid = pid.parse().unwrap();
        container.id = id.to_string();
        assert_eq!(container.id.len(), 64, "{inspect}");
        container
    }

    fn short_id(&self) -> &str {
        &self.id[..12]
    }

    fn go(&mut self) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(b"go\n");
            let _ = stdin.flush();
        }
    }

    /// Let it run to its end; its ground truth.
    fn finish(mut self) -> Value {
        self.go();
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "{} did not finish", self.name);
            std::thread::sleep(Duration::from_millis(20));
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            status.success(),
            "{} failed ({status}): {}",
            self.name,
            self.stderr.text()
        );
        let line = self
            .stdout
            .wait_for("the ground-truth line", Duration::from_secs(5), |l| {
                l.starts_with('{')
            })
            .unwrap();
        serde_json::from_str(&line).unwrap()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "-f", "-t", "0", &self.name]).output();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn calls(truth: &Value) -> u64 {
    u64_field(truth, "calls")
}

/// `funclatency` on the host counts the calls of a program in a container exactly, with `-p`
/// (the host's PID of the container's process) and host-wide; the agent on the host labels the
/// calls with the container, and a probe's `container` selector traces only that container.
#[test]
fn programs_in_containers_are_traced_from_the_host() {
    let image = program_image("default", false);

    // -p with the host's PID.
    let mut one = Container::start("p", &image, &["-n", "3000"]);
    let pid = one.pid.to_string();
    let mut probe = Goprobe::start(&[
        "funclatency",
        "--json",
        "-v",
        "-p",
        &pid,
        &format!("go:{FUNCTION}"),
    ]);
    probe.wait_tracing().unwrap();
    one.go();
    let truth = one.finish();
    let out = probe.wait(Duration::from_secs(30));
    assert!(out.status.success(), "funclatency -p: {}", out.stderr);
    let h = histogram_of(&out.json(), FUNCTION, pid.parse().unwrap())
        .unwrap_or_else(|| panic!("no histogram for PID {pid}: {}", out.stdout))
        .clone();
    assert_eq!(u64_field(&h, "count"), calls(&truth), "-p: {h}");

    // Host-wide, with the stripped build (names from .gopclntab only).
    let stripped = program_image("stripped", false);
    let mut two = Container::start("hostwide", &stripped, &["-n", "2500"]);
    // Running before goprobe starts: attached when goprobe says it is tracing.
    let mut probe = Goprobe::start(&["funclatency", "--json", &format!("go:{FUNCTION}")]);
    probe.wait_tracing().unwrap();
    let pid = two.pid;
    two.go();
    let truth = two.finish();
    std::thread::sleep(Duration::from_millis(200));
    let out = probe.interrupt();
    assert!(out.status.success(), "funclatency: {}", out.stderr);
    let h = histogram_of(&out.json(), FUNCTION, pid)
        .unwrap_or_else(|| panic!("no histogram for PID {pid}: {}", out.stdout))
        .clone();
    assert_eq!(u64_field(&h, "count"), calls(&truth), "host-wide: {h}");

    // The agent, selecting one of two containers of the same image by its short ID.
    let mut chosen = Container::start("chosen", &image, &["-n", "1200"]);
    let mut other = Container::start("other", &image, &["-n", "700"]);
    let scratch = Scratch::new("containers-agent");
    let port = free_port();
    let config = scratch.0.join("agent.toml");
    fs::write(
        &config,
        format!(
            r#"[agent]
scan_interval = "100ms"

[http]
listen = "127.0.0.1:{port}"

[archive]
path = "{archive}"

[profile]
enabled = false

[[probe]]
name = "in-container"
functions = ["go:{FUNCTION}"]
container = ["{short}"]
"#,
            archive = scratch.0.join("archive.redb").display(),
            short = chosen.short_id(),
        ),
    )
    .unwrap();
    let agent = Goprobe::start_agent(&config);
    agent
        .stderr
        .wait_for(
            "the agent to attach to the chosen container",
            Duration::from_secs(30),
            |l| l.contains("attached") && l.contains(&format!("in PID {} ", chosen.pid)),
        )
        .unwrap();
    chosen.go();
    other.go();
    let (other_pid, chosen_short) = (other.pid, chosen.short_id().to_string());
    let truth = chosen.finish();
    other.finish();
    let metrics = poll(
        "/metrics to count the chosen container's calls",
        Duration::from_secs(15),
        || {
            let (_, text) = http_get(port, "/metrics").ok()?;
            (metric_sum(&text, COUNT, &[("function", FUNCTION)]) as u64 == calls(&truth))
                .then_some(text)
        },
    )
    .unwrap_or_else(|e| panic!("{e}; agent: {}", agent.stderr.text()));
    assert_eq!(
        metric_sum(
            &metrics,
            COUNT,
            &[("function", FUNCTION), ("container", &chosen_short)]
        ) as u64,
        calls(&truth),
        "{metrics}"
    );
    let out = agent.signal(libc::SIGTERM);
    assert!(out.status.success(), "agent: {}", out.stderr);
    assert!(
        !out.stderr.contains(&format!("in PID {other_pid} ")),
        "the other container was attached: {}",
        out.stderr
    );
}

/// The securityContext and host settings of the DaemonSet, as podman flags. Panics on a setting
/// it does not know how to reproduce, so the test and the manifest cannot drift apart.
/// With `runtime_seccomp`, the runtime's default seccomp profile replaces the DaemonSet's.
fn daemonset_flags(without: &[&str], runtime_seccomp: bool) -> Vec<String> {
    let text = fs::read_to_string(repo().join("deploy/kubernetes/daemonset.yaml")).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    let value = |key: &str| -> &str {
        let prefix = format!("{key}:");
        let found: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix(&prefix))
            .map(str::trim)
            .collect();
        assert_eq!(found.len(), 1, "{key} in the DaemonSet: {found:?}");
        found[0]
    };
    // The line after `key:` (a nested `type:`).
    let nested = |key: &str| -> &str {
        let i = lines
            .iter()
            .position(|l| *l == format!("{key}:"))
            .unwrap_or_else(|| panic!("no {key} in the DaemonSet"));
        lines[i + 1]
    };
    let list = |v: &str| -> Vec<String> {
        v.trim_matches(['[', ']'])
            .split(',')
            .map(|c| c.trim().trim_matches('"').to_string())
            .collect()
    };
    let mut flags = Vec::new();
    assert_eq!(value("hostPID"), "true");
    flags.push("--pid=host".to_string());
    assert_eq!(value("privileged"), "false");
    assert_eq!(value("allowPrivilegeEscalation"), "false");
    flags.push("--security-opt=no-new-privileges".to_string());
    assert_eq!(value("readOnlyRootFilesystem"), "true");
    flags.push("--read-only".to_string());
    flags.push(format!("--user={}", value("runAsUser")));
    assert_eq!(list(value("drop")), ["ALL"]);
    flags.push("--cap-drop=ALL".to_string());
    let add: Vec<String> = list(value("add"))
        .into_iter()
        .filter(|c| !without.contains(&c.as_str()))
        .map(|c| format!("CAP_{c}"))
        .collect();
    flags.push(format!("--cap-add={}", add.join(",")));
    assert_eq!(nested("seccompProfile"), "type: Localhost");
    let profile = value("localhostProfile");
    let name = profile.rsplit('/').next().unwrap();
    let shipped = repo().join("deploy/seccomp").join(name);
    assert!(shipped.is_file(), "{profile}: no {}", shipped.display());
    if !runtime_seccomp {
        flags.push(format!(
            "--security-opt=seccomp={}",
            shipped.canonicalize().unwrap().display()
        ));
    }
    assert_eq!(nested("appArmorProfile"), "type: Unconfined");
    flags.push("--security-opt=apparmor=unconfined".to_string());
    flags.push("--volume=/sys/kernel/btf:/sys/kernel/btf:ro".to_string());
    flags
}

/// The Debian base of goprobe's image, built with mmdebstrap from the host's apt sources the
/// first time (about a minute), then kept.
fn base_image() -> &'static str {
    let exists = output(podman().args(["image", "exists", BASE]));
    if exists.status.success() {
        return BASE;
    }
    assert!(
        Path::new("/usr/bin/mmdebstrap").is_file(),
        "mmdebstrap is not installed: `cargo xtask setup` installs it"
    );
    let dir = Scratch::new("base");
    let tar = dir.0.join("base.tar");
    eprintln!("building {BASE} with mmdebstrap (once)");
    run(Command::new("mmdebstrap")
        .args([
            "--variant=minbase",
            "--format=tar",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "bookworm",
        ])
        .arg(&tar));
    run(podman().arg("import").arg(&tar).arg(BASE));
    BASE
}

/// goprobe's image, from deploy/container/Containerfile with the base built here.
fn goprobe_image() -> Image {
    let base = base_image();
    let context = Scratch::new("goprobe-image");
    fs::create_dir_all(context.0.join("target/release")).unwrap();
    fs::create_dir_all(context.0.join("deploy")).unwrap();
    fs::copy(goprobe_bin(), context.0.join("target/release/goprobe")).unwrap();
    fs::copy(
        repo().join("deploy/agent.toml"),
        context.0.join("deploy/agent.toml"),
    )
    .unwrap();
    let image = Image(format!("localhost/{}:latest", tag("goprobe")));
    run(podman()
        .args(["build", "-q", "--from", base, "-t", &image.0, "-f"])
        .arg(repo().join("deploy/container/Containerfile"))
        .arg(&context.0));
    image
}

/// goprobe's agent in its image, as the DaemonSet runs it (minus capabilities `without`; with
/// the runtime's default seccomp profile if `runtime_seccomp`; plus `extra` podman flags), with
/// `config_dir` as /etc/goprobe, `state` as /var/lib/goprobe, and port 9476 published on
/// 127.0.0.1:`port`.
fn agent_command(
    image: &Image,
    name: &str,
    (config_dir, state): (&Path, &Path),
    port: u16,
    without: &[&str],
    runtime_seccomp: bool,
    extra: &[&str],
) -> Command {
    let mut command = podman();
    command
        .args(["run", "--rm", "--name", name])
        .args(ulimits())
        .args(daemonset_flags(without, runtime_seccomp))
        .args(extra)
        .arg(format!("--volume={}:/etc/goprobe:ro", config_dir.display()))
        .arg(format!("--volume={}:/var/lib/goprobe", state.display()))
        .arg(format!("--publish=127.0.0.1:{port}:9476"))
        .arg(&image.0);
    command
}

/// Stops the named container when dropped (the test's agent, if a check panics).
struct Removed(String);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "-f", "-t", "0", &self.0]).output();
    }
}

/// goprobe's image with exactly the DaemonSet's security settings traces programs in other
/// containers with exact counts, one of another user's binary that only its owner may read;
/// the runtime's default seccomp profile, a missing CAP_SYS_PTRACE and a missing
/// CAP_DAC_READ_SEARCH fail loudly, each with its reason.
#[test]
fn goprobe_image_with_the_daemonsets_settings_traces_another_container() {
    let image = goprobe_image();
    let program = program_image("default", false);
    let target = Container::start("target", &program, &["-n", "4000"]);
    // Another user's binary that only its owner may read.
    let private_image = program_image("default", true);
    let private = Container::start("private", &private_image, &["-n", "1500"]);
    let scratch = Scratch::new("daemonset");
    let config_dir = scratch.0.join("config");
    let state = scratch.0.join("state");
    fs::create_dir_all(&config_dir).unwrap();
    fs::create_dir_all(&state).unwrap();
    fs::write(
        config_dir.join("agent.toml"),
        format!(
            r#"[agent]
scan_interval = "200ms"

[http]
listen = "0.0.0.0:9476"

[archive]
path = "/var/lib/goprobe/archive.redb"

[profile]
enabled = false

[[probe]]
name = "target"
functions = ["go:{FUNCTION}"]
container = ["{}", "{}"]
"#,
            target.short_id(),
            private.short_id()
        ),
    )
    .unwrap();

    // The runtime's default seccomp profile refuses bpf() despite CAP_BPF: exit 2, and the
    // message says seccomp, not a missing capability.
    let name = tag("agent-default-seccomp");
    let _removed = Removed(name.clone());
    let out = output(&mut agent_command(
        &image,
        &name,
        (&config_dir, &state),
        free_port(),
        &[],
        true,
        &[],
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("refused bpf() with EPERM although goprobe holds CAP_BPF and CAP_PERFMON")
            && stderr.contains("seccomp filter is set")
            && stderr.contains("deploy/seccomp/goprobe.json"),
        "{stderr}"
    );

    // Without CAP_SYS_PTRACE: the target is not traced, and said so and counted.
    let port = free_port();
    let name = tag("agent-no-ptrace");
    let _removed = Removed(name.clone());
    let agent = Goprobe::spawn(agent_command(
        &image,
        &name,
        (&config_dir, &state),
        port,
        &["SYS_PTRACE"],
        false,
        &[],
    ));
    agent
        .stderr
        .wait_for(
            "the agent to say it cannot inspect the target",
            Duration::from_secs(60),
            |l| {
                l.starts_with(&format!("goprobe: cannot inspect PID {} ", target.pid))
                    && l.contains("lacks CAP_SYS_PTRACE")
            },
        )
        .unwrap();
    poll(
        "/metrics to count processes not inspectable",
        Duration::from_secs(15),
        || {
            let (_, text) = http_get(port, "/metrics").ok()?;
            let n = metric_sum(
                &text,
                "goprobe_agent_processes_not_inspectable_total",
                &[("reason", "CAP_SYS_PTRACE")],
            );
            (n >= 1.0).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}; agent: {}", agent.stderr.text()));
    let out = agent.signal(libc::SIGTERM);
    assert!(
        out.status.success(),
        "agent without CAP_SYS_PTRACE: {}",
        out.stderr
    );
    assert!(!out.stderr.contains("attached"), "{}", out.stderr);

    // Without CAP_DAC_READ_SEARCH: the private binary cannot be read, said so and counted.
    let port = free_port();
    let name = tag("agent-no-dac");
    let _removed = Removed(name.clone());
    let agent = Goprobe::spawn(agent_command(
        &image,
        &name,
        (&config_dir, &state),
        port,
        &["DAC_READ_SEARCH"],
        false,
        &[],
    ));
    agent
        .stderr
        .wait_for(
            "the agent to say it cannot read the private binary",
            Duration::from_secs(60),
            |l| {
                l.starts_with(&format!("goprobe: cannot inspect PID {} ", private.pid))
                    && l.contains("lacks CAP_DAC_READ_SEARCH")
            },
        )
        .unwrap();
    poll(
        "/metrics to count binaries not readable",
        Duration::from_secs(15),
        || {
            let (_, text) = http_get(port, "/metrics").ok()?;
            let n = metric_sum(
                &text,
                "goprobe_agent_processes_not_inspectable_total",
                &[("reason", "CAP_DAC_READ_SEARCH")],
            );
            (n >= 1.0).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}; agent: {}", agent.stderr.text()));
    let out = agent.signal(libc::SIGTERM);
    assert!(
        out.status.success(),
        "agent without CAP_DAC_READ_SEARCH: {}",
        out.stderr
    );
    assert!(
        !out.stderr.contains(&format!("in PID {} ", private.pid)),
        "{}",
        out.stderr
    );

    // Per-site uprobes (perf events), which kernels without uprobe_multi (< 6.6) get: attached,
    // or refused with the reason (kernels with Linux's 2025 fix want CAP_SYS_ADMIN for them).
    let name = tag("agent-per-site");
    let _removed = Removed(name.clone());
    let agent = Goprobe::spawn(agent_command(
        &image,
        &name,
        (&config_dir, &state),
        free_port(),
        &[],
        false,
        &["--env=GOPROBE_ATTACH=single"],
    ));
    let line = agent
        .stderr
        .wait_for(
            "the agent to attach per site or say why not",
            Duration::from_secs(60),
            |l| l.contains(&format!("PID {} ", target.pid)),
        )
        .unwrap();
    assert!(
        line.starts_with("goprobe: attached ")
            || (line.contains("Permission denied") && line.contains("add CAP_SYS_ADMIN")),
        "{line}"
    );
    let out = agent.signal(libc::SIGTERM);
    assert!(
        out.status.success(),
        "agent attaching per site: {}",
        out.stderr
    );

    // As the DaemonSet runs it: both containers, the private binary too.
    let port = free_port();
    let name = tag("agent");
    let _removed = Removed(name.clone());
    let agent = Goprobe::spawn(agent_command(
        &image,
        &name,
        (&config_dir, &state),
        port,
        &[],
        false,
        &[],
    ));
    for pid in [target.pid, private.pid] {
        agent
            .stderr
            .wait_for(
                &format!("the agent to attach to PID {pid}"),
                Duration::from_secs(60),
                |l| l.contains("attached") && l.contains(&format!("in PID {pid} ")),
            )
            .unwrap();
    }
    let expected: Vec<(String, u64)> = [target, private]
        .map(|mut c| {
            let short = c.short_id().to_string();
            c.go();
            (short, calls(&c.finish()))
        })
        .into();
    let metrics = poll(
        "/metrics to count each container's calls",
        Duration::from_secs(15),
        || {
            let (_, text) = http_get(port, "/metrics").ok()?;
            expected
                .iter()
                .all(|(short, calls)| {
                    metric_sum(
                        &text,
                        COUNT,
                        &[("function", FUNCTION), ("container", short)],
                    ) as u64
                        == *calls
                })
                .then_some(text)
        },
    )
    .unwrap_or_else(|e| panic!("{e}; expected {expected:?}; agent: {}", agent.stderr.text()));
    // With these settings the agent inspects every process that root on the host can: each
    // one it cannot is one the test (root, all capabilities) cannot read either, such as a
    // sandbox's init in another user namespace; and each is logged and counted once.
    let refused = |text: &str| -> Vec<u32> {
        text.lines()
            .filter_map(|l| l.strip_prefix("goprobe: cannot inspect PID "))
            .map(|rest| rest.split(' ').next().unwrap().parse().unwrap())
            .collect()
    };
    for pid in refused(&agent.stderr.text()) {
        // (An error here: refused to root too, or gone.)
        if let Ok(exe) = fs::read_link(format!("/proc/{pid}/exe")) {
            panic!(
                "the agent could not inspect PID {pid} ({}), which root on the host can: {}",
                exe.display(),
                agent.stderr.text()
            );
        }
    }
    poll(
        "every process not inspectable to be counted once",
        Duration::from_secs(5),
        || {
            let (_, text) = http_get(port, "/metrics").ok()?;
            let counted = metric_sum(&text, "goprobe_agent_processes_not_inspectable_total", &[]);
            (counted as usize == refused(&agent.stderr.text()).len()).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{metrics}\nagent: {}", agent.stderr.text()));
    let (status, body) = http_get(port, "/api/v1/status").unwrap();
    assert_eq!(status, 200, "{body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    for reason in ["CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"] {
        assert_eq!(status["processes_not_inspectable"][reason], 0, "{status}");
    }
    let out = agent.signal(libc::SIGTERM);
    assert!(out.status.success(), "agent: {}", out.stderr);
    assert!(
        out.stderr.contains("goprobe: stopping"),
        "the agent did not stop on SIGTERM: {}",
        out.stderr
    );
}
