//! Memory the allocator keeps but no longer uses goes back to the operating system.
//!
//! mimalloc, the binary's allocator, returns freed pages to the OS only after a delay
//! (1 s) and only when something allocates or asks it to collect. A proxy that has just
//! parked thousands of idle connections does neither: it would keep the buffers those
//! connections freed, some 4.7 KiB per connection, for as long as they stay idle
//! (docs/performance.md). So the data plane asks, once a second. The arenas, where pages
//! go once they are empty, are process-wide; a thread's own partly used pages are
//! collected on the worker this task runs on (with one CPU, the only one).

use std::time::Duration;

use tokio::time::MissedTickBehavior;

/// How often the allocator is asked to return what it has held unused for its delay.
const EVERY: Duration = Duration::from_secs(1);

/// Runs for the life of the data plane.
pub(crate) async fn return_unused() {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        collect();
    }
}

/// One collection: the calling thread's free pages, and every arena's pages whose delay
/// has passed (arenas are process-wide). Not forced: memory freed within the last delay
/// stays, ready for reuse, so a busy proxy does not give back and fault in the same pages.
fn collect() {
    // SAFETY: mi_collect takes no pointers and may be called from any thread at any time;
    // with another global allocator it collects mimalloc's own (empty) heap.
    unsafe { libmimalloc_sys::mi_collect(false) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's resident memory, in bytes.
    fn resident() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        // SAFETY: sysconf has no preconditions.
        pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
    }

    #[test]
    fn memory_freed_a_while_ago_leaves_the_process_at_the_next_collection() {
        const BLOCKS: usize = 8192; // 64 MiB of 8 KiB blocks, as hyper's buffers
                                    // Straight from mimalloc (the library's tests run on the system allocator).
        let blocks: Vec<*mut u8> = (0..BLOCKS)
            .map(|_| {
                // SAFETY: a plain allocation, checked and written within its size.
                unsafe {
                    let block = libmimalloc_sys::mi_malloc(8192).cast::<u8>();
                    assert!(!block.is_null());
                    std::ptr::write_bytes(block, 1, 8192);
                    block
                }
            })
            .collect();
        for block in blocks {
            // SAFETY: each block came from mi_malloc above and is freed once.
            unsafe { libmimalloc_sys::mi_free(block.cast()) };
        }
        // Past mimalloc's purge delay, with nothing allocating meanwhile: still resident.
        std::thread::sleep(Duration::from_millis(1200));
        // Read right around the collection: the other tests of this process allocate too,
        // but hardly 32 MiB in the microseconds between the two readings.
        let before = resident();
        collect();
        let after = resident();
        assert!(
            before.saturating_sub(after) > 32 << 20,
            "resident: {} MiB with the blocks freed, {} MiB after a collection",
            before >> 20,
            after >> 20
        );
    }
}
