//! Options of the calls that take more than a name (convox `structs.*Options`).

use std::collections::BTreeMap;

/// `GET /apps/{app}/processes` filters.
#[derive(Debug, Clone, Default)]
pub struct ProcessListOptions {
    /// Only processes of this service.
    pub service: Option<String>,
    /// Only processes running this release.
    pub release: Option<String>,
}

/// `POST /apps/{app}/services/{service}/processes` options, sent as headers as the SDK does.
#[derive(Debug, Clone, Default)]
pub struct ProcessRunOptions {
    /// The command line.
    pub command: Option<String>,
    /// Run this release instead of the active one.
    pub release: Option<String>,
    /// CPU units.
    pub cpu: Option<i64>,
    /// Memory (MB).
    pub memory: Option<i64>,
    /// Terminal height.
    pub height: Option<u16>,
    /// Terminal width.
    pub width: Option<u16>,
    /// Extra environment (`Environment` header, `K=V` pairs joined by `,`).
    pub environment: BTreeMap<String, String>,
}

/// `POST /apps/{app}/releases` form.
#[derive(Debug, Clone, Default)]
pub struct ReleaseCreateOptions {
    /// Build id.
    pub build: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// The whole environment, `KEY=value` lines.
    pub env: Option<String>,
    /// Base the release on this one instead of the latest.
    pub parent_release: Option<String>,
}

/// `POST /apps/{app}/builds` form.
#[derive(Debug, Clone, Default)]
pub struct BuildCreateOptions {
    /// Description.
    pub description: Option<String>,
    /// Manifest file name inside the source (`convox.yml`).
    pub manifest: Option<String>,
    /// Build without the layer cache.
    pub no_cache: bool,
    /// Development build.
    pub development: bool,
    /// Git commit of the source.
    pub git_sha: Option<String>,
}

/// `PUT /apps/{app}/services/{service}` form.
#[derive(Debug, Clone, Default)]
pub struct ServiceUpdateOptions {
    /// Desired count.
    pub count: Option<i64>,
    /// CPU units.
    pub cpu: Option<i64>,
    /// Memory (MB).
    pub memory: Option<i64>,
    /// Autoscale minimum.
    pub min: Option<i64>,
    /// Autoscale maximum.
    pub max: Option<i64>,
}

impl ServiceUpdateOptions {
    /// Whether any change is asked for.
    pub fn is_empty(&self) -> bool {
        self.count.is_none()
            && self.cpu.is_none()
            && self.memory.is_none()
            && self.min.is_none()
            && self.max.is_none()
    }
}
