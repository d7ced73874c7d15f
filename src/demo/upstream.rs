//! The demo's stand-ins for C1fApp and CyberScan: loopback only, answering in
//! the services' shapes with data that says it is demo data.

use std::net::Ipv4Addr;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

/// The API key the demo token carries for each demo service; the demo
/// services accept no other.
pub const C1FAPP_KEY: &str = "demo-c1fapp-key";
pub const CYBERSCAN_KEY: &str = "demo-cyberscan-key";
const ACCESS_TOKEN: &str = "demo-access-token";
const LABEL: &str = "DEMO DATA from ctr-relay demo, not threat intelligence";

/// The demo services, serving on `port` of 127.0.0.1 until stopped.
pub struct DemoUpstream {
    pub port: u16,
    pub handle: ServerHandle,
}

impl DemoUpstream {
    /// Binds 127.0.0.1 on a free port and serves on the current actix
    /// runtime.
    pub fn start() -> std::io::Result<Self> {
        let server = HttpServer::new(|| {
            App::new()
                .route("/cifapp/api/", web::post().to(c1fapp))
                .route("/api/v1/token", web::post().to(token))
                .route("/api/v1/domain/{domain}", web::get().to(domain_report))
                .route("/api/v1/vulnerabilities/ip/{ip}", web::get().to(findings))
        })
        .workers(1)
        .disable_signals()
        .bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = server
            .addrs()
            .first()
            .map(|address| address.port())
            .ok_or_else(|| std::io::Error::other("the demo upstream has no address"))?;
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Ok(Self { port, handle })
    }
}

fn json_answer(body: Value) -> HttpResponse {
    HttpResponse::Ok().json(body)
}

/// C1fApp: two listings of the observable on two demo feeds.
async fn c1fapp(body: web::Json<Value>) -> HttpResponse {
    if body["key"] != C1FAPP_KEY {
        return HttpResponse::Forbidden().body("Invalid API key");
    }
    let value = body["request"].as_str().unwrap_or_default().to_owned();
    let record = |feed: &str, confidence: i64, date: &str, assessment: &str, id: u32| {
        json!({
            "feed_label": [format!("{feed} (demo)")],
            "domain": ["demo.example.net"],
            "description": [LABEL],
            "derived": "direct",
            "address": ["https://demo.example.net/login"],
            "ip_address": ["198.51.100.7"],
            "asn": ["-"],
            "confidence": [confidence],
            "country": ["ZZ"],
            "reportime": [date],
            "source": [format!("https://demo.example.net/feeds/{id}?value={value}")],
            "asn_desc": ["-"],
            "assessment": [assessment]
        })
    };
    json_answer(json!([
        record("Demo Phishing Feed", 90, "2026-11-30", "phishing", 1),
        record("Demo Malware Feed", 60, "2026-11-12", "malware", 2),
    ]))
}

async fn token(body: web::Json<Value>) -> HttpResponse {
    if body["key"] != CYBERSCAN_KEY {
        return HttpResponse::Unauthorized().body("Invalid API key");
    }
    json_answer(json!({"access_token": ACCESS_TOKEN}))
}

fn authorized(request: &actix_web::HttpRequest) -> bool {
    request
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        == Some(&format!("Bearer {ACCESS_TOKEN}"))
}

/// CyberScan: two findings for any IP.
async fn findings(request: actix_web::HttpRequest, ip: web::Path<String>) -> HttpResponse {
    if !authorized(&request) {
        return HttpResponse::Unauthorized().finish();
    }
    let finding = |name: &str, cve: &str, severity: &str, cvss: f64, port: u16| {
        json!({
            "name": format!("{name} (demo)"), "family": "Demo", "description": LABEL,
            "severity": severity, "port": port, "protocol": "tcp", "cve": cve,
            "cvss": cvss, "confidence": 80
        })
    };
    json_answer(json!({
        "ip": ip.into_inner(),
        "vulnerabilities": [
            finding("Demo OpenSSH weakness", "CVE-0000-00001", "High", 8.1, 22),
            finding("Demo TLS misconfiguration", "CVE-0000-00002", "Medium", 5.3, 443),
        ]
    }))
}

/// CyberScan: the host report of a domain.
async fn domain_report(request: actix_web::HttpRequest, domain: web::Path<String>) -> HttpResponse {
    if !authorized(&request) {
        return HttpResponse::Unauthorized().finish();
    }
    let domain = domain.into_inner();
    json_answer(json!({
        "domain": domain,
        "ip": "198.51.100.7",
        "vulns": {"critical": 0, "high": 1, "medium": 1, "low": 0, "info": 0},
        "cvss_total": 13.4,
        "open_ports": 2,
        "details_page": format!("https://demo.example.net/cyberscan/{domain}")
    }))
}
