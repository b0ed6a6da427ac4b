//! `deploy`: package the directory (honouring `.dockerignore`), upload it as an object, build
//! it, stream the build's output, then promote the release.

use std::time::Duration;

use convox_api::client::{BuildCreateOptions, Client, LogTarget, LogsOptions, Object};
use rand::RngCore;

use super::{app_name, logs, releases, wait};
use crate::cli::DeployArgs;
use crate::context::Ctx;
use crate::error::{CliError, CliResult};
use crate::output;
use crate::tarball;

/// `deploy`: package, upload, build (its output streamed), promote.
pub async fn run(ctx: &Ctx, args: DeployArgs) -> CliResult<i32> {
    let app = app_name(&args.app)?;
    let package = package(&args).await?;
    if args.dry_run {
        list_files(&package)?;
        return Ok(0);
    }
    let client = ctx.client()?;
    let object = upload(&client, &app, &package).await?;
    let release = build(&client, &app, &object.url, &args).await?;
    if args.no_promote {
        output::write_stdout(&format!(
            "Release {release} is ready; promote it with `rack-gateway releases promote \
             {release} -a {app}`\n"
        ))?;
        return Ok(0);
    }
    releases::promote(&client, &app, &release, args.force, args.wait).await?;
    Ok(0)
}

/// Packages `args.dir`, saying what was left out, and checks that the manifest is in it.
async fn package(args: &DeployArgs) -> CliResult<tarball::Package> {
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
    Ok(package)
}

/// `--dry-run`: what would be uploaded, one name per line (a name's own line breaks escaped).
fn list_files(package: &tarball::Package) -> CliResult<()> {
    for f in &package.files {
        let shown = f
            .replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('\r', "\\r");
        output::write_stdout(&format!("{shown}\n"))?;
    }
    Ok(())
}

/// Uploads the package as a temporary object of `app`, with a progress bar.
async fn upload(client: &Client, app: &str, package: &tarball::Package) -> CliResult<Object> {
    let key = format!("tmp/{}.tgz", random_hex(16));
    output::step("Uploading source")?;
    let (body, bar) = crate::upload::body_with_progress(&package.file, package.size)?;
    let object = unless_stalled(
        client.store_object(app, &key, body),
        &bar,
        convox_api::client::ANSWER_TIMEOUT,
    )
    .await;
    bar.finish_and_clear();
    let object = object?;
    output::ok(None)?;
    Ok(object)
}

/// Builds the uploaded `object_url`, streaming the build's output, and waits for its end: the
/// release it made, or why there is none.
async fn build(
    client: &Client,
    app: &str,
    object_url: &str,
    args: &DeployArgs,
) -> CliResult<String> {
    output::step("Starting build")?;
    let opts = BuildCreateOptions {
        description: args.description.clone(),
        manifest: args.manifest.clone(),
        no_cache: args.no_cache,
        git_sha: args.git_sha.clone().or_else(|| super::git_head(&args.dir)),
        ..BuildCreateOptions::default()
    };
    let build = client.create_build(app, object_url, &opts).await?;
    output::ok(Some(&build.id))?;

    let target = LogTarget::Build {
        app: app.to_string(),
        id: build.id.clone(),
    };
    let stream = client.logs(&target, &LogsOptions::default()).await?;
    logs::print_stream(stream).await?;

    let build = wait::until(
        &format!("build {} to finish", build.id),
        Duration::from_secs(3600),
        || async {
            let b = client.build(app, &build.id).await?;
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
    Ok(build.release)
}

/// `upload`, given up once nothing has moved for `stall`: no byte of the package taken, and no
/// answer since the last one. An upload may take as long as it keeps moving (a large package
/// on a slow link); a gateway that stopped answering held `deploy` — a CI job — for ever.
async fn unless_stalled<T>(
    upload: impl std::future::Future<Output = Result<T, convox_api::client::ClientError>>,
    bar: &indicatif::ProgressBar,
    stall: Duration,
) -> CliResult<T> {
    let mut tick = tokio::time::interval(Duration::from_secs(1).min(stall));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut seen, mut moved) = (bar.position(), std::time::Instant::now());
    tokio::pin!(upload);
    loop {
        tokio::select! {
            done = &mut upload => return done.map_err(CliError::from),
            _ = tick.tick() => {
                if bar.position() != seen {
                    (seen, moved) = (bar.position(), std::time::Instant::now());
                } else if moved.elapsed() >= stall {
                    return Err(CliError::Failed(format!(
                        "the upload stalled: nothing moved for {} s ({} of {} bytes sent, no \
                         answer); nothing was built",
                        stall.as_secs(),
                        seen,
                        bar.length().unwrap_or(0)
                    )));
                }
            }
        }
    }
}

/// The manifest the rack builds from unless `--manifest` names another.
const DEFAULT_MANIFEST: &str = "convox.yml";

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_upload_is_given_up_only_when_nothing_moves() {
        let stall = Duration::from_millis(300);
        // Nothing moves and no answer comes: given up after the stall.
        let bar = indicatif::ProgressBar::hidden();
        bar.set_length(100);
        let never = std::future::pending::<Result<(), convox_api::client::ClientError>>();
        let started = std::time::Instant::now();
        let e = unless_stalled(never, &bar, stall)
            .await
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("the upload stalled")),
            "{e:?}"
        );
        assert!(started.elapsed() >= stall);
        // Bytes keep moving for longer than the stall: not given up.
        let bar = indicatif::ProgressBar::hidden();
        let moving = bar.clone();
        let slow = async move {
            for _ in 0..8 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                moving.inc(1);
            }
            Ok::<_, convox_api::client::ClientError>(7)
        };
        assert_eq!(unless_stalled(slow, &bar, stall).await.ok(), Some(7));
    }
}
