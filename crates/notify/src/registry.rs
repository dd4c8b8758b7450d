//! The device registry: each device's class and its push tokens (one per provider), durable
//! in `notify.sqlite`, and an in-memory index of which users have a device with a token.
//!
//! Why the index: logic asks [`DeviceCache::wants`] for every stored message; most receivers
//! have no push token (web users, bots), and for them the answer must cost one hash lookup,
//! no I/O and no allocation. The index is changed only while the database connection is held
//! (see [`crate::outbox::Db::call`]), right after the commit, so it never runs behind a newer
//! registration.
//!
//! A token belongs to one device: registering a token that another user or device of the same
//! appcode holds moves it (a phone that changed hands must not get the old user's messages).

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use longlink_rpc::notify::{
    DeviceClass, DeviceRecord, MAX_TOKENS_PER_DEVICE, NotifyError, PushToken,
};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

/// Longest uid or device id (the store's limit).
pub const MAX_ID_BYTES: usize = longlink_store::MAX_ID_BYTES;

/// appcode → uid → devices that have at least one token.
#[derive(Debug, Default)]
pub struct DeviceCache {
    users: RwLock<HashMap<u32, HashMap<String, Vec<String>>>>,
}

impl DeviceCache {
    /// Whether (appcode, uid) has a device with a token.
    pub fn wants(&self, appcode: u32, uid: &str) -> bool {
        let users = self.users.read().unwrap_or_else(|e| e.into_inner());
        users
            .get(&appcode)
            .is_some_and(|by_uid| by_uid.contains_key(uid))
    }

    /// The devices of (appcode, uid) that have a token.
    pub fn devices(&self, appcode: u32, uid: &str) -> Vec<String> {
        let users = self.users.read().unwrap_or_else(|e| e.into_inner());
        users
            .get(&appcode)
            .and_then(|by_uid| by_uid.get(uid))
            .cloned()
            .unwrap_or_default()
    }

    /// Sets the devices of (appcode, uid) (empty = forget the user).
    fn set(&self, appcode: u32, uid: &str, devices: Vec<String>) {
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        if devices.is_empty() {
            if let Some(by_uid) = users.get_mut(&appcode) {
                by_uid.remove(uid);
                if by_uid.is_empty() {
                    users.remove(&appcode);
                }
            }
        } else {
            users
                .entry(appcode)
                .or_default()
                .insert(uid.to_owned(), devices);
        }
    }

    /// Rebuilds the whole index from the tokens table (at start).
    ///
    /// # Errors
    /// Any SQLite error.
    pub fn load(&self, conn: &Connection) -> rusqlite::Result<usize> {
        let mut stmt = conn.prepare(
            "SELECT DISTINCT appcode, uid, device FROM tokens ORDER BY appcode, uid, device",
        )?;
        let mut map: HashMap<u32, HashMap<String, Vec<String>>> = HashMap::new();
        let mut count = 0;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, u32>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (appcode, uid, device) = row?;
            map.entry(appcode)
                .or_default()
                .entry(uid)
                .or_default()
                .push(device);
            count += 1;
        }
        *self.users.write().unwrap_or_else(|e| e.into_inner()) = map;
        Ok(count)
    }

    /// Re-reads (appcode, uid)'s devices with tokens after a change.
    fn refresh(&self, conn: &Connection, appcode: u32, uid: &str) -> rusqlite::Result<()> {
        let mut stmt = conn.prepare_cached(
            "SELECT DISTINCT device FROM tokens WHERE appcode = ?1 AND uid = ?2 ORDER BY device",
        )?;
        let devices = stmt
            .query_map(params![appcode, uid], |row| row.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        self.set(appcode, uid, devices);
        Ok(())
    }
}

/// Checks the identifying fields of a registry call.
///
/// # Errors
/// [`NotifyError::InvalidArgument`] naming the bad field.
pub fn validate_ids(uid: &str, device: &str) -> Result<(), NotifyError> {
    for (name, value) in [("uid", uid), ("device", device)] {
        if value.is_empty() || value.len() > MAX_ID_BYTES {
            return Err(NotifyError::InvalidArgument(format!(
                "{name} must be 1 to {MAX_ID_BYTES} bytes"
            )));
        }
    }
    Ok(())
}

/// Checks that each token names a configured provider (the fields themselves:
/// [`longlink_rpc::notify::check_registration`]).
///
/// # Errors
/// [`NotifyError::InvalidArgument`] for an unknown provider.
pub fn check_providers(tokens: &[PushToken], providers: &[String]) -> Result<(), NotifyError> {
    match tokens.iter().find(|t| !providers.contains(&t.provider)) {
        Some(token) => Err(NotifyError::InvalidArgument(format!(
            "push provider {:?} is not configured",
            token.provider
        ))),
        None => Ok(()),
    }
}

