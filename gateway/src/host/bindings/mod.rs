//! The connector worlds, one module per WIT version (`v1`: ABI 1, `v2`:
//! ABI 2). Each holds its generated bindings, the host side of its imports
//! and explicit conversions to the host's domain types; [`Pre`] sends a call
//! to the version the plugin was built for. A new version is a new module
//! here and a new arm in [`Pre`]; the older ones stay as they are.

mod v1;
mod v2;

use super::types::{CallError, Description, PushOutcome, Settings};
use super::CallState;
use wasmtime::component::{InstancePre, Linker};
use wasmtime::Store;

/// A linked connector of one ABI version, ready to instantiate.
#[derive(Clone)]
pub enum Pre {
    /// Built against `wit/v1`.
    V1(v1::ConnectorPre<CallState>),
    /// Built against `wit/v2`.
    V2(v2::ConnectorPre<CallState>),
}

/// The account a call acts for, as every version passes it.
pub struct Account {
    /// Account login on the network.
    pub login: String,
    /// The user's credentials as JSON text.
    pub credentials: String,
    /// The module's config as JSON text.
    pub config: String,
}

/// What a call returns: a trap (outer) or the connector's answer (inner).
pub type Answer<T> = wasmtime::Result<Result<T, CallError>>;

/// Adds the imports of every supported version to `linker`.
pub fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    v1::Connector::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)?;
    v2::Connector::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)?;
    Ok(())
}

impl Pre {
    /// Checks that `pre` has the exports of ABI `abi`'s world.
    pub fn new(abi: u32, pre: InstancePre<CallState>) -> wasmtime::Result<Self> {
        match abi {
            1 => Ok(Pre::V1(v1::ConnectorPre::new(pre)?)),
            _ => Ok(Pre::V2(v2::ConnectorPre::new(pre)?)),
        }
    }

    /// `describe()`.
    pub fn describe(&self, store: &mut Store<CallState>) -> Answer<Description> {
        Ok(Ok(match self {
            Pre::V1(pre) => pre.instantiate(&mut *store)?.call_describe(store)?.into(),
            Pre::V2(pre) => pre.instantiate(&mut *store)?.call_describe(store)?.into(),
        }))
    }

    /// `verify(account)`.
    pub fn verify(&self, store: &mut Store<CallState>, account: Account) -> Answer<()> {
        Ok(match self {
            Pre::V1(pre) => pre
                .instantiate(&mut *store)?
                .call_verify(store, &account.into())?
                .map_err(Into::into),
            Pre::V2(pre) => pre
                .instantiate(&mut *store)?
                .call_verify(store, &account.into())?
                .map_err(Into::into),
        })
    }

    /// `push(account, settings)`.
    pub fn push(
        &self,
        store: &mut Store<CallState>,
        account: Account,
        settings: &Settings,
    ) -> Answer<PushOutcome> {
        Ok(match self {
            Pre::V1(pre) => pre
                .instantiate(&mut *store)?
                .call_push(store, &account.into(), &settings.into())?
                .map(Into::into)
                .map_err(Into::into),
            Pre::V2(pre) => pre
                .instantiate(&mut *store)?
                .call_push(store, &account.into(), &settings.into())?
                .map(Into::into)
                .map_err(Into::into),
        })
    }

    /// `fetch(account)`.
    pub fn fetch(&self, store: &mut Store<CallState>, account: Account) -> Answer<Settings> {
        Ok(match self {
            Pre::V1(pre) => pre
                .instantiate(&mut *store)?
                .call_fetch(store, &account.into())?
                .map(Into::into)
                .map_err(Into::into),
            Pre::V2(pre) => pre
                .instantiate(&mut *store)?
                .call_fetch(store, &account.into())?
                .map(Into::into)
                .map_err(Into::into),
        })
    }
}

