use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// `argoproj.io/v1alpha1` AppProject.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppProject {
    #[serde(default = "AppProject::api_version_default")]
    pub api_version: String,
    #[serde(default = "AppProject::kind_default")]
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: AppProjectSpec,
}

impl AppProject {
    fn api_version_default() -> String {
        "argoproj.io/v1alpha1".into()
    }
    fn kind_default() -> String {
        "AppProject".into()
    }

    /// The `default` project Argo CD creates when none exists: everything allowed.
    pub fn default_project(namespace: &str) -> AppProject {
        AppProject {
            api_version: Self::api_version_default(),
            kind: Self::kind_default(),
            metadata: ObjectMeta {
                name: Some("default".into()),
                namespace: Some(namespace.into()),
                ..ObjectMeta::default()
            },
            spec: AppProjectSpec {
                source_repos: vec!["*".into()],
                destinations: vec![ProjectDestination {
                    server: Some("*".into()),
                    name: None,
                    namespace: Some("*".into()),
                    ..Default::default()
                }],
                cluster_resource_whitelist: vec![GroupKind {
                    group: "*".into(),
                    kind: "*".into(),
                    ..Default::default()
                }],
                ..AppProjectSpec::default()
            },
        }
    }
}

crate::namespaced_resource!(
    AppProject,
    "argoproj.io",
    "v1alpha1",
    "AppProject",
    "appprojects"
);

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AppProjectSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_repos: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<ProjectDestination>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_resource_whitelist: Vec<GroupKind>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_resource_blacklist: Vec<GroupKind>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_resource_whitelist: Vec<GroupKind>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_resource_blacklist: Vec<GroupKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Roles automation signs in as (`proj:<project>:<role>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<ProjectRole>,
    /// Namespaces other than the controller's whose Applications may use
    /// this project (globs, or `/regex/`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_namespaces: Vec<String>,
    /// When automated and manual syncs may run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync_windows: Vec<crate::SyncWindow>,
    /// Fields this struct does not know, kept so they are reported, never dropped.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unknown: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProjectRole {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// RBAC lines: `p, proj:<project>:<role>, applications, sync, <project>/*, allow`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    /// SSO groups that get this role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Tokens issued for the role; one that is not listed here is revoked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt_tokens: Vec<JwtToken>,
    /// Fields this struct does not know, kept so they are reported, never dropped.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unknown: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct JwtToken {
    #[serde(default)]
    pub iat: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ProjectDestination {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Fields this struct does not know, kept so they are reported, never dropped.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unknown: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct GroupKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub kind: String,
    /// Fields this struct does not know, kept so they are reported, never dropped.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unknown: BTreeMap<String, Value>,
}

/// Why a project refuses something; the text is what users see in the condition.
#[derive(Clone, Debug, PartialEq)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AppProjectSpec {
    /// Is `repo` in `sourceRepos`? Patterns are globs; `!pattern` denies.
    pub fn check_source(&self, project: &str, repo: &str) -> Result<(), Violation> {
        if allowed_by(&self.source_repos, |p| {
            glob_match(p, repo) || glob_match(p, repo.trim_end_matches(".git"))
        }) {
            Ok(())
        } else {
            Err(Violation(format!(
                "application repo {repo} is not permitted in project '{project}'"
            )))
        }
    }

    /// Is the destination (server URL, cluster name, namespace) permitted?
    /// Argo CD's rules: an entry matches when its server (or its name)
    /// and its namespace match, any pattern may be negated with `!`, and a
    /// negated field that excludes the destination denies it outright.
    pub fn check_destination(
        &self,
        project: &str,
        server: &str,
        name: &str,
        namespace: &str,
    ) -> Result<(), Violation> {
        let field = |p: &Option<String>| p.clone().unwrap_or_default();
        let mut any = false;
        for d in &self.destinations {
            let (ps, pn, pns) = (field(&d.server), field(&d.name), field(&d.namespace));
            let server_hit =
                !server.is_empty() && !ps.is_empty() && glob_match_negatable(&ps, server);
            let name_hit = !name.is_empty() && !pn.is_empty() && glob_match_negatable(&pn, name);
            let ns_hit = glob_match_negatable(&pns, namespace);
            if (server_hit || name_hit) && ns_hit {
                any = true;
            } else if (((!name_hit && pn.starts_with('!')) || (!server_hit && ps.starts_with('!')))
                && ns_hit)
                || (!ns_hit && pns.starts_with('!') && (server_hit || name_hit))
            {
                return Err(self.destination_violation(project, server, name, namespace));
            }
        }
        if any {
            Ok(())
        } else {
            Err(self.destination_violation(project, server, name, namespace))
        }
    }

    fn destination_violation(
        &self,
        project: &str,
        server: &str,
        name: &str,
        namespace: &str,
    ) -> Violation {
        let cluster = if name.is_empty() { server } else { name };
        Violation(format!(
            "application destination server '{cluster}' and namespace '{namespace}' do not match any of the allowed destinations in project '{project}'"
        ))
    }

    /// May the project deploy a resource of this group/kind?
    pub fn check_resource(
        &self,
        project: &str,
        group: &str,
        kind: &str,
        namespaced: bool,
    ) -> Result<(), Violation> {
        let hit = |list: &[GroupKind]| {
            list.iter()
                .any(|gk| glob_match(&gk.group, group) && glob_match(&gk.kind, kind))
        };
        let shown = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{group}/{kind}")
        };
        let ok = if namespaced {
            !hit(&self.namespace_resource_blacklist)
                && (self.namespace_resource_whitelist.is_empty()
                    || hit(&self.namespace_resource_whitelist))
        } else {
            hit(&self.cluster_resource_whitelist) && !hit(&self.cluster_resource_blacklist)
        };
        if ok {
            Ok(())
        } else {
            let scope = if namespaced {
                "namespaced"
            } else {
                "cluster-scoped"
            };
            Err(Violation(format!(
                "resource {shown} is not permitted in project '{project}' ({scope} resource not allowed)"
            )))
        }
    }
}

fn allowed_by(patterns: &[String], matches: impl Fn(&str) -> bool) -> bool {
    let mut allowed = false;
    for p in patterns {
        if let Some(neg) = p.strip_prefix('!') {
            if matches(neg) {
                return false;
            }
        } else if matches(p) {
            allowed = true;
        }
    }
    allowed
}

/// A glob that may be negated with a leading `!`.
fn glob_match_negatable(pattern: &str, text: &str) -> bool {
    match pattern.strip_prefix('!') {
        Some(p) => !glob_match(p, text),
        None => glob_match(pattern, text),
    }
}

pub use crate::glob::glob_match;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", "https://x/y.git"));
        assert!(glob_match(
            "https://git.example.com/team-*/*",
            "https://git.example.com/team-a/app.git"
        ));
        assert!(!glob_match(
            "https://git.example.com/team-*",
            "https://other/team-a"
        ));
        assert!(glob_match("prod-?", "prod-1"));
        assert!(!glob_match("prod-?", "prod-12"));
    }

    #[test]
    fn default_project_allows_everything() {
        let p = AppProject::default_project("argocd").spec;
        assert!(
            p.check_source("default", "https://anything/repo.git")
                .is_ok()
        );
        assert!(
            p.check_destination("default", "https://1.2.3.4", "", "x")
                .is_ok()
        );
        assert!(p.check_resource("default", "", "Namespace", false).is_ok());
        assert!(
            p.check_resource("default", "apps", "Deployment", true)
                .is_ok()
        );
    }

    #[test]
    fn restrictive_project() {
        let p = AppProjectSpec {
            source_repos: vec![
                "http://git/team/*".into(),
                "!http://git/team/secret*".into(),
            ],
            destinations: vec![ProjectDestination {
                server: Some("*".into()),
                name: None,
                namespace: Some("team-*".into()),
                ..Default::default()
            }],
            namespace_resource_blacklist: vec![GroupKind {
                group: "".into(),
                kind: "ResourceQuota".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(p.check_source("t", "http://git/team/app.git").is_ok());
        assert!(
            p.check_source("t", "http://git/team/secret-app.git")
                .is_err()
        );
        assert!(p.check_source("t", "http://git/other/app.git").is_err());
        assert!(p.check_destination("t", "https://k", "", "team-a").is_ok());
        let e = p
            .check_destination("t", "https://k", "", "kube-system")
            .unwrap_err();
        assert!(
            e.0.contains("kube-system") && e.0.contains("project 't'"),
            "{e}"
        );
        assert!(p.check_resource("t", "", "ResourceQuota", true).is_err());
        assert!(p.check_resource("t", "", "ConfigMap", true).is_ok());
        // No cluster-scoped resources unless whitelisted.
        assert!(p.check_resource("t", "", "Namespace", false).is_err());
    }

    #[test]
    fn destinations_follow_argo_cd_rules() {
        let d = |server: Option<&str>, name: Option<&str>, ns: &str| ProjectDestination {
            server: server.map(str::to_string),
            name: name.map(str::to_string),
            namespace: Some(ns.to_string()),
            ..Default::default()
        };
        // Everything but kube-system.
        let p = AppProjectSpec {
            destinations: vec![d(Some("*"), None, "!kube-system")],
            ..Default::default()
        };
        assert!(p.check_destination("p", "https://k", "", "team").is_ok());
        assert!(
            p.check_destination("p", "https://k", "", "kube-system")
                .is_err()
        );
        // An entry without server or name matches no cluster.
        let p = AppProjectSpec {
            destinations: vec![d(None, None, "*")],
            ..Default::default()
        };
        assert!(
            p.check_destination("p", "https://k", "in-cluster", "team")
                .is_err()
        );
        // By cluster name, with a denied name.
        let p = AppProjectSpec {
            destinations: vec![d(None, Some("*"), "*"), d(None, Some("!prod"), "*")],
            ..Default::default()
        };
        assert!(
            p.check_destination("p", "https://s", "staging", "x")
                .is_ok()
        );
        assert!(p.check_destination("p", "https://p", "prod", "x").is_err());
    }
}
