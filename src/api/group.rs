//! Group commit: concurrent single-transfer writes on the leader become one
//! Raft entry, so one fsync and one replication round carry many transfers.
//!
//! Writes queue in a channel. The batcher takes the first, waits for one of
//! `in_flight_max` group slots (while it waits, more writes queue up), then
//! takes everything queued up to `group_max` and proposes it as one
//! [`Command::Group`]. There is no artificial delay: a lone write is proposed
//! at once; under load, groups form from what arrives while earlier groups
//! commit. Each item keeps its caller's identity and is checked on its own,
//! exactly as if it had been proposed alone.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::ledger::{
    Actor, Command, Entry, Grouped, NewTransfer, Outcome, Rejection, Role, Transfer,
};
use crate::raft::Raft;

/// Why a grouped write has no result.
#[derive(Clone, Copy, Debug)]
pub enum GroupError {
    /// This node is not the leader; nothing was proposed by it.
    NotLeader,
    /// The group may have been proposed; its fate is unknown.
    MaybeProposed,
}

/// A grouped write's result and the log index of its entry.
pub type GroupReply = Result<(Result<Transfer, Rejection>, u64), GroupError>;

struct Queued {
    item: Grouped,
    reply: oneshot::Sender<GroupReply>,
}

/// The handle writes queue on.
pub struct GroupCommit {
    tx: mpsc::Sender<Queued>,
}

impl GroupCommit {
    /// Starts the batcher. `node` stamps each group's entry (its actor only
    /// marks who proposed the group; items carry their callers).
    pub fn start(
        raft: Raft,
        node: Actor,
        group_max: usize,
        in_flight_max: usize,
        queue_max: usize,
    ) -> Self {
        let (tx, rx) = mpsc::channel(queue_max);
        tokio::spawn(batcher(
            raft,
            node,
            rx,
            group_max,
            Arc::new(Semaphore::new(in_flight_max)),
        ));
        Self { tx }
    }

    /// Queues one caller's transfer and waits for its result.
    pub async fn write(&self, actor: Actor, transfer: NewTransfer) -> GroupReply {
        let (reply, rx) = oneshot::channel();
        let item = Grouped { actor, transfer };
        if self.tx.send(Queued { item, reply }).await.is_err() {
            return Err(GroupError::NotLeader);
        }
        rx.await.unwrap_or(Err(GroupError::MaybeProposed))
    }
}

async fn batcher(
    raft: Raft,
    node: Actor,
    mut rx: mpsc::Receiver<Queued>,
    group_max: usize,
    slots: Arc<Semaphore>,
) {
    while let Some(first) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut group = vec![first];
        while group.len() < group_max {
            match rx.try_recv() {
                Ok(q) => group.push(q),
                Err(_) => break,
            }
        }
        let (raft, node) = (raft.clone(), node.clone());
        tokio::spawn(async move {
            commit(&raft, node, group).await;
            drop(slot);
        });
    }
}

async fn commit(raft: &Raft, node: Actor, group: Vec<Queued>) {
    let (items, replies): (Vec<Grouped>, Vec<_>) =
        group.into_iter().map(|q| (q.item, q.reply)).unzip();
    let timestamp_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    debug_assert_eq!(node.role, Role::Node);
    let entry = Entry {
        actor: node,
        timestamp_ms,
        command: Command::Group(items),
    };
    match raft.client_write(entry.into()).await {
        Ok(resp) => {
            let index = resp.log_id.index;
            let Some(Outcome::Transfers(results)) = resp.data else {
                unreachable!("a group entry applies to one result per item")
            };
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok((result, index)));
            }
        }
        Err(e) => {
            // As for a single write: ForwardToLeader can follow an append
            // that may still commit, so only "maybe" is honest.
            if !matches!(e, RaftError::APIError(ClientWriteError::ForwardToLeader(_))) {
                tracing::warn!(error = %e, "group write failed");
            }
            for reply in replies {
                let _ = reply.send(Err(GroupError::MaybeProposed));
            }
        }
    }
}
