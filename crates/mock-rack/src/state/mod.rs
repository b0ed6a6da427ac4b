//! The fake rack's in-memory state and the operations on it. Handlers lock
//! [`Shared::rack`] briefly (never across an `.await`) and call these methods:
//! app-level ones here, services and processes in [`processes`], releases and
//! builds in [`releases`].

mod processes;
mod releases;

pub use processes::new_service_process;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use crate::env::{parse_env, valid_name};
use crate::error::{ApiError, ApiResult};
use crate::ids::IdGen;
use crate::model::{App, Build, Instance, Process, Release, Resource, Service, System};
use crate::time::Timestamp;

/// Most log lines kept per app (and for the system stream).
const LOG_CAPACITY: usize = 5000;

/// Everything the handlers share.
#[derive(Debug)]
pub struct Shared {
    /// The rack's state.
    pub rack: Mutex<Rack>,
    /// The rack API token (HTTP Basic password). Empty: no authentication.
    pub token: String,
    /// [`crate::BenchKnobs::log_firehose_bytes`]: 0 for the rack's normal log sockets.
    pub log_firehose_bytes: u64,
    /// Flips to `true` when the server shuts down; long-lived sockets end.
    pub shutdown: watch::Receiver<bool>,
    /// Sender side of [`Shared::shutdown`] (kept here so it never closes).
    pub shutdown_tx: watch::Sender<bool>,
}

impl Shared {
    /// Locks the state, recovering from a poisoned lock.
    pub fn lock(&self) -> MutexGuard<'_, Rack> {
        self.rack.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One log line of an app or of the rack itself.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// Global, increasing sequence number (followers poll for newer lines).
    pub seq: u64,
    /// When the line was logged.
    pub ts: Timestamp,
    /// Stream name, e.g. `service/web/web-7d9f8b6c5d-x2k4p` or `system/k8s/api`.
    pub stream: String,
    /// The message.
    pub message: String,
}

impl LogLine {
    /// The line as the rack prints it: `<timestamp> <stream> <message>`.
    pub fn render(&self, prefix: bool) -> String {
        if prefix {
            format!("{} {} {}\n", self.ts.rfc3339(), self.stream, self.message)
        } else {
            format!("{}\n", self.message)
        }
    }
}

/// A bounded buffer of log lines.
#[derive(Debug, Default, Clone)]
pub struct LogBuffer {
    lines: VecDeque<LogLine>,
}

impl LogBuffer {
    fn push(&mut self, line: LogLine) {
        if self.lines.len() >= LOG_CAPACITY {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// Lines in logging order.
    pub fn iter(&self) -> impl Iterator<Item = &LogLine> {
        self.lines.iter()
    }
}

/// Whether a process belongs to a service's deployment or was started by `run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessKind {
    /// A replica of a service.
    Service,
    /// A one-off process (`convox run`).
    Run,
}

/// A process and how it came to be.
#[derive(Debug, Clone)]
pub struct ProcessEntry {
    /// The process as the API shows it.
    pub process: Process,
    /// Its origin.
    pub kind: ProcessKind,
}

/// A build and its log output.
#[derive(Debug, Clone)]
pub struct BuildEntry {
    /// The build as the API shows it.
    pub build: Build,
    /// Build output lines (without trailing newlines).
    pub log_lines: Vec<String>,
}

/// What is kept of an uploaded object: never its content.
#[derive(Debug, Clone)]
pub struct StoredObject {
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 of the content.
    pub sha256: String,
}

/// One app and everything in it.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The app as the API shows it.
    pub app: App,
    /// Its services.
    pub services: Vec<Service>,
    /// Its processes.
    pub processes: Vec<ProcessEntry>,
    /// Its builds, oldest first.
    pub builds: Vec<BuildEntry>,
    /// Its releases, oldest first.
    pub releases: Vec<Release>,
    /// Uploaded objects by key.
    pub objects: BTreeMap<String, StoredObject>,
    /// Its resources (databases and the like).
    pub resources: Vec<Resource>,
    /// Its log lines.
    pub logs: LogBuffer,
}

impl AppState {
    /// A fresh app with nothing in it.
    pub fn new(name: &str, router: &str) -> Self {
        Self {
            app: App {
                generation: "3".into(),
                locked: false,
                name: name.into(),
                release: String::new(),
                router: router.into(),
                status: "running".into(),
                parameters: default_app_parameters(),
            },
            services: Vec::new(),
            processes: Vec::new(),
            builds: Vec::new(),
            releases: Vec::new(),
            objects: BTreeMap::new(),
            resources: Vec::new(),
            logs: LogBuffer::default(),
        }
    }

