//! `deploy`: package (honouring .dockerignore), upload, build, stream, promote.

use std::path::Path;

use crate::kit::{Dev, Home};

fn sample_app(dir: &Path) {
    let write = |p: &str, s: &str| {
        let path = dir.join(p);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::write(path, s).unwrap_or_else(|e| panic!("{e}"));
    };
    write(
        "Dockerfile",
        "FROM ruby:3.3-slim\nCOPY . /app\nCMD [\"bin/start\"]\n",
    );
    write(
        "convox.yml",
        "services:\n  web:\n    build: .\n    port: 3000\n",
    );
    write(".dockerignore", "# local only\nsecrets.env\ntmp\n");
    write("secrets.env", "DATABASE_PASSWORD=hunter2\n");
    write("tmp/cache.bin", "cache\n");
    write("app/main.rb", "puts 'hi'\n");
}

#[test]
fn deploy_builds_streams_and_promotes() {
    let dev = Dev::start();
    let home = Home::new();
    home.login(&dev, "dev", "deployer");
    let src = home.path().join("myapp");
    sample_app(&src);
    let dir = src.to_string_lossy().to_string();

    let listing = home.run(&["deploy", &dir, "-a", "web", "--dry-run"]).ok();
    let files: Vec<&str> = listing.lines().skip(1).collect();
    assert_eq!(
        files,
        [".dockerignore", "Dockerfile", "app/main.rb", "convox.yml"],
        "{listing}"
    );
    assert!(
        !listing.contains("secrets.env") && !listing.contains("tmp/"),
        "{listing}"
    );

    let before = home.run(&["apps", "info", "web", "--json"]).json()["release"].clone();
    let out = home
        .run(&["deploy", &dir, "-a", "web", "--wait", "-d", "cli test"])
        .ok();
    assert!(out.contains("Packaging source... OK, 4 files"), "{out}");
    assert!(out.contains("Uploading source... OK"), "{out}");
    assert!(out.contains("Starting build... OK, B"), "{out}");
    assert!(
        out.contains("Successfully built"),
        "build output streamed: {out}"
    );
    let release = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("Promoting ")
                .and_then(|r| r.strip_suffix("... OK"))
        })
        .unwrap_or_default()
        .to_string();
    assert!(release.starts_with('R'), "{out}");
    assert!(
        out.contains(&format!("Waiting for web to run {release}... OK")),
        "{out}"
    );
    let app = home.run(&["apps", "info", "web", "--json"]).json();
    assert_eq!(app["release"], release.as_str());
    assert_ne!(app["release"], before);
    let build = &home.run(&["builds", "-a", "web", "--json"]).json()[0];
    assert_eq!(build["status"], "complete");
    assert_eq!(build["release"], release.as_str());
    assert_eq!(build["description"], "cli test");

    // --no-promote builds a release and leaves the active one alone.
    let out = home
        .run(&["deploy", &dir, "-a", "web", "--no-promote"])
        .ok();
    assert!(
        out.contains("is ready; promote it with `rack-gateway releases promote R"),
        "{out}"
    );
    assert_eq!(
        home.run(&["apps", "info", "web", "--json"]).json()["release"],
        release.as_str()
    );

    // Viewers may not upload.
    let viewer = Home::new();
    viewer.login(&dev, "dev", "viewer");
    let err = viewer.run(&["deploy", &dir, "-a", "web"]).failed();
    assert!(
        err.contains("permission denied") && err.contains("your role: viewer"),
        "{err}"
    );
}

#[test]
fn deploy_never_ships_its_own_credentials_nor_reads_an_endless_dockerignore() {
    let dev = Dev::start();
    let home = Home::new();
    home.login(&dev, "dev", "deployer");
    // Deploying the directory that holds the CLI's config (a deploy from $HOME, a CI checkout
    // holding the config): the config, with its token, stays out of the package.
    std::fs::write(home.path().join("Dockerfile"), "FROM alpine\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = home.path().to_string_lossy().to_string();
    let out = home.run(&["deploy", &dir, "-a", "web", "--dry-run"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("OK, 1 file, "), "{out:?}");
    assert!(!out.stdout.contains("config.json"), "{out:?}");
    assert!(out.stdout.contains("Dockerfile"), "{out:?}");
    assert!(
        out.stderr
            .contains("WARNING: left out config/config.json: it is this CLI's own config file"),
        "{out:?}"
    );
    // No convox.yml: a dry run says so; a deploy stops before it uploads anything.
    assert!(
        out.stderr.contains("holds no convox.yml to build from"),
        "{out:?}"
    );
    let out = home.run(&["deploy", &dir, "-a", "web"]);
    assert!(
        out.code == 1
            && out.stderr.contains("holds no convox.yml to build from")
            && out.stderr.contains("--manifest"),
        "{out:?}"
    );
    assert!(
        !out.stdout.contains("Uploading") && !out.stderr.contains("Uploading"),
        "stopped before the upload: {out:?}"
    );
    std::fs::write(home.path().join("rack.yml"), "services: {}\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let out = home.run(&["deploy", &dir, "-a", "web", "-m", "rack.yml", "--dry-run"]);
    assert!(out.code == 0 && !out.stderr.contains("holds no"), "{out:?}");
    // A `.dockerignore` that never ends (a link to /dev/zero) is refused, not read forever.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("/dev/zero", home.path().join(".dockerignore"))
            .unwrap_or_else(|e| panic!("{e}"));
        let err = home
            .run(&["deploy", &dir, "-a", "web", "--dry-run"])
            .failed();
        assert!(err.contains(".dockerignore is not a regular file"), "{err}");
    }
}

#[test]
fn a_deploy_cut_short_leaves_no_package_behind() {
    use std::io::Read;
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let dev = Dev::start();
    let mut home = Home::new();
    home.login(&dev, "dev", "deployer");
    // A gateway that takes the connection and never answers: the CLI is mid-upload, with its
    // package written, when the test looks and then kills it.
    let stall = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = stall.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let mut config = home.config();
    config["racks"]["dev"]["gateway_url"] = format!("http://{addr}").into();
    home.write_config(&config);
    let tmp = home.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap_or_else(|e| panic!("{e}"));
    home.set_env("TMPDIR", &tmp.to_string_lossy());
    let src = home.path().join("myapp");
    sample_app(&src);
    let dir = src.to_string_lossy().to_string();

    let mut child = home
        .command(&["deploy", &dir, "-a", "web"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    stall
        .set_nonblocking(true)
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = loop {
        match stall.accept() {
            Ok((conn, _)) => break conn,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("the CLI never connected: {e}"),
        }
    };
    conn.set_nonblocking(false)
        .and_then(|()| conn.set_read_timeout(Some(Duration::from_secs(10))))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut first = [0u8; 64];
    let read = conn.read(&mut first).unwrap_or_else(|e| panic!("{e}"));
    assert!(read > 0, "the CLI sent nothing");

    let names = || -> Vec<String> {
        std::fs::read_dir(&tmp)
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    // The package is a file without a name: nothing to leave behind, however the CLI ends.
    assert_eq!(names(), Vec::<String>::new(), "while the CLI is uploading");
    child.kill().unwrap_or_else(|e| panic!("{e}"));
    let _ = child.wait();
    assert_eq!(names(), Vec::<String>::new(), "after the CLI was killed");
}
