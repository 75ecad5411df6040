//! Argo CD-compatible RBAC, read from `argocd-rbac-cm`-style ConfigMap data.
//!
//! The model is Argo CD's Casbin model (`assets/model.conf`):
//!
//! ```text
//! r = sub, res, act, obj
//! p = sub, res, act, obj, eft
//! g = _, _
//! e = some(where (p.eft == allow)) && !some(where (p.eft == deny))
//! m = g(r.sub, p.sub) && globOrRegexMatch(r.res, p.res) && globOrRegexMatch(r.act, p.act) && globOrRegexMatch(r.obj, p.obj)
//! ```
//!
//! implemented directly rather than through a Casbin port, so that the rules below are the
//! whole story:
//!
//! * Policy lines are `p, <subject>, <resource>, <action>, <object>[, <effect>]` and
//!   `g, <member>, <role>`. `#` starts a comment line; blank lines are skipped; fields may be
//!   CSV-quoted (`"proj/{a,b}"`), which is how a pattern containing a comma is written.
//!   A missing effect means `allow`.
//! * Resource, action and object are patterns. In the default `glob` match mode they follow
//!   gobwas/glob *without separators*, as Argo CD does: `*` matches any run of characters
//!   including `/`, `?` one character, `[a-z]`/`[!a-z]` a class, `{a,b}` alternatives, `\`
//!   escapes. So `default/*` matches `default/ns/app`, and `action/extensions/*` matches
//!   `action/extensions/DaemonSet/restart` (Argo CD docs, "Glob matching"). With
//!   `policy.matchMode: regex` user patterns are unanchored regular expressions, like
//!   Casbin's `regexMatch`; the built-in policy keeps its glob meaning in both modes.
//! * A request's subjects (user, groups, `proj:<project>:<role>`) plus `policy.default` are
//!   expanded through `g` lines transitively (cycles are harmless). Every `p` line of every
//!   expanded subject that matches is collected; any matching `deny` refuses, otherwise any
//!   matching `allow` permits, otherwise the request is refused.
//! * Deny is pooled over *all* of a request's subjects and the default role. Argo CD instead
//!   evaluates the default role first and then each subject on its own, so its default-role
//!   grants "cannot be blocked by a deny rule" (Argo CD docs, "Default Policy for Authenticated
//!   Users") and a deny on one SSO group is overridden by an allow on another (argo-cd issue
//!   #17547, open). Ferry is deliberately stricter: a deny that matches any of the caller's
//!   subjects wins. This only ever refuses what Argo CD would allow, never the reverse.
//! * A `p` line naming a group applies to members of that group directly. Argo CD's API server
//!   only consults groups that appear on the left of some `g` line (argo-cd issue #7952,
//!   closed as documented); Ferry does not reproduce that quirk.
//! * `rollback` is an action of its own (Argo CD checks `sync` for a rollback). A request for
//!   `rollback` is judged by the lines whose action matches `rollback` *or* `sync`: a `sync`
//!   grant therefore also grants rollback, an explicit `rollback` deny removes it, and a `sync`
//!   deny removes it too (as it does in Argo CD). A `rollback` grant alone does not grant sync.
//! * `role:admin` and `role:readonly` come from Argo CD's `builtin-policy.csv`, embedded as
//!   [`BUILTIN_POLICY_CSV`]; nothing is special-cased. As in Argo CD, the local account `admin`
//!   is bound to `role:admin` there.
//! * Project roles: lines added with [`Policy::with_project_role`] are validated like Argo
//!   CD's AppProject validation and only take part in requests on that project, mirroring how
//!   Argo CD loads a project's role policies only when the request's object belongs to it.
//!   [`Policy::with_extra`] adds trusted lines with global effect.

use std::collections::{BTreeMap, HashSet};
use std::sync::LazyLock;

use regex::Regex;

/// ConfigMap key holding the main policy.
pub const POLICY_CSV_KEY: &str = "policy.csv";
/// ConfigMap key holding the role every authenticated subject has.
pub const POLICY_DEFAULT_KEY: &str = "policy.default";
/// ConfigMap key choosing `glob` (default) or `regex` pattern matching.
pub const MATCH_MODE_KEY: &str = "policy.matchMode";
/// ConfigMap key listing the JWT claims treated as groups.
pub const SCOPES_KEY: &str = "scopes";

/// Resource names Argo CD enforces on. Policies accept any string; these are the known ones.
pub mod resource {
    pub const APPLICATIONS: &str = "applications";
    pub const APPLICATIONSETS: &str = "applicationsets";
    pub const PROJECTS: &str = "projects";
    pub const REPOSITORIES: &str = "repositories";
    pub const CLUSTERS: &str = "clusters";
    pub const ACCOUNTS: &str = "accounts";
    pub const CERTIFICATES: &str = "certificates";
    pub const GPGKEYS: &str = "gpgkeys";
    pub const LOGS: &str = "logs";
    pub const EXEC: &str = "exec";
    pub const EXTENSIONS: &str = "extensions";
}

/// Action names. `action/<group>/<kind>/<name>` and the fine-grained
/// `update/<group>/<kind>/<ns>/<name>` / `delete/...` forms are built by the caller.
pub mod action {
    pub const GET: &str = "get";
    pub const CREATE: &str = "create";
    pub const UPDATE: &str = "update";
    pub const DELETE: &str = "delete";
    pub const SYNC: &str = "sync";
    /// Ferry's own; granted by `sync` too (see the module docs).
    pub const ROLLBACK: &str = "rollback";
    pub const OVERRIDE: &str = "override";
    pub const INVOKE: &str = "invoke";
    pub const ALL: &str = "*";
}

/// Argo CD's `assets/builtin-policy.csv` (the v3 line-up, with fine-grained `update/*` and
/// `delete/*` for admins), embedded so `role:admin`/`role:readonly` mean what they mean there.
pub const BUILTIN_POLICY_CSV: &str = "\
# Built-in roles. Application-scoped resources use <project>/<app> objects.
p, role:readonly, applications, get, */*, allow
p, role:readonly, applicationsets, get, */*, allow
p, role:readonly, certificates, get, *, allow
p, role:readonly, clusters, get, *, allow
p, role:readonly, repositories, get, *, allow
p, role:readonly, write-repositories, get, *, allow
p, role:readonly, projects, get, *, allow
p, role:readonly, accounts, get, *, allow
p, role:readonly, gpgkeys, get, *, allow
p, role:readonly, logs, get, */*, allow
p, role:readonly, oam-applications, get, */*, allow

p, role:admin, applications, create, */*, allow
p, role:admin, applications, update, */*, allow
p, role:admin, applications, update/*, */*, allow
p, role:admin, applications, delete, */*, allow
p, role:admin, applications, delete/*, */*, allow
p, role:admin, applications, sync, */*, allow
p, role:admin, applications, override, */*, allow
p, role:admin, applications, action/*, */*, allow
p, role:admin, oam-applications, sync, */*, allow
p, role:admin, applicationsets, get, */*, allow
p, role:admin, applicationsets, create, */*, allow
p, role:admin, applicationsets, update, */*, allow
p, role:admin, applicationsets, delete, */*, allow
p, role:admin, certificates, create, *, allow
p, role:admin, certificates, update, *, allow
p, role:admin, certificates, delete, *, allow
p, role:admin, clusters, create, *, allow
p, role:admin, clusters, update, *, allow
p, role:admin, clusters, delete, *, allow
p, role:admin, repositories, create, *, allow
p, role:admin, repositories, update, *, allow
p, role:admin, repositories, delete, *, allow
p, role:admin, write-repositories, create, *, allow
p, role:admin, write-repositories, update, *, allow
p, role:admin, write-repositories, delete, *, allow
p, role:admin, projects, create, *, allow
p, role:admin, projects, update, *, allow
p, role:admin, projects, delete, *, allow
p, role:admin, accounts, update, *, allow
p, role:admin, gpgkeys, create, *, allow
p, role:admin, gpgkeys, delete, *, allow
p, role:admin, exec, create, */*, allow

