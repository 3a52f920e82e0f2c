//! Stopping background tasks in order: one signal, and a count of the tasks that have
//! not let go yet — tokio-util's `CancellationToken` + `TaskTracker` pattern, after
//! mini-redis's `shutdown.rs`, written on `tokio::sync::watch` (the tracker would need a
//! tokio-util feature this build does not otherwise compile).
//!
//! A [`Shutdown`] is one stage of the server's shutdown. Tasks are wrapped in
//! [`Shutdown::track`] when spawned, wait on [`Shutdown::triggered`] in their
//! `select!`s and check [`Shutdown::is_triggered`] between steps; the owner calls
//! [`Shutdown::drain`], which triggers the stage and waits until every tracked task has
//! ended. `ordo serve` drains its stages one after the other (see `http::Running`).
//!
//! Why `watch` and not a `Notify` (what the server had): the value stays set, so a task
//! that looks only after the trigger still sees it, where `Notify::notify_waiters`
//! wakes only the tasks waiting at that instant; and `send_modify` needs no receiver,
//! so counting costs nothing while nobody waits.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// One shutdown stage: its signal and its tracked tasks. Clones share both.
#[derive(Clone, Debug)]
pub struct Shutdown {
    /// `false` until the stage is triggered; never set back.
    signal: Arc<watch::Sender<bool>>,
    /// How many tracked tasks are still running.
    running: Arc<watch::Sender<usize>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown {
            signal: Arc::new(watch::Sender::new(false)),
            running: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Tells every task of the stage to stop. Idempotent.
    pub fn trigger(&self) {
        self.signal.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.signal.borrow()
    }

    /// Resolves once the stage is triggered (at once if it already is).
    pub async fn triggered(&self) {
        let mut rx = self.signal.subscribe();
        // An error would mean the sender is gone, but `self` holds it.
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// `task`, counted as running from now until it ends or is dropped.
    pub fn track<F: Future>(&self, task: F) -> impl Future<Output = F::Output> {
        self.running.send_modify(|n| *n += 1);
        let guard = Running(self.running.clone());
        async move {
            let _running = guard;
            task.await
        }
    }

    /// Tracked tasks that have not ended yet.
    pub fn running(&self) -> usize {
        *self.running.borrow()
    }

    /// Triggers the stage and waits until every tracked task has ended, at most
    /// `limit`. `false` if some were still running then.
    pub async fn drain(&self, limit: Duration) -> bool {
        self.trigger();
        let mut rx = self.running.subscribe();
        tokio::time::timeout(limit, async move {
            let _ = rx.wait_for(|n| *n == 0).await;
        })
        .await
        .is_ok()
    }
}

/// Held by a tracked task; counts it out when dropped (ended, panicked or cancelled).
struct Running(Arc<watch::Sender<usize>>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_drain_waits_for_tasks_that_stop_when_triggered() {
        let stage = Shutdown::new();
        let s = stage.clone();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d = done.clone();
        tokio::spawn(stage.track(async move {
            s.triggered().await;
            // Still working for a moment after the signal: the drain must wait.
            tokio::time::sleep(Duration::from_millis(50)).await;
            d.store(true, std::sync::atomic::Ordering::SeqCst);
        }));
        assert_eq!(stage.running(), 1);
        assert!(stage.drain(Duration::from_secs(10)).await);
        assert!(done.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(stage.running(), 0);
    }

    #[tokio::test]
    async fn a_drain_gives_up_after_its_limit_on_a_task_that_ignores_the_signal() {
        let stage = Shutdown::new();
        let stubborn = tokio::spawn(stage.track(std::future::pending::<()>()));
        assert!(!stage.drain(Duration::from_millis(20)).await);
        assert_eq!(stage.running(), 1);
        stubborn.abort();
        let _ = stubborn.await;
        assert_eq!(stage.running(), 0, "a cancelled task is counted out");
    }

    #[tokio::test]
    async fn a_task_that_looks_after_the_trigger_still_sees_it() {
        let stage = Shutdown::new();
        stage.trigger();
        assert!(stage.is_triggered());
        tokio::time::timeout(Duration::from_secs(1), stage.triggered())
            .await
            .expect("triggered resolves at once");
        assert!(
            stage.drain(Duration::from_millis(1)).await,
            "nothing to wait for"
        );
    }
}
