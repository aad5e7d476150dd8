//! Work on many boards at once, bounded, each with a progress bar of its own: the one loop
//! profiling and deployment share.

use anyhow::{anyhow, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Boards worked on at once: SSH sessions and uploads of 4 boards keep a 100 Mbit/s uplink
/// busy without a board's transfer starving the others.
pub const AT_ONCE: usize = 4;

/// A progress bar's look: `template` as indicatif reads it (with `{prefix}` the board's name).
pub fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).expect("a valid progress template").progress_chars("=> ")
}

/// Run `job` for every item, at most [`AT_ONCE`] at a time (a new one starts as soon as one
/// ends), each with its own bar, made by `bar` (prefix, style, length) and shown while it runs:
/// `what: done` when the job returns Ok, `what: failed: …` when it fails. Every item is tried;
/// the errors are returned together, one per failed item. `quiet` hides the bars.
pub fn each<T: Sync>(
    items: &[T],
    what: &str,
    quiet: bool,
    bar: &(dyn Fn(&T) -> ProgressBar + Sync),
    job: &(dyn Fn(&T, &ProgressBar) -> Result<()> + Sync),
) -> Result<()> {
    let multi = MultiProgress::new();
    if quiet {
        multi.set_draw_target(ProgressDrawTarget::hidden());
    }
    let next = AtomicUsize::new(0);
    let errors = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..AT_ONCE.min(items.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(item) = items.get(i) else { break };
                let b = multi.add(bar(item));
                b.enable_steady_tick(Duration::from_millis(200));
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(item, &b))).unwrap_or_else(|_| Err(anyhow!("a {what} thread panicked")));
                match r {
                    Ok(()) => b.finish_with_message(format!("{what}: done")),
                    Err(e) => {
                        b.abandon_with_message(format!("{what}: failed: {e:#}"));
                        errors.lock().unwrap().push((i, e));
                    }
                }
            });
        }
    });
    let mut errors = errors.into_inner().unwrap();
    errors.sort_by_key(|e| e.0);
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0).1),
        n => Err(anyhow!("{what} failed on {n} boards:\n{}", errors.iter().map(|(_, e)| format!("  {e:#}")).collect::<Vec<_>>().join("\n"))),
    }
}
