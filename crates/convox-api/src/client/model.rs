//! The rack's objects as it sends them (convox `pkg/structs`, JSON field names kept).
//!
//! Every type keeps fields this client does not know in `extra`, so re-serialising an object
//! (`--json` output) loses nothing a newer rack added. Missing fields take their zero value, as
//! in Go. Times are UTC; Go's zero time (`0001-01-01T00:00:00Z`) means "unset".

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Fields of an object this client has no name for.
pub type Extra = serde_json::Map<String, serde_json::Value>;

/// Go's zero `time.Time`, what the rack sends for times that are not set.
pub fn go_zero_time() -> DateTime<Utc> {
    DateTime::from_timestamp(-62_135_596_800, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// `structs.App`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct App {
    /// Generation (`2` or `3`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub generation: String,
    /// Locked apps cannot be deleted.
    pub locked: bool,
    /// App name.
    pub name: String,
    /// Id of the active release.
    pub release: String,
    /// Router host.
    pub router: String,
    /// `running`, `updating`, `creating`, `deleting`…
    pub status: String,
    /// App parameters.
    pub parameters: BTreeMap<String, String>,
    /// Fields this client does not know.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `structs.Process`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Process {
    /// Process id (a pod name on Kubernetes racks).
    pub id: String,
    /// App name.
    pub app: String,
    /// Command line.
    pub command: String,
    /// CPU usage.
    pub cpu: f64,
    /// GPUs.
    pub gpu: i64,
    /// Host.
    pub host: String,
    /// Image.
    pub image: String,
    /// Instance the process runs on.
    pub instance: String,
    /// Memory usage.
    pub memory: f64,
    /// Service name.
    pub name: String,
    /// Ports.
    pub ports: Vec<String>,
    /// Release the process runs.
    pub release: String,
    /// Start time.
    pub started: DateTime<Utc>,
    /// `running`, `pending`…
    pub status: String,
    /// Fields this client does not know.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Default for Process {
    fn default() -> Self {
        Self {
            id: String::new(),
            app: String::new(),
            command: String::new(),
            cpu: 0.0,
            gpu: 0,
            host: String::new(),
            image: String::new(),
            instance: String::new(),
            memory: 0.0,
            name: String::new(),
            ports: Vec::new(),
            release: String::new(),
            started: go_zero_time(),
            status: String::new(),
            extra: Extra::new(),
        }
    }
}

/// `structs.Build`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Build {
    /// Build id (`B…`).
    pub id: String,
    /// App name.
    pub app: String,
    /// Description.
    pub description: String,
    /// Entrypoint.
    pub entrypoint: String,
    /// Git commit the build came from.
    #[serde(rename = "git-sha")]
    pub git_sha: String,
    /// Where the logs are kept.
    pub logs: String,
    /// The manifest (`convox.yml`) used.
    pub manifest: String,
    /// The build process.
    pub process: String,
    /// The release the build produced.
    pub release: String,
    /// Why it failed, if it did.
    pub reason: String,
    /// Image repository.
    pub repository: String,
    /// `created`, `running`, `complete`, `failed`.
    pub status: String,
    /// Start time.
    pub started: DateTime<Utc>,
    /// End time (zero while running).
    pub ended: DateTime<Utc>,
    /// Fields this client does not know.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Default for Build {
    fn default() -> Self {
        Self {
            id: String::new(),
            app: String::new(),
            description: String::new(),
            entrypoint: String::new(),
            git_sha: String::new(),
            logs: String::new(),
            manifest: String::new(),
            process: String::new(),
            release: String::new(),
            reason: String::new(),
            repository: String::new(),
            status: String::new(),
            started: go_zero_time(),
            ended: go_zero_time(),
            extra: Extra::new(),
        }
    }
}

/// `structs.Release`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Release {
    /// Release id (`R…`).
    pub id: String,
    /// App name.
    pub app: String,
    /// Build id.
    pub build: String,
    /// Environment, `KEY=value` lines.
    pub env: String,
    /// The manifest.
    pub manifest: String,
    /// Description (`env add:FOO`, a build's description…).
    pub description: String,
    /// Creation time.
    pub created: DateTime<Utc>,
    /// Fields this client does not know.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Default for Release {
    fn default() -> Self {
        Self {
            id: String::new(),
            app: String::new(),
            build: String::new(),
            env: String::new(),
            manifest: String::new(),
            description: String::new(),
            created: go_zero_time(),
            extra: Extra::new(),
        }
    }
}

/// `structs.ServicePort`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServicePort {
    /// Port on the balancer (0 when internal only).
    pub balancer: i64,
    /// Certificate.
    pub certificate: String,
    /// Container port.
    pub container: i64,
}

