use std::time::{Duration, Instant};

use super::*;

/// Runs `f` on a current-thread runtime whose table a driver runs, as a
/// shard's.
fn on_shard<F: Future<Output = ()>>(f: F) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::spawn(drive());
        tokio::task::yield_now().await;
        assert_eq!(pending(), Some(0), "the driver installed a table");
        // A timer that never fires fails the test instead of hanging it.
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .expect("a timer never fired");
    });
}

#[test]
fn fires_at_its_deadline_not_before() {
    on_shard(async {
        let start = Instant::now();
        Deadline::after(Duration::from_millis(80)).await;
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(80), "fired early: {took:?}");
        assert!(took < Duration::from_millis(1500), "fired late: {took:?}");
        assert_eq!(pending(), Some(0), "a fired timer leaves its slot");
    });
}

#[test]
fn an_earlier_timer_than_the_drivers_next_look_fires_on_time() {
    on_shard(async {
        let far = tokio::spawn(Deadline::after(Duration::from_secs(30)));
        tokio::task::yield_now().await;
        assert_eq!(pending(), Some(1));
        let start = Instant::now();
        Deadline::after(Duration::from_millis(50)).await;
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        far.abort();
    });
}

#[test]
fn dropped_timers_free_their_slots_and_slots_are_reused() {
    on_shard(async {
        for _ in 0..3 {
            let mut set = Vec::new();
            for _ in 0..100 {
                let mut d = Box::pin(Deadline::after(Duration::from_secs(60)));
                // Polled once: set in the table.
                assert!(futures_util::poll!(d.as_mut()).is_pending());
                set.push(d);
            }
            assert_eq!(pending(), Some(100));
            drop(set);
            assert_eq!(pending(), Some(0));
        }
        let slots = TABLE.with(|t| t.borrow().as_ref().unwrap().slots.len());
        assert_eq!(slots, 100, "freed slots are reused");
    });
}

#[test]
fn timeout_at_answers_by_which_came_first() {
    on_shard(async {
        let soon = Instant::now() + Duration::from_millis(60);
        let late = timeout_at(soon, tokio::time::sleep(Duration::from_secs(5))).await;
        assert!(late.is_none());
        let later = Instant::now() + Duration::from_secs(5);
        assert_eq!(timeout_at(later, async { 7 }).await, Some(7));
        assert_eq!(pending(), Some(0));
    });
}

#[test]
fn many_timers_each_fire_once_in_deadline_order() {
    on_shard(async {
        let order = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let local = tokio::task::LocalSet::new();
        for i in (0..20u64).rev() {
            let order = order.clone();
            local.spawn_local(async move {
                Deadline::after(Duration::from_millis(20 + 15 * i)).await;
                order.borrow_mut().push(i);
            });
        }
        local.await;
        assert_eq!(*order.borrow(), (0..20).collect::<Vec<_>>());
    });
}

#[test]
fn without_a_driver_it_is_a_tokio_timer() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(pending(), None);
        let start = Instant::now();
        Deadline::after(Duration::from_millis(40)).await;
        assert!(start.elapsed() >= Duration::from_millis(40));
    });
}
