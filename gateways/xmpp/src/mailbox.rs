//! A connection's mailbox: what the gateway (deliveries) and other connections (stream
//! conflicts, resumption) ask of a connection task, in order.
//!
//! One small shared allocation per connection: a queue that holds memory only while it
//! holds commands, the bytes queued for the client, whether the client reads too slowly,
//! and the waker of the task. (A tokio channel preallocates a block of 32 slots and pads
//! its halves to cache lines: more than a kilobyte for every idle connection.) Waiting
//! for mail takes no room in the task's future either: [`Inbox::poll_recv`] leaves its
//! waker in the mailbox instead of a waiter node in the future.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use parking_lot::Mutex;

/// What a connection task takes from its mailbox.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Mail<T> {
    /// The next command.
    Command(T),
    /// The connection must end because its client does not read fast enough.
    Slow,
}

/// A command that could not be queued, given back.
#[derive(Debug)]
pub(crate) enum SendError<T> {
    /// The mailbox holds as many commands as it may.
    Full(T),
    /// The connection task is gone.
    Closed(T),
}

#[derive(Debug)]
struct Queue<T> {
    items: VecDeque<T>,
    closed: bool,
}

/// The sending side, shared by everyone who may ask something of the connection.
#[derive(Debug)]
pub(crate) struct Mailbox<T> {
    queue: Mutex<Queue<T>>,
    /// Wakes the task when a command arrives or the client is found too slow.
    ready: AtomicWaker,
    /// The connection must end because its client cannot keep up.
    slow: AtomicBool,
    /// Bytes of stanzas queued for the client and not taken by the task yet.
    pub(crate) queued_bytes: AtomicUsize,
    capacity: usize,
}

/// The receiving side, held by the connection task. Dropping it closes the mailbox:
/// later sends fail, and what was still queued is dropped.
#[derive(Debug)]
pub(crate) struct Inbox<T> {
    mailbox: Arc<Mailbox<T>>,
}

/// A mailbox for at most `capacity` commands sent with [`Mailbox::try_send`].
pub(crate) fn mailbox<T>(capacity: usize) -> (Arc<Mailbox<T>>, Inbox<T>) {
    let mailbox = Arc::new(Mailbox {
        queue: Mutex::new(Queue {
            items: VecDeque::new(),
            closed: false,
        }),
        ready: AtomicWaker::new(),
        slow: AtomicBool::new(false),
        queued_bytes: AtomicUsize::new(0),
        capacity: capacity.max(1),
    });
    let inbox = Inbox {
        mailbox: mailbox.clone(),
    };
    (mailbox, inbox)
}

impl<T> Mailbox<T> {
    /// Queues `command` unless the mailbox is full or closed.
    pub(crate) fn try_send(&self, command: T) -> Result<(), SendError<T>> {
        self.push(command, true)
    }

    /// Queues `command` whatever the number of commands waiting (for the rare control
    /// commands: a handover request must not be lost behind deliveries).
    pub(crate) fn send(&self, command: T) -> Result<(), SendError<T>> {
        self.push(command, false)
    }

    fn push(&self, command: T, bounded: bool) -> Result<(), SendError<T>> {
        {
            let mut queue = self.queue.lock();
            if queue.closed {
                return Err(SendError::Closed(command));
            }
            if bounded && queue.items.len() >= self.capacity {
                return Err(SendError::Full(command));
            }
            queue.items.push_back(command);
        }
        self.ready.wake();
        Ok(())
    }

    /// Tells the task its client does not read fast enough: it takes [`Mail::Slow`]
    /// before any command still waiting.
    pub(crate) fn mark_slow(&self) {
        self.slow.store(true, Ordering::Release);
        self.ready.wake();
    }

