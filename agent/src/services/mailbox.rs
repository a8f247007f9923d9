//! How other threads of PID 1 (the node API's, etcd's watcher) ask the
//! supervision loop for something: it owns the supervisor, so they leave
//! a note here and the loop takes it on its next tick (at most 100 ms).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub struct Mailbox {
    releases: Mutex<Vec<(String, Vec<String>)>>,
    changed: AtomicBool,
}

impl Mailbox {
    /// Asks for `Supervisor::release(name, args)`.
    pub fn release(&self, name: &str, args: Vec<String>) {
        let mut r = self
            .releases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        r.push((name.to_string(), args));
    }

    /// Says that something in the report changed (a new report is due).
    pub fn changed(&self) {
        self.changed.store(true, Ordering::SeqCst);
    }

    pub fn take_releases(&self) -> Vec<(String, Vec<String>)> {
        let mut r = self
            .releases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::take(&mut *r)
    }

    pub fn take_changed(&self) -> bool {
        self.changed.swap(false, Ordering::SeqCst)
    }
}
