//! The seeded rack: apps `web`, `api` and `worker` with services, running
//! processes, two builds and three releases each (the last one promoted), env
//! with secret-looking values, resources, instances and a log history.

use std::collections::BTreeMap;

use crate::env::{env_diff, render_env};
use crate::model::{Build, Instance, Process, Release, Resource, Service, ServicePort, System};
use crate::state::{AppState, BuildEntry, Rack, ago, new_service_process};
use crate::time::Timestamp;

/// The rack's name (`GET /system`).
pub const RACK_NAME: &str = "mock";
/// The rack's router domain.
pub const RACK_DOMAIN: &str = "mock.rack.test";
/// The rack's version (newer than any CLI compatibility cut-off).
pub const RACK_VERSION: &str = "3.24.6";

struct SeedService {
    name: &'static str,
    count: i64,
    cpu: i64,
    memory: i64,
    port: Option<i64>,
    command: Option<&'static str>,
}

struct SeedApp {
    name: &'static str,
    services: &'static [SeedService],
    /// Env of the three releases, oldest first.
    envs: [&'static [(&'static str, &'static str)]; 3],
    resources: &'static [(&'static str, &'static str, &'static str)],
    descriptions: [&'static str; 2],
}

const WEB_ENV_1: &[(&str, &str)] = &[
    (
        "DATABASE_URL",
        "postgres://web:s3cr3t-web-db-pass@db.internal:5432/web_production",
    ),
    ("RAILS_ENV", "production"),
    ("RAILS_LOG_TO_STDOUT", "true"),
    (
        "SECRET_KEY_BASE",
        "9c1f4e2a7b3d8c6e5f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8",
    ),
];
const WEB_ENV_2: &[(&str, &str)] = &[
    (
        "DATABASE_URL",
        "postgres://web:s3cr3t-web-db-pass@db.internal:5432/web_production",
    ),
    ("RAILS_ENV", "production"),
    ("RAILS_LOG_TO_STDOUT", "true"),
    (
        "REDIS_URL",
        "redis://:r3dis-cache-pass@cache.internal:6379/0",
    ),
    (
        "SECRET_KEY_BASE",
        "9c1f4e2a7b3d8c6e5f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8",
    ),
    ("WEB_CONCURRENCY", "2"),
];
const WEB_ENV_3: &[(&str, &str)] = &[
    (
        "DATABASE_URL",
        "postgres://web:s3cr3t-web-db-pass@db.internal:5432/web_production",
    ),
    ("RAILS_ENV", "production"),
    ("RAILS_LOG_TO_STDOUT", "true"),
    (
        "REDIS_URL",
        "redis://:r3dis-cache-pass@cache.internal:6379/0",
    ),
    (
        "SECRET_KEY_BASE",
        "9c1f4e2a7b3d8c6e5f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8",
    ),
    ("STRIPE_API_KEY", "sk_mock_51HcMockKeyNotReal00000000000000"),
    ("WEB_CONCURRENCY", "2"),
];

const API_ENV_1: &[(&str, &str)] = &[
    (
        "DATABASE_URL",
        "postgres://api:s3cr3t-api-db-pass@db.internal:5432/api",
    ),
    ("JWT_SIGNING_SECRET", "mock-jwt-signing-secret-4f8b2c9d1e7a"),
    ("LOG_LEVEL", "info"),
    ("NODE_ENV", "production"),
];
const API_ENV_2: &[(&str, &str)] = &[
    (
        "DATABASE_URL",
        "postgres://api:s3cr3t-api-db-pass@db.internal:5432/api",
    ),
    ("JWT_SIGNING_SECRET", "mock-jwt-signing-secret-4f8b2c9d1e7a"),
    ("LOG_LEVEL", "info"),
    ("NODE_ENV", "production"),
    (
        "SENTRY_DSN",
        "https://mockpublickey0123@sentry.example.test/42",
    ),
];
const API_ENV_3: &[(&str, &str)] = &[
    (
        "DATABASE_URL",
        "postgres://api:s3cr3t-api-db-pass@db.internal:5432/api",
    ),
    ("GITHUB_WEBHOOK_SECRET", "whsec_mock_7d3f9a1c5e2b8d4f"),
    ("JWT_SIGNING_SECRET", "mock-jwt-signing-secret-4f8b2c9d1e7a"),
    ("LOG_LEVEL", "debug"),
    ("NODE_ENV", "production"),
    (
        "SENTRY_DSN",
        "https://mockpublickey0123@sentry.example.test/42",
    ),
];

