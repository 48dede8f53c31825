//! Operators' view of the delivery queue: dead letters and their redrive.

use super::changes::target_view;
use super::error::{ApiError, ErrorBody};
use super::extract::Admin;
use super::openapi::{AdminAuth, PathId};
use super::{audit, AppState};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use gateway_api::{DeadLetters, DeliveryView};
use registry_db::{Delivery, RegistryError};

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/deliveries/dead", get(dead_letters))
        .route("/v1/admin/deliveries/{id}/redrive", post(redrive))
}

/// A delivery as an operator sees it.
fn delivery_view(d: &Delivery) -> DeliveryView {
    DeliveryView {
        id: d.id.clone(),
        change_id: d.change_id.clone(),
        user_id: d.user_id.clone(),
        fields: d.settings.keys().cloned().collect(),
        target: target_view(d),
    }
}

/// Deliveries that gave up after the attempt or age cap.
#[utoipa::path(get, path = "/v1/admin/deliveries/dead", tag = "admin", security(("bearer" = [])),
    responses(AdminAuth, (status = 200, body = DeadLetters)))]
pub async fn dead_letters(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<DeadLetters>, ApiError> {
    let dead = state.registry.dead_letters(500).await?;
    Ok(Json(DeadLetters {
        deliveries: dead.iter().map(delivery_view).collect(),
    }))
}

/// Queues a failed delivery again (fields a newer change carries are dropped).
#[utoipa::path(post, path = "/v1/admin/deliveries/{id}/redrive", tag = "admin",
    params(("id" = String, Path, description = "delivery id")), security(("bearer" = [])),
    responses(AdminAuth, PathId, (status = 200, body = DeliveryView),
    (status = 409, description = "not_redrivable", body = ErrorBody)))]
pub async fn redrive(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<DeliveryView>), ApiError> {
    let delivery = match state.registry.redrive(&id, state.config.clock.now()).await {
        Ok(d) => d,
        Err(RegistryError::State(reason)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_redrivable",
                reason,
            ))
        }
        Err(e) => return Err(e.into()),
    };
    state.federation.wake();
    audit(
        &state,
        "admin",
        "delivery.redrive",
        &id,
        serde_json::json!({}),
    )
    .await;
    Ok((StatusCode::OK, Json(delivery_view(&delivery))))
}
