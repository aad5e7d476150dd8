//! Board emulation: a link's bandwidth and latency, and a board's compute speed.
//!
//! Links follow one network model ([`PortClock`]): every board has its own full-duplex switch
//! port, a transfer occupies the sender's send queue and the receiver's receive queue for
//! `bytes / min(sender, receiver bandwidth)`, and arrives a latency later. Each emulated board
//! shapes its own port: it holds what it sends until its send queue has let it go, and what
//! it receives until its receive queue would have delivered it. Compute is stretched by the thread's CPU time, not wall time, so emulated
//! boards sharing this machine's cores do not slow each other. An emulated computation also
//! holds one of the machine's compute slots (`emulation_slot`; one per core but one, see
//! [`default_slots`]), so boards never time-slice a core: each switch would evict the other
//! board's caches and inflate its CPU time. Waiting for a slot is inside the twin's time,
//! which the board sleeps out anyway.
//!
//! A shared machine's core does not keep one speed: the same computation takes 1.5× longer in
//! spells lasting tens of seconds. A twin should not, so every emulated computation is first
//! preceded by a short reference convolution ([`drift`]), and its CPU time is scaled by how
//! much slower than this machine's calibrated reference time the reference ran just then.
//!
//! A fleet of more twins than this machine has cores can be emulated more slowly than real
//! time ([`time_scale`], `LEGION_TIME_SCALE`, set by `legionc bench/suite --time-scale K`):
//! computations and transfers then take K times their twin's time on the wall clock, and every
//! time the boards report is wall time ÷ K. A short band that waits for the compute slot
//! behind another board's long one then still ends within its (stretched) twin time.

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
    /// The path between two boards' links: the slower bandwidth, the longer latency.
    pub fn between(&self, peer: &LinkSpec) -> LinkSpec {
        LinkSpec { bandwidth_mbps: self.bandwidth_mbps.min(peer.bandwidth_mbps), latency_ms: self.latency_ms.max(peer.latency_ms) }
    }
    /// Seconds `bytes` occupy this link (the transfer time without the latency). The one
    /// transfer-time formula: the emulation, the cost model and the bench's prediction use it.
    pub fn busy_s(&self, bytes: usize) -> f64 {
        bytes as f64 * 8.0 / (self.bandwidth_mbps * 1e6)
    }
    pub fn latency_s(&self) -> f64 {
        self.latency_ms / 1e3
    }
    /// Seconds to move `bytes` over this link, latency included.
    pub fn seconds(&self, bytes: usize) -> f64 {
        self.busy_s(bytes) + self.latency_s()
    }
}

/// The network model, the one place it is written: every board has its own switch port, full
/// duplex, a send queue and a receive queue. A transfer of `bytes` from board a to board b over
/// the path `a.between(b)`, ready to leave at `ready`:
///
/// - leaves a's send queue at `sent = max(ready, a.tx_free) + busy` (then `a.tx_free = sent`);
/// - clears b's receive queue at `arrived = max(sent, b.rx_free + busy)` (then
///   `b.rx_free = arrived`): the switch forwards to b one transfer at a time;
/// - is delivered `latency` later.
///
/// `busy` is [`LinkSpec::busy_s`] of the path. The cost model and the bench's prediction run it
/// on simulated clocks ([`Ports`]); the emulation runs it on the wall clock, each board on its
/// own port ([`Link`]): the sender holds a message until `sent`, the receiver until delivered.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PortClock {
    pub tx_free: f64,
    pub rx_free: f64,
}

impl PortClock {
    /// The send queue: when a transfer ready at `ready`, occupying the port `busy`, has left.
    pub fn send(&mut self, ready: f64, busy: f64) -> f64 {
        let sent = ready.max(self.tx_free) + busy;
        self.tx_free = sent;
        sent
    }
    /// The receive queue: when a transfer that left its sender at `sent` is delivered.
    pub fn receive(&mut self, sent: f64, busy: f64, latency: f64) -> f64 {
        let arrived = sent.max(self.rx_free + busy);
        self.rx_free = arrived;
        arrived + latency
    }
}

/// One transfer for [`Ports::run`]: `bytes` from board `from` to board `to`, ready at `ready`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transfer {
    pub from: usize,
    pub to: usize,
    pub bytes: usize,
    pub ready: f64,
}

