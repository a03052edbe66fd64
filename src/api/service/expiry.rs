//! Expiry of pending transfers when nothing else advances the ledger clock.

use std::sync::Arc;
use std::time::Duration;

use super::write::{fresh_blinding, now_ms};
use super::Service;
use crate::ledger::{Actor, Command, Entry, Evidence, Role};

impl Service {
    /// While this node leads, proposes a `Tick` whenever a pending transfer
    /// is due to expire and nothing else has advanced the ledger clock past
    /// it, so expiry happens (at one log position on every replica) even
    /// when idle.
    pub fn spawn_expiry_ticker(self: Arc<Self>) {
        let every = Duration::from_millis(self.limits.expiry_check_ms);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            loop {
                interval.tick().await;
                self.tick_if_due().await;
            }
        });
    }

    async fn tick_if_due(&self) {
        if self.raft.metrics().borrow().current_leader != Some(self.id) {
            return;
        }
        if self.watch().clock_off().is_some() {
            return;
        }
        let now_ms = now_ms();
        let Some(due) = self.state.try_read().map(|s| s.ledger.next_expiry_ms()) else {
            return;
        };
        if due.is_none_or(|d| d > now_ms) {
            return;
        }
        let entry = Entry {
            actor: Actor {
                org: self.org().clone(),
                role: Role::Node,
            },
            timestamp_ms: now_ms,
            command: Command::Tick,
            evidence: Evidence::Leader,
            blinding: fresh_blinding(),
        };
        let proposed = self.raft.client_write(entry.into());
        if let Err(e) = tokio::time::timeout(self.timeout(), proposed).await {
            tracing::warn!("expiry tick not confirmed in time: {e}");
        }
    }
}
