//! The SKU side of the embedded API: catalogue, stock adjustments, reads.

use super::*;

impl Engine {
    /// Creates a SKU (with its initial stock) or updates its catalogue data. Returns the
    /// SKU and whether it was created.
    pub async fn upsert_sku(
        &self,
        req: UpsertSku,
        trace: Option<Arc<str>>,
    ) -> EngineResult<(SkuView, bool)> {
        self.upsert_sku_with(req, trace, None).await
    }

    /// [`Engine::upsert_sku`], its answer kept under `idem` in the same append.
    pub async fn upsert_sku_with(
        &self,
        req: UpsertSku,
        trace: Option<Arc<str>>,
        idem: Option<Idempotency>,
    ) -> EngineResult<(SkuView, bool)> {
        let inner = &self.inner;
        if let Err(e) = inner
            .fail_if_stopped()
            .and_then(|()| validate_sku(&req.sku).map_err(EngineError::from))
        {
            return inner.refuse(idem.as_ref(), Kind::Sku, e).await;
        }
        let sku = req.sku.clone();
        let cmd = SkuCommand::Upsert {
            sku: req.sku,
            name: req.name,
            price_minor: req.price_minor,
            currency: req.currency,
            per_customer_limit: req.per_customer_limit,
            initial_stock: req.stock,
        };
        let (view, created) = inner.sku_command(&sku, cmd, trace, true, idem).await?;
        inner.sku_index.write().insert(sku);
        Ok((view, created))
    }

    /// Adds (`delta > 0`) or removes stock.
    pub async fn adjust_stock(
        &self,
        sku: &str,
        delta: i64,
        reason: &str,
        trace: Option<Arc<str>>,
    ) -> EngineResult<SkuView> {
        self.adjust_stock_with(sku, delta, reason, trace, None)
            .await
    }

    /// [`Engine::adjust_stock`], its answer kept under `idem` in the same append as its
    /// `StockAdjusted`.
    pub async fn adjust_stock_with(
        &self,
        sku: &str,
        delta: i64,
        reason: &str,
        trace: Option<Arc<str>>,
        idem: Option<Idempotency>,
    ) -> EngineResult<SkuView> {
        let inner = &self.inner;
        if let Err(e) = inner.fail_if_stopped().and_then(|()| self.known_sku(sku)) {
            return inner.refuse(idem.as_ref(), Kind::Sku, e).await;
        }
        let cmd = SkuCommand::AdjustStock {
            delta,
            reason: reason.to_owned(),
        };
        let (view, _) = inner.sku_command(sku, cmd, trace, true, idem).await?;
        Ok(view)
    }

    pub(super) fn known_sku(&self, sku: &str) -> EngineResult<()> {
        if self.inner.sku_index.read().contains(sku) {
            Ok(())
        } else {
            Err(EngineError::SkuNotFound {
                sku: sku.to_owned(),
            })
        }
    }

    /// The SKU's view as its actor last published it (reads never queue behind
    /// reservations); a passivated SKU is activated first.
    pub async fn get_sku(&self, sku: &str) -> EngineResult<SkuView> {
        self.known_sku(sku)?;
        if let Some(h) = self.inner.skus.get(sku) {
            if h.addr.connected() {
                return Ok(h.view.read().clone());
            }
        }
        self.inner
            .ask_sku(sku, false, Admission::Wait, |reply| SkuReq::Get { reply })
            .await
    }

    /// SKUs in code order after `after`, at most `limit`.
    pub async fn list_skus(&self, after: Option<&str>, limit: usize) -> EngineResult<Vec<SkuView>> {
        let codes: Vec<String> = {
            let index = self.inner.sku_index.read();
            let iter: Box<dyn Iterator<Item = &String>> =
                match after {
                    Some(a) => Box::new(index.range::<str, _>((
                        std::ops::Bound::Excluded(a),
                        std::ops::Bound::Unbounded,
                    ))),
                    None => Box::new(index.iter()),
                };
            iter.take(limit).cloned().collect()
        };
        let mut out = Vec::with_capacity(codes.len());
        for c in codes {
            // A passivated SKU is read from the store, not woken up for a listing.
            let live = self.inner.skus.get(&c).is_some_and(|h| h.addr.connected());
            out.push(if live {
                self.get_sku(&c).await?
            } else {
                recovery::load_sku(&self.inner.store, &c)?.view()
            });
        }
        Ok(out)
    }
}
