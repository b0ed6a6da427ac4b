//! Services and processes: scaling, restarts, one-off runs, exec targets.

use super::{AppState, ProcessEntry, ProcessKind, Rack, RunOptions, ServiceUpdate};
use crate::error::{ApiError, ApiResult};
use crate::ids::IdGen;
use crate::model::{Instance, Process};
use crate::time::Timestamp;

/// Most processes one service may be scaled to here. A real rack is bounded by its cluster;
/// this one keeps every process in memory.
pub const MAX_SERVICE_COUNT: i64 = 1000;

impl Rack {
    /// `PUT /apps/{app}/services/{service}`: scales and resizes a service.
    pub fn update_service(&mut self, app: &str, service: &str, u: ServiceUpdate) -> ApiResult<()> {
        if let Some(c) = u.count
            && c < 0
        {
            return Err(ApiError::bad_request(format!("invalid count: {c}")));
        }
        // Each process is kept in memory: `scale --count 99999999999` took the whole `dev`
        // stack, gateway included, down with the machine's memory.
        if let Some(c) = u.count
            && c > MAX_SERVICE_COUNT
        {
            return Err(ApiError::bad_request(format!(
                "invalid count: {c} (this fake rack runs at most {MAX_SERVICE_COUNT} processes \
                 per service)"
            )));
        }
        let ts = self.now();
        let Rack {
            ids,
            apps,
            instances,
            ..
        } = self;
        let a = apps
            .get_mut(app)
            .ok_or_else(|| ApiError::not_found(format!("app not found: {app}")))?;
        let idx = a
            .services
            .iter()
            .position(|s| s.name == service)
            .ok_or_else(|| ApiError::not_found(format!("service not found: {service}")))?;
        {
            let s = &mut a.services[idx];
            if let Some(v) = u.cpu {
                s.cpu = v;
            }
            if let Some(v) = u.memory {
                s.memory = v;
            }
            if let Some(v) = u.gpu {
                s.gpu = v;
            }
            if let Some(v) = u.gpu_vendor {
                s.gpu_vendor = v;
            }
            if u.min.is_some() {
                s.min = u.min;
            }
            if u.max.is_some() {
                s.max = u.max;
            }
        }
        if let Some(count) = u.count {
            a.services[idx].count = count;
            let current: Vec<usize> = a
                .processes
                .iter()
                .enumerate()
                .filter(|(_, p)| p.kind == ProcessKind::Service && p.process.name == service)
                .map(|(i, _)| i)
                .collect();
            let want = usize::try_from(count).unwrap_or(0);
            if current.len() > want {
                let remove: Vec<usize> = current[want..].to_vec();
                let mut i = 0;
                a.processes.retain(|_| {
                    let keep = !remove.contains(&i);
                    i += 1;
                    keep
                });
            } else if current.len() < want {
                let hash = a
                    .processes
                    .iter()
                    .find(|p| p.kind == ProcessKind::Service && p.process.name == service)
                    .and_then(|p| replicaset_hash_of(&p.process.id, service))
                    .unwrap_or_else(|| ids.replicaset_hash());
                let release = a.app.release.clone();
                for _ in current.len()..want {
                    let p = new_service_process(ids, instances, a, idx, &hash, &release, ts);
                    a.processes.push(p);
                }
            }
        }
        let msg = format!("Scaled {service}: count={}", a.services[idx].count);
        self.log_app(app, ts, &format!("system/k8s/{service}"), &msg);
        Ok(())
    }

    /// `POST /apps/{app}/services/{service}/restart`: replaces the service's processes.
    pub fn restart_service(&mut self, app: &str, service: &str) -> ApiResult<()> {
        self.app(app)?.service(service)?;
        let release = self.app(app)?.app.release.clone();
        let ts = self.now();
        self.redeploy_service(app, service, &release, ts)?;
        self.log_app(
            app,
            ts,
            &format!("system/k8s/{service}"),
            &format!("Restarted {service}"),
        );
        Ok(())
    }

