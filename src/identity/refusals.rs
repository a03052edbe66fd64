//! Refused connections, logged without letting a flood of them flood the
//! log: each listener writes at most [`LINES_PER_SECOND_MAX`] lines a
//! second about refused certificates and identities, and then one line that
//! says how many more it did not write.

use std::fmt::Display;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines about refusals one listener writes in a second.
pub const LINES_PER_SECOND_MAX: u32 = 5;
const WINDOW: Duration = Duration::from_secs(1);

/// The refusal log of one listener.
pub struct RefusalLog {
    listener: &'static str,
    window: Mutex<Window>,
}

struct Window {
    started: Instant,
    logged: u32,
    suppressed: u64,
}

impl std::fmt::Debug for RefusalLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RefusalLog({})", self.listener)
    }
}

/// What [`RefusalLog::refused`] did with one refusal.
#[derive(Debug, PartialEq, Eq)]
pub enum Logged {
    /// Written, after a line for `suppressed` refusals of the window before.
    Written { suppressed: u64 },
    /// Counted, not written: the window's lines are spent.
    Suppressed,
}

impl RefusalLog {
    pub fn new(listener: &'static str) -> Self {
        Self {
            listener,
            window: Mutex::new(Window {
                started: Instant::now(),
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Logs (at warn) that a connection was refused and why, unless this
    /// second's lines are spent.
    pub fn refused(&self, why: &dyn Display) -> Logged {
        self.refused_at(Instant::now(), why)
    }

    fn refused_at(&self, now: Instant, why: &dyn Display) -> Logged {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let mut suppressed = 0;
        if now.duration_since(w.started) >= WINDOW {
            suppressed = std::mem::take(&mut w.suppressed);
            if suppressed > 0 {
                tracing::warn!(
                    listener = self.listener,
                    suppressed,
                    "{suppressed} more refused connections were not logged"
                );
            }
            w.started = now;
            w.logged = 0;
        }
        if w.logged >= LINES_PER_SECOND_MAX {
            w.suppressed += 1;
            return Logged::Suppressed;
        }
        w.logged += 1;
        tracing::warn!(listener = self.listener, "refused a connection: {why}");
        Logged::Written { suppressed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_refusals_writes_a_few_lines_a_second_and_counts_the_rest() {
        let log = RefusalLog::new("API");
        let t0 = Instant::now();
        let mut written = 0;
        for i in 0..1_000u32 {
            let at = t0 + Duration::from_micros(u64::from(i));
            if log.refused_at(at, &"unknown CA") != Logged::Suppressed {
                written += 1;
            }
        }
        assert_eq!(written, LINES_PER_SECOND_MAX);
        // The next second's first line says how many were not written.
        let next = log.refused_at(t0 + WINDOW + Duration::from_millis(1), &"unknown CA");
        let suppressed = u64::from(1_000 - LINES_PER_SECOND_MAX);
        assert_eq!(next, Logged::Written { suppressed });
        let after = log.refused_at(t0 + WINDOW + Duration::from_millis(2), &"x");
        assert_eq!(after, Logged::Written { suppressed: 0 });
    }
}
