//! A FIFO of byte-string pairs in shared memory, for work one process hands to another: usrloc
//! callbacks (any process, under usrloc's own lock) queue "AoR X has contact Y", and the
//! module's auto-append process takes them and talks to TM, outside every lock.
//!
//! Entries are single blocks from the allocator; a sequence word doubles as a shared futex, so
//! the consumer sleeps until a producer in another process pushes.

use super::{ShmAlloc, ShmMutex};
use core::cell::UnsafeCell;
use core::mem::size_of;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU32, Ordering};

#[repr(C)]
struct Entry {
    next: *mut Entry,
    a_len: u32,
    b_len: u32,
    // a_len + b_len bytes follow.
}

#[repr(C)]
pub struct ShmQueue<A: ShmAlloc> {
    alloc: A,
    lock: ShmMutex,
    /// Bumped by every push; the consumer waits on it.
    seq: AtomicU32,
    capacity: u32,
    list: UnsafeCell<List>,
}

struct List {
    len: u32,
    head: *mut Entry,
    tail: *mut Entry,
}

// SAFETY: the list is only touched under `lock`; `seq` is atomic.
unsafe impl<A: ShmAlloc> Sync for ShmQueue<A> {}
unsafe impl<A: ShmAlloc> Send for ShmQueue<A> {}

#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    Full,
    NoMemory,
}

impl<A: ShmAlloc> ShmQueue<A> {
    /// A queue in `alloc`'s memory holding at most `capacity` entries.
    pub fn create(alloc: A, capacity: u32) -> Option<NonNull<ShmQueue<A>>> {
        let q = alloc.alloc(size_of::<ShmQueue<A>>()) as *mut ShmQueue<A>;
        let q = NonNull::new(q)?;
        // SAFETY: a fresh block, large enough and aligned.
        unsafe {
            q.as_ptr().write(ShmQueue {
                alloc,
                lock: ShmMutex::new(),
                seq: AtomicU32::new(0),
                capacity,
                list: UnsafeCell::new(List { len: 0, head: ptr::null_mut(), tail: ptr::null_mut() }),
            })
        };
        Some(q)
    }

    /// Appends (a, b); never blocks on the consumer.
    pub fn push(&self, a: &[u8], b: &[u8]) -> Result<(), PushError> {
        let e = self.alloc.alloc(size_of::<Entry>() + a.len() + b.len()) as *mut Entry;
        if e.is_null() {
            return Err(PushError::NoMemory);
        }
        // SAFETY: a fresh block sized for the header and both strings.
        unsafe {
            e.write(Entry { next: ptr::null_mut(), a_len: a.len() as u32, b_len: b.len() as u32 });
            let data = (e as *mut u8).add(size_of::<Entry>());
            ptr::copy_nonoverlapping(a.as_ptr(), data, a.len());
            ptr::copy_nonoverlapping(b.as_ptr(), data.add(a.len()), b.len());
        }
        {
            let g = self.lock.lock();
            // SAFETY: the list changes only under the lock, held here.
            let list = unsafe { &mut *self.list.get() };
            if list.len >= self.capacity {
                drop(g);
                // SAFETY: never linked.
                unsafe { self.alloc.free(e as *mut u8) };
                return Err(PushError::Full);
            }
            if list.tail.is_null() {
                list.head = e;
            } else {
                // SAFETY: the tail is a live entry of this list.
                unsafe { (*list.tail).next = e };
            }
            list.tail = e;
            list.len += 1;
        }
        self.seq.fetch_add(1, Ordering::Release);
        // SAFETY: FUTEX_WAKE only uses the address as a key (shared: the consumer is another process).
        unsafe { libc::syscall(libc::SYS_futex, self.seq.as_ptr(), libc::FUTEX_WAKE, i32::MAX) };
        Ok(())
    }

    /// The oldest entry, copied out (and freed), if any.
    pub fn pop(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        let e = {
            let _g = self.lock.lock();
            // SAFETY: the list changes only under the lock, held here.
            let list = unsafe { &mut *self.list.get() };
            let e = list.head;
            if e.is_null() {
                return None;
            }
            // SAFETY: the head is a live entry of this list.
            list.head = unsafe { (*e).next };
            if list.head.is_null() {
                list.tail = ptr::null_mut();
            }
            list.len -= 1;
            e
        };
        // SAFETY: unlinked, so ours alone; the strings follow the header.
        unsafe {
            let data = (e as *const u8).add(size_of::<Entry>());
            let a = core::slice::from_raw_parts(data, (*e).a_len as usize).to_vec();
            let b = core::slice::from_raw_parts(data.add((*e).a_len as usize), (*e).b_len as usize).to_vec();
            self.alloc.free(e as *mut u8);
            Some((a, b))
        }
    }

    /// The current sequence: pass it to `wait` after finding the queue empty.
    pub fn seq(&self) -> u32 {
        self.seq.load(Ordering::Acquire)
    }

    /// Entries waiting now.
    pub fn waiting(&self) -> u32 {
        let _guard = self.lock.lock();
        // SAFETY: read under the lock.
        unsafe { (*self.list.get()).len }
    }

    /// Sleeps until a push after `seen`, or `timeout_ms` passes.
    pub fn wait(&self, seen: u32, timeout_ms: u64) {
        let ts = libc::timespec { tv_sec: (timeout_ms / 1000) as _, tv_nsec: ((timeout_ms % 1000) * 1_000_000) as _ };
        // SAFETY: FUTEX_WAIT reads the word and sleeps only while it still equals `seen`.
        unsafe { libc::syscall(libc::SYS_futex, self.seq.as_ptr(), libc::FUTEX_WAIT, seen, &ts as *const libc::timespec) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::super::tests::CountingHeap as Heap;

    #[test]
    fn fifo_bounded_and_nothing_leaks() {
        let heap = Heap::new();
        let q = ShmQueue::create(heap, 2).unwrap();
        let q = unsafe { q.as_ref() };
        assert_eq!(q.pop(), None);
        q.push(b"bob", b"sip:bob@1.2.3.4").unwrap();
        q.push(b"", b"x").unwrap();
        assert_eq!(q.push(b"carol", b"y"), Err(PushError::Full));
        assert_eq!(q.pop(), Some((b"bob".to_vec(), b"sip:bob@1.2.3.4".to_vec())));
        assert_eq!(q.pop(), Some((Vec::new(), b"x".to_vec())));
        assert_eq!(q.pop(), None);
        assert_eq!(heap.live(), 1, "only the queue itself");
    }

    #[test]
    fn a_push_wakes_a_waiter_in_another_thread() {
        let q = ShmQueue::create(Heap::new(), 16).unwrap();
        let addr = q.as_ptr() as usize;
        let seen = unsafe { q.as_ref() }.seq();
        let t = std::thread::spawn(move || {
            let q = unsafe { &*(addr as *const ShmQueue<Heap>) };
            let start = std::time::Instant::now();
            q.wait(seen, 5000);
            (start.elapsed(), q.pop())
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        unsafe { q.as_ref() }.push(b"a", b"b").unwrap();
        let (waited, got) = t.join().unwrap();
        assert!(waited < std::time::Duration::from_secs(2), "woken, not timed out: {waited:?}");
        assert_eq!(got, Some((b"a".to_vec(), b"b".to_vec())));
    }
}
