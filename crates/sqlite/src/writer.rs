//! The group-commit writer thread: its queue ([`WriterHandle`]), its loop ([`run_writer`])
//! and the close protocol ([`Command::Close`]).
//!
//! One thread owns the only write connection. Callers queue requests on a bounded channel;
//! the thread blocks for a first one, drains what else is queued (up to `max_batch`),
//! applies all of it in one transaction, commits (one fsync) and only then answers each
//! request. What a request is, how a batch is applied and how it is answered is the
//! backend's ([`BatchWriter`]); this module has the queue, the loop and the close.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::mpsc::error::SendTimeoutError;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};

/// A message to the writer thread.
#[derive(Debug)]
pub enum Command<Op> {
    /// A request to apply in the next batch.
    Write(Op),
    /// Commit what came before, refuse what comes after, close the connection, then signal
    /// on this sender.
    Close(oneshot::Sender<()>),
}

/// A backend's side of the writer thread, driven by [`run_writer`].
pub trait BatchWriter {
    /// A queued request, carrying its reply channel (if anyone waits for it).
    type Op;

    /// Applies `batch` (in queue order, never empty) in one transaction and answers every
    /// request of it: after the commit, or all of them with an error if the transaction
    /// failed and was rolled back.
    fn commit(&mut self, batch: Vec<Self::Op>);

    /// Answers the requests queued after a close (in queue order). None of them was
    /// applied.
    fn refuse(&mut self, refused: Vec<Self::Op>);

    /// Gives up the write connection, which [`run_writer`] then closes.
    fn into_connection(self) -> Connection;
}

/// The body of a writer thread: group commit with `writer` until a [`Command::Close`]
/// arrives (the requests before it are committed, in batches as usual) or every sender is
/// dropped and the queue is empty (the owner was dropped: everything queued is committed).
/// Then it refuses the requests queued after the close ([`BatchWriter::refuse`]), closes the
/// connection, and only then signals the close, so a `close` that returns has released the
/// database file.
///
/// Each batch holds the requests queued by the time the writer takes the first one, up to
/// `max_batch`.
pub fn run_writer<W: BatchWriter>(
    mut writer: W,
    rx: mpsc::Receiver<Command<W::Op>>,
    max_batch: usize,
) {
    let stopped = run_group_commit(rx, max_batch, |batch| writer.commit(batch));
    writer.refuse(stopped.refused);
    if let Err((_, e)) = writer.into_connection().close() {
        let thread = std::thread::current();
        warn!(
            thread = thread.name().unwrap_or("writer"),
            error = %e,
            "database close failed"
        );
    }
    if let Some(done) = stopped.close_done {
        let _ = done.send(());
    }
}

/// What [`run_group_commit`] hands back once it has stopped taking requests.
#[derive(Debug)]
struct Stopped<Op> {
    /// Requests queued after a close, in queue order. None of them was applied.
    refused: Vec<Op>,
    /// The close that stopped the loop; `None` if every sender was dropped. Signalled once
    /// the connection is closed.
    close_done: Option<oneshot::Sender<()>>,
}

/// The loop of [`run_writer`]: blocks for a first command, takes what else is queued
/// without waiting until the batch holds `max_batch` requests, hands the batch to `commit`,
/// and again, until a close or the last sender's drop. Then it closes the queue (further
/// sends fail) and returns what was left in it; any further `Close` is signalled at once
/// (the first close is doing the work).
fn run_group_commit<Op>(
    mut rx: mpsc::Receiver<Command<Op>>,
    max_batch: usize,
    mut commit: impl FnMut(Vec<Op>),
) -> Stopped<Op> {
    let mut close_done = None;
    let mut batch = Vec::new();
    // `None` once every sender is dropped and the queue is empty (the owner was dropped).
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Write(op) => batch.push(op),
                Command::Close(done) => {
                    close_done = Some(done);
                    break;
                }
            }
            if batch.len() < max_batch {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            commit(std::mem::take(&mut batch));
        }
        if close_done.is_some() {
            break;
        }
    }
    // Anything queued after a close is refused; nothing of it was written.
    rx.close();
    let mut refused = Vec::new();
    while let Ok(command) = rx.try_recv() {
        match command {
            Command::Write(op) => refused.push(op),
            Command::Close(done) => {
                let _ = done.send(());
            }
        }
    }
    Stopped {
        refused,
        close_done,
    }
}

