//! Accounts: register, log in and out, the supported modules, and the user's
//! bindings (on the gateway and in the local copy).

use crate::client::Client;
use crate::store::{LocalBinding, Session};
use crate::{prompt, Context, MonitorError, Outcome};
use gateway_api::{CredentialField, ModuleView};
use serde_json::{Map, Value};

/// Default gateway URL when neither `--server` nor a session names one.
const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Flags of `register` and `login`.
#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// Your user name on the gateway.
    #[arg(long, short)]
    username: String,
}

/// Flags of `bind`.
#[derive(Debug, clap::Args)]
pub struct BindArgs {
    /// Module id, e.g. matrix (see `monitor modules`).
    module: String,
    /// Your account on that network, e.g. @alice:example.org.
    account: String,
    /// Credentials as a JSON object, or `-` to read it from stdin.
    #[arg(long, env = "MONITOR_CREDENTIALS", hide_env_values = true)]
    credentials: Option<String>,
}

/// Flags of `unbind`.
#[derive(Debug, clap::Args)]
pub struct UnbindArgs {
    /// Module id, or a binding id.
    module: String,
    /// The account, when several of that module are bound.
    account: Option<String>,
}

fn password(question: &str) -> Result<String, MonitorError> {
    match std::env::var("MONITOR_PASSWORD") {
        Ok(password) => Ok(password),
        Err(_) => Ok(prompt::secret(question)?),
    }
}

/// Whether an expired session can be renewed without the user typing a command.
pub fn can_log_in_again() -> bool {
    std::env::var_os("MONITOR_PASSWORD").is_some() || prompt::interactive()
}

/// Logs in again as the saved session's user.
pub async fn log_in_again(ctx: &Context) -> Result<(), MonitorError> {
    let session = ctx.store.session()?.ok_or(MonitorError::NotLoggedIn)?;
    let question = format!("password of {} at {}:", session.username, session.server);
    open_session(
        ctx,
        &session.server,
        &session.username,
        &password(&question)?,
    )
    .await
}

fn server(ctx: &Context) -> Result<String, MonitorError> {
    Ok(match (&ctx.server, ctx.store.session()?) {
        (Some(server), _) => server.trim_end_matches('/').to_owned(),
        (None, Some(session)) => session.server,
        (None, None) => DEFAULT_SERVER.to_owned(),
    })
}

async fn open_session(
    ctx: &Context,
    server: &str,
    username: &str,
    password: &str,
) -> Result<(), MonitorError> {
    let session = Client::new(server, None).login(username, password).await?;
    ctx.store.save_session(&Session {
        server: server.to_owned(),
        username: username.to_owned(),
        token: session.token.clone(),
        expires_at: session.expires_at,
    })?;
    // Keep the local copy of the bindings in step with this account.
    ctx.sync_bindings(&Client::new(server, Some(session.token)))
        .await?;
    Ok(())
}

/// `monitor register`.
pub async fn register(ctx: &Context, args: &LoginArgs) -> Result<Outcome, MonitorError> {
    let server = server(ctx)?;
    let password = match std::env::var("MONITOR_PASSWORD") {
        Ok(password) => password,
        Err(_) => {
            let first = prompt::secret("choose a password (8 characters or more):")?;
            if prompt::interactive() && prompt::secret("the same password again:")? != first {
                return Err(MonitorError::Usage("the two passwords differ".into()));
            }
            first
        }
    };
    let user = Client::new(&server, None)
        .register(&args.username, &password)
        .await?;
    open_session(ctx, &server, &user.username, &password).await?;
    println!("registered {} at {server}; logged in", user.username);
    Ok(Outcome::Done)
}

/// `monitor login`.
pub async fn login(ctx: &Context, args: &LoginArgs) -> Result<Outcome, MonitorError> {
    let server = server(ctx)?;
    let password = password(&format!("password of {} at {server}:", args.username))?;
    open_session(ctx, &server, &args.username, &password).await?;
    println!("logged in as {} at {server}", args.username);
    Ok(Outcome::Done)
}