g, role:admin, role:readonly
g, admin, role:admin
";

/// Argo CD's default for `scopes` when the key is absent or empty.
static DEFAULT_SCOPES: LazyLock<Vec<String>> = LazyLock::new(|| vec!["groups".to_owned()]);

/// The built-in roles, parsed once. Always glob: they were written as globs.
static BUILTIN: LazyLock<Tables> = LazyLock::new(|| {
    let mut tables = Tables::default();
    match tables.add_text(BUILTIN_POLICY_CSV, MatchMode::Glob, None) {
        Ok(()) => tables,
        Err((line, message)) => {
            // Cannot happen (a test parses the same text); failing closed keeps a broken
            // build from granting anything rather than crashing the API server.
            tracing::error!(line, %message, "built-in RBAC policy does not parse; built-in roles disabled");
            Tables::default()
        }
    }
});

#[derive(Debug, thiserror::Error)]
pub enum RbacError {
    /// A line of `policy.csv`, or of text given to [`Policy::with_extra`].
    #[error("policy.csv line {line}: {message}")]
    Parse { line: usize, message: String },
    /// A line of another ConfigMap key, e.g. `policy.overlay.csv`.
    #[error("{key} line {line}: {message}")]
    ParseKey {
        key: String,
        line: usize,
        message: String,
    },
    #[error("policy.matchMode: unsupported value {0:?} (expected \"glob\" or \"regex\")")]
    MatchMode(String),
    #[error("scopes: {0}")]
    Scopes(String),
    /// An AppProject role that Argo CD's project validation would reject.
    #[error("project {project:?} role {role:?}: {message}")]
    ProjectRole {
        project: String,
        role: String,
        message: String,
    },
}

/// How resource, action and object patterns are compared (`policy.matchMode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MatchMode {
    /// gobwas/glob without separators (Argo CD's default).
    #[default]
    Glob,
    /// Unanchored regular expressions, as Casbin's `regexMatch` (Go's `regexp.MatchString`).
    Regex,
}

/// A parsed RBAC policy: the ConfigMap's lines on top of the built-in roles.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    tables: Tables,
    default_role: Option<String>,
    /// `None` means the key was absent or empty, so Argo CD's default applies.
    scopes: Option<Vec<String>>,
    match_mode: MatchMode,
}

impl Policy {
    /// From the ConfigMap's data: `policy.csv`, every `policy.<name>.csv` key (Argo merges them),
    /// `policy.default`, `scopes`, `policy.matchMode`.
    ///
    /// The extra `policy.<name>.csv` keys are applied after `policy.csv` in key order, as Argo
    /// CD concatenates them; order does not change decisions but it does decide which error is
    /// reported first.
    pub fn from_config_map(data: &BTreeMap<String, String>) -> Result<Policy, RbacError> {
        let match_mode = match data.get(MATCH_MODE_KEY).map(|v| v.trim()) {
            None | Some("") | Some("glob") => MatchMode::Glob,
            Some("regex") => MatchMode::Regex,
            // Argo CD silently falls back to glob; a typo there would quietly reinterpret
            // every regex as a glob, so it is refused here instead.
            Some(other) => return Err(RbacError::MatchMode(other.to_owned())),
        };
        let default_role = data
            .get(POLICY_DEFAULT_KEY)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        let scopes = match data.get(SCOPES_KEY).map(|v| v.trim()) {
            None | Some("") => None,
            Some(raw) => Some(parse_scopes(raw).map_err(RbacError::Scopes)?),
        };
        let mut policy = Policy {
            tables: Tables::default(),
            default_role,
            scopes,
            match_mode,
        };
        if let Some(csv) = data.get(POLICY_CSV_KEY) {
            policy
                .tables
                .add_text(csv, match_mode, None)
                .map_err(|(line, message)| RbacError::Parse { line, message })?;
        }
        for (key, csv) in data.iter().filter(|(key, _)| is_overlay_key(key)) {
            policy
                .tables
                .add_text(csv, match_mode, None)
                .map_err(|(line, message)| RbacError::ParseKey {
                    key: key.clone(),
                    line,
                    message,
                })?;
        }
        Ok(policy)
    }

    /// Adds policy lines (e.g. a project's role policies); same syntax as policy.csv.
    ///
    /// The lines are trusted and global: a `p` or `g` line here applies to every request. For
    /// an AppProject's `spec.roles[]`, which project owners may edit, prefer
    /// [`Policy::with_project_role`], which confines them to their project.
    pub fn with_extra(&self, lines: &str) -> Result<Policy, RbacError> {
        let mut next = self.clone();
        next.tables
            .add_text(lines, self.match_mode, None)
            .map_err(|(line, message)| RbacError::Parse { line, message })?;
        Ok(next)
    }

    /// Adds one AppProject role (`spec.roles[]`): its `policies` lines and the `groups` bound
    /// to it, as Argo CD's `ProjectPoliciesString` does, including the implicit
    /// `p, proj:<project>:<role>, projects, get, <project>, allow`.
    ///
    /// Each policy must pass Argo CD's project-role validation: a full six-field `p` line whose
    /// subject is `proj:<project>:<role>`, whose resource is project-scoped (applications,
    /// applicationsets, logs, exec, repositories, clusters), whose action is a known one, and
    /// whose object starts with `<project>/`. On top of that, everything added here (rules and
    /// group bindings) only takes part in requests whose object belongs to `project`, so a
    /// project owner cannot reach beyond the project through a pattern.
    pub fn with_project_role(
        &self,
        project: &str,
        role: &str,
        policies: &[String],
        groups: &[String],
    ) -> Result<Policy, RbacError> {
        let fail = |message: String| RbacError::ProjectRole {
            project: project.to_owned(),
            role: role.to_owned(),
            message,
        };
        validate_project_name(project).map_err(fail)?;
        validate_role_name(role).map_err(fail)?;
        let subject = format!("proj:{project}:{role}");
        let scope = Some(project.to_owned());
        let mut next = self.clone();
        next.tables.push_rule(
            subject.clone(),
            Rule {
                resource: Matcher::Exact(resource::PROJECTS.to_owned()),
                action: Matcher::Exact(action::GET.to_owned()),
                object: Matcher::Exact(project.to_owned()),
                effect: Effect::Allow,
                project: scope.clone(),
            },
        );
        for (index, line) in policies.iter().enumerate() {
            let entry = validate_project_policy(project, &subject, line)
                .map_err(|message| fail(format!("policy {}: {message}", index + 1)))?;
            next.tables
                .add_entry(entry, self.match_mode, scope.as_deref())
                .map_err(|message| fail(format!("policy {}: {message}", index + 1)))?;
        }
        for group in groups {
            let group = normalize_group(group).map_err(fail)?;
            next.tables.push_edge(group, subject.clone(), scope.clone());
        }
        Ok(next)
    }

