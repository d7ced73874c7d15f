use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::ctim::{CtimWarning, ErrorEnvelope};
use crate::domain::Credentials;
use crate::enrich;
use crate::http::{AppState, Worker};

/// `{"data": {"status", "quotas"?}, "errors"?: [warnings]}`.
#[derive(Serialize)]
struct Answer<'a> {
    data: Status,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [CtimWarning],
}

#[derive(Serialize)]
struct Status {
    status: &'static str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    quotas: BTreeMap<String, Quota>,
}

/// XDR's `ModuleHealthStatus` quota.
#[derive(Serialize)]
struct Quota {
    description: String,
    values: QuotaValues,
}

#[derive(Serialize)]
struct QuotaValues {
    bucket_unit: &'static str,
    bucket_limit: u64,
    current_bucket_consumption: u64,
    current_bucket_start_time: String,
    current_bucket_end_time: String,
    current_bucket_limit_reached: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    current_bucket_limit_reached_at: Option<String>,
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// POST /health: every provider the token has credentials for answers and
/// accepts them; with the caller's quotas in XDR's shape.
pub async fn health(
    state: web::Data<AppState>,
    worker: web::Data<Worker>,
    credentials: Credentials,
) -> HttpResponse {
    let providers = worker.providers.for_credentials(&credentials);
    let health = enrich::health(&providers, state.quotas(), &state.scope()).await;
    if !health.errors.is_empty() {
        return HttpResponse::Ok().json(ErrorEnvelope {
            errors: &health.errors,
        });
    }
    let mut quotas = BTreeMap::new();
    for (provider, buckets) in health.quotas {
        for status in buckets {
            let unit = status.bucket.unit.as_str();
            let name = format!("{}_{unit}", provider.as_str().to_ascii_lowercase());
            quotas.insert(
                name,
                Quota {
                    description: format!("{provider} lookups a {unit} for this key"),
                    values: QuotaValues {
                        bucket_unit: unit,
                        bucket_limit: status.bucket.limit,
                        current_bucket_consumption: status.consumption,
                        current_bucket_start_time: time(status.start),
                        current_bucket_end_time: time(status.end),
                        current_bucket_limit_reached: status.reached(),
                        current_bucket_limit_reached_at: status
                            .reached()
                            .then_some(status.reached_at)
                            .flatten()
                            .map(time),
                    },
                },
            );
        }
    }
    HttpResponse::Ok().json(Answer {
        data: Status {
            status: "ok",
            quotas,
        },
        errors: &health.warnings,
    })
}
