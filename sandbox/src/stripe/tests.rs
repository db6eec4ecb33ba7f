use super::*;

#[test]
fn a_signature_is_stripes_hmac_of_the_timestamped_payload() {
    // Computed independently: HMAC-SHA256("whsec_test", "1700000000.{\"id\":\"evt_1\"}").
    assert_eq!(
        sign_webhook(r#"{"id":"evt_1"}"#, "whsec_test", 1_700_000_000),
        "t=1700000000,v1=c89214b5b5da833daed6f0b8c5bb6bd58cea9022bd80ccc78230f3942d632925"
    );
}

#[test]
fn an_event_wraps_its_object_with_a_fresh_id() {
    let session = fixture("checkout.session");
    let first = event("checkout.session.completed", session.clone(), 1_700_000_000);
    let second = event("checkout.session.completed", session.clone(), 1_700_000_000);
    assert_eq!(first["type"], "checkout.session.completed");
    assert_eq!(first["data"]["object"], session);
    assert_eq!(first["api_version"], API_VERSION);
    assert_eq!(first["created"], 1_700_000_000);
    assert!(first["id"].as_str().unwrap().starts_with("evt_"));
    assert_ne!(first["id"], second["id"]);
}

#[test]
fn every_named_fixture_is_there() {
    for name in [
        "billing_portal.session",
        "charge",
        "checkout.session",
        "customer",
        "dispute",
        "event",
        "invoice",
        "refund",
        "subscription",
    ] {
        assert_eq!(fixture(name)["object"], name);
    }
}

#[test]
fn bracketed_maps_are_read_one_level_deep() {
    let form = vec![
        ("metadata[plan]".to_string(), "pro".to_string()),
        ("subscription_data[metadata][plan]".to_string(), "pro".to_string()),
        ("metadata[a][b]".to_string(), "x".to_string()),
    ];
    assert_eq!(Value::Object(map_param(&form, "metadata")), json!({"plan": "pro"}));
}

#[test]
fn a_refused_key_shows_only_its_ends() {
    assert_eq!(redacted("sk_test_wrong_key_1234"), "sk_test_**********1234");
    assert_eq!(redacted("short"), "*****");
}