    /// `policy.default`, if set and non-empty.
    pub fn default_role(&self) -> Option<&str> {
        self.default_role.as_deref()
    }

    /// The JWT claims whose values are treated as groups; `[groups]` unless configured.
    pub fn scopes(&self) -> &[String] {
        self.scopes.as_deref().unwrap_or(DEFAULT_SCOPES.as_slice())
    }

    /// `policy.matchMode`.
    pub fn match_mode(&self) -> MatchMode {
        self.match_mode
    }

    /// The subjects of a verified token: its `sub`, then every string value of each claim in
    /// [`Policy::scopes`] (a claim may be a string or a list of strings, as Argo CD's
    /// `GetScopeValues` accepts).
    pub fn subjects_from_claims(&self, claims: &serde_json::Value) -> Vec<String> {
        let mut subjects = Vec::new();
        if let Some(sub) = claims.get("sub").and_then(|v| v.as_str())
            && !sub.is_empty()
        {
            subjects.push(sub.to_owned());
        }
        for scope in self.scopes() {
            match claims.get(scope.as_str()) {
                Some(serde_json::Value::String(value)) => subjects.push(value.clone()),
                Some(serde_json::Value::Array(values)) => {
                    subjects.extend(values.iter().filter_map(|v| v.as_str()).map(str::to_owned))
                }
                _ => {}
            }
        }
        subjects
    }

    /// Whether any of `subjects` (user name, groups, `proj:p:r`) may do `action` on `resource` `object`.
    ///
    /// Empty subject strings are ignored (Argo CD uses `""` for "no subject"); the default role
    /// takes part even when `subjects` is empty, as for Argo CD's anonymous access.
    pub fn enforce(&self, subjects: &[String], resource: &str, action: &str, object: &str) -> bool {
        let project = request_project(resource, object);
        let request = Request {
            project,
            resource,
            action,
            object,
        };
        let mut allowed = false;
        for subject in self.expand(subjects, project) {
            for rule in BUILTIN
                .rules_for(subject)
                .chain(self.tables.rules_for(subject))
            {
                if rule.matches(&request) {
                    match rule.effect {
                        // Deny wins regardless of order, so the first one settles it.
                        Effect::Deny => return false,
                        Effect::Allow => allowed = true,
                    }
                }
            }
        }
        allowed
    }

    /// `subjects` and the default role, plus every role reachable through `g` lines that apply
    /// to the request's project.
    fn expand<'a>(&'a self, subjects: &'a [String], project: Option<&str>) -> HashSet<&'a str> {
        let mut seen: HashSet<&'a str> = HashSet::new();
        let mut pending: Vec<&'a str> = Vec::new();
        let starts = subjects
            .iter()
            .map(String::as_str)
            .chain(self.default_role.as_deref());
        for subject in starts.filter(|s| !s.is_empty()) {
            if seen.insert(subject) {
                pending.push(subject);
            }
        }
        while let Some(subject) = pending.pop() {
            let edges = BUILTIN
                .edges_for(subject)
                .chain(self.tables.edges_for(subject));
            for edge in edges {
                if edge.applies_to(project) && seen.insert(edge.role.as_str()) {
                    pending.push(edge.role.as_str());
                }
            }
        }
        seen
    }
}

/// The RBAC object of an Application: `<project>/<app>`, or `<project>/<namespace>/<app>` for
/// an Application outside the control plane's namespace (Argo CD's "apps in any namespace").
pub fn app_object(project: &str, app_namespace: Option<&str>, app: &str) -> String {
    match app_namespace.filter(|ns| !ns.is_empty()) {
        Some(ns) => format!("{project}/{ns}/{app}"),
        None => format!("{project}/{app}"),
    }
}

/// The project a request is about, the way Argo CD's `getProjectFromRequest` finds it: the
/// first `/`-separated part of the object for project-scoped resources, the object itself for
/// `projects`.
fn request_project<'a>(resource: &str, object: &'a str) -> Option<&'a str> {
    match resource {
        resource::APPLICATIONS
        | resource::APPLICATIONSETS
        | resource::LOGS
        | resource::EXEC
        | resource::REPOSITORIES
        | resource::CLUSTERS => object.split_once('/').map(|(project, _)| project),
        resource::PROJECTS => Some(object),
        _ => None,
    }
}

/// `policy.<name>.csv`, not `policy.csv` itself.
fn is_overlay_key(key: &str) -> bool {
    key.strip_prefix("policy.")
        .and_then(|rest| rest.strip_suffix(".csv"))
        .is_some_and(|name| !name.is_empty())
}

struct Request<'a> {
    project: Option<&'a str>,
    resource: &'a str,
    action: &'a str,
    object: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone)]
struct Rule {
    resource: Matcher,
    action: Matcher,
    object: Matcher,
    effect: Effect,
    /// Set for AppProject role rules: they only apply to requests on this project.
    project: Option<String>,
}

impl Rule {
    fn matches(&self, request: &Request<'_>) -> bool {
        let in_scope = match &self.project {
            None => true,
            Some(project) => request.project == Some(project.as_str()),
        };
        in_scope
            && self.resource.is_match(request.resource)
            && self.object.is_match(request.object)
            && (self.action.is_match(request.action)
                // A sync grant (or deny) also speaks for rollback; see the module docs.
                || (request.action == action::ROLLBACK && self.action.is_match(action::SYNC)))
    }
}

/// A `g` line: `member` has `role`.
#[derive(Debug, Clone)]
struct Edge {
    role: String,
    /// Set for AppProject group bindings: they only hold for requests on this project.
    project: Option<String>,
}

impl Edge {
    fn applies_to(&self, project: Option<&str>) -> bool {
        match &self.project {
            None => true,
            Some(own) => project == Some(own.as_str()),
        }
    }
}

/// Rules by subject and `g` edges by member.
#[derive(Debug, Clone, Default)]
struct Tables {
    rules: BTreeMap<String, Vec<Rule>>,
    edges: BTreeMap<String, Vec<Edge>>,
}

impl Tables {
    fn rules_for(&self, subject: &str) -> impl Iterator<Item = &Rule> {
        self.rules.get(subject).into_iter().flatten()
    }

    fn edges_for(&self, member: &str) -> impl Iterator<Item = &Edge> {
        self.edges.get(member).into_iter().flatten()
    }

    fn push_rule(&mut self, subject: String, rule: Rule) {
        self.rules.entry(subject).or_default().push(rule);
    }

    fn push_edge(&mut self, member: String, role: String, project: Option<String>) {
        self.edges
            .entry(member)
            .or_default()
            .push(Edge { role, project });
    }

    /// Parses policy text; on error returns the 1-based line number and a message.
    fn add_text(
        &mut self,
        text: &str,
        mode: MatchMode,
        project: Option<&str>,
    ) -> Result<(), (usize, String)> {
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let entry = split_fields(line)
                .and_then(entry_from_fields)
                .map_err(|message| (index + 1, message))?;
            self.add_entry(entry, mode, project)
                .map_err(|message| (index + 1, message))?;
        }
        Ok(())
    }

    fn add_entry(
        &mut self,
        entry: Entry,
        mode: MatchMode,
        project: Option<&str>,
    ) -> Result<(), String> {
        match entry {
            Entry::Rule {
                subject,
                resource,
                action,
                object,
                effect,
            } => {
                let rule = Rule {
                    resource: Matcher::compile(&resource, mode)?,
                    action: Matcher::compile(&action, mode)?,
                    object: Matcher::compile(&object, mode)?,
                    effect,
                    project: project.map(str::to_owned),
                };
                self.push_rule(subject, rule);
            }
            Entry::Group { member, role } => {
                self.push_edge(member, role, project.map(str::to_owned));
            }
        }
        Ok(())
    }
}

