//! A scripted browser for sign-in flows that end at this provider: it follows redirects by
//! hand, keeps one cookie jar (honouring deletions), and at the provider's authorize page picks
//! its test user with `login_hint`, as a person would click them. Used by the integration tests
//! and the benchmark suite (`feature = "browser"`).

use std::collections::HashMap;

/// Most redirects one navigation follows.
const MAX_REDIRECTS: usize = 10;

/// Why a navigation failed.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// The HTTP client could not be built or a request failed.
    #[error("{url}: {source}")]
    Http {
        /// The URL being fetched.
        url: String,
        /// The client's error.
        source: reqwest::Error,
    },
    /// More than [`MAX_REDIRECTS`] redirects.
    #[error("{0}: too many redirects")]
    TooManyRedirects(String),
}

/// The end of a navigation.
#[derive(Debug)]
pub struct Page {
    /// The last response's status.
    pub status: u16,
    /// The last URL fetched.
    pub url: String,
    /// The last response's body.
    pub body: String,
}

/// A minimal browser: manual redirects, one cookie jar, a test user to pick at the provider.
pub struct Browser {
    http: reqwest::Client,
    /// Cookies by name (every origin shares the jar: the tests run on one host).
    pub cookies: HashMap<String, String>,
    /// The e-mail picked at the provider's authorize page.
    pub user: String,
}

impl Browser {
    /// A browser that signs in as `user`.
    pub fn new(user: &str) -> Result<Browser, BrowserError> {
        Browser::with_headers(user, reqwest::header::HeaderMap::new())
    }

    /// A browser that signs in as `user` from `address`, as a proxy in front of the gateway
    /// says (`X-Forwarded-For`; the gateway believes it only from `TRUSTED_PROXIES`).
    pub fn from_address(user: &str, address: &str) -> Result<Browser, BrowserError> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Ok(value) = reqwest::header::HeaderValue::from_str(address) {
            headers.insert("x-forwarded-for", value);
        }
        Browser::with_headers(user, headers)
    }

    fn with_headers(
        user: &str,
        headers: reqwest::header::HeaderMap,
    ) -> Result<Browser, BrowserError> {
        // reqwest is built without a default TLS crypto provider; use ring, as the gateway does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|source| BrowserError::Http {
                url: String::new(),
                source,
            })?;
        Ok(Browser {
            http,
            cookies: HashMap::new(),
            user: user.into(),
        })
    }

    /// The `Cookie` header for the jar.
    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// GET `url`, following redirects; at the provider's authorize page, picks `self.user`.
    pub async fn visit(&mut self, url: &str) -> Result<Page, BrowserError> {
        let mut url = url.to_string();
        for _ in 0..MAX_REDIRECTS {
            if url.contains("/authorize?") && !url.contains("login_hint=") {
                url = format!("{url}&login_hint={}", self.user);
            }
            let response = self.get(&url).await?;
            let status = response.status().as_u16();
            if (300..400).contains(&status) {
                url = resolve(&url, &location(&response));
                continue;
            }
            let body = response.text().await.unwrap_or_default();
            return Ok(Page { status, url, body });
        }
        Err(BrowserError::TooManyRedirects(url))
    }

    /// [`Browser::visit`], then, on the gateway's "sign in the CLI?" page, a click on its
    /// button: what a person who started the sign-in does.
    pub async fn visit_confirming(&mut self, url: &str) -> Result<Page, BrowserError> {
        let page = self.visit(url).await?;
        match approve_link(&page) {
            Some(link) if page.status == 200 => self.visit(&link).await,
            _ => Ok(page),
        }
    }

    /// POSTs `fields` as a form to `url` (as a submit button does), then follows redirects.
    pub async fn submit(
        &mut self,
        url: &str,
        fields: &[(&str, &str)],
    ) -> Result<Page, BrowserError> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let request = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        let response = self.send(url, request).await?;
        let status = response.status().as_u16();
        if (300..400).contains(&status) {
            let next = resolve(url, &location(&response));
            return self.visit(&next).await;
        }
        let body = response.text().await.unwrap_or_default();
        Ok(Page {
            status,
            url: url.to_string(),
            body,
        })
    }

    /// One request, no redirect followed: the status and the `Location` as sent (to inspect a
    /// single hop).
    pub async fn hop(&mut self, url: &str) -> Result<(u16, String), BrowserError> {
        let response = self.get(url).await?;
        Ok((response.status().as_u16(), location(&response)))
    }

    async fn get(&mut self, url: &str) -> Result<reqwest::Response, BrowserError> {
        let request = self.http.get(url);
        self.send(url, request).await
    }

    /// Sends `request` (to `url`) with the jar's cookies, and keeps the ones it sets.
    async fn send(
        &mut self,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, BrowserError> {
        let response = request
            .header("cookie", self.cookie_header())
            .send()
            .await
            .map_err(|source| BrowserError::Http {
                url: url.to_string(),
                source,
            })?;
        self.store_cookies(&response);
        Ok(response)
    }

    fn store_cookies(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all("set-cookie") {
            let text = value.to_str().unwrap_or_default();
            let (pair, attrs) = text.split_once(';').unwrap_or((text, ""));
            if let Some((k, v)) = pair.split_once('=') {
                if v.is_empty() || attrs.contains("Max-Age=0") {
                    self.cookies.remove(k.trim());
                } else {
                    self.cookies.insert(k.trim().to_string(), v.to_string());
                }
            }
        }
    }
}

/// The absolute URL of the `id="approve"` link on `page` (the gateway's CLI confirmation).
pub fn approve_link(page: &Page) -> Option<String> {
    let tag = &page.body[page.body.find("id=\"approve\"")?..];
    let from = tag.find("href=\"")? + "href=\"".len();
    let to = from + tag[from..].find('"')?;
    Some(resolve(&page.url, &tag[from..to].replace("&amp;", "&")))
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// `location` made absolute against `current` (only origin-relative paths occur here).
fn resolve(current: &str, location: &str) -> String {
    if location.starts_with('/') {
        let origin = current.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
        format!("{origin}{location}")
    } else {
        location.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::{Page, approve_link, resolve};

    #[test]
    fn the_approve_link_is_found_and_made_absolute() {
        let page = Page {
            status: 200,
            url: "http://127.0.0.1:9/api/v1/auth/cli/browser?login_id=a".into(),
            body:
                r#"<p><a class="button" id="approve" href="/c?login_id=a&amp;confirm=b">Go</a></p>"#
                    .into(),
        };
        assert_eq!(
            approve_link(&page).as_deref(),
            Some("http://127.0.0.1:9/c?login_id=a&confirm=b")
        );
        let none = Page {
            status: 200,
            url: String::new(),
            body: "<p>nothing</p>".into(),
        };
        assert_eq!(approve_link(&none), None);
    }

    #[test]
    fn relative_locations_keep_the_origin() {
        assert_eq!(
            resolve("http://127.0.0.1:9/a/b?c=d", "/x?y=z"),
            "http://127.0.0.1:9/x?y=z"
        );
        assert_eq!(resolve("http://a:1/p", "https://b/q"), "https://b/q");
    }
}
