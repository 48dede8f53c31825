//! Settings federation (S4-S6): a change report is checked against the
//! user's application list, compared with what the gateway itself applied
//! (echo suppression), and written with one delivery per other binding in one
//! transaction (the outbox). [`worker`] pushes the deliveries. No HTTP here.

pub mod attempt;
pub mod normalise;
pub mod worker;

use crate::clock::SharedClock;
use crate::config::DeliveryConfig;
use crate::connectors::Connectors;
use crate::host::Description;
use crate::media::MediaLibrary;
use crate::metrics::Metrics;
use crate::secrets::MasterKey;
use gateway_api::{ChangeStatus, Receipt, ReceiptTarget, Settings, TargetStatus};
use registry_db::{
    Binding, Change, ChangeRecorded, DeliveryStatus, NewChange, NewDelivery, Registry,
    RegistryError, SettingsMap,
};
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, oneshot, Notify};

/// A change report (S4).
#[derive(Debug, Clone)]
pub struct Report {
    /// The module whose settings changed.
    pub module: String,
    /// The account on that module, when the monitor knows it (a user with
    /// two accounts of one network); otherwise every binding of the module is
    /// taken as the source.
    pub account: Option<String>,
    /// The new values.
    pub settings: Settings,
    /// Set in a local client of the module that may not have reached its
    /// network: the source accounts are targets too.
    pub from_local_client: bool,
    /// `Idempotency-Key`.
    pub idempotency_key: Option<String>,
}

/// What became of a change report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reported {
    /// Recorded, with one pending delivery per other binding (or none when
    /// there is no other binding: then its status is already `delivered`).
    Accepted(Receipt),
    /// An echo of what the gateway itself applied there: recorded for the
    /// history, nothing to deliver.
    Suppressed(Receipt),
    /// The `Idempotency-Key` was used before: nothing recorded; the first
    /// receipt again.
    Repeated(Receipt),
}

impl Reported {
    /// The receipt, whatever became of the report.
    pub fn receipt(&self) -> &Receipt {
        match self {
            Reported::Accepted(r) | Reported::Suppressed(r) | Reported::Repeated(r) => r,
        }
    }

    /// The receipt, consuming this.
    pub fn into_receipt(self) -> Receipt {
        match self {
            Reported::Accepted(r) | Reported::Suppressed(r) | Reported::Repeated(r) => r,
        }
    }
}

/// The reported settings as a stored map (only the fields given).
fn settings_map(settings: &Settings) -> SettingsMap {
    settings
        .fields()
        .map(|(field, value)| (field.to_owned(), Value::String(value.to_owned())))
        .collect()
}

/// A stored settings map as settings (fields of other types are ignored).
pub fn settings_of(map: &SettingsMap) -> Settings {
    let text = |field: &str| map.get(field).and_then(Value::as_str).map(str::to_owned);
    Settings {
        avatar: text("avatar"),
        signature: text("signature"),
        mood: text("mood"),
    }
}

/// Targets' statuses folded into the change's: `pending` until every target
/// is final, then `delivered` (superseded counts: a newer change carried
/// it), `failed`, or `partial`; `suppressed` for an echo.
pub fn change_status(change: &Change) -> ChangeStatus {
    if change.suppressed {
        return ChangeStatus::Suppressed;
    }
    if change.targets.iter().any(|t| !t.status.is_final()) {
        return ChangeStatus::Pending;
    }
    let failed = change
        .targets
        .iter()
        .filter(|t| t.status == DeliveryStatus::Failed)
        .count();
    match failed {
        0 => ChangeStatus::Delivered,
        n if n == change.targets.len() => ChangeStatus::Failed,
        _ => ChangeStatus::Partial,
    }
}

/// True when `applied` (what the gateway last put on a network, normalised
/// as the network stores it) holds `value` for `field`: the one echo rule,
/// for reports and for settings read back from a network.
pub fn applied_by_gateway(applied: &Value, field: &str, value: &str) -> bool {
    applied.get(field).and_then(Value::as_str) == Some(value)
}

/// A receipt read back from its idempotency row.
fn stored_receipt(stored: Value) -> Result<Receipt, RegistryError> {
    serde_json::from_value(stored)
        .map_err(|e| RegistryError::Corrupt(format!("stored receipt: {e}")))
}

/// Why a report was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// No settings field given.
    #[error("a change needs at least one of avatar, signature, mood")]
    Empty,
    /// The user has no binding of the reporting module (or account).
    #[error("{0}")]
    NotBound(String),
    /// The avatar media id is unknown to this user.
    #[error("no media {0:?}: upload the image with POST /v1/media first")]
    UnknownMedia(String),
    /// Storage failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// The federation service shared by the HTTP layer and the workers.
