//! The thread pool every parallel call runs on. `set_num_threads` swaps in a pool of the given
//! size; until then rayon's global pool (RAYON_NUM_THREADS or the CPU count) is used.
use rayon::ThreadPool;
use std::sync::{Arc, RwLock};

static POOL: RwLock<Option<Arc<ThreadPool>>> = RwLock::new(None);

pub fn set_num_threads(n: usize) -> Result<(), String> {
    if n == 0 {
        return Err("number of threads must be at least 1".into());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("ramnative-{i}"))
        .build()
        .map_err(|e| format!("cannot build a thread pool of {n} threads: {e}"))?;
    *POOL.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(pool));
    Ok(())
}

pub fn num_threads() -> usize {
    match POOL.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
        Some(p) => p.current_num_threads(),
        None => rayon::current_num_threads(),
    }
}

/// Runs `f` inside the configured pool.
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let pool = POOL.read().unwrap_or_else(|p| p.into_inner()).clone();
    match pool {
        Some(p) => p.install(f),
        None => f(),
    }
}
