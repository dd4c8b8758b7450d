//! [`PgStore`]: the cluster [`MessageStore`] on PostgreSQL.
//!
//! Each write is one transaction on a pooled connection, and the statements of a transaction
//! are pipelined (tokio-postgres sends them back to back): an append is two round trips —
//! `BEGIN`, its locks and one probe query, then one insert statement and `COMMIT`. Many
//! connections commit in parallel and PostgreSQL groups their WAL flushes, so there is no
//! writer thread. Reads and single-statement writes (ack, mark_read) are one autocommitted
//! statement each; push records are batched by a background task.
//!
//! **Ordering across processes.** A pull pages an inbox by msgid cursor, so a message must
//! never commit *behind* a cursor a reader already passed: within one inbox (and one
//! conversation, for history pages and `prev_msgid`) msgids must commit in increasing order,
//! although they come from many processes with their own clocks. So an append takes
//! transaction-scoped advisory locks on its receiver's inbox, its conversation and its
//! idempotency key (hashed by the server, taken in one sorted statement, so two transactions
//! cannot deadlock), then reads the largest msgid committed so far and asks the node's
//! generator for an id above it. The next writer of that inbox waits for the lock, reads the
//! new floor, and so commits a larger msgid. The key lock also makes the duplicate probe
//! exact: two processes appending the same client message id store one message.
//!
//! An s2c push locks each recipient's inbox the same way; a push to more than
//! [`BIG_PUSH`] recipients takes one exclusive "fence" lock instead (every other write holds
//! the fence shared), so a broadcast never needs thousands of lock table entries.

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use deadpool_postgres::Pool;
use longlink_store::{
    AckOutcome, AppendOutcome, Conversation, ConversationPage, Delivered, DeliveryState, Direction,
    MAX_ACK_IDS, MAX_UNREAD_COUNT, MessageStore, NewMessage, NewS2c, Page, ReadMark, S2cOutcome,
    StoreError, StoredMessage, UserKey, effective_limit, validate_id, validate_user,
};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Row;

use crate::msgid::{MAX_NODES, MsgidGen};
use crate::pool::Conn;
use crate::{PgOptions, unavailable};

/// A bound parameter.
type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

/// Pushes to more recipients than this take the exclusive fence instead of one lock each.
pub(crate) const BIG_PUSH: usize = 256;
/// The fence's advisory lock key ("llfence" in ASCII).
const FENCE: i64 = 0x006c_6c66_656e_6365;
/// Most push records written in one statement.
const PUSH_BATCH: usize = 512;

/// The cluster [`MessageStore`]: PostgreSQL through a bounded pool (see the module docs).
pub struct PgStore {
    pool: Pool,
    ids: MsgidGen,
    opts: PgOptions,
    pushes: mpsc::Sender<PushOp>,
    closed: AtomicBool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("node_id", &self.opts.node_id)
            .field("pool", &self.pool.status())
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Opens the store at `url` (`postgres://user@host:port/db`), migrating it first when
    /// [`PgOptions::migrate_on_open`]. Connections are opened on demand; must be called
    /// inside a tokio runtime (it spawns the push recorder).
    ///
    /// # Errors
    /// [`StoreError::InvalidArgument`] for a bad URL or option (`node_id` ≥ 1024, a zero
    /// size); [`StoreError::Unavailable`] when the migration fails or the server is down.
    pub async fn open(url: &str, opts: PgOptions) -> Result<Self, StoreError> {
        if opts.node_id >= MAX_NODES {
            return Err(StoreError::InvalidArgument(format!(
                "node_id {} is not below {MAX_NODES}",
                opts.node_id
            )));
        }
        if opts.max_connections == 0 || opts.push_queue == 0 {
            return Err(StoreError::InvalidArgument(
                "max_connections and push_queue must be at least 1".to_owned(),
            ));
        }
        let pool = crate::pool::build(url, &opts)?;
        if opts.migrate_on_open {
            crate::migrate(url).await?;
        }
        let (pushes, rx) = mpsc::channel(opts.push_queue);
        tokio::spawn(record_pushes(pool.clone(), rx, opts.call_timeout));
        Ok(Self {
            pool,
            ids: MsgidGen::new(opts.node_id),
            opts,
            pushes,
            closed: AtomicBool::new(false),
        })
    }

