//! A point-of-sale till on the embedded engine: registers a few SKUs, sells a basket,
//! takes a cash payment, prints the receipt and the order's events.
//!
//! `cargo run --release --example pos -- [DATA_DIR]` (default `./data`)

use ordo::{Engine, EngineConfig, LineRequest, PaymentOutcome, PlaceOrder, UpsertSku};

fn money(minor: i64, currency: &str) -> String {
    format!("{}.{:02} {currency}", minor / 100, (minor % 100).abs())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data_dir = std::env::args().nth(1).unwrap_or_else(|| "./data".into());
    let engine = Engine::open(EngineConfig {
        data_dir: data_dir.into(),
        ..Default::default()
    })?;
    futures::executor::block_on(async {
        let catalogue = [
            ("ESPRESSO-250", "Espresso beans 250 g", 749, 120),
            ("FILTER-100", "Paper filters x100", 329, 300),
            ("MUG-STONE", "Stoneware mug", 1_450, 24),
        ];
        for (sku, name, price, stock) in catalogue {
            // Upsert: the stock counts only the first time the till registers the SKU.
            engine
                .upsert_sku(
                    UpsertSku {
                        sku: sku.into(),
                        name: name.into(),
                        price_minor: price,
                        currency: "EUR".into(),
                        per_customer_limit: None,
                        stock,
                    },
                    None,
                )
                .await?;
        }
        let basket = PlaceOrder {
            customer_id: "till-1".into(),
            lines: vec![
                LineRequest {
                    sku: "ESPRESSO-250".into(),
                    qty: 2,
                },
                LineRequest {
                    sku: "MUG-STONE".into(),
                    qty: 1,
                },
            ],
        };
        let order = engine.place_order(basket, None).await?;
        let cash_ref = format!("cash-{}", order.id);
        let paid = engine
            .pay(
                &order.id,
                &cash_ref,
                PaymentOutcome::Succeeded,
                order.total_minor,
                None,
            )
            .await?;

        println!("RECEIPT  order {}", paid.id);
        for l in &paid.lines {
            println!(
                "  {:<14} {:>3} x {:>12} = {:>12}",
                l.sku,
                l.qty,
                money(l.unit_price_minor, &paid.currency),
                money(l.unit_price_minor * i64::from(l.qty), &paid.currency)
            );
        }
        println!("  TOTAL {:>43}", money(paid.total_minor, &paid.currency));
        println!("  paid cash ({cash_ref}), status {}", paid.status);
        println!("EVENTS");
        for e in engine.read_events(0, 100, Some(&format!("order/{}", paid.id)))? {
            println!("  {}", ordo::event_json(&e));
        }
        for sku in ["ESPRESSO-250", "MUG-STONE"] {
            let s = engine.get_sku(sku).await?;
            println!(
                "STOCK {sku}: available {}, reserved {}, sold {}",
                s.available, s.reserved, s.sold
            );
        }
        engine.shutdown().await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
