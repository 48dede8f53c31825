//! The audit log: who changed what in the registry.

use crate::{from_millis, to_millis, AuditEvent, Registry, Result};
use sqlx::Row;

impl Registry {
    /// Appends one event to the audit log.
    pub async fn record_audit(&self, event: &AuditEvent) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_events (at, actor, action, subject, detail) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(to_millis(event.at))
        .bind(&event.actor)
        .bind(&event.action)
        .bind(&event.subject)
        .bind(serde_json::to_string(&event.detail)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The newest `limit` audit events, newest first.
    pub async fn audit_events(&self, limit: i64) -> Result<Vec<AuditEvent>> {
        let rows = sqlx::query(
            "SELECT at, actor, action, subject, detail FROM audit_events ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let detail: String = row.try_get("detail")?;
                Ok(AuditEvent {
                    at: from_millis(row.try_get("at")?)?,
                    actor: row.try_get("actor")?,
                    action: row.try_get("action")?,
                    subject: row.try_get("subject")?,
                    detail: serde_json::from_str(&detail)?,
                })
            })
            .collect()
    }
}
