//! Ferry's container image, built as `make image` builds it — offline from the Debian mirror
//! (mmdebstrap, umoci), no container runtime — pushed to the test environment's registry, and
//! its root filesystem run with chroot: `ferry version`, git, helm, kubectl, sops and ssh work
//! inside it as the image's user. Needs root, as `make setup` does.

mod common;

use common::{run, text};
use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_image_builds_offline_pushes_and_its_root_filesystem_runs_the_tools() {
    let env = ferry_testenv::shared();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = tempfile::tempdir().unwrap();
    let tag = format!("test-{}", std::process::id());
    let mut build = Command::new("bash");
    build
        .arg(root.join("deploy/image/build.sh"))
        .env("FERRY_BIN", env!("CARGO_BIN_EXE_ferry"))
        .env("OUT", out.path())
        .env("TAG", &tag)
        .env("REGISTRY", &env.registry.host)
        .env("REGISTRY_USER", env.registry.user())
        .env("REGISTRY_PASSWORD", env.registry.password().expose())
        .env("INSECURE", "1");
    let o = run(build, None);
    assert!(o.status.success(), "build.sh: {}", text(&o));
    assert!(
        !text(&o).contains(env.registry.password().expose()),
        "the registry password never shows"
    );
    let tags = env.registry.list_tags("ferry").unwrap();
    assert!(tags.contains(&tag), "pushed: {tags:?}");

    let mut smoke = Command::new("bash");
    smoke
        .arg(root.join("deploy/image/smoke.sh"))
        .arg(out.path().join("rootfs"));
    let o = run(smoke, None);
    let shown = text(&o);
    assert!(o.status.success(), "smoke.sh: {shown}");
    for tool in [
        "ferry: v",
        "git version",
        "v4.",
        "Client Version",
        "sops",
        "OpenSSH",
    ] {
        assert!(shown.contains(tool), "{tool} missing: {shown}");
    }
}