/// Every board's port on simulated clocks (seconds).
#[derive(Clone, Debug)]
pub struct Ports {
    pub links: Vec<LinkSpec>,
    pub clocks: Vec<PortClock>,
}

impl Ports {
    pub fn new(links: Vec<LinkSpec>) -> Ports {
        let clocks = vec![PortClock::default(); links.len()];
        Ports { links, clocks }
    }

    /// Run a batch of transfers through the ports: each sender sends in order of readiness
    /// (ties in the given order), each receiver takes them in the order they left. Returns when
    /// each is delivered, in the given order. A transfer from a board to itself costs nothing.
    pub fn run(&mut self, transfers: &[Transfer]) -> Vec<f64> {
        let mut order: Vec<usize> = (0..transfers.len()).collect();
        order.sort_by(|&a, &b| transfers[a].ready.total_cmp(&transfers[b].ready).then(a.cmp(&b)));
        let mut sent = vec![0.0; transfers.len()];
        for &i in &order {
            let t = &transfers[i];
            let busy = self.path(t).busy_s(t.bytes);
            sent[i] = if t.from == t.to { t.ready } else { self.clocks[t.from].send(t.ready, busy) };
        }
        order.sort_by(|&a, &b| sent[a].total_cmp(&sent[b]).then(a.cmp(&b)));
        let mut done = vec![0.0; transfers.len()];
        for &i in &order {
            let t = &transfers[i];
            done[i] = if t.from == t.to {
                t.ready
            } else {
                let p = self.path(t);
                self.clocks[t.to].receive(sent[i], p.busy_s(t.bytes), p.latency_s())
            };
        }
        done
    }

    fn path(&self, t: &Transfer) -> LinkSpec {
        self.links[t.from].between(&self.links[t.to])
    }
}

/// A board's emulated port on the wall clock: [`PortClock`] with times in seconds since the
/// port was made.
#[derive(Debug)]
pub struct Link {
    pub spec: LinkSpec,
    epoch: Instant,
    clock: Mutex<PortClock>,
}

impl Link {
    pub fn new(spec: LinkSpec) -> Link {
        Link { spec, epoch: Instant::now(), clock: Mutex::new(PortClock::default()) }
    }

    /// Seconds since the port was made, in the twins' time ([`twin_time`]).
    fn now(&self) -> f64 {
        twin_time(self.epoch.elapsed()).as_secs_f64()
    }

    fn sleep_until(&self, t: f64) {
        let wait = t - self.now();
        if wait > 0.0 {
            std::thread::sleep(wall_time(Duration::from_secs_f64(wait)));
        }
    }

    /// Before sending `bytes` to a peer whose link is `peer`: wait until they have left this
    /// board's send queue.
    pub fn send_to(&self, peer: &LinkSpec, bytes: usize) {
        let busy = self.spec.between(peer).busy_s(bytes);
        let sent = self.clock.lock().unwrap().send(self.now(), busy);
        self.sleep_until(sent);
    }

    /// `bytes` from a peer whose link is `peer` have been read: wait until this board's
    /// receive queue would have delivered them.
    pub fn receive_from(&self, peer: &LinkSpec, bytes: usize) {
        let path = self.spec.between(peer);
        let done = self.clock.lock().unwrap().receive(self.now(), path.busy_s(bytes), path.latency_s());
        self.sleep_until(done);
    }
}

/// CPU time of the calling thread.
pub fn thread_cpu_time() -> Duration {
    use nix::time::{clock_gettime, ClockId};
    // The thread CPU-time clock exists on every Linux; a zero would only make one timing 0.
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map(Duration::from).unwrap_or_default()
}

/// Run `f` on this machine's core as an emulated computation: holding a compute slot, and
/// timed by the thread's CPU time corrected for the machine's drift ([`drift`]). `warm_up`
/// runs first, holding the slot and outside the timing (a computation timed warm runs itself
/// once there: [`twin_caches`]). Returns f's result, its time (this machine's core at its
/// calibrated speed), and how long it waited for its compute slot.
fn emulated_cpu<R>(warm_up: impl FnOnce(), f: impl FnOnce() -> R) -> (R, Duration, Duration) {
    let asked = Instant::now();
    let _slot = emulation_slot();
    let wait = asked.elapsed();
    warm_up();
    let t = drift::timed(drift::enabled(), f);
    (t.result, t.cpu.mul_f64(t.scale), wait)
}

