//! The durable store of shadow records: for a route, this node's answer (confidence and
//! label) and the upstream's label for the same request, with the weight the record carries
//! (a shadow check sampled at rate `s` stands for `1 / s` requests; an escalation, always
//! compared, for one). One SQLite file per node, so a restart loses nothing; the oldest
//! records beyond the per-route limit are deleted.
//!
//! Writes go through one writer thread behind a bounded queue: a request never waits on the
//! disk, and when the queue is full the record is dropped (and counted by the caller).
//! Reads (the auto-threshold, `edge-node calibrate --from-shadow`) open their own connection.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use rusqlite::{Connection, params};

use crate::calibrate::Example;

/// Records waiting for the writer before new ones are dropped.
const QUEUE: usize = 4096;

/// Records written between two trims of the oldest.
const TRIM_EVERY: u32 = 256;

/// Why the store could not be opened or read.
#[derive(Debug, thiserror::Error)]
#[error("shadow store {file}: {message}")]
pub struct StoreError {
    /// The SQLite file.
    pub file: PathBuf,
    /// What failed.
    pub message: String,
}

/// One comparison of this node's answer with the upstream's.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The route.
    pub route: String,
    /// When, microseconds since the Unix epoch.
    pub at_us: u64,
    /// This node's plugin's confidence.
    pub confidence: f32,
    /// This node's label.
    pub edge_label: String,
    /// The upstream's label.
    pub upstream_label: String,
    /// How many requests the record stands for.
    pub weight: f64,
}

impl Record {
    /// The record as a calibration example, with the upstream standing in for the truth.
    pub fn example(&self) -> Example {
        let agree = self.edge_label == self.upstream_label;
        Example {
            confidence: f64::from(self.confidence),
            edge_right: agree,
            upstream_right: true,
            agree,
            weight: self.weight,
        }
    }
}

fn open(file: &Path) -> Result<Connection, StoreError> {
    let err = |e: rusqlite::Error| StoreError { file: file.to_owned(), message: e.to_string() };
    let db = Connection::open(file).map_err(err)?;
    // WAL: the reader (auto-threshold) never blocks the writer; a crash loses at most the
    // transaction in flight.
    db.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
    db.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
    db.busy_timeout(std::time::Duration::from_secs(2)).map_err(err)?;
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS records (
            id INTEGER PRIMARY KEY,
            route TEXT NOT NULL,
            at_us INTEGER NOT NULL,
            confidence REAL NOT NULL,
            edge_label TEXT NOT NULL,
            upstream_label TEXT NOT NULL,
            weight REAL NOT NULL
        );
        CREATE INDEX IF NOT EXISTS records_route ON records (route, id);",
    )
    .map_err(err)?;
    Ok(db)
}

/// Writes records off the request path.
#[derive(Debug)]
pub struct ShadowStore {
    file: PathBuf,
    queue: SyncSender<Record>,
}

impl ShadowStore {
    /// Opens (creating if needed) the store at `file`, keeping at most `max_records` per
    /// route, and starts its writer thread.
    pub fn open(file: &Path, max_records: u32) -> Result<ShadowStore, StoreError> {
        let db = open(file)?;
        let (queue, records) = sync_channel(QUEUE);
        let name = file.to_owned();
        std::thread::Builder::new()
            .name("shadow-store".into())
            .spawn(move || write_all(db, &records, max_records, &name))
            .map_err(|e| StoreError {
                file: file.to_owned(),
                message: format!("cannot start its writer: {e}"),
            })?;
        Ok(ShadowStore { file: file.to_owned(), queue })
    }

