//! A bounded pool of scoped threads over a list of jobs: the blob
//! downloads of a pull and the uploads of a push.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Runs `work(i)` for each `i` in `0..jobs` on at most `max` threads,
/// taking jobs in order as threads free up. The first error sets `stop`,
/// and once `stop` is set (by a job or by anyone else) no further job
/// begins; jobs already running finish. Returns the results of the jobs
/// that succeeded, by index, and the first error.
pub(super) fn run_bounded<R: Send, E: Send>(
    jobs: usize,
    max: usize,
    stop: &AtomicBool,
    work: impl Fn(usize) -> Result<R, E> + Sync,
) -> (BTreeMap<usize, R>, Option<E>) {
    let queue: Mutex<VecDeque<usize>> = Mutex::new((0..jobs).collect());
    let results: Mutex<BTreeMap<usize, R>> = Mutex::new(BTreeMap::new());
    let failure: Mutex<Option<E>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..max.clamp(1, jobs.max(1)) {
            s.spawn(|| loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Some(i) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() else {
                    return;
                };
                match work(i) {
                    Ok(r) => {
                        results
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(i, r);
                    }
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        failure
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    (
        results.into_inner().unwrap_or_else(|p| p.into_inner()),
        failure.into_inner().unwrap_or_else(|p| p.into_inner()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_job_runs_once_within_the_bound() {
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let (done, err) = run_bounded::<usize, ()>(20, 3, &stop, |i| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(2));
            running.fetch_sub(1, Ordering::SeqCst);
            Ok(i * 2)
        });
        assert!(err.is_none());
        assert_eq!(done.len(), 20);
        assert!(done.iter().all(|(i, v)| *v == i * 2));
        assert!(peak.load(Ordering::SeqCst) <= 3);
    }

    #[test]
    fn the_first_error_stops_jobs_not_yet_begun() {
        let stop = AtomicBool::new(false);
        let (done, err) = run_bounded(50, 1, &stop, |i| if i == 3 { Err(i) } else { Ok(i) });
        assert_eq!(err, Some(3));
        assert_eq!(done.len(), 3);
        assert!(stop.load(Ordering::SeqCst));
    }
}
