//! `module_type.json` against the XDR ModuleType schema, the token parser and
//! the routes the relay serves.
//!
//! The schema is `NewModuleTypeParams` of the IROH-INT ModuleType API
//! (`https://visibility.amp.cisco.com/iroh/iroh-int/swagger.json`, version
//! 1.0.107): every property with its type, `additionalProperties: false`,
//! `title` and `default_name` required; and its `ConfigurationSpecField`,
//! `Capability`, `ProductCategory` and `ModuleTypeExternalReference`. They are
//! written down below as the schema states them.

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

use ctr_relay::auth;
use ctr_relay::domain::EntitiesLimit;

use crate::helpers::spawn_app;

#[derive(Clone, Copy, Debug)]
enum Kind {
    String,
    Boolean,
    Integer,
    Object,
    Array,
    /// `default_value`: string, integer or boolean.
    Scalar,
}

impl Kind {
    fn matches(self, value: &Value) -> bool {
        match self {
            Kind::String => value.is_string(),
            Kind::Boolean => value.is_boolean(),
            Kind::Integer => value.is_i64() || value.is_u64(),
            Kind::Object => value.is_object(),
            Kind::Array => value.is_array(),
            Kind::Scalar => value.is_string() || value.is_i64() || value.is_boolean(),
        }
    }
}

/// `NewModuleTypeParams`.
const MODULE_TYPE: &[(&str, Kind)] = &[
    ("description", Kind::String),
    ("properties", Kind::Object),
    ("app_link", Kind::String),
    ("product_categories", Kind::Array),
    ("capabilities", Kind::Array),
    ("integration_id", Kind::String),
    ("app_link_meta", Kind::Object),
    ("tips", Kind::String),
    ("logo_dark", Kind::String),
    ("logo", Kind::String),
    ("ocsf-product-uid", Kind::String),
    ("integration", Kind::Object),
    ("configuration_spec", Kind::Array),
    ("short_description", Kind::String),
    ("title", Kind::String),
    ("external_references", Kind::Array),
    ("max_nb_instances", Kind::Integer),
    ("default_name", Kind::String),
    ("flags", Kind::Array),
    ("enabled", Kind::Boolean),
    ("former_title", Kind::String),
];
const MODULE_TYPE_REQUIRED: &[&str] = &["title", "default_name"];

/// `ConfigurationSpecField`.
const CONFIGURATION_FIELD: &[(&str, Kind)] = &[
    ("group", Kind::String),
    ("beta", Kind::Boolean),
    ("key", Kind::String),
    ("type", Kind::String),
    ("strict-options", Kind::Boolean),
    ("label", Kind::String),
    ("options", Kind::Array),
    ("default_value", Kind::Scalar),
    ("tooltip", Kind::String),
    ("required", Kind::Boolean),
    ("subtype", Kind::String),
];
const CONFIGURATION_FIELD_REQUIRED: &[&str] = &["key", "type", "label"];
const CONFIGURATION_FIELD_TYPES: &[&str] = &[
    "remote", "password", "file", "string", "api_key", "integer", "device", "options", "boolean",
];

/// `Capability` (`id` and `description`, both required).
const CAPABILITY_IDS: &[&str] = &[
    "detection_source",
    "device_insights",
    "respond",
    "observe",
    "assets",
    "incident/resolve",
    "notifications",
    "data_ingestion",
    "target_records",
    "health",
    "automate",
    "tiles",
    "refer",
    "threat_hunts",
    "deliberate",
];

/// `ProductCategory` (`id` and `description`, both required).
const PRODUCT_CATEGORY_IDS: &[&str] = &[
    "siem",
    "threat-intel",
    "email-security",
    "ndr",
    "rf-security",
    "cloud-firewall",
    "itsm",
    "edr",
    "cloud-security",
    "firewall",
];

/// `ModuleTypeExternalReference`.
const EXTERNAL_REFERENCE: &[(&str, Kind)] = &[
    ("label", Kind::String),
    ("link", Kind::String),
    ("external_id", Kind::String),
    ("class", Kind::String),
];