    /// Queues `record`; `false` if the writer is behind and it was dropped.
    pub fn record(&self, record: Record) -> bool {
        match self.queue.try_send(record) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// The file.
    pub fn file(&self) -> &Path {
        &self.file
    }
}

/// The writer thread: one transaction per batch of queued records; ends when the store is
/// dropped.
fn write_all(mut db: Connection, records: &Receiver<Record>, max_records: u32, file: &Path) {
    let mut since_trim = 0u32;
    while let Ok(first) = records.recv() {
        let batch: Vec<Record> = std::iter::once(first).chain(records.try_iter()).collect();
        let written = insert(&mut db, &batch).and_then(|()| {
            since_trim += batch.len() as u32;
            if since_trim < TRIM_EVERY {
                return Ok(());
            }
            since_trim = 0;
            trim(&db, max_records)
        });
        if let Err(e) = written {
            tracing::warn!(file = %file.display(), error = %e, "shadow records lost");
        }
    }
}

fn insert(db: &mut Connection, batch: &[Record]) -> rusqlite::Result<()> {
    let tx = db.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO records (route, at_us, confidence, edge_label, upstream_label, weight)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for r in batch {
            let at = i64::try_from(r.at_us).unwrap_or(i64::MAX);
            stmt.execute(params![
                r.route,
                at,
                f64::from(r.confidence),
                r.edge_label,
                r.upstream_label,
                r.weight
            ])?;
        }
    }
    tx.commit()
}

/// Deletes each route's records beyond the newest `keep`.
fn trim(db: &Connection, keep: u32) -> rusqlite::Result<()> {
    db.execute(
        "DELETE FROM records WHERE id IN (
            SELECT id FROM (
                SELECT id, ROW_NUMBER() OVER (PARTITION BY route ORDER BY id DESC) AS newer
                FROM records
            ) WHERE newer > ?1
        )",
        params![keep],
    )?;
    Ok(())
}

/// The newest `limit` records of `route` in the store at `file`, newest first.
pub fn read_recent(file: &Path, route: &str, limit: usize) -> Result<Vec<Record>, StoreError> {
    let err = |e: rusqlite::Error| StoreError { file: file.to_owned(), message: e.to_string() };
    if !file.exists() {
        return Err(StoreError {
            file: file.to_owned(),
            message: "no such file (has the node shadowed any request?)".into(),
        });
    }
    let db = open(file)?;
    let mut stmt = db
        .prepare(
            "SELECT route, at_us, confidence, edge_label, upstream_label, weight FROM records
             WHERE route = ?1 ORDER BY id DESC LIMIT ?2",
        )
        .map_err(err)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt
        .query_map(params![route, limit], |row| {
            Ok(Record {
                route: row.get(0)?,
                at_us: u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
                confidence: row.get::<_, f64>(2)? as f32,
                edge_label: row.get(3)?,
                upstream_label: row.get(4)?,
                weight: row.get(5)?,
            })
        })
        .map_err(err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SQLite compiled in is the one `.cargo/config.toml` asks for: it cannot load
    /// extensions and has no full-text search.
    #[test]
    fn sqlite_is_built_without_extension_loading_or_full_text_search() {
        let db = Connection::open_in_memory().unwrap();
        let mut stmt = db.prepare("PRAGMA compile_options").unwrap();
        let options: Vec<String> =
            stmt.query_map([], |row| row.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
        assert!(options.iter().any(|o| o == "OMIT_LOAD_EXTENSION"), "{options:?}");
        assert!(!options.iter().any(|o| o.starts_with("ENABLE_FTS")), "{options:?}");
    }

    fn record(i: u32) -> Record {
        Record {
            route: if i.is_multiple_of(2) { "a".into() } else { "b".into() },
            at_us: u64::from(i),
            confidence: 0.5,
            edge_label: "3".into(),
            upstream_label: if i.is_multiple_of(3) { "3".into() } else { "5".into() },
            weight: 20.0,
        }
    }

    #[test]
    fn records_survive_a_restart_and_the_oldest_are_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("shadow.sqlite");
        {
            let store = ShadowStore::open(&file, 100).unwrap();
            for i in 0..600 {
                assert!(store.record(record(i)));
            }
            // Dropping the store ends the writer once the queue is empty.
        }
        // The writer finishes on its own thread: wait for the last batch.
        let mut recent = Vec::new();
        for _ in 0..200 {
            recent = read_recent(&file, "a", 1000).unwrap();
            if recent.first().is_some_and(|r| r.at_us == 598) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(recent.first().map(|r| r.at_us), Some(598), "newest first");
        assert!(recent.len() <= 100 + TRIM_EVERY as usize, "{} kept", recent.len());
        let e = recent[0].example();
        assert_eq!((e.agree, e.weight), (false, 20.0));
        let err = read_recent(&dir.path().join("none.sqlite"), "a", 1).unwrap_err().to_string();
        assert!(err.contains("none.sqlite") && err.contains("no such file"), "{err}");
    }
}
