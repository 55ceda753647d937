//! The test split streamed to the edge over KServe v2 HTTP: a few clients each take the
//! next image in turn, optionally paced so that request `i` is sent no earlier than
//! `i / rate` seconds into the run, under a progress bar.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use cascade_runtime::Digits;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

use super::answer::{Answer, Class};

/// One request: which image, when it was sent and answered (on the stream's clock), and
/// the answer or why there was none.
#[derive(Debug, Clone)]
pub(super) struct Record {
    /// The test image's index.
    pub(super) image: usize,
    /// When the request was sent.
    pub(super) sent: Duration,
    /// When its response had been read.
    pub(super) done: Duration,
    /// The answer, or the failure in one line.
    pub(super) answer: Result<Answer, String>,
}

impl Record {
    /// Send to response read, in microseconds.
    pub(super) fn latency_us(&self) -> f64 {
        (self.done - self.sent).as_secs_f64() * 1e6
    }
}

/// What to send, and how.
#[derive(Debug, Clone)]
pub(super) struct Stream {
    /// The edge's inference URL.
    pub(super) url: String,
    /// The images; the first `n` are sent, once each.
    pub(super) images: Arc<Digits>,
    /// How many to send.
    pub(super) n: usize,
    /// Clients sending at once, each waiting for its answer before its next request.
    pub(super) concurrency: usize,
    /// Requests per second over all clients; `None`: as fast as the clients go.
    pub(super) rate: Option<f64>,
}

/// The progress bar and the running counts it shows. Drawn on stderr only when stderr is a
/// terminal (indicatif hides it otherwise), so it never mixes with `--json` on stdout.
pub(super) struct Progress {
    bar: ProgressBar,
    /// Answers per [`Class`] (in [`Class::ALL`] order), then failures.
    counts: [AtomicUsize; Class::ALL.len() + 1],
}

impl Progress {
    pub(super) fn new(n: usize) -> Progress {
        let bar = ProgressBar::new(n as u64).with_prefix("streaming");
        bar.set_style(
            ProgressStyle::with_template("   {prefix} [{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        Progress { bar, counts: Default::default() }
    }

    fn record(&self, record: &Record) {
        let slot = match &record.answer {
            Ok(a) => Class::ALL.iter().position(|&c| c == a.class).unwrap_or(0),
            Err(_) => Class::ALL.len(),
        };
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        let count = |i: usize| self.counts[i].load(Ordering::Relaxed);
        let mut message: Vec<String> =
            Class::ALL.iter().enumerate().map(|(i, c)| format!("{} {}", c.name(), count(i))).collect();
        message.push(format!("failed {}", count(Class::ALL.len())));
        self.bar.set_message(message.join(" · "));
        self.bar.inc(1);
    }

    /// Prints `line` on stderr above the bar (whether or not the bar is drawn).
    pub(super) fn say(&self, line: String) {
        self.bar.suspend(|| eprintln!("{line}"));
    }

    /// Removes the bar.
    pub(super) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Sends `stream`'s requests and returns one record per request, in the order answered.
/// `answered` counts the requests answered (or failed) so far, for the outage to wait on.
pub(super) async fn run(
    stream: &Stream,
    client: &reqwest::Client,
    clock: Instant,
    progress: &Arc<Progress>,
    answered: &Arc<watch::Sender<usize>>,
) -> anyhow::Result<Vec<Record>> {
    let next = Arc::new(AtomicUsize::new(0));
    let url = Arc::new(stream.url.clone());
    let mut workers = Vec::new();
    for _ in 0..stream.concurrency.max(1) {
        let (client, url, next, images) = (client.clone(), url.clone(), next.clone(), stream.images.clone());
        let (progress, answered, n, rate) = (progress.clone(), answered.clone(), stream.n, stream.rate);
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let image = next.fetch_add(1, Ordering::Relaxed);
                if image >= n {
                    return out;
                }
                if let Some(rate) = rate {
                    let due = clock + Duration::from_secs_f64(image as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let sent = clock.elapsed();
                let answer = infer(&client, &url, images.image(image)).await.map_err(|e| format!("{e:#}"));
                let record = Record { image, sent, done: clock.elapsed(), answer };
                progress.record(&record);
                answered.send_modify(|count| *count += 1);
                out.push(record);
            }
        }));
    }
    let mut records = Vec::with_capacity(stream.n);
    for worker in workers {
        records.extend(worker.await?);
    }
    records.sort_by_key(|r| r.done);
    Ok(records)
}

/// Sends one image as a KServe v2 request and reads the answer.
async fn infer(client: &reqwest::Client, url: &str, pixels: &[u8]) -> anyhow::Result<Answer> {
    let body = serde_json::json!({
        "inputs": [{"name": "image", "shape": [28, 28], "datatype": "UINT8", "data": pixels}]
    });
    let response = client.post(url).json(&body).send().await?;
    let status = response.status();
    let json: serde_json::Value = response.json().await?;
    if !status.is_success() {
        bail!("HTTP {status}: {json}");
    }
    Answer::from_response(&json)
}