pub struct Federation {
    registry: Registry,
    connectors: Arc<Connectors>,
    media: Arc<MediaLibrary>,
    master_key: MasterKey,
    config: DeliveryConfig,
    metrics: Metrics,
    clock: SharedClock,
    wake: Notify,
    updates: broadcast::Sender<String>,
    writer: mpsc::UnboundedSender<PendingChange>,
}

/// A change waiting for the writer, with where its result goes.
type PendingChange = (
    NewChange,
    oneshot::Sender<Result<ChangeRecorded, RegistryError>>,
);

/// Most changes one transaction records.
const MAX_GROUP_COMMIT: usize = 128;

/// Records changes as they come, all that wait in one transaction (group
/// commit): under load one commit serves many reports, and a lone report
/// waits for nobody. Must be started inside the Tokio runtime.
fn start_writer(registry: Registry, clock: SharedClock) -> mpsc::UnboundedSender<PendingChange> {
    let (queue, pending) = mpsc::unbounded_channel::<PendingChange>();
    let pending = Arc::new(tokio::sync::Mutex::new(pending));
    for _ in 0..parallel_commits(&registry) {
        tokio::spawn(write_changes(
            registry.clone(),
            clock.clone(),
            pending.clone(),
        ));
    }
    queue
}

/// How many group commits of one kind run at once: SQLite has a single
/// writer anyway; PostgreSQL commits in parallel.
fn parallel_commits(registry: &Registry) -> usize {
    match registry.backend() {
        registry_db::Backend::Sqlite => 1,
        registry_db::Backend::Postgres => 4,
    }
}

/// The next batch from a queue several committers share.
async fn next_batch<T>(
    queue: &tokio::sync::Mutex<mpsc::UnboundedReceiver<T>>,
    batch: &mut Vec<T>,
    max: usize,
) -> usize {
    queue.lock().await.recv_many(batch, max).await
}

async fn write_changes(
    registry: Registry,
    clock: SharedClock,
    pending: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<PendingChange>>>,
) {
    let mut batch = Vec::new();
    while next_batch(&pending, &mut batch, MAX_GROUP_COMMIT).await > 0 {
        let (changes, replies): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
        let now = clock.now();
        // Kept to record one by one should the group fail.
        let retry_alone = (changes.len() > 1).then(|| changes.clone());
        match (registry.record_changes(changes, now).await, retry_alone) {
            (Ok(recorded), _) => {
                for (reply, recorded) in replies.into_iter().zip(recorded) {
                    let _ = reply.send(Ok(recorded));
                }
            }
            (Err(e), None) => {
                if let Some(reply) = replies.into_iter().next() {
                    let _ = reply.send(Err(e));
                }
            }
            (Err(e), Some(changes)) => {
                // One by one, so one bad report does not fail the rest.
                tracing::debug!(error = %e, "a group commit failed; recording one by one");
                for (change, reply) in changes.into_iter().zip(replies) {
                    let _ = reply.send(registry.record_change(change, now).await);
                }
            }
        }
    }
}

impl Federation {
    /// Wires the parts together.
    pub fn new(
        registry: Registry,
        connectors: Arc<Connectors>,
        media: Arc<MediaLibrary>,
        master_key: MasterKey,
        config: DeliveryConfig,
        metrics: Metrics,
        clock: SharedClock,
    ) -> Self {
        Federation {
            writer: start_writer(registry.clone(), clock.clone()),
            clock,
            registry,
            connectors,
            media,
            master_key,
            config,
            metrics,
            wake: Notify::new(),
            updates: broadcast::channel(1024).0,
        }
    }

