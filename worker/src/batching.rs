//! `batching` owns cross-task model batching: the tasks a worker runs at once send their model
//! calls to one [`Batcher`] per model, which groups the calls that are waiting (same input
//! shapes after the batch dimension) into one forward pass and hands each caller its rows. A
//! batch closes when every task that has a call in flight is in it, when it holds
//! `max_rows` rows, or `window` after its first call. As in text-embeddings-inference's queue,
//! the batcher is a thread that owns its state and is driven through a command channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use candle_core::Tensor;

/// A model's batched forward: inputs stacked along dimension 0, output rows in the same order.
pub type ForwardFn = Box<dyn Fn(&[Tensor]) -> candle_core::Result<Tensor> + Send>;

/// What the batcher reports per forward pass: how many calls it merged (the batch-size metric).
pub type ObserveFn = Box<dyn Fn(usize) + Send>;

/// Why a batched call failed.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The inputs are not a batch: no inputs, or inputs whose first dimensions differ.
    #[error("bad batch inputs: {0}")]
    Inputs(String),
    /// The forward pass failed (for every call in its batch).
    #[error("model forward failed: {0}")]
    Forward(String),
    /// The batcher thread is gone.
    #[error("the model batcher stopped")]
    Stopped,
}

/// How a batcher groups calls.
#[derive(Debug, Clone, Copy)]
pub struct BatchOptions {
    /// Most rows (summed first dimensions) in one forward pass.
    pub max_rows: usize,
    /// Longest a call waits for others to join its batch.
    pub window: Duration,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions { max_rows: 32, window: Duration::from_millis(5) }
    }
}

/// One call: its inputs and where to send its rows.
struct Call {
    inputs: Vec<Tensor>,
    rows: usize,
    reply: mpsc::SyncSender<Result<Tensor, BatchError>>,
}

/// The batcher's command set.
enum Command {
    /// Run a call in the next batch that fits it.
    Run(Call),
}

/// Batches one model's forward calls across the tasks of a worker. Cheap to clone.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Command>,
    /// Callers between [`Batcher::session`] and the session's end: the batch size to wait for.
    active: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").field("active", &self.active.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