/// Why an emulated computation is timed warm (its weights where a run just left them) and not
/// as a board's frame finds them (pushed out to memory by the other boards' and groups' work).
///
/// An emulated board's time is its CPU time here ÷ its twin's `speed`, and `speed` was set
/// from warm runs (VGG-16's convolutions back to back here against an RK3399's published
/// times). Stretching a run from memory by the same factor stretches this machine's memory
/// traffic as if the twin's memory were as slow, relative to this machine's, as its core:
/// a 4-row band of YOLOv2's 1280→1024 convolution (47 MB of weights) took 16.4 ms back to back
/// and 26.6 ms after 520 MiB of other writes here; ×10.6 (a Firefly twin) the 10 ms of reading
/// weights become 109 ms, where an RK3399's own memory streams those 47 MB in about 12 ms.
/// It made small bands of weight-heavy layers dear and so penalised splitting. Timed warm,
/// this machine's last-level cache streams the weights about as fast, relative to its core,
/// as a board's memory does relative to its own. Probe and boards time alike, so a profile
/// still measures what a plan will take. [`evict_caches`] remains for `legionc bench band`,
/// which prints a band's time from evicted caches ÷ back to back.
pub const fn twin_caches() -> &'static str {
    "timed warm (each run after an untimed one)"
}

/// Bytes [`evict_caches`] writes: `$LEGION_EMULATION_EVICT_MB` MiB (0: no eviction), else
/// twice this machine's last-level cache as sysfs gives it, at most 1 GiB (64 MiB if sysfs
/// does not say). Read once per process.
pub fn evict_bytes() -> usize {
    static BYTES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| match std::env::var("LEGION_EMULATION_EVICT_MB").ok().and_then(|v| v.trim().parse::<usize>().ok()) {
        Some(mb) => mb << 20,
        None => last_level_cache_bytes().map_or(64 << 20, |b| (2 * b).min(1 << 30)),
    })
}

/// The largest cache of CPU 0 (sysfs `cache/index*/size`, e.g. `266240K`).
fn last_level_cache_bytes() -> Option<usize> {
    let dir = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache").ok()?;
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("size")).ok()).filter_map(|s| cache_size(&s)).max()
}

/// A cache size as sysfs writes it (`266240K`, `8M`, `512`), in bytes.
fn cache_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let mult = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        _ => return None,
    };
    n.parse::<usize>().ok().map(|n| n * mult)
}

/// Push this machine's caches out to memory: write one byte of every cache line of a buffer
/// [`evict_bytes`] long (allocated once, from the system allocator, so that a run's counted
/// allocations do not see it). `legionc bench band` times a band after it, to show what a run
/// from memory costs here against a warm one (the reason emulated computations are timed warm:
/// [`twin_caches`]).
pub fn evict_caches() {
    static BUF: std::sync::OnceLock<Option<(usize, usize)>> = std::sync::OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    let buf = *BUF.get_or_init(|| {
        let n = evict_bytes();
        let layout = std::alloc::Layout::from_size_align(n, 4096).ok().filter(|_| n > 0)?;
        // SAFETY: a non-zero size; the buffer is never freed (it lives as long as the process).
        let p = unsafe { std::alloc::GlobalAlloc::alloc(&std::alloc::System, layout) };
        (!p.is_null()).then_some((p as usize, n))
    });
    let Some((p, n)) = buf else { return };
    let _only = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    for off in (0..n).step_by(64) {
        // SAFETY: off < n, inside the buffer allocated above; the lock makes this the only
        // writer. Volatile, so that the writes are not elided.
        unsafe {
            let b = (p + off) as *mut u8;
            b.write_volatile(b.read_volatile().wrapping_add(1));
        }
    }
}

/// Run `f(input)` as an emulated computation, warm ([`twin_caches`]: `f` runs once on a copy
/// of the input, untimed, then timed), and return its result and the compute time of a board
/// of relative `speed` (1.0: this machine's core; 0.1: ten times slower), without waiting that
/// time out. `speed` None: a real board, `f` runs once, timed on the wall clock. The probe
/// times its runs here, the board's runtime in [`compute_warm`]: the same clock, so that a
/// profile measures what a plan will take.
pub fn measure<I: Clone, R>(speed: Option<f64>, input: I, mut f: impl FnMut(I) -> R) -> (R, Duration) {
    match speed {
        None => {
            let wall = Instant::now();
            let r = f(input);
            (r, wall.elapsed())
        }
        Some(speed) => {
            let f = std::cell::RefCell::new(f);
            let (warm_up, timed) = warm_then_timed(&f, input);
            let (r, used, _) = emulated_cpu(warm_up, timed);
            (r, used.div_f64(speed))
        }
    }
}