    /// The release with `id`.
    pub fn release(&self, id: &str) -> ApiResult<&Release> {
        self.releases
            .iter()
            .find(|r| r.id == id)
            .ok_or_else(|| ApiError::not_found(format!("release not found: {id}")))
    }

    /// The most recently created release.
    pub fn latest_release(&self) -> Option<&Release> {
        self.releases.iter().max_by_key(|r| r.created)
    }

    /// The build with `id`.
    pub fn build(&self, id: &str) -> ApiResult<&BuildEntry> {
        self.builds
            .iter()
            .find(|b| b.build.id == id)
            .ok_or_else(|| ApiError::not_found(format!("build not found: {id}")))
    }

    fn build_mut(&mut self, id: &str) -> ApiResult<&mut BuildEntry> {
        self.builds
            .iter_mut()
            .find(|b| b.build.id == id)
            .ok_or_else(|| ApiError::not_found(format!("build not found: {id}")))
    }

    /// The process with `pid`.
    pub fn process(&self, pid: &str) -> ApiResult<&ProcessEntry> {
        self.processes
            .iter()
            .find(|p| p.process.id == pid)
            .ok_or_else(|| ApiError::not_found(format!("process not found: {pid}")))
    }

    /// The service called `name`.
    pub fn service(&self, name: &str) -> ApiResult<&Service> {
        self.services
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| ApiError::not_found(format!("service not found: {name}")))
    }

    /// The environment of release `id` as `(key, value)` pairs.
    pub fn release_env(&self, id: &str) -> Vec<(String, String)> {
        self.releases
            .iter()
            .find(|r| r.id == id)
            .map(|r| parse_env(&r.env).into_iter().collect())
            .unwrap_or_default()
    }
}

/// App parameters every app has (the k8s provider's defaults).
pub fn default_app_parameters() -> BTreeMap<String, String> {
    ["BuildCpu", "BuildLabels", "BuildMem"]
        .into_iter()
        .map(|k| (k.to_string(), String::new()))
        .collect()
}

/// Options of `POST /apps/{app}/services/{service}/processes`.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// Command to run.
    pub command: Option<String>,
    /// Release to run (default: the app's current release).
    pub release: Option<String>,
    /// CPU request.
    pub cpu: Option<i64>,
    /// Memory request.
    pub memory: Option<i64>,
}

/// Fields `PUT /apps/{app}/services/{service}` may change.
#[derive(Debug, Default, Clone)]
pub struct ServiceUpdate {
    /// Desired process count.
    pub count: Option<i64>,
    /// CPU units.
    pub cpu: Option<i64>,
    /// Memory (MB).
    pub memory: Option<i64>,
    /// GPUs.
    pub gpu: Option<i64>,
    /// GPU vendor.
    pub gpu_vendor: Option<String>,
    /// Autoscale minimum.
    pub min: Option<i64>,
    /// Autoscale maximum.
    pub max: Option<i64>,
}

/// Fields `PUT /apps/{app}/builds/{id}` may change.
#[derive(Debug, Default, Clone)]
pub struct BuildUpdate {
    /// End time.
    pub ended: Option<Timestamp>,
    /// Image entrypoint.
    pub entrypoint: Option<String>,
    /// Logs URL.
    pub logs: Option<String>,
    /// Manifest text.
    pub manifest: Option<String>,
    /// Release created from the build.
    pub release: Option<String>,
    /// Start time.
    pub started: Option<Timestamp>,
    /// Status.
    pub status: Option<String>,
}

/// Options of `POST /apps/{app}/releases`.
#[derive(Debug, Default, Clone)]
pub struct ReleaseCreate {
    /// Build of the new release.
    pub build: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Environment (`KEY=value` lines).
    pub env: Option<String>,
    /// Release to fork from instead of the latest.
    pub parent_release: Option<String>,
}

/// The whole fake rack.
#[derive(Debug)]
pub struct Rack {
    /// Deterministic id source.
    pub ids: IdGen,
    /// `GET /system`.
    pub system: System,
    /// Apps by name.
    pub apps: BTreeMap<String, AppState>,
    /// Cluster nodes.
    pub instances: Vec<Instance>,
    /// The rack's own processes (`GET /system/processes`).
    pub system_processes: Vec<Process>,
    /// Rack versions (`GET /system/releases`).
    pub system_releases: Vec<Release>,
    /// Rack-level resources (`GET /resources`).
    pub system_resources: Vec<Resource>,
    /// Rack log lines (`/system/logs`).
    pub system_logs: LogBuffer,
    log_seq: u64,
    last_time: Timestamp,
}

impl Rack {
    /// An empty rack.
    pub fn empty(seed: u64, system: System) -> Self {
        Self {
            ids: IdGen::new(seed),
            system,
            apps: BTreeMap::new(),
            instances: Vec::new(),
            system_processes: Vec::new(),
            system_releases: Vec::new(),
            system_resources: Vec::new(),
            system_logs: LogBuffer::default(),
            log_seq: 0,
            last_time: Timestamp::ZERO,
        }
    }

