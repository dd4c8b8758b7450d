use std::sync::Arc;
use std::time::Instant;
use bytes::Bytes;
use longlink_store::{MessageStore, NewMessage, SqliteOptions, SqliteStore, UserKey};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rusqlite::Connection;

const SQL: &str = "SELECT m.msgid, m.from_appcode, m.from_uid, m.from_device, m.client_msg_id, m.to_appcode, m.to_uid, m.msgtype, m.content_type, m.msgcontent, m.senddate, m.log_id FROM inbox AS i CROSS JOIN messages AS m ON m.msgid = i.msgid WHERE i.owner_appcode = ?1 AND i.owner_uid = ?2 AND i.msgid > ?3 AND NOT EXISTS (SELECT 1 FROM acks AS a WHERE a.owner_appcode = ?1 AND a.owner_uid = ?2 AND a.device = ?4 AND a.msgid = i.msgid) ORDER BY i.msgid ASC LIMIT ?5";

fn bench(conn: &Connection, label: &str, simple: bool) {
    let mut rng = StdRng::seed_from_u64(5);
    let sql = if simple { "SELECT i.msgid FROM inbox AS i WHERE i.owner_appcode = ?1 AND i.owner_uid = ?2 AND i.msgid > ?3 AND ?4 = ?4 ORDER BY i.msgid LIMIT ?5" } else { SQL };
    let mut stmt = conn.prepare(sql).unwrap();
    let t = Instant::now();
    let mut rows = 0;
    for _ in 0..3000 {
        let uid = format!("user-{}", rng.random_range(0..10000));
        let mut q = stmt.query(rusqlite::params![1, uid, 0, "reader", 51]).unwrap();
        while let Some(_r) = q.next().unwrap() { rows += 1; }
    }
    println!("{label}: {:.1} us/query, {rows} rows", t.elapsed().as_secs_f64() * 1e6 / 3000.0);
}

#[tokio::main]
async fn main() {
    let dir = std::path::PathBuf::from("/tmp/expdb");
    if !dir.join("messages.sqlite3").exists() {
        let store = Arc::new(SqliteStore::open(&dir, SqliteOptions::default()).unwrap());
        let tasks: Vec<_> = (0..256).map(|task| { let store = store.clone(); tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(task);
            let mut i = task as usize;
            while i < 100_000 {
                let msg = NewMessage { from: UserKey::new(1, format!("sender-{task}")), from_device: "b".into(), client_msg_id: format!("c{i}"),
                    to: UserKey::new(1, format!("user-{}", rng.random_range(0..10000))), msgtype: 1, content_type: 0, content: Bytes::from(vec![b'x'; 200]), log_id: 0 };
                store.append(msg).await.unwrap();
                i += 256;
            }
        })}).collect();
        for t in tasks { t.await.unwrap(); }
        // leave the WAL in place: drop without checkpoint is impossible; copy files instead
        std::process::Command::new("cp").args(["/tmp/expdb/messages.sqlite3", "/tmp/expdb/messages.sqlite3-wal", "/tmp/expdb/messages.sqlite3-shm", "/tmp/"]).status().unwrap();
        drop(store);
    }
    let ro = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(dir.join("messages.sqlite3"), ro).unwrap();
    let wal: u64 = std::fs::metadata(dir.join("messages.sqlite3-wal")).map(|m| m.len()).unwrap_or(0);
    println!("wal bytes {wal}");
    bench(&conn, "ro default", false);
    bench(&conn, "ro default again", false);
    bench(&conn, "ro inbox only", true);
    conn.pragma_update(None, "cache_size", -65536).unwrap();
    bench(&conn, "ro cache 64M", false);
    bench(&conn, "ro cache 64M again", false);
    conn.pragma_update(None, "mmap_size", 1i64 << 30).unwrap();
    bench(&conn, "ro mmap", false);
    drop(conn);
    let rw = Connection::open(dir.join("messages.sqlite3")).unwrap();
    let r: (i64,i64,i64) = rw.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
    println!("checkpoint {r:?}");
    bench(&rw, "rw after checkpoint", false);
    let conn = Connection::open_with_flags(dir.join("messages.sqlite3"), ro).unwrap();
    bench(&conn, "ro after checkpoint", false);
}
