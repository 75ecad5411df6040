//! Tag scans against the test environment's real registry (htpasswd auth,
//! plain http).

use ferry_image::registry::{self, ImageName, ScanError};
use std::time::Duration;

#[tokio::test]
async fn scans_every_page_with_credentials_from_a_docker_config() {
    let env = ferry_testenv::shared();
    let repo = format!("paging-{}/app", std::process::id());
    let tags = ["1.0.0", "1.1.0", "1.2.0", "2.0.0", "2.0.0.sig"];
    for t in tags {
        env.registry.push_image(&repo, t).unwrap();
    }
    let image = ImageName::parse(&format!("{}/{repo}", env.registry.host)).unwrap();
    // The environment's Secret body uses the `auth` (base64 user:password) form.
    let config = env.registry.docker_config_json().unwrap();
    let creds = registry::credentials_from_docker_config(config.as_bytes(), &image.registry)
        .unwrap()
        .expect("credentials for the registry");
    let excluded = registry::exclusions(None).unwrap();
    // Pages of two: the listing must follow them to the end.
    let found = registry::scan_paged(
        &image,
        Some(&creds),
        true,
        Duration::from_secs(30),
        &excluded,
        2,
    )
    .await
    .unwrap();
    assert_eq!(found, ["1.0.0", "1.1.0", "1.2.0", "2.0.0"]);
    let all = registry::scan(&image, Some(&creds), true, Duration::from_secs(30), &[])
        .await
        .unwrap();
    assert_eq!(all.len(), 5, "{all:?}");

    // The username/password form, with a wrong password: a typed refusal
    // whose message does not carry the password.
    let wrong = format!(
        r#"{{"auths": {{"{}": {{"username": "{}", "password": "not-the-password"}}}}}}"#,
        env.registry.host,
        env.registry.user()
    );
    let bad = registry::credentials_from_docker_config(wrong.as_bytes(), &image.registry)
        .unwrap()
        .unwrap();
    let err = registry::scan(&image, Some(&bad), true, Duration::from_secs(30), &[])
        .await
        .unwrap_err();
    assert!(matches!(err, ScanError::Unauthorized { .. }), "{err:?}");
    assert!(!err.to_string().contains("not-the-password"), "{err}");
    let anonymous = registry::scan(&image, None, true, Duration::from_secs(30), &[])
        .await
        .unwrap_err();
    assert!(
        matches!(anonymous, ScanError::Unauthorized { .. }),
        "{anonymous:?}"
    );
}