    /// Refuses new calls ([`StoreError::Closed`]), writes the queued push records and closes
    /// the pool's idle connections. Calls in flight finish.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the push records could not be flushed in time.
    pub async fn close(&self) -> Result<(), StoreError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let flushed =
            tokio::time::timeout(self.opts.call_timeout, flush_pushes(&self.pushes)).await;
        self.pool.close();
        match flushed {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(
                "postgres: push records not flushed in time".to_owned(),
            )),
        }
    }

    /// The node id in this store's msgids.
    pub fn node_id(&self) -> u16 {
        self.opts.node_id
    }

    /// Runs one call under the call deadline. A call cut off by it drops its connection
    /// mid-flight; `Conn` makes sure such a connection never returns to the pool.
    async fn call<T>(
        &self,
        what: &str,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        match tokio::time::timeout(self.opts.call_timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "postgres {what}: no answer within {:?}",
                self.opts.call_timeout
            ))),
        }
    }

    async fn conn(&self) -> Result<Conn, StoreError> {
        Conn::get(&self.pool).await
    }

    async fn append_inner(&self, msg: &NewMessage) -> Result<AppendOutcome, StoreError> {
        let mut locks = vec![inbox_lock(&msg.to), conversation_lock(&msg.from, &msg.to)];
        if !msg.client_msg_id.is_empty() {
            locks.push(key_lock(msg));
        }
        let from_appcode = i64::from(msg.from.appcode);
        let to_appcode = i64::from(msg.to.appcode);
        let mut conn = self.conn().await?;
        let client = conn.begin();
        let (lock_fence, lock_keys, probe, insert) = futures::try_join!(
            client.prepare_cached(LOCK_FENCE_SHARED_SQL),
            client.prepare_cached(LOCK_KEYS_SQL),
            client.prepare_cached(APPEND_PROBE_SQL),
            client.prepare_cached(APPEND_INSERT_SQL),
        )
        .map_err(|e| unavailable("prepare append", e))?;
        // One round trip: BEGIN, the locks, then the probe (which runs after the locks are
        // held, so it sees everything committed before them).
        let fence_params: [Param<'_>; 1] = [&FENCE];
        let lock_params: [Param<'_>; 1] = [&locks];
        let probe_params: [Param<'_>; 6] = [
            &from_appcode,
            &msg.from.uid,
            &to_appcode,
            &msg.to.uid,
            &msg.from_device,
            &msg.client_msg_id,
        ];
        let (begin, fenced, locked, probed) = futures::join!(
            client.batch_execute("BEGIN"),
            client.execute(&lock_fence, &fence_params),
            client.execute(&lock_keys, &lock_params),
            client.query_one(&probe, &probe_params),
        );
        begin.map_err(|e| unavailable("begin", e))?;
        fenced.map_err(|e| unavailable("lock", e))?;
        locked.map_err(|e| unavailable("lock", e))?;
        let row = probed.map_err(|e| unavailable("append probe", e))?;
        let floor: i64 = get(&row, 0)?;
        let prev_msgid: i64 = get(&row, 1)?;
        let existing: Option<i64> = get(&row, 2)?;
        if let Some(msgid) = existing {
            let senddate: i64 = get(&row, 3)?;
            let original_prev: i64 = get(&row, 4)?;
            client
                .batch_execute("ROLLBACK")
                .await
                .map_err(|e| unavailable("rollback", e))?;
            conn.clean();
            return Ok(AppendOutcome {
                msgid: non_negative(msgid)?,
                senddate_ms: non_negative(senddate)?,
                duplicate: true,
                prev_msgid: u64::try_from(original_prev).unwrap_or(0),
            });
        }
        let now_ms = unix_ms_now();
        let msgid = self.next_msgid(floor)?;
        let senddate = i64::try_from(now_ms).unwrap_or(i64::MAX);
        let msgtype = i64::from(msg.msgtype);
        let log_id = msg.log_id.cast_signed();
        let content: &[u8] = &msg.content;
        let insert_params: [Param<'_>; 13] = [
            &msgid,
            &to_appcode,
            &msg.to.uid,
            &from_appcode,
            &msg.from.uid,
            &msg.from_device,
            &msg.client_msg_id,
            &msgtype,
            &msg.content_type,
            &senddate,
            &content,
            &log_id,
            &prev_msgid,
        ];
        let (inserted, committed) = futures::join!(
            client.execute(&insert, &insert_params),
            client.batch_execute("COMMIT"),
        );
        // A failed insert turns the COMMIT into a rollback (answered without an error).
        inserted.map_err(|e| unavailable("append", e))?;
        committed.map_err(|e| unavailable("commit", e))?;
        conn.clean();
        tracing::debug!(log_id = msg.log_id, msgid, "message stored");
        Ok(AppendOutcome {
            msgid: non_negative(msgid)?,
            senddate_ms: now_ms,
            duplicate: false,
            prev_msgid: u64::try_from(prev_msgid).unwrap_or(0),
        })
    }

    async fn append_s2c_inner(
        &self,
        msg: &NewS2c,
        recipients: Vec<&str>,
    ) -> Result<S2cOutcome, StoreError> {
        let appcode = i64::from(msg.appcode);
        let big = recipients.len() > BIG_PUSH;
        let locks: Vec<String> = if big {
            Vec::new()
        } else {
            recipients
                .iter()
                .map(|uid| inbox_lock(&UserKey::new(msg.appcode, *uid)))
                .collect()
        };
        let mut conn = self.conn().await?;
        let client = conn.begin();
        let fence_sql = if big {
            LOCK_FENCE_EXCLUSIVE_SQL
        } else {
            LOCK_FENCE_SHARED_SQL
        };
        let (lock_fence, lock_keys, floor_stmt, insert) = futures::try_join!(
            client.prepare_cached(fence_sql),
            client.prepare_cached(LOCK_KEYS_SQL),
            client.prepare_cached(FLOOR_SQL),
            client.prepare_cached(S2C_INSERT_SQL),
        )
        .map_err(|e| unavailable("prepare s2c", e))?;
        let fence_params: [Param<'_>; 1] = [&FENCE];
        let lock_params: [Param<'_>; 1] = [&locks];
        let (begin, fenced, locked, floor) = futures::join!(
            client.batch_execute("BEGIN"),
            client.execute(&lock_fence, &fence_params),
            client.execute(&lock_keys, &lock_params),
            client.query_one(&floor_stmt, &[]),
        );
        begin.map_err(|e| unavailable("begin", e))?;
        fenced.map_err(|e| unavailable("lock", e))?;
        locked.map_err(|e| unavailable("lock", e))?;
        let floor: i64 = get(&floor.map_err(|e| unavailable("s2c floor", e))?, 0)?;
        let now_ms = unix_ms_now();
        let msgid = self.next_msgid(floor)?;
        let senddate = i64::try_from(now_ms).unwrap_or(i64::MAX);
        let msgtype = i64::from(msg.msgtype);
        let log_id = msg.log_id.cast_signed();
        let content: &[u8] = &msg.content;
        let insert_params: [Param<'_>; 9] = [
            &msgid,
            &appcode,
            &msg.from,
            &msgtype,
            &msg.content_type,
            &senddate,
            &content,
            &log_id,
            &recipients,
        ];
        let (inserted, committed) = futures::join!(
            client.execute(&insert, &insert_params),
            client.batch_execute("COMMIT"),
        );
        inserted.map_err(|e| unavailable("append s2c", e))?;
        committed.map_err(|e| unavailable("commit", e))?;
        conn.clean();
        Ok(S2cOutcome {
            msgid: non_negative(msgid)?,
            senddate_ms: now_ms,
        })
    }

    fn next_msgid(&self, floor: i64) -> Result<i64, StoreError> {
        self.ids
            .next_above(u64::try_from(floor).unwrap_or(0), unix_ms_now())
            .and_then(|id| i64::try_from(id).ok())
            .ok_or_else(|| StoreError::Unavailable("msgid space exhausted".to_owned()))
    }

    /// One statement on a pooled connection, rows collected.
    async fn query(
        &self,
        what: &str,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Vec<Row>, StoreError> {
        let conn = self.conn().await?;
        let client = conn.client();
        let statement = client
            .prepare_cached(sql)
            .await
            .map_err(|e| unavailable(what, e))?;
        client
            .query(&statement, params)
            .await
            .map_err(|e| unavailable(what, e))
    }

    async fn ack_inner(
        &self,
        owner: &UserKey,
        device: &str,
        msgids: &[u64],
    ) -> Result<AckOutcome, StoreError> {
        // Push records queued before this ack are committed first: writes apply in order.
        flush_pushes(&self.pushes).await?;
        let ids: Vec<i64> = msgids
            .iter()
            .filter_map(|&id| i64::try_from(id).ok())
            .collect();
        let appcode = i64::from(owner.appcode);
        let rows = self
            .query("ack", ACK_SQL, &[&appcode, &owner.uid, &ids, &device])
            .await?;
        let mut found = HashSet::with_capacity(rows.len());
        let mut first_delivered = Vec::new();
        for row in &rows {
            let msgid = non_negative(get(row, 0)?)?;
            found.insert(msgid);
            let from_appcode: Option<i64> = get(row, 1)?;
            let from_device: Option<String> = get(row, 3)?;
            // Only the first ack flips the state (and only c2c messages have a sender device).
            if let (Some(from_appcode), Some(from_device)) = (from_appcode, from_device)
                && !from_device.is_empty()
            {
                first_delivered.push(Delivered {
                    msgid,
                    from: UserKey {
                        appcode: appcode_from(from_appcode)?,
                        uid: get(row, 2)?,
                    },
                });
            }
        }
        first_delivered.sort_by_key(|d| d.msgid);
        let mut seen = HashSet::with_capacity(msgids.len());
        let not_found = msgids
            .iter()
            .copied()
            .filter(|id| seen.insert(*id) && !found.contains(id))
            .collect();
        Ok(AckOutcome {
            acked: u32::try_from(found.len()).unwrap_or(u32::MAX),
            not_found,
            first_delivered,
        })
    }
}

#[async_trait::async_trait]
impl MessageStore for PgStore {
    async fn append(&self, msg: NewMessage) -> Result<AppendOutcome, StoreError> {
        validate_user(&msg.from, "from")?;
        validate_user(&msg.to, "to")?;
        validate_id(&msg.from_device, "from_device")?;
        validate_id(&msg.client_msg_id, "client_msg_id")?;
        self.call("append", self.append_inner(&msg)).await
    }

    async fn append_s2c(&self, msg: NewS2c) -> Result<S2cOutcome, StoreError> {
        validate_user(&UserKey::new(msg.appcode, msg.from.as_str()), "from")?;
        for uid in &msg.recipients {
            validate_user(&UserKey::new(msg.appcode, uid.as_str()), "recipient")?;
        }
        // Sorted and distinct: one inbox row per recipient, locks in a stable order.
        let recipients: Vec<&str> = msg
            .recipients
            .iter()
            .map(String::as_str)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        self.call("append_s2c", self.append_s2c_inner(&msg, recipients))
            .await
    }

    async fn pull_offline(
        &self,
        owner: &UserKey,
        device: &str,
        cursor: u64,
        limit: u32,
    ) -> Result<Page, StoreError> {
        validate_user(owner, "owner")?;
        validate_id(device, "device")?;
        let limit = effective_limit(limit);
        let appcode = i64::from(owner.appcode);
        let after = lower_bound(cursor);
        let rows_wanted = i64::from(limit) + 1;
        let rows = self
            .call(
                "pull_offline",
                self.query(
                    "pull_offline",
                    PULL_OFFLINE_SQL,
                    &[&appcode, &owner.uid, &after, &device, &rows_wanted],
                ),
            )
            .await?;
        let mut messages = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut message = read_message(row)?;
            if message.is_s2c() {
                // One s2c row serves every recipient: this copy is the owner's.
                message.to.uid.clone_from(&owner.uid);
            }
            messages.push(message);
        }
        Ok(Page::from_overfetched(messages, limit, cursor))
    }

    async fn ack(
        &self,
        owner: &UserKey,
        device: &str,
        msgids: &[u64],
    ) -> Result<AckOutcome, StoreError> {
        longlink_store::validate_ack(owner, device, msgids)?;
        if msgids.is_empty() {
            return self.call("ack", async { Ok(AckOutcome::default()) }).await;
        }
        self.call("ack", self.ack_inner(owner, device, msgids))
            .await
    }

    async fn history(
        &self,
        owner: &UserKey,
        peer: &UserKey,
        cursor: u64,
        direction: Direction,
        limit: u32,
    ) -> Result<Page, StoreError> {
        validate_user(owner, "owner")?;
        validate_user(peer, "peer")?;
        let limit = effective_limit(limit);
        let (sql, bound) = match direction {
            Direction::Older => (HISTORY_OLDER_SQL, upper_bound_inclusive(cursor)),
            Direction::Newer => (HISTORY_NEWER_SQL, lower_bound(cursor)),
        };
        let owner_appcode = i64::from(owner.appcode);
        let peer_appcode = i64::from(peer.appcode);
        let rows_wanted = i64::from(limit) + 1;
        let rows = self
            .call(
                "history",
                self.query(
                    "history",
                    sql,
                    &[
                        &owner_appcode,
                        &owner.uid,
                        &peer_appcode,
                        &peer.uid,
                        &bound,
                        &rows_wanted,
                    ],
                ),
            )
            .await?;
        let messages = rows.iter().map(read_message).collect::<Result<_, _>>()?;
        Ok(Page::from_overfetched(messages, limit, cursor))
    }

    async fn record_pushed(
        &self,
        owner: &UserKey,
        device: &str,
        msgids: &[u64],
    ) -> Result<(), StoreError> {
        validate_user(owner, "owner")?;
        validate_id(device, "device")?;
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let ids: Vec<i64> = msgids
            .iter()
            .filter_map(|&id| i64::try_from(id).ok())
            .collect();
        if ids.is_empty() || msgids.len() > MAX_ACK_IDS {
            return Ok(());
        }
        let op = PushOp::Record {
            appcode: i64::from(owner.appcode),
            uid: owner.uid.clone(),
            device: device.to_owned(),
            msgids: ids,
        };
        // Informational and not waited on: a full queue drops the record.
        self.pushes.try_send(op).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                StoreError::Unavailable("postgres push record queue is full".to_owned())
            }
            mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
        })
    }

    async fn delivery_state(
        &self,
        owner: &UserKey,
        device: &str,
        msgid: u64,
    ) -> Result<Option<DeliveryState>, StoreError> {
        validate_user(owner, "owner")?;
        validate_id(device, "device")?;
        let Ok(id) = i64::try_from(msgid) else {
            return Ok(None);
        };
        let appcode = i64::from(owner.appcode);
        let rows = self
            .call(
                "delivery_state",
                self.query(
                    "delivery_state",
                    DELIVERY_STATE_SQL,
                    &[&appcode, &owner.uid, &device, &id],
                ),
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let (acked, pushed): (bool, bool) = (get(row, 0)?, get(row, 1)?);
        Ok(Some(if acked {
            DeliveryState::Acked
        } else if pushed {
            DeliveryState::Pushed
        } else {
            DeliveryState::Stored
        }))
    }

    async fn conversations(
        &self,
        owner: &UserKey,
        before_msgid: u64,
        limit: u32,
    ) -> Result<ConversationPage, StoreError> {
        validate_user(owner, "owner")?;
        let limit = effective_limit(limit);
        let appcode = i64::from(owner.appcode);
        let below = upper_bound_inclusive(before_msgid).saturating_add(1);
        let rows_wanted = i64::from(limit) + 1;
        let max_unread = i64::from(MAX_UNREAD_COUNT);
        let rows = self
            .call(
                "conversations",
                self.query(
                    "conversations",
                    CONVERSATIONS_SQL,
                    &[&appcode, &owner.uid, &below, &rows_wanted, &max_unread],
                ),
            )
            .await?;
        let more = rows.len() > limit as usize;
        let mut conversations = Vec::with_capacity(rows.len().min(limit as usize));
        for row in rows.iter().take(limit as usize) {
            conversations.push(Conversation {
                last: read_message(row)?,
                peer: UserKey {
                    appcode: appcode_from(get(row, MESSAGE_COLUMNS)?)?,
                    uid: get(row, MESSAGE_COLUMNS + 1)?,
                },
                read_upto: u64::try_from(get::<i64>(row, MESSAGE_COLUMNS + 2)?).unwrap_or(0),
                peer_read_upto: u64::try_from(get::<i64>(row, MESSAGE_COLUMNS + 3)?).unwrap_or(0),
                unread: unread_from(get(row, MESSAGE_COLUMNS + 4)?),
            });
        }
        Ok(ConversationPage {
            conversations,
            more,
        })
    }

    async fn mark_read(
        &self,
        owner: &UserKey,
        peer: &UserKey,
        msgid: u64,
    ) -> Result<Option<ReadMark>, StoreError> {
        validate_user(owner, "owner")?;
        validate_user(peer, "peer")?;
        let Ok(id) = i64::try_from(msgid) else {
            return self.call("mark_read", async { Ok(None) }).await;
        };
        let owner_appcode = i64::from(owner.appcode);
        let peer_appcode = i64::from(peer.appcode);
        let max_unread = i64::from(MAX_UNREAD_COUNT);
        let rows = self
            .call(
                "mark_read",
                self.query(
                    "mark_read",
                    MARK_READ_SQL,
                    &[
                        &owner_appcode,
                        &owner.uid,
                        &peer_appcode,
                        &peer.uid,
                        &id,
                        &max_unread,
                    ],
                ),
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        Ok(Some(ReadMark {
            read_upto: non_negative(get(row, 0)?)?,
            unread: unread_from(get(row, 1)?),
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// Push records: batched by one task, in submission order.

enum PushOp {
    Record {
        appcode: i64,
        uid: String,
        device: String,
        msgids: Vec<i64>,
    },
    /// Answered once every record queued before it has been written (or failed).
    Barrier(oneshot::Sender<()>),
}

/// Waits until the push records queued so far are written.
async fn flush_pushes(pushes: &mpsc::Sender<PushOp>) -> Result<(), StoreError> {
    let (done, wait) = oneshot::channel();
    pushes
        .send(PushOp::Barrier(done))
        .await
        .map_err(|_| StoreError::Closed)?;
    wait.await.map_err(|_| StoreError::Closed)
}

/// The push recorder: takes what is queued (up to [`PUSH_BATCH`] ops), writes the records in
/// one statement, then answers the barriers among them. Ends when the store is dropped.
async fn record_pushes(pool: Pool, mut rx: mpsc::Receiver<PushOp>, timeout: std::time::Duration) {
    let mut ops = Vec::with_capacity(PUSH_BATCH);
    while rx.recv_many(&mut ops, PUSH_BATCH).await > 0 {
        let (mut appcodes, mut uids, mut devices, mut ids) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut barriers = Vec::new();
        for op in ops.drain(..) {
            match op {
                PushOp::Record {
                    appcode,
                    uid,
                    device,
                    msgids,
                } => {
                    for id in msgids {
                        appcodes.push(appcode);
                        uids.push(uid.clone());
                        devices.push(device.clone());
                        ids.push(id);
                    }
                }
                PushOp::Barrier(done) => barriers.push(done),
            }
        }
        if !ids.is_empty() {
            let write = async {
                let conn = Conn::get(&pool).await?;
                let client = conn.client();
                let statement = client
                    .prepare_cached(RECORD_PUSHES_SQL)
                    .await
                    .map_err(|e| unavailable("record pushes", e))?;
                client
                    .execute(&statement, &[&appcodes, &uids, &devices, &ids])
                    .await
                    .map_err(|e| unavailable("record pushes", e))
            };
            match tokio::time::timeout(timeout, write).await {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => {
                    tracing::debug!(error = %err, records = ids.len(), "push records lost")
                }
                Err(_) => tracing::debug!(records = ids.len(), "push records timed out"),
            }
        }
        for done in barriers {
            let _ = done.send(());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SQL. Every value is a bound parameter; statements are prepared once per connection.

/// Holds the fence shared until the transaction ends.
const LOCK_FENCE_SHARED_SQL: &str = "SELECT pg_advisory_xact_lock_shared($1)";
/// Holds the fence exclusively (a big push) until the transaction ends.
const LOCK_FENCE_EXCLUSIVE_SQL: &str = "SELECT pg_advisory_xact_lock($1)";
/// Transaction-scoped locks on the server's 64-bit hashes of the key strings, taken in hash
/// order so two transactions never wait for each other in a cycle.
const LOCK_KEYS_SQL: &str = "SELECT pg_advisory_xact_lock(h) FROM \
     (SELECT DISTINCT hashtextextended(k, 0) AS h FROM unnest($1::text[]) AS k ORDER BY h) AS s";

/// The largest msgid committed (one descent of the primary key).
const FLOOR_SQL: &str = "SELECT COALESCE(MAX(msgid), 0) FROM messages";

/// $1/$2 from, $3/$4 to, $5 from_device, $6 client_msg_id → floor, the conversation's last
/// msgid, and the key's stored msgid, senddate and prev_msgid when it is a retry.
const APPEND_PROBE_SQL: &str = "SELECT (SELECT COALESCE(MAX(msgid), 0) FROM messages), \
       (SELECT COALESCE(MAX(msgid), 0) FROM history WHERE owner_appcode = $1 \
          AND owner_uid = $2 AND peer_appcode = $3 AND peer_uid = $4), \
       k.msgid, k.senddate, COALESCE(m.prev_msgid, 0) \
     FROM (SELECT 1) AS one \
     LEFT JOIN idempotency_keys AS k ON k.from_appcode = $1 AND k.from_uid = $2 \
          AND k.from_device = $5 AND k.client_msg_id = $6 \
     LEFT JOIN messages AS m ON m.msgid = k.msgid";

/// The message, the receiver's inbox row, both history rows (one for a note to oneself) and
/// the idempotency key (none for an empty client_msg_id), in one statement.
const APPEND_INSERT_SQL: &str = "WITH m AS (INSERT INTO messages (msgid, to_appcode, to_uid, \
         from_appcode, from_uid, from_device, client_msg_id, msgtype, content_type, senddate, \
         state, msgcontent, log_id, prev_msgid) \
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $11, $12, $13)), \
     i AS (INSERT INTO inbox (owner_appcode, owner_uid, msgid) VALUES ($2, $3, $1)), \
     h AS (INSERT INTO history (owner_appcode, owner_uid, peer_appcode, peer_uid, msgid) \
       VALUES ($4, $5, $2, $3, $1), ($2, $3, $4, $5, $1) ON CONFLICT DO NOTHING) \
     INSERT INTO idempotency_keys (from_appcode, from_uid, from_device, client_msg_id, msgid, \
       senddate) SELECT $4, $5, $6, $7, $1, $10 WHERE $7 <> ''";

/// One message row (to_uid '' marks s2c) and one inbox row per recipient ($9, distinct).
const S2C_INSERT_SQL: &str = "WITH m AS (INSERT INTO messages (msgid, to_appcode, to_uid, \
         from_appcode, from_uid, from_device, client_msg_id, msgtype, content_type, senddate, \
         state, msgcontent, log_id, prev_msgid) \
       VALUES ($1, $2, '', $2, $3, '', '', $4, $5, $6, 0, $7, $8, 0)) \
     INSERT INTO inbox (owner_appcode, owner_uid, msgid) \
       SELECT $2, u, $1 FROM unnest($9::text[]) AS u";

/// $1/$2 owner, $3 msgids, $4 device → one row per msgid in owner's inbox, with the sender
/// when this ack delivered it first (state 0 → 1; the row lock makes that once per message
/// even when two processes ack at the same time).
const ACK_SQL: &str = "WITH ids AS (SELECT DISTINCT unnest($3::bigint[]) AS msgid), \
     found AS (SELECT i.msgid FROM inbox AS i JOIN ids ON i.msgid = ids.msgid \
       WHERE i.owner_appcode = $1 AND i.owner_uid = $2), \
     ins AS (INSERT INTO acks (owner_appcode, owner_uid, device, msgid) \
       SELECT $1, $2, $4, msgid FROM found ON CONFLICT DO NOTHING), \
     upd AS (UPDATE messages AS m SET state = 1 FROM found AS f \
       WHERE m.msgid = f.msgid AND m.state = 0 \
       RETURNING m.msgid, m.from_appcode, m.from_uid, m.from_device) \
     SELECT f.msgid, u.from_appcode, u.from_uid, u.from_device \
     FROM found AS f LEFT JOIN upd AS u ON u.msgid = f.msgid";

/// Push records whose message is in the owner's inbox ($1..$4 parallel arrays).
const RECORD_PUSHES_SQL: &str = "INSERT INTO pushes (owner_appcode, owner_uid, device, msgid) \
     SELECT p.a, p.u, p.d, p.m \
     FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[]) AS p(a, u, d, m) \
     WHERE EXISTS (SELECT 1 FROM inbox AS i WHERE i.owner_appcode = p.a \
       AND i.owner_uid = p.u AND i.msgid = p.m) \
     ON CONFLICT DO NOTHING";

/// $1/$2 owner, $3 device, $4 msgid → (acked, pushed), no row when not in owner's inbox.
const DELIVERY_STATE_SQL: &str = "SELECT \
       EXISTS (SELECT 1 FROM acks AS a WHERE a.owner_appcode = $1 AND a.owner_uid = $2 \
         AND a.device = $3 AND a.msgid = $4), \
       EXISTS (SELECT 1 FROM pushes AS p WHERE p.owner_appcode = $1 AND p.owner_uid = $2 \
         AND p.device = $3 AND p.msgid = $4) \
     FROM inbox WHERE owner_appcode = $1 AND owner_uid = $2 AND msgid = $4";

/// Columns read by [`read_message`], in this order.
macro_rules! message_columns {
    () => {
        "m.msgid, m.from_appcode, m.from_uid, m.from_device, m.client_msg_id, m.to_appcode, \
         m.to_uid, m.msgtype, m.content_type, m.msgcontent, m.senddate, m.log_id, m.prev_msgid, \
         m.state"
    };
}
/// How many columns [`message_columns!`] has.
const MESSAGE_COLUMNS: usize = 14;

/// $1/$2 owner, $3 exclusive lower msgid, $4 device, $5 row limit: one range scan of the
/// inbox primary key, a primary-key probe of acks and messages per row.
const PULL_OFFLINE_SQL: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM inbox AS i JOIN messages AS m ON m.msgid = i.msgid \
     WHERE i.owner_appcode = $1 AND i.owner_uid = $2 AND i.msgid > $3 \
       AND NOT EXISTS (SELECT 1 FROM acks AS a WHERE a.owner_appcode = $1 \
           AND a.owner_uid = $2 AND a.device = $4 AND a.msgid = i.msgid) \
     ORDER BY i.msgid ASC LIMIT $5"
);

/// $1/$2 owner, $3/$4 peer, $5 inclusive upper msgid, $6 row limit.
const HISTORY_OLDER_SQL: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM history AS h JOIN messages AS m ON m.msgid = h.msgid \
     WHERE h.owner_appcode = $1 AND h.owner_uid = $2 AND h.peer_appcode = $3 \
       AND h.peer_uid = $4 AND h.msgid <= $5 \
     ORDER BY h.msgid DESC LIMIT $6"
);

/// $1/$2 owner, $3/$4 peer, $5 exclusive lower msgid, $6 row limit.
const HISTORY_NEWER_SQL: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM history AS h JOIN messages AS m ON m.msgid = h.msgid \
     WHERE h.owner_appcode = $1 AND h.owner_uid = $2 AND h.peer_appcode = $3 \
       AND h.peer_uid = $4 AND h.msgid > $5 \
     ORDER BY h.msgid ASC LIMIT $6"
);

/// $1/$2 owner, $3 exclusive upper bound of the last msgid, $4 row limit, $5 unread cap →
/// per peer: its last message, then peer appcode and uid, both read marks, the unread count.
const CONVERSATIONS_SQL: &str = concat!(
    "WITH peers AS (SELECT peer_appcode, peer_uid, MAX(msgid) AS last FROM history \
       WHERE owner_appcode = $1 AND owner_uid = $2 \
       GROUP BY peer_appcode, peer_uid HAVING MAX(msgid) < $3 \
       ORDER BY last DESC LIMIT $4) \
     SELECT ",
    message_columns!(),
    ", p.peer_appcode, p.peer_uid, COALESCE(r1.msgid, 0), COALESCE(r2.msgid, 0), \
       (SELECT COUNT(*) FROM (SELECT 1 FROM history AS h JOIN messages AS mm \
          ON mm.msgid = h.msgid WHERE h.owner_appcode = $1 AND h.owner_uid = $2 \
          AND h.peer_appcode = p.peer_appcode AND h.peer_uid = p.peer_uid \
          AND h.msgid > COALESCE(r1.msgid, 0) AND mm.from_appcode = p.peer_appcode \
          AND mm.from_uid = p.peer_uid LIMIT $5) AS c) \
     FROM peers AS p JOIN messages AS m ON m.msgid = p.last \
     LEFT JOIN read_marks AS r1 ON r1.owner_appcode = $1 AND r1.owner_uid = $2 \
       AND r1.peer_appcode = p.peer_appcode AND r1.peer_uid = p.peer_uid \
     LEFT JOIN read_marks AS r2 ON r2.owner_appcode = p.peer_appcode \
       AND r2.owner_uid = p.peer_uid AND r2.peer_appcode = $1 AND r2.peer_uid = $2 \
     ORDER BY p.last DESC"
);

/// $1/$2 owner, $3/$4 peer, $5 msgid, $6 unread cap → (read mark, unread) when msgid is in
/// the conversation; no row otherwise. The mark only moves forward (GREATEST).
const MARK_READ_SQL: &str = "WITH ok AS (SELECT 1 FROM history WHERE owner_appcode = $1 \
       AND owner_uid = $2 AND peer_appcode = $3 AND peer_uid = $4 AND msgid = $5), \
     up AS (INSERT INTO read_marks (owner_appcode, owner_uid, peer_appcode, peer_uid, msgid) \
       SELECT $1, $2, $3, $4, $5 FROM ok \
       ON CONFLICT (owner_appcode, owner_uid, peer_appcode, peer_uid) \
       DO UPDATE SET msgid = GREATEST(read_marks.msgid, excluded.msgid) RETURNING msgid) \
     SELECT up.msgid, (SELECT COUNT(*) FROM (SELECT 1 FROM history AS h \
         JOIN messages AS m ON m.msgid = h.msgid WHERE h.owner_appcode = $1 \
         AND h.owner_uid = $2 AND h.peer_appcode = $3 AND h.peer_uid = $4 \
         AND h.msgid > up.msgid AND m.from_appcode = $3 AND m.from_uid = $4 LIMIT $6) AS c) \
     FROM up";

// ---------------------------------------------------------------------------------------------
// Helpers.

/// The lock string of `owner`'s inbox. Lengths prefix the free-form parts, so two different
/// keys never make the same string.
fn inbox_lock(owner: &UserKey) -> String {
    format!("i:{}:{}", owner.appcode, owner.uid)
}

/// The lock string of the conversation between `a` and `b` (either direction).
fn conversation_lock(a: &UserKey, b: &UserKey) -> String {
    let (x, y) = if (a.appcode, &a.uid) <= (b.appcode, &b.uid) {
        (a, b)
    } else {
        (b, a)
    };
    format!(
        "c:{}:{}:{}:{}:{}",
        x.appcode,
        x.uid.len(),
        x.uid,
        y.appcode,
        y.uid
    )
}

/// The lock string of a message's idempotency key.
fn key_lock(msg: &NewMessage) -> String {
    format!(
        "k:{}:{}:{}:{}:{}:{}",
        msg.from.appcode,
        msg.from.uid.len(),
        msg.from.uid,
        msg.from_device.len(),
        msg.from_device,
        msg.client_msg_id
    )
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    idx: usize,
) -> Result<T, StoreError> {
    row.try_get(idx).map_err(|e| unavailable("row", e))
}

fn non_negative(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value)
        .map_err(|_| StoreError::Unavailable(format!("postgres: negative id {value} stored")))
}

fn appcode_from(value: i64) -> Result<u32, StoreError> {
    u32::try_from(value)
        .map_err(|_| StoreError::Unavailable(format!("postgres: appcode {value} out of range")))
}

fn unread_from(count: i64) -> u32 {
    u32::try_from(count).map_or(MAX_UNREAD_COUNT, |c| c.min(MAX_UNREAD_COUNT))
}

/// Maps a row starting with [`message_columns!`] to a message. Out-of-range values (a foreign
/// or corrupt database) are errors, never panics.
fn read_message(row: &Row) -> Result<StoredMessage, StoreError> {
    Ok(StoredMessage {
        msgid: non_negative(get(row, 0)?)?,
        from: UserKey {
            appcode: appcode_from(get(row, 1)?)?,
            uid: get(row, 2)?,
        },
        from_device: get(row, 3)?,
        client_msg_id: get(row, 4)?,
        to: UserKey {
            appcode: appcode_from(get(row, 5)?)?,
            uid: get(row, 6)?,
        },
        msgtype: u32::try_from(get::<i64>(row, 7)?)
            .map_err(|_| StoreError::Unavailable("postgres: msgtype out of range".to_owned()))?,
        content_type: get(row, 8)?,
        content: bytes::Bytes::from(get::<Vec<u8>>(row, 9)?),
        senddate_ms: non_negative(get(row, 10)?)?,
        log_id: get::<i64>(row, 11)?.cast_unsigned(),
        prev_msgid: u64::try_from(get::<i64>(row, 12)?).unwrap_or(0),
        delivered: get::<i16>(row, 13)? != 0,
    })
}

/// `msgid > cursor` as a BIGINT bound: a cursor past i64::MAX matches nothing.
fn lower_bound(cursor: u64) -> i64 {
    i64::try_from(cursor).unwrap_or(i64::MAX)
}

/// `msgid < cursor` (0 = no bound) as an inclusive BIGINT bound.
fn upper_bound_inclusive(cursor: u64) -> i64 {
    match i64::try_from(cursor) {
        Ok(0) | Err(_) => i64::MAX,
        Ok(c) => c - 1,
    }
}
