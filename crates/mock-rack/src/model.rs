//! JSON shapes of the Convox rack API (field names as in convox `pkg/structs`).
//!
//! Written apart from the client's types in `convox-api` on purpose: both are checked against
//! convox's `pkg/structs`, and a fake that shared the client's types could not catch a field
//! the client names wrongly.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::time::Timestamp;

/// `structs.App`.
#[derive(Debug, Clone, Serialize)]
pub struct App {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub generation: String,
    pub locked: bool,
    pub name: String,
    pub release: String,
    pub router: String,
    pub status: String,
    pub parameters: BTreeMap<String, String>,
}

/// `structs.ServicePort`.
#[derive(Debug, Clone, Serialize)]
pub struct ServicePort {
    pub balancer: i64,
    pub certificate: String,
    pub container: i64,
}

/// `structs.Service`.
#[derive(Debug, Clone, Serialize)]
pub struct Service {
    pub count: i64,
    pub cpu: i64,
    pub domain: String,
    pub gpu: i64,
    #[serde(rename = "gpu-vendor")]
    pub gpu_vendor: String,
    pub memory: i64,
    pub name: String,
    pub nlb: Vec<serde_json::Value>,
    pub ports: Vec<ServicePort>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
}

/// `structs.Process`.
#[derive(Debug, Clone, Serialize)]
pub struct Process {
    pub id: String,
    pub app: String,
    pub command: String,
    pub cpu: f64,
    pub gpu: i64,
    pub host: String,
    pub image: String,
    pub instance: String,
    pub memory: f64,
    pub name: String,
    pub ports: Vec<String>,
    pub release: String,
    pub started: Timestamp,
    pub status: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service: String,
}

/// `structs.Build`.
#[derive(Debug, Clone, Serialize)]
pub struct Build {
    pub id: String,
    pub app: String,
    pub description: String,
    pub entrypoint: String,
    #[serde(rename = "git-sha")]
    pub git_sha: String,
    pub logs: String,
    pub manifest: String,
    pub process: String,
    pub release: String,
    pub reason: String,
    pub repository: String,
    pub status: String,
    pub started: Timestamp,
    pub ended: Timestamp,
}

/// `structs.Release`.
#[derive(Debug, Clone, Serialize)]
pub struct Release {
    pub id: String,
    pub app: String,
    pub build: String,
    pub env: String,
    pub manifest: String,
    pub description: String,
    pub created: Timestamp,
}

/// `structs.Instance`.
#[derive(Debug, Clone, Serialize)]
pub struct Instance {
    pub agent: bool,
    pub cpu: f64,
    #[serde(rename = "cpu-capacity")]
    pub cpu_capacity: f64,
    #[serde(rename = "cpu-allocatable")]
    pub cpu_allocatable: f64,
    #[serde(rename = "gpu-capacity")]
    pub gpu_capacity: i64,
    #[serde(rename = "gpu-allocatable")]
    pub gpu_allocatable: i64,
    pub id: String,
    pub memory: f64,
    #[serde(rename = "memory-capacity")]
    pub memory_capacity: f64,
    #[serde(rename = "memory-allocatable")]
    pub memory_allocatable: f64,
    #[serde(rename = "private-ip")]
    pub private_ip: String,
    pub processes: i64,
    #[serde(rename = "public-ip")]
    pub public_ip: String,
    pub status: String,
    pub started: Timestamp,
}

/// `structs.System`.
#[derive(Debug, Clone, Serialize)]
pub struct System {
    pub count: i64,
    pub domain: String,
    pub name: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
    pub provider: String,
    #[serde(rename = "rack-domain")]
    pub rack_domain: String,
    #[serde(rename = "router-internal")]
    pub router_internal: String,
    pub region: String,
    pub status: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub version: String,
}

/// `structs.Capacity`.
#[derive(Debug, Clone, Serialize)]
pub struct Capacity {
    #[serde(rename = "cluster-cpu")]
    pub cluster_cpu: i64,
    #[serde(rename = "cluster-gpu")]
    pub cluster_gpu: i64,
    #[serde(rename = "cluster-memory")]
    pub cluster_memory: i64,
    #[serde(rename = "process-count")]
    pub process_count: i64,
    #[serde(rename = "process-cpu")]
    pub process_cpu: i64,
    #[serde(rename = "process-gpu")]
    pub process_gpu: i64,
    #[serde(rename = "process-memory")]
    pub process_memory: i64,
}

/// `structs.Resource`.
#[derive(Debug, Clone, Serialize)]
pub struct Resource {
    pub name: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub status: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<App>,
}

/// `structs.Object` (no JSON tags in Go, hence the capitalised key).
#[derive(Debug, Clone, Serialize)]
pub struct Object {
    #[serde(rename = "Url")]
    pub url: String,
}