/// Conversions and import implementations for the parts of the contract
/// that are the same in every version (settings, outcomes, accounts, HTTP,
/// log, clock), written once for each version's generated types. Invoked
/// inside a version module, after its `bindgen!`.
macro_rules! same_in_every_version {
    () => {
        use self::gateway::connector::{clock, http, log, types as wit};
        use crate::host::types::{self as domain, HttpFailure, HttpRequest, LogLevel};
        use crate::host::CallState;

        impl From<wit::Field> for domain::Field {
            fn from(f: wit::Field) -> Self {
                match f {
                    wit::Field::Avatar => domain::Field::Avatar,
                    wit::Field::Signature => domain::Field::Signature,
                    wit::Field::Mood => domain::Field::Mood,
                }
            }
        }

        fn limits(l: wit::Limits) -> domain::Limits {
            domain::Limits {
                max_signature_chars: l.max_signature_chars,
                max_mood_chars: l.max_mood_chars,
                avatar: l.avatar.map(|a| domain::AvatarLimits {
                    max_pixels: a.max_pixels,
                    max_bytes: a.max_bytes,
                    formats: a.formats,
                }),
            }
        }

        impl From<&domain::Settings> for wit::Settings {
            fn from(s: &domain::Settings) -> Self {
                wit::Settings {
                    avatar: s.avatar.as_ref().map(|i| wit::Image {
                        content_type: i.content_type.clone(),
                        data: i.data.clone(),
                    }),
                    signature: s.signature.clone(),
                    mood: s.mood.clone(),
                }
            }
        }

        impl From<wit::Settings> for domain::Settings {
            fn from(s: wit::Settings) -> Self {
                domain::Settings {
                    avatar: s.avatar.map(|i| domain::Image {
                        content_type: i.content_type,
                        data: i.data,
                    }),
                    signature: s.signature,
                    mood: s.mood,
                }
            }
        }

        impl From<wit::PushOutcome> for domain::PushOutcome {
            fn from(o: wit::PushOutcome) -> Self {
                domain::PushOutcome {
                    applied: o.applied.into_iter().map(Into::into).collect(),
                    truncated: o.truncated.into_iter().map(Into::into).collect(),
                }
            }
        }

        impl From<super::Account> for wit::Account {
            fn from(a: super::Account) -> Self {
                wit::Account {
                    login: a.login,
                    credentials: a.credentials,
                    config: a.config,
                }
            }
        }

        impl http::Host for CallState {
            fn send(&mut self, request: http::Request) -> Result<http::Response, http::HttpError> {
                let request = HttpRequest {
                    method: request.method,
                    url: request.url,
                    headers: request
                        .headers
                        .into_iter()
                        .map(|h| (h.name, h.value))
                        .collect(),
                    body: request.body,
                };
                match self.send_http(request) {
                    Ok(response) => Ok(http::Response {
                        status: response.status,
                        headers: response
                            .headers
                            .into_iter()
                            .map(|(name, value)| http::Header { name, value })
                            .collect(),
                        body: response.body,
                    }),
                    Err(HttpFailure::Denied(why)) => Err(http::HttpError::Denied(why)),
                    Err(HttpFailure::Timeout) => Err(http::HttpError::Timeout),
                    Err(HttpFailure::TooLarge) => Err(http::HttpError::TooLarge),
                    Err(HttpFailure::RateLimited(s)) => Err(http::HttpError::RateLimited(s)),
                    Err(HttpFailure::Failed(why)) => Err(http::HttpError::Failed(why)),
                }
            }
        }

        impl log::Host for CallState {
            fn write(&mut self, level: log::Level, message: String) {
                let level = match level {
                    log::Level::Debug => LogLevel::Debug,
                    log::Level::Info => LogLevel::Info,
                    log::Level::Warn => LogLevel::Warn,
                    log::Level::Error => LogLevel::Error,
                };
                self.log(level, &message);
            }
        }

        impl clock::Host for CallState {
            fn now_ms(&mut self) -> u64 {
                CallState::now_ms(self)
            }
        }

        impl wit::Host for CallState {}
    };
}
use same_in_every_version;
