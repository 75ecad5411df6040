use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

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
                }],
                cluster_resource_whitelist: vec![GroupKind {
                    group: "*".into(),
                    kind: "*".into(),
                }],
                ..AppProjectSpec::default()
            },
        }
    }
}

impl kube::Resource for AppProject {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;
    fn kind(_: &()) -> Cow<'_, str> {
        "AppProject".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "argoproj.io".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1alpha1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "appprojects".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

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
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ProjectDestination {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct GroupKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub kind: String,
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
    pub fn check_destination(
        &self,
        project: &str,
        server: &str,
        name: &str,
        namespace: &str,
    ) -> Result<(), Violation> {
        let matches = |d: &ProjectDestination, negate: bool| {
            let m = |pat: &Option<String>, v: &str| match pat.as_deref() {
                None | Some("") => true,
                Some(p) => {
                    let p = if negate {
                        p.strip_prefix('!').unwrap_or(p)
                    } else {
                        p
                    };
                    glob_match(p, v)
                }
            };
            let cluster_ok = match (&d.server, &d.name) {
                (Some(_), _) if !server.is_empty() => m(&d.server, server),
                (_, Some(_)) if !name.is_empty() => m(&d.name, name),
                (Some(_), _) => m(&d.server, server),
                _ => true,
            };
            cluster_ok && m(&d.namespace, namespace)
        };
        let is_deny = |d: &ProjectDestination| {
            [&d.server, &d.name, &d.namespace]
                .iter()
                .any(|f| f.as_deref().is_some_and(|s| s.starts_with('!')))
        };
        let denied = self.destinations.iter().filter(|d| is_deny(d)).any(|d| {
            // A deny entry matches when its negated field matches.
            let neg_ns = d.namespace.as_deref().is_some_and(|s| s.starts_with('!'));
            let neg_srv = d.server.as_deref().is_some_and(|s| s.starts_with('!'));
            let ns_hit = neg_ns
                && d.namespace
                    .as_deref()
                    .is_some_and(|p| glob_match(&p[1..], namespace));
            let srv_hit = neg_srv
                && d.server
                    .as_deref()
                    .is_some_and(|p| glob_match(&p[1..], server));
            ns_hit || srv_hit
        });
        let allowed = self
            .destinations
            .iter()
            .filter(|d| !is_deny(d))
            .any(|d| matches(d, false));
        if allowed && !denied {
            Ok(())
        } else {
            let cluster = if name.is_empty() { server } else { name };
            Err(Violation(format!(
                "application destination server '{cluster}' and namespace '{namespace}' do not match any of the allowed destinations in project '{project}'"
            )))
        }
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

/// Glob with `*` (any run of characters, `/` included, as Argo CD's matching
/// does) and `?` (one character).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

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
            }],
            namespace_resource_blacklist: vec![GroupKind {
                group: "".into(),
                kind: "ResourceQuota".into(),
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
}
