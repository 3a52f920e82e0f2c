//! Event schemas: an old payload, kept as a fixture, still decodes through the upcaster.

#[test]
fn an_old_schema_payload_from_the_fixture_decodes_through_the_upcaster() {
    use ordo_engine::domain::events::{decode, Event, SkuEvent};
    // Written by the schema-1 encoder of SkuRegistered (before per_customer_limit).
    let hex = include_str!("../fixtures/sku_registered_v1.hex").trim();
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    match decode("SkuRegistered", 1, &bytes).unwrap() {
        Event::Sku(SkuEvent::SkuRegistered(e)) => {
            assert_eq!(
                (
                    e.sku.as_str(),
                    e.name.as_str(),
                    e.price_minor,
                    e.currency.as_str()
                ),
                ("LEGACY-1", "Old item", 1234, "EUR")
            );
            assert_eq!(e.per_customer_limit, None);
        }
        other => panic!("unexpected {other:?}"),
    }
    // The fixture is exactly what the kept schema-1 encoder writes.
    let v1 = ordo_engine::domain::events::SkuRegisteredV1 {
        sku: "LEGACY-1".into(),
        name: "Old item".into(),
        price_minor: 1234,
        currency: "EUR".into(),
    };
    assert_eq!(
        bincode::encode_to_vec(&v1, bincode::config::standard()).unwrap(),
        bytes
    );
    // Schema 1 bytes are not mistaken for the current schema, and unknown schemas fail.
    assert!(decode("SkuRegistered", 9, &bytes).is_err());
    assert!(decode("NoSuchEvent", 1, &bytes).is_err());
}
