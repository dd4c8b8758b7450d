//! Measures the embedded store: group-committed appends, then offline-pull pages.
//!
//! Run with: `cargo run --release -p longlink-store --example store_bench`
//!
//! In a temp dir: 200,000 appends of 200-byte messages to 10,000 random receivers from 256
//! concurrent tasks (each append fsync'd as part of a group commit), then 5,000 random
//! `pull_offline` pages of 50 (random owner, random cursor inside its inbox), from one task and
//! then from as many tasks as the read pool has connections; then 5,000 full pages of 50 from
//! one inbox of 10,000 messages.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use longlink_store::{MessageStore, NewMessage, SqliteOptions, SqliteStore, UserKey};
use rand::{Rng, SeedableRng, rngs::StdRng};

const APPENDS: usize = 200_000;
const RECEIVERS: usize = 10_000;
const WRITER_TASKS: usize = 256;
const CONTENT_BYTES: usize = 200;
const PULLS: usize = 5_000;
const PAGE: u32 = 50;
const HEAVY_INBOX: usize = 10_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let opts = SqliteOptions::default();
    let read_tasks = opts.read_connections;
    let store = Arc::new(SqliteStore::open(dir.path(), opts.clone())?);
    println!(
        "store_bench: {APPENDS} appends of {CONTENT_BYTES} B to {RECEIVERS} receivers from \
         {WRITER_TASKS} tasks; options {opts:?}"
    );

    let started = Instant::now();
    let writers: Vec<_> = (0..WRITER_TASKS)
        .map(|task| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(task as u64);
                let content = Bytes::from(vec![b'x'; CONTENT_BYTES]);
                let from = UserKey::new(1, format!("sender-{task}"));
                let mut appended = 0_usize;
                let mut i = task;
                while i < APPENDS {
                    let to = UserKey::new(1, format!("user-{}", rng.random_range(0..RECEIVERS)));
                    let msg = NewMessage {
                        from: from.clone(),
                        from_device: "bench".to_owned(),
                        client_msg_id: format!("c{i}"),
                        to,
                        msgtype: 1,
                        content_type: 0,
                        content: content.clone(),
                        log_id: i as u64,
                    };
                    store.append(msg).await?;
                    appended += 1;
                    i += WRITER_TASKS;
                }
                Ok::<_, longlink_store::StoreError>(appended)
            })
        })
        .collect();
    let mut appended = 0;
    for writer in writers {
        appended += writer.await??;
    }
    let append_secs = started.elapsed().as_secs_f64();
    let stats = store.writer_stats();
    println!(
        "appends: {appended} in {append_secs:.2} s = {:.0} appends/s",
        appended as f64 / append_secs
    );
    println!(
        "group commit: {} transactions, average batch {:.1} requests, {} failed",
        stats.batches,
        stats.requests as f64 / stats.batches.max(1) as f64,
        stats.failed_batches
    );
    let db = dir.path().join("messages.sqlite3");
    let wal = dir.path().join("messages.sqlite3-wal");
    println!(
        "files: db {:.1} MiB, wal {:.1} MiB",
        file_mib(&db),
        file_mib(&wal)
    );

    // Cursors to start from: each owner's inbox, so a page starts at a random point in it.
    let mut inboxes = Vec::with_capacity(RECEIVERS);
    for r in 0..RECEIVERS {
        let owner = UserKey::new(1, format!("user-{r}"));
        let page = store.pull_offline(&owner, "reader", 0, 500).await?;
        inboxes.push((
            owner,
            page.messages.iter().map(|m| m.msgid).collect::<Vec<_>>(),
        ));
    }
    let inboxes = Arc::new(inboxes);

    for tasks in [1, read_tasks] {
        let started = Instant::now();
        let readers: Vec<_> = (0..tasks)
            .map(|task| {
                let store = Arc::clone(&store);
                let inboxes = Arc::clone(&inboxes);
                tokio::spawn(async move {
                    let mut rng = StdRng::seed_from_u64(1_000 + task as u64);
                    let mut messages = 0_usize;
                    for _ in 0..PULLS / tasks {
                        let (owner, ids) = &inboxes[rng.random_range(0..inboxes.len())];
                        let cursor = match ids.len() {
                            0 => 0,
                            n => match rng.random_range(0..=n) {
                                0 => 0,
                                k => ids[k - 1],
                            },
                        };
                        let page = store.pull_offline(owner, "reader", cursor, PAGE).await?;
                        messages += page.messages.len();
                    }
                    Ok::<_, longlink_store::StoreError>((PULLS / tasks, messages))
                })
            })
            .collect();
        let (mut pages, mut messages) = (0, 0);
        for reader in readers {
            let (p, m) = reader.await??;
            pages += p;
            messages += m;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "pull_offline ({tasks} task{}): {pages} pages of {PAGE} in {secs:.2} s = {:.0} pages/s, \
             {:.0} messages/s ({:.1} messages/page)",
            if tasks == 1 { "" } else { "s" },
            pages as f64 / secs,
            messages as f64 / secs,
            messages as f64 / pages as f64
        );
    }

    // Full pages: one busy inbox, paged through from the start again and again.
    let heavy = UserKey::new(1, "heavy-owner");
    let filler: Vec<_> = (0..WRITER_TASKS)
        .map(|task| {
            let store = Arc::clone(&store);
            let heavy = heavy.clone();
            tokio::spawn(async move {
                let from = UserKey::new(1, format!("sender-{task}"));
                let mut i = task;
                while i < HEAVY_INBOX {
                    let msg = NewMessage {
                        from: from.clone(),
                        from_device: "bench".to_owned(),
                        client_msg_id: format!("heavy-{i}"),
                        to: heavy.clone(),
                        msgtype: 1,
                        content_type: 0,
                        content: Bytes::from(vec![b'x'; CONTENT_BYTES]),
                        log_id: i as u64,
                    };
                    store.append(msg).await?;
                    i += WRITER_TASKS;
                }
                Ok::<_, longlink_store::StoreError>(())
            })
        })
        .collect();
    for task in filler {
        task.await??;
    }
    let started = Instant::now();
    let (mut pages, mut messages, mut cursor) = (0_usize, 0_usize, 0);
    while pages < PULLS {
        let page = store.pull_offline(&heavy, "reader", cursor, PAGE).await?;
        pages += 1;
        messages += page.messages.len();
        cursor = if page.more { page.next_cursor } else { 0 };
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "pull_offline full pages (1 task, inbox of {HEAVY_INBOX}): {pages} pages in {secs:.2} s = \
         {:.0} pages/s, {:.0} messages/s ({:.1} messages/page)",
        pages as f64 / secs,
        messages as f64 / secs,
        messages as f64 / pages as f64
    );

    store.close().await?;
    Ok(())
}

fn file_mib(path: &std::path::Path) -> f64 {
    std::fs::metadata(path).map_or(0.0, |m| m.len() as f64 / (1024.0 * 1024.0))
}