/// Why a [`WriterHandle`] call did not get its request through. The backend maps these to
/// its own error type; the `Display` texts are written for its `Unavailable` errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WriterError {
    /// The handle was closed ([`WriterHandle::mark_closed`], [`WriterHandle::stop`]).
    #[error("closed")]
    Closed,
    /// No room in the queue within the wait.
    #[error("write queue full")]
    QueueFull,
    /// The writer thread ended although the handle was not closed (it panicked).
    #[error("writer stopped")]
    WriterStopped,
    /// The request was queued but not answered within the wait: whether it was committed
    /// is unknown.
    #[error("commit did not complete in time, outcome unknown")]
    ReplyTimedOut,
    /// [`WriterHandle::drain`]: no room for the close command within the wait.
    #[error("close: write queue stayed full")]
    CloseQueueFull,
    /// [`WriterHandle::drain`]: the writer did not finish within the wait.
    #[error("close: writer did not drain in time")]
    CloseTimedOut,
}

/// The callers' side of a writer thread: the bounded queue to it, the thread, and a closed
/// flag. Requests ([`Self::submit`]) carry their own reply channel, which the caller waits
/// on with [`Self::await_reply`].
///
/// Closing: [`Self::mark_closed`] refuses new requests, [`Self::drain`] then has the writer
/// commit what is queued and stop (the async way); [`Self::stop`] (also on drop) does both
/// by dropping the queue and joining the thread (blocking).
#[derive(Debug)]
pub struct WriterHandle<Op> {
    /// `None` once stopped: dropping the sender lets the writer drain and stop.
    tx: Option<mpsc::Sender<Command<Op>>>,
    /// Joined by `stop`.
    thread: Option<JoinHandle<()>>,
    closed: AtomicBool,
}

impl<Op: Send + 'static> WriterHandle<Op> {
    /// Creates a queue of `capacity` commands and starts the writer thread, named
    /// `thread_name`, running `run` on the queue's receiving end (normally calling
    /// [`run_writer`]).
    ///
    /// # Errors
    /// The thread could not be started.
    ///
    /// # Panics
    /// If `capacity` is 0 (as [`mpsc::channel`]).
    pub fn spawn(
        thread_name: &str,
        capacity: usize,
        run: impl FnOnce(mpsc::Receiver<Command<Op>>) + Send + 'static,
    ) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel(capacity);
        let thread = std::thread::Builder::new()
            .name(thread_name.to_owned())
            .spawn(move || run(rx))?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            closed: AtomicBool::new(false),
        })
    }
}

impl<Op> WriterHandle<Op> {
    /// Whether the handle was closed.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// `Err(`[`WriterError::Closed`]`)` once closed.
    ///
    /// # Errors
    /// [`WriterError::Closed`].
    pub fn check_open(&self) -> Result<(), WriterError> {
        if self.is_closed() {
            Err(WriterError::Closed)
        } else {
            Ok(())
        }
    }

