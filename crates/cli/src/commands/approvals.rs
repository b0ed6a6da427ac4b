//! `deploy-approval`: CI asks for approval of a deploy of one commit (and can wait for the
//! decision); people list, show, approve and reject requests. The gateway lets the approved
//! deploy through for the credential that asked.

use std::time::{Duration, Instant};

use crate::cli::{DeployApprovalArgs, DeployApprovalCommand};
use crate::context::Ctx;
use crate::error::{CliError, CliResult};
use crate::gateway_api::{DeployRequest, GatewayApi, NewDeployRequest};
use crate::output::{self, Table};

/// How often `request --wait` asks for the decision.
const POLL_EVERY: Duration = Duration::from_secs(3);

/// Runs `deploy-approval …`.
pub async fn run(ctx: &Ctx, args: DeployApprovalArgs) -> CliResult<i32> {
    let (selected, api) = ctx.gateway("deploy approvals are a rack-gateway's")?;
    let token = selected.entry.token.as_str();
    match args.command {
        DeployApprovalCommand::Request {
            app,
            commit,
            message,
            ci_url,
            branch,
            wait,
            timeout,
        } => {
            let commit = match commit.or_else(|| super::git_head(std::path::Path::new("."))) {
                Some(commit) => commit,
                None => {
                    return Err(CliError::Usage(
                        "--commit: give the full commit id (this directory is not a git \
                         checkout to read it from)"
                            .into(),
                    ));
                }
            };
            let asked = NewDeployRequest {
                app: &app,
                git_commit: commit.trim(),
                message: message.as_deref(),
                ci_url: ci_url.as_deref(),
                branch: branch.as_deref(),
            };
            let request = api
                .request_deploy(token, &asked)
                .await
                .map_err(CliError::Client)?;
            if !wait {
                if ctx.json {
                    output::print_json(&request)?;
                } else {
                    output::write_stdout(&format!("{}\n", summary(&request)))?;
                }
                return Ok(0);
            }
            if !ctx.json {
                // On stderr: stdout is the outcome alone.
                eprintln!(
                    "{}; waiting for a decision (rack-gateway deploy-approval approve {})",
                    summary(&request),
                    request.id
                );
            }
            let decided = wait_for_decision(&api, token, request, timeout).await?;
            if ctx.json {
                output::print_json(&decided)?;
            } else {
                output::write_stdout(&format!("{}\n", summary(&decided)))?;
            }
            Ok(if decided.status == "approved" { 0 } else { 1 })
        }
        DeployApprovalCommand::List { status } => {
            let requests = api
                .deploy_requests(token, status.as_deref())
                .await
                .map_err(CliError::Client)?;
            if ctx.json {
                output::print_json(&requests)?;
            } else {
                print_table(&requests)?;
            }
            Ok(0)
        }
        DeployApprovalCommand::Show { id } => {
            let request = api
                .deploy_request(token, id)
                .await
                .map_err(CliError::Client)?;
            if ctx.json {
                output::print_json(&request)?;
            } else {
                print_one(&request)?;
            }
            Ok(0)
        }
        DeployApprovalCommand::Approve { id, note, code } => {
            decide(&api, token, id, true, note.as_deref(), code).await
        }
        DeployApprovalCommand::Reject { id, note } => {
            decide(&api, token, id, false, note.as_deref(), None).await
        }
    }
}

async fn decide(
    api: &GatewayApi,
    token: &str,
    id: i64,
    approve: bool,
    note: Option<&str>,
    code: Option<String>,
) -> CliResult<i32> {
    let decided = match api
        .decide_deploy(token, id, approve, note, code.as_deref())
        .await
    {
        // Asked for a code with the approval: ask the person, once.
        Err(convox_api::client::ClientError::Api { code: Some(c), .. })
            if c == "mfa_code_required" && code.is_none() =>
        {
            let code = super::mfa::ask_for_code(api, token).await?;
            api.decide_deploy(token, id, approve, note, Some(&code))
                .await
        }
        other => other,
    }
    .map_err(CliError::Client)?;
    output::write_stdout(&format!("{}\n", summary(&decided)))?;
    Ok(0)
}

/// Polls `request` until it is no longer pending, or `timeout` passes (then an error).
async fn wait_for_decision(
    api: &GatewayApi,
    token: &str,
    mut request: DeployRequest,
    timeout: Option<Duration>,
) -> CliResult<DeployRequest> {
    let started = Instant::now();
    while request.status == "pending" {
        if timeout.is_some_and(|t| started.elapsed() >= t) {
            return Err(CliError::Failed(format!(
                "deploy request {} is still pending after {}: nobody decided in time",
                request.id,
                humantime::format_duration(Duration::from_secs(started.elapsed().as_secs()))
            )));
        }
        tokio::time::sleep(POLL_EVERY).await;
        request = api
            .deploy_request(token, request.id)
            .await
            .map_err(CliError::Client)?;
    }
    Ok(request)
}

