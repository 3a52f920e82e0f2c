//! The read-back of the final state after a run: every SKU, the event log, and every
//! order an answer or the log names, read until the SKUs hold still around the orders.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;

use super::super::model::{LogEvent, LogView, Observed, OrderFinal, SkuFinal};
use super::Api;

impl Api {
    /// Reads the final state: every SKU, the event log (`full_log`: paged from the start,
    /// for a server that holds only this run; else per stream: the SKUs' streams name the
    /// orders that held stock), and every order an answer or the log names.
    ///
    /// SKUs are read before and after the orders; if any changed meanwhile (a saga still
    /// finishing, an expiry), everything is read again, so the SKUs and orders compared
    /// are one consistent state.
    pub async fn read_final(
        &self,
        skus: &[String],
        answered_orders: &BTreeSet<String>,
        full_log: bool,
    ) -> anyhow::Result<(Observed, Vec<String>)> {
        let mut notes = Vec::new();
        let patience = Duration::from_secs(30);
        let mut tries = 0;
        loop {
            tries += 1;
            let before = self.read_skus(skus, patience).await?;
            let log = match self.read_log(skus, answered_orders, full_log).await {
                Ok(l) => Some(l),
                Err(e) => {
                    notes.push(format!("event log not checked: {e:#}"));
                    None
                }
            };
            let mut ids: BTreeSet<String> = answered_orders.clone();
            if let Some(l) = &log {
                ids.extend(l.orders.keys().cloned());
            }
            let mut orders = BTreeMap::new();
            let mut lost = BTreeSet::new();
            let mut reads = futures::stream::iter(ids.into_iter().map(|id| async move {
                let res = self.get(&format!("/v1/orders/{id}"), patience).await;
                (id, res)
            }))
            .buffer_unordered(16);
            while let Some((id, res)) = reads.next().await {
                match res? {
                    (200, v) => {
                        let o = OrderFinal::from_json(&v)
                            .map_err(|e| anyhow::anyhow!("order {id} does not read: {e}"))?;
                        orders.insert(id, o);
                    }
                    (404, _) => {
                        lost.insert(id);
                    }
                    (status, v) => anyhow::bail!("GET /v1/orders/{id} answered {status} {v}"),
                }
            }
            let after = self.read_skus(skus, patience).await?;
            let stable = before == after;
            if stable || tries >= 5 {
                if !stable {
                    notes.push("the SKUs kept changing while the final state was read".into());
                }
                let counters = after.into_iter().map(|(k, (f, _version))| (k, f)).collect();
                return Ok((
                    Observed {
                        skus: counters,
                        orders,
                        lost,
                        log,
                    },
                    notes,
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn read_skus(
        &self,
        skus: &[String],
        patience: Duration,
    ) -> anyhow::Result<BTreeMap<String, (SkuFinal, Option<i64>)>> {
        let mut out = BTreeMap::new();
        for sku in skus {
            let (status, v) = self.get(&format!("/v1/skus/{sku}"), patience).await?;
            if status != 200 {
                anyhow::bail!("GET /v1/skus/{sku} answered {status} {v}");
            }
            let n = |k: &str| {
                v.get(k)
                    .and_then(Value::as_i64)
                    .ok_or_else(|| anyhow::anyhow!("sku {sku} without `{k}`: {v}"))
            };
            let f = SkuFinal {
                available: n("available")?,
                reserved: n("reserved")?,
                sold: n("sold")?,
            };
            // The version (when the server reports one) tells apart two reads with equal
            // counters around a change that was undone.
            let version = v.get("version").and_then(Value::as_i64);
            out.insert(sku.clone(), (f, version));
        }
        Ok(out)
    }

    /// Pages `GET /v1/events` (optionally one stream) from the start to the end, handing
    /// each event to `each` (so a long log is never held whole).
    async fn read_events(
        &self,
        stream: Option<&str>,
        mut each: impl FnMut(Value),
    ) -> anyhow::Result<()> {
        let mut after = 0u64;
        let started = Instant::now();
        loop {
            if started.elapsed() > Duration::from_secs(120) {
                anyhow::bail!("reading the log took over 2 minutes");
            }
            let path = match stream {
                Some(s) => format!("/v1/events?after={after}&limit=1000&stream={s}"),
                None => format!("/v1/events?after={after}&limit=1000"),
            };
            let (status, mut v) = self.get(&path, Duration::from_secs(30)).await?;
            if status != 200 {
                anyhow::bail!("GET {path} answered {status} {v}");
            }
            let next = v
                .get("next")
                .and_then(Value::as_u64)
                .ok_or_else(|| anyhow::anyhow!("GET {path}: no next"))?;
            let Some(Value::Array(events)) = v.get_mut("events").map(Value::take) else {
                anyhow::bail!("GET {path}: no events list");
            };
            if events.is_empty() || next <= after {
                return Ok(());
            }
            events.into_iter().for_each(&mut each);
            after = next;
        }
    }

    async fn read_log(
        &self,
        skus: &[String],
        answered_orders: &BTreeSet<String>,
        full_log: bool,
    ) -> anyhow::Result<LogView> {
        let ours: BTreeSet<&str> = skus.iter().map(String::as_str).collect();
        let mut view = LogView::default();
        // Every order stream seen, with whether it names one of the run's SKUs.
        let mut order_events: BTreeMap<String, (bool, Vec<LogEvent>)> = BTreeMap::new();
        let note_sku_event = |view: &mut LogView, e: &Value| {
            if e["type"] == "StockAdjusted" && e["payload"]["reason"] == "torture" {
                if let Some(sku) = e["stream"].as_str().and_then(|s| s.strip_prefix("sku/")) {
                    *view.adjustments.entry(sku.to_owned()).or_default() += 1;
                }
            }
        };
        let names_ours = |e: &Value| {
            e["type"] == "OrderCreated"
                && e["payload"]["lines"].as_array().is_some_and(|ls| {
                    ls.iter()
                        .any(|l| l["sku"].as_str().is_some_and(|s| ours.contains(s)))
                })
        };
        if full_log {
            self.read_events(None, |e| {
                let stream = e["stream"].as_str().unwrap_or_default();
                if let Some(id) = stream.strip_prefix("order/") {
                    let entry = order_events.entry(id.to_owned()).or_default();
                    entry.0 |= names_ours(&e);
                    entry.1.push(log_event(&e));
                } else if stream
                    .strip_prefix("sku/")
                    .is_some_and(|s| ours.contains(s))
                {
                    note_sku_event(&mut view, &e);
                }
            })
            .await?;
        } else {
            let mut ids = answered_orders.clone();
            for sku in skus {
                self.read_events(Some(&format!("sku/{sku}")), |e| {
                    if let Some(id) = e["payload"]["order_id"].as_str() {
                        ids.insert(id.to_owned());
                    }
                    note_sku_event(&mut view, &e);
                })
                .await?;
            }
            let mut reads = futures::stream::iter(ids.into_iter().map(|id| async move {
                let mut evs = (false, Vec::new());
                let res = self
                    .read_events(Some(&format!("order/{id}")), |e| {
                        evs.0 |= names_ours(&e);
                        evs.1.push(log_event(&e));
                    })
                    .await;
                (id, res.map(|()| evs))
            }))
            .buffer_unordered(16);
            while let Some((id, res)) = reads.next().await {
                order_events.insert(id, res?);
            }
        }
        view.orders = order_events
            .into_iter()
            .filter(|(_, (ours, _))| *ours)
            .map(|(id, (_, evs))| (id, evs))
            .collect();
        Ok(view)
    }
}

fn log_event(e: &Value) -> LogEvent {
    LogEvent {
        kind: e["type"].as_str().unwrap_or_default().to_owned(),
        payment_ref: e["payload"]["payment_ref"].as_str().map(str::to_owned),
    }
}
