//! How the process's allocator (mimalloc, declared by the binary and the benches) is tuned.
//!
//! mimalloc already reuses freed blocks where glibc's malloc would map every large tensor
//! afresh (~5× on 16M-element element-wise ops, ../shared/notes/candle-0.11.md §2). By
//! default it still returns freed pages to the OS 10 ms after they fall free ("purging").
//! A forward pass allocates several MB-sized buffers per layer and frees them a few
//! milliseconds later, so the next pass's buffers were faulted in and zeroed by the kernel
//! again: `clear_page_erms` took 3.7% of the samples of the evaluation bench at one thread.
//! Not purging, measured at one thread (`MIMALLOC_PURGE_DELAY=-1` against the default,
//! alternating, `--no-torch`): to the hook 4,640–4,753 → 5,107–5,142 tokens/s, full
//! forward 935–964 → 1,142–1,169, spliced evaluation 1,248–1,252 → 1,340–1,349.
//!
//! Freed memory then stays resident and is reused by later allocations of any size, so the
//! peak RSS is the high-water mark of live memory, as before; it just does not go down.

use libmimalloc_sys::{mi_option_get, mi_option_set_default, mi_option_t};

/// `mi_option_purge_delay` in mimalloc's `mimalloc.h` (v2 and v3): milliseconds before freed
/// memory is returned to the OS; -1 never. `libmimalloc-sys` does not name it.
const PURGE_DELAY: mi_option_t = 15;

/// Keep freed memory for reuse instead of returning it to the OS (see the module docs).
/// `MIMALLOC_PURGE_DELAY` in the environment still wins. Call first thing in `main`.
pub fn keep_freed_memory() {
    // SAFETY: sets one of mimalloc's documented options; thread-safe, any time.
    unsafe { mi_option_set_default(PURGE_DELAY, -1) }
}

/// mimalloc's current purge delay in milliseconds (-1: never).
pub fn purge_delay_ms() -> i64 {
    // SAFETY: reads one of mimalloc's documented options.
    let ms: std::ffi::c_long = unsafe { mi_option_get(PURGE_DELAY) };
    ms as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option number is the purge delay's: before anything sets it, it holds the purge
    /// delay's default of 1000 ms (mimalloc v3's `options.c`; its neighbours default to 1
    /// and 0); afterwards -1.
    /// One test, so that no other test in this binary sets it first.
    #[test]
    fn purge_delay_is_the_option_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        assert_eq!(purge_delay_ms(), 1000);
        keep_freed_memory();
        assert_eq!(purge_delay_ms(), -1);
    }
}