    /// Wakes the delivery workers (new or redriven deliveries).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Change ids whose targets changed, in this process or (on
    /// PostgreSQL, through [`Federation::relay_notices`]) in any other.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.updates.subscribe()
    }

    /// Passes other processes' announcements of changes on to this
    /// process's subscribers until `stop` turns true. Returns at once on
    /// SQLite, where no other process delivers.
    pub async fn relay_notices(&self, stop: tokio::sync::watch::Receiver<bool>) {
        crate::notices::relay(
            || self.registry.listen_changes(),
            |id| {
                let _ = self.updates.send(id);
            },
            stop,
            "deliveries",
        )
        .await
    }

    /// Records a change report and its deliveries (the outbox), or finds
    /// the first receipt of a repeated idempotency key.
    pub async fn report(&self, user_id: &str, report: Report) -> Result<Reported, ReportError> {
        if let Some(key) = &report.idempotency_key {
            if let Some(first) = self.registry.idempotent_receipt(user_id, key).await? {
                return Ok(Reported::Repeated(stored_receipt(first)?));
            }
        }
        let mut report = report;
        for text in [&mut report.settings.signature, &mut report.settings.mood]
            .into_iter()
            .flatten()
        {
            *text = normalise::clean(text);
        }
        let settings = settings_map(&report.settings);
        if settings.is_empty() {
            return Err(ReportError::Empty);
        }
        let bindings = self.registry.list_bindings(user_id).await?;
        let (sources, others): (Vec<Binding>, Vec<Binding>) = bindings.into_iter().partition(|b| {
            b.module_id == report.module && report.account.as_ref().is_none_or(|a| *a == b.account)
        });
        if sources.is_empty() {
            return Err(ReportError::NotBound(match &report.account {
                Some(account) => format!(
                    "no binding of module {:?} for account {account:?}: bind it first",
                    report.module
                ),
                None => format!("no binding of module {:?}: bind it first", report.module),
            }));
        }
        let library = self.connectors.library().await?;
        let description = library.get(&report.module).cloned().flatten();
        let normalised = self
            .normalised(description.as_ref(), &report.settings, user_id)
            .await?;
        let echo = sources.iter().any(|b| {
            b.last_applied.as_ref().is_some_and(|applied| {
                normalised.iter().all(|(field, value)| {
                    value
                        .as_str()
                        .is_some_and(|v| applied_by_gateway(applied, field, v))
                })
            })
        });
        let targets: Vec<NewDelivery> = if echo {
            Vec::new()
        } else {
            let sources = sources.iter().filter(|_| report.from_local_client);
            others
                .iter()
                .chain(sources)
                .filter(|b| library.contains_key(&b.module_id))
                .map(|b| NewDelivery {
                    id: uuid::Uuid::new_v4().to_string(),
                    binding_id: b.id.clone(),
                    module_id: b.module_id.clone(),
                    account: b.account.clone(),
                })
                .collect()
        };
        let id = uuid::Uuid::new_v4().to_string();
        let receipt = Receipt {
            id: id.clone(),
            status: match (echo, targets.is_empty()) {
                (true, _) => ChangeStatus::Suppressed,
                (false, true) => ChangeStatus::Delivered,
                (false, false) => ChangeStatus::Pending,
            },
            targets: targets
                .iter()
                .map(|t| ReceiptTarget {
                    binding_id: t.binding_id.clone(),
                    module: t.module_id.clone(),
                    account: t.account.clone(),
                    status: TargetStatus::Pending,
                })
                .collect(),
        };
        let stored = serde_json::to_value(&receipt).map_err(RegistryError::from)?;
        let (reply, recorded) = oneshot::channel();
        let change = NewChange {
            id,
            user_id: user_id.to_owned(),
            module_id: report.module.clone(),
            binding_id: (sources.len() == 1).then(|| sources[0].id.clone()),
            settings,
            suppressed: echo,
            targets,
            sources: sources.iter().map(|b| b.id.clone()).collect(),
            idempotency: report.idempotency_key.map(|k| (k, stored)),
        };
        let stopped = || RegistryError::State("the change writer stopped".into());
        self.writer.send((change, reply)).map_err(|_| stopped())?;
        let recorded = recorded.await.map_err(|_| stopped())??;
        match recorded {
            ChangeRecorded::Replayed(first) => Ok(Reported::Repeated(stored_receipt(first)?)),
            ChangeRecorded::Created { .. } => {
                self.metrics
                    .changes
                    .with_label_values(&[receipt.status.as_str()])
                    .inc();
                if echo {
                    return Ok(Reported::Suppressed(receipt));
                }
                self.wake.notify_one();
                Ok(Reported::Accepted(receipt))
            }
        }
    }

    /// The reported values in the form the reporting network stores them,
    /// for comparison with `last_applied`.
    async fn normalised(
        &self,
        description: Option<&Description>,
        settings: &Settings,
        user_id: &str,
    ) -> Result<SettingsMap, ReportError> {
        let mut out = SettingsMap::new();
        if let Some(media_id) = &settings.avatar {
            let media = match self.registry.media(user_id, media_id).await {
                Ok(m) => m,
                Err(RegistryError::NotFound) => {
                    return Err(ReportError::UnknownMedia(media_id.clone()))
                }
                Err(e) => return Err(e.into()),
            };
            out.insert(
                "avatar".into(),
                Value::String(normalise::avatar_key(&media.sha256)),
            );
        }
        if let Some(text) = &settings.signature {
            let (value, _) = normalise::signature(text, description);
            out.insert("signature".into(), Value::String(value));
        }
        if let Some(text) = &settings.mood {
            let (value, _) = normalise::mood(text, description);
            out.insert("mood".into(), Value::String(value));
        }
        Ok(out)
    }
}
