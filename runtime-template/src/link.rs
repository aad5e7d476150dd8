//! Board emulation: a link's bandwidth and latency, and a board's compute speed.
//!
//! All link shaping happens in the coordinator, which sees every transfer of the star: a
//! transfer to or from a worker occupies the coordinator's port (shared by all its transfers,
//! as behind one switch port) for `bytes / min(coordinator, worker bandwidth)`, then waits the
//! link latency. Compute is stretched by the thread's CPU time, not wall time, so emulated
//! boards sharing this machine's cores do not slow each other.

use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bandwidth and one-way latency of a board's link.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    pub bandwidth_mbps: f64,
    pub latency_ms: f64,
}

impl LinkSpec {
    /// Seconds to move `bytes` over this link (latency included).
    pub fn seconds(&self, bytes: usize) -> f64 {
        bytes as f64 * 8.0 / (self.bandwidth_mbps * 1e6) + self.latency_ms / 1e3
    }
}

/// One direction of a port: transfers queue behind each other.
#[derive(Debug)]
struct Port {
    free_at: Mutex<Instant>,
}

impl Port {
    fn new() -> Port {
        Port { free_at: Mutex::new(Instant::now()) }
    }

    /// Occupy the port for `busy` from now or when it frees up, then wait `latency`. Returns
    /// when the transfer has arrived.
    fn occupy(&self, busy: Duration, latency: Duration) {
        let done = {
            let mut free = self.free_at.lock().unwrap();
            let start = (*free).max(Instant::now());
            *free = start + busy;
            start + busy + latency
        };
        let now = Instant::now();
        if done > now {
            std::thread::sleep(done - now);
        }
    }
}

/// The coordinator's emulated port: one queue for what it sends, one for what it receives.
#[derive(Debug)]
pub struct Link {
    pub spec: LinkSpec,
    tx: Port,
    rx: Port,
}

impl Link {
    pub fn new(spec: LinkSpec) -> Link {
        Link { spec, tx: Port::new(), rx: Port::new() }
    }

    fn durations(&self, peer: &LinkSpec, bytes: usize) -> (Duration, Duration) {
        let mbps = self.spec.bandwidth_mbps.min(peer.bandwidth_mbps);
        let busy = Duration::from_secs_f64(bytes as f64 * 8.0 / (mbps * 1e6));
        let latency = Duration::from_secs_f64((self.spec.latency_ms.max(peer.latency_ms)) / 1e3);
        (busy, latency)
    }

    /// Send `bytes` to a peer whose link is `peer`: returns when they have arrived.
    pub fn send_to(&self, peer: &LinkSpec, bytes: usize) {
        let (busy, latency) = self.durations(peer, bytes);
        self.tx.occupy(busy, latency);
    }

    /// `bytes` from a peer reached this process unshaped: hold them until the emulated link
    /// would have delivered them.
    pub fn receive_from(&self, peer: &LinkSpec, bytes: usize) {
        let (busy, latency) = self.durations(peer, bytes);
        self.rx.occupy(busy, latency);
    }
}

/// CPU time of the calling thread.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Run `f` as a board of relative `speed` would (1.0: this machine's core; 0.1: ten times
/// slower). Returns f's result and the emulated compute time. `speed` None: a real board,
/// wall time.
pub fn compute<R>(speed: Option<f64>, f: impl FnOnce() -> R) -> (R, Duration) {
    let wall = Instant::now();
    let cpu = thread_cpu_time();
    let r = f();
    match speed {
        None => (r, wall.elapsed()),
        Some(speed) => {
            let used = thread_cpu_time().saturating_sub(cpu);
            let twin = used.div_f64(speed);
            let elapsed = wall.elapsed();
            if twin > elapsed {
                std::thread::sleep(twin - elapsed);
            }
            (r, twin.max(elapsed))
        }
    }
}
