//! Settings from variables: defaults, every variable, and bad values.

use super::*;
use std::time::Duration;

fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    Settings::from_vars(
        vars.iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
    )
}

fn error_variable(vars: &[(&str, &str)]) -> &'static str {
    settings(vars).unwrap_err().variable
}

#[test]
fn nothing_set_gives_the_documented_defaults() {
    let settings = settings(&[]).unwrap();
    assert_eq!(settings.port, 9090);
    assert_eq!(settings.host.to_string(), "0.0.0.0");
    assert!(settings.secret_key.is_none());
    assert_eq!(settings.jwks.hosts.len(), 3);
    assert_eq!(
        settings.jwks.hosts[1].authority(),
        "visibility.eu.amp.cisco.com"
    );
    assert!(settings.relay_audience.is_none());
    assert_eq!(settings.entities_limit.get(), 100);
    assert_eq!(
        settings.upstream.c1fapp_api_url.as_str(),
        DEFAULT_C1FAPP_API_URL
    );
    assert_eq!(settings.upstream.timeout, Duration::from_secs(10));
    assert_eq!(settings.limits.max_body_bytes, 1024 * 1024);
    assert_eq!(settings.limits.max_observables, 1000);
    assert_eq!(settings.log.filter, "info");
    assert_eq!(settings.log.format, LogFormat::Auto);
    assert!(!settings.upstream.allow_private_hosts);
    assert!(!settings.upstream.cyberscan_use_proxy);
    assert_eq!(settings.shutdown_grace, Duration::from_secs(30));
    assert_eq!(settings.shutdown_delay, Duration::ZERO);
    assert_eq!(settings.workers, None);
    assert_eq!(
        settings.upstream.cache.ttl, None,
        "the result cache is off by default"
    );
    assert_eq!(settings.upstream.cache.max_entries, 10_000);
    assert_eq!(settings.upstream.cache.max_bytes, 32 * 1024 * 1024);
    assert_eq!(settings.upstream.max_in_flight, 1024);
    assert_eq!(settings.upstream.max_in_flight_per_host, 128);
    assert_eq!(settings.upstream.max_in_flight_per_credential, 256);
    assert_eq!(settings.limits.request_timeout, Duration::from_secs(25));
    assert_eq!(settings.limits.max_upstream_bytes, 32 * 1024 * 1024);
    assert_eq!(settings.limits.max_response_bytes, 16 * 1024 * 1024);
    assert_eq!(settings.limits.max_held_bytes, 64 * 1024 * 1024);
    assert_eq!(settings.limits.max_held_bytes_per_tenant, 16 * 1024 * 1024);
    assert_eq!(
        settings.upstream.user_agent,
        format!("ctr-relay/{}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn jwks_hosts_none_turns_rs256_off() {
    for none in ["none", "NONE", " None "] {
        assert!(
            settings(&[("JWKS_HOSTS", none)])
                .unwrap()
                .jwks
                .hosts
                .is_empty()
        );
    }
}

#[test]
fn a_zero_ttl_keeps_the_result_cache_off() {
    let settings = settings(&[("RESULT_CACHE_TTL_SECONDS", "0")]).unwrap();
    assert_eq!(settings.upstream.cache.ttl, None);
}

#[test]
fn every_variable_is_read() {
    let settings = settings(&[
        ("PORT", "8080"),
        ("HOST", "127.0.0.1"),
        ("SECRET_KEY", "s3cret"),
        (
            "JWKS_HOSTS",
            "http://127.0.0.1:9999, visibility.amp.cisco.com",
        ),
        ("RELAY_AUDIENCE", "https://relay.example.com"),
        ("CTR_ENTITIES_LIMIT", "5000"),
        ("C1FAPP_API_URL", "http://127.0.0.1:1234/api/"),
        ("UPSTREAM_TIMEOUT_SECONDS", "2.5"),
        ("RUST_LOG", "debug"),
        ("LOG_FORMAT", "text"),
        ("MAX_REQUEST_BYTES", "2048"),
        ("MAX_OBSERVABLES", "10"),
        ("LOOKUP_CONCURRENCY", "4"),
        ("MAX_UPSTREAM_RESPONSE_BYTES", "4096"),
        ("CYBERSCAN_ALLOW_PRIVATE_HOSTS", "true"),
        ("SHUTDOWN_GRACE_SECONDS", "5"),
        ("SHUTDOWN_DELAY_SECONDS", "7"),
        ("WORKERS", "3"),
        ("RESULT_CACHE_TTL_SECONDS", "30"),
        ("RESULT_CACHE_MAX_ENTRIES", "500"),
        ("UPSTREAM_MAX_IN_FLIGHT", "64"),
        ("CYBERSCAN_USE_PROXY", "yes"),
        ("REQUEST_TIMEOUT_SECONDS", "20"),
        ("REQUEST_MAX_UPSTREAM_BYTES", "5000"),
        ("REQUEST_MAX_RESPONSE_BYTES", "2000"),
        ("MAX_HELD_BYTES", "30000"),
        ("MAX_HELD_BYTES_PER_TENANT", "6000"),
        ("UPSTREAM_MAX_IN_FLIGHT_PER_HOST", "8"),
        ("UPSTREAM_MAX_IN_FLIGHT_PER_CREDENTIAL", "16"),
        ("RESULT_CACHE_MAX_BYTES", "4096"),
        ("UPSTREAM_USER_AGENT", "Acme SOC relay (soc@example.com)"),
        ("METRICS_PORT", "9091"),
    ])
    .unwrap();
    assert_eq!(settings.port, 8080);
    assert_eq!(settings.host.to_string(), "127.0.0.1");
    assert_eq!(settings.secret_key.unwrap().expose(), "s3cret");
    assert_eq!(settings.jwks.hosts.len(), 2);
    assert_eq!(
        settings.jwks.hosts[0].jwks_url().as_str(),
        "http://127.0.0.1:9999/.well-known/jwks"
    );
    assert_eq!(
        settings.relay_audience.as_deref(),
        Some("https://relay.example.com")
    );
    assert_eq!(settings.entities_limit.get(), 1000, "clamped");
    assert_eq!(
        settings.upstream.c1fapp_api_url.as_str(),
        "http://127.0.0.1:1234/api/"
    );
    assert_eq!(settings.upstream.timeout, Duration::from_millis(2500));
    assert_eq!(settings.upstream.max_response_bytes, 4096);
    assert!(settings.upstream.allow_private_hosts);
    assert_eq!(settings.shutdown_grace, Duration::from_secs(5));
    assert_eq!(settings.shutdown_delay, Duration::from_secs(7));
    assert_eq!(settings.workers, Some(3));
    assert_eq!(settings.upstream.max_in_flight, 64);
    assert!(settings.upstream.cyberscan_use_proxy);
    assert_eq!(settings.limits.request_timeout, Duration::from_secs(20));
    assert_eq!(settings.limits.max_upstream_bytes, 5000);
    assert_eq!(settings.limits.max_response_bytes, 2000);
    assert_eq!(settings.limits.max_held_bytes, 30000);
    assert_eq!(settings.limits.max_held_bytes_per_tenant, 6000);
    assert_eq!(settings.upstream.max_in_flight_per_host, 8);
    assert_eq!(settings.upstream.max_in_flight_per_credential, 16);
    assert_eq!(
        settings.upstream.cache,
        ResultCacheSettings {
            ttl: Some(Duration::from_secs(30)),
            max_entries: 500,
            max_bytes: 4096,
        }
    );
    assert_eq!(settings.log.filter, "debug");
    assert_eq!(settings.log.format, LogFormat::Text);
    assert_eq!(settings.limits.max_body_bytes, 2048);
    assert_eq!(settings.limits.max_observables, 10);
    assert_eq!(settings.limits.lookup_concurrency, 4);
    assert_eq!(
        settings.upstream.user_agent,
        "Acme SOC relay (soc@example.com)"
    );
    assert_eq!(settings.metrics_port, Some(9091));
}

#[test]
fn a_bad_value_names_its_variable() {
    assert_eq!(error_variable(&[("PORT", "http")]), "PORT");
    assert_eq!(error_variable(&[("PORT", "70000")]), "PORT");
    assert_eq!(error_variable(&[("HOST", "not an ip")]), "HOST");
    assert_eq!(error_variable(&[("SECRET_KEY", "")]), "SECRET_KEY");
    assert_eq!(error_variable(&[("JWKS_HOSTS", "ftp://x")]), "JWKS_HOSTS");
    assert_eq!(error_variable(&[("JWKS_HOSTS", " , ")]), "JWKS_HOSTS");
    assert_eq!(error_variable(&[("RELAY_AUDIENCE", " ")]), "RELAY_AUDIENCE");
    assert_eq!(
        error_variable(&[("CTR_ENTITIES_LIMIT", "0")]),
        "CTR_ENTITIES_LIMIT"
    );
    assert_eq!(
        error_variable(&[("CTR_ENTITIES_LIMIT", "many")]),
        "CTR_ENTITIES_LIMIT"
    );
    assert_eq!(
        error_variable(&[("C1FAPP_API_URL", "not a url")]),
        "C1FAPP_API_URL"
    );
    assert_eq!(
        error_variable(&[("C1FAPP_API_URL", "file:///etc/passwd")]),
        "C1FAPP_API_URL"
    );
    assert_eq!(
        error_variable(&[("UPSTREAM_TIMEOUT_SECONDS", "0")]),
        "UPSTREAM_TIMEOUT_SECONDS"
    );
    assert_eq!(
        error_variable(&[("UPSTREAM_TIMEOUT_SECONDS", "NaN")]),
        "UPSTREAM_TIMEOUT_SECONDS"
    );
    assert_eq!(error_variable(&[("RUST_LOG", "[[[")]), "RUST_LOG");
    assert_eq!(error_variable(&[("LOG_FORMAT", "xml")]), "LOG_FORMAT");
    assert_eq!(
        error_variable(&[("MAX_REQUEST_BYTES", "-1")]),
        "MAX_REQUEST_BYTES"
    );
    assert_eq!(
        error_variable(&[("MAX_OBSERVABLES", "0")]),
        "MAX_OBSERVABLES"
    );
    assert_eq!(
        error_variable(&[("LOOKUP_CONCURRENCY", "x")]),
        "LOOKUP_CONCURRENCY"
    );
    assert_eq!(
        error_variable(&[("SHUTDOWN_GRACE_SECONDS", "1.5")]),
        "SHUTDOWN_GRACE_SECONDS"
    );
    assert_eq!(error_variable(&[("WORKERS", "0")]), "WORKERS");
    assert_eq!(
        error_variable(&[("UPSTREAM_MAX_IN_FLIGHT", "none")]),
        "UPSTREAM_MAX_IN_FLIGHT"
    );
    assert_eq!(
        error_variable(&[("RESULT_CACHE_TTL_SECONDS", "-5")]),
        "RESULT_CACHE_TTL_SECONDS"
    );
    assert_eq!(
        error_variable(&[("RESULT_CACHE_MAX_ENTRIES", "0")]),
        "RESULT_CACHE_MAX_ENTRIES"
    );
    for agent in [
        "relay\r\nX-Forged: 1",
        "relay\u{7f}",
        "relé/1.0",
        &"a".repeat(257),
    ] {
        assert_eq!(
            error_variable(&[("UPSTREAM_USER_AGENT", agent)]),
            "UPSTREAM_USER_AGENT",
            "{agent:?}"
        );
    }
    assert!(settings(&[("UPSTREAM_USER_AGENT", &"a".repeat(256))]).is_ok());
    for port in ["0", "9090", "65536", "metrics"] {
        assert_eq!(
            error_variable(&[("METRICS_PORT", port)]),
            "METRICS_PORT",
            "{port}"
        );
    }
}

#[test]
fn the_error_message_starts_with_the_variable() {
    let message = settings(&[("PORT", "abc")]).unwrap_err().to_string();
    assert_eq!(
        message,
        "invalid configuration: PORT: \"abc\" is not a port number (0-65535)"
    );
}

#[test]
fn unrelated_variables_are_ignored() {
    assert!(settings(&[("PATH", "/bin"), ("HOME", "/root")]).is_ok());
}

/// Every numeric and duration variable, with the range it accepts.
const NUMERIC: &[&str] = &[
    "PORT",
    "UPSTREAM_TIMEOUT_SECONDS",
    "MAX_REQUEST_BYTES",
    "MAX_OBSERVABLES",
    "LOOKUP_CONCURRENCY",
    "MAX_UPSTREAM_RESPONSE_BYTES",
    "SHUTDOWN_GRACE_SECONDS",
    "SHUTDOWN_DELAY_SECONDS",
    "WORKERS",
    "RESULT_CACHE_TTL_SECONDS",
    "RESULT_CACHE_MAX_ENTRIES",
    "UPSTREAM_MAX_IN_FLIGHT",
    "CTR_ENTITIES_LIMIT",
    "REQUEST_TIMEOUT_SECONDS",
    "REQUEST_MAX_UPSTREAM_BYTES",
    "REQUEST_MAX_RESPONSE_BYTES",
    "MAX_HELD_BYTES",
    "UPSTREAM_MAX_IN_FLIGHT_PER_HOST",
    "UPSTREAM_MAX_IN_FLIGHT_PER_CREDENTIAL",
    "RESULT_CACHE_MAX_BYTES",
];

#[test]
fn every_numeric_variable_at_its_extremes_is_a_value_or_an_error_naming_it() {
    let extremes = [
        "0",
        "1",
        "-1",
        "0.0001",
        "1.5",
        "1e3",
        "1e400",
        "0x10",
        "NaN",
        "inf",
        "+5",
        "4294967296",
        "18446744073709551615",
        "18446744073709551616",
        "99999999999999999999999999999999",
    ];
    for variable in NUMERIC {
        for value in extremes {
            match settings(&[(variable, value)]) {
                Ok(settings) => assert_within_bounds(&settings, variable, value),
                Err(error) => assert_eq!(error.variable, *variable, "{variable}={value}: {error}"),
            }
        }
    }
}

/// What an accepted value may become: nothing a semaphore, a thread pool or
/// a cache cannot be built with.
fn assert_within_bounds(settings: &Settings, variable: &str, value: &str) {
    let context = format!("{variable}={value}");
    assert!(
        settings.upstream.max_in_flight <= MAX_IN_FLIGHT,
        "{context}"
    );
    assert!(
        settings.limits.lookup_concurrency <= MAX_LOOKUP_CONCURRENCY,
        "{context}"
    );
    assert!(settings.workers.unwrap_or(1) <= MAX_WORKERS, "{context}");
    assert!(
        settings.upstream.cache.max_entries <= MAX_CACHE_ENTRIES,
        "{context}"
    );
    assert!(
        settings.upstream.max_response_bytes <= MAX_BYTES,
        "{context}"
    );
    assert!(settings.limits.max_body_bytes <= MAX_BYTES, "{context}");
    assert!(
        settings.upstream.timeout >= Duration::from_millis(1),
        "{context}"
    );
    assert!(
        settings.upstream.timeout <= Duration::from_secs(3600),
        "{context}"
    );
}

#[test]
fn the_largest_accepted_values_are_accepted_and_one_more_is_not() {
    for (variable, largest, too_large) in [
        ("UPSTREAM_MAX_IN_FLIGHT", MAX_IN_FLIGHT, MAX_IN_FLIGHT + 1),
        (
            "LOOKUP_CONCURRENCY",
            MAX_LOOKUP_CONCURRENCY,
            MAX_LOOKUP_CONCURRENCY + 1,
        ),
        ("WORKERS", MAX_WORKERS, MAX_WORKERS + 1),
        ("MAX_REQUEST_BYTES", MAX_BYTES, MAX_BYTES + 1),
        ("MAX_UPSTREAM_RESPONSE_BYTES", MAX_BYTES, MAX_BYTES + 1),
        ("MAX_OBSERVABLES", MAX_OBSERVABLES, MAX_OBSERVABLES + 1),
        (
            "RESULT_CACHE_MAX_ENTRIES",
            MAX_CACHE_ENTRIES as usize,
            MAX_CACHE_ENTRIES as usize + 1,
        ),
    ] {
        // The limits that must leave room for one largest answer, raised too.
        let room = [
            ("REQUEST_MAX_UPSTREAM_BYTES", "1073741824"),
            ("MAX_HELD_BYTES", "1073741824"),
        ];
        let largest = largest.to_string();
        let mut vars = vec![(variable, largest.as_str())];
        if variable == "MAX_UPSTREAM_RESPONSE_BYTES" {
            vars.extend(room);
        }
        assert!(settings(&vars).is_ok(), "{variable}");
        let too_large = too_large.to_string();
        vars[0].1 = &too_large;
        let error = settings(&vars).unwrap_err();
        assert_eq!(error.variable, variable);
        assert!(
            error.message.contains(&largest),
            "the message names the bound: {error}"
        );
    }
}

#[test]
fn a_zero_timeout_is_refused_with_a_message_that_says_why() {
    let error = settings(&[("UPSTREAM_TIMEOUT_SECONDS", "0")]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid configuration: UPSTREAM_TIMEOUT_SECONDS: \"0\" is not a number of seconds \
         from 0.001 to 3600"
    );
}

#[test]
fn limits_that_leave_no_room_for_one_largest_answer_are_refused_naming_both() {
    for (vars, variable) in [
        (vec![("MAX_HELD_BYTES", "1000000")], "MAX_HELD_BYTES"),
        (
            vec![("MAX_HELD_BYTES_PER_TENANT", "1000000")],
            "MAX_HELD_BYTES_PER_TENANT",
        ),
        (
            vec![("REQUEST_MAX_UPSTREAM_BYTES", "1000000")],
            "REQUEST_MAX_UPSTREAM_BYTES",
        ),
    ] {
        let error = settings(&vars).unwrap_err();
        assert_eq!(error.variable, variable);
        assert!(
            error
                .to_string()
                .contains("MAX_UPSTREAM_RESPONSE_BYTES (10485760)"),
            "{error}"
        );
    }
    let error = settings(&[("MAX_HELD_BYTES_PER_TENANT", "100000000")]).unwrap_err();
    assert_eq!(error.variable, "MAX_HELD_BYTES_PER_TENANT");
    assert!(
        error.to_string().contains("MAX_HELD_BYTES (67108864)"),
        "{error}"
    );
    // The default share follows the pool, and leaves room for a largest answer.
    let settings_of = |vars: &[(&str, &str)]| settings(vars).unwrap().limits;
    assert_eq!(
        settings_of(&[("MAX_HELD_BYTES", "268435456")]).max_held_bytes_per_tenant,
        64 * 1024 * 1024
    );
    assert_eq!(
        settings_of(&[("MAX_HELD_BYTES", "20971520")]).max_held_bytes_per_tenant,
        10 * 1024 * 1024
    );
}

#[test]
fn traces_are_off_without_an_endpoint_and_follow_the_sdk_variables_with_one() {
    assert!(settings(&[]).unwrap().log.trace.is_none());
    assert!(
        settings(&[("OTEL_SERVICE_NAME", "x")])
            .unwrap()
            .log
            .trace
            .is_none(),
        "no endpoint, no traces"
    );
    let trace = |vars: &[(&str, &str)]| settings(vars).unwrap().log.trace.unwrap();
    let base = trace(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]);
    assert_eq!(base.endpoint.as_str(), "http://collector:4318/v1/traces");
    assert_eq!(base.service_name, "ctr-relay");
    assert_eq!(
        base.sampling,
        Sampling::ParentBased(crate::config::ParentlessSampling::AlwaysOn)
    );
    assert_eq!((base.max_queue, base.max_batch), (2048, 512));
    assert_eq!(base.timeout, Duration::from_secs(10));
    let own = trace(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318"),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "https://collector.example/otlp/traces",
        ),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=Bearer%20abc,x-tenant=soc",
        ),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.name=from-attributes,env=prod",
        ),
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
    ]);
    assert_eq!(
        own.endpoint.as_str(),
        "https://collector.example/otlp/traces"
    );
    assert_eq!(own.headers[0].0, "authorization");
    assert_eq!(own.headers[0].1.expose(), "Bearer abc");
    assert_eq!(own.service_name, "from-attributes");
    assert_eq!(own.resource, [("env".to_owned(), "prod".to_owned())]);
    assert_eq!(
        own.sampling,
        Sampling::ParentBased(crate::config::ParentlessSampling::Ratio(0.25))
    );
    assert!(!format!("{own:?}").contains("abc"), "headers are secrets");
    assert!(
        settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ])
        .unwrap()
        .log
        .trace
        .is_none()
    );
}

