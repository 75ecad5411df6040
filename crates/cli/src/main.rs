//! The `ferry` binary.

mod app;
mod appset;
mod avp;
mod client;
mod controller;
mod demo;
mod dev;
mod image;
mod install;
mod kustomize;
mod login;
mod notifications;
mod output;
mod proj;
mod render;
mod server;
mod sso;
mod vela;
mod version;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Ferry: a GitOps delivery engine for Kubernetes"
)]
struct Cli {
    /// Log filter, e.g. `info` or `ferry=debug` (also RUST_LOG).
    #[arg(long, global = true, env = "RUST_LOG", default_value = "warn")]
    log: String,
    /// Log line format: text, or json (one object per line, for log collectors).
    #[arg(long, global = true, env = "FERRY_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the manifest that installs Ferry in a cluster (`ferry install | kubectl apply -f -`).
    Install(install::InstallArgs),
    /// This binary's version, commit and tools, and the server's (argocd version).
    Version(version::VersionArgs),
    /// Local development environment: a real Kubernetes control plane, Git server and registry.
    Dev {
        #[command(subcommand)]
        command: dev::DevCommand,
    },
    /// Run the GitOps controller: reconcile Argo CD Applications and AppProjects.
    Controller(controller::ControllerArgs),
    /// Run the API server: applications, projects, accounts, RBAC, webhooks, metrics.
    Server(server::ServerArgs),
    /// Flux image automation: list, inspect, reconcile, and try policies offline.
    Image {
        #[command(subcommand)]
        command: image::ImageCommand,
    },
    /// Render KubeVela (OAM) Applications into Kubernetes manifests, offline.
    Render(render::RenderArgs),
    /// kustomize for plugins: `edit` natively, `build` through kubectl (also run as
    /// `kustomize` through a link of that name).
    #[command(disable_help_flag = true)]
    Kustomize {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// argocd-vault-plugin: resolve secret placeholders in manifests (also run as
    /// `argocd-vault-plugin` through a link of that name).
    Avp(avp::AvpCli),
    /// List KubeVela (OAM) Applications: one row per component.
    Ls(vela::LsArgs),
    /// Show a KubeVela (OAM) Application: about, workflow steps, services.
    Status(vela::StatusArgs),
    /// Operate a KubeVela (OAM) Application's workflow.
    Workflow {
        #[command(subcommand)]
        command: vela::WorkflowCommand,
    },
    /// Log in to a ferry server
    Login(login::LoginArgs),
    /// Log out: forget the token of a context
    Logout(login::LogoutArgs),
    /// Manage accounts
    Account {
        #[command(flatten)]
        opts: client::ClientOpts,
        #[command(subcommand)]
        command: login::AccountCommand,
    },
    /// Manage ApplicationSets; `generate` prints what a set file would make, offline
    Appset {
        #[command(flatten)]
        opts: client::ClientOpts,
        #[command(subcommand)]
        command: appset::AppsetCommand,
    },
    /// Argo CD notifications: check the configuration, list and try triggers and templates
    Notifications {
        #[command(flatten)]
        source: notifications::Source,
        #[command(subcommand)]
        command: notifications::NotificationsCommand,
    },
    /// Manage projects (sync windows)
    Proj {
        #[command(flatten)]
        opts: client::ClientOpts,
        #[command(subcommand)]
        command: proj::ProjCommand,
    },
    /// Manage applications
    App {
        #[command(flatten)]
        opts: client::ClientOpts,
        #[command(subcommand)]
        command: Box<app::AppCommand>,
    },
}

/// Whether this process was started under `name` (a link to `ferry` that plugins call).
fn invoked_as(name: &str) -> bool {
    std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .is_some_and(|n| n == name)
}

#[tokio::main]
async fn main() -> ExitCode {
    // glibc gives each thread that contends for the heap an arena of its own (up to eight per
    // core); with tokio's workers and the render threads that multiplies the controller's
    // resident memory for no speed at this scale. Two arenas keep RSS near what is in use.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; any value is valid, and it is set before the
    // work that allocates starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    if invoked_as("argocd-vault-plugin") {
        return avp::run(<avp::AvpCli as Parser>::parse()).await;
    }
    if invoked_as("kustomize") {
        return kustomize::run(std::env::args().skip(1).collect());
    }
    let cli = Cli::parse();
    // kube's client logs every failed request at error level; the readiness
    // polls of `dev up` fail by design until a server answers.
    let filter = format!("kube_client::client::builder=off,{}", cli.log);
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        // Span fields (an app's name and namespace) on every line, flattened for collectors.
        logs.json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    let result = match cli.command {
        Command::Version(args) => version::run(args).await,
        Command::Install(args) => install::run(args),
        Command::Dev { command } => dev::run(command).await,
        Command::Controller(args) => controller::run(args).await,
        Command::Server(args) => server::run(args).await,
        Command::Image { command } => {
            // Exit 1 means "no tag matched"; errors are 2 so scripts can tell.
            return match image::run(command).await {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Render(args) => render::run(args).await,
        Command::Kustomize { args } => return kustomize::run(args),
        Command::Avp(cli) => return avp::run(cli).await,
        Command::Ls(args) => vela::ls(args).await,
        Command::Status(args) => vela::status(args).await,
        Command::Workflow { command } => vela::workflow(command).await,
        Command::Login(args) => login::login(args).await,
        Command::Logout(args) => login::logout(args),
        Command::Account { opts, command } => login::account(opts, command).await,
        Command::Proj { opts, command } => proj::run(opts, command).await,
        Command::Appset { opts, command } => appset::run(opts, command).await,
        Command::Notifications { source, command } => notifications::run(source, command).await,
        Command::App { opts, command } => {
            // `app diff` picks its own exit codes (0 same, 1 differs, 2 error).
            return match app::run(opts, *command).await {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