fn upsert_device(
    tx: &Transaction<'_>,
    appcode: u32,
    uid: &str,
    device: &str,
    class: &DeviceClass,
    now_ms: u64,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO devices (appcode, uid, device, platform, vendor, app_version, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (appcode, uid, device) DO UPDATE SET platform = excluded.platform,
           vendor = excluded.vendor, app_version = excluded.app_version,
           updated_ms = excluded.updated_ms",
        params![
            appcode,
            uid,
            device,
            class.platform,
            class.vendor,
            class.app_version,
            now_ms.min(i64::MAX as u64) as i64
        ],
    )?;
    Ok(())
}

/// Stores `token` for the device, taking it from any other device of the appcode that held
/// it. Returns the users whose index must be refreshed besides (appcode, uid).
fn put_token(
    tx: &Transaction<'_>,
    appcode: u32,
    uid: &str,
    device: &str,
    token: &PushToken,
    now_ms: u64,
) -> rusqlite::Result<Vec<String>> {
    let mut moved_from = Vec::new();
    {
        let mut stmt = tx.prepare_cached(
            "DELETE FROM tokens WHERE appcode = ?1 AND provider = ?2 AND token = ?3
               AND NOT (uid = ?4 AND device = ?5) RETURNING uid, device",
        )?;
        let rows = stmt.query_map(
            params![appcode, token.provider, token.token, uid, device],
            |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
        )?;
        for row in rows {
            let (other_uid, other_device) = row?;
            drop_device_without_tokens(tx, appcode, &other_uid, &other_device)?;
            if other_uid != uid {
                moved_from.push(other_uid);
            }
        }
    }
    tx.execute(
        "INSERT INTO tokens (appcode, uid, device, provider, token, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (appcode, uid, device, provider) DO UPDATE SET token = excluded.token,
           updated_ms = excluded.updated_ms",
        params![
            appcode,
            uid,
            device,
            token.provider,
            token.token,
            now_ms.min(i64::MAX as u64) as i64
        ],
    )?;
    Ok(moved_from)
}

/// A device without tokens is forgotten: nothing can reach it.
fn drop_device_without_tokens(
    tx: &Transaction<'_>,
    appcode: u32,
    uid: &str,
    device: &str,
) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM devices WHERE appcode = ?1 AND uid = ?2 AND device = ?3
           AND NOT EXISTS (SELECT 1 FROM tokens t WHERE t.appcode = ?1 AND t.uid = ?2
                           AND t.device = ?3)",
        params![appcode, uid, device],
    )?;
    Ok(())
}

/// The registry operations that change rows. Run inside [`crate::outbox::Db::call`].
#[derive(Debug)]
pub enum Change {
    /// Add or replace one token (and the class).
    Register(PushToken),
    /// Replace the class and every token.
    Put(Vec<PushToken>),
}

/// Applies a registration change and refreshes the index; returns the device as stored.
///
/// # Errors
/// [`NotifyError::InvalidArgument`] past [`MAX_TOKENS_PER_DEVICE`],
/// [`NotifyError::Unavailable`] on an SQLite error.
#[allow(clippy::too_many_arguments)] // one registration's fields, passed through as given
pub fn apply(
    conn: &mut Connection,
    cache: &DeviceCache,
    appcode: u32,
    uid: &str,
    device: &str,
    class: &DeviceClass,
    change: Change,
    now_ms: u64,
) -> Result<Option<DeviceRecord>, NotifyError> {
    let tx = conn.transaction().map_err(unavailable)?;
    upsert_device(&tx, appcode, uid, device, class, now_ms).map_err(unavailable)?;
    let mut moved_from = Vec::new();
    match change {
        Change::Register(token) => {
            moved_from
                .extend(put_token(&tx, appcode, uid, device, &token, now_ms).map_err(unavailable)?);
        }
        Change::Put(tokens) => {
            tx.execute(
                "DELETE FROM tokens WHERE appcode = ?1 AND uid = ?2 AND device = ?3",
                params![appcode, uid, device],
            )
            .map_err(unavailable)?;
            for token in &tokens {
                moved_from.extend(
                    put_token(&tx, appcode, uid, device, token, now_ms).map_err(unavailable)?,
                );
            }
        }
    }
    let count: i64 = tx
        .query_row(
            "SELECT COUNT(*) FROM tokens WHERE appcode = ?1 AND uid = ?2 AND device = ?3",
            params![appcode, uid, device],
            |row| row.get(0),
        )
        .map_err(unavailable)?;
    if count > MAX_TOKENS_PER_DEVICE as i64 {
        return Err(NotifyError::InvalidArgument(format!(
            "a device holds at most {MAX_TOKENS_PER_DEVICE} tokens"
        )));
    }
    drop_device_without_tokens(&tx, appcode, uid, device).map_err(unavailable)?;
    tx.commit().map_err(unavailable)?;
    cache.refresh(conn, appcode, uid).map_err(unavailable)?;
    for other in moved_from {
        cache.refresh(conn, appcode, &other).map_err(unavailable)?;
    }
    Ok(list(conn, appcode, uid, Some(device))
        .map_err(unavailable)?
        .into_iter()
        .next())
}

