//! A shard's own timers for the per-request deadlines: hyper's header-read
//! timeout, the request deadline while the decision waits, and the
//! upstream's response timeout.
//!
//! Almost every such timer is cancelled, not fired: a head arrives, an
//! upstream answers. With tokio's timer each one still went into the timer
//! wheel under its lock and out again: ~1,200 instructions per request
//! for the two (`benches/instructions.sh`), against ~370 here. (The bare
//! hyper proxy of `benches/load/floor.rs` drops 2,700 without any timer,
//! but part of that is the time driver's work on every park, which
//! claimgate's interval tasks keep in any case.)
//!
//! Here a timer is a slot in the shard's thread-local table: set on its
//! first poll (a waker clone), freed when it is dropped. One driver task
//! per shard sleeps on a single tokio timer until the earliest deadline
//! in the table, wakes the timers that are due and frees their slots.
//! A timer set earlier than the driver's next look tells the driver,
//! which looks again; deadlines come from a fixed duration added to the
//! present, so that is rare. Cancelled timers cost the driver nothing.
//!
//! A [`Deadline`] made or polled on a thread without a driver (not a
//! shard's) is a tokio timer, as before.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

thread_local! {
    static TABLE: RefCell<Option<Table>> = const { RefCell::new(None) };
}

/// The timers of one shard.
struct Table {
    /// Each slot's deadline and waiting task; `None` when free.
    slots: Vec<Option<Slot>>,
    /// Each slot's generation, bumped when it is freed: a timer whose
    /// generation is gone has fired.
    generations: Vec<u64>,
    free: Vec<u32>,
    /// When the driver looks next (`None`: when it is told).
    next_look: Option<Instant>,
    driver: Option<Waker>,
    /// Set when a timer earlier than `next_look` was set.
    kicked: bool,
    /// This table's identity, against a timer polled on another shard.
    id: usize,
}

struct Slot {
    at: Instant,
    waker: Waker,
}

impl Table {
    fn set(&mut self, at: Instant, waker: &Waker) -> (u32, u64) {
        let slot = Slot {
            at,
            waker: waker.clone(),
        };
        let index = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.generations.push(0);
                (self.slots.len() - 1) as u32
            }
        };
        if self.next_look.is_none_or(|n| at < n) {
            self.next_look = Some(at);
            self.kicked = true;
            if let Some(d) = &self.driver {
                d.wake_by_ref();
            }
        }
        (index, self.generations[index as usize])
    }

    fn free(&mut self, index: u32) {
        self.slots[index as usize] = None;
        self.generations[index as usize] = self.generations[index as usize].wrapping_add(1);
        self.free.push(index);
    }

    /// Frees the slots due at `now` (their wakers into `due`) and returns
    /// the earliest deadline left.
    fn expire(&mut self, now: Instant, due: &mut Vec<Waker>) -> Option<Instant> {
        let mut earliest: Option<Instant> = None;
        for i in 0..self.slots.len() {
            let Some(slot) = &self.slots[i] else { continue };
            if slot.at <= now {
                due.push(slot.waker.clone());
                self.free(i as u32);
            } else if earliest.is_none_or(|e| slot.at < e) {
                earliest = Some(slot.at);
            }
        }
        earliest
    }
}

