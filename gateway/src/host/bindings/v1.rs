//! ABI 1: `wit/v1` (`gateway:connector@1.0.0`). Frozen: connectors built
//! with the first SDK keep loading. They declare no credential or config
//! fields and have no `misconfigured` error.

#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../plugin-sdk/wit/v1",
    world: "connector",
});

super::same_in_every_version!();

impl From<wit::Description> for domain::Description {
    fn from(d: wit::Description) -> Self {
        domain::Description {
            fields: d.fields.into_iter().map(Into::into).collect(),
            limits: limits(d.limits),
            moods: d.moods,
            credentials: None,
            config: None,
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
        }
    }
}