    /// Replaces all processes of `service` with fresh ones running `release`.
    pub(super) fn redeploy_service(
        &mut self,
        app: &str,
        service: &str,
        release: &str,
        ts: Timestamp,
    ) -> ApiResult<()> {
        let Rack {
            ids,
            apps,
            instances,
            ..
        } = self;
        let a = apps
            .get_mut(app)
            .ok_or_else(|| ApiError::not_found(format!("app not found: {app}")))?;
        let idx = a
            .services
            .iter()
            .position(|s| s.name == service)
            .ok_or_else(|| ApiError::not_found(format!("service not found: {service}")))?;
        a.processes
            .retain(|p| !(p.kind == ProcessKind::Service && p.process.name == service));
        let hash = ids.replicaset_hash();
        for _ in 0..a.services[idx].count.max(0) {
            let p = new_service_process(ids, instances, a, idx, &hash, release, ts);
            a.processes.push(p);
        }
        Ok(())
    }

    /// `DELETE /apps/{app}/processes/{pid}`. A service replica is replaced by a
    /// new one (as its deployment would); a one-off process just goes away.
    pub fn stop_process(&mut self, app: &str, pid: &str) -> ApiResult<()> {
        let ts = self.now();
        let Rack {
            ids,
            apps,
            instances,
            ..
        } = self;
        let a = apps
            .get_mut(app)
            .ok_or_else(|| ApiError::not_found(format!("app not found: {app}")))?;
        let pos = a
            .processes
            .iter()
            .position(|p| p.process.id == pid)
            .ok_or_else(|| ApiError::not_found(format!("process not found: {pid}")))?;
        let removed = a.processes.remove(pos);
        if removed.kind == ProcessKind::Service
            && let Some(idx) = a
                .services
                .iter()
                .position(|s| s.name == removed.process.name)
        {
            let hash = replicaset_hash_of(&removed.process.id, &removed.process.name)
                .unwrap_or_else(|| ids.replicaset_hash());
            let p =
                new_service_process(ids, instances, a, idx, &hash, &removed.process.release, ts);
            a.processes.push(p);
        }
        Ok(())
    }

    /// `POST /apps/{app}/services/{service}/processes`: starts a one-off process.
    pub fn run_process(
        &mut self,
        app: &str,
        service: &str,
        opts: RunOptions,
    ) -> ApiResult<Process> {
        let ts = self.now();
        let Rack {
            ids,
            apps,
            instances,
            system,
            ..
        } = self;
        let a = apps
            .get_mut(app)
            .ok_or_else(|| ApiError::not_found(format!("app not found: {app}")))?;
        let release = match opts.release {
            Some(r) if !r.is_empty() => {
                a.release(&r)?;
                r
            }
            _ => a.app.release.clone(),
        };
        let svc = a.services.iter().find(|s| s.name == service).cloned();
        let n = a.processes.len() as u64;
        let inst = pick_instance(instances, n);
        let build = a
            .releases
            .iter()
            .find(|r| r.id == release)
            .map(|r| r.build.clone())
            .unwrap_or_default();
        let process = Process {
            id: format!("{service}-run-{}", ids.pod_suffix()),
            app: app.to_string(),
            command: opts.command.unwrap_or_default(),
            cpu: opts.cpu.or(svc.as_ref().map(|s| s.cpu)).unwrap_or(256) as f64,
            gpu: 0,
            host: inst.0,
            image: image_name(&system.domain, app, service, &build),
            instance: inst.1,
            memory: opts
                .memory
                .or(svc.as_ref().map(|s| s.memory))
                .unwrap_or(512) as f64,
            name: service.to_string(),
            ports: Vec::new(),
            release,
            started: ts,
            status: "running".into(),
            service: service.to_string(),
        };
        a.processes.push(ProcessEntry {
            process: process.clone(),
            kind: ProcessKind::Run,
        });
        Ok(process)
    }

