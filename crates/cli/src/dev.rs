//! `ferry dev`: the local environment from the testenv crate, for people.

use anyhow::Context;
use clap::Subcommand;
use ferry_testenv::{Options, TestEnv};
use std::io::Write;

#[derive(Subcommand)]
pub enum DevCommand {
    /// Start the environment, print how to reach it, and run until Ctrl-C.
    Up {
        /// Do not start the second cluster.
        #[arg(long)]
        no_second_cluster: bool,
        /// Also run the GitOps demo: push examples/ to the local Git server,
        /// start the controller and deliver the Applications in examples/apps.
        #[arg(long)]
        demo: bool,
        /// The examples directory the demo pushes.
        #[arg(long, default_value = "examples")]
        examples: std::path::PathBuf,
    },
}

pub async fn run(cmd: DevCommand) -> anyhow::Result<()> {
    match cmd {
        DevCommand::Up {
            no_second_cluster,
            demo,
            examples,
        } => up(!no_second_cluster, demo.then_some(examples)).await,
    }
}

async fn up(second_cluster: bool, demo: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    eprintln!("Starting the Ferry dev environment (etcd, Kubernetes, Git server, registry)...");
    let opts = Options {
        second_cluster,
        ..Options::default()
    };
    let env = tokio::task::spawn_blocking(move || TestEnv::start(opts))
        .await
        .context("the startup task failed")?
        .context("starting the dev environment")?;
    print_summary(&env, demo.is_none())?;
    let controller = match demo {
        Some(examples) => {
            eprintln!("Starting Ferry and delivering the example Applications...");
            let demo = crate::demo::start(&env, &examples).await?;
            print_demo_help(&env, &demo);
            Some(demo.tasks)
        }
        None => None,
    };
    wait_for_shutdown().await;
    for t in controller.into_iter().flatten() {
        t.abort();
    }
    eprintln!("Stopping and removing {} ...", env.dir.display());
    tokio::task::spawn_blocking(move || drop(env))
        .await
        .context("stopping the environment")?;
    eprintln!("Stopped.");
    Ok(())
}

fn print_summary(env: &TestEnv, ctrl_c_hint: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let kubectl = env.tools.kubectl.display();
    writeln!(
        out,
        "Ferry dev environment is up (Kubernetes v{}).",
        ferry_testenv::KUBERNETES_VERSION
    )?;
    writeln!(out)?;
    writeln!(out, "  KUBECONFIG={}", env.cluster.kubeconfig.display())?;
    writeln!(
        out,
        "  try:  KUBECONFIG={} {kubectl} get nodes,ns",
        env.cluster.kubeconfig.display()
    )?;
    if let Some(c2) = &env.cluster2 {
        writeln!(
            out,
            "  second cluster:  KUBECONFIG={}",
            c2.kubeconfig.display()
        )?;
    }
    writeln!(
        out,
        "  restricted user:  KUBECONFIG={}",
        env.cluster.restricted_kubeconfig.display()
    )?;
    writeln!(out)?;
    // Every credential the lines below need, each in a file only its owner can read.
    let git_password = env.dir.join("git-http-password");
    ferry_testenv::cluster::write_private(&git_password, env.git.password().expose())?;
    let registry_password = env.dir.join("registry-password");
    ferry_testenv::cluster::write_private(&registry_password, env.registry.password().expose())?;
    writeln!(
        out,
        "  git over http:   {}/<repo>.git  (user {}; password in {}, mode 0600)",
        env.git.http_base,
        env.git.user(),
        git_password.display()
    )?;
    writeln!(out, "  git over ssh:    {}", env.git.ssh_url("<repo>"))?;
    writeln!(
        out,
        "                   GIT_SSH_COMMAND=\"{}\"",
        env.git.git_ssh_command()
    )?;
    writeln!(
        out,
        "  registry:        {}  (user {}; password in {}; docker config {}, both 0600)",
        env.registry.host,
        env.registry.user(),
        registry_password.display(),
        env.registry.auth_file.display()
    )?;
    writeln!(
        out,
        "  all state, logs and credentials:  {}",
        env.dir.display()
    )?;
    writeln!(out)?;
    if ctrl_c_hint {
        writeln!(
            out,
            "Press Ctrl-C to stop everything and remove that directory."
        )?;
    }
    out.flush()?;
    Ok(())
}

fn print_demo_help(env: &TestEnv, demo: &crate::demo::Demo) {
    let url = env.git.file_url(crate::demo::REPO);
    let kubeconfig = env.cluster.kubeconfig.display();
    let kubectl = env.tools.kubectl.display();
    println!();
    println!("Change the example and watch Ferry sync it:");
    println!("  git clone {url} /tmp/ferry-demo && cd /tmp/ferry-demo");
    println!("  sed -i 's/Hello from Ferry/Hello, GitOps/' message-app/configmap.yaml");
    println!("  git commit -am 'New message' && git push");
    println!(
        "  KUBECONFIG={kubeconfig} {kubectl} -n staging get configmap message-app-config -o yaml -w"
    );
    println!("  KUBECONFIG={kubeconfig} {kubectl} -n argocd get applications -w");
    // `ferry` as the user can type it: the bare name when it is this binary on the PATH.
    let ferry = ferry_command();
    println!();
    println!(
        "KubeVela: hello-vela (examples/demo/hello-vela.yaml) is {} in namespace vela-demo:",
        demo.vela_phase
    );
    println!("  KUBECONFIG={kubeconfig} {ferry} ls -n vela-demo");
    println!();
    println!(
        "Image automation: a new tag of demo/podinfo became commit {} and runs as {}:",
        demo.automation_commit.chars().take(10).collect::<String>(),
        demo.delivered_image
    );
    println!(
        "  KUBECONFIG={kubeconfig} {kubectl} -n argocd get imagepolicies,imageupdateautomations"
    );
    println!();
    println!("Or in the browser, Ferry's web UI (log in as admin):");
    println!("  http://{}/applications", demo.api);
    println!();
    println!("Or through Ferry's API and CLI:");
    match demo.admin_password.as_deref() {
        Some(p) => println!(
            "  admin password (shown once; also in Secret argocd-initial-admin-secret): {p}"
        ),
        None => println!("  admin password: in Secret argocd-initial-admin-secret"),
    }
    // Typed at the prompt rather than on the command line, where shell
    // history and `ps` would keep it.
    println!("  {ferry} login {} --plaintext --username admin", demo.api);
    println!("  {ferry} app list");
    println!("  {ferry} app get message-app-staging");
    println!();
    println!("Press Ctrl-C to stop everything.");
}

/// `ferry` when the PATH finds this very binary under that name, else its full path.
fn ferry_command() -> String {
    let me = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok());
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("ferry"))
            .find(|p| p.is_file())
            .and_then(|p| p.canonicalize().ok())
    });
    match (me, on_path) {
        (Some(me), Some(found)) if me == found => "ferry".into(),
        (Some(me), _) => me.display().to_string(),
        (None, _) => "ferry".into(),
    }
}

async fn wait_for_shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
