//! The process allocator: mimalloc, asked the way the standard library asks the system allocator.
//!
//! The `mimalloc` crate's `GlobalAlloc` passes every request to `mi_malloc_aligned`, whatever its
//! alignment. mimalloc (v3) serves an aligned request from its fast path only when the size is at most
//! 1 KiB and a free block of that size class is already at hand; otherwise it over-allocates and marks the
//! page as holding interior pointers. Under callgrind that path was about 1,100 instructions of a
//! proxied request's 26,000 (twelve allocations, a third of them over-allocated). Every plain
//! `mi_malloc` block is aligned to 16 bytes once its size is at least 16 (mimalloc's
//! `MI_MAX_ALIGN_SIZE`), so a request whose alignment is at most 16 and at most its size goes to the
//! plain calls. Everything else still goes to the aligned ones. This is the rule `std::alloc::System`
//! applies to `malloc` on this platform.
//!
//! Memory goes back to the operating system: [`release_freed_memory`] (called by the connection
//! sweeper after connections park) lets mimalloc purge what was freed more than its purge delay ago,
//! which it otherwise does only when the thread allocates or frees again (an idle gateway never
//! would). And [`disable_transparent_huge_pages`]: with the kernel's THP on `always`, mimalloc's
//! first arena was backed by 2 MiB pages as soon as it was touched, 6 of the process' 16 MiB at
//! start (15.9 MiB idle with them, 10.2 MiB without; bench/idle.sh); a proxy's heap is small and
//! scattered, and huge pages bought nothing measurable in bench/run.sh.
//!
//! The one exception to the package's `unsafe_code` lint (see `Cargo.toml`). Implementing
//! `GlobalAlloc` is unsafe by definition; each call only forwards its arguments, as do the two calls
//! above.
#![allow(unsafe_code)]

use libmimalloc_sys::{
    mi_collect, mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned, mi_zalloc, mi_zalloc_aligned,
};
use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// The alignment every plain mimalloc block of at least this many bytes has.
const PLAIN_ALIGN: usize = 16;

pub(crate) struct MiMalloc;

/// Whether a plain (unaligned) call gives a block `align` requires for `size` bytes.
#[inline]
fn plain(size: usize, align: usize) -> bool {
    align <= PLAIN_ALIGN && align <= size
}

// SAFETY: every method forwards to the mimalloc function of the same contract (a block of at least
// `size` bytes aligned to `align`, or null), choosing the unaligned one only when `plain` says its
// guaranteed alignment suffices; `dealloc` and `realloc` receive pointers these methods returned, which
// `mi_free` and `mi_realloc*` accept whichever allocation call made them.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = if plain(layout.size(), layout.align()) {
            // SAFETY: see the impl.
            unsafe { mi_malloc(layout.size()) }
        } else {
            // SAFETY: see the impl.
            unsafe { mi_malloc_aligned(layout.size(), layout.align()) }
        };
        p.cast()
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = if plain(layout.size(), layout.align()) {
            // SAFETY: see the impl.
            unsafe { mi_zalloc(layout.size()) }
        } else {
            // SAFETY: see the impl.
            unsafe { mi_zalloc_aligned(layout.size(), layout.align()) }
        };
        p.cast()
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: see the impl.
        unsafe { mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = if plain(new_size, layout.align()) {
            // SAFETY: see the impl.
            unsafe { mi_realloc(ptr.cast::<c_void>(), new_size) }
        } else {
            // SAFETY: see the impl.
            unsafe { mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()) }
        };
        p.cast()
    }
}

/// Lets mimalloc give back to the OS the pages freed longer than its purge delay ago (not forced:
/// recently freed pages stay for reuse).
pub(crate) fn release_freed_memory() {
    // SAFETY: no arguments beyond a flag; callable from any thread at any time.
    unsafe { mi_collect(false) }
}

/// Turns transparent huge pages off for this process (see the module documentation). Failure (an old
/// kernel) leaves them as they were.
pub(crate) fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes an integer flag and no pointers.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size and alignment combination gets a block aligned as asked, usable and freed again.
    #[test]
    fn blocks_are_aligned_as_asked() {
        let a = MiMalloc;
        for align in [1usize, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in [1usize, 7, 8, 15, 16, 24, 31, 48, 100, 1000, 1025, 5000, 70_000] {
                let Ok(layout) = Layout::from_size_align(size, align) else { continue };
                // SAFETY: the layout has a non-zero size; the block is written within it and freed once.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    p.write_bytes(0xa5, size);
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    let grown = a.realloc(p, layout, size * 3);
                    assert_eq!(grown as usize % align, 0, "realloc size {size} align {align}");
                    assert!(std::slice::from_raw_parts(grown, size).iter().all(|&b| b == 0xa5));
                    a.dealloc(grown, Layout::from_size_align(size * 3, align).unwrap());
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