/// How an emulated computation went: the twin's time, and what the emulation could not hide.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Computed {
    /// What the computation took: the twin's time, or longer if it overran.
    pub took: Duration,
    /// Time spent waiting for a compute slot of this machine (inside `took` unless it overran).
    pub slot_wait: Duration,
    /// Real time beyond the twin's time: the waiting and computing here took longer than the
    /// twin would have. Zero on a real board.
    pub overrun: Duration,
}

/// Run `f` as a board of relative `speed` would, as its other work left the caches (the
/// coordinator's split and gather, of data it has just produced): on an emulated board, timed
/// in a compute slot, then sleep until its twin would be done. Returns f's result and the
/// compute time, with the slot wait and any overrun accounted.
pub fn compute_accounted<R>(speed: Option<f64>, f: impl FnOnce() -> R) -> (R, Computed) {
    compute_scaled(speed, time_scale(), || (), f)
}

/// A layer's computation, `f(input)`, as a board of relative `speed` would run it: on an
/// emulated board timed warm like the probe's runs ([`measure`], [`twin_caches`]), then the
/// twin's time waited out. A real board runs `f` once.
pub fn compute_warm<I: Clone, R>(speed: Option<f64>, input: I, mut f: impl FnMut(I) -> R) -> (R, Computed) {
    if speed.is_none() {
        return compute_scaled(None, 1.0, || (), || f(input));
    }
    let f = std::cell::RefCell::new(f);
    let (warm_up, timed) = warm_then_timed(&f, input);
    compute_scaled(speed, time_scale(), warm_up, timed)
}

/// The two runs of a computation timed warm ([`twin_caches`]): `f` on a copy of `input`, its
/// result dropped, for [`emulated_cpu`]'s warm-up; then `f(input)`, timed.
fn warm_then_timed<'f, I: Clone + 'f, R>(f: &'f std::cell::RefCell<impl FnMut(I) -> R>, input: I) -> (impl FnOnce() + 'f, impl FnOnce() -> R + 'f) {
    let copy = input.clone();
    (move || drop((f.borrow_mut())(copy)), move || (f.borrow_mut())(input))
}

/// [`compute_accounted`] at time scale `scale`, after `warm_up` (run in the compute slot,
/// untimed): an emulated computation sleeps until `scale` times its twin's time has passed on
/// the wall clock, and its times are given in the twin's time (wall time ÷ `scale`). A real
/// board (`speed` None) is timed on the wall clock, without warm-up.
pub fn compute_scaled<R>(speed: Option<f64>, scale: f64, warm_up: impl FnOnce(), f: impl FnOnce() -> R) -> (R, Computed) {
    let wall = Instant::now();
    let (r, twin, slot_wait) = match speed {
        None => (f(), Duration::ZERO, Duration::ZERO),
        Some(speed) => {
            let (r, used, wait) = emulated_cpu(warm_up, f);
            (r, used.div_f64(speed), wait)
        }
    };
    let elapsed = wall.elapsed();
    if speed.is_none() {
        return (r, Computed { took: elapsed, slot_wait, overrun: Duration::ZERO });
    }
    let stretched = twin.mul_f64(scale);
    if stretched > elapsed {
        std::thread::sleep(stretched - elapsed);
    }
    let elapsed = elapsed.div_f64(scale);
    (r, Computed { took: twin.max(elapsed), slot_wait: slot_wait.div_f64(scale), overrun: elapsed.saturating_sub(twin) })
}

/// How many times slower than their twins emulated boards run on the wall clock:
/// `LEGION_TIME_SCALE` (a number ≥ 1; default 1). Read once per process. `legionc`'s
/// `--time-scale` refuses a value [`parse_time_scale`] does not take; a `LEGION_TIME_SCALE`
/// set by hand to such a value is taken as 1, by the boards and by `legionc` alike.
pub fn time_scale() -> f64 {
    static SCALE: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *SCALE.get_or_init(|| std::env::var("LEGION_TIME_SCALE").ok().as_deref().and_then(parse_time_scale).unwrap_or(1.0))
}

