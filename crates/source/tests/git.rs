//! ferry-source against the test environment's real Git server (http with
//! basic auth, ssh with a key, file://).

use ferry_source::{
    RepoCredentials, RepoSecret, SecretKind, SourceCache, SourceError, SourceOptions,
    credentials_for,
};
use ferry_testenv::TestEnv;
use ferry_testenv::git::GIT_IDENTITY;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn env() -> &'static TestEnv {
    ferry_testenv::shared()
}

/// A repository name no other test (or test run) uses.
fn unique(name: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn new_cache() -> (tempfile::TempDir, SourceCache) {
    let dir = tempfile::tempdir().unwrap();
    let cache = SourceCache::new(dir.path().join("sources")).unwrap();
    (dir, cache)
}

/// Commits exactly `files` as the new content of `repo`'s main branch.
fn commit(repo: &str, files: &[(&str, &str)], message: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    env().git.commit_dir(repo, dir.path(), message).unwrap()
}

fn new_repo(name: &str) -> String {
    let repo = unique(name);
    env().git.create_repo(&repo).unwrap();
    repo
}

/// Runs git on the server's bare repository (tags, branches, config).
fn server_git(repo: &str, args: &[&str]) {
    let git_dir = env().git.root.join(format!("{repo}.git"));
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(&git_dir)
        .args(args)
        .envs(GIT_IDENTITY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn http_creds() -> RepoCredentials {
    RepoCredentials {
        username: Some(env().git.user().to_string()),
        password: Some(env().git.password().expose().to_string()),
        ..Default::default()
    }
}

fn ssh_creds() -> RepoCredentials {
    RepoCredentials {
        ssh_private_key: Some(std::fs::read_to_string(&env().git.ssh_private_key).unwrap()),
        known_hosts: Some(std::fs::read_to_string(&env().git.known_hosts).unwrap()),
        ..Default::default()
    }
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap()
}

#[tokio::test]
async fn resolves_branches_tags_head_and_shas_over_file() {
    let repo = new_repo("resolve");
    let url = env().git.file_url(&repo);
    let first = commit(&repo, &[("a.txt", "one")], "first");
    let second = commit(&repo, &[("a.txt", "two")], "second");
    let third = commit(&repo, &[("a.txt", "three")], "third");
    server_git(&repo, &["tag", "-a", "v1.0.0", "-m", "release", &first]);
    server_git(&repo, &["tag", "light", &second]);
    server_git(&repo, &["branch", "release-1", &second]);
    let (_d, cache) = new_cache();

    assert_eq!(cache.resolve(&url, "main", None).await.unwrap(), third);
    assert_eq!(cache.resolve(&url, "HEAD", None).await.unwrap(), third);
    assert_eq!(cache.resolve(&url, "", None).await.unwrap(), third);
    assert_eq!(
        cache.resolve(&url, "refs/heads/main", None).await.unwrap(),
        third
    );
    assert_eq!(
        cache.resolve(&url, "release-1", None).await.unwrap(),
        second
    );
    // An annotated tag resolves to its commit, not the tag object.
    assert_eq!(cache.resolve(&url, "v1.0.0", None).await.unwrap(), first);
    assert_eq!(cache.resolve(&url, "light", None).await.unwrap(), second);
    // Abbreviated: a ref's tip, and a commit no ref points at.
    assert_eq!(cache.resolve(&url, &third[..7], None).await.unwrap(), third);
    let middle = commit(&repo, &[("a.txt", "four")], "fourth");
    let _tip = commit(&repo, &[("a.txt", "five")], "fifth");
    assert_eq!(
        cache.resolve(&url, &middle[..8], None).await.unwrap(),
        middle
    );
    // A full SHA is taken as given, without asking the server.
    let unknown = "0123456789abcdef0123456789abcdef01234567";
    assert_eq!(cache.resolve(&url, unknown, None).await.unwrap(), unknown);
    assert_eq!(
        cache
            .resolve(&url, &first.to_uppercase(), None)
            .await
            .unwrap(),
        first
    );
    // The checkout after resolving a tag fetches that commit.
    let dir = cache.checkout(&url, &first, None).await.unwrap();
    assert_eq!(read(&dir, "a.txt"), "one");
}

#[tokio::test]
async fn unknown_revision_names_revision_and_repo() {
    let repo = new_repo("unknown");
    commit(&repo, &[("a.txt", "x")], "c");
    let url = env().git.file_url(&repo);
    let (_d, cache) = new_cache();
    let err = cache
        .resolve(&url, "no-such-branch", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, SourceError::UnknownRevision { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("no-such-branch"), "{msg}");
    assert!(msg.contains(&repo), "{msg}");
    let err = cache.resolve(&url, "abcdef12", None).await.unwrap_err();
    assert!(err.to_string().contains("abcdef12"), "{err}");
    let err = cache
        .resolve(&url, "--upload-pack=touch /tmp/x", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, SourceError::InvalidRevision { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn http_with_credentials_works_and_without_fails() {
    let repo = new_repo("http");
    let sha = commit(&repo, &[("app/cm.yaml", "kind: ConfigMap\n")], "c");
    let url = env().git.http_url(&repo);
    let password = env().git.password().expose();
    let (_d, cache) = new_cache();

    assert_eq!(
        cache
            .resolve(&url, "main", Some(&http_creds()))
            .await
            .unwrap(),
        sha
    );
    let dir = cache
        .checkout(&url, &sha, Some(&http_creds()))
        .await
        .unwrap();
    assert_eq!(read(&dir, "app/cm.yaml"), "kind: ConfigMap\n");

    let wrong = RepoCredentials {
        password: Some(format!("{password}-wrong")),
        ..http_creds()
    };
    let err = cache.resolve(&url, "main", Some(&wrong)).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SourceError::Command { .. }), "{err:?}");
    assert!(!msg.contains(password), "{msg}");
    assert!(
        msg.to_lowercase().contains("authentication failed"),
        "{msg}"
    );

    let err = cache
        .resolve(&url, "main", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("could not read Username"), "{err}");

    // A fresh cache: checkout itself must authenticate its fetch.
    let (_d2, cache2) = new_cache();
    let err = cache2
        .checkout(&url, &sha, Some(&wrong))
        .await
        .unwrap_err()
        .to_string();
    assert!(!err.contains(password), "{err}");
    assert!(
        err.to_lowercase().contains("authentication failed"),
        "{err}"
    );
    cache2
        .checkout(&url, &sha, Some(&http_creds()))
        .await
        .unwrap();
}

#[tokio::test]
async fn credentials_in_the_url_are_used_and_never_shown() {
    let repo = new_repo("urlcreds");
    let sha = commit(&repo, &[("f", "x")], "c");
    let password = env().git.password().expose();
    let base = env().git.http_base.strip_prefix("http://").unwrap();
    let url = format!("http://{}:{password}@{base}/{repo}.git", env().git.user());
    let (_d, cache) = new_cache();
    assert_eq!(cache.resolve(&url, "main", None).await.unwrap(), sha);
    cache.checkout(&url, &sha, None).await.unwrap();
    let bad = format!(
        "http://{}:{password}@{base}/{repo}-missing.git",
        env().git.user()
    );
    let err = cache.resolve(&bad, "main", None).await.unwrap_err();
    for shown in [err.to_string(), format!("{err:?}")] {
        assert!(!shown.contains(password), "{shown}");
        assert!(shown.contains(&format!("{repo}-missing")), "{shown}");
    }
}

#[tokio::test]
async fn ssh_with_key_and_known_hosts() {
    let repo = new_repo("ssh");
    let sha = commit(&repo, &[("f.txt", "over ssh")], "c");
    let url = env().git.ssh_url(&repo);
    let (_d, cache) = new_cache();
    assert_eq!(
        cache
            .resolve(&url, "main", Some(&ssh_creds()))
            .await
            .unwrap(),
        sha
    );
    let dir = cache
        .checkout(&url, &sha, Some(&ssh_creds()))
        .await
        .unwrap();
    assert_eq!(read(&dir, "f.txt"), "over ssh");

    // The server presents a key other than the one known for it.
    let other_key =
        std::fs::read_to_string(env().git.ssh_private_key.with_extension("pub")).unwrap();
    let mut fields = other_key.split_whitespace();
    let wrong_known = format!(
        "[127.0.0.1]:{} {} {}\n",
        env().git.ssh_port,
        fields.next().unwrap(),
        fields.next().unwrap()
    );
    let unknown_host = RepoCredentials {
        known_hosts: Some(wrong_known),
        ..ssh_creds()
    };
    let (_d2, cache2) = new_cache();
    let err = cache2
        .resolve(&url, "main", Some(&unknown_host))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("Host key verification failed"), "{err}");
    let not_listed = RepoCredentials {
        known_hosts: Some(String::new()),
        ..ssh_creds()
    };
    let err = cache2
        .checkout(&url, &sha, Some(&not_listed))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("Host key verification failed"), "{err}");
    let key = ssh_creds().ssh_private_key.unwrap();
    for line in key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!err.contains(line), "{err}");
    }

    // insecure skips host key checking.
    let insecure = RepoCredentials {
        known_hosts: None,
        insecure: true,
        ..ssh_creds()
    };
    assert_eq!(
        cache2.resolve(&url, "main", Some(&insecure)).await.unwrap(),
        sha
    );

    // Without the key the server refuses.
    let no_key = RepoCredentials {
        ssh_private_key: None,
        ..ssh_creds()
    };
    let no_agent = cache2.resolve(&url, "main", Some(&no_key)).await;
    if let Err(e) = no_agent {
        assert!(e.to_string().contains("Permission denied"), "{e}");
    }
}

#[tokio::test]
async fn checkout_returns_each_commits_files() {
    let repo = new_repo("checkout");
    let url = env().git.file_url(&repo);
    let one = commit(
        &repo,
        &[("app/a.yaml", "v: 1\n"), ("old.txt", "old")],
        "one",
    );
    let two = commit(
        &repo,
        &[("app/a.yaml", "v: 2\n"), ("new.txt", "new")],
        "two",
    );
    let (_d, cache) = new_cache();
    let dir_two = cache.checkout(&url, &two, None).await.unwrap();
    let dir_one = cache.checkout(&url, &one, None).await.unwrap();
    assert_ne!(dir_one, dir_two);
    assert_eq!(read(&dir_one, "app/a.yaml"), "v: 1\n");
    assert_eq!(read(&dir_two, "app/a.yaml"), "v: 2\n");
    assert!(dir_one.join("old.txt").exists() && !dir_one.join("new.txt").exists());
    assert!(dir_two.join("new.txt").exists() && !dir_two.join("old.txt").exists());
    assert!(!dir_one.join(".git").exists());
    assert!(dir_one.ends_with(&one));
    // Same commit, same directory, and no leftovers beside it.
    assert_eq!(cache.checkout(&url, &one, None).await.unwrap(), dir_one);
    let siblings: Vec<PathBuf> = std::fs::read_dir(dir_one.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(siblings.len(), 2, "{siblings:?}");
    // Spellings of one URL share a mirror.
    let spelled = format!("{url}/");
    assert_eq!(cache.checkout(&spelled, &one, None).await.unwrap(), dir_one);

    let err = cache.checkout(&url, "main", None).await.unwrap_err();
    assert!(
        matches!(err, SourceError::InvalidRevision { .. }),
        "{err:?}"
    );
    let missing = "0123456789abcdef0123456789abcdef01234567";
    let err = cache.checkout(&url, missing, None).await.unwrap_err();
    assert!(matches!(err, SourceError::CommitNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains(missing));
}

#[tokio::test]
async fn empty_commit_checks_out_to_an_empty_tree() {
    let repo = new_repo("empty");
    let url = env().git.file_url(&repo);
    let sha = commit(&repo, &[], "nothing");
    let (_d, cache) = new_cache();
    let dir = cache.checkout(&url, &sha, None).await.unwrap();
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}

#[tokio::test]
async fn tree_id_changes_only_with_the_path() {
    let repo = new_repo("treeid");
    let url = env().git.file_url(&repo);
    let one = commit(
        &repo,
        &[("apps/a/cm.yaml", "a1"), ("apps/b/cm.yaml", "b1")],
        "one",
    );
    let two = commit(
        &repo,
        &[("apps/a/cm.yaml", "a1"), ("apps/b/cm.yaml", "b2")],
        "two",
    );
    let (_d, cache) = new_cache();

    let err = cache.tree_id(&url, &one, "apps/a").await.unwrap_err();
    assert!(matches!(err, SourceError::NotFetched { .. }), "{err:?}");

    cache.checkout(&url, &one, None).await.unwrap();
    cache.checkout(&url, &two, None).await.unwrap();
    let a1 = cache.tree_id(&url, &one, "apps/a").await.unwrap().unwrap();
    let a2 = cache.tree_id(&url, &two, "apps/a").await.unwrap().unwrap();
    let b1 = cache.tree_id(&url, &one, "apps/b").await.unwrap().unwrap();
    let b2 = cache.tree_id(&url, &two, "apps/b").await.unwrap().unwrap();
    assert_eq!(a1, a2);
    assert_ne!(b1, b2);
    assert_eq!(
        cache.tree_id(&url, &one, "./apps/a/").await.unwrap(),
        Some(a1.clone())
    );
    let root1 = cache.tree_id(&url, &one, "").await.unwrap().unwrap();
    assert_eq!(
        cache.tree_id(&url, &one, ".").await.unwrap(),
        Some(root1.clone())
    );
    assert_ne!(root1, cache.tree_id(&url, &two, "").await.unwrap().unwrap());
    assert_eq!(cache.tree_id(&url, &one, "apps/none").await.unwrap(), None);
    assert!(cache.tree_id(&url, &one, "../x").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_checkouts_of_one_repo_all_succeed() {
    let repo = new_repo("concurrent");
    let url = env().git.http_url(&repo);
    let one = commit(&repo, &[("f", "1")], "one");
    let two = commit(&repo, &[("f", "2")], "two");
    let (_d, cache) = new_cache();
    let cache = Arc::new(cache);
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (cache, url) = (cache.clone(), url.clone());
        let sha = if i % 2 == 0 { one.clone() } else { two.clone() };
        tasks.push(tokio::spawn(async move {
            let dir = cache.checkout(&url, &sha, Some(&http_creds())).await?;
            Ok::<_, SourceError>((sha, dir))
        }));
    }
    let mut dirs = std::collections::BTreeMap::new();
    for t in tasks {
        let (sha, dir) = t.await.unwrap().unwrap();
        let want = if sha == one { "1" } else { "2" };
        assert_eq!(read(&dir, "f"), want);
        dirs.entry(sha).or_insert_with(Vec::new).push(dir);
    }
    assert_eq!(dirs.len(), 2);
    for v in dirs.values() {
        assert!(v.iter().all(|d| d == &v[0]));
    }
}

#[tokio::test]
async fn unreachable_repository_fails_fast() {
    let (_d, cache) = new_cache();
    let started = Instant::now();
    let err = cache
        .resolve("http://127.0.0.1:1/x.git", "main", None)
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    let msg = err.to_string();
    assert!(msg.contains("127.0.0.1"), "{msg}");
    assert!(
        msg.contains("Failed to connect") || msg.contains("Could not"),
        "{msg}"
    );
    let err = cache
        .checkout("http://127.0.0.1:1/x.git", &"a".repeat(40), None)
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::Command { .. }), "{err:?}");
}

#[tokio::test]
async fn a_hanging_server_is_cut_off_by_the_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let cache = SourceCache::with_options(
        dir.path().to_path_buf(),
        SourceOptions {
            timeout: Duration::from_secs(2),
            ..Default::default()
        },
    )
    .unwrap();
    let started = Instant::now();
    let err = cache
        .resolve(&format!("http://127.0.0.1:{port}/slow.git"), "main", None)
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::Timeout { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("timed out after 2s"), "{err}");
    server.abort();
}

#[tokio::test]
async fn falls_back_to_a_full_fetch_when_the_server_refuses_a_commit() {
    let repo = new_repo("refuse");
    let url = env().git.file_url(&repo);
    let old = commit(&repo, &[("f", "old")], "old");
    let _new = commit(&repo, &[("f", "new")], "new");
    // Protocol v0 without allowReachableSHA1InWant refuses unadvertised commits.
    server_git(
        &repo,
        &["config", "uploadpack.allowReachableSHA1InWant", "false"],
    );
    let dir = tempfile::tempdir().unwrap();
    let cache = SourceCache::with_options(
        dir.path().to_path_buf(),
        SourceOptions {
            git_config: vec!["protocol.version=0".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let tree = cache.checkout(&url, &old, None).await.unwrap();
    assert_eq!(read(&tree, "f"), "old");
    // The full fetch left a complete mirror.
    let mirror = std::fs::read_dir(cache.root().join("repos"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(!mirror.join("shallow").exists());
}

#[tokio::test]
async fn refetches_the_resolved_branch_shallowly() {
    let repo = new_repo("hint");
    let url = env().git.http_url(&repo);
    let (_d, cache) = new_cache();
    for i in 0..3 {
        let sha = commit(&repo, &[("f", &i.to_string())], "c");
        assert_eq!(
            cache
                .resolve(&url, "main", Some(&http_creds()))
                .await
                .unwrap(),
            sha
        );
        let tree = cache
            .checkout(&url, &sha, Some(&http_creds()))
            .await
            .unwrap();
        assert_eq!(read(&tree, "f"), i.to_string());
    }
    // Every fetch was shallow: the mirror holds no history beyond the tips.
    let mirror = std::fs::read_dir(cache.root().join("repos"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(mirror.join("shallow").exists());
}

#[tokio::test]
async fn prune_removes_unused_trees() {
    let repo = new_repo("prune");
    let url = env().git.file_url(&repo);
    let sha = commit(&repo, &[("f", "x")], "c");
    let (_d, cache) = new_cache();
    let tree = cache.checkout(&url, &sha, None).await.unwrap();
    assert_eq!(cache.prune(Duration::from_secs(3600)).await.unwrap(), 0);
    assert!(tree.is_dir());
    assert_eq!(cache.prune(Duration::ZERO).await.unwrap(), 1);
    assert!(!tree.exists());
    // The commit is fetched again when asked for.
    let again = cache.checkout(&url, &sha, None).await.unwrap();
    assert_eq!(read(&again, "f"), "x");
    assert!(cache.tree_id(&url, &sha, "").await.unwrap().is_some());
}

#[test]
fn credentials_for_prefers_exact_repository_then_longest_prefix() {
    let make = |kind, url: &str, user: &str| RepoSecret {
        kind,
        url: url.to_string(),
        creds: RepoCredentials {
            username: Some(user.to_string()),
            password: Some("pw".into()),
            ..Default::default()
        },
        type_: Some("git".into()),
        name: None,
    };
    let secrets = vec![
        make(
            SecretKind::RepoCreds,
            "https://git.example.com/",
            "host-wide",
        ),
        make(
            SecretKind::RepoCreds,
            "https://git.example.com/team/",
            "team",
        ),
        make(
            SecretKind::RepoCreds,
            "https://git.example.com/team/app",
            "app-template",
        ),
        make(
            SecretKind::Repository,
            "https://git.example.com/team/app.git",
            "app-repo",
        ),
    ];
    let user = |url: &str| credentials_for(url, &secrets).and_then(|c| c.username);
    assert_eq!(
        user("https://git.example.com/team/app").as_deref(),
        Some("app-repo")
    );
    assert_eq!(
        user("https://GIT.example.com/team/app.git/").as_deref(),
        Some("app-repo")
    );
    assert_eq!(
        user("https://git.example.com/team/other").as_deref(),
        Some("team")
    );
    assert_eq!(
        user("https://git.example.com/else/x").as_deref(),
        Some("host-wide")
    );
    assert_eq!(user("https://elsewhere.example.com/team/app"), None);
}

/// Reads every process's command line until told to stop; returns any that
/// holds `needle`.
fn watch_cmdlines(
    needle: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut found = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                if let Ok(raw) = std::fs::read(e.path().join("cmdline")) {
                    let line = String::from_utf8_lossy(&raw).replace('\0', " ");
                    if line.contains(&needle) {
                        found.push(line);
                    }
                }
            }
        }
        found
    })
}

fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            out.extend(files_containing(&p, needle));
        } else if ft.is_file()
            && let Ok(bytes) = std::fs::read(&p)
            && String::from_utf8_lossy(&bytes).contains(needle)
        {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_messages_arguments_or_disk() {
    let repo = new_repo("leak");
    let sha = commit(&repo, &[("f", "x")], "c");
    let url = env().git.http_url(&repo);
    let password = env().git.password().expose().to_string();
    let key = ssh_creds().ssh_private_key.unwrap();
    let key_line = key.lines().nth(1).unwrap().to_string();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = watch_cmdlines(password.clone(), stop.clone());
    let key_watcher = watch_cmdlines(key_line.clone(), stop.clone());
    // Proves the watchers see short-lived commands.
    let canary = format!("ferry-canary-{}", std::process::id());
    let canary_watcher = watch_cmdlines(canary.clone(), stop.clone());
    std::process::Command::new("/bin/sh")
        .args(["-c", "sleep 0.3", &canary])
        .status()
        .unwrap();

    let (dir, cache) = new_cache();
    let mut shown = Vec::new();
    for _ in 0..3 {
        cache
            .resolve(&url, "main", Some(&http_creds()))
            .await
            .unwrap();
    }
    cache
        .checkout(&url, &sha, Some(&http_creds()))
        .await
        .unwrap();
    let ssh_url = env().git.ssh_url(&repo);
    cache
        .checkout(&ssh_url, &sha, Some(&ssh_creds()))
        .await
        .unwrap();

    let wrong = RepoCredentials {
        password: Some(format!("{password}x")),
        ..http_creds()
    };
    let failures = [
        cache.resolve(&url, "main", Some(&wrong)).await.unwrap_err(),
        cache
            .resolve(&format!("{url}-nope"), "main", Some(&http_creds()))
            .await
            .unwrap_err(),
        cache
            .checkout(&format!("{url}-nope"), &sha, Some(&http_creds()))
            .await
            .unwrap_err(),
        cache
            .resolve(&url, "nope", Some(&http_creds()))
            .await
            .unwrap_err(),
        cache
            .resolve("http://127.0.0.1:1/x.git", "main", Some(&http_creds()))
            .await
            .unwrap_err(),
        cache
            .resolve(
                &ssh_url,
                "main",
                Some(&RepoCredentials {
                    known_hosts: Some(String::new()),
                    ..ssh_creds()
                }),
            )
            .await
            .unwrap_err(),
    ];
    for e in &failures {
        shown.push(e.to_string());
        shown.push(format!("{e:?}"));
    }
    let secret = RepoSecret {
        kind: SecretKind::Repository,
        url: format!("http://ferry:{password}@host/r.git"),
        creds: RepoCredentials {
            tls_client_cert_key: Some(password.clone()),
            ..http_creds()
        },
        type_: None,
        name: None,
    };
    shown.push(format!("{secret:?}"));
    shown.push(format!("{:?}", ssh_creds()));
    shown.push(format!("{:?}", http_creds()));
    shown.push(format!("{cache:?}"));
    for s in &shown {
        assert!(!s.contains(&password), "password in {s}");
        assert!(!s.contains(&key_line), "key in {s}");
    }

    stop.store(true, Ordering::SeqCst);
    let seen = watcher.join().unwrap();
    let seen_key = key_watcher.join().unwrap();
    assert!(!canary_watcher.join().unwrap().is_empty());
    // The watchers' own command line holds nothing: they are threads of this test.
    assert!(seen.is_empty(), "password on a command line: {seen:?}");
    assert!(seen_key.is_empty(), "key on a command line: {seen_key:?}");
    assert_eq!(
        files_containing(dir.path(), &password),
        Vec::<PathBuf>::new()
    );
    assert_eq!(
        files_containing(dir.path(), &key_line),
        Vec::<PathBuf>::new()
    );
}

fn server_log(repo: &str) -> Vec<String> {
    let git_dir = env().git.root.join(format!("{repo}.git"));
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(&git_dir)
        .args(["log", "--format=%an|%s", "main"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn worktree_commits_pushes_and_survives_a_rejected_push() {
    let repo = new_repo("write");
    commit(
        &repo,
        &[("app/deploy.yaml", "image: app:1 # keep\n")],
        "init",
    );
    let (_d, cache) = new_cache();
    let url = env().git.http_url(&repo);
    let creds = http_creds();
    let author = ferry_source::CommitAuthor {
        name: "ferry-bot".into(),
        email: "bot@ferry.dev".into(),
    };

    // Nothing changed: no commit.
    let tree = cache
        .worktree("ns/auto", &url, Some(&creds), "main", "main")
        .await
        .unwrap();
    assert_eq!(tree.base(), env().git.head(&repo).unwrap());
    let out = tree.commit_and_push(&author, "noop", "main").await.unwrap();
    assert_eq!(out, ferry_source::PushOutcome::NothingToCommit);
    drop(tree);

    // A change is committed once and pushed.
    let tree = cache
        .worktree("ns/auto", &url, Some(&creds), "main", "main")
        .await
        .unwrap();
    std::fs::write(tree.path().join("app/deploy.yaml"), "image: app:2 # keep\n").unwrap();
    let out = tree
        .commit_and_push(&author, "Image: app:2\n", "main")
        .await
        .unwrap();
    let ferry_source::PushOutcome::Pushed { commit } = out else {
        panic!("expected a push, got {out:?}")
    };
    drop(tree);
    assert_eq!(env().git.head(&repo).unwrap(), commit);
    assert_eq!(server_log(&repo)[0], "ferry-bot|Image: app:2");

    // The server refuses the next push; the error says why, and the retry
    // starts from the remote's new tip, so the change lands exactly once.
    env().git.move_main_during_next_push(&repo).unwrap();
    let tree = cache
        .worktree("ns/auto", &url, Some(&creds), "main", "main")
        .await
        .unwrap();
    std::fs::write(tree.path().join("app/deploy.yaml"), "image: app:3 # keep\n").unwrap();
    let err = tree
        .commit_and_push(&author, "Image: app:3\n", "main")
        .await
        .unwrap_err();
    drop(tree);
    let msg = err.to_string();
    assert!(
        msg.contains("[remote rejected]") && msg.contains("cannot lock ref"),
        "git's own refusal: {msg}"
    );
    assert!(msg.contains("the branch moved on the server"), "{msg}");
    assert!(!msg.contains(env().git.password().expose()), "{msg}");
    let tree = cache
        .worktree("ns/auto", &url, Some(&creds), "main", "main")
        .await
        .unwrap();
    assert_eq!(
        read(tree.path(), "app/deploy.yaml"),
        "image: app:2 # keep\n",
        "the rejected change must not survive locally"
    );
    std::fs::write(tree.path().join("app/deploy.yaml"), "image: app:3 # keep\n").unwrap();
    tree.commit_and_push(&author, "Image: app:3\n", "main")
        .await
        .unwrap();
    drop(tree);
    let log = server_log(&repo);
    assert_eq!(
        log.iter().filter(|l| l.ends_with("Image: app:3")).count(),
        1,
        "{log:?}"
    );
    assert_eq!(log[0], "ferry-bot|Image: app:3");
    assert_eq!(log[1], "someone|concurrent");

    // Pushing to a separate branch builds on that branch once it exists.
    for n in [4, 5] {
        let tree = cache
            .worktree("ns/auto", &url, Some(&creds), "main", "image-updates")
            .await
            .unwrap();
        std::fs::write(
            tree.path().join("app/deploy.yaml"),
            format!("image: app:{n} # keep\n"),
        )
        .unwrap();
        tree.commit_and_push(&author, &format!("Image: app:{n}\n"), "image-updates")
            .await
            .unwrap();
    }
    let git_dir = env().git.root.join(format!("{repo}.git"));
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(&git_dir)
        .args(["log", "--format=%s", "main..image-updates"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Image: app:5\nImage: app:4\n"
    );
}