#[test]
fn a_bad_trace_setting_is_an_error_naming_it_and_no_header_value() {
    let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
    for (vars, variable) in [
        (
            vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")],
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ),
        (
            vec![endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        (
            vec![endpoint, ("OTEL_TRACES_SAMPLER", "sometimes")],
            "OTEL_TRACES_SAMPLER",
        ),
        (
            vec![
                endpoint,
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
            ],
            "OTEL_TRACES_SAMPLER_ARG",
        ),
        (
            vec![endpoint, ("OTEL_BSP_MAX_QUEUE_SIZE", "0")],
            "OTEL_BSP_MAX_QUEUE_SIZE",
        ),
        (
            vec![
                endpoint,
                ("OTEL_BSP_MAX_QUEUE_SIZE", "10"),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "11"),
            ],
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
        ),
        (
            vec![("UPSTREAM_TRACEPARENT", "maybe")],
            "UPSTREAM_TRACEPARENT",
        ),
    ] {
        assert_eq!(error_variable(&vars), variable, "{vars:?}");
    }
    let error = settings(&[
        endpoint,
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=token-s3cr3t,broken",
        ),
    ])
    .unwrap_err();
    assert_eq!(error.variable, "OTEL_EXPORTER_OTLP_HEADERS");
    assert!(!error.message.contains("s3cr3t"), "{}", error.message);
}
