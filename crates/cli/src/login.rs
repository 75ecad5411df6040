//! `ferry login`, `ferry logout` and `ferry account`: sessions and local
//! accounts, with argocd's flags and messages.

use crate::client::{ApiError, Client, ClientOpts, Config, Context, normalize_server, resolve};
use crate::output;
use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::io::BufRead;

#[derive(Args)]
pub struct LoginArgs {
    /// Server address, e.g. localhost:8080 or https://cd.example.com (default: --server)
    #[arg(value_name = "SERVER")]
    address: Option<String>,
    /// The username of an account to authenticate [default: prompted, or admin]
    #[arg(long)]
    username: Option<String>,
    /// The password of an account to authenticate [default: prompted, or read from stdin]
    #[arg(long, env = "FERRY_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Name to use for the context [default: the server address]
    #[arg(long)]
    name: Option<String>,
    /// Accepted so argocd command lines work; ferry does not probe TLS first.
    #[arg(long, hide = true)]
    skip_test_tls: bool,
    /// Log in through the server's single sign-on provider (oidc.config), in a browser
    #[arg(long)]
    sso: bool,
    /// Port of the local callback the provider redirects the browser to
    #[arg(long, default_value_t = 8085)]
    sso_port: u16,
    #[command(flatten)]
    opts: ClientOpts,
}

#[derive(Args)]
pub struct LogoutArgs {
    /// The context to log out of [default: the current one]
    #[arg(value_name = "CONTEXT")]
    context_name: Option<String>,
    #[command(flatten)]
    opts: ClientOpts,
}

#[derive(Subcommand)]
pub enum AccountCommand {
    /// Show who the current token belongs to
    GetUserInfo {
        /// Output format: json, yaml or text
        #[arg(short, long, default_value = "text", value_parser = ["text", "json", "yaml"])]
        output: String,
    },
    /// Change an account's password (your own unless --account)
    UpdatePassword {
        /// The account to update [default: the logged-in one]
        #[arg(long)]
        account: Option<String>,
        /// The password of the logged-in account [default: prompted]
        #[arg(long)]
        current_password: Option<String>,
        /// The new password [default: prompted]
        #[arg(long)]
        new_password: Option<String>,
    },
    /// List local accounts
    List {
        /// Output format: wide, json, yaml or name
        #[arg(short, long, default_value = "wide", value_parser = ["wide", "json", "yaml", "name"])]
        output: String,
    },
}

pub async fn login(args: LoginArgs) -> Result<()> {
    let path = args.opts.config_path()?;
    let mut cfg = Config::load(&path)?;
    let Some(address) = args.address.or(args.opts.server.clone()) else {
        bail!(
            "which server? run `ferry login <server>`, e.g. `ferry login localhost:8080 --plaintext`"
        );
    };
    let (server, scheme_plain) = normalize_server(&address);
    if server.is_empty() {
        bail!("empty server address: run `ferry login host:port`");
    }
    let plaintext = scheme_plain.unwrap_or(args.opts.plaintext);
    let target = crate::client::Target {
        server: server.clone(),
        plaintext,
        insecure: args.opts.insecure,
        token: None,
        context: None,
    };
    if args.sso {
        let client = Client::new(&target)?;
        let (token, who) = crate::sso::login(&client, args.sso_port).await?;
        let name = args.name.unwrap_or_else(|| server.clone());
        cfg.upsert(Context {
            name: name.clone(),
            server,
            token: Some(token),
            plaintext,
            insecure: args.opts.insecure,
        });
        cfg.save(&path)?;
        println!("'{who}' logged in successfully");
        println!("Context '{name}' updated");
        return Ok(());
    }
    let username = match args.username {
        Some(u) => u,
        None if output::stdin_is_terminal() => {
            let u = prompt_line("Username: ")?;
            if u.is_empty() { "admin".into() } else { u }
        }
        None => "admin".into(),
    };
    let password = match args.password {
        Some(p) => p,
        None => read_secret("Password: ", "--password (or FERRY_PASSWORD)")?,
    };
    let token = session(&Client::new(&target)?, &username, &password).await?;
    let name = args.name.unwrap_or_else(|| server.clone());
    cfg.upsert(Context {
        name: name.clone(),
        server,
        token: Some(token),
        plaintext,
        insecure: args.opts.insecure,
    });
    cfg.save(&path)?;
    println!("'{username}:login' logged in successfully");
    println!("Context '{name}' updated");
    Ok(())
}

/// POST /api/v1/session; a 401 here is a wrong password, not an expired token.
async fn session(client: &Client, username: &str, password: &str) -> Result<String> {
    let resp = client
        .post(
            "/api/v1/session",
            &[],
            &json!({"username": username, "password": password}),
        )
        .await
        .map_err(|e| match ApiError::status_of(&e) {
            Some(401) => anyhow::anyhow!(
                "login to {} failed: invalid username or password for '{username}'",
                client.server()
            ),
            _ => e,
        })?;
    match resp.get("token").and_then(Value::as_str) {
        Some(t) if !t.is_empty() => Ok(t.to_string()),
        _ => bail!(
            "{} answered the login without a token: is it a `ferry server`?",
            client.server()
        ),
    }
}

