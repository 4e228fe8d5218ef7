//! The threads that compute searches.
//!
//! A search is CPU work of a millisecond or more, so it runs off the async runtime. It used to
//! run on tokio's blocking pool, one thread per search in flight: with 16 clients on 2 cores,
//! 16 threads took turns, each hand-off from the runtime woke a sleeping thread, and about an
//! eighth of the machine sat idle between them (README, Benchmarks, 2026-12-03). Here a fixed
//! pool (one thread per core by default, `--search-threads`) takes searches from a queue: a
//! thread that finishes one starts the next without sleeping, and no more searches run at once
//! than there are cores to run them.

use std::panic::AssertUnwindSafe;

use super::SearchError;

/// A fixed pool of search threads.
pub struct SearchPool {
    pool: rayon::ThreadPool,
}

impl std::fmt::Debug for SearchPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchPool")
            .field("threads", &self.threads())
            .finish()
    }
}

impl SearchPool {
    /// Starts `threads` threads (at least one), named `souk-search-N`.
    ///
    /// # Errors
    /// [`SearchError::Threads`] when the operating system refuses a thread.
    pub fn new(threads: usize) -> Result<Self, SearchError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("souk-search-{i}"))
            .build()
            .map_err(|e| SearchError::Threads(e.to_string()))?;
        Ok(Self { pool })
    }

    /// How many threads run searches.
    #[must_use]
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Runs `job` on one of the pool's threads and waits for it without blocking the runtime.
    /// Jobs start in the order they were queued, as threads come free. The gauge
    /// `souk_search_queue` counts the jobs queued or running.
    ///
    /// # Errors
    /// [`SearchError::Panicked`] when `job` panicked (the thread lives on).
    pub async fn run<T, F>(&self, job: F) -> Result<T, SearchError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        metrics::gauge!("souk_search_queue").increment(1.0);
        self.pool.spawn_fifo(move || {
            // Caught here: rayon would end the process on a panic. The waiting request
            // fails as `internal`; the caller may have gone, so the send may find no one.
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(job));
            metrics::gauge!("souk_search_queue").decrement(1.0);
            let _ = tx.send(outcome);
        });
        match rx.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) | Err(_) => Err(SearchError::Panicked),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_job_runs_on_a_search_thread_and_its_value_comes_back() {
        let pool = SearchPool::new(2).expect("pool");
        assert_eq!(pool.threads(), 2);
        let name = pool
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .expect("ran");
        assert!(name.is_some_and(|n| n.starts_with("souk-search-")));
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_and_the_pool_goes_on() {
        let pool = SearchPool::new(1).expect("pool");
        let failed = pool.run(|| -> u32 { panic!("a bug in a search") }).await;
        assert!(matches!(failed, Err(SearchError::Panicked)));
        assert_eq!(pool.run(|| 7).await.expect("ran"), 7);
    }

    #[tokio::test]
    async fn more_jobs_than_threads_all_complete() {
        let pool = std::sync::Arc::new(SearchPool::new(2).expect("pool"));
        let jobs: Vec<_> = (0..64u64)
            .map(|i| {
                let pool = std::sync::Arc::clone(&pool);
                tokio::spawn(async move { pool.run(move || i * i).await })
            })
            .collect();
        let mut sum = 0;
        for job in jobs {
            sum += job.await.expect("task").expect("ran");
        }
        assert_eq!(sum, (0..64u64).map(|i| i * i).sum::<u64>());
    }
}
