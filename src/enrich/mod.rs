//! What every front end asks of the relay: look observables up at the
//! providers a caller's credentials allow, concurrently, and gather the data
//! and the distinct errors. `errors.rs` is the one place where an error becomes
//! the CTIM error a caller sees, whichever front end it came through.

pub mod errors;

use std::future::Future;

use futures_util::stream::{self, StreamExt};

pub use errors::RequestError;

use crate::ctim::{CtimError, CtimWarning, Entities, Reference, Verdicts};
use crate::domain::{EntitiesLimit, Observable, ProviderName};
use crate::providers::quota::{BucketStatus, Quotas};
use crate::providers::scope::Scope;
use crate::providers::{Capability, Provider, ProviderError};
use crate::telemetry::trace;

/// The data a request found, and the distinct errors met on the way.
#[derive(Debug, Default)]
pub struct Outcome<T> {
    pub data: T,
    pub errors: Vec<CtimError>,
}

impl<T> Outcome<T> {
    fn record(&mut self, error: &ProviderError) {
        let ctim = errors::provider_error(error);
        if !self.errors.contains(&ctim) {
            self.errors.push(ctim);
        }
    }
}

/// Calls `call` for every (observable, provider) pair where the provider supports
/// `capability` for the observable's type, at most `concurrency` at a time, and
/// merges the results in request order (observables first, then providers).
/// A failed call adds its error and keeps everything else — except a call
/// that reached the request's memory limit: then no further call is made,
/// those in flight are dropped, and the answer is what was found so far.
pub async fn fan_out<'a, T, F, Fut>(
    providers: &'a [Provider<'a>],
    observables: &'a [Observable],
    capability: Capability,
    concurrency: usize,
    call: F,
    merge: impl Fn(&mut T, T),
) -> Outcome<T>
where
    T: Default,
    F: Fn(&'a Provider<'a>, &'a Observable) -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let calls = observables.iter().flat_map(|observable| {
        providers
            .iter()
            .filter(move |provider| provider.supports(capability, observable.kind))
            .map(move |provider| (provider, observable))
    });
    let mut results = stream::iter(calls)
        .map(|(provider, observable)| {
            let call = call(provider, observable);
            async move {
                let result = match trace::on() {
                    true => traced(provider, observable, capability, call).await,
                    false => call.await,
                };
                (provider.name(), observable, result)
            }
        })
        .buffered(concurrency.max(1));

    let mut outcome = Outcome::<T>::default();
    while let Some((provider, observable, result)) = results.next().await {
        match result {
            Ok(found) => merge(&mut outcome.data, found),
            Err(error) => {
                tracing::warn!(
                    provider = %provider,
                    observable = %observable,
                    error = %error,
                    "lookup failed"
                );
                outcome.record(&error);
                if matches!(error, ProviderError::OverBudget { .. }) {
                    break;
                }
            }
        }
    }
    outcome
}

/// One provider call, in a span of its own: the provider, its host, the
/// observable's type (never its value), how it ended and the bytes read.
pub async fn traced<T>(
    provider: &Provider<'_>,
    observable: &Observable,
    capability: Capability,
    call: impl Future<Output = Result<T, ProviderError>>,
) -> Result<T, ProviderError> {
    let span = tracing::info_span!(
        target: crate::telemetry::trace::TARGET,
        parent: trace::parent(),
        "provider call",
        otel.name = %format_args!("{} {}", provider.name(), capability.as_str()),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        provider = provider.name().as_str(),
        server.address = provider.host(),
        observable.type = observable.kind.as_str(),
        outcome = tracing::field::Empty,
        bytes_read = tracing::field::Empty,
    );
    let (result, noted) = trace::noting(&span, call).await;
    let outcome = match &result {
        Ok(_) => noted.outcome().unwrap_or("answered"),
        Err(error) => {
            span.record("otel.status_code", "ERROR");
            error.trace_outcome()
        }
    };
    span.record("outcome", outcome);
    span.record("bytes_read", noted.bytes());
    result
}

/// What `POST /observe/observables` answers (and a Backbone request): every
/// supported observable at every provider of the caller.
pub async fn observe(
    providers: &[Provider<'_>],
    observables: &[Observable],
    limit: EntitiesLimit,
    concurrency: usize,
    scope: &Scope,
) -> Outcome<Entities> {
    let mut outcome = fan_out(
        providers,
        observables,
        Capability::Observe,
        concurrency,
        |provider, observable| provider.observe(observable, limit, scope),
        |data: &mut Entities, found| data.extend(found),
    )
    .await;
    outcome.data.fold_shared_indicators();
    outcome
}

/// What `POST /deliberate/observables` answers: the verdicts alone.
pub async fn deliberate(
    providers: &[Provider<'_>],
    observables: &[Observable],
    limit: EntitiesLimit,
    concurrency: usize,
    scope: &Scope,
) -> Outcome<Verdicts> {
    fan_out(
        providers,
        observables,
        Capability::Deliberate,
        concurrency,
        |provider, observable| provider.deliberate(observable, limit, scope),
        |data: &mut Verdicts, found| data.extend(found),
    )
    .await
}

/// What `POST /refer/observables` answers: links to each provider's page.
pub async fn refer(
    providers: &[Provider<'_>],
    observables: &[Observable],
    concurrency: usize,
    scope: &Scope,
) -> Outcome<Vec<Reference>> {
    fan_out(
        providers,
        observables,
        Capability::Refer,
        concurrency,
        |provider, observable| provider.refer(observable, scope),
        |data: &mut Vec<Reference>, found| data.extend(found),
    )
    .await
}

/// What `/health` found: the distinct errors, the checks skipped for a
/// reached quota (warnings: the answer still says `ok`), and the caller's
/// quotas.
#[derive(Debug, Default)]
pub struct Health {
    pub errors: Vec<CtimError>,
    pub warnings: Vec<CtimWarning>,
    pub quotas: Vec<(ProviderName, Vec<BucketStatus>)>,
}

/// Checks every provider of the request, concurrently (a provider whose
/// quota is reached is not called: a warning says until when), and reads
/// the caller's quotas after the checks (which count like any call).
pub async fn health(providers: &[Provider<'_>], quotas: &Quotas, scope: &Scope) -> Health {
    let results =
        futures_util::future::join_all(providers.iter().map(|provider| provider.health(scope)))
            .await;
    let mut outcome = Outcome::<()>::default();
    let mut health = Health::default();
    for (provider, result) in providers.iter().zip(results) {
        match result {
            Ok(()) => {}
            Err(error @ ProviderError::QuotaReached { .. }) => {
                let ctim = errors::provider_error(&error);
                health.warnings.push(CtimWarning {
                    code: ctim.code,
                    message: format!("Health check skipped: {}", ctim.message),
                });
            }
            Err(error) => {
                tracing::warn!(provider = %provider.name(), error = %error, "health check failed");
                outcome.record(&error);
            }
        }
    }
    for provider in providers {
        if let Some(quota) = provider.quota(quotas) {
            health
                .quotas
                .push((provider.name(), quotas.status(provider.name(), quota).await));
        }
    }
    health.errors = outcome.errors;
    health
}