    /// Resolves an exec target: a process id, or a service name (its first
    /// running process, as the rack picks one of them).
    pub fn exec_target(&self, app: &str, pid: &str) -> ApiResult<(Process, Vec<(String, String)>)> {
        let a = self.app(app)?;
        let entry = a
            .processes
            .iter()
            .find(|p| p.process.id == pid)
            .or_else(|| {
                a.processes
                    .iter()
                    .find(|p| p.process.name == pid && p.process.status == "running")
            })
            .ok_or_else(|| ApiError::not_found(format!("process not found: {pid}")))?;
        let env = a.release_env(&entry.process.release);
        Ok((entry.process.clone(), env))
    }
}

/// The replica-set hash inside a pod id `service-<hash>-<suffix>`.
fn replicaset_hash_of(pid: &str, service: &str) -> Option<String> {
    let rest = pid.strip_prefix(service)?.strip_prefix('-')?;
    let (hash, _) = rest.rsplit_once('-')?;
    (!hash.is_empty() && hash != "run").then(|| hash.to_string())
}

/// (private ip, instance id) of the node for the `n`th process.
fn pick_instance(instances: &[Instance], n: u64) -> (String, String) {
    if instances.is_empty() {
        return (String::new(), String::new());
    }
    let i = &instances[(n % instances.len() as u64) as usize];
    (i.private_ip.clone(), i.id.clone())
}

/// The image a process of `service` runs for `build`.
pub fn image_name(domain: &str, app: &str, service: &str, build: &str) -> String {
    format!("registry.{domain}/{app}:{service}.{build}")
}

/// A new running replica of `a.services[idx]`.
pub fn new_service_process(
    ids: &mut IdGen,
    instances: &[Instance],
    a: &AppState,
    idx: usize,
    hash: &str,
    release: &str,
    started: Timestamp,
) -> ProcessEntry {
    let s = &a.services[idx];
    let build = a
        .releases
        .iter()
        .find(|r| r.id == release)
        .map(|r| r.build.clone())
        .unwrap_or_default();
    let domain = a.app.router.clone();
    let inst = pick_instance(instances, a.processes.len() as u64 + ids.below(7));
    let cpu_usage = (ids.below(400) as f64) / 10.0;
    let mem_usage = (ids.below(s.memory.max(1) as u64 * 10) as f64) / 10.0;
    ProcessEntry {
        process: Process {
            id: format!("{}-{}-{}", s.name, hash, ids.pod_suffix()),
            app: a.app.name.clone(),
            command: String::new(),
            cpu: cpu_usage,
            gpu: s.gpu,
            host: inst.0,
            image: image_name(&domain, &a.app.name, &s.name, &build),
            instance: inst.1,
            memory: mem_usage,
            name: s.name.clone(),
            ports: s.ports.iter().map(|p| p.container.to_string()).collect(),
            release: release.to_string(),
            started,
            status: "running".into(),
            service: s.name.clone(),
        },
        kind: ProcessKind::Service,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicaset_hashes() {
        assert_eq!(
            replicaset_hash_of("web-abc12-xyz99", "web").as_deref(),
            Some("abc12")
        );
        assert_eq!(replicaset_hash_of("web-run-xyz99", "web"), None);
    }

    fn scale(rack: &mut Rack, count: i64) -> ApiResult<()> {
        let update = ServiceUpdate {
            count: Some(count),
            ..ServiceUpdate::default()
        };
        rack.update_service("web", "web", update)
    }

    fn web_processes(rack: &Rack) -> usize {
        rack.apps["web"]
            .processes
            .iter()
            .filter(|p| p.kind == ProcessKind::Service && p.process.name == "web")
            .count()
    }

    #[test]
    fn scaling_is_bounded_and_a_refused_count_changes_nothing() {
        let mut rack = crate::seed::seeded(1);
        assert!(scale(&mut rack, MAX_SERVICE_COUNT).is_ok());
        assert_eq!(web_processes(&rack), MAX_SERVICE_COUNT as usize);
        assert!(scale(&mut rack, 3).is_ok());
        assert_eq!(web_processes(&rack), 3);
        for absurd in [MAX_SERVICE_COUNT + 1, 99_999_999_999, i64::MAX, -1] {
            assert!(scale(&mut rack, absurd).is_err(), "{absurd}");
            assert_eq!(web_processes(&rack), 3, "{absurd}");
        }
    }
}