fn module_type() -> Map<String, Value> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/module_type.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every property of `object` is in `fields` with its type, and every
/// `required` one is there.
fn check_object(what: &str, object: &Value, fields: &[(&str, Kind)], required: &[&str]) {
    let object = object
        .as_object()
        .unwrap_or_else(|| panic!("{what} is not an object"));
    for (name, value) in object {
        let (_, kind) = fields
            .iter()
            .find(|(field, _)| field == name)
            .unwrap_or_else(|| panic!("{what}: `{name}` is not in the schema"));
        assert!(kind.matches(value), "{what}: `{name}` is not {kind:?}");
    }
    for name in required {
        assert!(object.contains_key(*name), "{what}: `{name}` is missing");
    }
}

/// `{"id", "description"}` with `id` one of `ids`.
fn check_id_and_description(what: &str, item: &Value, ids: &[&str]) {
    let fields = [("id", Kind::String), ("description", Kind::String)];
    check_object(what, item, &fields, &["id", "description"]);
    let id = item["id"].as_str().unwrap();
    assert!(ids.contains(&id), "{what}: `{id}` is not one of {ids:?}");
}

#[test]
fn the_module_type_follows_the_xdr_schema() {
    let module = module_type();
    let root = Value::Object(module.clone());
    check_object("module type", &root, MODULE_TYPE, MODULE_TYPE_REQUIRED);

    for field in module["configuration_spec"].as_array().unwrap() {
        check_object(
            "configuration_spec",
            field,
            CONFIGURATION_FIELD,
            CONFIGURATION_FIELD_REQUIRED,
        );
        let kind = field["type"].as_str().unwrap();
        assert!(CONFIGURATION_FIELD_TYPES.contains(&kind), "{kind}");
        if let Some(default) = field.get("default_value") {
            let expected = match kind {
                "integer" => Kind::Integer,
                "boolean" => Kind::Boolean,
                _ => Kind::String,
            };
            assert!(
                expected.matches(default),
                "{field}: default of another type"
            );
        }
    }
    for capability in module["capabilities"].as_array().unwrap() {
        check_id_and_description("capabilities", capability, CAPABILITY_IDS);
    }
    let categories = module["product_categories"].as_array().unwrap();
    for category in categories {
        check_id_and_description("product_categories", category, PRODUCT_CATEGORY_IDS);
    }
    assert!(
        categories.iter().any(|c| c["id"] == "threat-intel"),
        "a threat intelligence product"
    );
    for reference in module["external_references"].as_array().unwrap() {
        check_object("external_references", reference, EXTERNAL_REFERENCE, &[]);
    }
    // `flags` is a list of strings: none here, and never an empty string.
    assert_eq!(module["flags"], Value::Array(vec![]));
    // Properties: strings, booleans, numbers, objects, or arrays of them.
    for (name, value) in module["properties"].as_object().unwrap() {
        let scalar = |v: &Value| v.is_string() || v.is_boolean() || v.is_number() || v.is_object();
        let ok = scalar(value)
            || value
                .as_array()
                .is_some_and(|items| items.iter().all(scalar));
        assert!(ok, "properties.{name}");
    }
}

#[test]
fn the_logos_are_the_embedded_images_of_assets() {
    let module = module_type();
    for (field, file) in [
        ("logo", "assets/logo.svg"),
        ("logo_dark", "assets/logo-dark.svg"),
    ] {
        let uri = module[field].as_str().unwrap();
        let encoded = uri
            .strip_prefix("data:image/svg+xml;base64,")
            .unwrap_or_else(|| panic!("{field} is not an SVG data URI"));
        let image = STANDARD.decode(encoded).unwrap();
        let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
        assert_eq!(image, std::fs::read(&path).unwrap(), "{field} ≠ {file}");
        let text = String::from_utf8(image).unwrap();
        assert!(
            text.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{field}"
        );
    }
    assert_ne!(module["logo"], module["logo_dark"]);
}