/// `monitor logout`.
pub async fn logout(ctx: &Context) -> Result<Outcome, MonitorError> {
    let Some(session) = ctx.store.session()? else {
        println!("not logged in");
        return Ok(Outcome::Done);
    };
    let client = Client::new(&session.server, Some(session.token));
    match client.logout().await {
        // Already expired on the gateway: forgetting it is all there is to do.
        Ok(()) | Err(crate::ClientError::SessionExpired { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    ctx.store.forget_session()?;
    println!("logged out of {}", session.server);
    Ok(Outcome::Done)
}

/// `monitor modules`.
pub async fn modules(ctx: &Context) -> Result<Outcome, MonitorError> {
    for module in Client::new(&server(ctx)?, None).modules().await? {
        println!(
            "{:<12} {:<20} sets: {}",
            module.id,
            module.name,
            module.fields.join(", ")
        );
    }
    Ok(Outcome::Done)
}

/// The credentials given with `--credentials`; `None`: ask for them.
fn given_credentials(args: &BindArgs) -> Result<Option<Map<String, Value>>, MonitorError> {
    let text = match args.credentials.as_deref() {
        Some("-") => std::io::read_to_string(std::io::stdin())
            .map_err(MonitorError::file(std::path::Path::new("stdin")))?,
        Some(json) => json.to_owned(),
        None => return Ok(None),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        MonitorError::Usage(format!(
            "credentials must be a JSON object such as {{\"password\": \"...\"}}: {e}"
        ))
    })
}

/// Asks for the credentials of `account` that `module` lists in
/// `GET /v1/modules`: each field by its label (secrets without echo,
/// optional ones skipped with Enter); a password when it lists none.
pub fn ask_credentials(
    module: Option<&ModuleView>,
    module_id: &str,
    account: &str,
) -> Result<Map<String, Value>, MonitorError> {
    let network = module.map_or(module_id, |m| m.name.as_str());
    let Some(fields) = module.and_then(|m| m.credentials.as_deref()) else {
        let password = prompt::secret(&format!("password of {account} on {network}:"))?;
        return Ok(Map::from_iter([(
            "password".to_owned(),
            Value::String(password),
        )]));
    };
    let mut credentials = Map::new();
    for field in fields {
        if !field.help.is_empty() {
            eprintln!("{}: {}", field.label, field.help);
        }
        let optional = if field.required {
            ""
        } else {
            " (optional, Enter skips it)"
        };
        let question = format!("{} of {account} on {network}{optional}:", field.label);
        let answer = if field.secret {
            prompt::secret(&question)?
        } else {
            prompt::text(&question)?
        };
        if answer.is_empty() && !field.required {
            continue;
        }
        credentials.insert(field.name.clone(), typed_answer(field, answer)?);
    }
    Ok(credentials)
}

/// An answer as the JSON value the field's kind asks for.
fn typed_answer(field: &CredentialField, answer: String) -> Result<Value, MonitorError> {
    let wrong = |wanted: &str| MonitorError::Usage(format!("{}: {wanted} expected", field.label));
    match field.kind.as_str() {
        "integer" => answer
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| wrong("a whole number")),
        "boolean" => match answer.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" | "true" => Ok(Value::Bool(true)),
            "n" | "no" | "false" => Ok(Value::Bool(false)),
            _ => Err(wrong("yes or no")),
        },
        _ => Ok(Value::String(answer)),
    }
}

/// Binds `account` of `module` with credentials, and refreshes the local copy.
pub async fn bind_account(
    ctx: &Context,
    client: &Client,
    module: &str,
    account: &str,
    credentials: &Map<String, Value>,
) -> Result<(), MonitorError> {
    match client.bind(module, account, credentials).await {
        Ok(binding) => {
            ctx.sync_bindings(client).await?;
            println!(
                "bound {} on {} (binding {})",
                binding.account, binding.module, binding.id
            );
            Ok(())
        }
        Err(e) if e.code() == Some("unsupported_module") => {
            Err(ctx.unbound_module(client, module).await)
        }
        Err(e) => Err(e.into()),
    }
}

/// `monitor bind`.
pub async fn bind(ctx: &Context, args: &BindArgs) -> Result<Outcome, MonitorError> {
    let client = ctx.client()?;
    let credentials = match given_credentials(args)? {
        Some(credentials) => credentials,
        None => {
            let modules = client.modules().await?;
            let module = modules.iter().find(|m| m.id == args.module);
            ask_credentials(module, &args.module, &args.account)?
        }
    };
    bind_account(ctx, &client, &args.module, &args.account, &credentials).await?;
    Ok(Outcome::Done)
}

fn print_bindings(bindings: &[LocalBinding]) {
    if bindings.is_empty() {
        println!("no accounts bound yet: `monitor bind MODULE ACCOUNT`");
    }
    for b in bindings {
        println!("{:<12} {:<32} {}", b.module, b.account, b.id);
    }
}

/// `monitor bindings`: from the gateway, or the local copy when it is unreachable.
pub async fn bindings(ctx: &Context) -> Result<Outcome, MonitorError> {
    let client = ctx.client()?;
    match ctx.sync_bindings(&client).await {
        Ok(bindings) => print_bindings(&bindings),
        Err(MonitorError::Client(e)) if e.is_transient() => {
            eprintln!("{e}; showing the local copy");
            print_bindings(&ctx.store.bindings()?);
        }
        Err(e) => return Err(e),
    }
    Ok(Outcome::Done)
}

/// `monitor unbind`.
pub async fn unbind(ctx: &Context, args: &UnbindArgs) -> Result<Outcome, MonitorError> {
    let client = ctx.client()?;
    let bindings = ctx.sync_bindings(&client).await?;
    let matching: Vec<&LocalBinding> = bindings
        .iter()
        .filter(|b| {
            b.id == args.module
                || b.module == args.module && args.account.as_ref().is_none_or(|a| *a == b.account)
        })
        .collect();
    let binding = match matching.as_slice() {
        [one] => *one,
        [] => {
            return Err(MonitorError::Usage(format!(
                "no binding matches {}{}; see `monitor bindings`",
                args.module,
                args.account
                    .as_deref()
                    .map(|a| format!(" {a}"))
                    .unwrap_or_default()
            )))
        }
        _ => {
            return Err(MonitorError::Usage(format!(
                "several {} accounts are bound: name the account (`monitor unbind {} ACCOUNT`)",
                args.module, args.module
            )))
        }
    };
    client.unbind(&binding.id).await?;
    ctx.sync_bindings(&client).await?;
    println!("unbound {} on {}", binding.account, binding.module);
    Ok(Outcome::Done)
}
