//! Source components: KubeVela's `helm` and `kustomize` (fluxcd addon) component types.
//!
//! They have no template. Their definitions carry `spec.schematic.builtin: source` and a
//! parameter JSON Schema; [`crate::render`] validates their properties and emits nothing for
//! them, and [`source_component`] / [`sources`] turn them into a [`SourceSpec`]: an Argo CD
//! [`ApplicationSource`] that Ferry's source pipeline fetches and renders (`helm template`,
//! `kustomize build`), plus what the Flux objects carried that an `ApplicationSource` has no
//! field for. See `docs/oam.md`, "Source components".

use std::sync::OnceLock;
use std::time::Duration;

use ferry_model::{ApplicationSource, HelmSource, KustomizeSource};
use serde_json::{Value, json};

use crate::workflow::parse_duration;
use crate::{Application, Component, ComponentDefinition, Definitions, OamError, Site};

/// `spec.schematic.builtin` of a source component definition.
pub const BUILTIN_SOURCE: &str = "source";

/// A helm or kustomize component, as Ferry's source pipeline needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSpec {
    /// Component name (`spec.components[].name`).
    pub component: String,
    /// Where to fetch from and how to render it.
    pub source: ApplicationSource,
    /// `targetNamespace`: the destination namespace (Argo CD `spec.destination.namespace`);
    /// `None` = the Application's namespace.
    pub destination_namespace: Option<String>,
    /// `secretRef`: name of the Secret, in the Application's namespace, holding the
    /// repository credentials (Flux: `username`/`password`, or `identity`/`known_hosts` for SSH).
    pub secret_ref: Option<String>,
    /// `pullInterval`: how often to poll the repository (KubeVela default `5m`).
    pub poll_interval: Duration,
    /// `timeout`: for fetching (clone / index download), if given.
    pub fetch_timeout: Option<Duration>,
    pub kind: SourceComponent,
}

/// What is specific to each source component type.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceComponent {
    Helm {
        /// `interval`: how often the release is reconciled (KubeVela default `30s`).
        reconcile_interval: Duration,
        /// `installTimeout` (default `10m`).
        install_timeout: Duration,
        /// `retries` on install/upgrade failure (default 3).
        retries: u32,
        /// `upgradeCRD`: replace CRDs on upgrade (Flux `upgrade.crds: CreateReplace`).
        upgrade_crds: bool,
    },
    Kustomize {
        /// `prune` (default true): delete objects that are no longer rendered.
        prune: bool,
        /// `suspend` (default false): stop reconciling.
        suspend: bool,
        /// `force` (default false): recreate objects when a patch fails on an immutable field.
        force: bool,
        /// `imageRepository`: Flux image automation for the repository.
        image_automation: Option<ImageAutomation>,
    },
}

/// The kustomize component's `imageRepository` block, typed for Flux image automation.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageAutomation {
    /// `image`: the image to scan (ImageRepository `spec.image`).
    pub image: String,
    /// `secretRef`: docker-registry Secret (ImageRepository `spec.secretRef.name`).
    pub secret_ref: Option<String>,
    /// `filterTags` (ImagePolicy `spec.filterTags`).
    pub filter_tags: Option<FilterTags>,
    /// `policy` (ImagePolicy `spec.policy`).
    pub policy: ImagePolicyChoice,
    /// `commitMessage`, appended to KubeVela's `Update image automatically.\n`.
    pub commit_message: Option<String>,
    /// The component's `pullInterval`: KubeVela uses it for the ImageRepository and the
    /// ImageUpdateAutomation.
    pub interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterTags {
    /// Regular expression (Go RE2 syntax, named groups `(?P<ts>...)`).
    pub pattern: Option<String>,
    /// Replacement using the pattern's groups (`$ts`).
    pub extract: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortOrder {
    Asc,
    Desc,
}

/// Flux ImagePolicy `spec.policy`: exactly one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImagePolicyChoice {
    Numerical {
        order: SortOrder,
    },
    /// Flux defaults the order to `asc`.
    Alphabetical {
        order: SortOrder,
    },
    Semver {
        range: String,
    },
}

