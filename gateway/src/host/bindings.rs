//! The generated WIT bindings of the connector world and the explicit
//! conversions between WIT types and the host's domain types.

#![allow(missing_docs)]

use super::types;

wasmtime::component::bindgen!({
    path: "../plugin-sdk/wit/v1",
    world: "connector",
});

pub use self::gateway::connector::types as wit;

impl From<wit::Field> for types::Field {
    fn from(f: wit::Field) -> Self {
        match f {
            wit::Field::Avatar => types::Field::Avatar,
            wit::Field::Signature => types::Field::Signature,
            wit::Field::Mood => types::Field::Mood,
        }
    }
}

impl From<wit::Description> for types::Description {
    fn from(d: wit::Description) -> Self {
        types::Description {
            fields: d.fields.into_iter().map(Into::into).collect(),
            limits: types::Limits {
                max_signature_chars: d.limits.max_signature_chars,
                max_mood_chars: d.limits.max_mood_chars,
                avatar: d.limits.avatar.map(|a| types::AvatarLimits {
                    max_pixels: a.max_pixels,
                    max_bytes: a.max_bytes,
                    formats: a.formats,
                }),
            },
            moods: d.moods,
        }
    }
}

impl From<wit::ConnectorError> for types::CallError {
    fn from(e: wit::ConnectorError) -> Self {
        match e {
            wit::ConnectorError::AuthFailed(m) => types::CallError::AuthFailed(m),
            wit::ConnectorError::RateLimited(s) => types::CallError::RateLimited(s),
            wit::ConnectorError::Transient(m) => types::CallError::Transient(m),
            wit::ConnectorError::Rejected(m) => types::CallError::Rejected(m),
        }
    }
}

impl From<&types::Settings> for wit::Settings {
    fn from(s: &types::Settings) -> Self {
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

impl From<wit::Settings> for types::Settings {
    fn from(s: wit::Settings) -> Self {
        types::Settings {
            avatar: s.avatar.map(|i| types::Image {
                content_type: i.content_type,
                data: i.data,
            }),
            signature: s.signature,
            mood: s.mood,
        }
    }
}

impl From<wit::PushOutcome> for types::PushOutcome {
    fn from(o: wit::PushOutcome) -> Self {
        types::PushOutcome {
            applied: o.applied.into_iter().map(Into::into).collect(),
            truncated: o.truncated.into_iter().map(Into::into).collect(),
        }
    }
}
