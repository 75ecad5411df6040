//! `POST /api/webhook`: verified push events refresh exactly the apps that
//! track the pushed repository and branch.

use crate::api::St;
use crate::error::{ApiError, ApiResult};
use crate::webhook::{self, Provider, WebhookError};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use ferry_model::annotations::REFRESH;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Instant;

/// Sustained deliveries per second, and the burst allowed on top.
const RATE: f64 = 20.0;
const BURST: f64 = 40.0;

fn provider_name(p: Provider) -> &'static str {
    match p {
        Provider::GitHub => "github",
        Provider::GitLab => "gitlab",
        Provider::Gitea => "gitea",
        Provider::Gogs => "gogs",
        Provider::Bitbucket => "bitbucket",
        Provider::BitbucketServer => "bitbucketserver",
    }
}

pub async fn receive(
    State(st): St,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let h: BTreeMap<String, String> = headers
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_ascii_lowercase(), v.to_string()))
        })
        .collect();
    let event = match webhook::parse(&h, &body, &st.settings.webhook_secrets()) {
        Ok(e) => e,
        Err(WebhookError::NotAPush { provider, event }) => {
            st.metrics.webhook(provider_name(provider), "ignored");
            return Ok((StatusCode::OK, Json(json!({ "ignored": event }))));
        }
        Err(e @ (WebhookError::BadSignature(_) | WebhookError::NotConfigured(_))) => {
            let p = match &e {
                WebhookError::BadSignature(p) | WebhookError::NotConfigured(p) => provider_name(*p),
                _ => "unknown",
            };
            st.metrics.webhook(p, "bad_signature");
            tracing::info!(provider = p, error = %e, "webhook refused");
            return Err(ApiError::unauthenticated(e.to_string()));
        }
        Err(e @ WebhookError::UnknownProvider) => {
            st.metrics.webhook("unknown", "unknown_provider");
            return Err(ApiError::bad_request(e.to_string()));
        }
        Err(e) => {
            st.metrics.webhook("unknown", "malformed");
            return Err(ApiError::bad_request(e.to_string()));
        }
    };
    // Limit verified deliveries only: unsigned junk cannot use up the
    // budget of real pushes (it is refused before any work anyway).
    {
        let mut b = st.webhook_bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * RATE).min(BURST);
        b.1 = now;
        if b.0 < 1.0 {
            st.metrics
                .webhook(provider_name(event.provider), "rate_limited");
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many webhook deliveries; retry later",
            ));
        }
        b.0 -= 1.0;
    }
    let provider = provider_name(event.provider);
    let Some(branch) = event.branch.clone().filter(|_| !event.tag) else {
        st.metrics.webhook(provider, "ignored");
        return Ok((StatusCode::OK, Json(json!({ "refreshed": [] }))));
    };
    let mut refreshed = Vec::new();
    for a in st.ctl.applications() {
        let hit = a.sources().iter().any(|s| {
            event
                .repo_urls
                .iter()
                .any(|u| webhook::same_repo(&s.repo_url, u))
                && webhook::revision_matches(s.revision(), &branch, event.default_branch.as_deref())
        });
        if !hit {
            continue;
        }
        let body = json!({ "metadata": { "annotations": { REFRESH: "normal" } } });
        match st
            .apps_in(&a.metadata.namespace.clone().unwrap_or_default())
            .patch(&a.name_any(), &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => refreshed.push(a.name_any()),
            Err(e) => tracing::info!(app = %a.name_any(), error = %e, "webhook refresh failed"),
        }
    }
    let sets = refresh_application_sets(&st, &event, &branch).await;
    tracing::info!(provider, %branch, apps = refreshed.len(), applicationsets = sets.len(), "webhook push");
    st.metrics.webhook(provider, "refreshed");
    Ok((
        StatusCode::OK,
        Json(json!({ "refreshed": refreshed, "refreshedApplicationSets": sets })),
    ))
}

/// Git generators (also inside matrix and merge) of `repoURL` at the pushed branch.
fn reads_repo(
    generators: &[ferry_model::appset::Generator],
    event: &webhook::PushEvent,
    branch: &str,
) -> bool {
    generators.iter().any(|g| {
        g.git.as_ref().is_some_and(|git| {
            event
                .repo_urls
                .iter()
                .any(|u| webhook::same_repo(&git.repo_url, u))
                && webhook::revision_matches(&git.revision, branch, event.default_branch.as_deref())
        }) || [&g.matrix, &g.merge]
            .into_iter()
            .flatten()
            .any(|c| reads_repo(&c.generators, event, branch))
    })
}

/// ApplicationSets whose git generators read the pushed branch get Argo CD's refresh
/// annotation: the controller regenerates them at once, with fresh revisions.
async fn refresh_application_sets(
    st: &crate::api::AppState,
    event: &webhook::PushEvent,
    branch: &str,
) -> Vec<String> {
    let api: kube::Api<ferry_model::appset::ApplicationSet> =
        kube::Api::namespaced(st.client.clone(), &st.ns);
    let sets = match api.list(&Default::default()).await {
        Ok(l) => l.items,
        Err(e) => {
            tracing::info!(error = %e, "webhook: cannot list ApplicationSets");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for set in sets {
        if !reads_repo(&set.spec.generators, event, branch) {
            continue;
        }
        let body = json!({ "metadata": { "annotations": { "argocd.argoproj.io/application-set-refresh": "true" } } });
        match api
            .patch(
                &set.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&body),
            )
            .await
        {
            Ok(_) => out.push(set.name_any()),
            Err(e) => {
                tracing::info!(applicationset = %set.name_any(), error = %e, "webhook refresh failed")
            }
        }
    }
    out
}