const WORKER_ENV_1: &[(&str, &str)] = &[
    (
        "AMQP_URL",
        "amqp://worker:s3cr3t-amqp-pass@mq.internal:5672/jobs",
    ),
    (
        "DATABASE_URL",
        "postgres://worker:s3cr3t-worker-db-pass@db.internal:5432/worker",
    ),
    ("RAILS_ENV", "production"),
    ("WORKER_CONCURRENCY", "5"),
];
const WORKER_ENV_2: &[(&str, &str)] = &[
    (
        "AMQP_URL",
        "amqp://worker:s3cr3t-amqp-pass@mq.internal:5672/jobs",
    ),
    (
        "DATABASE_URL",
        "postgres://worker:s3cr3t-worker-db-pass@db.internal:5432/worker",
    ),
    ("RAILS_ENV", "production"),
    ("WORKER_CONCURRENCY", "10"),
];
const WORKER_ENV_3: &[(&str, &str)] = &[
    (
        "AMQP_URL",
        "amqp://worker:s3cr3t-amqp-pass@mq.internal:5672/jobs",
    ),
    (
        "DATABASE_URL",
        "postgres://worker:s3cr3t-worker-db-pass@db.internal:5432/worker",
    ),
    ("MAILER_API_TOKEN", "mock-mailer-token-2b7e151628aed2a6"),
    ("RAILS_ENV", "production"),
    ("WORKER_CONCURRENCY", "10"),
];

const APPS: &[SeedApp] = &[
    SeedApp {
        name: "web",
        services: &[
            SeedService {
                name: "web",
                count: 2,
                cpu: 256,
                memory: 512,
                port: Some(3000),
                command: None,
            },
            SeedService {
                name: "worker",
                count: 1,
                cpu: 256,
                memory: 1024,
                port: None,
                command: Some("bundle exec sidekiq"),
            },
        ],
        envs: [WEB_ENV_1, WEB_ENV_2, WEB_ENV_3],
        resources: &[
            (
                "database",
                "postgres",
                "postgres://web:s3cr3t-web-db-pass@db.internal:5432/web_production",
            ),
            (
                "cache",
                "redis",
                "redis://:r3dis-cache-pass@cache.internal:6379/0",
            ),
        ],
        descriptions: [
            "build 1a2b3c4d5e Initial import",
            "build 6f7a8b9c0d Add background jobs",
        ],
    },
    SeedApp {
        name: "api",
        services: &[SeedService {
            name: "api",
            count: 2,
            cpu: 512,
            memory: 1024,
            port: Some(8080),
            command: None,
        }],
        envs: [API_ENV_1, API_ENV_2, API_ENV_3],
        resources: &[(
            "database",
            "postgres",
            "postgres://api:s3cr3t-api-db-pass@db.internal:5432/api",
        )],
        descriptions: [
            "build 0a1b2c3d4e API skeleton",
            "build 5f6e7d8c9b Add error reporting",
        ],
    },
    SeedApp {
        name: "worker",
        services: &[
            SeedService {
                name: "worker",
                count: 3,
                cpu: 256,
                memory: 1024,
                port: None,
                command: Some("bin/worker"),
            },
            SeedService {
                name: "scheduler",
                count: 1,
                cpu: 128,
                memory: 256,
                port: None,
                command: Some("bin/scheduler"),
            },
        ],
        envs: [WORKER_ENV_1, WORKER_ENV_2, WORKER_ENV_3],
        resources: &[(
            "database",
            "postgres",
            "postgres://worker:s3cr3t-worker-db-pass@db.internal:5432/worker",
        )],
        descriptions: [
            "build 2c3d4e5f6a Worker scaffold",
            "build 7b8c9d0e1f Raise concurrency",
        ],
    },
];

