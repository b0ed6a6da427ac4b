//! Who may sign in: an existing, unlocked user; or a new admin, when `ADMIN_USERS` lists them
//! or they are the first user of a new gateway.

use serde_json::json;

use crate::app::{AppState, Peer};
use crate::audit::{ActorType, AuditEvent, EventKind};
use crate::store::UserRow;

/// Why [`admit`] let nobody in.
pub(super) enum NotAdmitted {
    /// This person may not sign in (the reason is shown and audited).
    Refused(String),
    /// The store could not say or could not record it (logged): try again later.
    Unavailable,
}

/// A store failure while admitting someone (logged): they are asked to try again later.
fn unavailable(e: crate::store::StoreError) -> NotAdmitted {
    tracing::error!(error = %e, "user lookup failed");
    NotAdmitted::Unavailable
}

/// Finds (or, for the first admin, creates) the user.
pub(super) async fn admit(
    state: &AppState,
    peer: Peer,
    email: &str,
    name: &str,
) -> Result<UserRow, NotAdmitted> {
    let existing = |user: UserRow| {
        if user.locked {
            Err(NotAdmitted::Refused(format!(
                "{email} is locked; ask an administrator"
            )))
        } else {
            Ok(user)
        }
    };
    if let Some(user) = state.store.find_user(email).await.map_err(unavailable)? {
        return existing(user);
    }
    // Creating an admin and recording it run to their end in a task of their own: a browser
    // that goes away between the two must not leave an account the trail does not show.
    let created = crate::request_id::spawn({
        let (state, email, name) = (state.clone(), email.to_string(), name.to_string());
        async move { create_admin(&state, peer, &email, &name).await }
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "creating an admin did not finish");
        NotAdmitted::Unavailable
    })??;
    if let Some(user) = created {
        return Ok(user);
    }
    match state.store.find_user(email).await.map_err(unavailable)? {
        Some(user) => existing(user),
        None => Err(NotAdmitted::Refused(format!(
            "{email} has not been added to this gateway; ask an administrator to add you"
        ))),
    }
}

/// Creates `email` as an admin when the rules say signing in makes them one (listed in
/// `ADMIN_USERS`, or the first user of a new gateway) and records it; `None` when it creates
/// nobody. An account whose creation cannot be recorded is removed again.
async fn create_admin(
    state: &AppState,
    peer: Peer,
    email: &str,
    name: &str,
) -> Result<Option<UserRow>, NotAdmitted> {
    let admin_users = state
        .oidc
        .as_ref()
        .map_or(&[][..], |o| o.config().admin_users.as_slice());
    let listed = admin_users.iter().any(|a| a == email);
    // The first admin is a bootstrap: only on a gateway with no users at all, and only without
    // `ADMIN_USERS` (then only the people it names become admins by signing in). Otherwise
    // whoever from an allowed domain got there first would take the seat, before the listed
    // admins, or after every admin had been demoted. Creating the user is one atomic step
    // either way; when it creates nothing, someone got there meanwhile (another sign-in of
    // this person, or another first user): read again.
    let created = if listed {
        match state.store.create_user(email, name, "admin").await {
            Ok(user) => Some(user),
            Err(crate::store::StoreError::Conflict(_)) => None,
            Err(e) => return Err(unavailable(e)),
        }
    } else if admin_users.is_empty() && !state.store.users_exist().await.map_err(unavailable)? {
        // Only a new gateway gets here: the locked write is not taken for every stranger.
        state
            .store
            .create_first_user(email, name, "admin")
            .await
            .map_err(unavailable)?
    } else {
        None
    };
    if let Some(user) = created {
        let mut e = AuditEvent::new(
            EventKind::Gateway,
            crate::request_id::current(),
            "gateway:users:create",
        );
        e.actor_type = ActorType::User;
        e.user_email = Some(email.to_string());
        e.client_ip = Some(peer.ip.to_string());
        let reason = if listed { "ADMIN_USERS" } else { "first admin" };
        let e = e.with_details(json!({ "email": email, "role": "admin", "reason": reason }));
        // An account whose creation the trail does not show must not stay: it is removed
        // again, and the next sign-in creates and audits it.
        if let Err(err) = state.audit.record(e).await {
            tracing::error!(error = %err, %email, "a new admin's creation could not be audited");
            match state.store.withdraw_new_user(user.id).await {
                Ok(true) => {}
                Ok(false) => tracing::error!(
                    %email,
                    "the new admin whose creation was not audited is already in use: kept"
                ),
                Err(e) => tracing::error!(
                    error = %e,
                    %email,
                    "the new admin whose creation was not audited could not be removed: kept, \
                     without a creation event"
                ),
            }
            return Err(NotAdmitted::Unavailable);
        }
        return Ok(Some(user));
    }
    Ok(None)
}
