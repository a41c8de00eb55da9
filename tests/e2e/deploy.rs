//! Deploy files, checked offline: systemd, Kubernetes, Prometheus rules.