/// One policy line, fields still as written.
#[derive(Debug)]
enum Entry {
    Rule {
        subject: String,
        resource: String,
        action: String,
        object: String,
        effect: Effect,
    },
    Group {
        member: String,
        role: String,
    },
}

fn entry_from_fields(fields: Vec<String>) -> Result<Entry, String> {
    if let Some(index) = fields.iter().position(|f| f.is_empty()) {
        return Err(format!("field {} is empty", index + 1));
    }
    match fields.as_slice() {
        [kind, rest @ ..] if kind == "p" => match rest {
            [subject, resource, action, object] => Ok(Entry::Rule {
                subject: subject.clone(),
                resource: resource.clone(),
                action: action.clone(),
                object: object.clone(),
                effect: Effect::Allow,
            }),
            [subject, resource, action, object, effect] => Ok(Entry::Rule {
                subject: subject.clone(),
                resource: resource.clone(),
                action: action.clone(),
                object: object.clone(),
                effect: parse_effect(effect)?,
            }),
            _ => Err(format!(
                "a `p` line has 5 or 6 fields (p, subject, resource, action, object[, effect]), found {}",
                fields.len()
            )),
        },
        [kind, rest @ ..] if kind == "g" => match rest {
            [member, role] => Ok(Entry::Group {
                member: member.clone(),
                role: role.clone(),
            }),
            _ => Err(format!(
                "a `g` line has 3 fields (g, member, role), found {}",
                fields.len()
            )),
        },
        [kind, ..] => Err(format!("unknown line type {kind:?}: expected `p` or `g`")),
        [] => Err("empty line".to_owned()),
    }
}

fn parse_effect(effect: &str) -> Result<Effect, String> {
    match effect {
        "allow" => Ok(Effect::Allow),
        "deny" => Ok(Effect::Deny),
        // Casbin compares `p.eft == allow` literally, so `Allow` would silently be neither.
        other => Err(format!("effect must be `allow` or `deny`, found {other:?}")),
    }
}

/// Splits one CSV record the way Go's `encoding/csv` does with `TrimLeadingSpace` (which Argo
/// CD uses), also trimming trailing spaces of unquoted fields. Quoted fields may contain
/// commas; `""` inside them is a literal quote.
fn split_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut field = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next() {
                    None => return Err("unterminated quoted field".to_owned()),
                    Some('"') if chars.next_if_eq(&'"').is_some() => field.push('"'),
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            fields.push(field);
            match chars.next() {
                None => return Ok(fields),
                Some(',') => continue,
                Some(c) => return Err(format!("unexpected {c:?} after a quoted field")),
            }
        }
        loop {
            match chars.next() {
                None => {
                    fields.push(field.trim_end().to_owned());
                    return Ok(fields);
                }
                Some(',') => {
                    fields.push(field.trim_end().to_owned());
                    break;
                }
                Some('"') => {
                    return Err("`\"` inside an unquoted field; quote the whole field".to_owned());
                }
                Some(c) => field.push(c),
            }
        }
    }
}

/// A compiled resource, action or object pattern.
#[derive(Debug, Clone)]
enum Matcher {
    /// `*`: the common case, without a regex.
    Any,
    /// No pattern characters at all.
    Exact(String),
    Pattern(Regex),
    Glob(Box<ferry_model::glob::Glob>),
}

impl Matcher {
    fn compile(pattern: &str, mode: MatchMode) -> Result<Matcher, String> {
        match mode {
            MatchMode::Glob => compile_glob(pattern),
            MatchMode::Regex => Regex::new(pattern)
                .map(Matcher::Pattern)
                .map_err(|e| format!("invalid regular expression {pattern:?}: {e}")),
        }
    }

    fn is_match(&self, value: &str) -> bool {
        match self {
            Matcher::Any => true,
            Matcher::Exact(text) => text == value,
            Matcher::Pattern(regex) => regex.is_match(value),
            Matcher::Glob(glob) => glob.matches(value),
        }
    }
}

/// Compiles a gobwas-style glob (no separators: `*` crosses `/`) with the
/// shared matcher (`ferry_model::glob`, globset), which compiles to a regex, so
/// matching stays linear-time whatever the pattern.
fn compile_glob(pattern: &str) -> Result<Matcher, String> {
    if !pattern.is_empty() && pattern.chars().all(|c| c == '*') {
        return Ok(Matcher::Any);
    }
    if !pattern.contains(['*', '?', '[', '{', '\\']) {
        return Ok(Matcher::Exact(pattern.to_owned()));
    }
    ferry_model::glob::Glob::new(pattern).map(|g| Matcher::Glob(Box::new(g)))
}

/// Parses `scopes` as Argo CD does (YAML into a list of strings): a flow list `[groups, email]`,
/// a block list, or a single string.
fn parse_scopes(raw: &str) -> Result<Vec<String>, String> {
    let raw = raw.trim();
    let items: Vec<&str> = if let Some(inner) = raw.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| format!("{raw:?} opens `[` but does not close it"))?;
        if inner.trim().is_empty() {
            return Ok(Vec::new());
        }
        inner.split(',').collect()
    } else if raw.starts_with('-') {
        raw.lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(|line| {
                line.strip_prefix('-')
                    .ok_or_else(|| format!("expected a `- item` line, found {line:?}"))
            })
            .collect::<Result<_, _>>()?
    } else {
        vec![raw]
    };
    items.into_iter().map(parse_scope_item).collect()
}

fn parse_scope_item(item: &str) -> Result<String, String> {
    let item = item.trim();
    let unquoted = ['"', '\'']
        .iter()
        .find_map(|&q| item.strip_prefix(q).and_then(|s| s.strip_suffix(q)))
        .unwrap_or(item);
    if unquoted.is_empty() {
        return Err("empty scope name".to_owned());
    }
    if unquoted.contains(['[', ']', '{', '}']) {
        return Err(format!("{unquoted:?} is not a plain claim name"));
    }
    Ok(unquoted.to_owned())
}

/// Project names are Kubernetes object names (DNS-1123 subdomains); checking that keeps `:`,
/// `/` and pattern characters out of `proj:<project>:<role>` and `<project>/` prefixes.
fn validate_project_name(project: &str) -> Result<(), String> {
    let ok = !project.is_empty()
        && project.len() <= 253
        && project
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && project.starts_with(|c: char| c.is_ascii_alphanumeric())
        && project.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!("invalid project name {project:?}"))
    }
}

/// Argo CD's role name rule: `^[a-zA-Z0-9]([-_a-zA-Z0-9]*[a-zA-Z0-9])?$`.
fn validate_role_name(role: &str) -> Result<(), String> {
    let ok = !role.is_empty()
        && role
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && role.starts_with(|c: char| c.is_ascii_alphanumeric())
        && role.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid role name {role:?}: alphanumerics, '-' and '_', starting and ending with an alphanumeric"
        ))
    }
}