    /// Takes the count of `bytes` off what is queued for the client.
    pub(crate) fn taken(&self, bytes: usize) {
        self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl<T> Inbox<T> {
    /// The next command, without waiting.
    pub(crate) fn try_recv(&self) -> Option<T> {
        let mut queue = self.mailbox.queue.lock();
        let command = queue.items.pop_front();
        if queue.items.is_empty() && queue.items.capacity() > 0 {
            // An idle connection keeps no queue memory.
            queue.items = VecDeque::new();
        }
        command
    }

    /// The next mail, or `Pending` with the task's waker kept to be woken when mail
    /// arrives. A command is taken only when this returns it.
    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Mail<T>> {
        // The waker first: mail that arrives after the checks below wakes it.
        self.mailbox.ready.register(cx.waker());
        if self.mailbox.slow.swap(false, Ordering::AcqRel) {
            return Poll::Ready(Mail::Slow);
        }
        match self.try_recv() {
            Some(command) => Poll::Ready(Mail::Command(command)),
            None => Poll::Pending,
        }
    }

    /// The next mail, waiting for one. Cancel-safe: a command is taken only when this
    /// returns it.
    pub(crate) async fn recv(&self) -> Mail<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }
}

impl<T> Drop for Inbox<T> {
    fn drop(&mut self) {
        let items = {
            let mut queue = self.mailbox.queue.lock();
            queue.closed = true;
            std::mem::take(&mut queue.items)
        };
        // Dropped outside the lock (a command may hold a reply channel).
        drop(items);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn commands_arrive_in_order_and_the_bound_holds() {
        let (mailbox, inbox) = mailbox::<u32>(2);
        mailbox.try_send(1).unwrap();
        mailbox.try_send(2).unwrap();
        assert!(matches!(mailbox.try_send(3), Err(SendError::Full(3))));
        // Control commands pass the bound.
        mailbox.send(4).unwrap();
        assert_eq!(inbox.recv().await, Mail::Command(1));
        assert_eq!(inbox.try_recv(), Some(2));
        assert_eq!(inbox.recv().await, Mail::Command(4));
        assert_eq!(inbox.try_recv(), None);
        assert_eq!(
            mailbox.queue.lock().items.capacity(),
            0,
            "an empty queue holds no memory"
        );
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_and_a_cancelled_wait_loses_nothing() {
        let (mailbox, inbox) = mailbox::<u32>(8);
        let sender = mailbox.clone();
        let send_later = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            sender.try_send(7).unwrap();
        });
        assert_eq!(inbox.recv().await, Mail::Command(7));
        send_later.await.unwrap();
        // A wait cancelled before anything arrives takes nothing; what is sent afterwards
        // is received.
        let cancelled = tokio::time::timeout(Duration::from_millis(10), inbox.recv()).await;
        assert!(cancelled.is_err());
        mailbox.try_send(8).unwrap();
        assert_eq!(inbox.recv().await, Mail::Command(8));
    }

    #[tokio::test]
    async fn a_slow_client_is_reported_once_before_waiting_commands() {
        let (mailbox, inbox) = mailbox::<u32>(8);
        mailbox.try_send(1).unwrap();
        let waiting = tokio::spawn(async move {
            let first = inbox.recv().await;
            let second = inbox.recv().await;
            (first, second)
        });
        mailbox.mark_slow();
        let (first, second) = waiting.await.unwrap();
        // Either the command was taken before the mark, or the mark comes first; the
        // mark is reported once.
        assert!(
            matches!(
                (&first, &second),
                (Mail::Slow, Mail::Command(1)) | (Mail::Command(1), Mail::Slow)
            ),
            "{first:?} {second:?}"
        );
    }

    #[test]
    fn a_dropped_inbox_closes_the_mailbox_and_drops_what_waited() {
        let (mailbox, inbox) = mailbox::<Arc<()>>(8);
        let held = Arc::new(());
        mailbox.try_send(held.clone()).unwrap();
        drop(inbox);
        assert_eq!(
            Arc::strong_count(&held),
            1,
            "the queued command was dropped"
        );
        assert!(matches!(
            mailbox.try_send(held.clone()),
            Err(SendError::Closed(_))
        ));
        assert!(matches!(mailbox.send(held), Err(SendError::Closed(_))));
    }
}
