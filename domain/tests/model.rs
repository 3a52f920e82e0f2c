//! The pure domain core against a simple reference model (proptest): random command
//! sequences on one SKU and its orders give the same outcomes, counters and statuses in
//! both, and the SKU invariant holds after every step. No actors, no storage.
mod model {
    use std::collections::HashMap;

    use ordo_domain::order::{self, Order, OrderCommand, PaymentOutcome, ShipmentStep, Status};
    use ordo_domain::sku::{self, Sku, SkuCommand};
    use proptest::prelude::*;

    const LIMIT: u64 = 6;

    #[derive(Debug, Clone)]
    pub enum Cmd {
        Adjust(i64),
        Place(u8, u32),
        Pay(usize, bool),
        Cancel(usize),
        Expire(usize),
        Ship(usize),
    }

    pub fn cmd() -> impl Strategy<Value = Cmd> {
        prop_oneof![
            (-20i64..20).prop_map(Cmd::Adjust),
            (0u8..4, 1u32..5).prop_map(|(c, q)| Cmd::Place(c, q)),
            (0usize..40, any::<bool>()).prop_map(|(i, ok)| Cmd::Pay(i, ok)),
            (0usize..40).prop_map(Cmd::Cancel),
            (0usize..40).prop_map(Cmd::Expire),
            (0usize..40).prop_map(Cmd::Ship),
        ]
    }

    /// The reference: counters and statuses, a few lines per rule.
    #[derive(Default)]
    pub struct Model {
        pub available: i64,
        pub reserved: i64,
        pub sold: i64,
        pub held: HashMap<u8, u64>,
        pub orders: Vec<(u8, u32, Status)>,
    }

    impl Model {
        pub fn step(&mut self, c: &Cmd) -> bool {
            match *c {
                Cmd::Adjust(d) => {
                    if d == 0 || self.available + d < 0 {
                        return false;
                    }
                    self.available += d;
                    true
                }
                Cmd::Place(cu, q) => {
                    let ok = i64::from(q) <= self.available
                        && self.held.get(&cu).copied().unwrap_or(0) + u64::from(q) <= LIMIT;
                    if ok {
                        self.available -= i64::from(q);
                        self.reserved += i64::from(q);
                        *self.held.entry(cu).or_default() += u64::from(q);
                    }
                    self.orders
                        .push((cu, q, if ok { Status::Pending } else { Status::Failed }));
                    ok
                }
                Cmd::Pay(i, ok) => match self.orders.get(i).copied() {
                    Some((cu, q, Status::Pending)) => {
                        let q64 = i64::from(q);
                        if ok {
                            self.reserved -= q64;
                            self.sold += q64;
                            self.orders[i].2 = Status::Confirmed;
                        } else {
                            self.release(cu, q);
                            self.orders[i].2 = Status::Cancelled;
                        }
                        true
                    }
                    _ => false,
                },
                Cmd::Cancel(i) => match self.orders.get(i).copied() {
                    Some((cu, q, Status::Pending)) => {
                        self.release(cu, q);
                        self.orders[i].2 = Status::Cancelled;
                        true
                    }
                    Some((cu, q, Status::Confirmed)) => {
                        self.sold -= i64::from(q);
                        self.available += i64::from(q);
                        *self.held.entry(cu).or_default() -= u64::from(q);
                        self.orders[i].2 = Status::Cancelled;
                        true
                    }
                    _ => false,
                },
                Cmd::Expire(i) => {
                    if let Some((cu, q, Status::Pending)) = self.orders.get(i).copied() {
                        self.release(cu, q);
                        self.orders[i].2 = Status::Cancelled;
                    }
                    true
                }
                Cmd::Ship(i) => match self.orders.get(i).copied() {
                    Some((_, _, Status::Confirmed)) => {
                        self.orders[i].2 = Status::ShipmentPrepared;
                        true
                    }
                    _ => false,
                },
            }
        }

        fn release(&mut self, cu: u8, q: u32) {
            self.available += i64::from(q);
            self.reserved -= i64::from(q);
            *self.held.entry(cu).or_default() -= u64::from(q);
        }
    }

    /// The real core, composed the way the actors compose it.
    pub struct Real {
        pub sku: Sku,
        pub orders: Vec<Order>,
    }

    fn sku_do(s: &mut Sku, c: SkuCommand) -> bool {
        match sku::decide(s, &c) {
            Ok(evs) => {
                for e in &evs {
                    sku::apply(s, e);
                }
                true
            }
            Err(_) => false,
        }
    }

    fn order_do(o: &mut Order, c: OrderCommand) -> Option<usize> {
        order::decide(o, &c).ok().map(|evs| {
            for e in &evs {
                order::apply(o, e, 0);
            }
            evs.len()
        })
    }

    impl Real {
        pub fn new() -> Self {
            let mut sku = Sku::default();
            assert!(sku_do(
                &mut sku,
                SkuCommand::Upsert {
                    sku: "S".into(),
                    name: "s".into(),
                    price_minor: 10,
                    currency: "EUR".into(),
                    per_customer_limit: Some(LIMIT as u32),
                    initial_stock: 0,
                }
            ));
            Real {
                sku,
                orders: Vec::new(),
            }
        }