    /// The current time, strictly after every time handed out before, so
    /// "newest first" orderings are total.
    pub fn now(&mut self) -> Timestamp {
        let now = Timestamp::now();
        self.last_time = if now > self.last_time {
            now
        } else {
            self.last_time.next_nano()
        };
        self.last_time
    }

    /// The highest log sequence number handed out so far.
    pub fn log_seq(&self) -> u64 {
        self.log_seq
    }

    /// Appends a line to an app's log (ignored for unknown apps).
    pub fn log_app(&mut self, app: &str, ts: Timestamp, stream: &str, message: &str) {
        let seq = self.log_seq + 1;
        if let Some(a) = self.apps.get_mut(app) {
            self.log_seq = seq;
            a.logs.push(LogLine {
                seq,
                ts,
                stream: stream.to_string(),
                message: message.to_string(),
            });
        }
    }

    /// Appends a line to the rack's own log.
    pub fn log_system(&mut self, ts: Timestamp, stream: &str, message: &str) {
        self.log_seq += 1;
        self.system_logs.push(LogLine {
            seq: self.log_seq,
            ts,
            stream: stream.to_string(),
            message: message.to_string(),
        });
    }

    /// The app called `name`.
    pub fn app(&self, name: &str) -> ApiResult<&AppState> {
        self.apps
            .get(name)
            .ok_or_else(|| ApiError::not_found(format!("app not found: {name}")))
    }

    /// The app called `name`, mutably.
    pub fn app_mut(&mut self, name: &str) -> ApiResult<&mut AppState> {
        self.apps
            .get_mut(name)
            .ok_or_else(|| ApiError::not_found(format!("app not found: {name}")))
    }

    /// `POST /apps`.
    pub fn create_app(&mut self, name: &str) -> ApiResult<App> {
        if name == "rack" || name == "system" {
            return Err(ApiError::bad_request("app name is reserved"));
        }
        if !valid_name(name) {
            return Err(ApiError::bad_request(format!(
                "invalid app name: {name} (must match ^[a-z][a-z0-9-]*$)"
            )));
        }
        if self.apps.contains_key(name) {
            return Err(ApiError::conflict(format!("app already exists: {name}")));
        }
        let state = AppState::new(name, &self.system.domain);
        let app = state.app.clone();
        self.apps.insert(name.to_string(), state);
        let ts = self.now();
        self.log_system(
            ts,
            "system/k8s/api",
            &format!("ns=api at=AppCreate app={name}"),
        );
        Ok(app)
    }

    /// `DELETE /apps/{app}`.
    pub fn delete_app(&mut self, name: &str) -> ApiResult<()> {
        let app = self.app(name)?;
        if app.app.locked {
            return Err(ApiError::conflict(format!("app is locked: {name}")));
        }
        self.apps.remove(name);
        let ts = self.now();
        self.log_system(
            ts,
            "system/k8s/api",
            &format!("ns=api at=AppDelete app={name}"),
        );
        Ok(())
    }

    /// `PUT /apps/{app}`.
    pub fn update_app(
        &mut self,
        name: &str,
        lock: Option<bool>,
        parameters: Option<BTreeMap<String, String>>,
    ) -> ApiResult<()> {
        let app = self.app_mut(name)?;
        if let Some(lock) = lock {
            app.app.locked = lock;
        }
        if let Some(params) = parameters {
            app.app.parameters.extend(params);
        }
        Ok(())
    }

    /// Records an uploaded object; returns its key.
    pub fn store_object(
        &mut self,
        app: &str,
        key: Option<String>,
        size: u64,
        sha256: String,
    ) -> ApiResult<String> {
        let key = match key {
            Some(k) => k,
            None => format!("tmp/{}", self.ids.hex(30)),
        };
        self.app_mut(app)?
            .objects
            .insert(key.clone(), StoredObject { size, sha256 });
        Ok(key)
    }

    /// `DELETE /instances/{id}`: removes a node.
    pub fn terminate_instance(&mut self, id: &str) -> ApiResult<()> {
        let pos = self
            .instances
            .iter()
            .position(|i| i.id == id)
            .ok_or_else(|| ApiError::not_found(format!("instance not found: {id}")))?;
        self.instances.remove(pos);
        self.system.count = self.instances.len() as i64;
        let ts = self.now();
        self.log_system(ts, "system/k8s/node", &format!("Terminating instance {id}"));
        Ok(())
    }
}

/// How long ago something happened, for seeding.
pub fn ago(now: Timestamp, secs: u64) -> Timestamp {
    now.minus(Duration::from_secs(secs))
}
