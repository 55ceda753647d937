//! The plugin's memory allocator: a bump allocator that never frees.
//!
//! Every request runs in a fresh instance that is thrown away afterwards, so freeing memory
//! buys nothing, while the default allocator (dlmalloc) grows linear memory on its first
//! allocation in every instance, and each grow costs the host a page-protection change. This
//! allocator serves the first 1 MiB from a zeroed static arena that is part of the instance's
//! initial memory, so a typical request never grows memory; beyond that it grows memory in
//! 1 MiB steps, up to the plugin's memory cap (past which allocation fails and the request
//! ends with a memory-exhausted error). Only compiled for wasm32.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::{Cell, UnsafeCell};

const ARENA_BYTES: usize = 1 << 20;
const PAGE: usize = 65536;

#[repr(C, align(16))]
struct Arena(UnsafeCell<[u8; ARENA_BYTES]>);

/// The bump pointer and the end of the region it allocates from (0, 0 before first use).
struct Bump {
    next: Cell<usize>,
    end: Cell<usize>,
}

// wasm32-unknown-unknown guests are single-threaded: there is no concurrent access.
unsafe impl Sync for Arena {}
unsafe impl Sync for Bump {}

static ARENA: Arena = Arena(UnsafeCell::new([0; ARENA_BYTES]));
static BUMP: Bump = Bump { next: Cell::new(0), end: Cell::new(0) };

/// The SDK's global allocator in plugins.
pub(crate) struct BumpAllocator;

impl BumpAllocator {
    fn take(layout: Layout) -> Option<usize> {
        if BUMP.end.get() == 0 {
            let start = ARENA.0.get() as usize;
            BUMP.next.set(start);
            BUMP.end.set(start + ARENA_BYTES);
        }
        let start = BUMP.next.get().checked_add(layout.align() - 1)? & !(layout.align() - 1);
        let end = start.checked_add(layout.size())?;
        if end <= BUMP.end.get() {
            BUMP.next.set(end);
            return Some(start);
        }
        // Start a new region: enough whole pages for this request, at least 1 MiB.
        let bytes = layout.size().checked_add(layout.align())?.max(ARENA_BYTES);
        let pages = bytes.div_ceil(PAGE);
        let old = core::arch::wasm32::memory_grow(0, pages);
        if old == usize::MAX {
            return None;
        }
        let region = old * PAGE;
        BUMP.next.set(region);
        BUMP.end.set(region + pages * PAGE);
        let start = (region + layout.align() - 1) & !(layout.align() - 1);
        BUMP.next.set(start + layout.size());
        Some(start)
    }
}

unsafe impl GlobalAlloc for BumpAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::take(layout).map_or(core::ptr::null_mut(), |p| p as *mut u8)
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Growing the most recent allocation in place is the common case (a Vec being
        // filled), and saves the copy.
        let addr = ptr as usize;
        if addr + layout.size() == BUMP.next.get() && addr + new_size <= BUMP.end.get() {
            BUMP.next.set(addr + new_size);
            return ptr;
        }
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return core::ptr::null_mut();
        };
        // SAFETY: the caller guarantees `layout` fits `ptr`; the new block is fresh, so the
        // two do not overlap, and we copy only what both hold.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            }
            new
        }
    }
}
