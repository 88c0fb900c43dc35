//! Operators: admin endpoints take an `Authorization: Bearer` JWT with `role: "admin"`.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use flashgate_core::token::{Role, TokenVerifier};
use uuid::Uuid;

/// An authenticated operator.
#[derive(Debug, Clone, Copy)]
pub struct Admin {
    pub user_id: Uuid,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let token = TokenVerifier::bearer(header)?;
        let now_secs = u64::try_from(state.clock.now_us() / 1_000_000).unwrap_or(0);
        let verified = state.admin_tokens.verify(token, now_secs).await?;
        if verified.role != Role::Admin {
            return Err(ApiError::Forbidden("this endpoint needs an admin token".into()));
        }
        Ok(Admin { user_id: verified.user_id })
    }
}
