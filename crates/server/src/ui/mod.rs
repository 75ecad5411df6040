//! The web UI: server-rendered HTML (maud, checked at compile time) with htmx for partial
//! updates and a server-sent event stream for live ones. Every action calls the API's own
//! handler with the caller's identity, so the UI can do exactly what the API allows.

mod app;
mod apps;
mod login;
mod other;
mod widgets;

use crate::api::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::settings::Settings;
use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};
use std::sync::Arc;

/// The browser session's cookie (HttpOnly, SameSite=Strict, Secure under TLS).
pub const SESSION_COOKIE: &str = "ferry.token";
/// A single sign-on login in flight (SameSite=Lax: it must come back with the provider's
/// redirect).
pub const OIDC_COOKIE: &str = "ferry.oidc";
pub const CSRF_HEADER: &str = "x-csrf-token";

const HTMX: &str = include_str!("../../assets/htmx-2.0.11.min.js");
const SCRIPT: &str = include_str!("../../assets/ferry.js");
const STYLE: &str = include_str!("../../assets/ferry.css");

/// What every page is sent with: no inline script or style, nothing framed, nothing loaded
/// from elsewhere.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'";

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/applications") }))
        .route(
            "/assets/htmx.min.js",
            get(|| asset(HTMX, "text/javascript")),
        )
        .route("/assets/ferry.js", get(|| asset(SCRIPT, "text/javascript")))
        .route("/assets/ferry.css", get(|| asset(STYLE, "text/css")))
        .route("/login", get(login::page).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/auth/login", get(login::sso_start))
        .route("/auth/callback", get(login::sso_callback))
        .route("/ui/stream", get(apps::stream))
        .route("/applications", get(apps::list))
        .route("/applications/{ns}/{name}", get(app::view))
        .route("/applications/{ns}/{name}/tile", get(apps::tile))
        .route("/applications/{ns}/{name}/summary", get(app::summary))
        .route("/applications/{ns}/{name}/resource", get(app::resource))
        .route("/applications/{ns}/{name}/sync", post(app::sync))
        .route("/applications/{ns}/{name}/refresh", post(app::refresh))
        .route("/applications/{ns}/{name}/rollback", post(app::rollback))
        .route("/applications/{ns}/{name}/autosync", post(app::autosync))
        .route("/applications/{ns}/{name}/delete", post(app::delete))
        .route("/vela", get(other::vela))
        .route("/vela/{ns}/{name}/resume", post(other::vela_resume))
        .route("/images", get(other::images))
        .route("/settings", get(other::settings))
        .route("/settings/repositories", post(other::add_repo))
        .route("/settings/repositories/delete", post(other::delete_repo))
        .route("/settings/clusters", post(other::add_cluster))
        .route("/settings/clusters/delete", post(other::delete_cluster))
        .route("/settings/projects", post(other::save_project))
        .route(
            "/settings/projects/{name}/delete",
            post(other::delete_project),
        )
        .route("/settings/projects/{name}/token", post(other::create_token))
}

async fn asset(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// Security headers on every response, API's included.
pub async fn headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Nothing of Ferry's URLs goes to other sites; `no-referrer` would also blank the Origin
    // of Ferry's own forms, which the login form's check reads.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

/// The value of a cookie in a request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    cookie(headers, SESSION_COOKIE)
}

/// A request that changes something with the session cookie must carry the page's CSRF token.
pub fn check_csrf(settings: &Settings, headers: &HeaderMap, session: &str) -> ApiResult<()> {
    let expected = crate::auth::csrf_token(settings, session)?;
    let sent = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // Compared in constant time: the token is a secret of the session.
    let same = sent.len() == expected.len()
        && sent
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "CSRF token missing or invalid: reload the page and try again",
        ))
    }
}

