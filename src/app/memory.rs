//! Memory the allocator keeps but no longer uses goes back to the operating system.
//!
//! mimalloc, the binary's allocator, returns freed pages to the OS only after a delay
//! (1 s) and only when something allocates or asks it to collect. A proxy that has just
//! parked thousands of idle connections does neither: it would keep the buffers those
//! connections freed, some 4.7 KiB per connection, for as long as they stay idle
//! (docs/performance.md). So the data plane asks, once a second. The arenas, where pages
//! go once they are empty, are process-wide; a thread's own partly used pages are
//! collected on the worker this task runs on (with one CPU, the only one).

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;
use std::time::Duration;

use libmimalloc_sys as mi;
use tokio::time::MissedTickBehavior;

/// The binary's global allocator: mimalloc, asked for plain blocks where a plain block is
/// aligned enough.
///
/// The `mimalloc` crate's allocator passes every request to `mi_malloc_aligned`, whose fast
/// path serves blocks of up to 1 KiB only: a larger block (hyper's 8 KiB read buffer, once
/// per request) went through its generic aligned path and, unless the size is a power of
/// two, its over-allocating one: some 300 instructions where `mi_malloc` takes about 100
/// (docs/performance.md). Every mimalloc block is aligned to a word at least, so a request
/// that asks no more goes to `mi_malloc`, as Rust's `System` allocator does with `malloc`.
#[derive(Debug)]
pub struct Allocator;

/// The alignment every mimalloc block has: block sizes are whole words.
const WORD: usize = std::mem::size_of::<usize>();

/// A block for `layout` from `plain` when a plain block is aligned enough, else from
/// `aligned`.
#[inline(always)]
unsafe fn plain_or_aligned(
    layout: Layout,
    plain: unsafe extern "C" fn(usize) -> *mut c_void,
    aligned: unsafe extern "C" fn(usize, usize) -> *mut c_void,
) -> *mut u8 {
    if layout.align() <= WORD {
        plain(layout.size()).cast()
    } else {
        aligned(layout.size(), layout.align()).cast()
    }
}

// SAFETY: mimalloc returns blocks of at least the requested size, aligned as asked (a plain
// block is word-aligned, and plain blocks are asked for only at word alignment or less),
// or null; `mi_free` and `mi_realloc` accept any block mimalloc returned, aligned or not.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        plain_or_aligned(layout, mi::mi_malloc, mi::mi_malloc_aligned)
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        plain_or_aligned(layout, mi::mi_zalloc, mi::mi_zalloc_aligned)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_realloc(ptr.cast(), new_size).cast()
        } else {
            mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
        }
    }
}

/// How often the allocator is asked to return what it has held unused for its delay.
const EVERY: Duration = Duration::from_secs(1);

/// Runs for the life of the data plane, on each of its runtimes: a collection reaches the
/// calling thread's pages only.
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

    #[test]
    fn the_allocator_gives_aligned_blocks_that_keep_their_bytes_through_realloc() {
        for align in [1, 2, 8, 16, 64, 128, 4096] {
            for size in [1, 7, 24, 100, 1000, 1025, 8192 + 24, 70_000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero sizes; each block is written within its size, grown
                // once, read within the old size and freed once with its layout.
                unsafe {
                    let zeroed = Allocator.alloc_zeroed(layout);
                    assert!(!zeroed.is_null() && zeroed as usize % align == 0);
                    assert!(std::slice::from_raw_parts(zeroed, size)
                        .iter()
                        .all(|&b| b == 0));
                    Allocator.dealloc(zeroed, layout);

                    let block = Allocator.alloc(layout);
                    assert!(!block.is_null(), "size {size}, align {align}");
                    assert_eq!(block as usize % align, 0, "size {size}, align {align}");
                    for i in 0..size {
                        *block.add(i) = i as u8;
                    }
                    let grown = Allocator.realloc(block, layout, size * 3);
                    assert_eq!(grown as usize % align, 0, "size {size}, align {align}");
                    for i in 0..size {
                        assert_eq!(*grown.add(i), i as u8);
                    }
                    Allocator.dealloc(grown, Layout::from_size_align(size * 3, align).unwrap());
                }
            }
        }
    }

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