/// Whether `def` is a source component definition (`spec.schematic.builtin: source`).
pub fn is_source_definition(def: &ComponentDefinition) -> bool {
    def.spec.schematic.builtin.as_deref() == Some(BUILTIN_SOURCE)
}

/// The built-in definitions, parsed once (callers clone them to add their own).
pub fn builtin_definitions() -> Result<&'static Definitions, OamError> {
    static DEFS: OnceLock<Result<Definitions, String>> = OnceLock::new();
    DEFS.get_or_init(|| Definitions::builtin().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| OamError::Definition {
            name: "built-in".into(),
            reason: e.clone(),
        })
}

/// The [`SourceSpec`] of a component whose type is the built-in `helm` or `kustomize`;
/// `None` for any other type. Properties are validated against the built-in schema.
pub fn source_component(component: &Component) -> Option<Result<SourceSpec, OamError>> {
    let defs = match builtin_definitions() {
        Ok(d) => d,
        Err(e) => return Some(Err(e)),
    };
    source_component_with(component, defs)
}

/// As [`source_component`], with the component's type looked up in `defs`: `None` unless its
/// definition is a `builtin: source` one (so a platform team's Jsonnet `helm` renders instead).
pub fn source_component_with(
    component: &Component,
    defs: &Definitions,
) -> Option<Result<SourceSpec, OamError>> {
    let def = defs.component(&component.type_name)?;
    is_source_definition(def).then(|| source_spec(component, def))
}

/// Every source component of `app`, in component order. Unknown component types are errors,
/// as in [`crate::render`].
pub fn sources(app: &Application, defs: &Definitions) -> Result<Vec<SourceSpec>, OamError> {
    let mut out = Vec::new();
    for c in &app.spec.components {
        if defs.component(&c.type_name).is_none() {
            return Err(OamError::UnknownComponentType {
                component: c.name.clone(),
                type_name: c.type_name.clone(),
                known: defs.component_names(),
            });
        }
        if let Some(spec) = source_component_with(c, defs) {
            out.push(spec?);
        }
    }
    Ok(out)
}

/// Validates `component` against `def` (a `builtin: source` definition) and maps it.
pub(crate) fn source_spec(
    component: &Component,
    def: &ComponentDefinition,
) -> Result<SourceSpec, OamError> {
    let site = Site {
        component: component.name.clone(),
        trait_type: None,
    };
    let definition = format!("ComponentDefinition/{}", def.metadata.name);
    let bad = |reason: String| OamError::Builtin {
        site: site.clone(),
        definition: definition.clone(),
        reason,
    };
    if let Some(t) = component.traits.first() {
        return Err(bad(format!(
            "trait `{}`: traits on a source component are not supported (its objects are \
             rendered by Ferry's source pipeline, not by a template)",
            t.type_name
        )));
    }
    let p = crate::check_properties(
        &component.properties,
        def.spec.schematic.parameter_schema.as_ref(),
        &site,
    )?;
    let kind = def
        .spec
        .workload
        .pointer("/definition/kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let m = Props { p: &p, bad: &bad };
    match kind {
        "HelmRelease" => helm(component, &m),
        "HelmChart" => helmchart(component, &m),
        "Kustomization" => kustomize(component, &m),
        other => Err(bad(format!(
            "a `builtin: source` definition needs spec.workload.definition.kind HelmRelease \
             (helm) or Kustomization (kustomize), has `{other}`"
        ))),
    }
}

/// Validated, defaulted properties and the error constructor.
struct Props<'a> {
    p: &'a Value,
    bad: &'a dyn Fn(String) -> OamError,
}

