//! Dynamic batching: many callers' small model runs gathered into one backend batch.
//!
//! A central node answers escalations from many edges at once, each a batch of one. Run
//! one by one, a GPU spends its time on per-run fixed costs (encoding, submission,
//! readback); run together, those costs are paid once per batch. [`BatchedModel`] wraps a
//! [`PreparedModel`] and keeps its interface: a caller's `run` joins a shared queue, a
//! worker thread takes the queue's head plus whatever arrives within the batching delay
//! (up to `max_batch` rows), runs it as one batch, and hands every caller its own rows.
//!
//! Each caller blocks in `run` (the sandbox runs a batched model off the async runtime's
//! workers: [`PreparedModel::computes_on_caller`] says it waits). A caller is always
//! answered: with its rows, with the batch's error, or, if [`BatchSettings::max_waiting`]
//! callers already wait, at once with an error saying so. A node sets that bound to its
//! admission limit: each admitted request is one single-threaded guest, which waits on at
//! most one model call at a time, so an admitted request never finds the queue full. A batch
//! of N equals N single runs for every backend (the conformance suite checks it), so batching
//! changes no answer beyond the rounding of the backend's batched kernels.
//!
//! [`BatchingBackend`] wraps a [`Backend`] so that every model it prepares is batched; its
//! delay can be changed while serving (the node's modes set it).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::backend::{
    Backend, BackendError, BackendKind, ModelInfo, PrepareOptions, PreparedModel, check_inputs,
};
use crate::tensor::Tensor;

/// Callers that may wait by default, in multiples of `max_batch`, before more are refused.
const QUEUE_BATCHES: usize = 16;

/// Batching parameters shared by every model of a [`BatchingBackend`].
#[derive(Debug, Clone)]
pub struct BatchSettings {
    /// Most rows in one backend run.
    pub max_batch: usize,
    /// Worker threads per model, each running one batch at a time.
    pub workers: usize,
    /// Measure each model at load and batch only up to a size that pays for the handoff to a
    /// batching thread (see [`cheapest_batch`]); off, every model batches up to `max_batch`.
    pub calibrate: bool,
    /// Most callers waiting for a batch at once; more are refused at once. Default
    /// `16 × max_batch`.
    pub max_waiting: usize,
    delay_us: Arc<AtomicU64>,
}

impl BatchSettings {
    /// `max_batch` rows at most, waiting at most `max_delay` after the first row arrives,
    /// with `workers` threads per model (at least one).
    pub fn new(max_batch: usize, max_delay: Duration, workers: usize) -> BatchSettings {
        BatchSettings {
            max_batch: max_batch.max(1),
            workers: workers.max(1),
            calibrate: false,
            max_waiting: max_batch.max(1).saturating_mul(QUEUE_BATCHES),
            delay_us: Arc::new(AtomicU64::new(duration_us(max_delay))),
        }
    }

    /// Turns load-time calibration on or off.
    pub fn calibrated(mut self, calibrate: bool) -> BatchSettings {
        self.calibrate = calibrate;
        self
    }

    /// At most `callers` wait for a batch at once (at least one).
    pub fn max_waiting(mut self, callers: usize) -> BatchSettings {
        self.max_waiting = callers.max(1);
        self
    }

    /// The current batching delay.
    pub fn max_delay(&self) -> Duration {
        Duration::from_micros(self.delay_us.load(Ordering::Relaxed))
    }

    /// Changes the batching delay of every model sharing these settings, from the next batch.
    pub fn set_max_delay(&self, delay: Duration) {
        self.delay_us.store(duration_us(delay), Ordering::Relaxed);
    }
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Counts of what the batcher did, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Backend runs made.
    pub batches: u64,
    /// Rows run, over all batches.
    pub rows: u64,
    /// Largest batch run, in rows.
    pub largest: u64,
    /// Callers refused because the queue was full.
    pub refused: u64,
}

/// Called with the model's name and the row count of every batch run (a metrics histogram,
/// for instance).
pub type BatchObserver = Arc<dyn Fn(&str, usize) + Send + Sync>;

/// Wraps a backend so that every model it prepares runs through a [`BatchedModel`].
pub struct BatchingBackend {
    inner: Arc<dyn Backend>,
    settings: BatchSettings,
    observer: Option<BatchObserver>,
}