pub fn logout(args: LogoutArgs) -> Result<()> {
    let path = args.opts.config_path()?;
    let mut cfg = Config::load(&path)?;
    let name = match args.context_name.or(args.opts.context.clone()) {
        Some(n) => n,
        None if !cfg.current_context.is_empty() => cfg.current_context.clone(),
        None => bail!("not logged in: there is no current context to log out of"),
    };
    let Some(ctx) = cfg.contexts.iter_mut().find(|c| c.name == name) else {
        bail!(
            "no context '{name}' in {}: `ferry logout` with no argument logs out of the current one",
            path.display()
        );
    };
    ctx.token = None;
    cfg.save(&path)?;
    println!("Logged out from '{name}'");
    Ok(())
}

pub async fn account(opts: ClientOpts, command: AccountCommand) -> Result<()> {
    let client = Client::from_opts(&opts)?;
    match command {
        AccountCommand::GetUserInfo { output } => {
            let info = client.get("/api/v1/session/userinfo", &[]).await?;
            if output == "text" {
                print!("{}", user_info_text(&info));
            } else {
                print!("{}", output::structured(&info, &output)?);
            }
        }
        AccountCommand::List { output } => {
            let list = client.get("/api/v1/account", &[]).await?;
            let items = list
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            match output.as_str() {
                "name" => {
                    for a in &items {
                        println!("{}", a["name"].as_str().unwrap_or(""));
                    }
                }
                "wide" => {
                    let rows: Vec<Vec<String>> = items
                        .iter()
                        .map(|a| {
                            let caps: Vec<&str> = a["capabilities"]
                                .as_array()
                                .map(|c| c.iter().filter_map(Value::as_str).collect())
                                .unwrap_or_default();
                            vec![
                                a["name"].as_str().unwrap_or("").to_string(),
                                a["enabled"].as_bool().unwrap_or(false).to_string(),
                                caps.join(", "),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        output::table(&["NAME", "ENABLED", "CAPABILITIES"], &rows)
                    );
                }
                f => print!("{}", output::structured(&Value::Array(items), f)?),
            }
        }
        AccountCommand::UpdatePassword {
            account,
            current_password,
            new_password,
        } => update_password(&opts, &client, account, current_password, new_password).await?,
    }
    Ok(())
}

fn user_info_text(info: &Value) -> String {
    let groups: Vec<&str> = info["groups"]
        .as_array()
        .map(|g| g.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    format!(
        "Logged In: {}\nUsername: {}\nIssuer: {}\nGroups: {}\n",
        info["loggedIn"].as_bool().unwrap_or(false),
        info["username"].as_str().unwrap_or(""),
        info["iss"].as_str().unwrap_or(""),
        groups.join(",")
    )
}

async fn update_password(
    opts: &ClientOpts,
    client: &Client,
    account: Option<String>,
    current: Option<String>,
    new: Option<String>,
) -> Result<()> {
    // Who we are, to log in again with the new password afterwards: the
    // server may revoke tokens issued before a password change.
    let me = client
        .get("/api/v1/session/userinfo", &[])
        .await?
        .get("username")
        .and_then(Value::as_str)
        .map(str::to_string);
    let own = account.is_none() || account == me;
    let current = match current {
        Some(p) => p,
        None => read_secret(
            "*** Enter password of currently logged in user: ",
            "--current-password",
        )?,
    };
    let new = match new {
        Some(p) => p,
        None => {
            let label = account
                .as_deref()
                .or(me.as_deref())
                .unwrap_or("the account");
            let first = read_secret(
                &format!("*** Enter new password for user {label}: "),
                "--new-password",
            )?;
            let again = read_secret(
                &format!("*** Confirm new password for user {label}: "),
                "--new-password",
            )?;
            if first != again {
                bail!("the passwords do not match: run the command again");
            }
            first
        }
    };
    let mut body = json!({"currentPassword": current, "newPassword": new});
    if let Some(a) = &account {
        body["name"] = json!(a);
    }
    client
        .put("/api/v1/account/password", &body)
        .await
        .map_err(|e| match ApiError::status_of(&e) {
            Some(404) => anyhow::anyhow!(
                "account '{}' not found: `ferry account list` shows the accounts",
                account.as_deref().unwrap_or("")
            ),
            _ => e,
        })?;
    println!("Password updated");
    // Refresh the stored token only when it is ours and came from the config.
    if own
        && opts.auth_token.is_none()
        && let Some(user) = me
    {
        let path = opts.config_path()?;
        let mut cfg = Config::load(&path)?;
        let target = resolve(opts, &cfg)?;
        if let Some(name) = target.context.clone() {
            let token = session(client, &user, &new)
                .await
                .context("password updated, but logging in again failed: run `ferry login`")?;
            if let Some(ctx) = cfg.contexts.iter_mut().find(|c| c.name == name) {
                ctx.token = Some(token);
            }
            cfg.save(&path)?;
            println!("Context '{name}' updated");
        }
    }
    Ok(())
}

fn prompt_line(prompt: &str) -> Result<String> {
    eprint!("{prompt}");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Prompts without echo on a terminal; reads one line from piped stdin
/// otherwise (so `echo $PW | ferry login ...` works in scripts).
fn read_secret(prompt: &str, flag: &str) -> Result<String> {
    let secret = if output::stdin_is_terminal() {
        eprint!("{prompt}");
        console::Term::stderr()
            .read_secure_line()
            .context("reading the password from the terminal")?
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if secret.is_empty() {
        bail!("no password given: pass {flag}, or type it when prompted");
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_is_argocd_like() {
        let info =
            json!({"loggedIn": true, "username": "admin", "iss": "argocd", "groups": ["a", "b"]});
        assert_eq!(
            user_info_text(&info),
            "Logged In: true\nUsername: admin\nIssuer: argocd\nGroups: a,b\n"
        );
    }
}
