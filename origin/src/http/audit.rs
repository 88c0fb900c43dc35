//! `GET /admin/audit-logs`: the audit trail (`slot_audit_log`, every event the persister
//! applied, once), oldest first, for operators. Filters: `productId`, `buyerId`, `action`
//! (an event type such as `slot-acquired`), `from` and `to` (RFC 3339, `to` exclusive).
//! Paged by cursor: `limit` entries (1–500, default 100), and `nextCursor` to pass as
//! `cursor` for the next ones (`null` on the last page). A cursor names the last entry seen,
//! so entries recorded while an operator pages are neither skipped nor repeated.

use crate::clock::{ms_of, rfc3339_ms};
use crate::error::{ApiError, ApiResult};
use crate::http::admin_auth::Admin;
use crate::outbox::events::EventKind;
use crate::pg;
use crate::pg::outbox::{AuditFilter, AuditRow};
use crate::state::AppState;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::collections::HashMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

pub fn admin_router() -> Router<AppState> {
    Router::new().route("/admin/audit-logs", get(list))
}

const PARAMS: [&str; 7] = ["productId", "buyerId", "action", "from", "to", "cursor", "limit"];
pub const MAX_LIMIT: u32 = 500;
const DEFAULT_LIMIT: u32 = 100;

/// A validated audit-trail query.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub filter: AuditFilter,
    pub limit: u32,
}

impl AuditQuery {
    pub fn parse(q: &HashMap<String, String>) -> ApiResult<Self> {
        if let Some(unknown) = q.keys().find(|k| !PARAMS.contains(&k.as_str())) {
            return Err(ApiError::validation(
                unknown,
                format!("is not a parameter of this list (known: {})", PARAMS.join(", ")),
            ));
        }
        let id = |name: &str| -> ApiResult<Option<Uuid>> {
            q.get(name)
                .map(|raw| {
                    flashgate_core::routes::parse_id(raw)
                        .ok_or_else(|| ApiError::validation(name, "must be a UUID"))
                })
                .transpose()
        };
        let at = |name: &str| -> ApiResult<Option<OffsetDateTime>> {
            q.get(name)
                .map(|raw| {
                    OffsetDateTime::parse(raw, &Rfc3339).map_err(|_| {
                        ApiError::validation(
                            name,
                            "must be an RFC 3339 time such as 2026-12-04T10:00:00Z",
                        )
                    })
                })
                .transpose()
        };
        let action = q
            .get("action")
            .map(|raw| {
                EventKind::ALL
                    .iter()
                    .find(|k| k.topic() == raw)
                    .map(|k| k.topic().to_owned())
                    .ok_or_else(|| {
                        let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.topic()).collect();
                        ApiError::validation(
                            "action",
                            format!("must be one of {}", known.join(", ")),
                        )
                    })
            })
            .transpose()?;
        let limit = match q.get("limit") {
            None => DEFAULT_LIMIT,
            Some(raw) => {
                raw.parse::<u32>().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(
                    || {
                        ApiError::validation(
                            "limit",
                            format!("must be an integer from 1 to {MAX_LIMIT}"),
                        )
                    },
                )?
            }
        };
        let after = q.get("cursor").map(|raw| parse_cursor(raw)).transpose()?;
        let (from, to) = (at("from")?, at("to")?);
        if let (Some(from), Some(to)) = (from, to)
            && from > to
        {
            return Err(ApiError::validation("to", "must not be before `from`"));
        }
        Ok(Self {
            filter: AuditFilter {
                product_id: id("productId")?,
                buyer_id: id("buyerId")?,
                event_type: action,
                from,
                to,
                after,
            },
            limit,
        })
    }
}

/// A cursor: the last entry's time (µs since the epoch) and event id, `<µs>-<uuid>`.
fn cursor_of(row: &AuditRow) -> String {
    let us = row.occurred_at.unix_timestamp_nanos() / 1000;
    format!("{us}-{}", row.event_id.simple())
}

