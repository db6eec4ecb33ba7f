//! Generates the client from the checked-in spec with progenitor, as a program using paygate
//! would. Only the webhook operations are left out, before generating: they are Stripe's and
//! Telegram's to call, and a client has no use for them.

use std::path::Path;

fn main() {
    let spec_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi/openapi.json");
    println!("cargo:rerun-if-changed={}", spec_path.display());
    let text = std::fs::read_to_string(&spec_path).expect("reading openapi/openapi.json");
    let mut spec: serde_json::Value = serde_json::from_str(&text).expect("openapi/openapi.json is JSON");
    spec["paths"]
        .as_object_mut()
        .expect("the spec has paths")
        .retain(|path, _| !path.starts_with("/webhooks/"));
    let spec: openapiv3::OpenAPI = serde_json::from_value(spec).expect("openapi/openapi.json is OpenAPI 3");
    let tokens = progenitor::Generator::default()
        .generate_tokens(&spec)
        .expect("progenitor generates the client");
    let code = prettyplease::unparse(&syn::parse2(tokens).expect("the generated client parses"));
    let out = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("client.rs");
    std::fs::write(out, code).expect("writing the client");
}