/// One line: the request and where it stands. The commit is shown whole, here and in the
/// table: a prefix is cheap to collide with for whoever can push a commit and ask for it.
fn summary(r: &DeployRequest) -> String {
    let head = format!(
        "Deploy request {} for {} at {}",
        r.id,
        output::printable(&r.app),
        output::printable(&r.git_commit)
    );
    let by = |who: &Option<String>| {
        who.as_deref()
            .map(|w| format!(" by {}", output::printable(w)))
            .unwrap_or_default()
    };
    let note = r
        .note
        .as_deref()
        .map(|n| format!(": {}", output::printable(n)))
        .unwrap_or_default();
    match r.status.as_str() {
        "pending" => format!(
            "{head}: pending (asked by {}, open until {})",
            output::printable(&r.requested_by),
            output::unix_ms(r.expires_at)
        ),
        "approved" => format!(
            "{head}: approved{}{note}; deploy before {}",
            by(&r.decided_by),
            output::unix_ms(r.expires_at)
        ),
        "rejected" => format!("{head}: rejected{}{note}", by(&r.decided_by)),
        "deployed" => format!(
            "{head}: deployed (release {})",
            output::printable(r.release.as_deref().unwrap_or("?"))
        ),
        other => format!("{head}: {}", output::printable(other)),
    }
}

fn print_table(requests: &[DeployRequest]) -> CliResult<()> {
    table(requests).print()
}

/// ID, APP, COMMIT, STATUS, ASKED BY, ASKED, DECIDED BY, MESSAGE.
fn table(requests: &[DeployRequest]) -> Table {
    let mut table = Table::new(&[
        "ID",
        "APP",
        "COMMIT",
        "STATUS",
        "ASKED BY",
        "ASKED",
        "DECIDED BY",
        "MESSAGE",
    ]);
    for r in requests {
        let first_line = r.message.lines().next().unwrap_or_default();
        table.row(vec![
            r.id.to_string(),
            output::printable(&r.app).into_owned(),
            output::printable(&r.git_commit).into_owned(),
            r.status.clone(),
            output::printable(&r.requested_by).into_owned(),
            output::unix_ms(r.created_at),
            output::printable(r.decided_by.as_deref().unwrap_or("-")).into_owned(),
            output::printable(first_line).into_owned(),
        ]);
    }
    table
}

fn print_one(r: &DeployRequest) -> CliResult<()> {
    let mut info = output::Info::new();
    let opt = |v: &Option<String>| output::printable(v.as_deref().unwrap_or("-")).into_owned();
    let when = |ms: Option<i64>| ms.map(output::unix_ms).unwrap_or_else(|| "-".into());
    info.add("Id", r.id.to_string())
        .add("App", output::printable(&r.app).into_owned())
        .add("Commit", r.git_commit.clone())
        .add("Status", r.status.clone())
        .add("Message", output::printable(&r.message).into_owned())
        .add("Branch", opt(&r.branch))
        .add("CI", opt(&r.ci_url))
        .add("Asked by", output::printable(&r.requested_by).into_owned())
        .add("Asked", output::unix_ms(r.created_at))
        .add("Until", output::unix_ms(r.expires_at))
        .add("Decided by", opt(&r.decided_by))
        .add("Decided", when(r.decided_at))
        .add("Note", opt(&r.note))
        .add("Deployed", when(r.deployed_at))
        .add("Release", opt(&r.release));
    info.print()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two commits that share their first 10 (or more) characters: one pushed by whoever
    /// holds a CI token to pass for the other, reviewed one. People approve what they see.
    #[test]
    fn the_whole_commit_is_shown() {
        let reviewed = "1f0e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6";
        let request = DeployRequest {
            id: 7,
            app: "web".into(),
            git_commit: reviewed.into(),
            status: "pending".into(),
            requested_by: "token:ci".into(),
            ..DeployRequest::default()
        };
        assert!(
            summary(&request).contains(reviewed),
            "{}",
            summary(&request)
        );
        let listed = table(std::slice::from_ref(&request)).render();
        assert!(listed.contains(reviewed), "{listed}");
        for status in ["approved", "rejected", "deployed", "expired"] {
            let decided = DeployRequest {
                status: status.into(),
                ..request.clone()
            };
            assert!(
                summary(&decided).contains(reviewed),
                "{}",
                summary(&decided)
            );
        }
    }
}
