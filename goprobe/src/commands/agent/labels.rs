//! Where a process runs, for labels and selectors: the container and pod, from
//! `/proc/PID/cgroup`, and pod names from the kubelet.
//!
//! Container runtimes name cgroups after the container ID, and the kubelet names pod cgroups
//! after the pod UID, in one of two layouts:
//! - systemd driver: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with
//!   '_'>.slice/cri-containerd-<id>.scope` (also `docker-<id>.scope`, `crio-<id>.scope`);
//! - cgroupfs driver: `/kubepods/burstable/pod<uid>/<id>`, and Docker's `/docker/<id>`.
use std::{collections::HashMap, fs};

/// Container and pod of a process, where known.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Placement {
    /// The full container ID (64 hex digits).
    pub container_id: Option<String>,
    /// The pod UID (with dashes).
    pub pod_uid: Option<String>,
}

/// Read `/proc/PID/cgroup` and find the container and the pod.
pub fn placement(pid: u32) -> Placement {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map(|text| parse_cgroup(&text))
        .unwrap_or_default()
}

/// Parse the text of `/proc/PID/cgroup` (cgroup v2 `0::PATH` or v1 `N:controllers:PATH`).
pub fn parse_cgroup(text: &str) -> Placement {
    let mut found = Placement::default();
    for line in text.lines() {
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        let p = parse_cgroup_path(path);
        if found.container_id.is_none() {
            found.container_id = p.container_id;
        }
        if found.pod_uid.is_none() {
            found.pod_uid = p.pod_uid;
        }
    }
    found
}

fn parse_cgroup_path(path: &str) -> Placement {
    let mut found = Placement::default();
    for segment in path.split('/') {
        let segment = segment
            .strip_suffix(".scope")
            .or_else(|| segment.strip_suffix(".slice"))
            .unwrap_or(segment);
        // Pod: "pod<uid>" (cgroupfs), "kubepods-<qos>-pod<uid_with_underscores>" (systemd).
        if let Some(i) = segment.rfind("pod") {
            let uid = segment[i + 3..].replace('_', "-");
            if is_uuid(&uid) {
                found.pod_uid = Some(uid);
                continue;
            }
        }
        // Container: the last run of 64 hex digits, after an optional runtime prefix.
        let id = segment.rsplit(['-', ':']).next().unwrap_or(segment);
        if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            found.container_id = Some(id.to_ascii_lowercase());
        }
    }
    found
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// The short form of a container ID that `docker ps` and `crictl ps` show.
pub fn short_container(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Pod names and namespaces by UID, from the kubelet's pod list (`/pods`), when configured.
#[derive(Debug, Default, Clone)]
pub struct PodNames {
    pub by_uid: HashMap<String, (String, String)>,
}

impl PodNames {
    /// Parse the kubelet's `/pods` answer (a v1 PodList).
    pub fn from_pod_list(json: &serde_json::Value) -> Self {
        let mut by_uid = HashMap::new();
        for item in json["items"].as_array().into_iter().flatten() {
            let meta = &item["metadata"];
            if let (Some(uid), Some(name)) = (meta["uid"].as_str(), meta["name"].as_str()) {
                let namespace = meta["namespace"].as_str().unwrap_or_default();
                by_uid.insert(uid.to_string(), (name.to_string(), namespace.to_string()));
            }
        }
        Self { by_uid }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1d7a0b9c8e4f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a";

    #[test]
    fn systemd_driver_containerd() {
        let text = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_5f60_7182_93a4_b5c6d7e8f901.slice/cri-containerd-{ID}.scope\n"
        );
        let p = parse_cgroup(&text);
        assert_eq!(p.container_id.as_deref(), Some(ID));
        assert_eq!(
            p.pod_uid.as_deref(),
            Some("1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901")
        );
        assert_eq!(short_container(ID), "3f1d7a0b9c8e");
    }

    #[test]
    fn cgroupfs_driver_and_docker() {
        let text = format!(
            "12:pids:/kubepods/besteffort/pod1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901/{ID}\n0::/\n"
        );
        let p = parse_cgroup(&text);
        assert_eq!(p.container_id.as_deref(), Some(ID));
        assert!(p.pod_uid.is_some());
        let p = parse_cgroup(&format!("0::/system.slice/docker-{ID}.scope\n"));
        assert_eq!(p.container_id.as_deref(), Some(ID));
        assert_eq!(p.pod_uid, None);
        let p = parse_cgroup("0::/user.slice/user-0.slice/session-3.scope\n");
        assert_eq!(p, Placement::default());
    }

    #[test]
    fn pod_list() {
        let json = serde_json::json!({"items": [
            {"metadata": {"uid": "u1", "name": "web-0", "namespace": "prod"}}
        ]});
        let names = PodNames::from_pod_list(&json);
        assert_eq!(names.by_uid["u1"], ("web-0".into(), "prod".into()));
    }
}
