//! The user's application list (S3) as a domain service: binding an account
//! (the account rules, the connector's credential check, credentials sealed
//! to their record), unbinding, and reading what an account holds on its
//! network now (connector `fetch`, with the gateway's own values marked by
//! the one echo rule of [`crate::federation`]). No HTTP here: callers get
//! typed results and [`BindingError`].

use crate::clock::SharedClock;
use crate::connectors::{Connectors, ConnectorsError};
use crate::federation;
use crate::host::{CallError, Settings};
use crate::secrets::{credentials_context, MasterKey};
use crate::throttle::{FailureGate, FailureQuota, Throttled};
use registry_db::{Binding, NewBinding, Registry, RegistryError, SealedCredentials};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// Refused credential checks of one account of one module (whoever sends
/// them) before the account is refused for a while: guessing a password
/// through the gateway, with the module's admin rights, is as slow as this.
pub const ACCOUNT_FAILURES: FailureQuota = FailureQuota {
    burst: 5,
    refill: Duration::from_secs(60),
};
/// Refused credential checks of one user, over all accounts.
pub const USER_FAILURES: FailureQuota = FailureQuota {
    burst: 10,
    refill: Duration::from_secs(30),
};

/// Bindings one user may have: more would only let one user load the
/// connectors (every change fans out to each binding).
pub const MAX_BINDINGS_PER_USER: usize = 64;

/// The registry's constraint that one account of a module has one user.
const ACCOUNT_OWNER: &str = "bindings_module_account_key";

/// Longest account login accepted, in characters.
pub const MAX_ACCOUNT_CHARS: usize = 320;
/// Largest credentials object accepted (serialized).
pub const MAX_CREDENTIALS_BYTES: usize = 16 * 1024;

/// Why a binding operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    /// The module is not in the library (or was removed).
    #[error("module {module:?} is not supported; supported modules: {}", supported_list(.supported))]
    Unsupported {
        /// The module asked for.
        module: String,
        /// The modules that are supported, by id.
        supported: Vec<String>,
    },
    /// The account login breaks the rules.
    #[error("the account is 1-{MAX_ACCOUNT_CHARS} characters without control characters")]
    InvalidAccount,
    /// The credentials are refused (by their size or by the network).
    #[error("{0}")]
    InvalidCredentials(String),
    /// The credentials do not fit the fields the connector declares
    /// (checked before the connector runs).
    #[error("credentials.{0}")]
    CredentialFields(crate::host::schema::FieldProblem),
    /// The user has as many bindings as allowed.
    #[error("at most {MAX_BINDINGS_PER_USER} accounts may be bound; unbind one first")]
    TooMany,
    /// The user has this account of this module bound already.
    #[error("{module} account {account:?} is already bound")]
    AlreadyBound {
        /// Module id.
        module: String,
        /// Account login.
        account: String,
    },
    /// Another user has this account of this module bound: it passed the
    /// connector's check, so the caller proved the account, but one account
    /// belongs to one user.
    #[error(
        "{module} account {account:?} is bound by another user of this gateway; \
         unbind it there first (or ask the operator)"
    )]
    AccountTaken {
        /// Module id.
        module: String,
        /// Account login.
        account: String,
    },
    /// No such binding of this user.
    #[error("binding not found")]
    NotFound,
    /// The connector cannot read settings back.
    #[error("the {module} connector cannot read these settings: {reason}")]
    FetchUnsupported {
        /// Module id.
        module: String,
        /// What the connector said.
        reason: String,
    },
    /// The network asked to wait before it answers again.
    #[error("the {module} server asks to wait {secs} s")]
    ModuleBusy {
        /// Module id.
        module: String,
        /// Seconds to wait.
        secs: u32,
    },
    /// The module is not set up correctly on this gateway (the operator's
    /// to fix; the cause is in the gateway's log, not shown to users).
    #[error(
        "the {module} network is not set up correctly on this gateway; the operator has \
         been told (this is not about your credentials); try again later"
    )]
    ModuleMisconfigured {
        /// Module id.
        module: String,
    },
    /// The network or its connector failed.
    #[error("{0}")]
    ModuleUnavailable(String),
    /// Too many refused credential checks for this account or this user.
    #[error("too many refused credential checks; {0}")]
    Throttled(#[from] Throttled),
    /// Something on the gateway's side failed (logged, not shown).
    #[error("{0}")]
    Internal(String),
    /// Storage failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

fn supported_list(supported: &[String]) -> String {
    if supported.is_empty() {
        "none yet".to_owned()
    } else {
        supported.join(", ")
    }
}

/// Which connector call failed, for the one mapping of its errors.
#[derive(Debug, Clone, Copy)]
enum Call {
    Verify,
    Fetch,
}

/// A binding request, checked by [`Bindings::bind`].
#[derive(Debug)]
pub struct NewAccount<'a> {
    /// Module id.
    pub module: &'a str,
    /// Account login (trimmed before use).
    pub account: &'a str,
    /// Credentials for the connector.
    pub credentials: &'a Map<String, Value>,
}

