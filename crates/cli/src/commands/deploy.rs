//! `deploy`: package the directory (honouring `.dockerignore`), upload it as an object, build
//! it, stream the build's output, then promote the release.

use std::time::Duration;

use convox_api::client::{BuildCreateOptions, LogTarget, LogsOptions};
use rand::RngCore;

use super::{app_name, logs, releases, wait};
use crate::cli::DeployArgs;
use crate::context::Ctx;
use crate::error::{CliError, CliResult};
use crate::output;
use crate::tarball;

/// `deploy`.
pub async fn run(ctx: &Ctx, args: DeployArgs) -> CliResult<i32> {
    let app = app_name(&args.app)?;
    output::step("Packaging source")?;
    let dir = args.dir.clone();
    let package = tokio::task::spawn_blocking(move || tarball::package(&dir))
        .await
        .map_err(|e| CliError::Failed(format!("packaging failed: {e}")))??;
    let count = package.files.len();
    output::ok(Some(&format!(
        "{count} file{}, {}",
        if count == 1 { "" } else { "s" },
        output::bytes(package.size)
    )))?;
    for left in &package.left_out {
        eprintln!(
            "WARNING: left out {}: {}",
            output::printable(&left.name),
            left.why
        );
    }
    // The rack builds from the manifest in the package: without it the build fails on the
    // rack, after the whole upload. Said before anything is sent.
    let manifest = args.manifest.as_deref().unwrap_or(DEFAULT_MANIFEST);
    let wanted = manifest.trim_start_matches("./");
    if !package.files.iter().any(|f| f == wanted) {
        let problem = format!(
            "{} holds no {} to build from{}: the rack would refuse the build after the upload \
             (a .dockerignore entry that leaves it out? another name: --manifest)",
            args.dir.display(),
            output::printable(manifest),
            if args.manifest.is_some() {
                ""
            } else {
                " (the default manifest)"
            }
        );
        if !args.dry_run {
            return Err(CliError::Usage(problem));
        }
        eprintln!("WARNING: {problem}");
    }
    if args.dry_run {
        for f in &package.files {
            // One name per line: a name's own line breaks are shown escaped.
            let shown = f
                .replace('\\', "\\\\")
                .replace('\n', "\\n")
                .replace('\r', "\\r");
            output::write_stdout(&format!("{shown}\n"))?;
        }
        return Ok(0);
    }

    let client = ctx.client()?;
    let key = format!("tmp/{}.tgz", random_hex(16));
    output::step("Uploading source")?;
    let (body, bar) = crate::upload::body_with_progress(&package.file, package.size)?;
    let object = client.store_object(&app, &key, body).await;
    bar.finish_and_clear();
    let object = object?;
    output::ok(None)?;

    output::step("Starting build")?;
    let opts = BuildCreateOptions {
        description: args.description.clone(),
        manifest: args.manifest.clone(),
        no_cache: args.no_cache,
        ..BuildCreateOptions::default()
    };
    let build = client.create_build(&app, &object.url, &opts).await?;
    output::ok(Some(&build.id))?;

    let stream = client
        .logs(
            &LogTarget::Build {
                app: app.clone(),
                id: build.id.clone(),
            },
            &LogsOptions::default(),
        )
        .await?;
    logs::print_stream(stream).await?;

    let build = wait::until(
        &format!("build {} to finish", build.id),
        Duration::from_secs(3600),
        || async {
            let b = client.build(&app, &build.id).await?;
            Ok(matches!(b.status.as_str(), "complete" | "failed").then_some(b))
        },
    )
    .await?;
    if build.status == "failed" {
        let reason = if build.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", build.reason)
        };
        return Err(CliError::Failed(format!(
            "build {} failed{reason}",
            build.id
        )));
    }
    if build.release.is_empty() {
        return Err(CliError::Failed(format!(
            "build {} finished without a release",
            build.id
        )));
    }
    if args.no_promote {
        output::write_stdout(&format!(
            "Release {} is ready; promote it with `rack-gateway releases promote {} -a {app}`\n",
            build.release, build.release
        ))?;
        return Ok(0);
    }
    releases::promote(&client, &app, &build.release, args.force, args.wait).await?;
    Ok(0)
}

/// The manifest the rack builds from unless `--manifest` names another.
const DEFAULT_MANIFEST: &str = "convox.yml";

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