/// A time scale: a finite number of at least 1.
pub fn parse_time_scale(v: &str) -> Option<f64> {
    v.parse::<f64>().ok().filter(|k| k.is_finite() && *k >= 1.0)
}

/// A wall-clock duration in the twins' time: ÷ [`time_scale`].
pub fn twin_time(wall: Duration) -> Duration {
    wall.div_f64(time_scale())
}

/// A duration of the twins' time on the wall clock: × [`time_scale`].
pub fn wall_time(twin: Duration) -> Duration {
    twin.mul_f64(time_scale())
}

/// Compute slots on this machine: one core fewer than it has (at least one). The core left
/// over runs what is not computation: the boards' transfers, the coordinator's split and
/// gather, legionc. With every core computing, those threads preempted the computations, and
/// two computations at once slowed each other: on a 2-core machine a band's CPU time then
/// varied from frame to frame by up to 1.8×; on one slot, by ±3 %. The twins do not lose by
/// taking turns: a twin is ≥ 10× slower than this machine's core, so a board waiting for the
/// slot while up to 5 others compute still has its result before its twin time is up.
pub fn default_slots() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).saturating_sub(1).max(1)
}

/// A machine-wide compute slot of emulated boards (and probes): an exclusive file lock (flock) on one of
/// N lock files in `$LEGION_EMULATION_DIR` (default `<tmp>/legion-emulation`); N is
/// `$LEGION_EMULATION_SLOTS`, else [`default_slots`]. Released on drop. None if the lock files
/// cannot be used (then the computation runs unslotted).
pub struct EmulationSlot(#[allow(dead_code)] std::fs::File);

pub fn emulation_slot() -> Option<EmulationSlot> {
    let n = std::env::var("LEGION_EMULATION_SLOTS").ok().and_then(|v| v.parse().ok()).unwrap_or_else(default_slots);
    emulation_slot_in(&emulation_dir(), n)
}

/// `$LEGION_EMULATION_DIR`, default `<tmp>/legion-emulation`: the slots' lock files and the
/// calibrated reference time.
pub fn emulation_dir() -> std::path::PathBuf {
    std::env::var_os("LEGION_EMULATION_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("legion-emulation"))
}

/// One of `n` slots whose lock files are in `dir`; waits while all are held.
pub fn emulation_slot_in(dir: &std::path::Path, n: usize) -> Option<EmulationSlot> {
    let n = n.max(1);
    std::fs::create_dir_all(dir).ok()?;
    let open = |i: usize| std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(format!("core-{i}.lock"))).ok();
    for i in 0..n {
        if let Some(f) = open(i) {
            if f.try_lock().is_ok() {
                return Some(EmulationSlot(f));
            }
        }
    }
    // Every slot is taken: wait for one.
    let f = open(std::process::id() as usize % n)?;
    f.lock().ok().map(|()| EmulationSlot(f))
}

/// Make glibc keep freed memory for reuse: one arena for every thread, no trimming. And, for
/// what the process does first (reading its model, building its runnables), every allocation
/// of 256 KB or more in a mapping of its own, returned whole when freed: what building leaves
/// behind (tract's unpacked copies of weights, its passes' graphs) does not stay as holes in
/// the heap, so that a board holds what its runnables need, as the probe's counted allocations
/// predict (with one heap throughout, a board held 40–75 MB more). Called first by the board,
/// probe and generic board binaries; [`allocator_for_frames`] once built.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
    allocator_for_loading();
}

/// While building: allocations of 256 KB or more in mappings of their own (see
/// [`tune_allocator`]).
pub fn allocator_for_loading() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters (it takes the allocator's lock).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}

/// Once the runnables are built: large buffers from the heap rather than fresh mappings.
/// tract allocates the same large buffers on every run; from fresh mappings, a band run on a
/// thread other than the main one page-faults them in again each time (a quarter of the run
/// time on some machines).
pub fn allocator_for_frames() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters (it takes the allocator's lock).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
    }
}