/// Removes the device's token of `provider` (or all of them); returns how many went.
///
/// # Errors
/// [`NotifyError::Unavailable`] on an SQLite error.
pub fn remove(
    conn: &mut Connection,
    cache: &DeviceCache,
    appcode: u32,
    uid: &str,
    device: &str,
    provider: Option<&str>,
) -> Result<u32, NotifyError> {
    let tx = conn.transaction().map_err(unavailable)?;
    let removed = match provider {
        Some(provider) => tx.execute(
            "DELETE FROM tokens WHERE appcode = ?1 AND uid = ?2 AND device = ?3 AND provider = ?4",
            params![appcode, uid, device, provider],
        ),
        None => tx.execute(
            "DELETE FROM tokens WHERE appcode = ?1 AND uid = ?2 AND device = ?3",
            params![appcode, uid, device],
        ),
    }
    .map_err(unavailable)?;
    drop_device_without_tokens(&tx, appcode, uid, device).map_err(unavailable)?;
    tx.commit().map_err(unavailable)?;
    cache.refresh(conn, appcode, uid).map_err(unavailable)?;
    Ok(u32::try_from(removed).unwrap_or(u32::MAX))
}

/// Removes one token if it is still the device's token of that provider (a dead token the
/// provider reported; a newer registration stays).
///
/// # Errors
/// Any SQLite error.
pub fn remove_dead(
    conn: &mut Connection,
    cache: &DeviceCache,
    appcode: u32,
    uid: &str,
    device: &str,
    token: &PushToken,
) -> rusqlite::Result<bool> {
    let tx = conn.transaction()?;
    let removed = tx.execute(
        "DELETE FROM tokens WHERE appcode = ?1 AND uid = ?2 AND device = ?3 AND provider = ?4
           AND token = ?5",
        params![appcode, uid, device, token.provider, token.token],
    )?;
    drop_device_without_tokens(&tx, appcode, uid, device)?;
    tx.commit()?;
    cache.refresh(conn, appcode, uid)?;
    Ok(removed > 0)
}

/// The user's devices (all, or the one named), sorted by device id, with their tokens sorted
/// by provider.
///
/// # Errors
/// Any SQLite error.
pub fn list(
    conn: &Connection,
    appcode: u32,
    uid: &str,
    device: Option<&str>,
) -> rusqlite::Result<Vec<DeviceRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT device, platform, vendor, app_version, updated_ms FROM devices
         WHERE appcode = ?1 AND uid = ?2 AND (?3 IS NULL OR device = ?3) ORDER BY device",
    )?;
    let mut records = stmt
        .query_map(params![appcode, uid, device], |row| {
            Ok(DeviceRecord {
                appcode,
                uid: uid.to_owned(),
                device: row.get(0)?,
                class: DeviceClass {
                    platform: row.get(1)?,
                    vendor: row.get(2)?,
                    app_version: row.get(3)?,
                },
                tokens: Vec::new(),
                updated_ms: u64::try_from(row.get::<_, i64>(4)?).unwrap_or(0),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut tokens = conn.prepare_cached(
        "SELECT provider, token FROM tokens WHERE appcode = ?1 AND uid = ?2 AND device = ?3
         ORDER BY provider",
    )?;
    for record in &mut records {
        record.tokens = tokens
            .query_map(params![appcode, uid, record.device], |row| {
                Ok(PushToken {
                    provider: row.get(0)?,
                    token: row.get(1)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
    }
    Ok(records)
}

/// The device's class and tokens, if it is registered.
///
/// # Errors
/// Any SQLite error.
pub fn device(
    conn: &Connection,
    appcode: u32,
    uid: &str,
    device: &str,
) -> rusqlite::Result<Option<DeviceRecord>> {
    let found: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM devices WHERE appcode = ?1 AND uid = ?2 AND device = ?3",
            params![appcode, uid, device],
            |row| row.get(0),
        )
        .optional()?;
    if found.is_none() {
        return Ok(None);
    }
    Ok(list(conn, appcode, uid, Some(device))?.into_iter().next())
}

/// Which of `devices` are not in `reached` (a set lookup, not a scan per device).
pub fn unreached(devices: Vec<String>, reached: &[String]) -> Vec<String> {
    if reached.is_empty() {
        return devices;
    }
    let reached: HashSet<&str> = reached.iter().map(String::as_str).collect();
    devices
        .into_iter()
        .filter(|d| !reached.contains(d.as_str()))
        .collect()
}

/// An SQLite failure as the contract's error.
pub fn unavailable(e: rusqlite::Error) -> NotifyError {
    NotifyError::Unavailable(format!("notify database: {e}"))
}
