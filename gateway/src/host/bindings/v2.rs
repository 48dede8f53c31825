//! ABI 2: `wit/v2` (`gateway:connector@2.0.0`). Adds declared credential
//! and config fields and the `misconfigured` error.

#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../plugin-sdk/wit/v2",
    world: "connector",
});

super::same_in_every_version!();

fn setting_fields(fields: Vec<wit::SettingField>) -> Vec<domain::SettingField> {
    fields
        .into_iter()
        .map(|f| domain::SettingField {
            name: f.name,
            label: f.label,
            kind: match f.kind {
                wit::SettingKind::Text => domain::SettingKind::Text,
                wit::SettingKind::Secret => domain::SettingKind::Secret,
                wit::SettingKind::Url => domain::SettingKind::Url,
                wit::SettingKind::Integer => domain::SettingKind::Integer,
                wit::SettingKind::Boolean => domain::SettingKind::Boolean,
            },
            required: f.required,
            help: f.help,
        })
        .collect()
}

impl From<wit::Description> for domain::Description {
    fn from(d: wit::Description) -> Self {
        domain::Description {
            fields: d.fields.into_iter().map(Into::into).collect(),
            limits: limits(d.limits),
            moods: d.moods,
            credentials: d.credentials.map(setting_fields),
            config: d.config.map(setting_fields),
        }
    }
}

impl From<wit::ConnectorError> for domain::CallError {
    fn from(e: wit::ConnectorError) -> Self {
        match e {
            wit::ConnectorError::AuthFailed(m) => domain::CallError::AuthFailed(m),
            wit::ConnectorError::RateLimited(s) => domain::CallError::RateLimited(s),
            wit::ConnectorError::Transient(m) => domain::CallError::Transient(m),
            wit::ConnectorError::Rejected(m) => domain::CallError::Rejected(m),
            wit::ConnectorError::Misconfigured(m) => domain::CallError::Misconfigured(m),
        }
    }
}