    /// Queues `op`, waiting at most `wait` for room.
    ///
    /// # Errors
    /// [`WriterError::Closed`], [`WriterError::QueueFull`], [`WriterError::WriterStopped`].
    pub async fn submit(&self, op: Op, wait: Duration) -> Result<(), WriterError> {
        self.check_open()?;
        let tx = self.tx.as_ref().ok_or(WriterError::Closed)?;
        match tx.send_timeout(Command::Write(op), wait).await {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Timeout(_)) => Err(WriterError::QueueFull),
            Err(SendTimeoutError::Closed(_)) => Err(self.stopped_error()),
        }
    }

    /// Waits at most `wait` for the writer's answer on `reply`, the receiving end of the
    /// channel whose sender went with the request.
    ///
    /// # Errors
    /// [`WriterError::ReplyTimedOut`]; [`WriterError::Closed`] or
    /// [`WriterError::WriterStopped`] if the writer dropped the request unanswered.
    pub async fn await_reply<T>(
        &self,
        reply: oneshot::Receiver<T>,
        wait: Duration,
    ) -> Result<T, WriterError> {
        match tokio::time::timeout(wait, reply).await {
            Ok(Ok(answer)) => Ok(answer),
            // Dropped unanswered: the writer stopped before it took the request.
            Ok(Err(_)) => Err(self.stopped_error()),
            Err(_) => Err(WriterError::ReplyTimedOut),
        }
    }

    /// Refuses further requests ([`WriterError::Closed`]). Returns `false` if the handle was
    /// closed already, `true` for the call that closed it.
    pub fn mark_closed(&self) -> bool {
        !self.closed.swap(true, Ordering::AcqRel)
    }

    /// Sends [`Command::Close`] and waits until the writer has committed everything queued
    /// before it and closed its connection; `wait` bounds each of the two steps. Returns at
    /// once if the writer has already ended.
    ///
    /// # Errors
    /// [`WriterError::CloseQueueFull`], [`WriterError::CloseTimedOut`].
    pub async fn drain(&self, wait: Duration) -> Result<(), WriterError> {
        let Some(tx) = &self.tx else {
            return Ok(());
        };
        let (done_tx, done_rx) = oneshot::channel();
        match tx.send_timeout(Command::Close(done_tx), wait).await {
            Ok(()) => {}
            // The writer is gone already: nothing left to drain.
            Err(SendTimeoutError::Closed(_)) => return Ok(()),
            Err(SendTimeoutError::Timeout(_)) => return Err(WriterError::CloseQueueFull),
        }
        // A dropped `done` means the writer thread ended anyway.
        match tokio::time::timeout(wait, done_rx).await {
            Ok(_) => Ok(()),
            Err(_) => Err(WriterError::CloseTimedOut),
        }
    }

    /// Closes the handle, drops the queue (the writer drains it and stops) and joins the
    /// writer thread: blocks until everything queued is committed. Idempotent; also run on
    /// drop.
    pub fn stop(&mut self) {
        self.closed.store(true, Ordering::Release);
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let name = thread.thread().name().unwrap_or("writer").to_owned();
            if thread.join().is_err() {
                error!(thread = %name, "writer thread panicked");
            }
        }
    }

    fn stopped_error(&self) -> WriterError {
        if self.is_closed() {
            WriterError::Closed
        } else {
            WriterError::WriterStopped
        }
    }
}

impl<Op> Drop for WriterHandle<Op> {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use rusqlite::{Connection, TransactionBehavior};

    use super::*;
    use crate::test_support::{new_database, query_i64};

    const WAIT: Duration = Duration::from_secs(10);

    /// A request of the test writer: insert `value`, answer with the batch number.
    struct Insert {
        value: i64,
        reply: oneshot::Sender<Result<usize, String>>,
    }

    fn insert(value: i64) -> (Insert, oneshot::Receiver<Result<usize, String>>) {
        let (reply, reply_rx) = oneshot::channel();
        (Insert { value, reply }, reply_rx)
    }

    /// A minimal backend writer on a real database: one transaction per batch, answers after
    /// the commit; value 666 fails its batch.
    struct TestWriter {
        conn: Connection,
        batches: Arc<Mutex<Vec<Vec<i64>>>>,
    }

    impl TestWriter {
        /// A writer on a new database in `dir`, and the database's path.
        fn new(dir: &tempfile::TempDir) -> (std::path::PathBuf, Self) {
            let (path, conn) = new_database(
                dir,
                "w.sqlite3",
                "CREATE TABLE t (v INTEGER NOT NULL CHECK (v != 666)) STRICT;",
            );
            let writer = Self {
                conn,
                batches: Arc::default(),
            };
            (path, writer)
        }

