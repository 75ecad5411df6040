//! Argo CD's annotation resource tracking: `<app>:<group>/<kind>:<namespace>/<name>`.

/// Identity of a Kubernetes object as tracking and status use it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let gk = if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}/{}", self.kind, self.group)
        };
        if self.namespace.is_empty() {
            write!(f, "{gk} {}", self.name)
        } else {
            write!(f, "{gk} {}/{}", self.namespace, self.name)
        }
    }
}

/// The app name used in tracking ids: the Application's name when it lives in
/// the controller's namespace, `<namespace>_<name>` otherwise (as Argo CD does).
pub fn app_instance_name(
    app_namespace: &str,
    app_name: &str,
    controller_namespace: &str,
) -> String {
    if app_namespace == controller_namespace || app_namespace.is_empty() {
        app_name.to_string()
    } else {
        format!("{app_namespace}_{app_name}")
    }
}

pub fn tracking_id(app: &str, key: &ObjectKey) -> String {
    format!(
        "{app}:{}/{}:{}/{}",
        key.group, key.kind, key.namespace, key.name
    )
}

/// Splits a tracking id into the app name and the object key.
pub fn parse_tracking_id(id: &str) -> Option<(String, ObjectKey)> {
    let (app, rest) = id.split_once(':')?;
    let (gk, nn) = rest.split_once(':')?;
    let (group, kind) = gk.split_once('/')?;
    let (namespace, name) = nn.split_once('/')?;
    if app.is_empty() || kind.is_empty() || name.is_empty() {
        return None;
    }
    Some((
        app.to_string(),
        ObjectKey {
            group: group.into(),
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let k = ObjectKey {
            group: "apps".into(),
            kind: "Deployment".into(),
            namespace: "prod".into(),
            name: "web".into(),
        };
        let id = tracking_id("shop", &k);
        assert_eq!(id, "shop:apps/Deployment:prod/web");
        assert_eq!(parse_tracking_id(&id), Some(("shop".into(), k)));
        let core = parse_tracking_id("a:/Namespace:/team").unwrap();
        assert_eq!(core.1.group, "");
        assert_eq!(core.1.namespace, "");
        assert!(parse_tracking_id("garbage").is_none());
        assert_eq!(app_instance_name("argocd", "x", "argocd"), "x");
        assert_eq!(app_instance_name("team", "x", "argocd"), "team_x");
    }
}