/// The machine's drift, measured by a reference convolution (3×3, 48 → 48 channels on a
/// 24 × 56 map, about 28 M multiply-adds, under a millisecond here) run just before each
/// emulated computation on the same thread (and just after it, if it is long).
///
/// The machine's calibrated reference time is measured once (the fastest of 40 runs) and kept
/// in `reference-v1.ns` in the emulation dir, so that every process on this machine (probes
/// and boards, today and next week) scales to the same speed. An emulated computation's CPU
/// time is multiplied by calibrated ÷ current (the fastest of 3 runs just before it, or on the
/// same thread less than 250 ms before; for a computation of more than 20 reference times,
/// the mean of that and the same after it), kept within [½, 2]. Measured on this project's 2-core VM: the whole ResNet-18 and a 2 ms conv
/// band timed just before it correlate at 0.90 over 80 runs, and the ratio halves the
/// coefficient of variation of the whole run (21 % → 10.7 %).
///
/// `LEGION_EMULATION_REFERENCE=0` turns the correction off (scale 1).
pub mod drift {
    use crate::exec::{run, runnable, section_graph, Runnable};
    use crate::ir::{Conv, InputLayout, Model, Node, Op, Weights, Window};
    use std::cell::RefCell;
    use std::sync::OnceLock;
    use tract_core::prelude::Tensor;

    const C: usize = 48;
    const H: usize = 24;
    const W: usize = 56;
    const CALIBRATION_RUNS: usize = 40;
    const RUNS: usize = 3;
    /// Computations longer than this many reference runs are bracketed by the reference.
    pub const LONG: f64 = 20.0;

    fn kernel() -> (Runnable, Tensor) {
        let det = |n: usize, k: usize| -> Vec<f32> { (0..n).map(|i| ((i * k) % 97) as f32 / 97.0 - 0.5).collect() };
        let window = Window { kernel: [3, 3], stride: [1, 1], dilation: [1, 1], pad_before: [1, 1], pad_after: [1, 1] };
        let conv = Conv {
            window,
            in_channels: C,
            out_channels: C,
            group: 1,
            weight: Weights::new(vec![C, C, 3, 3], det(C * C * 9, 7919)),
            bias: Some(Weights::new(vec![C], det(C, 31))),
        };
        let shape = vec![1, C, H, W];
        let node = |name: &str, op: Op, inputs: Vec<usize>| Node { name: name.into(), op, inputs, shape: shape.clone() };
        let model = Model {
            name: "drift-reference".into(),
            input_layout: InputLayout::Nchw,
            nodes: vec![node("input", Op::Input, vec![]), node("conv", Op::Conv(conv), vec![0]), node("relu", Op::Relu, vec![1])],
        };
        let plan = runnable(section_graph(&model, 0, 2).expect("the reference graph builds")).expect("the reference graph optimises");
        let input = Tensor::from_shape(&shape, &det(C * H * W, 13)).expect("reference input");
        (plan, input)
    }

    thread_local! {
        static KERNEL: RefCell<Option<(Runnable, Tensor)>> = const { RefCell::new(None) };
        /// This thread's last reference time and when it was measured.
        static LAST: std::cell::Cell<Option<(std::time::Instant, f64)>> = const { std::cell::Cell::new(None) };
    }

    /// How long a reference time measured on a thread stands for the machine's current speed.
    /// The machine's spells last tens of seconds; a board computing a short band every few
    /// milliseconds would otherwise spend more time on references than on bands (3 runs,
    /// about 2 ms, per computation), holding a compute slot the other boards wait for.
    pub const FRESH: std::time::Duration = std::time::Duration::from_millis(250);

    /// The current reference time: this thread's last one if it is [`FRESH`], else the
    /// fastest of 3 runs now.
    fn current() -> f64 {
        if let Some((at, t)) = LAST.with(|l| l.get()) {
            if at.elapsed() < FRESH {
                return t;
            }
        }
        let t = fastest(RUNS);
        LAST.with(|l| l.set(Some((std::time::Instant::now(), t))));
        t
    }

    /// Fastest CPU time of `runs` reference runs on this thread, in seconds.
    fn fastest(runs: usize) -> f64 {
        KERNEL.with(|k| {
            let mut k = k.borrow_mut();
            let (plan, input) = k.get_or_insert_with(|| {
                let k = kernel();
                let _ = run(&k.0, k.1.clone());
                k
            });
            (0..runs)
                .map(|_| {
                    let cpu = super::thread_cpu_time();
                    let _ = run(plan, input.clone());
                    super::thread_cpu_time().saturating_sub(cpu).as_secs_f64()
                })
                .fold(f64::INFINITY, f64::min)
        })
    }

    /// Is the correction on (`LEGION_EMULATION_REFERENCE` is not `0`)?
    pub fn enabled() -> bool {
        std::env::var("LEGION_EMULATION_REFERENCE").map_or(true, |v| v != "0")
    }