/// Runs this thread's timer table until the runtime stops; spawned once
/// per shard.
pub async fn drive() {
    static TABLES: AtomicUsize = AtomicUsize::new(0);
    let id = TABLES.fetch_add(1, Ordering::Relaxed);
    TABLE.with(|t| {
        *t.borrow_mut() = Some(Table {
            slots: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            next_look: None,
            driver: None,
            kicked: false,
            id,
        })
    });
    let _uninstall = Uninstall;
    let mut due = Vec::new();
    let mut sleep = Box::pin(tokio::time::sleep_until(tokio::time::Instant::now()));
    loop {
        let next = with_table(|t| {
            t.kicked = false;
            let next = t.expire(Instant::now(), &mut due);
            t.next_look = next;
            next
        });
        for waker in due.drain(..) {
            waker.wake();
        }
        if let Some(next) = next {
            sleep.as_mut().reset(tokio::time::Instant::from_std(next));
        }
        std::future::poll_fn(|cx| {
            let kicked = with_table(|t| {
                if !t.driver.as_ref().is_some_and(|d| d.will_wake(cx.waker())) {
                    t.driver = Some(cx.waker().clone());
                }
                std::mem::take(&mut t.kicked)
            });
            if kicked || (next.is_some() && sleep.as_mut().poll(cx).is_ready()) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

/// Removes the table when the driver stops (its runtime shutting down):
/// later timers on this thread are tokio's.
struct Uninstall;

impl Drop for Uninstall {
    fn drop(&mut self) {
        let _ = TABLE.try_with(|t| t.borrow_mut().take());
    }
}

fn with_table<R>(f: impl FnOnce(&mut Table) -> R) -> R {
    TABLE.with(|t| f(t.borrow_mut().as_mut().expect("the driver's table")))
}

/// A future that resolves at a deadline.
pub struct Deadline {
    at: Instant,
    state: State,
}

enum State {
    /// Not polled yet.
    New,
    /// Set in table `table`, slot `index` of generation `generation`.
    Set {
        table: usize,
        index: u32,
        generation: u64,
    },
    /// A tokio timer: no table on the thread that polled it.
    Tokio(Pin<Box<tokio::time::Sleep>>),
    Done,
}

impl Deadline {
    pub fn at(at: Instant) -> Self {
        Deadline {
            at,
            state: State::New,
        }
    }

    pub fn after(d: Duration) -> Self {
        Self::at(Instant::now() + d)
    }
}

impl Future for Deadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        match &mut this.state {
            State::Done => return Poll::Ready(()),
            State::Tokio(sleep) => return sleep.as_mut().poll(cx),
            State::Set {
                table,
                index,
                generation,
            } => {
                let (table, index, generation) = (*table, *index, *generation);
                let fired = TABLE.try_with(|t| {
                    let mut t = t.borrow_mut();
                    let t = t.as_mut().filter(|t| t.id == table)?;
                    if t.generations[index as usize] != generation {
                        return Some(true);
                    }
                    if let Some(slot) = &mut t.slots[index as usize] {
                        if !slot.waker.will_wake(cx.waker()) {
                            slot.waker = cx.waker().clone();
                        }
                    }
                    Some(false)
                });
                match fired {
                    Ok(Some(true)) => {
                        this.state = State::Done;
                        return Poll::Ready(());
                    }
                    Ok(Some(false)) => return Poll::Pending,
                    // Polled away from its table: a tokio timer from here on.
                    _ => {}
                }
            }
            State::New => {
                // No clock read: a deadline already past is earlier than
                // the driver's next look, so the driver is told and fires it.
                let set = TABLE.try_with(|t| {
                    let mut t = t.borrow_mut();
                    let t = t.as_mut()?;
                    let (index, generation) = t.set(this.at, cx.waker());
                    Some(State::Set {
                        table: t.id,
                        index,
                        generation,
                    })
                });
                if let Ok(Some(state)) = set {
                    this.state = state;
                    return Poll::Pending;
                }
            }
        }
        let mut sleep = Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(
            this.at,
        )));
        let ready = sleep.as_mut().poll(cx);
        this.state = State::Tokio(sleep);
        ready
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        if let State::Set {
            table,
            index,
            generation,
        } = self.state
        {
            let _ = TABLE.try_with(|t| {
                if let Some(t) = t.borrow_mut().as_mut().filter(|t| t.id == table) {
                    if t.generations[index as usize] == generation {
                        t.free(index);
                    }
                }
            });
        }
    }
}

/// `fut`'s output, or `None` if `at` passes first. The timer is set only
/// if `fut` waits (a [`Deadline`] takes a slot on its first poll).
pub async fn timeout_at<F: Future>(at: Instant, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut deadline = Deadline::at(at);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        Pin::new(&mut deadline).poll(cx).map(|()| None)
    })
    .await
}

/// hyper's timer over the shard's table (tokio's elsewhere).
#[derive(Clone, Copy, Debug, Default)]
pub struct ShardTimer;

impl hyper::rt::Timer for ShardTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Deadline::after(duration))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Deadline::at(deadline))
    }
}

impl hyper::rt::Sleep for Deadline {}

/// How many timers this thread's table holds (`None`: no table).
#[cfg(test)]
fn pending() -> Option<usize> {
    TABLE
        .try_with(|t| t.borrow().as_ref().map(|t| t.slots.len() - t.free.len()))
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests;
