//! A work queue of app names: deduplicated, delayed re-adds, and never two
//! workers on the same app at once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

#[derive(Default)]
struct State {
    ready: VecDeque<String>,
    queued: HashSet<String>,
    active: HashSet<String>,
    /// Re-added while active: run again once the current run ends.
    dirty: HashSet<String>,
    delayed: HashMap<String, Instant>,
}

#[derive(Clone, Default)]
pub struct Queue {
    state: Arc<Mutex<State>>,
    notify: Arc<Notify>,
}

impl Queue {
    pub fn add(&self, key: &str) {
        let Ok(mut s) = self.state.lock() else { return };
        s.delayed.remove(key);
        if s.active.contains(key) {
            s.dirty.insert(key.to_string());
            return;
        }
        if s.queued.insert(key.to_string()) {
            s.ready.push_back(key.to_string());
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Adds `key` after `delay`, unless it is added sooner.
    pub fn add_after(&self, key: &str, delay: Duration) {
        let Ok(mut s) = self.state.lock() else { return };
        let at = Instant::now() + delay;
        let e = s.delayed.entry(key.to_string()).or_insert(at);
        if at < *e {
            *e = at;
        }
    }

    /// Waits for the next key; the caller must call `done` with it.
    pub async fn next(&self) -> String {
        loop {
            let wait = {
                let Ok(mut s) = self.state.lock() else {
                    return String::new();
                };
                let now = Instant::now();
                let due: Vec<String> = s
                    .delayed
                    .iter()
                    .filter(|(_, t)| **t <= now)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in due {
                    s.delayed.remove(&k);
                    if s.active.contains(&k) {
                        s.dirty.insert(k);
                    } else if s.queued.insert(k.clone()) {
                        s.ready.push_back(k);
                    }
                }
                if let Some(k) = s.ready.pop_front() {
                    s.queued.remove(&k);
                    s.active.insert(k.clone());
                    return k;
                }
                s.delayed
                    .values()
                    .min()
                    .map(|t| t.saturating_duration_since(now))
            };
            let sleep = wait
                .unwrap_or(Duration::from_secs(3600))
                .min(Duration::from_secs(1));
            tokio::select! {
                _ = self.notify.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    pub fn done(&self, key: &str) {
        let Ok(mut s) = self.state.lock() else { return };
        s.active.remove(key);
        if s.dirty.remove(key) && s.queued.insert(key.to_string()) {
            s.ready.push_back(key.to_string());
            drop(s);
            self.notify.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dedups_and_serializes() {
        let q = Queue::default();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.next().await, "a");
        q.add("a"); // while active: runs again after done
        assert_eq!(q.next().await, "b");
        q.done("b");
        q.done("a");
        assert_eq!(q.next().await, "a");
        q.done("a");
        q.add_after("c", Duration::from_millis(50));
        let t = Instant::now();
        assert_eq!(q.next().await, "c");
        assert!(t.elapsed() >= Duration::from_millis(40));
    }
}