fn manifest_for(services: &[SeedService]) -> String {
    let mut m = String::from("services:\n");
    for s in services {
        m.push_str(&format!("  {}:\n    build: .\n", s.name));
        if let Some(c) = s.command {
            m.push_str(&format!("    command: {c}\n"));
        }
        if let Some(p) = s.port {
            m.push_str(&format!("    port: {p}\n"));
        }
        m.push_str(&format!(
            "    scale:\n      count: {}\n      cpu: {}\n      memory: {}\n",
            s.count, s.cpu, s.memory
        ));
    }
    m
}

/// Build output for `build` of `app` (the final `Release:` line is added when
/// the release exists).
pub fn build_script(app: &str, build: &str, services: &[String]) -> Vec<String> {
    let registry = format!("registry.{RACK_DOMAIN}");
    let mut lines = vec![
        format!("Authenticating {registry}: Login Succeeded"),
        "Building: .".to_string(),
        "Step 1/5 : FROM ruby:3.3-slim".to_string(),
        " ---> 4a8f6b0e2d1c".to_string(),
        "Step 2/5 : WORKDIR /app".to_string(),
        "Step 3/5 : COPY . .".to_string(),
        "Step 4/5 : RUN bundle install --jobs 4 --without development test".to_string(),
        "Bundle complete! 42 Gemfile dependencies, 97 gems now installed.".to_string(),
        "Step 5/5 : CMD [\"bin/start\"]".to_string(),
        "Successfully built 9c2d7e1f0a3b".to_string(),
    ];
    for s in services {
        lines.push(format!("Pushing: {registry}/{app}:{s}.{build}"));
    }
    lines.push(format!("Build: {build}"));
    lines
}

fn log_messages(service: &str) -> &'static [&'static str] {
    match service {
        "web" => &[
            "Puma starting in cluster mode...",
            "* Listening on http://0.0.0.0:3000",
            "Started GET \"/\" for 10.0.1.5",
            "Completed 200 OK in 12ms (Views: 8.1ms | ActiveRecord: 2.3ms)",
            "Started POST \"/orders\" for 10.0.2.17",
            "Completed 201 Created in 48ms (ActiveRecord: 11.0ms)",
        ],
        "worker" => &[
            "Booted Rails 7.1.3 application in production environment",
            "worker started: concurrency=10 queues=default,mailers",
            "ReportJob JID-0f3a2b start",
            "ReportJob JID-0f3a2b done: 1.204 sec",
            "MailerJob JID-9e8d7c done: 0.088 sec",
        ],
        "scheduler" => &[
            "scheduler started",
            "enqueued NightlyReportJob",
            "scheduler tick: 3 jobs enqueued",
        ],
        _ => &[
            "api listening on :8080",
            "GET /v1/health 200 1ms",
            "GET /v1/users/42 200 9ms",
            "POST /v1/sessions 201 31ms",
            "GET /v1/items?page=2 200 14ms",
        ],
    }
}

/// A synthetic log message for a following client (`n` counts ticks).
pub fn heartbeat_message(service: &str, has_port: bool, n: u64) -> String {
    if has_port {
        format!("GET /health 200 2ms heartbeat={n}")
    } else {
        format!("{service} heartbeat={n} jobs_processed={}", n * 3)
    }
}

