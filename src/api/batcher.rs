//! Coalescing concurrent requests into batches: the shape that both group
//! commit on the leader and bundling of forwarded writes on a follower
//! take.
//!
//! Requests queue in a channel. The batcher takes the first, waits for one
//! of `in_flight_max` slots (while it waits, more requests queue up), then
//! takes what is queued until the batch weighs `batch_max` and hands the
//! batch to its job. There is no artificial delay: a lone request goes at
//! once; under load, batches form from what arrives while earlier ones run.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};

/// One queued request and where its reply goes.
pub struct Queued<T, R> {
    pub request: T,
    pub reply: oneshot::Sender<R>,
}

/// The handle requests queue on.
pub struct Batcher<T, R> {
    tx: mpsc::Sender<Queued<T, R>>,
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Starts a batcher whose batches weigh at most `batch_max` (by
    /// `weight`; a heavier single request goes alone), with at most
    /// `in_flight_max` batches running and `queue_max` requests waiting.
    pub fn start<J, F>(
        batch_max: usize,
        in_flight_max: usize,
        queue_max: usize,
        weight: fn(&T) -> usize,
        job: J,
    ) -> Self
    where
        J: Fn(Vec<Queued<T, R>>) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(queue_max);
        let slots = Arc::new(Semaphore::new(in_flight_max));
        tokio::spawn(run(rx, slots, batch_max, weight, job));
        Self { tx }
    }

    /// Queues `request` and waits for its reply; `None` if the batcher
    /// stopped or dropped the request without one.
    pub async fn submit(&self, request: T) -> Option<R> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Queued { request, reply }).await.ok()?;
        rx.await.ok()
    }
}

async fn run<T, R, J, F>(
    mut rx: mpsc::Receiver<Queued<T, R>>,
    slots: Arc<Semaphore>,
    batch_max: usize,
    weight: fn(&T) -> usize,
    job: J,
) where
    T: Send + 'static,
    R: Send + 'static,
    J: Fn(Vec<Queued<T, R>>) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let mut next = None;
    loop {
        let first = match next.take() {
            Some(q) => q,
            None => match rx.recv().await {
                Some(q) => q,
                None => return,
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut weighs = weight(&first.request);
        let mut batch = vec![first];
        while let Ok(q) = rx.try_recv() {
            if weighs + weight(&q.request) > batch_max {
                next = Some(q);
                break;
            }
            weighs += weight(&q.request);
            batch.push(q);
        }
        let running = job(batch);
        tokio::spawn(async move {
            running.await;
            drop(slot);
        });
    }
}
