//! # monitor
//!
//! The end user's client of the gateway. It logs in, binds IM accounts
//! (kept on the gateway and in a local file, S3), reports settings changes
//! (S4) and follows their delivery per network, detects changes by itself
//! (`watch`) and notices IM clients installed on the device (`scan`, S7).
//! It is also a terminal of the handoff service: registered as one of the
//! user's devices ([`device`]), it opens application sessions, hands them
//! to another terminal and takes them over ([`handoff`]).
//!
//! Along a command's way: [`cli`] parses it, [`account`], [`report`],
//! [`watch`], [`scan`], [`device`] and [`handoff`] carry it out through the
//! typed [`client`] of the public API, [`store`] keeps the local files,
//! [`prompt`] asks the user.

pub mod account;
pub mod cli;
pub mod client;
pub mod detect;
pub mod device;
pub mod files;
pub mod handoff;
pub mod profile;
pub mod prompt;
pub mod readers;
pub mod report;
pub mod scan;
pub mod service;
pub mod store;
pub mod tasks;
pub mod watch;

pub use cli::main;

/// Hex SHA-256 of `data` (to notice an avatar that changed).
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

use client::{Client, ClientError};
use store::{Device, Session, Store, StoreError};

/// Why a monitor command failed.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// A call to the gateway failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A local file could not be used.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A question got no answer.
    #[error(transparent)]
    Prompt(#[from] prompt::PromptError),
    /// No session saved.
    #[error(
        "not logged in: run `monitor login --server URL --username NAME` (or `monitor register`)"
    )]
    NotLoggedIn,
    /// No device registration saved.
    #[error("this terminal is not registered as a device: run `monitor device register` first")]
    NoDevice,
    /// The command's arguments do not make sense.
    #[error("{0}")]
    Usage(String),
    /// A file given on the command line could not be used.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl MonitorError {
    /// For `map_err` on I/O of `path`.
    pub fn file(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> MonitorError + '_ {
        move |e| MonitorError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    }

    /// Reads a file the user named.
    pub fn read(path: &std::path::Path) -> Result<Vec<u8>, MonitorError> {
        std::fs::read(path).map_err(MonitorError::file(path))
    }
}

/// How a command ended, as the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done (for `report`: every target delivered, or an echo).
    Done = 0,
    /// `report`: some target failed.
    NotDelivered = 2,
    /// `report`: the gateway was unreachable; the report waits in the queue.
    Queued = 3,
    /// `report`: targets still pending when the wait ran out.
    StillPending = 4,
}

/// Exit code of a command that failed.
pub const EXIT_ERROR: u8 = 1;

/// What every command works with: the config dir and the server to talk to.
#[derive(Debug)]
pub struct Context {
    /// The config dir's files.
    pub store: Store,
    /// `--server`, when given.
    pub server: Option<String>,
}

impl Context {
    /// The saved session, or [`MonitorError::NotLoggedIn`]. A `--server`
    /// other than the session's is refused: the token must not be sent to a
    /// server it was not issued by.
    pub fn session(&self) -> Result<Session, MonitorError> {
        let session = self.store.session()?.ok_or(MonitorError::NotLoggedIn)?;
        match &self.server {
            Some(server) if server.trim_end_matches('/') != session.server => {
                Err(MonitorError::Usage(format!(
                    "logged in at {}, not {server}: run `monitor login --server {server}` first",
                    session.server
                )))
            }
            _ => Ok(session),
        }
    }

    /// A client with the session's token.
    pub fn client(&self) -> Result<Client, MonitorError> {
        let session = self.session()?;
        Ok(Client::new(&session.server, Some(session.token)))
    }

    /// This terminal's device registration, or [`MonitorError::NoDevice`].
    /// Refused when `--server` names another gateway than the one that
    /// issued the device token, or when the user logged in since is not the
    /// one the device was registered for.
    pub fn device(&self) -> Result<Device, MonitorError> {
        let device = self.store.device()?.ok_or(MonitorError::NoDevice)?;
        if let Some(server) = &self.server {
            if server.trim_end_matches('/') != device.server {
                return Err(MonitorError::Usage(format!(
                    "this terminal is registered as device {} at {}, not {server}: log in there \
                     and run `monitor device register` first",
                    device.id, device.server
                )));
            }
        }
        if let Some(session) = self.store.session()? {
            if session.server != device.server || session.username != device.username {
                return Err(MonitorError::Usage(format!(
                    "this terminal is registered as device {} of {} at {}, but you are logged \
                     in as {} at {}: run `monitor device register` again",
                    device.id, device.username, device.server, session.username, session.server
                )));
            }
        }
        Ok(device)
    }

    /// A client acting as this terminal's device (its device token).
    pub fn device_client(&self) -> Result<(Device, Client), MonitorError> {
        let device = self.device()?;
        let client = Client::device(&device.server, device.token.clone());
        Ok((device, client))
    }

    /// Refreshes the local copy of the bindings from the gateway.
    pub async fn sync_bindings(
        &self,
        client: &Client,
    ) -> Result<Vec<store::LocalBinding>, MonitorError> {
        let bindings: Vec<store::LocalBinding> = client
            .bindings()
            .await?
            .into_iter()
            .map(|b| store::LocalBinding {
                id: b.id,
                module: b.module,
                account: b.account,
                created_at: b.created_at,
            })
            .collect();
        self.store.save_bindings(&bindings)?;
        Ok(bindings)
    }

    /// Explains a module the user has no binding of: unsupported (naming
    /// the supported ones) or supported but not bound.
    pub async fn unbound_module(&self, client: &Client, module: &str) -> MonitorError {
        let supported: Vec<String> = match client.modules().await {
            Ok(modules) => modules.into_iter().map(|m| m.id).collect(),
            Err(e) => return e.into(),
        };
        if supported.iter().any(|id| id == module) {
            MonitorError::Usage(format!(
                "you have no {module} account bound: run `monitor bind {module} ACCOUNT` first"
            ))
        } else {
            MonitorError::Usage(format!(
                "module {module:?} is not supported by this gateway; supported modules: {}",
                if supported.is_empty() {
                    "none yet".to_owned()
                } else {
                    supported.join(", ")
                }
            ))
        }
    }
}
