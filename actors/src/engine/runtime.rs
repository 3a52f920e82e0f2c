//! The actix system: one thread running the system, one arbiter (event-loop thread) per
//! worker; stopped on shutdown.

use super::*;

/// The actix system thread; stopped on shutdown.
pub(super) struct Runtime {
    pub(super) system: System,
    pub(super) thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.system.stop();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

pub(super) fn start_runtime(workers: usize) -> EngineResult<(Runtime, Vec<ArbiterHandle>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("ordo-engine".into())
        .spawn(move || {
            let sys = System::new();
            let arbiters: Vec<Arbiter> = (0..workers.max(1)).map(|_| Arbiter::new()).collect();
            let handles = arbiters.iter().map(|a| a.handle()).collect::<Vec<_>>();
            let _ = tx.send((System::current(), handles));
            if let Err(e) = sys.run() {
                tracing::error!(error = %e, "actor system stopped with an error");
            }
            for a in arbiters {
                a.stop();
                let _ = a.join();
            }
        })
        .map_err(|e| EngineError::Unavailable(format!("cannot start actor threads: {e}")))?;
    let (system, handles) = rx
        .recv()
        .map_err(|_| EngineError::Unavailable("actor system failed to start".into()))?;
    Ok((
        Runtime {
            system,
            thread: Mutex::new(Some(thread)),
        },
        handles,
    ))
}
