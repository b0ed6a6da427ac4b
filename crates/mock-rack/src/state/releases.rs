//! Releases and builds: env changes, promotion (and so rollback), builds.

use super::{AppState, BuildEntry, BuildUpdate, Rack, ReleaseCreate};
use crate::env::{default_manifest, env_diff, manifest_services};
use crate::error::ApiResult;
use crate::model::{Build, Release, Service, ServicePort};
use crate::time::Timestamp;

impl Rack {
    /// `POST /apps/{app}/releases`: forks the parent (or latest) release.
    pub fn create_release(&mut self, app: &str, opts: ReleaseCreate) -> ApiResult<Release> {
        let id = self.ids.release_id();
        let ts = self.now();
        let a = self.app_mut(app)?;
        let parent = match opts.parent_release.as_deref() {
            Some(p) if !p.is_empty() => Some(a.release(p)?.clone()),
            _ => a.latest_release().cloned(),
        };
        let mut r = Release {
            id,
            app: app.to_string(),
            build: parent.as_ref().map(|p| p.build.clone()).unwrap_or_default(),
            env: parent.as_ref().map(|p| p.env.clone()).unwrap_or_default(),
            manifest: String::new(),
            description: String::new(),
            created: ts,
        };
        if let Some(b) = opts.build {
            r.build = b;
        }
        if !r.build.is_empty() {
            let b = &a.build(&r.build)?.build;
            r.description = b.description.clone();
            r.manifest = b.manifest.clone();
        }
        if let Some(env) = opts.env {
            let desc = env_diff(&r.env, &env);
            if !desc.is_empty() {
                r.description = format!("env {desc}");
            }
            r.env = env;
        }
        if let Some(d) = opts.description {
            r.description = d;
        }
        a.releases.push(r.clone());
        Ok(r)
    }

    /// `POST /apps/{app}/releases/{id}/promote`: makes `id` the app's release
    /// and rolls every service onto it.
    pub fn promote_release(&mut self, app: &str, id: &str) -> ApiResult<()> {
        let release = self.app(app)?.release(id)?.clone();
        let ts = self.now();
        {
            let a = self.app_mut(app)?;
            ensure_services_from_manifest(a, &release.manifest);
            a.app.release = id.to_string();
        }
        let domain = self.system.domain.clone();
        if let Ok(a) = self.app_mut(app) {
            for s in &mut a.services {
                if s.domain.is_empty() && !s.ports.is_empty() {
                    s.domain = format!("{}.{}.{}", s.name, app, domain);
                }
            }
        }
        let services: Vec<String> = self
            .app(app)?
            .services
            .iter()
            .map(|s| s.name.clone())
            .collect();
        for s in &services {
            self.redeploy_service(app, s, id, ts)?;
        }
        self.log_app(
            app,
            ts,
            "system/k8s/atom/app",
            &format!("Status: Running => Updating release={id}"),
        );
        for s in &services {
            self.log_app(
                app,
                ts,
                &format!("system/k8s/{s}"),
                &format!("Scaled up replica set {s} to new release {id}"),
            );
        }
        self.log_app(
            app,
            ts,
            "system/k8s/atom/app",
            &format!("Status: Updating => Running release={id}"),
        );
        self.log_system(
            ts,
            "system/k8s/api",
            &format!("ns=api at=ReleasePromote app={app} id={id}"),
        );
        Ok(())
    }

    /// `POST /apps/{app}/builds`: records a new build (running unless external).
    pub fn create_build(
        &mut self,
        app: &str,
        description: String,
        git_sha: String,
        external: bool,
    ) -> ApiResult<Build> {
        let id = self.ids.build_id();
        let proc_suffix = self.ids.pod_suffix();
        let ts = self.now();
        let domain = self.system.domain.clone();
        let a = self.app_mut(app)?;
        let manifest = a
            .latest_release()
            .map(|r| r.manifest.clone())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| default_manifest().to_string());
        let b = Build {
            id: id.clone(),
            app: app.to_string(),
            description,
            entrypoint: String::new(),
            git_sha,
            logs: String::new(),
            manifest,
            process: if external {
                String::new()
            } else {
                format!("build-{}-{}", id.to_lowercase(), proc_suffix)
            },
            release: String::new(),
            reason: String::new(),
            repository: if external {
                format!("https://convox:****@api.{domain}/{app}")
            } else {
                String::new()
            },
            status: if external {
                "created".into()
            } else {
                "running".into()
            },
            started: ts,
            ended: Timestamp::ZERO,
        };
        a.builds.push(BuildEntry {
            build: b.clone(),
            log_lines: Vec::new(),
        });
        Ok(b)
    }

    /// Appends a line to a build's output.
    pub fn build_log(&mut self, app: &str, id: &str, line: &str) -> ApiResult<()> {
        self.app_mut(app)?
            .build_mut(id)?
            .log_lines
            .push(line.to_string());
        Ok(())
    }

    /// Marks a build failed with `reason`.
    pub fn fail_build(&mut self, app: &str, id: &str, reason: &str) -> ApiResult<()> {
        let ts = self.now();
        let b = self.app_mut(app)?.build_mut(id)?;
        b.log_lines.push(format!("ERROR: {reason}"));
        b.build.status = "failed".into();
        b.build.reason = reason.to_string();
        b.build.ended = ts;
        Ok(())
    }

    /// Completes a build: creates its release and marks it complete.
    pub fn complete_build(&mut self, app: &str, id: &str) -> ApiResult<Release> {
        let r = self.create_release(
            app,
            ReleaseCreate {
                build: Some(id.to_string()),
                ..Default::default()
            },
        )?;
        let ts = self.now();
        let b = self.app_mut(app)?.build_mut(id)?;
        b.build.release = r.id.clone();
        b.build.status = "complete".into();
        b.build.ended = ts;
        Ok(r)
    }

    /// `PUT /apps/{app}/builds/{id}`.
    pub fn update_build(&mut self, app: &str, id: &str, u: BuildUpdate) -> ApiResult<Build> {
        let b = &mut self.app_mut(app)?.build_mut(id)?.build;
        if let Some(v) = u.ended {
            b.ended = v;
        }
        if let Some(v) = u.entrypoint {
            b.entrypoint = v;
        }
        if let Some(v) = u.logs {
            b.logs = v;
        }
        if let Some(v) = u.manifest {
            b.manifest = v;
        }
        if let Some(v) = u.release {
            b.release = v;
        }
        if let Some(v) = u.started {
            b.started = v;
        }
        if let Some(v) = u.status {
            b.status = v;
        }
        Ok(b.clone())
    }
}

fn ensure_services_from_manifest(a: &mut AppState, manifest: &str) {
    for (name, port) in manifest_services(manifest) {
        if a.services.iter().any(|s| s.name == name) {
            continue;
        }
        a.services.push(Service {
            count: 1,
            cpu: 256,
            domain: String::new(),
            gpu: 0,
            gpu_vendor: String::new(),
            memory: 512,
            name,
            nlb: Vec::new(),
            ports: port
                .map(|p| {
                    vec![ServicePort {
                        balancer: 443,
                        certificate: String::new(),
                        container: p,
                    }]
                })
                .unwrap_or_default(),
            min: None,
            max: None,
        });
    }
}
