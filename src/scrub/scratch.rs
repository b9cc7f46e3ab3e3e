//! Chunk buffers kept on each scrub thread from one object to the next.
//!
//! A scrub reads `k + m` chunk-sized buffers per object. Fresh megabyte allocations come from
//! the kernel zeroed, one page fault per 4 KiB, and glibc hands freed ones straight back
//! (`madvise`), so every object paid for them again: 97k page faults for a 3 GiB scrub, and
//! the faults contend on the process's memory map, which is what cost the 2-thread scrub its
//! speed-up. Buffers kept per thread are faulted in once.

use std::cell::RefCell;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// `count` buffers of `len` bytes each, taken from this thread's spares where there are any,
/// and handed back to them when dropped. Their content is unspecified: callers fill what they
/// use.
pub(super) struct Scratch {
    buffers: Vec<Vec<u8>>,
}

impl Scratch {
    pub(super) fn take(count: usize, len: usize) -> Scratch {
        let mut buffers = SPARE.with_borrow_mut(|spare| {
            let keep = spare.len().saturating_sub(count);
            spare.split_off(keep)
        });
        buffers.resize_with(count, Vec::new);
        for buffer in &mut buffers {
            // Growing writes zeros only past the old length; shrinking keeps the capacity.
            buffer.resize(len, 0);
        }
        Scratch { buffers }
    }

    pub(super) fn buffers(&mut self) -> &mut [Vec<u8>] {
        &mut self.buffers
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let buffers = std::mem::take(&mut self.buffers);
        SPARE.with_borrow_mut(|spare| spare.extend(buffers));
    }
}