/// A caller's registration: while it lives, batches wait (up to the window) for its calls.
pub struct Session {
    active: Arc<AtomicUsize>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Batcher {
    /// Starts the batcher thread `name` over `forward`; `observe` hears each batch's call count.
    pub fn spawn(name: &str, opts: BatchOptions, forward: ForwardFn, observe: ObserveFn) -> Self {
        let (tx, rx) = mpsc::channel();
        let active = Arc::new(AtomicUsize::new(0));
        let state = Queue { rx, active: active.clone(), opts, forward, observe };
        std::thread::Builder::new()
            .name(format!("batch-{name}"))
            .spawn(move || state.run())
            .expect("spawning a batcher thread");
        Batcher { tx, active }
    }

    /// Registers a caller that is about to make a series of calls (a sampling loop): batches
    /// wait for its next call rather than closing at once.
    pub fn session(&self) -> Session {
        self.active.fetch_add(1, Ordering::SeqCst);
        Session { active: self.active.clone() }
    }

    /// Runs `inputs` (each with the same first dimension, the call's rows) in a batch and returns
    /// the call's rows of the output. Blocks the calling thread.
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Tensor, BatchError> {
        let rows = match inputs.first() {
            None => return Err(BatchError::Inputs("no inputs".into())),
            Some(t) => t.dims().first().copied().ok_or_else(|| BatchError::Inputs("a scalar input".into()))?,
        };
        if let Some(bad) = inputs.iter().find(|t| t.dims().first() != Some(&rows)) {
            return Err(BatchError::Inputs(format!("first dimensions differ: {rows} and {:?}", bad.dims())));
        }
        let (reply, answer) = mpsc::sync_channel(1);
        self.tx.send(Command::Run(Call { inputs, rows, reply })).map_err(|_| BatchError::Stopped)?;
        answer.recv().map_err(|_| BatchError::Stopped)?
    }
}

/// The batcher thread's state.
struct Queue {
    rx: mpsc::Receiver<Command>,
    active: Arc<AtomicUsize>,
    opts: BatchOptions,
    forward: ForwardFn,
    observe: ObserveFn,
}

impl Queue {
    fn run(self) {
        // Calls that did not fit the last batch open the next one, oldest first.
        let mut carried: std::collections::VecDeque<Call> = std::collections::VecDeque::new();
        loop {
            let first = match carried.pop_front() {
                Some(c) => c,
                None => match self.rx.recv() {
                    Ok(Command::Run(c)) => c,
                    Err(_) => return,
                },
            };
            let deadline = Instant::now() + self.opts.window;
            let mut batch = vec![first];
            batch.extend(carried.drain(..));
            loop {
                let rows: usize = batch.iter().map(|c| c.rows).sum();
                if rows >= self.opts.max_rows || batch.len() >= self.active.load(Ordering::SeqCst) {
                    break;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                match self.rx.recv_timeout(left) {
                    Ok(Command::Run(c)) => batch.push(c),
                    Err(_) => break,
                }
            }
            // Calls whose shapes match the first call's go together, up to max_rows; the rest
            // wait for the next batch.
            let key = signature(&batch[0].inputs);
            let mut rows = 0;
            let mut group = Vec::new();
            for c in batch {
                if signature(&c.inputs) == key && (group.is_empty() || rows + c.rows <= self.opts.max_rows) {
                    rows += c.rows;
                    group.push(c);
                } else {
                    carried.push_back(c);
                }
            }
            self.execute(group);
        }
    }

    fn execute(&self, group: Vec<Call>) {
        (self.observe)(group.len());
        let out = if group.len() == 1 {
            (self.forward)(&group[0].inputs)
        } else {
            let n = group[0].inputs.len();
            (0..n)
                .map(|i| Tensor::cat(&group.iter().map(|c| &c.inputs[i]).collect::<Vec<_>>(), 0))
                .collect::<candle_core::Result<Vec<_>>>()
                .and_then(|stacked| (self.forward)(&stacked))
        };
        match out {
            Ok(out) => {
                let mut at = 0;
                for c in group {
                    let part = out.narrow(0, at, c.rows).map_err(|e| BatchError::Forward(e.to_string()));
                    at += c.rows;
                    let _ = c.reply.send(part);
                }
            }
            Err(e) => {
                for c in group {
                    let _ = c.reply.send(Err(BatchError::Forward(e.to_string())));
                }
            }
        }
    }
}

/// What must match for calls to share a batch: each input's dtype and shape after dimension 0.
fn signature(inputs: &[Tensor]) -> Vec<(candle_core::DType, Vec<usize>)> {
    inputs.iter().map(|t| (t.dtype(), t.dims()[1..].to_vec())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use std::sync::Mutex;

    fn adder(seen: Arc<Mutex<Vec<usize>>>, window: Duration) -> Batcher {
        // Row i of the output: input row + 10·(row's own sum), so a wrong split shows.
        let forward: ForwardFn = Box::new(|xs: &[Tensor]| xs[0].broadcast_add(&(xs[0].sum_keepdim(1)? * 10.0)?));
        let observe: ObserveFn = Box::new(move |n| seen.lock().unwrap().push(n));
        Batcher::spawn("test", BatchOptions { max_rows: 8, window }, forward, observe)
    }

    #[test]
    fn concurrent_sessions_share_a_forward_and_get_their_own_rows() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let b = adder(seen.clone(), Duration::from_secs(30));
        let sessions: Vec<Session> = (0..3).map(|_| b.session()).collect();
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let b = b.clone();
                std::thread::spawn(move || {
                    let x = Tensor::new(&[[i as f32, 1.0]], &Device::Cpu).unwrap();
                    b.run(vec![x]).unwrap().to_vec2::<f32>().unwrap()
                })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            let s = i as f32 + 1.0;
            assert_eq!(h.join().unwrap(), vec![vec![i as f32 + 10.0 * s, 1.0 + 10.0 * s]]);
        }
        drop(sessions);
        // All three were active, so the (30 s) window never had to expire: one forward of three.
        assert_eq!(*seen.lock().unwrap(), vec![3]);
    }

    #[test]
    fn a_lone_caller_is_not_held_and_mismatched_shapes_run_apart() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let b = adder(seen.clone(), Duration::from_millis(200));
        let x = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap();
        let t0 = Instant::now();
        assert_eq!(b.run(vec![x]).unwrap().to_vec2::<f32>().unwrap(), vec![vec![31.0, 32.0], vec![73.0, 74.0]]);
        assert!(t0.elapsed() < Duration::from_millis(200), "no session: the batch closes at once");
        // Two sessions, one call each of a different width: two forwards.
        let _s: Vec<Session> = (0..2).map(|_| b.session()).collect();
        let handles: Vec<_> = [2usize, 3]
            .into_iter()
            .map(|w| {
                let b = b.clone();
                std::thread::spawn(move || {
                    b.run(vec![Tensor::ones((1, w), candle_core::DType::F32, &Device::Cpu).unwrap()])
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
        assert_eq!(seen.lock().unwrap()[1..].iter().sum::<usize>(), 2);
        assert_eq!(seen.lock().unwrap().len(), 3);
        let ones = |r: usize| Tensor::ones((r, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        let bad = b.run(vec![ones(1), ones(2)]);
        assert!(matches!(bad, Err(BatchError::Inputs(_))));
    }
}