    /// The machine's calibrated reference time in seconds: read from the emulation dir, or
    /// measured and stored there by the first process that needs it (created with a hard link,
    /// so concurrent first processes all end up with the one value stored).
    pub fn calibrated() -> f64 {
        static CALIBRATED: OnceLock<f64> = OnceLock::new();
        *CALIBRATED.get_or_init(|| calibrated_in(&super::emulation_dir()))
    }

    /// The calibrated reference time kept in `dir`, measured and stored there if absent.
    pub fn calibrated_in(dir: &std::path::Path) -> f64 {
        let path = dir.join("reference-v1.ns");
        let read = || std::fs::read_to_string(&path).ok().and_then(|t| t.trim().parse::<u64>().ok()).filter(|&ns| ns > 0);
        if let Some(ns) = read() {
            return ns as f64 * 1e-9;
        }
        let measured = fastest(CALIBRATION_RUNS);
        // Written aside, then linked into place: the link fails if another process stored its
        // value first, and then everybody reads that one.
        let tmp = dir.join(format!("reference-v1.ns.{}.{:?}", std::process::id(), std::thread::current().id()));
        let _ = std::fs::create_dir_all(dir)
            .and_then(|_| std::fs::write(&tmp, format!("{}\n", (measured * 1e9).round() as u64)))
            .and_then(|_| std::fs::hard_link(&tmp, &path));
        let _ = std::fs::remove_file(&tmp);
        read().map_or(measured, |ns| ns as f64 * 1e-9)
    }

    /// A computation timed by [`timed`].
    pub struct Timed<R> {
        pub result: R,
        /// Its CPU time on this thread.
        pub cpu: std::time::Duration,
        /// The reference times just before it and (if it was long) just after it; 0 and None
        /// when not corrected.
        pub before: f64,
        pub after: Option<f64>,
        /// The factor that corrects `cpu` for the machine's drift.
        pub scale: f64,
    }

    /// Run `f` on this thread and time it: its CPU time and the factor that corrects that
    /// time for the machine's drift: calibrated ÷ current reference time, within [½, 2] (1 if
    /// `correct` is false). The current time is the fastest of 3 reference runs just before
    /// `f`. A computation longer than [`LONG`] reference runs may straddle spells of
    /// different speeds: the reference is then timed after it as well, and the mean of the
    /// two current times taken.
    pub fn timed<R>(correct: bool, f: impl FnOnce() -> R) -> Timed<R> {
        let before = if correct { current() } else { 0.0 };
        let start = super::thread_cpu_time();
        let result = f();
        let cpu = super::thread_cpu_time().saturating_sub(start);
        if !correct {
            return Timed { result, cpu, before, after: None, scale: 1.0 };
        }
        let after = (cpu.as_secs_f64() > LONG * before).then(|| {
            let a = fastest(RUNS);
            LAST.with(|l| l.set(Some((std::time::Instant::now(), a))));
            a
        });
        let current = after.map_or(before, |a| 0.5 * (before + a));
        Timed { result, cpu, before, after, scale: scale_for(calibrated(), current) }
    }

    /// calibrated ÷ current, within [½, 2].
    pub fn scale_for(calibrated: f64, current: f64) -> f64 {
        (calibrated / current).clamp(0.5, 2.0)
    }
}

#[cfg(test)]
mod network_tests {
    use super::*;

    fn ports(n: usize) -> Ports {
        // 8 Mbit/s: 1 MB takes 1 s; latency 10 ms.
        Ports::new(vec![LinkSpec { bandwidth_mbps: 8.0, latency_ms: 10.0 }; n])
    }

    #[test]
    fn one_sender_sends_one_transfer_at_a_time() {
        let mut p = ports(3);
        let t = |to| Transfer { from: 0, to, bytes: 1_000_000, ready: 0.0 };
        let done = p.run(&[t(1), t(2)]);
        assert!((done[0] - 1.01).abs() < 1e-9 && (done[1] - 2.01).abs() < 1e-9, "{done:?}");
    }

    #[test]
    fn ports_are_full_duplex_and_independent() {
        // 0→1 and 1→0 at once, 2→3 at once: each takes its own queues.
        let mut p = ports(4);
        let t = |from, to| Transfer { from, to, bytes: 1_000_000, ready: 0.0 };
        let done = p.run(&[t(0, 1), t(1, 0), t(2, 3)]);
        assert!(done.iter().all(|&d| (d - 1.01).abs() < 1e-9), "{done:?}");
    }