impl Props<'_> {
    fn str(&self, pointer: &str) -> Option<String> {
        self.p
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_owned)
    }
    fn bool(&self, pointer: &str, default: bool) -> bool {
        self.p
            .pointer(pointer)
            .and_then(Value::as_bool)
            .unwrap_or(default)
    }
    fn duration(&self, field: &str, default: &str) -> Result<Duration, OamError> {
        let s = self.str(&format!("/{field}"));
        parse_duration(s.as_deref().unwrap_or(default))
            .map_err(|e| (self.bad)(format!("properties.{field}: {e}")))
    }
    fn opt_duration(&self, field: &str) -> Result<Option<Duration>, OamError> {
        match self.str(&format!("/{field}")) {
            None => Ok(None),
            Some(_) => self.duration(field, "").map(Some),
        }
    }
    fn refuse_oss(&self, repo_type: &str) -> Result<(), OamError> {
        if repo_type == "oss" {
            return Err((self.bad)(
                "properties.repoType: `oss` (an object storage bucket) is not supported: \
                 Ferry fetches from Git and Helm repositories only"
                    .into(),
            ));
        }
        Ok(())
    }
}

fn helm(component: &Component, m: &Props<'_>) -> Result<SourceSpec, OamError> {
    let repo_type = m.str("/repoType").unwrap_or_else(|| "helm".into());
    m.refuse_oss(&repo_type)?;
    // Flux's OCI HelmRepository: `url` is `oci://host[:port]/path` and the chart is
    // `<url>/<chart>`, as Argo CD's `oci://` repoURL with `chart`; the source pipeline pulls it.
    if repo_type == "oci" && !m.str("/url").unwrap_or_default().starts_with("oci://") {
        return Err((m.bad)(
            "properties.url: with repoType: oci the URL is oci://host[:port]/path (Flux's OCI \
             HelmRepository form)"
                .into(),
        ));
    }
    if repo_type != "oci" && m.str("/url").unwrap_or_default().starts_with("oci://") {
        return Err((m.bad)(
            "properties.repoType: an oci:// URL needs repoType: oci, as Flux's HelmRepository \
             does"
                .into(),
        ));
    }
    for (field, why) in [
        (
            "sourceName",
            "it names an existing Flux source object; give `url` (and `repoType`) instead",
        ),
        (
            "valuesFrom",
            "values from ConfigMaps/Secrets need cluster reads at render time; use `values` or \
             `valuesFiles`",
        ),
    ] {
        if m.p.get(field).is_some() {
            return Err((m.bad)(format!(
                "properties.{field} is not supported: {why}"
            )));
        }
    }
    let url = m.str("/url").unwrap_or_default();
    let chart = m.str("/chart").unwrap_or_default();
    let mut source = ApplicationSource {
        repo_url: url,
        ..Default::default()
    };
    if repo_type == "git" {
        // `chart` is the chart's directory in the repository.
        source.path = Some(chart);
        source.target_revision = git_revision(m)?;
    } else {
        if m.p.get("git").is_some() {
            return Err((m.bad)(
                "properties.git is only read with repoType: git".into(),
            ));
        }
        source.chart = Some(chart);
        source.target_revision = m.str("/version");
    }
    let helm = HelmSource {
        value_files: m
            .p
            .get("valuesFiles")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        values_object: m.p.get("values").cloned(),
        // Flux's HelmRelease default: `<targetNamespace>-<name>`, or the name, where KubeVela
        // names the HelmRelease after the component.
        release_name: m.str("/releaseName").or_else(|| {
            Some(match m.str("/targetNamespace") {
                Some(ns) => format!("{ns}-{}", component.name),
                None => component.name.clone(),
            })
        }),
        ..Default::default()
    };
    if helm != HelmSource::default() {
        source.helm = Some(helm);
    }
    Ok(SourceSpec {
        component: component.name.clone(),
        source,
        destination_namespace: m.str("/targetNamespace"),
        secret_ref: m.str("/secretRef").filter(|s| !s.is_empty()),
        poll_interval: m.duration("pullInterval", "5m")?,
        fetch_timeout: m.opt_duration("timeout")?,
        kind: SourceComponent::Helm {
            reconcile_interval: m.duration("interval", "30s")?,
            install_timeout: m.duration("installTimeout", "10m")?,
            retries: m
                .p
                .get("retries")
                .and_then(Value::as_u64)
                .and_then(|r| u32::try_from(r).ok())
                .unwrap_or(3),
            upgrade_crds: m.bool("/upgradeCRD", false),
        },
    })
}