        fn commit_batch(&mut self, batch: Vec<Insert>) {
            let values: Vec<i64> = batch.iter().map(|op| op.value).collect();
            let number = {
                let mut batches = self.batches.lock().expect("batches");
                batches.push(values.clone());
                batches.len()
            };
            let applied = (|| {
                let tx = self
                    .conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)?;
                for v in &values {
                    tx.execute("INSERT INTO t (v) VALUES (?1)", [v])?;
                }
                tx.commit()
            })();
            for op in batch {
                let _ = op.reply.send(match &applied {
                    Ok(()) => Ok(number),
                    Err(e) => Err(e.to_string()),
                });
            }
        }
    }

    impl BatchWriter for TestWriter {
        type Op = Insert;

        fn commit(&mut self, batch: Vec<Insert>) {
            self.commit_batch(batch);
        }

        fn refuse(&mut self, refused: Vec<Insert>) {
            for op in refused {
                let _ = op.reply.send(Err("closed".to_owned()));
            }
        }

        fn into_connection(self) -> Connection {
            self.conn
        }
    }

    /// Rows in `t`, read on a connection of its own.
    fn rows(path: &std::path::Path) -> i64 {
        query_i64(
            &Connection::open(path).expect("inspect"),
            "SELECT COUNT(*) FROM t",
        )
    }

    /// Queues an insert of each of `values` on `tx` (which has room); their replies.
    fn queue_inserts(
        tx: &mpsc::Sender<Command<Insert>>,
        values: impl IntoIterator<Item = i64>,
    ) -> Vec<oneshot::Receiver<Result<usize, String>>> {
        values
            .into_iter()
            .map(|v| {
                let (op, reply) = insert(v);
                tx.try_send(Command::Write(op))
                    .map_err(|_| "queue")
                    .expect("queue");
                reply
            })
            .collect()
    }

    #[test]
    fn the_loop_batches_up_to_max_batch_and_stops_at_a_close() {
        let (tx, rx) = mpsc::channel(16);
        let replies = queue_inserts(&tx, 1..=5);
        let (done_tx, mut done_rx) = oneshot::channel();
        let (late, _late_reply) = insert(6);
        let (second_close, second_done) = oneshot::channel();
        for command in [
            Command::Close(done_tx),
            Command::Write(late),
            Command::Close(second_close),
        ] {
            tx.try_send(command).map_err(|_| "queue").expect("queue");
        }

        let mut committed = Vec::new();
        let stopped = run_group_commit(rx, 2, |batch: Vec<Insert>| {
            committed.push(batch.iter().map(|op| op.value).collect::<Vec<_>>());
        });
        assert_eq!(committed, vec![vec![1, 2], vec![3, 4], vec![5]]);
        assert_eq!(
            stopped
                .refused
                .iter()
                .map(|op| op.value)
                .collect::<Vec<_>>(),
            vec![6]
        );
        assert!(stopped.close_done.is_some());
        assert!(
            done_rx.try_recv().is_err(),
            "the first close is the caller's to signal"
        );
        second_done
            .blocking_recv()
            .expect("a later close is signalled at once");
        assert!(tx.is_closed(), "further sends fail");
        drop(replies);
    }

    #[test]
    fn the_loop_drains_the_queue_when_every_sender_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, writer) = TestWriter::new(&dir);
        let batches = Arc::clone(&writer.batches);
        let (tx, rx) = mpsc::channel(16);
        let replies = queue_inserts(&tx, 1..=3);
        drop(tx);
        run_writer(writer, rx, 512);
        for reply in replies {
            assert_eq!(reply.blocking_recv().expect("answered"), Ok(1));
        }
        assert_eq!(*batches.lock().expect("batches"), vec![vec![1, 2, 3]]);
        assert_eq!(rows(&path), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_commit_close_drains_and_later_requests_are_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, writer) = TestWriter::new(&dir);
        let batches = Arc::clone(&writer.batches);
        let handle = Arc::new(
            WriterHandle::spawn("test-writer", 64, move |rx| run_writer(writer, rx, 512))
                .expect("spawn"),
        );
        let mut tasks = tokio::task::JoinSet::new();
        for v in 1..=50 {
            let handle = Arc::clone(&handle);
            tasks.spawn(async move {
                let (op, reply) = insert(v);
                handle.submit(op, WAIT).await?;
                handle.await_reply(reply, WAIT).await
            });
        }
        while let Some(answer) = tasks.join_next().await {
            let answer = answer.expect("task");
            assert!(matches!(answer, Ok(Ok(_))), "got {answer:?}");
        }
        let committed: usize = batches.lock().expect("batches").iter().map(Vec::len).sum();
        assert_eq!(committed, 50);
        // A failing request fails its batch, and the writer goes on.
        let (bad, bad_reply) = insert(666);
        handle.submit(bad, WAIT).await.expect("queued");
        let answer = handle.await_reply(bad_reply, WAIT).await.expect("answered");
        assert!(answer.is_err(), "got {answer:?}");

        assert!(handle.mark_closed());
        assert!(!handle.mark_closed(), "only the first call closes");
        assert!(handle.is_closed());
        assert_eq!(handle.check_open(), Err(WriterError::Closed));
        let (late, _late_reply) = insert(51);
        assert_eq!(handle.submit(late, WAIT).await, Err(WriterError::Closed));
        handle.drain(WAIT).await.expect("drained");
        // The close is signalled after the connection is closed: the last connection's close
        // checkpointed and removed the WAL file.
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        assert!(
            !std::path::Path::new(&wal).exists(),
            "connection still open"
        );
        handle
            .drain(WAIT)
            .await
            .expect("draining a stopped writer is a no-op");
        assert_eq!(rows(&path), 50);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_is_refused_after_the_wait_and_recovers() {
        // A writer that waits for a go before each batch, so the queue fills up.
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let handle = WriterHandle::spawn("test-writer", 1, move |rx| {
            let stopped = run_group_commit(rx, 1, |batch: Vec<Insert>| {
                let _ = go_rx.recv();
                for op in batch {
                    let _ = op.reply.send(Ok(op.value as usize));
                }
            });
            drop(stopped);
        })
        .expect("spawn");
        let (first, first_reply) = insert(1);
        handle
            .submit(first, WAIT)
            .await
            .expect("taken by the writer");
        // The writer holds `first` (it blocks on the go) or is about to; fill the one slot.
        let mut queued = Vec::new();
        let refused = loop {
            let (op, reply) = insert(2);
            match handle.submit(op, Duration::from_millis(50)).await {
                Ok(()) => queued.push(reply),
                Err(e) => break e,
            }
            assert!(
                queued.len() <= 2,
                "a queue of one took {} requests",
                queued.len()
            );
        };
        assert_eq!(refused, WriterError::QueueFull);
        assert_eq!(refused.to_string(), "write queue full");
        for _ in 0..=queued.len() {
            go_tx.send(()).expect("go");
        }
        assert_eq!(handle.await_reply(first_reply, WAIT).await, Ok(Ok(1)));
        for reply in queued {
            assert_eq!(handle.await_reply(reply, WAIT).await, Ok(Ok(2)));
        }
        let (op, reply) = insert(3);
        go_tx.send(()).expect("go");
        handle.submit(op, WAIT).await.expect("room again");
        assert_eq!(handle.await_reply(reply, WAIT).await, Ok(Ok(3)));
    }

    #[tokio::test]
    async fn an_unanswered_request_times_out_and_a_dead_writer_is_reported() {
        // A writer thread that ends at once without closing: the handle is not closed.
        let handle = WriterHandle::<Insert>::spawn("test-writer", 4, drop).expect("spawn");
        let (_kept, reply) = insert(1);
        assert_eq!(
            handle.await_reply(reply, Duration::from_millis(20)).await,
            Err(WriterError::ReplyTimedOut)
        );
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (op, _reply) = insert(2);
            match handle.submit(op, WAIT).await {
                Err(e) => {
                    assert_eq!(e, WriterError::WriterStopped);
                    break;
                }
                // The thread may not have dropped its receiver yet.
                Ok(()) => assert!(tokio::time::Instant::now() < deadline),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (dropped_tx, dropped_rx) = oneshot::channel::<()>();
        drop(dropped_tx);
        assert_eq!(
            handle.await_reply(dropped_rx, WAIT).await,
            Err(WriterError::WriterStopped)
        );
        handle.drain(WAIT).await.expect("nothing to drain");
    }

    #[test]
    fn stop_commits_what_is_queued_and_joins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, writer) = TestWriter::new(&dir);
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let mut handle = WriterHandle::spawn("test-writer", 64, move |rx| {
            let _ = go_rx.recv();
            run_writer(writer, rx, 512);
        })
        .expect("spawn");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let mut replies = Vec::new();
        for v in 1..=10 {
            let (op, reply) = insert(v);
            runtime.block_on(handle.submit(op, WAIT)).expect("queued");
            replies.push(reply);
        }
        go_tx.send(()).expect("go");
        handle.stop();
        assert!(handle.is_closed());
        handle.stop();
        for reply in replies {
            assert!(matches!(reply.blocking_recv(), Ok(Ok(_))));
        }
        assert_eq!(rows(&path), 10);
    }
}