/// An account's current settings on its network.
#[derive(Debug)]
pub struct CurrentSettings {
    /// The binding read.
    pub binding: Binding,
    /// What the network holds.
    pub settings: Settings,
    /// Fields whose value is the one the gateway last applied there.
    pub applied_by_gateway: Vec<String>,
}

/// The binding service.
pub struct Bindings {
    registry: Registry,
    connectors: Arc<Connectors>,
    master_key: MasterKey,
    clock: SharedClock,
    /// Refused checks per (module, account).
    account_failures: FailureGate<(String, String)>,
    /// Refused checks per user.
    user_failures: FailureGate<String>,
}

impl Bindings {
    /// Wires the parts together.
    pub fn new(
        registry: Registry,
        connectors: Arc<Connectors>,
        master_key: MasterKey,
        clock: SharedClock,
    ) -> Self {
        Bindings {
            registry,
            connectors,
            master_key,
            clock,
            account_failures: FailureGate::new(ACCOUNT_FAILURES),
            user_failures: FailureGate::new(USER_FAILURES),
        }
    }

    /// Forgets failure counts that no longer matter (memory stays bounded).
    pub fn shrink(&self) {
        self.account_failures.shrink();
        self.user_failures.shrink();
    }

    /// Checks the account with the module's connector, then binds it to the
    /// user with its credentials sealed.
    pub async fn bind(&self, user_id: &str, new: NewAccount<'_>) -> Result<Binding, BindingError> {
        match self.registry.module(new.module).await {
            Ok(m) if m.enabled => {}
            Ok(_) | Err(RegistryError::NotFound) => return Err(self.unsupported(new.module).await),
            Err(e) => return Err(e.into()),
        }
        let account = new.account.trim();
        if account.is_empty()
            || account.chars().count() > MAX_ACCOUNT_CHARS
            || account.chars().any(char::is_control)
        {
            return Err(BindingError::InvalidAccount);
        }
        let library = self.connectors.library().await?;
        if let Some(fields) = library
            .get(new.module)
            .and_then(|d| d.as_ref())
            .and_then(|d| d.credentials.as_ref())
        {
            crate::host::schema::check_object(fields, new.credentials)
                .map_err(BindingError::CredentialFields)?;
        }
        let plaintext = serde_json::to_vec(new.credentials)
            .map_err(|e| BindingError::Internal(e.to_string()))?;
        if plaintext.len() > MAX_CREDENTIALS_BYTES {
            return Err(BindingError::InvalidCredentials(format!(
                "credentials are at most {MAX_CREDENTIALS_BYTES} bytes"
            )));
        }
        let bound = self.registry.list_bindings(user_id).await?;
        let already = || BindingError::AlreadyBound {
            module: new.module.to_owned(),
            account: account.to_owned(),
        };
        if bound
            .iter()
            .any(|b| b.module_id == new.module && b.account == account)
        {
            return Err(already());
        }
        if bound.len() >= MAX_BINDINGS_PER_USER {
            return Err(BindingError::TooMany);
        }
        let account_key = (new.module.to_owned(), account.to_owned());
        let user_key = user_id.to_owned();
        self.account_failures.check(&account_key)?;
        self.user_failures.check(&user_key)?;
        let json = String::from_utf8_lossy(&plaintext).into_owned();
        let verified = self.connectors.verify(new.module, account, json).await;
        match self.called(new.module, Call::Verify, verified).await {
            Ok(()) => {}
            Err(e @ BindingError::InvalidCredentials(_)) => {
                self.account_failures.failed(&account_key);
                self.user_failures.failed(&user_key);
                return Err(e);
            }
            Err(e) => return Err(e),
        }
        let id = uuid::Uuid::new_v4().to_string();
        let sealed = self
            .master_key
            .seal(&plaintext, credentials_context(&id, user_id).as_bytes());
        let binding = NewBinding {
            id,
            user_id: user_id.to_owned(),
            module_id: new.module.to_owned(),
            account: account.to_owned(),
            credentials: SealedCredentials(sealed),
        };
        match self
            .registry
            .create_binding(binding, self.clock.now())
            .await
        {
            Ok(b) => Ok(b),
            // Said only after the connector's check passed: nobody learns
            // who holds an account they cannot prove.
            Err(RegistryError::Conflict { constraint }) if constraint == ACCOUNT_OWNER => {
                Err(BindingError::AccountTaken {
                    module: new.module.to_owned(),
                    account: account.to_owned(),
                })
            }
            Err(RegistryError::Conflict { .. }) => Err(already()),
            Err(e) => Err(e.into()),
        }
    }