/// KubeVela's native `helmchart`: `chart.source` is `oci://host/path/chart` or a chart name in
/// `chart.repoURL`; `release.{name, namespace}` default to the component's name and the app's
/// namespace.
fn helmchart(component: &Component, m: &Props<'_>) -> Result<SourceSpec, OamError> {
    for (field, why) in [
        (
            "valuesFrom",
            "values from ConfigMaps/Secrets need cluster reads at render time; use `values`",
        ),
        (
            "healthStatus",
            "Ferry judges the health of the chart's objects itself (Deployments available, Jobs \
             complete, ...)",
        ),
        (
            "options/cache",
            "Ferry caches charts by repository and version itself",
        ),
    ] {
        if m.p.pointer(&format!("/{field}")).is_some() {
            return Err((m.bad)(format!(
                "properties.{} is not supported: {why}",
                field.replace('/', ".")
            )));
        }
    }
    // Release management Ferry has no release for: only the defaults are accepted.
    for (option, default) in [
        ("includeCRDs", json!(true)),
        ("skipHooks", json!(false)),
        ("createNamespace", json!(true)),
        ("timeout", json!("5m")),
        ("maxHistory", json!(10)),
        ("atomic", json!(false)),
        ("wait", json!(false)),
        ("waitTimeout", json!("10m")),
        ("force", json!(false)),
        ("recreatePods", json!(false)),
        ("cleanupOnFail", json!(false)),
    ] {
        if m.p
            .pointer(&format!("/options/{option}"))
            .is_some_and(|v| *v != default)
        {
            return Err((m.bad)(format!(
                "properties.options.{option}: only the default ({default}) is supported: Ferry \
                 renders the chart and applies its objects itself, with no Helm release to manage"
            )));
        }
    }
    let source_ref = m.str("/chart/source").unwrap_or_default();
    let version = m
        .str("/chart/version")
        .filter(|v| !v.is_empty() && v != "latest");
    let (repo_url, chart) = if let Some(rest) = source_ref.strip_prefix("oci://") {
        if m.p.pointer("/chart/repoURL").is_some() {
            return Err((m.bad)(
                "properties.chart.repoURL: an oci:// source names its registry itself".into(),
            ));
        }
        match rest.trim_end_matches('/').rsplit_once('/') {
            Some((repo, chart)) if !repo.is_empty() && !chart.is_empty() => {
                (format!("oci://{repo}"), chart.to_string())
            }
            _ => {
                return Err((m.bad)(format!(
                    "properties.chart.source: `{source_ref}` is not oci://host/path/chart"
                )));
            }
        }
    } else if source_ref.starts_with("http://")
        || source_ref.starts_with("https://")
        || source_ref.ends_with(".tgz")
        || source_ref.ends_with(".tar.gz")
    {
        return Err((m.bad)(
            "properties.chart.source: a chart tarball URL is not supported: Ferry fetches charts \
             from Helm repositories (give the chart name and chart.repoURL) and OCI registries \
             (oci://...)"
                .into(),
        ));
    } else {
        let Some(repo) = m.str("/chart/repoURL").filter(|r| !r.is_empty()) else {
            return Err((m.bad)(
                "properties.chart.repoURL is required for repository-based charts".into(),
            ));
        };
        (repo, source_ref)
    };
    let secret_ref = match (
        m.str("/chart/auth/secretRef/name"),
        m.str("/chart/auth/secretRef/namespace"),
    ) {
        (Some(_), Some(ns)) if !ns.is_empty() => {
            return Err((m.bad)(format!(
                "properties.chart.auth.secretRef.namespace `{ns}`: the Secret must be in the \
                 Application's namespace"
            )));
        }
        (name, _) => name,
    };
    let skip_tests = m.bool("/options/skipTests", true);
    let helm = HelmSource {
        values_object: m.p.get("values").cloned(),
        release_name: Some(
            m.str("/release/name")
                .unwrap_or_else(|| component.name.clone()),
        ),
        skip_tests,
        ..Default::default()
    };
    Ok(SourceSpec {
        component: component.name.clone(),
        source: ApplicationSource {
            repo_url,
            chart: Some(chart),
            target_revision: version,
            helm: Some(helm),
            ..Default::default()
        },
        destination_namespace: m.str("/release/namespace"),
        secret_ref,
        poll_interval: Duration::from_secs(300),
        fetch_timeout: None,
        kind: SourceComponent::Helm {
            reconcile_interval: Duration::from_secs(30),
            install_timeout: Duration::from_secs(600),
            retries: 3,
            upgrade_crds: false,
        },
    })
}