impl std::fmt::Debug for BatchingBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchingBackend")
            .field("inner", &self.inner)
            .field("settings", &self.settings)
            .finish()
    }
}

impl BatchingBackend {
    /// Batches every model `inner` prepares; `observer` sees each batch's size.
    pub fn new(inner: Arc<dyn Backend>, settings: BatchSettings, observer: Option<BatchObserver>) -> Self {
        BatchingBackend { inner, settings, observer }
    }

    /// The settings its models share (to change the delay while serving).
    pub fn settings(&self) -> &BatchSettings {
        &self.settings
    }
}

impl Backend for BatchingBackend {
    fn kind(&self) -> BackendKind {
        self.inner.kind()
    }

    fn prepare_with(
        &self,
        name: &str,
        onnx: &[u8],
        options: &PrepareOptions,
    ) -> Result<Arc<dyn PreparedModel>, BackendError> {
        let model = self.inner.prepare_with(name, onnx, options)?;
        Ok(Arc::new(BatchedModel::new(model, self.settings.clone(), self.observer.clone())?))
    }
}

/// One caller's rows waiting for a batch.
struct Pending {
    inputs: Vec<Tensor>,
    rows: usize,
    arrived: Instant,
    reply: mpsc::SyncSender<Result<Vec<Tensor>, BackendError>>,
}

struct Queue {
    waiting: VecDeque<Pending>,
    rows: usize,
    closed: bool,
}

struct Shared {
    model: Arc<dyn PreparedModel>,
    settings: BatchSettings,
    /// `settings.max_batch`, or less after calibration.
    max_batch: usize,
    queue: Mutex<Queue>,
    arrived: Condvar,
    stats: Mutex<BatchStats>,
    observer: Option<BatchObserver>,
}

/// A prepared model whose concurrent callers are served in shared batches.
pub struct BatchedModel {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BatchedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchedModel")
            .field("model", &self.shared.model.info().name)
            .field("settings", &self.shared.settings)
            .finish()
    }
}

impl BatchedModel {
    /// Starts `settings.workers` threads that run `model` in batches (none when calibration
    /// finds that batching does not pay: then `run` goes straight to the model).
    pub fn new(
        model: Arc<dyn PreparedModel>,
        settings: BatchSettings,
        observer: Option<BatchObserver>,
    ) -> Result<BatchedModel, BackendError> {
        let max_batch = if settings.calibrate && settings.max_batch > 1 {
            let handoff = handoff_us();
            let (best, table) = cheapest_batch(&*model, settings.max_batch, handoff)?;
            let table: Vec<String> = table.iter().map(|(b, us)| format!("b{b} {us:.1} us/row")).collect();
            tracing::info!(
                model = %model.info().name,
                batch = best,
                measured = %table.join(", "),
                handoff_us = format!("{handoff:.1}"),
                "batching calibrated: {}",
                if best == 1 {
                    "no batch saves a row more than the handoff to a batching thread costs, batching off"
                } else {
                    "batching on"
                }
            );
            best
        } else {
            settings.max_batch
        };
        let workers = if max_batch > 1 { settings.workers } else { 0 };
        let shared = Arc::new(Shared {
            model,
            settings,
            max_batch,
            queue: Mutex::new(Queue { waiting: VecDeque::new(), rows: 0, closed: false }),
            arrived: Condvar::new(),
            stats: Mutex::new(BatchStats::default()),
            observer,
        });
        for i in 0..workers {
            let worker = shared.clone();
            std::thread::Builder::new()
                .name(format!("batch-{}-{i}", shared.model.info().name))
                .spawn(move || worker.work())
                .map_err(|e| {
                    // The workers already started would otherwise wait on the queue forever.
                    shared.queue.lock().closed = true;
                    shared.arrived.notify_all();
                    BackendError::Run {
                        model: shared.model.info().name.clone(),
                        why: format!("cannot start a batching thread: {e}"),
                    }
                })?;
        }
        Ok(BatchedModel { shared })
    }

    /// Most rows this model runs at once (1: batching is off for it).
    pub fn max_batch(&self) -> usize {
        self.shared.max_batch
    }