    /// The user's bindings, oldest first.
    pub async fn list(&self, user_id: &str) -> Result<Vec<Binding>, BindingError> {
        Ok(self.registry.list_bindings(user_id).await?)
    }

    /// Unbinds an account of the user.
    pub async fn unbind(&self, user_id: &str, id: &str) -> Result<(), BindingError> {
        self.registry
            .delete_binding(user_id, id)
            .await
            .map_err(not_found)
    }

    /// Reads what the account holds on its network now.
    pub async fn current_settings(
        &self,
        user_id: &str,
        id: &str,
    ) -> Result<CurrentSettings, BindingError> {
        let binding = self
            .registry
            .binding(user_id, id)
            .await
            .map_err(not_found)?;
        let credentials = self
            .master_key
            .open_credentials(&binding.credentials.0, &binding.id, &binding.user_id)
            .ok_or_else(|| {
                BindingError::Internal("the stored credentials cannot be decrypted".into())
            })?;
        let fetched = self
            .connectors
            .fetch(&binding.module_id, &binding.account, credentials)
            .await;
        let settings = self
            .called(&binding.module_id, Call::Fetch, fetched)
            .await?;
        let applied = binding.last_applied.clone().unwrap_or_default();
        let avatar_key = settings.avatar.as_ref().map(|image| {
            federation::normalise::avatar_key(&crate::secrets::sha256_hex(&image.data))
        });
        let applied_by_gateway = [
            ("signature", settings.signature.as_deref()),
            ("mood", settings.mood.as_deref()),
            ("avatar", avatar_key.as_deref()),
        ]
        .into_iter()
        .filter(|(field, value)| {
            value.is_some_and(|v| federation::applied_by_gateway(&applied, field, v))
        })
        .map(|(field, _)| field.to_owned())
        .collect();
        Ok(CurrentSettings {
            binding,
            settings,
            applied_by_gateway,
        })
    }

    /// The one mapping of a connector call's result to this service's errors.
    async fn called<T>(
        &self,
        module: &str,
        call: Call,
        result: Result<Result<T, CallError>, ConnectorsError>,
    ) -> Result<T, BindingError> {
        let error = match result {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => e,
            Err(ConnectorsError::Unsupported(_)) => return Err(self.unsupported(module).await),
            Err(ConnectorsError::Registry(e)) => return Err(e.into()),
            Err(e) => return Err(BindingError::Internal(e.to_string())),
        };
        Err(match (call, error) {
            // Logged for the operator by the host, with the cause.
            (_, CallError::Misconfigured(_)) => BindingError::ModuleMisconfigured {
                module: module.to_owned(),
            },
            (Call::Verify, CallError::AuthFailed(why) | CallError::Rejected(why)) => {
                BindingError::InvalidCredentials(format!(
                    "the {module} server refused these credentials: {why}"
                ))
            }
            (Call::Fetch, CallError::AuthFailed(why)) => BindingError::InvalidCredentials(format!(
                "the {module} server refused the stored credentials: {why}"
            )),
            (Call::Fetch, CallError::Rejected(reason)) => BindingError::FetchUnsupported {
                module: module.to_owned(),
                reason,
            },
            (_, CallError::RateLimited(secs)) => BindingError::ModuleBusy {
                module: module.to_owned(),
                secs,
            },
            (Call::Verify, e) => BindingError::ModuleUnavailable(format!(
                "could not check the credentials with {module}: {e}"
            )),
            (Call::Fetch, e) => BindingError::ModuleUnavailable(format!(
                "could not read the settings from {module}: {e}"
            )),
        })
    }

    async fn unsupported(&self, module: &str) -> BindingError {
        let supported = match self.registry.list_modules(false).await {
            Ok(list) => list.into_iter().map(|m| m.id).collect(),
            Err(_) => vec!["unknown (registry unavailable)".to_owned()],
        };
        BindingError::Unsupported {
            module: module.to_owned(),
            supported,
        }
    }
}

fn not_found(e: RegistryError) -> BindingError {
    match e {
        RegistryError::NotFound => BindingError::NotFound,
        e => e.into(),
    }
}
