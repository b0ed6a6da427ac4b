//! The provider's two pages: the user picker and an error page. No script.

use html_escape::{encode_double_quoted_attribute, encode_text};

use crate::DevUser;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;color:#222}\
a.user{display:block;padding:.8rem 1rem;margin:.5rem 0;border:1px solid #ccc;border-radius:.4rem;\
text-decoration:none;color:#222}a.user:hover{background:#f4f4f4}small{color:#666}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        encode_text(title)
    )
}

/// The user picker: one link per user, carrying the original authorize query.
pub fn picker(users: &[DevUser], query: &str) -> String {
    let mut body = String::from("<h1>dev-oidc</h1><p>Development sign-in. Pick a test user:</p>");
    for user in users {
        let href = format!(
            "/authorize?{query}&login_hint={}",
            url::form_urlencoded::byte_serialize(user.email.as_bytes()).collect::<String>()
        );
        body.push_str(&format!(
            "<a class=\"user\" id=\"user-{id}\" href=\"{href}\">{name}<br><small>{email}{unverified}</small></a>",
            id = encode_double_quoted_attribute(&user.email.replace(['@', '.'], "-")),
            href = encode_double_quoted_attribute(&href),
            name = encode_text(&user.name),
            email = encode_text(&user.email),
            unverified = if user.email_verified { "" } else { " (e-mail not verified)" },
        ));
    }
    page("dev-oidc: sign in", &body)
}

/// An error page.
pub fn error(message: &str) -> String {
    page(
        "dev-oidc: error",
        &format!("<h1>Sign-in error</h1><p>{}</p>", encode_text(message)),
    )
}