pub fn set_cookie(name: &str, value: &str, max_age: i64, same_site: &str, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite={same_site}; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The signed-in user of a page, with what the page needs to make requests.
pub struct Viewer {
    pub p: Principal,
    pub csrf: String,
    /// The request came from htmx: answer with a fragment, not a whole page.
    pub htmx: bool,
}

impl Viewer {
    pub fn name(&self) -> &str {
        &self.p.subject
    }
}

/// Not signed in: a page goes to the login screen; an htmx request is told to go there.
pub struct LoginFirst {
    return_to: String,
    htmx: bool,
    error: Option<ApiError>,
}

impl IntoResponse for LoginFirst {
    fn into_response(self) -> Response {
        if let Some(e) = self.error {
            return UiError(e).into_response();
        }
        let to = format!(
            "/login?return={}",
            form_urlencoded::byte_serialize(self.return_to.as_bytes()).collect::<String>()
        );
        if self.htmx {
            let mut r = StatusCode::NO_CONTENT.into_response();
            if let Ok(v) = HeaderValue::from_str(&to) {
                r.headers_mut().insert("HX-Redirect", v);
            }
            r
        } else {
            Redirect::to(&to).into_response()
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Viewer {
    type Rejection = LoginFirst;

    async fn from_request_parts(
        parts: &mut Parts,
        st: &Arc<AppState>,
    ) -> Result<Viewer, LoginFirst> {
        let htmx = parts.headers.contains_key("hx-request");
        let return_to = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let session = session_cookie(&parts.headers);
        let p = match Principal::from_request_parts(parts, st).await {
            Ok(p) => p,
            // A forged change (no CSRF token) is refused, not sent to log in.
            Err(e) if e.code == StatusCode::FORBIDDEN => {
                return Err(LoginFirst {
                    return_to,
                    htmx,
                    error: Some(e),
                });
            }
            Err(_) => {
                return Err(LoginFirst {
                    return_to,
                    htmx,
                    error: None,
                });
            }
        };
        let csrf = session
            .as_deref()
            .and_then(|s| crate::auth::csrf_token(&st.settings, s).ok())
            .unwrap_or_default();
        Ok(Viewer { p, csrf, htmx })
    }
}

/// An API error shown as HTML: the API's own message, with its status.
pub struct UiError(pub ApiError);

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> UiError {
        UiError(e)
    }
}

impl From<kube::Error> for UiError {
    fn from(e: kube::Error) -> UiError {
        UiError(e.into())
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let body = html! {
            div.alert.error role="alert" {
                strong { "Error " (self.0.code.as_u16()) ": " } (self.0.message)
            }
        };
        (self.0.code, body).into_response()
    }
}

pub type UiResult = Result<Markup, UiError>;

/// `name=value&...` of a posted form, repeated keys kept.
pub fn form(body: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(body.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A request body for an API handler, built from JSON.
pub fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, UiError> {
    serde_json::from_value(v).map_err(|e| UiError(ApiError::bad_request(e.to_string())))
}

/// The page around a screen's content.
pub fn page(v: &Viewer, title: &str, current: &str, content: Markup) -> Markup {
    let headers = serde_json::json!({ "X-CSRF-Token": v.csrf }).to_string();
    let nav = [
        ("/applications", "Applications"),
        ("/vela", "KubeVela"),
        ("/images", "Image automation"),
        ("/settings", "Settings"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                (head(title))
            }
            body hx-headers=(headers) {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/applications" { "Ferry" }
                    nav aria-label="Main" {
                        ul {
                            @for (href, label) in nav {
                                li {
                                    @if href == current {
                                        a href=(href) aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    form.logout method="post" action="/logout" hx-post="/logout" {
                        span.user { "Signed in as " strong #whoami { (v.name()) } }
                        button type="submit" { "Log out" }
                    }
                }
                main #main tabindex="-1" { (content) }
                div #toast role="status" aria-live="polite" {}
            }
        }
    }
}

pub fn head(title: &str) -> Markup {
    // htmx runs without eval, adds no inline style (the CSP forbids both), and swaps error
    // answers so their message is seen.
    let config = r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false,"selfRequestsOnly":true,"responseHandling":[{"code":"204","swap":false},{"code":"[23]..","swap":true},{"code":"[45]..","swap":true,"error":true}]}"#;
    html! {
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        meta name="htmx-config" content=(config);
        title { (title) " · Ferry" }
        link rel="stylesheet" href="/assets/ferry.css";
        script src="/assets/htmx.min.js" defer {}
        script src="/assets/ferry.js" defer {}
    }
}

/// A fragment that reports an action's result in the page's status area.
pub fn toast(message: &str) -> Markup {
    html! {
        div.alert.ok role="status" { (message) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; ferry.token=abc; ferry.tokenx=no"),
        );
        assert_eq!(session_cookie(&h).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "ferry.tokenx").as_deref(), Some("no"));
        assert_eq!(cookie(&h, "b"), None);
    }

    #[test]
    fn session_cookies_are_http_only_and_strict() {
        let c = set_cookie(SESSION_COOKIE, "t", 60, "Strict", true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("Secure"));
        assert!(!set_cookie(SESSION_COOKIE, "t", 60, "Strict", false).contains("Secure"));
    }

    #[test]
    fn the_policy_allows_no_inline_script() {
        assert!(CSP.contains("script-src 'self'"));
        assert!(!CSP.contains("unsafe-inline") && !CSP.contains("unsafe-eval"));
    }
}