/// `structs.Service`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Service {
    /// Desired process count.
    pub count: i64,
    /// CPU units per process.
    pub cpu: i64,
    /// Public domain.
    pub domain: String,
    /// GPUs per process.
    pub gpu: i64,
    /// GPU vendor.
    #[serde(rename = "gpu-vendor")]
    pub gpu_vendor: String,
    /// Memory (MB) per process.
    pub memory: i64,
    /// Service name.
    pub name: String,
    /// Ports.
    pub ports: Vec<ServicePort>,
    /// Autoscale minimum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    /// Autoscale maximum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
    /// Fields this client does not know (`nlb`, autoscale state…).
    #[serde(flatten)]
    pub extra: Extra,
}

/// `structs.Instance`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Instance {
    /// Runs the rack agent.
    pub agent: bool,
    /// CPU in use.
    pub cpu: f64,
    /// CPU capacity.
    #[serde(rename = "cpu-capacity")]
    pub cpu_capacity: f64,
    /// CPU allocatable.
    #[serde(rename = "cpu-allocatable")]
    pub cpu_allocatable: f64,
    /// GPU capacity.
    #[serde(rename = "gpu-capacity")]
    pub gpu_capacity: i64,
    /// GPU allocatable.
    #[serde(rename = "gpu-allocatable")]
    pub gpu_allocatable: i64,
    /// Instance id.
    pub id: String,
    /// Memory in use.
    pub memory: f64,
    /// Memory capacity.
    #[serde(rename = "memory-capacity")]
    pub memory_capacity: f64,
    /// Memory allocatable.
    #[serde(rename = "memory-allocatable")]
    pub memory_allocatable: f64,
    /// Private IP.
    #[serde(rename = "private-ip")]
    pub private_ip: String,
    /// Number of processes.
    pub processes: i64,
    /// Public IP.
    #[serde(rename = "public-ip")]
    pub public_ip: String,
    /// Status.
    pub status: String,
    /// Start time.
    pub started: DateTime<Utc>,
    /// Fields this client does not know.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Default for Instance {
    fn default() -> Self {
        Self {
            agent: false,
            cpu: 0.0,
            cpu_capacity: 0.0,
            cpu_allocatable: 0.0,
            gpu_capacity: 0,
            gpu_allocatable: 0,
            id: String::new(),
            memory: 0.0,
            memory_capacity: 0.0,
            memory_allocatable: 0.0,
            private_ip: String::new(),
            processes: 0,
            public_ip: String::new(),
            status: String::new(),
            started: go_zero_time(),
            extra: Extra::new(),
        }
    }
}

/// `structs.System`: the rack itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct System {
    /// Instance count.
    pub count: i64,
    /// Router domain.
    pub domain: String,
    /// Rack name.
    pub name: String,
    /// Outputs.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
    /// Parameters.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
    /// Provider (`aws`, `gcp`…).
    pub provider: String,
    /// Rack domain.
    #[serde(rename = "rack-domain")]
    pub rack_domain: String,
    /// Internal router.
    #[serde(rename = "router-internal")]
    pub router_internal: String,
    /// Region.
    pub region: String,
    /// Status.
    pub status: String,
    /// Instance type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Rack version.
    pub version: String,
    /// Fields this client does not know.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `structs.Object`: where a stored object lives (`object://app/key`). The rack sends the key
/// capitalised (`Url`): the Go struct has no JSON tag.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Object {
    /// `object://<app>/<key>`.
    #[serde(rename = "Url", alias = "url")]
    pub url: String,
}

/// Whether `t` is unset (Go's zero time or earlier).
pub fn is_zero_time(t: &DateTime<Utc>) -> bool {
    *t <= go_zero_time()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_round_trips_with_unknown_fields() {
        let json = r#"{"id":"web-1","app":"web","command":"","cpu":0.5,"gpu":0,"host":"","image":"i","instance":"n1","memory":12.5,"name":"web","ports":["3000"],"release":"R1","started":"2024-01-02T15:04:05.5Z","status":"running","gpu-util":12.0}"#;
        let p: Process = serde_json::from_str(json).unwrap_or_default();
        assert_eq!(p.id, "web-1");
        assert_eq!(p.status, "running");
        assert_eq!(p.extra.get("gpu-util"), Some(&serde_json::json!(12.0)));
        let back = serde_json::to_value(&p).unwrap_or_default();
        assert_eq!(back["gpu-util"], 12.0);
        assert_eq!(back["started"], "2024-01-02T15:04:05.500Z");
    }

    #[test]
    fn go_zero_time_is_unset() {
        let b: Build = serde_json::from_str(r#"{"id":"B1","ended":"0001-01-01T00:00:00Z"}"#)
            .unwrap_or_default();
        assert_eq!(b.id, "B1");
        assert!(is_zero_time(&b.ended));
        assert!(is_zero_time(&Build::default().started));
    }

    #[test]
    fn object_url_is_capitalised() {
        let o: Object =
            serde_json::from_str(r#"{"Url":"object://web/tmp/a.tgz"}"#).unwrap_or_default();
        assert_eq!(o.url, "object://web/tmp/a.tgz");
        let o: Object = serde_json::from_str(r#"{"url":"object://x/y"}"#).unwrap_or_default();
        assert_eq!(o.url, "object://x/y");
    }
}