#[test]
fn the_token_properties_let_xdr_sign_for_this_relay() {
    let module = module_type();
    let properties = &module["properties"];
    assert_eq!(properties["auth-type"], "configuration-token");
    assert_eq!(properties["configuration-token-alg"], "RS256");
    assert!(properties["custom_jwks_host"].is_string());
    // The audience XDR writes into `aud` is the relay's URL: RELAY_AUDIENCE.
    assert_eq!(
        properties["configuration-token-audience"],
        properties["url"]
    );
}

/// XDR carries each configuration value in the token under the key without
/// its `custom_` prefix.
fn claims_of(module: &Map<String, Value>, skip: Option<&str>) -> auth::jwt::Claims {
    let mut claims = auth::jwt::Claims::new();
    for field in module["configuration_spec"].as_array().unwrap() {
        let key = field["key"].as_str().unwrap();
        let claim = key
            .strip_prefix("custom_")
            .unwrap_or_else(|| panic!("`{key}` lacks the custom_ prefix"));
        if Some(claim) == skip {
            continue;
        }
        let value = match field["type"].as_str().unwrap() {
            "integer" => Value::from(7),
            _ if claim == "host" => Value::from("api.cyberscan.example"),
            _ if claim.ends_with("_quota") => Value::from("7/day"),
            _ => Value::from(format!("value-of-{claim}")),
        };
        claims.insert(claim.to_owned(), value);
    }
    claims
}

#[test]
fn every_configuration_key_is_one_the_token_parser_reads() {
    let module = module_type();
    let all = auth::credentials(&claims_of(&module, None)).unwrap();
    assert!(all.c1fapp.is_some() && all.cyberscan.is_some());
    assert_eq!(all.entities_limit.map(EntitiesLimit::get), Some(7));
    for field in module["configuration_spec"].as_array().unwrap() {
        let claim = field["key"].as_str().unwrap().trim_start_matches("custom_");
        let without = auth::credentials(&claims_of(&module, Some(claim))).unwrap();
        let read = match claim {
            "key" => without.c1fapp.is_none(),
            "api_key" | "host" => without.cyberscan.is_none(),
            "CTR_ENTITIES_LIMIT" => without.entities_limit.is_none(),
            "c1fapp_quota" => without.c1fapp.is_some_and(|c1fapp| c1fapp.quota.is_none()),
            "cyberscan_quota" => without
                .cyberscan
                .is_some_and(|cyberscan| cyberscan.quota.is_none()),
            other => panic!("`{other}` is a key the token parser does not read"),
        };
        assert!(read, "`{claim}` changes nothing when it is missing");
    }
    // The entities limit's default is the relay's.
    let limit = module["configuration_spec"]
        .as_array()
        .unwrap()
        .iter()
        .find(|field| field["key"] == "custom_CTR_ENTITIES_LIMIT")
        .unwrap();
    assert_eq!(limit["default_value"], EntitiesLimit::DEFAULT.get());
}

/// What XDR may call on a relay module: the routes of the maintained relays
/// for every capability.
const XDR_APIS: &[&str] = &[
    "health",
    "observe/observables",
    "refer/observables",
    "deliberate/observables",
    "respond/observables",
    "respond/trigger",
    "tiles",
    "tiles/tile",
    "tiles/tile-data",
    "incident/resolve",
    "notifications",
];

#[tokio::test]
async fn the_module_type_lists_exactly_the_routes_that_exist() {
    let app = spawn_app().await;
    let mut served = BTreeSet::new();
    for api in XDR_APIS {
        let response = app
            .http
            .post(app.url(&format!("/{api}")))
            .json(&serde_json::json!([]))
            .send()
            .await
            .unwrap();
        if response.status() != 404 {
            served.insert(api.to_string());
        }
    }
    let module = module_type();
    let listed: BTreeSet<String> = module["properties"]["supported-apis"]
        .as_array()
        .unwrap()
        .iter()
        .map(|api| api.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, served, "supported-apis vs the routes served");
    let capabilities: BTreeSet<String> = module["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    let of_routes: BTreeSet<String> = served
        .iter()
        .map(|api| api.split('/').next().unwrap().to_owned())
        .collect();
    assert_eq!(capabilities, of_routes, "capabilities vs the routes served");
}