/// Argo CD's `validatePolicy` for `spec.roles[].policies`, with Ferry's `rollback` and the
/// fine-grained `update/...`/`delete/...` actions also allowed.
fn validate_project_policy(project: &str, subject: &str, line: &str) -> Result<Entry, String> {
    let fields = split_fields(line.trim())?;
    let [kind, sub, res, act, obj, eft] = fields.as_slice() else {
        return Err(format!(
            "{line:?} must be of the form `p, sub, res, act, obj, eft`"
        ));
    };
    if kind != "p" {
        return Err(format!("{line:?} must be a `p` line"));
    }
    if sub != subject {
        return Err(format!("policy subject must be {subject:?}, not {sub:?}"));
    }
    const PROJECT_SCOPED: [&str; 6] = [
        resource::APPLICATIONS,
        resource::APPLICATIONSETS,
        resource::LOGS,
        resource::EXEC,
        resource::REPOSITORIES,
        resource::CLUSTERS,
    ];
    if !PROJECT_SCOPED.contains(&res.as_str()) {
        return Err(format!(
            "project resource must be one of {}, not {res:?}",
            PROJECT_SCOPED.join(", ")
        ));
    }
    const ACTIONS: [&str; 8] = [
        action::GET,
        action::CREATE,
        action::UPDATE,
        action::DELETE,
        action::SYNC,
        action::ROLLBACK,
        action::OVERRIDE,
        action::ALL,
    ];
    let known_action = ACTIONS.contains(&act.as_str())
        || ["action/", "update/", "delete/"]
            .iter()
            .any(|prefix| act.starts_with(prefix));
    if !known_action {
        return Err(format!("invalid action {act:?}"));
    }
    let in_project = obj
        .strip_prefix(project)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|rest| !rest.is_empty());
    if !in_project {
        return Err(format!(
            "object must be of form '{project}/*' or '{project}/<APPNAME>', not {obj:?}"
        ));
    }
    Ok(Entry::Rule {
        subject: sub.clone(),
        resource: res.clone(),
        action: act.clone(),
        object: obj.clone(),
        effect: parse_effect(eft)?,
    })
}