fn parse_cursor(raw: &str) -> ApiResult<(OffsetDateTime, Uuid)> {
    let bad = || ApiError::validation("cursor", "is not a cursor this list returned");
    let (us, id) = raw.split_once('-').ok_or_else(bad)?;
    let us: i128 = us.parse().map_err(|_| bad())?;
    let nanos = us.checked_mul(1000).ok_or_else(bad)?;
    let at = OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| bad())?;
    Ok((at, Uuid::try_parse(id).map_err(|_| bad())?))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntryView {
    pub event_id: Uuid,
    pub action: String,
    pub slot_id: Uuid,
    pub product_id: Uuid,
    pub buyer_id: Option<Uuid>,
    pub payment_id: Option<Uuid>,
    pub from_status: Option<String>,
    pub to_status: Option<String>,
    pub trace_id: String,
    pub occurred_at: String,
    pub recorded_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    pub items: Vec<AuditEntryView>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/admin/audit-logs",
    tag = "operators",
    security(("admin" = [])),
    params(("productId" = Option<Uuid>, Query), ("buyerId" = Option<Uuid>, Query), ("action" = Option<String>, Query, description = "An event type: slot-acquired, slot-expired, payment-completed, …"), ("from" = Option<String>, Query, description = "RFC 3339, inclusive"), ("to" = Option<String>, Query, description = "RFC 3339, exclusive"), ("limit" = Option<u32>, Query, description = "1 to 500 (100)"), ("cursor" = Option<String>, Query, description = "The previous page's `nextCursor`")),
    responses(
        (status = 200, description = "Entries, oldest first", body = AuditPage),
        (status = 401, description = "No valid admin token", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The token is not an admin's", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A field is wrong: `field` names it", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down: retry after `Retry-After`", body = crate::http::openapi::ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Json<AuditPage>> {
    let q = AuditQuery::parse(&query)?;
    let mut rows = pg::outbox::audit_trail(&state.db, &q.filter, i64::from(q.limit) + 1).await?;
    let more = rows.len() > q.limit as usize;
    rows.truncate(q.limit as usize);
    let next_cursor = more.then(|| rows.last().map(cursor_of)).flatten();
    let items = rows
        .into_iter()
        .map(|r| AuditEntryView {
            event_id: r.event_id,
            action: r.event_type,
            slot_id: r.slot_id,
            product_id: r.product_id,
            buyer_id: r.buyer_id,
            payment_id: r.payment_id,
            from_status: r.from_status,
            to_status: r.to_status,
            trace_id: r.trace_id,
            occurred_at: rfc3339_ms(ms_of(r.occurred_at)),
            recorded_at: rfc3339_ms(ms_of(r.recorded_at)),
        })
        .collect();
    Ok(Json(AuditPage { items, next_cursor }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn field_of(e: ApiError) -> String {
        match e {
            ApiError::Validation { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_bad_parameter_is_named() {
        for (k, v) in [
            ("productId", "nope"),
            ("buyerId", "1"),
            ("action", "slot-stolen"),
            ("from", "yesterday"),
            ("limit", "0"),
            ("limit", "501"),
            ("cursor", "x"),
            // Past any time there is: an error, not an overflow (a panic in a debug build).
            ("cursor", "170141183460469231731687303715884105727-00000000000000000000000000000000"),
            ("cursor", "-170141183460469231731687303715884105728-00000000000000000000000000000000"),
            ("sort", "desc"),
        ] {
            assert_eq!(field_of(AuditQuery::parse(&q(&[(k, v)])).unwrap_err()), k);
        }
        let backwards = [("from", "2026-12-04T10:00:00Z"), ("to", "2026-12-04T09:00:00Z")];
        assert_eq!(field_of(AuditQuery::parse(&q(&backwards)).unwrap_err()), "to");
    }

    #[test]
    fn a_cursor_reads_back_as_the_entry_it_names() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_733_300_000_123_456_000).unwrap();
        let row = AuditRow {
            event_id: Uuid::now_v7(),
            event_type: "slot-acquired".into(),
            slot_id: Uuid::nil(),
            product_id: Uuid::nil(),
            buyer_id: None,
            payment_id: None,
            from_status: None,
            to_status: None,
            trace_id: String::new(),
            occurred_at: at,
            recorded_at: at,
        };
        let parsed = AuditQuery::parse(&q(&[("cursor", &cursor_of(&row))])).unwrap();
        assert_eq!(parsed.filter.after, Some((at, row.event_id)));
        assert_eq!(parsed.limit, DEFAULT_LIMIT);
    }
}