fn system() -> System {
    System {
        count: 3,
        domain: RACK_DOMAIN.into(),
        name: RACK_NAME.into(),
        outputs: BTreeMap::new(),
        parameters: [
            ("build_node_enabled", "false"),
            ("high_availability", "true"),
            ("node_type", "t3.large"),
            ("region", "us-east-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        provider: "aws".into(),
        rack_domain: format!("api.{RACK_DOMAIN}"),
        router_internal: format!("router-internal.{RACK_DOMAIN}"),
        region: "us-east-1".into(),
        status: "running".into(),
        kind: "terraform".into(),
        version: RACK_VERSION.into(),
    }
}

/// The seeded rack.
pub fn seeded(seed: u64) -> Rack {
    let mut rack = Rack::empty(seed, system());
    let now = rack.now();

    for (i, (a, b)) in [(21u8, 4u8), (22, 17), (23, 9)].into_iter().enumerate() {
        rack.instances.push(Instance {
            agent: true,
            cpu: 0.12 + i as f64 * 0.05,
            cpu_capacity: 2.0,
            cpu_allocatable: 1.93,
            gpu_capacity: 0,
            gpu_allocatable: 0,
            id: format!("ip-10-0-{}-{}.ec2.internal", i + 1, a),
            memory: 0.35 + i as f64 * 0.04,
            memory_capacity: 7_982.0,
            memory_allocatable: 7_348.0,
            private_ip: format!("10.0.{}.{}", i + 1, a),
            processes: i64::from(b),
            public_ip: String::new(),
            status: "running".into(),
            started: ago(now, 5 * 86_400 + i as u64 * 3_600),
        });
    }

    for spec in APPS {
        seed_app(&mut rack, spec, now);
    }

    for (i, name) in ["api", "api", "atom", "router", "resolver"]
        .into_iter()
        .enumerate()
    {
        let hash = rack.ids.replicaset_hash();
        let suffix = rack.ids.pod_suffix();
        let inst = &rack.instances[i % rack.instances.len()];
        rack.system_processes.push(Process {
            id: format!("{name}-{hash}-{suffix}"),
            app: RACK_NAME.into(),
            command: String::new(),
            cpu: 1.5,
            gpu: 0,
            host: inst.private_ip.clone(),
            image: format!("convox/convox:{RACK_VERSION}"),
            instance: inst.id.clone(),
            memory: 96.0,
            name: name.into(),
            ports: Vec::new(),
            release: RACK_VERSION.into(),
            started: ago(now, 10 * 86_400),
            status: "running".into(),
            service: String::new(),
        });
    }

    for (version, days) in [("3.24.4", 90u64), ("3.24.5", 40), (RACK_VERSION, 10)] {
        rack.system_releases.push(Release {
            id: version.into(),
            app: RACK_NAME.into(),
            build: String::new(),
            env: String::new(),
            manifest: String::new(),
            description: String::new(),
            created: ago(now, days * 86_400),
        });
    }

    rack.system_resources.push(Resource {
        name: "syslog".into(),
        parameters: [(
            "Format",
            "<22>1 {DATE} {GROUP} {SERVICE} {CONTAINER} - - {MESSAGE}",
        )]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        status: "running".into(),
        kind: "syslog".into(),
        url: "tcp+tls://logs.example.test:12345".into(),
        apps: rack
            .apps
            .get("web")
            .map(|a| vec![a.app.clone()])
            .unwrap_or_default(),
    });

    let system_lines = [
        ("system/k8s/api", "ns=api at=SystemGet status=200"),
        ("system/k8s/atom", "ns=atom at=watch state=Running"),
        (
            "system/k8s/router",
            "ns=router at=request host=web.web.mock.rack.test status=200",
        ),
        ("system/k8s/api", "ns=api at=AppList status=200"),
        (
            "system/k8s/resolver",
            "ns=resolver at=resolve name=db.internal",
        ),
        ("system/k8s/api", "ns=api at=ProcessList app=web status=200"),
    ];
    for (i, (stream, msg)) in system_lines.iter().enumerate() {
        rack.log_system(ago(now, 300 - i as u64 * 45), stream, msg);
    }
    rack
}

fn seed_app(rack: &mut Rack, spec: &SeedApp, now: Timestamp) {
    let mut a = AppState::new(spec.name, RACK_DOMAIN);
    let manifest = manifest_for(spec.services);
    let service_names: Vec<String> = spec.services.iter().map(|s| s.name.to_string()).collect();

    for s in spec.services {
        a.services.push(Service {
            count: s.count,
            cpu: s.cpu,
            domain: s
                .port
                .map(|_| format!("{}.{}.{RACK_DOMAIN}", s.name, spec.name))
                .unwrap_or_default(),
            gpu: 0,
            gpu_vendor: String::new(),
            memory: s.memory,
            name: s.name.into(),
            nlb: Vec::new(),
            ports: s
                .port
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

    let b_ids = [rack.ids.build_id(), rack.ids.build_id()];
    let r_ids = [
        rack.ids.release_id(),
        rack.ids.release_id(),
        rack.ids.release_id(),
    ];
    let build_ages = [3 * 86_400u64, 86_400];
    let git_shas = [rack.ids.hex(40), rack.ids.hex(40)];

    for i in 0..2 {
        let started = ago(now, build_ages[i]);
        let mut log_lines = build_script(spec.name, &b_ids[i], &service_names);
        log_lines.push(format!("Release: {}", r_ids[i]));
        a.builds.push(BuildEntry {
            build: Build {
                id: b_ids[i].clone(),
                app: spec.name.into(),
                description: spec.descriptions[i].into(),
                entrypoint: String::new(),
                git_sha: git_shas[i].clone(),
                logs: String::new(),
                manifest: manifest.clone(),
                process: format!(
                    "build-{}-{}",
                    b_ids[i].to_lowercase(),
                    rack.ids.pod_suffix()
                ),
                release: r_ids[i].clone(),
                reason: String::new(),
                repository: String::new(),
                status: "complete".into(),
                started,
                ended: ago(now, build_ages[i] - 95),
            },
            log_lines,
        });
    }

    let release_ages = [3 * 86_400 - 100, 86_400 - 100, 7_200u64];
    let release_builds = [&b_ids[0], &b_ids[1], &b_ids[1]];
    let mut prev_env = String::new();
    for i in 0..3 {
        let env = render_env(spec.envs[i].iter().copied());
        let description = if i < 2 {
            spec.descriptions[i].to_string()
        } else {
            format!("env {}", env_diff(&prev_env, &env))
        };
        a.releases.push(Release {
            id: r_ids[i].clone(),
            app: spec.name.into(),
            build: release_builds[i].clone(),
            env: env.clone(),
            manifest: manifest.clone(),
            description,
            created: ago(now, release_ages[i]),
        });
        prev_env = env;
    }
    a.app.release = r_ids[2].clone();

    for (name, kind, url) in spec.resources {
        a.resources.push(Resource {
            name: (*name).into(),
            parameters: BTreeMap::new(),
            status: "running".into(),
            kind: (*kind).into(),
            url: (*url).into(),
            apps: Vec::new(),
        });
    }

    let started = ago(now, 7_100);
    for idx in 0..a.services.len() {
        let hash = rack.ids.replicaset_hash();
        for _ in 0..a.services[idx].count {
            let mut p = new_service_process(
                &mut rack.ids,
                &rack.instances,
                &a,
                idx,
                &hash,
                &r_ids[2],
                started,
            );
            if let Some(cmd) = spec.services[idx].command {
                p.process.command = cmd.to_string();
            }
            a.processes.push(p);
        }
    }

    let procs: Vec<(String, String)> = a
        .processes
        .iter()
        .map(|p| (p.process.name.clone(), p.process.id.clone()))
        .collect();
    rack.apps.insert(spec.name.to_string(), a);

    // 24 lines over the last ten minutes; the newest few fall inside the
    // default `since` window of two minutes.
    for i in 0..24u64 {
        let (service, pid) = &procs[(i as usize) % procs.len()];
        let msgs = log_messages(service);
        let msg = msgs[(i as usize / procs.len()) % msgs.len()];
        let ts = ago(now, (24 - i) * 25);
        rack.log_app(spec.name, ts, &format!("service/{service}/{pid}"), msg);
    }
}
