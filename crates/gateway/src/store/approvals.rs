//! Deploy approvals (`deploy_approvals`): a request for one commit of one app, its decision,
//! and the one promote it lets through. Every change of status is a single compare-and-set
//! statement, so two gateways (or two admins) cannot both decide one request, and one
//! approval cannot be spent twice.

use super::columns::Columns;
use super::{Store, StoreError, bounded};

/// A deploy approval as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRow {
    /// Row id, the handle for deciding it.
    pub id: i64,
    /// The Convox app.
    pub app: String,
    /// The full commit id asked for.
    pub git_commit: String,
    /// What CI said about it (the commit's subject, say).
    pub message: String,
    /// Where the pipeline runs, as CI gave it.
    pub ci_url: Option<String>,
    /// The branch, as CI gave it.
    pub branch: Option<String>,
    /// The API token that asked (the deploy is let through for it alone).
    pub requested_by_token_id: Option<i64>,
    /// The person who asked, or the token's owner.
    pub requested_by_user_id: Option<i64>,
    /// Who asked, as shown: an e-mail, or `token:<name>`.
    pub requested_by: String,
    /// `pending`, `approved`, `rejected` or `deployed`, as stored (see [`ApprovalRow::state`]).
    pub status: String,
    /// When asked (unix ms).
    pub created_at: i64,
    /// Pending: until when it can be decided; approved: until when the deploy may run.
    pub expires_at: i64,
    /// Who decided (an e-mail).
    pub decided_by: Option<String>,
    /// The user who decided.
    pub decided_by_user_id: Option<i64>,
    /// When decided (unix ms).
    pub decided_at: Option<i64>,
    /// What the person deciding wrote.
    pub note: Option<String>,
    /// When its promote went through (unix ms).
    pub deployed_at: Option<i64>,
    /// The release it promoted.
    pub release_id: Option<String>,
}

impl ApprovalRow {
    /// The status as of `now`: a pending or approved request past its time is `expired`.
    pub fn state(&self, now: i64) -> &str {
        match self.status.as_str() {
            "pending" | "approved" if self.expires_at <= now => "expired",
            other => other,
        }
    }
}

/// A new request for approval.
#[derive(Debug, Clone)]
pub struct NewApproval<'a> {
    /// The Convox app.
    pub app: &'a str,
    /// The full commit id.
    pub git_commit: &'a str,
    /// What CI says about it.
    pub message: &'a str,
    /// The pipeline's address.
    pub ci_url: Option<&'a str>,
    /// The branch.
    pub branch: Option<&'a str>,
    /// The asking API token.
    pub token_id: Option<i64>,
    /// The asking person (or the token's owner).
    pub user_id: Option<i64>,
    /// Who asked, as shown.
    pub requested_by: &'a str,
    /// Until when it can be decided (unix ms).
    pub expires_at: i64,
}

/// A decision on a pending request.
#[derive(Debug, Clone)]
pub struct Decision<'a> {
    /// Approve (`true`) or reject.
    pub approve: bool,
    /// Who decides, as shown.
    pub by: &'a str,
    /// The user deciding.
    pub by_user_id: i64,
    /// What they wrote.
    pub note: Option<&'a str>,
    /// Now (unix ms).
    pub now: i64,
    /// Approved: until when the deploy may run (unix ms).
    pub deploy_until: i64,
}

macro_rules! columns {
    () => {
        "id, app, git_commit, message, ci_url, branch, requested_by_token_id, \
         requested_by_user_id, requested_by, status, created_at, expires_at, decided_by, \
         decided_by_user_id, decided_at, note, deployed_at, release_id"
    };
}

fn from_row(row: &(impl Columns + ?Sized)) -> Result<ApprovalRow, StoreError> {
    Ok(ApprovalRow {
        id: row.int("id")?,
        app: row.text("app")?,
        git_commit: row.text("git_commit")?,
        message: row.text("message")?,
        ci_url: row.opt_text("ci_url")?,
        branch: row.opt_text("branch")?,
        requested_by_token_id: row.opt_int("requested_by_token_id")?,
        requested_by_user_id: row.opt_int("requested_by_user_id")?,
        requested_by: row.text("requested_by")?,
        status: row.text("status")?,
        created_at: row.int("created_at")?,
        expires_at: row.int("expires_at")?,
        decided_by: row.opt_text("decided_by")?,
        decided_by_user_id: row.opt_int("decided_by_user_id")?,
        decided_at: row.opt_int("decided_at")?,
        note: row.opt_text("note")?,
        deployed_at: row.opt_int("deployed_at")?,
        release_id: row.opt_text("release_id")?,
    })
}

/// Most requests one listing returns.
pub const APPROVALS_LISTED: i64 = 200;

