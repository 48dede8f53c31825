//! Settings federation (S4-S6): a change report is checked against the
//! user's application list, compared with what the gateway itself applied
//! (echo suppression), and written with one delivery per other binding in one
//! transaction (the outbox). [`worker`] pushes the deliveries. No HTTP here.

pub mod normalise;
pub mod worker;

use crate::config::DeliveryConfig;
use crate::connectors::Connectors;
use crate::host::Description;
use crate::metrics::Metrics;
use crate::secrets::MasterKey;
use registry_db::{
    Binding, ChangeRecorded, NewChange, NewDelivery, Registry, RegistryError, SettingsMap,
    StoredAnswer,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, oneshot, Notify};

/// Settings reported by the monitor. `avatar` is a media id from `/v1/media`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedSettings {
    /// Media id of the new avatar.
    pub avatar: Option<String>,
    /// New signature (status text).
    pub signature: Option<String>,
    /// New mood.
    pub mood: Option<String>,
}

impl ReportedSettings {
    fn to_map(&self) -> SettingsMap {
        let mut map = SettingsMap::new();
        for (field, value) in [
            ("avatar", &self.avatar),
            ("signature", &self.signature),
            ("mood", &self.mood),
        ] {
            if let Some(v) = value {
                map.insert(field.to_owned(), Value::String(v.clone()));
            }
        }
        map
    }
}

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
    pub settings: ReportedSettings,
    /// `Idempotency-Key`.
    pub idempotency_key: Option<String>,
}

/// One target of a change in the first answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReceiptTarget {
    /// Target binding.
    pub binding_id: String,
    /// Its module.
    pub module: String,
    /// Its account.
    pub account: String,
    /// `pending` at first.
    pub status: String,
}

/// The first answer to a change report (stored under its idempotency key).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Receipt {
    /// Change id.
    pub id: String,
    /// `pending`, `suppressed`, or `delivered` when there is no other binding.
    pub status: String,
    /// One per other binding.
    pub targets: Vec<ReceiptTarget>,
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
    master_key: MasterKey,
    config: DeliveryConfig,
    metrics: Metrics,
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
fn start_writer(registry: Registry) -> mpsc::UnboundedSender<PendingChange> {
    let (queue, pending) = mpsc::unbounded_channel::<PendingChange>();
    let pending = Arc::new(tokio::sync::Mutex::new(pending));
    for _ in 0..parallel_commits(&registry) {
        tokio::spawn(write_changes(registry.clone(), pending.clone()));
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
    pending: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<PendingChange>>>,
) {
    let mut batch = Vec::new();
    while next_batch(&pending, &mut batch, MAX_GROUP_COMMIT).await > 0 {
        let (changes, replies): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
        let now = chrono::Utc::now();
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
        master_key: MasterKey,
        config: DeliveryConfig,
        metrics: Metrics,
    ) -> Self {
        Federation {
            writer: start_writer(registry.clone()),
            registry,
            connectors,
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

    /// Change ids whose targets changed in this process (SSE streams listen;
    /// other processes' updates are seen by polling).
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.updates.subscribe()
    }

    /// Records a change report and its deliveries; answers the status code
    /// (202, or 200 for an echo) and the receipt, or the first answer again
    /// for a repeated idempotency key.
    pub async fn report(&self, user_id: &str, report: Report) -> Result<StoredAnswer, ReportError> {
        if let Some(key) = &report.idempotency_key {
            if let Some(first) = self.registry.idempotent_answer(user_id, key).await? {
                return Ok(first);
            }
        }
        let settings = report.settings.to_map();
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
                normalised
                    .iter()
                    .all(|(field, value)| applied.get(field) == Some(value))
            })
        });
        let targets: Vec<NewDelivery> = if echo {
            Vec::new()
        } else {
            others
                .iter()
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
                (true, _) => "suppressed",
                (false, true) => "delivered",
                (false, false) => "pending",
            }
            .to_owned(),
            targets: targets
                .iter()
                .map(|t| ReceiptTarget {
                    binding_id: t.binding_id.clone(),
                    module: t.module_id.clone(),
                    account: t.account.clone(),
                    status: "pending".to_owned(),
                })
                .collect(),
        };
        let answer = StoredAnswer {
            status_code: if echo { 200 } else { 202 },
            body: serde_json::to_value(&receipt).map_err(RegistryError::from)?,
        };
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
            idempotency: report.idempotency_key.map(|k| (k, answer.clone())),
        };
        let stopped = || RegistryError::State("the change writer stopped".into());
        self.writer.send((change, reply)).map_err(|_| stopped())?;
        let recorded = recorded.await.map_err(|_| stopped())??;
        match recorded {
            ChangeRecorded::Replayed(first) => Ok(first),
            ChangeRecorded::Created { .. } => {
                self.metrics
                    .changes
                    .with_label_values(&[receipt.status.as_str()])
                    .inc();
                self.wake.notify_one();
                Ok(answer)
            }
        }
    }

    /// The reported values in the form the reporting network stores them,
    /// for comparison with `last_applied`.
    async fn normalised(
        &self,
        description: Option<&Description>,
        settings: &ReportedSettings,
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