    #[test]
    fn one_receiver_takes_one_transfer_at_a_time() {
        let mut p = ports(3);
        let t = |from| Transfer { from, to: 0, bytes: 1_000_000, ready: 0.0 };
        let mut done = p.run(&[t(1), t(2)]);
        done.sort_by(f64::total_cmp);
        assert!((done[0] - 1.01).abs() < 1e-9 && (done[1] - 2.01).abs() < 1e-9, "{done:?}");
    }

    #[test]
    fn the_slower_link_sets_the_pace_and_to_itself_is_free() {
        let mut p = Ports::new(vec![LinkSpec { bandwidth_mbps: 8.0, latency_ms: 0.0 }, LinkSpec { bandwidth_mbps: 4.0, latency_ms: 5.0 }]);
        let done = p.run(&[Transfer { from: 0, to: 1, bytes: 1_000_000, ready: 0.5 }, Transfer { from: 0, to: 0, bytes: 1_000_000, ready: 0.25 }]);
        assert!((done[0] - 2.505).abs() < 1e-9, "{done:?}");
        assert_eq!(done[1], 0.25);
    }
}

#[cfg(test)]
mod time_scale_tests {
    use super::*;

    #[test]
    fn a_cache_size_is_read_as_sysfs_writes_it() {
        assert_eq!(cache_size("266240K\n"), Some(266240 << 10));
        assert_eq!(cache_size("8M"), Some(8 << 20));
        assert_eq!(cache_size("512"), Some(512));
        for bad in ["", "K", "12G", "1.5M", "-4K"] {
            assert_eq!(cache_size(bad), None, "{bad:?}");
        }
        // Whatever this machine says, the eviction is bounded, and runs.
        assert!(evict_bytes() <= 1 << 30);
        evict_caches();
    }

    /// An emulated layer's computation runs once untimed on a copy of its input, then timed
    /// (the result is the timed run's); a real board's runs once.
    #[test]
    fn an_emulated_computation_is_timed_after_running_once() {
        for (speed, runs) in [(Some(0.5), 2), (None, 1)] {
            let mut seen = Vec::new();
            let (r, c) = compute_warm(speed, 7u32, |x| {
                seen.push(x);
                seen.len()
            });
            assert_eq!((r, seen.len()), (runs, runs), "{speed:?}: {c:?}");
            assert!(seen.iter().all(|&x| x == 7));
            let mut n = 0;
            let (r, _) = measure(speed, (), |()| {
                n += 1;
                n
            });
            assert_eq!((r, n), (runs, runs), "{speed:?}");
        }
    }

    /// At time scale k an emulated computation lasts at least k times what it reports on the
    /// wall clock (it sleeps k times its twin's time out, and reports the twin's time); a real
    /// board's computation is wall time, whatever the scale.
    #[test]
    fn a_scaled_computation_takes_k_times_the_time_it_reports() {
        let spin = || {
            let mut x = 0u64;
            for i in 0..3_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x)
        };
        for k in [1.0, 3.0] {
            let wall = Instant::now();
            let (_, c) = compute_scaled(Some(0.25), k, || (), spin);
            let wall = wall.elapsed();
            assert!(c.took > Duration::ZERO && c.overrun <= c.took, "{c:?}");
            assert!(wall + Duration::from_micros(100) >= c.took.mul_f64(k), "scale {k}: {wall:?} on the wall clock, {c:?}");
            if k > 1.0 {
                // Reported in the twin's time, not the wall clock's.
                assert!(c.took.mul_f64(2.0) < wall, "scale {k}: {wall:?} on the wall clock, {c:?}");
            }
        }
        let wall = Instant::now();
        let (_, c) = compute_scaled(None, 3.0, || (), spin);
        assert!(c.took <= wall.elapsed() && c.overrun == Duration::ZERO, "{c:?}");
    }
    #[test]
    fn a_time_scale_is_a_finite_number_of_at_least_one() {
        assert_eq!(parse_time_scale("3"), Some(3.0));
        assert_eq!(parse_time_scale("1"), Some(1.0));
        assert_eq!(parse_time_scale("2.5"), Some(2.5));
        for bad in ["0.5", "0", "-2", "nan", "inf", "fast", ""] {
            assert_eq!(parse_time_scale(bad), None, "{bad}");
        }
    }
}