    /// Callers waiting for a batch now.
    pub fn waiting(&self) -> usize {
        self.shared.queue.lock().waiting.len()
    }

    /// What the batcher has done so far.
    pub fn stats(&self) -> BatchStats {
        *self.shared.stats.lock()
    }
}

impl Drop for BatchedModel {
    fn drop(&mut self) {
        // Workers finish what is queued, then exit.
        self.shared.queue.lock().closed = true;
        self.shared.arrived.notify_all();
    }
}

impl PreparedModel for BatchedModel {
    fn info(&self) -> &ModelInfo {
        self.shared.model.info()
    }

    fn computes_on_caller(&self) -> bool {
        // Batching off (calibrated away or `max_batch` 1): `run` goes straight to the model.
        self.shared.max_batch == 1 && self.shared.model.computes_on_caller()
    }

    fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, BackendError> {
        let shared = &self.shared;
        let rows = check_inputs(shared.model.info(), inputs)?;
        if rows >= shared.max_batch {
            // Already a full batch: nothing to gain from waiting for others.
            return shared.model.run(inputs);
        }
        let (reply, answer) = mpsc::sync_channel(1);
        {
            let mut queue = shared.queue.lock();
            let limit = shared.settings.max_waiting;
            if queue.waiting.len() >= limit {
                drop(queue);
                shared.stats.lock().refused += 1;
                return Err(BackendError::Run {
                    model: shared.model.info().name.clone(),
                    why: format!("batch queue full ({limit} callers waiting)"),
                });
            }
            queue.rows += rows;
            queue.waiting.push_back(Pending {
                inputs: inputs.to_vec(),
                rows,
                arrived: Instant::now(),
                reply,
            });
        }
        shared.arrived.notify_one();
        // A worker always answers or drops the sender (a worker lost to a panic).
        answer.recv().unwrap_or_else(|_| {
            Err(BackendError::Run {
                model: shared.model.info().name.clone(),
                why: "the batching thread stopped before answering".into(),
            })
        })
    }
}

impl Shared {
    fn work(&self) {
        while let Some(batch) = self.next_batch() {
            // The backend's own panics are caught in `guarded_run`. Any other (an observer's)
            // unwinds through here, dropping the batch's reply senders: its callers get an
            // error at once, and this worker goes on serving the queue.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_batch(batch)));
        }
    }

    /// Waits for the queue's head, then for more rows until the batch is full or the head
    /// has waited the batching delay. `None` once closed and drained.
    fn next_batch(&self) -> Option<Vec<Pending>> {
        let mut queue = self.queue.lock();
        loop {
            let Some(head) = queue.waiting.front() else {
                if queue.closed {
                    return None;
                }
                self.arrived.wait(&mut queue);
                continue;
            };
            let until = head.arrived + self.settings.max_delay();
            if queue.rows >= self.max_batch || queue.closed || Instant::now() >= until {
                break;
            }
            // Woken by an arrival (maybe filling the batch) or the head's deadline.
            let _ = self.arrived.wait_until(&mut queue, until);
        }
        let mut batch = Vec::new();
        let mut rows = 0;
        while let Some(next) = queue.waiting.front() {
            if !batch.is_empty() && rows + next.rows > self.max_batch {
                break;
            }
            rows += next.rows;
            batch.extend(queue.waiting.pop_front());
        }
        queue.rows -= rows;
        let more = !queue.waiting.is_empty();
        drop(queue);
        if more {
            // Rows left over: another worker may start on them now.
            self.arrived.notify_one();
        }
        Some(batch)
    }

    fn run_batch(&self, batch: Vec<Pending>) {
        let rows: usize = batch.iter().map(|p| p.rows).sum();
        let result = if batch.len() == 1 {
            self.guarded_run(&batch[0].inputs)
        } else {
            concat_rows(&batch, self.model.info()).and_then(|inputs| self.guarded_run(&inputs))
        };
        {
            let mut stats = self.stats.lock();
            stats.batches += 1;
            stats.rows += rows as u64;
            stats.largest = stats.largest.max(rows as u64);
        }
        if let Some(observe) = &self.observer {
            observe(&self.model.info().name, rows);
        }
        match result {
            Ok(outputs) if batch.len() == 1 => {
                let _ = batch[0].reply.send(Ok(outputs));
            }
            Ok(outputs) => {
                let mut start = 0;
                for pending in &batch {
                    let mine = outputs.iter().map(|t| slice_rows(t, start, pending.rows)).collect();
                    start += pending.rows;
                    // A caller that gave up is no reason to stop answering the others.
                    let _ = pending.reply.send(mine);
                }
            }
            Err(e) => {
                let why = e.to_string();
                for pending in &batch {
                    let _ = pending.reply.send(Err(BackendError::Run {
                        model: self.model.info().name.clone(),
                        why: why.clone(),
                    }));
                }
            }
        }
    }

