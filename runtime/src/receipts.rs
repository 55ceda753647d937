//! The receipt log: a sample of answers' receipts (their KServe `parameters`: who answered,
//! the confidences, threshold and mode, models, timings), one JSON object per line, for
//! audit. Written by one thread behind a bounded queue, so a request never waits on the
//! disk: when the queue is full the receipt is dropped and counted. The file is rotated by
//! size: `receipts.jsonl` becomes `receipts.jsonl.1`, the older ones move up, and only the
//! newest `keep` rotated files stay.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use crate::config::ReceiptSettings;

/// Receipts waiting for the writer before new ones are dropped.
const QUEUE: usize = 4096;

/// Where receipts go.
#[derive(Debug)]
pub struct ReceiptLog {
    sample: f64,
    queue: SyncSender<String>,
}

impl ReceiptLog {
    /// Opens (appending) the log `settings` name and starts its writer.
    pub fn open(settings: &ReceiptSettings) -> std::io::Result<ReceiptLog> {
        let file = append(&settings.path)?;
        let (queue, lines) = sync_channel(QUEUE);
        let writer =
            Writer { path: settings.path.clone(), file, max_bytes: settings.max_bytes, keep: settings.keep };
        std::thread::Builder::new().name("receipts".into()).spawn(move || writer.run(&lines))?;
        Ok(ReceiptLog { sample: settings.sample, queue })
    }

    /// Whether the request `id` is one of the sample to log.
    pub fn samples(&self, id: u64) -> bool {
        self.sample >= 1.0 || (id % 1_000_000) as f64 / 1_000_000.0 < self.sample
    }

    /// Queues one receipt line (without its newline); `false` if it was dropped.
    pub fn log(&self, line: String) -> bool {
        match self.queue.try_send(line) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}

fn append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

struct Writer {
    path: PathBuf,
    file: File,
    max_bytes: u64,
    keep: u32,
}

impl Writer {
    fn run(mut self, lines: &Receiver<String>) {
        while let Ok(line) = lines.recv() {
            if let Err(e) = self.write(&line) {
                tracing::warn!(file = %self.path.display(), error = %e, "receipt not logged");
            }
        }
    }

    fn write(&mut self, line: &str) -> std::io::Result<()> {
        if self.file.metadata()?.len() + line.len() as u64 + 1 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line.as_bytes())?;
        self.file.write_all(b"\n")
    }

    /// `path.{keep-1}` → `path.{keep}`, ..., `path` → `path.1`, then a fresh `path`.
    fn rotate(&mut self) -> std::io::Result<()> {
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..self.keep).rev() {
                if numbered(n).exists() {
                    std::fs::rename(numbered(n), numbered(n + 1))?;
                }
            }
            std::fs::rename(&self.path, numbered(1))?;
        }
        self.file = append(&self.path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_rotate_by_size_and_keep_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts.jsonl");
        let settings = ReceiptSettings { path: path.clone(), sample: 1.0, max_bytes: 100, keep: 2 };
        let log = ReceiptLog::open(&settings).unwrap();
        for i in 0..20 {
            assert!(log.log(format!("{{\"n\":{i:03},\"pad\":\"xxxxxxxx\"}}")));
        }
        drop(log);
        let newest = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let mut last = String::new();
        for _ in 0..100 {
            last = newest(&path);
            if last.contains("\"n\":019") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(last.contains("\"n\":019"), "{last}");
        assert!(last.len() <= 100);
        assert!(dir.path().join("receipts.jsonl.2").exists());
        assert!(!dir.path().join("receipts.jsonl.3").exists());
        let half = ReceiptLog { sample: 0.5, queue: sync_channel(1).0 };
        let taken = (0..10_000u64).filter(|&id| half.samples(id * 7919)).count();
        assert!((4_000..6_000).contains(&taken), "{taken}");
    }
}