/// The Git revision of a `git:` block: Flux's precedence commit > name > tag > branch; no
/// block (or an empty one) = `None` (Argo CD's HEAD).
fn git_revision(m: &Props<'_>) -> Result<Option<String>, OamError> {
    if m.p.pointer("/git/semver").is_some() {
        return Err((m.bad)(
            "properties.git.semver is not supported yet: give git.tag, git.branch or git.commit"
                .into(),
        ));
    }
    Ok(["commit", "name", "tag", "branch"]
        .iter()
        .find_map(|f| m.str(&format!("/git/{f}"))))
}

fn kustomize(component: &Component, m: &Props<'_>) -> Result<SourceSpec, OamError> {
    let repo_type = m.str("/repoType").unwrap_or_else(|| "git".into());
    m.refuse_oss(&repo_type)?;
    let poll_interval = m.duration("pullInterval", "5m")?;
    let target_namespace = m.str("/targetNamespace");
    let source = ApplicationSource {
        repo_url: m.str("/url").unwrap_or_default(),
        path: m.str("/path"),
        target_revision: git_revision(m)?,
        kustomize: Some(KustomizeSource {
            namespace: target_namespace.clone(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let image_automation = match m.p.get("imageRepository") {
        None => None,
        Some(ir) => Some(image_automation(ir, poll_interval, m)?),
    };
    Ok(SourceSpec {
        component: component.name.clone(),
        source,
        destination_namespace: target_namespace,
        secret_ref: m.str("/secretRef").filter(|s| !s.is_empty()),
        poll_interval,
        fetch_timeout: m.opt_duration("timeout")?,
        kind: SourceComponent::Kustomize {
            prune: m.bool("/prune", true),
            suspend: m.bool("/suspend", false),
            force: m.bool("/force", false),
            image_automation,
        },
    })
}

fn image_automation(
    ir: &Value,
    interval: Duration,
    m: &Props<'_>,
) -> Result<ImageAutomation, OamError> {
    let s = |p: &str| ir.pointer(p).and_then(Value::as_str).map(str::to_owned);
    let order = |p: &str| match s(p).as_deref() {
        Some("desc") => SortOrder::Desc,
        _ => SortOrder::Asc,
    };
    let policy = ir.get("policy").and_then(Value::as_object);
    let set: Vec<&String> = policy.map(|p| p.keys().collect()).unwrap_or_default();
    let policy = match set.as_slice() {
        [k] if k.as_str() == "numerical" => ImagePolicyChoice::Numerical {
            order: order("/policy/numerical/order"),
        },
        [k] if k.as_str() == "alphabetical" => ImagePolicyChoice::Alphabetical {
            order: order("/policy/alphabetical/order"),
        },
        [k] if k.as_str() == "semver" => ImagePolicyChoice::Semver {
            range: s("/policy/semver/range").unwrap_or_default(),
        },
        _ => {
            return Err((m.bad)(format!(
                "properties.imageRepository.policy: needs exactly one of numerical, \
                 alphabetical, semver; has {}",
                if set.is_empty() {
                    "none".to_owned()
                } else {
                    set.iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )));
        }
    };
    let filter_tags = ir.get("filterTags").map(|_| FilterTags {
        pattern: s("/filterTags/pattern"),
        extract: s("/filterTags/extract"),
    });
    if filter_tags
        .as_ref()
        .is_some_and(|f| f.extract.is_some() && f.pattern.is_none())
    {
        return Err((m.bad)(
            "properties.imageRepository.filterTags.extract needs a pattern".into(),
        ));
    }
    Ok(ImageAutomation {
        image: s("/image").unwrap_or_default(),
        secret_ref: s("/secretRef").filter(|x| !x.is_empty()),
        filter_tags,
        policy,
        commit_message: s("/commitMessage"),
        interval,
    })
}

/// Flux's duration form (`1m0s`-like strings are not needed: whole seconds are valid Go durations).
fn go_duration(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

/// The Flux objects a kustomize component with `imageRepository` asks for, as KubeVela's
/// kustomize definition writes them (each named after the component): a GitRepository for the
/// component's repository, an ImageRepository, an ImagePolicy, and an ImageUpdateAutomation
/// that commits the policy's choice to the `# {"$imagepolicy": "<ns>:<component>"}` markers
/// under the component's path. Empty for other components. Ferry serves these kinds itself.
pub fn image_automation_objects(spec: &SourceSpec) -> Vec<Value> {
    use serde_json::json;
    let SourceComponent::Kustomize {
        image_automation: Some(ia),
        ..
    } = &spec.kind
    else {
        return Vec::new();
    };
    let name = &spec.component;
    let interval = go_duration(ia.interval);
    let branch = spec
        .source
        .target_revision
        .clone()
        .filter(|b| !b.is_empty() && b != "HEAD")
        .unwrap_or_else(|| "main".into());
    let mut repo = json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {"name": name},
        "spec": {"url": spec.source.repo_url, "interval": interval, "ref": {"branch": branch}},
    });
    if let Some(s) = &spec.secret_ref {
        repo["spec"]["secretRef"] = json!({"name": s});
    }
    let mut image = json!({
        "apiVersion": "image.toolkit.fluxcd.io/v1",
        "kind": "ImageRepository",
        "metadata": {"name": name},
        "spec": {"image": ia.image, "interval": interval},
    });
    if let Some(s) = &ia.secret_ref {
        image["spec"]["secretRef"] = json!({"name": s});
    }
    let order = |o: &SortOrder| match o {
        SortOrder::Asc => "asc",
        SortOrder::Desc => "desc",
    };
    let choice = match &ia.policy {
        ImagePolicyChoice::Numerical { order: o } => json!({"numerical": {"order": order(o)}}),
        ImagePolicyChoice::Alphabetical { order: o } => {
            json!({"alphabetical": {"order": order(o)}})
        }
        ImagePolicyChoice::Semver { range } => json!({"semver": {"range": range}}),
    };
    let mut policy = json!({
        "apiVersion": "image.toolkit.fluxcd.io/v1",
        "kind": "ImagePolicy",
        "metadata": {"name": name},
        "spec": {"imageRepositoryRef": {"name": name}, "policy": choice},
    });
    if let Some(f) = &ia.filter_tags {
        let mut ft = serde_json::Map::new();
        if let Some(p) = &f.pattern {
            ft.insert("pattern".into(), json!(p));
        }
        if let Some(e) = &f.extract {
            ft.insert("extract".into(), json!(e));
        }
        policy["spec"]["filterTags"] = Value::Object(ft);
    }
    let message = match &ia.commit_message {
        Some(m) => format!("Update image automatically.\n{m}"),
        None => "Update image automatically.".to_string(),
    };
    let path = spec.source.path.clone().unwrap_or_else(|| ".".into());
    let update = json!({
        "apiVersion": "image.toolkit.fluxcd.io/v1",
        "kind": "ImageUpdateAutomation",
        "metadata": {"name": name},
        "spec": {
            "interval": interval,
            "sourceRef": {"kind": "GitRepository", "name": name},
            "git": {
                "checkout": {"ref": {"branch": branch}},
                "commit": {
                    "author": {"name": "kubevelabot", "email": "kubevelabot@users.noreply.github.com"},
                    "messageTemplate": message,
                },
                "push": {"branch": branch},
            },
            "update": {"path": path, "strategy": "Setters"},
        },
    });
    vec![repo, image, policy, update]
}