        pub fn step(&mut self, c: &Cmd) -> bool {
            match *c {
                Cmd::Adjust(d) => sku_do(
                    &mut self.sku,
                    SkuCommand::AdjustStock {
                        delta: d,
                        reason: "r".into(),
                    },
                ),
                Cmd::Place(cu, q) => {
                    let id = format!("o{}", self.orders.len());
                    let customer = format!("c{cu}");
                    let failure = match sku::decide(
                        &self.sku,
                        &SkuCommand::Reserve {
                            order_id: id.clone(),
                            customer_id: customer.clone(),
                            qty: q,
                        },
                    ) {
                        Ok(evs) => {
                            evs.iter().for_each(|e| sku::apply(&mut self.sku, e));
                            None
                        }
                        Err(e) => Some(order::PlaceFailure {
                            reason: order::FailureReason::of(&e)
                                .map_or(order::FailureReason::OutOfStock, |(r, _)| r),
                            sku: "S".into(),
                            detail: e.to_string(),
                        }),
                    };
                    let ok = failure.is_none();
                    let mut o = Order::default();
                    order_do(
                        &mut o,
                        OrderCommand::Place {
                            order_id: id,
                            customer_id: customer,
                            lines: vec![order::OrderLine {
                                sku: "S".into(),
                                qty: q,
                                unit_price_minor: 10,
                            }],
                            currency: "EUR".into(),
                            now_ms: 0,
                            ttl_ms: 1_000,
                            failure,
                        },
                    )
                    .expect("place");
                    self.orders.push(o);
                    ok
                }
                Cmd::Pay(i, ok) => {
                    let Some(o) = self.orders.get_mut(i) else {
                        return false;
                    };
                    let outcome = if ok {
                        PaymentOutcome::Succeeded
                    } else {
                        PaymentOutcome::Failed
                    };
                    let total = o.total_minor;
                    if order_do(
                        o,
                        OrderCommand::Pay {
                            payment_ref: format!("p{i}-{}", o.version),
                            outcome,
                            amount_minor: total,
                            now_ms: 1,
                        },
                    )
                    .is_none()
                    {
                        return false;
                    }
                    if ok {
                        sku_do(
                            &mut self.sku,
                            SkuCommand::Reduce {
                                order_id: o.id.clone(),
                            },
                        );
                        order_do(o, OrderCommand::Confirm).expect("confirm");
                    } else {
                        sku_do(
                            &mut self.sku,
                            SkuCommand::Release {
                                order_id: o.id.clone(),
                                reason: "payment_failed".into(),
                            },
                        );
                    }
                    true
                }
                Cmd::Cancel(i) => {
                    let Some(o) = self.orders.get_mut(i) else {
                        return false;
                    };
                    let from = o.status;
                    if order_do(
                        o,
                        OrderCommand::Cancel {
                            reason: "customer".into(),
                        },
                    )
                    .is_none()
                    {
                        return false;
                    }
                    if from == Some(Status::Confirmed) {
                        let q = o.lines[0].qty;
                        assert!(sku_do(
                            &mut self.sku,
                            SkuCommand::Restore {
                                order_id: o.id.clone(),
                                customer_id: o.customer_id.clone(),
                                qty: q
                            }
                        ));
                        let pr = o.payment_ref.clone().unwrap_or_default();
                        order_do(
                            o,
                            OrderCommand::RequestRefund {
                                payment_ref: pr,
                                amount_minor: o.total_minor,
                                reason: "cancelled".into(),
                            },
                        )
                        .expect("refund");
                        assert!(!o.needs_restore());
                    } else {
                        sku_do(
                            &mut self.sku,
                            SkuCommand::Release {
                                order_id: o.id.clone(),
                                reason: "cancelled".into(),
                            },
                        );
                    }
                    true
                }
                Cmd::Expire(i) => {
                    let Some(o) = self.orders.get_mut(i) else {
                        return true;
                    };
                    if order_do(o, OrderCommand::Expire { now_ms: 5_000 }) == Some(1) {
                        sku_do(
                            &mut self.sku,
                            SkuCommand::Release {
                                order_id: o.id.clone(),
                                reason: "expired".into(),
                            },
                        );
                    }
                    true
                }
                Cmd::Ship(i) => {
                    let Some(o) = self.orders.get_mut(i) else {
                        return false;
                    };
                    order_do(o, OrderCommand::Ship(ShipmentStep::Prepared)).is_some()
                }
            }
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    #[test]
    fn the_pure_core_agrees_with_the_reference_model(cmds in proptest::collection::vec(model::cmd(), 1..80)) {
        let mut m = model::Model::default();
        let mut r = model::Real::new();
        for c in &cmds {
            let want = m.step(c);
            let got = r.step(c);
            proptest::prop_assert_eq!(got, want, "outcome of {:?}", c);
            proptest::prop_assert!(r.sku.invariant_holds(), "invariant after {:?}", c);
            proptest::prop_assert_eq!((r.sku.available, r.sku.reserved, r.sku.sold), (m.available, m.reserved, m.sold), "counters after {:?}", c);
            let statuses: Vec<_> = r.orders.iter().map(|o| o.status()).collect();
            let want_statuses: Vec<_> = m.orders.iter().map(|o| o.2).collect();
            proptest::prop_assert_eq!(statuses, want_statuses, "statuses after {:?}", c);
        }
    }
}