/// Argo CD's `validateGroupName`: trimmed, optionally quoted, non-empty, no quotes or control
/// whitespace inside.
fn normalize_group(group: &str) -> Result<String, String> {
    let trimmed = group.trim();
    let name = trimmed
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(trimmed);
    if name.is_empty() {
        return Err(format!("group {group:?} is empty"));
    }
    if name.contains(['"', '\n', '\r', '\t']) {
        return Err(format!("group {group:?} contains invalid characters"));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn policy(csv: &str) -> Policy {
        Policy::from_config_map(&cm(&[(POLICY_CSV_KEY, csv)])).expect("policy parses")
    }

    fn subs(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    /// (subjects, resource, action, object, expected)
    type Case<'a> = (&'a [&'a str], &'a str, &'a str, &'a str, bool);

    fn check(policy: &Policy, cases: &[Case<'_>]) {
        for (subjects, resource, act, object, want) in cases {
            let got = policy.enforce(&subs(subjects), resource, act, object);
            assert_eq!(
                got, *want,
                "enforce({subjects:?}, {resource}, {act}, {object}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn builtin_policy_parses_and_defines_both_roles() {
        let mut tables = Tables::default();
        tables
            .add_text(BUILTIN_POLICY_CSV, MatchMode::Glob, None)
            .expect("builtin parses");
        assert!(tables.rules.contains_key("role:readonly"));
        assert!(tables.rules.contains_key("role:admin"));
        // The static is the same text, so it must not have fallen back to empty.
        assert!(BUILTIN.rules.contains_key("role:admin"));
    }

    #[test]
    fn builtin_roles() {
        let p = Policy::default();
        check(
            &p,
            &[
                // role:readonly: get on everything it lists, logs too, nothing else.
                (&["role:readonly"], "applications", "get", "any/app", true),
                (&["role:readonly"], "logs", "get", "any/app", true),
                (&["role:readonly"], "clusters", "get", "https://k8s", true),
                (&["role:readonly"], "accounts", "get", "alice", true),
                (&["role:readonly"], "applications", "sync", "any/app", false),
                (&["role:readonly"], "exec", "create", "any/app", false),
                // role:admin, including what it inherits from role:readonly.
                (&["role:admin"], "applications", "sync", "p/a", true),
                (&["role:admin"], "applications", "get", "p/a", true),
                (&["role:admin"], "clusters", "create", "https://k8s", true),
                (
                    &["role:admin"],
                    "applications",
                    "action/apps/Deployment/restart",
                    "p/a",
                    true,
                ),
                (
                    &["role:admin"],
                    "applications",
                    "delete/*/Pod/ns/pod-1",
                    "p/a",
                    true,
                ),
                (&["role:admin"], "applications", "rollback", "p/a", true),
                // Faithful to Argo's builtin: extensions need an explicit grant.
                (&["role:admin"], "extensions", "invoke", "httpbin", false),
                // The local `admin` account is bound to role:admin by the builtin `g` line.
                (&["admin"], "projects", "delete", "default", true),
                // Nobody else gets anything without a policy.
                (&["alice"], "applications", "get", "p/a", false),
                (&[], "applications", "get", "p/a", false),
            ],
        );
    }

    #[test]
    fn org_admin_example_from_argo_docs() {
        let p = policy(
            "
p, role:org-admin, applications, *, */*, allow
p, role:org-admin, clusters, get, *, allow
p, role:org-admin, repositories, get, *, allow
p, role:org-admin, repositories, create, *, allow
p, role:org-admin, repositories, update, *, allow
p, role:org-admin, repositories, delete, *, allow
p, role:org-admin, logs, get, *, allow
p, role:org-admin, exec, create, */*, allow

g, your-github-org:your-team, role:org-admin
",
        );
        let team: &[&str] = &["alice", "your-github-org:your-team"];
        check(
            &p,
            &[
                (team, "applications", "create", "default/guestbook", true),
                (team, "applications", "delete", "team/app", true),
                (team, "clusters", "get", "https://k8s", true),
                (team, "clusters", "create", "https://k8s", false),
                (team, "repositories", "delete", "https://git/x", true),
                (team, "projects", "create", "team", false),
                (team, "logs", "get", "default/guestbook", true),
                (team, "exec", "create", "default/guestbook", true),
                (
                    &["alice"],
                    "applications",
                    "get",
                    "default/guestbook",
                    false,
                ),
                (
                    &["other-org:team"],
                    "applications",
                    "get",
                    "default/x",
                    false,
                ),
            ],
        );
    }

    #[test]
    fn role_scoped_to_a_project_pattern() {
        let p = policy(
            "p, role:staging-db-admins, applications, *, staging-db-admins/*, allow\n\
             p, role:staging-db-admins, projects, get, staging-db-admins, allow\n\
             g, db-admins, role:staging-db-admins",
        );
        check(
            &p,
            &[
                (
                    &["db-admins"],
                    "applications",
                    "sync",
                    "staging-db-admins/pg",
                    true,
                ),
                (
                    &["db-admins"],
                    "applications",
                    "delete",
                    "staging-db-admins/pg",
                    true,
                ),
                (&["db-admins"], "projects", "get", "staging-db-admins", true),
                (
                    &["db-admins"],
                    "applications",
                    "sync",
                    "prod-db-admins/pg",
                    false,
                ),
                (&["db-admins"], "projects", "get", "prod-db-admins", false),
                (
                    &["someone"],
                    "applications",
                    "sync",
                    "staging-db-admins/pg",
                    false,
                ),
            ],
        );
    }

    #[test]
    fn deny_overrides_allow() {
        // From Argo's docs: deny deleting the app itself, allow deleting its Pods.
        let p = policy(
            "p, example-user, applications, delete, default/prod-app, deny\n\
             p, example-user, applications, delete/*/Pod/*/*, default/prod-app, allow\n\
             p, example-user, applications, *, default/*, allow",
        );
        check(
            &p,
            &[
                (
                    &["example-user"],
                    "applications",
                    "delete",
                    "default/prod-app",
                    false,
                ),
                (
                    &["example-user"],
                    "applications",
                    "delete//Pod/prod/web-1",
                    "default/prod-app",
                    true,
                ),
                (
                    &["example-user"],
                    "applications",
                    "delete",
                    "default/other",
                    true,
                ),
                (
                    &["example-user"],
                    "applications",
                    "sync",
                    "default/prod-app",
                    true,
                ),
            ],
        );
    }

    #[test]
    fn deny_is_pooled_across_groups_and_roles() {
        // argo-cd #17547: Argo lets the allowing group win; Ferry lets the deny win.
        let p = policy(
            "g, k8s-admins, role:admin\n\
             p, role:test, projects, get, *, deny\n\
             g, userA@example.com, role:test",
        );
        check(
            &p,
            &[
                (&["k8s-admins"], "projects", "get", "default", true),
                (
                    &["userA@example.com", "k8s-admins"],
                    "projects",
                    "get",
                    "default",
                    false,
                ),
                // The deny only covers what it names.
                (
                    &["userA@example.com", "k8s-admins"],
                    "projects",
                    "update",
                    "default",
                    true,
                ),
            ],
        );
    }

    #[test]
    fn default_role_applies_to_everyone_and_deny_can_narrow_it() {
        let data = cm(&[
            (POLICY_DEFAULT_KEY, " role:readonly "),
            (
                POLICY_CSV_KEY,
                "p, contractor, applications, get, secret/*, deny",
            ),
        ]);
        let p = Policy::from_config_map(&data).expect("parses");
        assert_eq!(p.default_role(), Some("role:readonly"));
        check(
            &p,
            &[
                (&["bob"], "applications", "get", "default/guestbook", true),
                (&["bob"], "applications", "sync", "default/guestbook", false),
                (&["bob"], "logs", "get", "default/guestbook", true),
                (&["bob"], "clusters", "create", "https://k8s", false),
                // Anonymous: the default role alone.
                (&[], "projects", "get", "default", true),
                // Stricter than Argo: a deny can take away what the default role grants.
                (
                    &["contractor"],
                    "applications",
                    "get",
                    "secret/vault",
                    false,
                ),
                (
                    &["contractor"],
                    "applications",
                    "get",
                    "default/guestbook",
                    true,
                ),
            ],
        );
        // Without policy.default there is no default role.
        assert_eq!(policy("").default_role(), None);
        assert!(!policy("").enforce(&subs(&["bob"]), "applications", "get", "default/x"));
    }

    #[test]
    fn glob_matching_follows_gobwas_without_separators() {
        let p = policy(
            "p, u, applications, get, team-*/web-?, allow\n\
             p, u, applications, sync, */app-namespace/*, allow\n\
             p, u, applications, action/extensions/*, default/*, allow\n\
             p, u, logs, get, \"ops/{api,worker}-[0-9]\", allow\n\
             p, u, clusters, get, [!x]*, allow",
        );
        check(
            &p,
            &[
                (&["u"], "applications", "get", "team-a/web-1", true),
                (&["u"], "applications", "get", "team-a/web-10", false),
                (&["u"], "applications", "get", "other/web-1", false),
                // `*` crosses `/`, as Argo documents.
                (&["u"], "applications", "get", "team-a/b/web-1", true),
                (
                    &["u"],
                    "applications",
                    "sync",
                    "proj/app-namespace/guestbook",
                    true,
                ),
                (
                    &["u"],
                    "applications",
                    "sync",
                    "proj/other-ns/guestbook",
                    false,
                ),
                (
                    &["u"],
                    "applications",
                    "action/extensions/DaemonSet/test",
                    "default/my-app",
                    true,
                ),
                (
                    &["u"],
                    "applications",
                    "action/apps/Deployment/restart",
                    "default/my-app",
                    false,
                ),
                (&["u"], "logs", "get", "ops/api-1", true),
                (&["u"], "logs", "get", "ops/worker-9", true),
                (&["u"], "logs", "get", "ops/cron-1", false),
                (&["u"], "logs", "get", "ops/api-x", false),
                (&["u"], "clusters", "get", "https://k8s", true),
                (&["u"], "clusters", "get", "xyz", false),
                // Glob is case-sensitive and whole-string.
                (&["u"], "applications", "get", "Team-a/web-1", false),
                (&["u"], "applications", "get", "xteam-a/web-1", false),
            ],
        );
    }

    #[test]
    fn regex_match_mode() {
        let data = cm(&[
            (MATCH_MODE_KEY, "regex"),
            (POLICY_DEFAULT_KEY, "role:readonly"),
            (
                POLICY_CSV_KEY,
                "p, u, applications, sync, ^team-(a|b)/.+$, allow",
            ),
        ]);
        let p = Policy::from_config_map(&data).expect("parses");
        assert_eq!(p.match_mode(), MatchMode::Regex);
        check(
            &p,
            &[
                (&["u"], "applications", "sync", "team-a/x", true),
                (&["u"], "applications", "sync", "team-c/x", false),
                // The builtin role keeps its glob meaning (`*/*`) in regex mode.
                (&["u"], "applications", "get", "any/app", true),
            ],
        );
        let bad = cm(&[
            (MATCH_MODE_KEY, "regex"),
            (POLICY_CSV_KEY, "p, u, *, *, (, allow"),
        ]);
        assert!(matches!(
            Policy::from_config_map(&bad),
            Err(RbacError::Parse { line: 1, .. })
        ));
        let typo = cm(&[(MATCH_MODE_KEY, "Regex")]);
        assert!(matches!(
            Policy::from_config_map(&typo),
            Err(RbacError::MatchMode(v)) if v == "Regex"
        ));
    }

    #[test]
    fn project_role_via_extra_lines() {
        let p = policy("")
            .with_extra(
                "p, proj:my-project:ci-role, applications, sync, my-project/*, allow\n\
                 g, ci-bots, proj:my-project:ci-role",
            )
            .expect("extra parses");
        check(
            &p,
            &[
                (
                    &["proj:my-project:ci-role"],
                    "applications",
                    "sync",
                    "my-project/web",
                    true,
                ),
                (
                    &["proj:my-project:ci-role"],
                    "applications",
                    "sync",
                    "other/web",
                    false,
                ),
                (
                    &["proj:my-project:ci-role"],
                    "applications",
                    "delete",
                    "my-project/web",
                    false,
                ),
                (
                    &["proj:other:ci-role"],
                    "applications",
                    "sync",
                    "my-project/web",
                    false,
                ),
                (&["ci-bots"], "applications", "sync", "my-project/web", true),
            ],
        );
    }

    #[test]
    fn project_role_is_validated_and_confined_to_its_project() {
        let base = Policy::from_config_map(&cm(&[(
            POLICY_CSV_KEY,
            // A global line naming the project role: reachable by the project's groups only
            // for requests on that project.
            "p, proj:my-project:ci-role, clusters, get, *, allow",
        )]))
        .expect("parses");
        let p = base
            .with_project_role(
                "my-project",
                "ci-role",
                &subs(&[
                    "p, proj:my-project:ci-role, applications, sync, my-project/*, allow",
                    "p, proj:my-project:ci-role, applications, sync, my-project/frozen, deny",
                ]),
                &subs(&["my-org:ci"]),
            )
            .expect("valid project role");
        let ci: &[&str] = &["proj:my-project:ci-role"];
        check(
            &p,
            &[
                (ci, "applications", "sync", "my-project/web", true),
                (ci, "applications", "sync", "my-project/frozen", false),
                (ci, "applications", "sync", "other-project/web", false),
                // Implicit read access to its own project only.
                (ci, "projects", "get", "my-project", true),
                (ci, "projects", "get", "other-project", false),
                (
                    &["my-org:ci"],
                    "applications",
                    "sync",
                    "my-project/web",
                    true,
                ),
                (
                    &["my-org:ci"],
                    "applications",
                    "sync",
                    "other-project/web",
                    false,
                ),
                (
                    &["my-org:ci"],
                    "clusters",
                    "get",
                    "my-project/https://k8s",
                    true,
                ),
                (&["my-org:ci"], "clusters", "get", "https://k8s", false),
            ],
        );

        let reject = |policies: &[&str], groups: &[&str]| {
            base.with_project_role("my-project", "ci-role", &subs(policies), &subs(groups))
                .err()
        };
        for bad in [
            // another subject
            "p, role:admin, applications, sync, my-project/*, allow",
            // outside the project
            "p, proj:my-project:ci-role, applications, sync, */*, allow",
            "p, proj:my-project:ci-role, applications, sync, my-project-2/*, allow",
            // a non project-scoped resource
            "p, proj:my-project:ci-role, accounts, update, my-project/*, allow",
            // unknown action, missing effect, `g` lines
            "p, proj:my-project:ci-role, applications, sync*, my-project/*, allow",
            "p, proj:my-project:ci-role, applications, sync, my-project/*",
            "g, proj:my-project:ci-role, role:admin",
        ] {
            assert!(
                matches!(reject(&[bad], &[]), Some(RbacError::ProjectRole { .. })),
                "accepted {bad:?}"
            );
        }
        assert!(reject(&[], &["  "]).is_some());
        assert!(
            base.with_project_role("My_Project", "ci-role", &[], &[])
                .is_err()
        );
        assert!(
            base.with_project_role("my-project", "-ci", &[], &[])
                .is_err()
        );
        let err = reject(&["p, x, applications, get, my-project/*, allow"], &[])
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("policy 1"), "{err}");
    }

    #[test]
    fn group_inheritance_is_transitive_and_cycle_safe() {
        let p = policy(
            "g, alice, team:web\n\
             g, team:web, role:deployer\n\
             g, role:deployer, role:syncer\n\
             p, role:syncer, applications, sync, web/*, allow\n\
             g, role:loop-a, role:loop-b\n\
             g, role:loop-b, role:loop-a\n\
             g, carol, role:loop-a",
        );
        check(
            &p,
            &[
                (&["alice"], "applications", "sync", "web/frontend", true),
                (&["team:web"], "applications", "sync", "web/frontend", true),
                (&["role:syncer"], "applications", "sync", "api/x", false),
                (&["bob"], "applications", "sync", "web/frontend", false),
                // The cycle terminates and grants nothing.
                (&["carol"], "applications", "sync", "web/frontend", false),
            ],
        );
        let p = policy("g, dave, role:ops\ng, role:ops, role:admin");
        assert!(p.enforce(&subs(&["dave"]), "clusters", "delete", "https://k8s"));
    }

    #[test]
    fn rollback_follows_sync_unless_denied() {
        let p = policy(
            "p, dev, applications, sync, dev/*, allow\n\
             p, dev, applications, rollback, dev/frozen, deny\n\
             p, oncall, applications, rollback, prod/*, allow\n\
             p, locked, applications, *, team/*, allow\n\
             p, locked, applications, sync, team/pinned, deny",
        );
        check(
            &p,
            &[
                (&["dev"], "applications", "rollback", "dev/web", true),
                (&["dev"], "applications", "rollback", "dev/frozen", false),
                (&["dev"], "applications", "sync", "dev/frozen", true),
                (&["dev"], "applications", "rollback", "prod/web", false),
                // A rollback grant alone does not grant sync.
                (&["oncall"], "applications", "rollback", "prod/web", true),
                (&["oncall"], "applications", "sync", "prod/web", false),
                // A sync deny also blocks rollback, as in Argo CD.
                (&["locked"], "applications", "rollback", "team/web", true),
                (
                    &["locked"],
                    "applications",
                    "rollback",
                    "team/pinned",
                    false,
                ),
            ],
        );
    }

    #[test]
    fn parse_errors_carry_line_numbers() {
        let cases: &[(&str, usize, &str)] = &[
            ("# comment\n\nx, a, b\n", 3, "unknown line type"),
            ("p, a, applications, get\n", 1, "5 or 6 fields"),
            (
                "\np, a, applications, get, */*, allow, extra\n",
                2,
                "5 or 6 fields",
            ),
            ("p, a, applications, get, */*, Allow\n", 1, "effect"),
            ("g, a\n", 1, "3 fields"),
            ("g, a, b, c\n", 1, "3 fields"),
            ("p, a, applications, get, , allow\n", 1, "field 5 is empty"),
            ("p, a, applications, get, \"*/*, allow\n", 1, "unterminated"),
            (
                "p, a, applications, get, a\"b, allow\n",
                1,
                "unquoted field",
            ),
            ("p, a, applications, get, [abc, allow\n", 1, "unclosed `[`"),
            (
                "p, a, applications, get, \"{a,b\", allow\n",
                1,
                "unclosed `{`",
            ),
            ("p, a, applications, get, [z-a], allow\n", 1, "out of order"),
            ("p, a, applications, get, ab\\, allow\n", 1, "escape"),
        ];
        for (csv, want_line, want_text) in cases {
            match Policy::from_config_map(&cm(&[(POLICY_CSV_KEY, csv)])) {
                Err(RbacError::Parse { line, message }) => {
                    assert_eq!(line, *want_line, "{csv:?}: {message}");
                    assert!(message.contains(want_text), "{csv:?}: {message}");
                }
                other => panic!("{csv:?}: expected a parse error, got {other:?}"),
            }
        }
        let err = Policy::default()
            .with_extra("p, a, b, c, d\nbogus")
            .expect_err("second line is bad");
        assert_eq!(
            err.to_string(),
            "policy.csv line 2: unknown line type \"bogus\": expected `p` or `g`"
        );
    }

    #[test]
    fn overlay_keys_are_merged_and_named_in_errors() {
        let data = cm(&[
            (POLICY_CSV_KEY, "p, role:a, applications, get, */*, allow"),
            (
                "policy.tester-overlay.csv",
                "p, role:tester, projects, *, *, allow\ng, my-org:team-qa, role:tester",
            ),
            ("policy.B.csv", "g, my-org:team-qa, role:a"),
            ("policy.default", ""),
            ("unrelated", "not, a, policy"),
        ]);
        let p = Policy::from_config_map(&data).expect("parses");
        check(
            &p,
            &[
                (&["my-org:team-qa"], "projects", "delete", "x", true),
                (&["my-org:team-qa"], "applications", "get", "x/y", true),
                (&["my-org:team-qa"], "applications", "sync", "x/y", false),
            ],
        );
        let bad = cm(&[
            (POLICY_CSV_KEY, "p, a, b, c, d"),
            ("policy.overlay.csv", "\n\np, a, b"),
        ]);
        match Policy::from_config_map(&bad) {
            Err(RbacError::ParseKey { key, line, .. }) => {
                assert_eq!(key, "policy.overlay.csv");
                assert_eq!(line, 3);
            }
            other => panic!("expected ParseKey, got {other:?}"),
        }
        assert!(!is_overlay_key("policy.csv"));
        assert!(!is_overlay_key("policy..csv"));
        assert!(is_overlay_key("policy.x.csv"));
    }

    #[test]
    fn csv_quoting_and_spacing() {
        let p = policy(
            "  p ,   alice   ,applications,  get ,  \"team/{a,b}\"  , allow  \n\
             p, \"say \"\"hi\"\"\", applications, get, */*, allow",
        );
        check(
            &p,
            &[
                (&["alice"], "applications", "get", "team/a", true),
                (&["alice"], "applications", "get", "team/b", true),
                (&["alice"], "applications", "get", "team/c", false),
                (&["say \"hi\""], "applications", "get", "x/y", true),
            ],
        );
    }

    #[test]
    fn subjects_are_exact_and_empty_ones_cannot_be_named() {
        let p = policy("p, *, applications, get, */*, allow");
        // Subjects are matched exactly, never as patterns.
        assert!(!p.enforce(&subs(&["alice"]), "applications", "get", "a/b"));
        assert!(p.enforce(&subs(&["*"]), "applications", "get", "a/b"));
        // `""` is Argo's "no subject"; no line may name it, quoted or not.
        for csv in [
            "p, \"\", applications, get, */*, allow",
            "g, \"\", role:admin",
        ] {
            assert!(
                matches!(
                    Policy::from_config_map(&cm(&[(POLICY_CSV_KEY, csv)])),
                    Err(RbacError::Parse { line: 1, .. })
                ),
                "accepted {csv:?}"
            );
        }
        assert!(!p.enforce(&subs(&[""]), "applications", "get", "a/b"));
    }

    #[test]
    fn missing_effect_means_allow() {
        let p =
            policy("p, alice, applications, get, */*\np, alice, applications, get, secret/*, deny");
        check(
            &p,
            &[
                (&["alice"], "applications", "get", "team/web", true),
                (&["alice"], "applications", "get", "secret/vault", false),
                (&["alice"], "applications", "sync", "team/web", false),
            ],
        );
    }

    #[test]
    fn project_role_rules_stay_in_their_project_in_regex_mode() {
        // Unanchored regexes are why confinement is checked per request, not only by the
        // `<project>/` prefix test: `my-project/.*` also matches inside `other/my-project/x`.
        let base = Policy::from_config_map(&cm(&[(MATCH_MODE_KEY, "regex")])).expect("parses");
        let p = base
            .with_project_role(
                "my-project",
                "viewer",
                &subs(&["p, proj:my-project:viewer, applications, get, my-project/.*, allow"]),
                &[],
            )
            .expect("valid project role");
        check(
            &p,
            &[
                (
                    &["proj:my-project:viewer"],
                    "applications",
                    "get",
                    "my-project/web",
                    true,
                ),
                (
                    &["proj:my-project:viewer"],
                    "applications",
                    "get",
                    "other/my-project/web",
                    false,
                ),
            ],
        );
    }

    #[test]
    fn scopes_parsing_and_claims() {
        assert_eq!(policy("").scopes(), ["groups"]);
        assert_eq!(Policy::default().scopes(), ["groups"]);
        let parse = |raw: &str| Policy::from_config_map(&cm(&[(SCOPES_KEY, raw)]));
        let scopes = |raw: &str| parse(raw).expect("parses").scopes().to_vec();
        assert_eq!(scopes("[groups, email]"), ["groups", "email"]);
        assert_eq!(scopes("['groups', \"email\"]"), ["groups", "email"]);
        assert_eq!(scopes("- groups\n- email\n"), ["groups", "email"]);
        assert_eq!(scopes("email"), ["email"]);
        assert!(scopes("[]").is_empty());
        assert_eq!(scopes(""), ["groups"]);
        assert!(matches!(parse("[groups"), Err(RbacError::Scopes(_))));
        assert!(matches!(parse("[groups, ]"), Err(RbacError::Scopes(_))));

        let p = parse("[groups, email]").expect("parses");
        let claims = serde_json::json!({
            "sub": "alice",
            "groups": ["my-org:team-alpha", 7, "my-org:team-beta"],
            "email": "alice@example.org",
            "name": "ignored",
        });
        assert_eq!(
            p.subjects_from_claims(&claims),
            [
                "alice",
                "my-org:team-alpha",
                "my-org:team-beta",
                "alice@example.org"
            ]
        );
        assert_eq!(
            policy("").subjects_from_claims(&serde_json::json!({"sub": "", "groups": "solo"})),
            ["solo"]
        );
    }

    #[test]
    fn docs_example_with_sso_groups_and_email_scope() {
        let data = cm(&[
            (
                POLICY_CSV_KEY,
                "p, my-org:team-alpha, applications, sync, my-project/*, allow\n\
                 g, my-org:team-beta, role:admin\n\
                 g, user@example.org, role:admin",
            ),
            (POLICY_DEFAULT_KEY, "role:readonly"),
            (SCOPES_KEY, "[groups, email]"),
        ]);
        let p = Policy::from_config_map(&data).expect("parses");
        let alpha = p.subjects_from_claims(
            &serde_json::json!({"sub": "a", "groups": ["my-org:team-alpha"]}),
        );
        let by_email =
            p.subjects_from_claims(&serde_json::json!({"sub": "u", "email": "user@example.org"}));
        assert!(p.enforce(&alpha, "applications", "sync", "my-project/x"));
        assert!(!p.enforce(&alpha, "applications", "sync", "other/x"));
        assert!(p.enforce(&alpha, "applications", "get", "other/x"));
        assert!(p.enforce(&by_email, "clusters", "create", "https://k8s"));
        assert!(!p.enforce(&alpha, "clusters", "create", "https://k8s"));
    }

    #[test]
    fn app_object_forms() {
        assert_eq!(
            app_object("default", None, "guestbook"),
            "default/guestbook"
        );
        assert_eq!(
            app_object("default", Some(""), "guestbook"),
            "default/guestbook"
        );
        assert_eq!(
            app_object("default", Some("team-ns"), "guestbook"),
            "default/team-ns/guestbook"
        );
        assert_eq!(request_project("applications", "p/ns/a"), Some("p"));
        assert_eq!(request_project("projects", "p"), Some("p"));
        assert_eq!(request_project("accounts", "p/x"), None);
    }
}
