//! Signing in and out: local accounts through the API's password check, and single sign-on
//! through the OIDC provider of `oidc.config`.

use super::{OIDC_COOKIE, SESSION_COOKIE, UiError, Viewer, cookie, head, set_cookie};
use crate::api::{AppState, St};
use crate::error::ApiError;
use crate::oidc;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize, Default)]
pub struct LoginQuery {
    #[serde(default, rename = "return")]
    return_to: String,
}

/// Only paths of this server: a login link cannot send anyone elsewhere afterwards.
fn safe_return(r: &str) -> String {
    let ok = r.starts_with('/')
        && !r.starts_with("//")
        && !r.starts_with("/\\")
        && !r.chars().any(|c| c.is_control() || c == '\\');
    if ok && !r.starts_with("/login") {
        r.to_string()
    } else {
        "/applications".into()
    }
}

fn login_page(st: &AppState, return_to: &str, error: Option<&str>) -> Markup {
    let sso = oidc::config(&st.settings);
    let return_to = safe_return(return_to);
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head("Log in")) }
            body.login {
                main #main {
                    h1 { "Ferry" }
                    @if let Some(e) = error { p #login-error.alert.error role="alert" { (e) } }
                    form method="post" action="/login" {
                        input type="hidden" name="return" value=(return_to);
                        label { span { "Username" } input #username name="username" autocomplete="username" required autofocus; }
                        label { span { "Password" } input #password name="password" type="password" autocomplete="current-password" required; }
                        button #login type="submit" { "Sign in" }
                    }
                    @match sso {
                        Ok(Some(c)) => {
                            p { a #sso.button href={ "/auth/login?return=" (form_urlencoded::byte_serialize(return_to.as_bytes()).collect::<String>()) } {
                                "Log in via " (if c.name.is_empty() { "single sign-on".to_string() } else { c.name.clone() })
                            } }
                        }
                        Ok(None) => {}
                        Err(e) => { p.alert.warn role="alert" { "Single sign-on is unavailable: " (e) } }
                    }
                }
            }
        }
    }
}

pub async fn page(State(st): St, Query(q): Query<LoginQuery>) -> Markup {
    login_page(&st, &q.return_to, None)
}

/// A form posted from another site is refused: SameSite keeps the session cookie from
/// such requests, and this keeps a login from being planted.
fn same_origin(headers: &HeaderMap, uri: &Uri) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let host = request_host(headers, uri);
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest == host)
}

fn session_response(st: &AppState, token: &str, to: &str, body: Option<Markup>) -> Response {
    let cookie = set_cookie(
        SESSION_COOKIE,
        token,
        crate::auth::SESSION_TTL.as_secs() as i64,
        "Strict",
        st.secure_cookies,
    );
    let mut r = match body {
        Some(b) => b.into_response(),
        None => Redirect::to(to).into_response(),
    };
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// The host the browser asked for: the Host header (HTTP/1.1) or the URI's authority (HTTP/2).
fn request_host(headers: &HeaderMap, uri: &Uri) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(|a| a.to_string()))
        .unwrap_or_default()
}