impl Store {
    /// Stores a new pending request, unless the same credential already has one for this app
    /// and commit that is pending or approved and not expired at `now`: then that one (CI
    /// retries a step; it should not queue a second request for a person to decide). The
    /// second value says whether the row is new.
    pub async fn request_approval(
        &self,
        new: &NewApproval<'_>,
        now: i64,
    ) -> Result<(ApprovalRow, bool), StoreError> {
        bounded(self, async {
            let live = concat!(
                "SELECT ",
                columns!(),
                " FROM deploy_approvals WHERE app = $1 AND git_commit = $2 \
                 AND status IN ('pending', 'approved') AND expires_at > $3 \
                 AND requested_by_token_id IS NOT DISTINCT FROM $4 \
                 AND (requested_by_token_id IS NOT NULL OR requested_by_user_id = $5) \
                 ORDER BY id DESC LIMIT 1"
            );
            let found = sqlx::query(live)
                .bind(new.app)
                .bind(new.git_commit)
                .bind(now)
                .bind(new.token_id)
                .bind(new.user_id)
                .fetch_optional(&self.pool)
                .await?;
            if let Some(row) = found {
                return Ok((from_row(&row)?, false));
            }
            let sql = concat!(
                "INSERT INTO deploy_approvals (app, git_commit, message, ci_url, branch, \
                 requested_by_token_id, requested_by_user_id, requested_by, status, created_at, \
                 expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10) \
                 RETURNING ",
                columns!()
            );
            let row = sqlx::query(sql)
                .bind(new.app)
                .bind(new.git_commit)
                .bind(new.message)
                .bind(new.ci_url)
                .bind(new.branch)
                .bind(new.token_id)
                .bind(new.user_id)
                .bind(new.requested_by)
                .bind(now)
                .bind(new.expires_at)
                .fetch_one(&self.pool)
                .await?;
            Ok((from_row(&row)?, true))
        })
        .await
    }

    /// Request `id`.
    pub async fn approval(&self, id: i64) -> Result<Option<ApprovalRow>, StoreError> {
        bounded(self, async {
            let sql = concat!(
                "SELECT ",
                columns!(),
                " FROM deploy_approvals WHERE id = $1"
            );
            let row = sqlx::query(sql).bind(id).fetch_optional(&self.pool).await?;
            row.as_ref().map(from_row).transpose()
        })
        .await
    }

    /// The newest requests (at most [`APPROVALS_LISTED`]), newest first; only those asked by
    /// `mine` (a token id, or a user id with no token) when given.
    pub async fn list_approvals(
        &self,
        mine: Option<(Option<i64>, Option<i64>)>,
    ) -> Result<Vec<ApprovalRow>, StoreError> {
        bounded(self, async {
            let rows = match mine {
                None => {
                    let sql = concat!(
                        "SELECT ",
                        columns!(),
                        " FROM deploy_approvals ORDER BY id DESC LIMIT $1"
                    );
                    sqlx::query(sql)
                        .bind(APPROVALS_LISTED)
                        .fetch_all(&self.pool)
                        .await?
                }
                Some((token_id, user_id)) => {
                    let sql = concat!(
                        "SELECT ",
                        columns!(),
                        " FROM deploy_approvals WHERE requested_by_token_id IS NOT DISTINCT FROM $1 \
                         AND (requested_by_token_id IS NOT NULL OR requested_by_user_id = $2) \
                         ORDER BY id DESC LIMIT $3"
                    );
                    sqlx::query(sql)
                        .bind(token_id)
                        .bind(user_id)
                        .bind(APPROVALS_LISTED)
                        .fetch_all(&self.pool)
                        .await?
                }
            };
            rows.iter().map(from_row).collect()
        })
        .await
    }

    /// Decides request `id` if it is still pending and not expired at `decision.now`; `None`
    /// when it was not (decided meanwhile, expired, or no such request).
    pub async fn decide_approval(
        &self,
        id: i64,
        decision: &Decision<'_>,
    ) -> Result<Option<ApprovalRow>, StoreError> {
        bounded(self, async {
            let sql = concat!(
                "UPDATE deploy_approvals SET status = $1, decided_by = $2, \
                 decided_by_user_id = $3, decided_at = $4, note = $5, expires_at = $6 \
                 WHERE id = $7 AND status = 'pending' AND expires_at > $4 RETURNING ",
                columns!()
            );
            let row = sqlx::query(sql)
                .bind(if decision.approve {
                    "approved"
                } else {
                    "rejected"
                })
                .bind(decision.by)
                .bind(decision.by_user_id)
                .bind(decision.now)
                .bind(decision.note)
                .bind(if decision.approve {
                    decision.deploy_until
                } else {
                    decision.now
                })
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
            row.as_ref().map(from_row).transpose()
        })
        .await
    }