    /// Runs the model, turning a panic inside the backend into an error for the batch's
    /// callers instead of a dead worker.
    fn guarded_run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, BackendError> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.model.run(inputs))).unwrap_or_else(
            |_| {
                Err(BackendError::Run {
                    model: self.model.info().name.clone(),
                    why: "the backend panicked while running a batch".into(),
                })
            },
        )
    }
}

/// The batch size, among 1, 2, 4, ... up to `max_batch`, that costs least per row, with each
/// size's measured cost (µs per row, best of three runs after a warm-up run).
///
/// Batching pays where a run has a large fixed cost (a GPU's submission and readback); on a
/// CPU a model's cost per row can instead grow with the batch (bigger im2col buffers fall
/// out of cache), and waiting to fill a batch would only add latency. A bigger size is
/// chosen only if it is at least 10% cheaper per row than the best smaller one, so noise
/// does not turn batching on, and if it saves each row more than handing a call to a
/// batching thread and back costs (`handoff_us`, measured by [`handoff_us`]). On a CPU that
/// usually leaves a model unbatched (`docs/performance.md`, "Dynamic batching").
pub(crate) fn cheapest_batch(
    model: &dyn PreparedModel,
    max_batch: usize,
    handoff_us: f64,
) -> Result<(usize, Vec<(usize, f64)>), BackendError> {
    let mut sizes = vec![1];
    while let Some(&last) = sizes.last().filter(|&&b| b < max_batch) {
        sizes.push((last * 2).min(max_batch));
    }
    let mut table = Vec::with_capacity(sizes.len());
    for &batch in &sizes {
        let inputs = model
            .info()
            .inputs
            .iter()
            .map(|spec| {
                let shape: Vec<usize> =
                    std::iter::once(batch).chain(spec.item_shape.iter().copied()).collect();
                let len = crate::tensor::element_count(&shape).unwrap_or(0) * spec.dtype.size();
                Tensor::new(spec.dtype, shape, vec![0; len]).map_err(|e| BackendError::Run {
                    model: model.info().name.clone(),
                    why: format!("calibration input: {e}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        model.run(&inputs)?;
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let t = Instant::now();
            model.run(&inputs)?;
            best = best.min(t.elapsed().as_secs_f64() * 1e6 / batch as f64);
        }
        table.push((batch, best));
    }
    let single = table[0].1;
    let mut chosen = table[0];
    for &(batch, cost) in &table[1..] {
        if cost < 0.9 * chosen.1 && single - cost > handoff_us {
            chosen = (batch, cost);
        }
    }
    Ok((chosen.0, table))
}

/// What handing a call to another thread and getting the answer back costs here, in µs: the
/// median of 200 round trips through a channel pair, as a batched call makes them.
pub(crate) fn handoff_us() -> f64 {
    let (to_worker, requests) = mpsc::sync_channel::<Instant>(1);
    let (to_caller, answers) = mpsc::sync_channel::<Instant>(1);
    let echo = std::thread::spawn(move || {
        while let Ok(t) = requests.recv() {
            if to_caller.send(t).is_err() {
                return;
            }
        }
    });
    let mut samples = Vec::with_capacity(200);
    for _ in 0..220 {
        let t = Instant::now();
        if to_worker.send(t).is_err() || answers.recv().is_err() {
            break;
        }
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    drop(to_worker);
    let _ = echo.join();
    // The first round trips start the thread; the median is what steady calls pay.
    let mut steady: Vec<f64> = samples.into_iter().skip(20).collect();
    steady.sort_by(f64::total_cmp);
    steady.get(steady.len() / 2).copied().unwrap_or(0.0)
}

/// Stacks every caller's inputs along the batch dimension, input by input.
fn concat_rows(batch: &[Pending], info: &ModelInfo) -> Result<Vec<Tensor>, BackendError> {
    let rows: usize = batch.iter().map(|p| p.rows).sum();
    (0..info.inputs.len())
        .map(|i| {
            let first = &batch[0].inputs[i];
            let mut shape = first.shape().to_vec();
            shape[0] = rows;
            let mut data = Vec::with_capacity(first.data().len() / batch[0].rows * rows);
            for p in batch {
                data.extend_from_slice(p.inputs[i].data());
            }
            Tensor::new(first.dtype(), shape, data).map_err(|e| BackendError::Run {
                model: info.name.clone(),
                why: format!("batching inputs: {e}"),
            })
        })
        .collect()
}

/// Rows `start..start + rows` of a batch output.
fn slice_rows(t: &Tensor, start: usize, rows: usize) -> Result<Tensor, BackendError> {
    let total = t.shape().first().copied().unwrap_or(0);
    let bad = || BackendError::Run {
        model: String::new(),
        why: format!("batch output shaped {:?} has fewer than {} rows", t.shape(), start + rows),
    };
    if start + rows > total {
        return Err(bad());
    }
    let row_bytes = t.data().len() / total.max(1);
    let mut shape = t.shape().to_vec();
    shape[0] = rows;
    Tensor::new(t.dtype(), shape, t.data()[start * row_bytes..(start + rows) * row_bytes].to_vec())
        .map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::tract::TractBackend;
    use crate::dataset::{Digits, Split};
    use crate::reference::{self, ReferenceModel, default_models_dir};

    fn edge_model() -> Arc<dyn PreparedModel> {
        let bytes = std::fs::read(ReferenceModel::EdgeFp32.path(&default_models_dir())).unwrap();
        TractBackend::new().prepare("edge", &bytes).unwrap()
    }

    #[test]
    fn concurrent_callers_share_batches_and_get_their_own_rows() {
        let model = edge_model();
        let digits = Digits::load_split(&default_models_dir(), Split::Test).unwrap();
        let n = 48;
        let expected: Vec<Vec<f32>> = (0..n)
            .map(|i| {
                let input = reference::images_to_input(digits.images(i..i + 1)).unwrap();
                model.run(&[input]).unwrap()[0].to_f32().unwrap()
            })
            .collect();
        // A long delay: every batch but the last fills up to max_batch.
        let batched = Arc::new(
            BatchedModel::new(model, BatchSettings::new(16, Duration::from_millis(200), 2), None).unwrap(),
        );
        let got: Vec<Vec<f32>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|i| {
                    let batched = batched.clone();
                    let input = reference::images_to_input(digits.images(i..i + 1)).unwrap();
                    s.spawn(move || batched.run(&[input]).unwrap()[0].to_f32().unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // Equal up to the summation order of the backend's batched kernels.
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            let close = g.iter().zip(e).all(|(a, b)| (a - b).abs() <= 1e-4 * a.abs().max(b.abs()).max(1.0));
            assert!(close, "caller {i} got {g:?}, its single run gives {e:?}");
        }
        let stats = batched.stats();
        assert_eq!(stats.rows, n as u64);
        assert!(stats.largest > 1, "48 concurrent callers never shared a batch: {stats:?}");
        assert!(stats.largest <= 16, "a batch exceeded max_batch: {stats:?}");
    }

    /// A panic outside the backend (here, the observer's) fails that batch's callers at once
    /// and leaves the worker serving: nobody waits forever.
    #[test]
    fn a_panicking_observer_fails_its_batch_and_the_next_one_is_served() {
        let calls = Arc::new(AtomicU64::new(0));
        let seen = calls.clone();
        let observer: BatchObserver = Arc::new(move |_, _| {
            assert!(seen.fetch_add(1, Ordering::SeqCst) > 0, "the first batch's observer panics");
        });
        let settings = BatchSettings::new(4, Duration::from_millis(1), 1);
        let batched = BatchedModel::new(edge_model(), settings, Some(observer)).unwrap();
        let input = Tensor::from_f32(vec![1, 1, 28, 28], &[0.0; 784]).unwrap();
        let first = batched.run(std::slice::from_ref(&input)).unwrap_err().to_string();
        assert!(first.contains("stopped before answering"), "{first}");
        assert_eq!(batched.run(std::slice::from_ref(&input)).unwrap()[0].shape(), &[1, 10]);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    /// Beyond `max_waiting`, a caller is refused at once, saying why; those waiting are
    /// still answered.
    #[test]
    fn a_full_queue_refuses_at_once_and_still_answers_the_waiting() {
        let settings = BatchSettings::new(16, Duration::from_secs(2), 1).max_waiting(2);
        let batched = Arc::new(BatchedModel::new(edge_model(), settings, None).unwrap());
        let input = Tensor::from_f32(vec![1, 1, 28, 28], &[0.0; 784]).unwrap();
        std::thread::scope(|s| {
            let waiting: Vec<_> = (0..2)
                .map(|_| {
                    let (batched, input) = (batched.clone(), input.clone());
                    s.spawn(move || batched.run(&[input]))
                })
                .collect();
            let start = Instant::now();
            while batched.waiting() < 2 {
                assert!(start.elapsed() < Duration::from_secs(10), "the callers never queued");
                std::thread::sleep(Duration::from_millis(1));
            }
            let refused = batched.run(std::slice::from_ref(&input)).unwrap_err().to_string();
            assert!(refused.contains("batch queue full (2 callers waiting)"), "{refused}");
            for w in waiting {
                assert_eq!(w.join().unwrap().unwrap()[0].shape(), &[1, 10]);
            }
        });
        let stats = batched.stats();
        assert_eq!((stats.refused, stats.rows, stats.batches), (1, 2, 1));
    }

    #[test]
    fn a_lone_caller_waits_at_most_the_delay_and_bad_inputs_fail_fast() {
        let batched =
            BatchedModel::new(edge_model(), BatchSettings::new(64, Duration::from_millis(5), 1), None)
                .unwrap();
        let input = Tensor::from_f32(vec![1, 1, 28, 28], &[0.0; 784]).unwrap();
        let out = batched.run(&[input]).unwrap();
        assert_eq!(out[0].shape(), &[1, 10]);
        assert_eq!(batched.stats().batches, 1);
        let wrong = Tensor::from_f32(vec![1, 784], &[0.0; 784]).unwrap();
        assert!(matches!(batched.run(&[wrong]), Err(BackendError::Input { .. })));
        assert_eq!(batched.stats().batches, 1, "a bad input must not reach the queue");
    }

    #[test]
    fn calibration_measures_every_size_and_never_picks_a_dearer_one() {
        let (best, table) = cheapest_batch(&*edge_model(), 8, 0.0).unwrap();
        assert_eq!(table.iter().map(|(b, _)| *b).collect::<Vec<_>>(), vec![1, 2, 4, 8]);
        let cost = |b: usize| table.iter().find(|(s, _)| *s == b).unwrap().1;
        assert!(table.iter().all(|(_, us)| us.is_finite() && *us > 0.0), "{table:?}");
        assert!(cost(best) <= cost(1), "chose b{best} though b1 is cheaper: {table:?}");
        // A handoff dearer than any saving keeps the model unbatched.
        assert_eq!(cheapest_batch(&*edge_model(), 8, 1e9).unwrap().0, 1);
        let handoff = handoff_us();
        assert!(handoff > 0.0 && handoff < 10_000.0, "{handoff}");
        let batched = BatchedModel::new(
            edge_model(),
            BatchSettings::new(8, Duration::from_millis(1), 1).calibrated(true),
            None,
        )
        .unwrap();
        assert!((1..=8).contains(&batched.max_batch()));
        let input = Tensor::from_f32(vec![1, 1, 28, 28], &[0.0; 784]).unwrap();
        assert_eq!(batched.run(&[input]).unwrap()[0].shape(), &[1, 10]);
    }

    #[test]
    fn rows_are_split_back_exactly() {
        let t = Tensor::from_f32(vec![3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        assert_eq!(slice_rows(&t, 1, 2).unwrap().to_f32().unwrap(), vec![3.0, 4.0, 5.0, 6.0]);
        assert!(slice_rows(&t, 2, 2).is_err());
    }
}