pub async fn submit(State(st): St, uri: Uri, headers: HeaderMap, body: String) -> Response {
    if !same_origin(&headers, &uri) {
        let origin = headers
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .unwrap_or_default();
        return UiError(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "cross-site login refused: a form from {origin} for {}",
                request_host(&headers, &uri)
            ),
        ))
        .into_response();
    }
    let form = super::form(&body);
    let get = |k: &str| {
        form.iter()
            .find(|(x, _)| x == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let return_to = safe_return(&get("return"));
    match crate::admin::password_login(&st, get("username"), get("password")).await {
        Ok(token) => session_response(&st, &token, &return_to, None),
        Err(e) => (e.code, login_page(&st, &return_to, Some(&e.message))).into_response(),
    }
}

pub async fn logout(State(st): St, v: Viewer) -> Response {
    let _ = v;
    let clear = set_cookie(SESSION_COOKIE, "", 0, "Strict", st.secure_cookies);
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut()
        .insert("HX-Redirect", HeaderValue::from_static("/login"));
    if let Ok(v) = HeaderValue::from_str(&clear) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// The callback URL the provider sends the browser back to: `url` of argocd-cm when set (as
/// Argo CD), else this request's own host.
fn redirect_uri(st: &AppState, headers: &HeaderMap, uri: &Uri) -> String {
    if let Some(url) = st.settings.config().get("url").filter(|u| !u.is_empty()) {
        return format!("{}/auth/callback", url.trim_end_matches('/'));
    }
    let host = request_host(headers, uri);
    let scheme = if st.secure_cookies { "https" } else { "http" };
    format!("{scheme}://{host}/auth/callback")
}

fn sso_error(st: &AppState, e: &ApiError) -> Response {
    (e.code, login_page(st, "/applications", Some(&e.message))).into_response()
}

pub async fn sso_start(
    State(st): St,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    match sso_redirect(&st, &headers, &uri, &q.return_to).await {
        Ok(r) => r,
        Err(e) => sso_error(&st, &e),
    }
}

async fn sso_redirect(
    st: &Arc<AppState>,
    headers: &HeaderMap,
    uri: &Uri,
    return_to: &str,
) -> Result<Response, ApiError> {
    let cfg = oidc::config(&st.settings)
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::bad_request("single sign-on is not configured (oidc.config in argocd-cm)")
        })?;
    if !st.oidc.may_start() {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many logins at once; retry in a moment",
        ));
    }
    let d = st.oidc.discovery(&cfg.issuer).await?;
    let pending = oidc::Pending {
        state: oidc::random(16),
        nonce: oidc::random(16),
        verifier: oidc::random(32),
        return_to: safe_return(return_to),
        redirect_uri: redirect_uri(st, headers, uri),
        exp: crate::auth::now_secs() + 600,
    };
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("response_type", "code")
        .append_pair("client_id", &cfg.client_id)
        .append_pair("redirect_uri", &pending.redirect_uri)
        .append_pair("scope", &cfg.scopes())
        .append_pair("state", &pending.state)
        .append_pair("nonce", &pending.nonce)
        .append_pair("code_challenge", &oidc::challenge(&pending.verifier))
        .append_pair("code_challenge_method", "S256");
    if let Some(claims) = &cfg.requested_id_token_claims {
        q.append_pair(
            "claims",
            &serde_json::json!({ "id_token": claims }).to_string(),
        );
    }
    let sep = if d.authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    let to = format!("{}{sep}{}", d.authorization_endpoint, q.finish());
    let sealed = oidc::seal(&st.settings, &pending)?;
    let mut r = Redirect::to(&to).into_response();
    let c = set_cookie(OIDC_COOKIE, &sealed, 600, "Lax", st.secure_cookies);
    if let Ok(v) = HeaderValue::from_str(&c) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(r)
}

#[derive(Deserialize, Default)]
pub struct CallbackQuery {
    #[serde(default)]
    code: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

pub async fn sso_callback(
    State(st): St,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    match finish_sso(&st, &headers, &q).await {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(error = %e.message, "single sign-on refused");
            sso_error(&st, &e)
        }
    }
}

async fn finish_sso(
    st: &Arc<AppState>,
    headers: &HeaderMap,
    q: &CallbackQuery,
) -> Result<Response, ApiError> {
    let raw = cookie(headers, OIDC_COOKIE).ok_or_else(|| {
        ApiError::unauthenticated("no login in progress in this browser: log in again")
    })?;
    let pending = oidc::unseal(&st.settings, &raw)?;
    if !q.error.is_empty() {
        return Err(ApiError::unauthenticated(format!(
            "the identity provider refused the login: {} {}",
            q.error, q.error_description
        )));
    }
    if q.state.is_empty() || q.state != pending.state {
        return Err(ApiError::unauthenticated(
            "the login's state does not match the one this browser started: log in again",
        ));
    }
    let cfg = oidc::config(&st.settings)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::bad_request("single sign-on is not configured"))?;
    let id_token = st
        .oidc
        .exchange(st, &cfg, &q.code, &pending.redirect_uri, &pending.verifier)
        .await?;
    let claims = st
        .oidc
        .verify(
            &cfg,
            &id_token,
            &[cfg.client_id.as_str()],
            Some(&pending.nonce),
        )
        .await?;
    let (sub, groups) = oidc::subjects(&st.settings, &claims);
    let token = crate::auth::issue_sso(&st.settings, &sub, &cfg.issuer, groups)?;
    // The provider's redirect made this a cross-site navigation, which would not carry a
    // SameSite=Strict cookie on to the next page; a same-site refresh does.
    let to = pending.return_to;
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            head { (head("Signed in")) meta http-equiv="refresh" content={ "0;url=" (to) }; }
            body { main #main { p { "Signed in. " a href=(to) { "Continue" } } } }
        }
    };
    let mut r = session_response(st, &token, &to, Some(body));
    let clear = set_cookie(OIDC_COOKIE, "", 0, "Lax", st.secure_cookies);
    if let Ok(v) = HeaderValue::from_str(&clear) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_stay_on_this_server() {
        assert_eq!(
            safe_return("/applications/argocd/x"),
            "/applications/argocd/x"
        );
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/\\evil",
            "",
            "/login?return=/x",
        ] {
            assert_eq!(safe_return(bad), "/applications", "{bad}");
        }
    }

    #[test]
    fn cross_site_origins_are_told_apart() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        let uri = Uri::from_static("/login");
        assert!(same_origin(&h, &uri));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://127.0.0.1:8080"),
        );
        assert!(same_origin(&h, &uri));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h, &uri));
        // HTTP/2 carries the host in the URI.
        h.remove(header::HOST);
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://127.0.0.1:8080"),
        );
        assert!(same_origin(
            &h,
            &Uri::from_static("https://127.0.0.1:8080/login")
        ));
    }
}