    /// The newest approval of a deploy of `app` that the credential (`token_id`, or
    /// `user_id` with no token) may run at `now`.
    pub async fn usable_approval(
        &self,
        token_id: Option<i64>,
        user_id: Option<i64>,
        app: &str,
        now: i64,
    ) -> Result<Option<ApprovalRow>, StoreError> {
        self.newest_usable(token_id, user_id, app, None, now).await
    }

    /// The newest approval of a deploy of `commit` to `app` that the credential (as for
    /// [`Store::usable_approval`]) may run at `now`: a promote is of one build, and the
    /// credential may hold approvals of other commits of the app beside it.
    pub async fn usable_approval_of_commit(
        &self,
        token_id: Option<i64>,
        user_id: Option<i64>,
        app: &str,
        commit: &str,
        now: i64,
    ) -> Result<Option<ApprovalRow>, StoreError> {
        self.newest_usable(token_id, user_id, app, Some(commit), now)
            .await
    }

    async fn newest_usable(
        &self,
        token_id: Option<i64>,
        user_id: Option<i64>,
        app: &str,
        commit: Option<&str>,
        now: i64,
    ) -> Result<Option<ApprovalRow>, StoreError> {
        macro_rules! usable {
            ($commit:literal) => {
                concat!(
                    "SELECT ",
                    columns!(),
                    " FROM deploy_approvals WHERE app = $1 AND status = 'approved' \
                     AND expires_at > $2 AND requested_by_token_id IS NOT DISTINCT FROM $3 \
                     AND (requested_by_token_id IS NOT NULL OR requested_by_user_id = $4)",
                    $commit,
                    " ORDER BY id DESC LIMIT 1"
                )
            };
        }
        bounded(self, async {
            let sql = match commit {
                None => usable!(""),
                Some(_) => usable!(" AND LOWER(git_commit) = LOWER($5)"),
            };
            let mut query = sqlx::query(sql)
                .bind(app)
                .bind(now)
                .bind(token_id)
                .bind(user_id);
            if let Some(commit) = commit {
                query = query.bind(commit);
            }
            let row = query.fetch_optional(&self.pool).await?;
            row.as_ref().map(from_row).transpose()
        })
        .await
    }

    /// Remembers process `pid` of `app` as the holder of an attached run approval
    /// `approval_id` let through at `now`, forgetting holders older than `kept_ms`.
    pub async fn remember_approved_holder(
        &self,
        approval_id: i64,
        app: &str,
        pid: &str,
        now: i64,
        kept_ms: i64,
    ) -> Result<(), StoreError> {
        bounded(self, async {
            let mut tx = self.pool.begin().await?;
            sqlx::query("DELETE FROM approved_holders WHERE created_at < $1")
                .bind(now.saturating_sub(kept_ms))
                .execute(&mut *tx)
                .await?;
            // A process id the rack gave again is the newest run's.
            sqlx::query(
                "INSERT INTO approved_holders (app, pid, approval_id, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (app, pid) DO UPDATE \
                 SET approval_id = excluded.approval_id, created_at = excluded.created_at",
            )
            .bind(app)
            .bind(pid)
            .bind(approval_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// The approval whose attached run started process `pid` of `app` as its holder since
    /// `since` (unix ms), when the credential (`token_id`, or `user_id` with no token) asked
    /// for it.
    pub async fn approved_holder(
        &self,
        token_id: Option<i64>,
        user_id: Option<i64>,
        app: &str,
        pid: &str,
        since: i64,
    ) -> Result<Option<ApprovalRow>, StoreError> {
        bounded(self, async {
            let sql = concat!(
                "SELECT ",
                columns!(),
                " FROM deploy_approvals WHERE id = (SELECT approval_id FROM approved_holders \
                 WHERE app = $1 AND pid = $2 AND created_at >= $3) \
                 AND requested_by_token_id IS NOT DISTINCT FROM $4 \
                 AND (requested_by_token_id IS NOT NULL OR requested_by_user_id = $5)"
            );
            let row = sqlx::query(sql)
                .bind(app)
                .bind(pid)
                .bind(since)
                .bind(token_id)
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
            row.as_ref().map(from_row).transpose()
        })
        .await
    }

    /// Spends approval `id` on the promote of `release`: only once, and only while it is
    /// approved and not expired at `now`. Whether it was spent.
    pub async fn spend_approval(
        &self,
        id: i64,
        release: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        bounded(self, async {
            let done = sqlx::query(
                "UPDATE deploy_approvals SET status = 'deployed', deployed_at = $1, \
                 release_id = $2 WHERE id = $3 AND status = 'approved' AND expires_at > $1",
            )
            .bind(now)
            .bind(release)
            .bind(id)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }
}
