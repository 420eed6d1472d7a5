//! Whose input is being handled, for a panic to name it.
//!
//! Design decision: a panic is a bug, but a peer's message can be what sets it off, and in the
//! browser a panic stops the whole node (a trap: nothing unwinds), which starts again and meets
//! the same peer. The code that takes a peer's message runs it in [`handling`]; the browser's
//! panic hook reads [`current`] and hands the name to the node's host, which tells the node
//! that starts next to take nothing more from that peer. Synchronous work is wrapped in
//! [`handling`]; work that awaits between its steps (answering a peer's request from the store)
//! in [`handling_async`], which names the peer in each of its polls only, so that the tasks
//! that run while it waits are not named.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;

thread_local! {
    static HANDLING: RefCell<Option<Rc<str>>> = const { RefCell::new(None) };
}

/// Restores the name there was before, also when the work panics and unwinds (native builds).
struct Restore(Option<Rc<str>>);

impl Drop for Restore {
    fn drop(&mut self) {
        let before = self.0.take();
        HANDLING.with(|h| {
            if let Ok(mut h) = h.try_borrow_mut() {
                *h = before;
            }
        });
    }
}

/// Run `work` as the handling of input from `who` (a peer's DID): a panic in it names `who`.
pub fn handling<T>(who: &str, work: impl FnOnce() -> T) -> T {
    let _handling = Handling::new(who);
    work()
}

/// While it lives, a panic names `who` (as [`handling`], for work that is not one closure).
pub struct Handling {
    _restore: Restore,
}

impl Handling {
    pub fn new(who: &str) -> Self {
        Self::shared(who.into())
    }

    /// As [`Handling::new`], with a name held already (no copy of it).
    fn shared(who: Rc<str>) -> Self {
        let before = HANDLING.with(|h| h.try_borrow_mut().ok().and_then(|mut h| h.replace(who)));
        Handling { _restore: Restore(before) }
    }
}

/// Run the future `work` as the handling of input from `who`: a panic in any of its polls names
/// `who`; between them, whatever runs is not named.
pub fn handling_async<'a, T: 'a>(
    who: impl Into<Rc<str>>,
    work: impl Future<Output = T> + 'a,
) -> impl Future<Output = T> + 'a {
    let who: Rc<str> = who.into();
    let mut work = Box::pin(work);
    futures::future::poll_fn(move |cx| {
        let _handling = Handling::shared(who.clone());
        work.as_mut().poll(cx)
    })
}

/// The message a caught panic carried, if it was text.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|m| (*m).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// Whose input is being handled now, if any (for a panic hook).
pub fn current() -> Option<String> {
    HANDLING.with(|h| h.try_borrow().ok().and_then(|h| h.as_deref().map(str::to_owned)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_holds_while_the_work_runs_and_goes_after() {
        assert_eq!(current(), None);
        let inner = handling("did:key:a", || {
            let nested = handling("did:key:b", current);
            (current(), nested)
        });
        assert_eq!(inner, (Some("did:key:a".into()), Some("did:key:b".into())));
        assert_eq!(current(), None);
    }

    #[test]
    fn a_panic_hook_sees_the_name_and_it_is_gone_after_unwinding() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
        let in_hook = seen.clone();
        let previous: std::sync::Arc<dyn Fn(&std::panic::PanicHookInfo) + Send + Sync> =
            std::panic::take_hook().into();
        // (Tests on other threads may panic meanwhile, and name what they handle: only this
        // thread's panic counts, and theirs go to the hook there was.)
        let this_thread = std::thread::current().id();
        let others = previous.clone();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().id() != this_thread {
                return others(info);
            }
            if let Ok(mut s) = in_hook.lock() {
                *s = current();
            }
        }));
        let result = std::panic::catch_unwind(|| handling("did:key:c", || panic!("a bug")));
        std::panic::set_hook(Box::new(move |info| previous(info)));
        assert!(result.is_err());
        assert_eq!(seen.lock().map(|s| s.clone()).ok().flatten().as_deref(), Some("did:key:c"));
        assert_eq!(current(), None);
    }

    #[test]
    fn async_work_names_its_peer_in_each_of_its_polls_only() {
        use std::rc::Rc;
        use std::task::{Context, Poll};
        let seen = Rc::new(RefCell::new(Vec::new()));
        let (tx, rx) = futures::channel::oneshot::channel::<()>();
        let noted = seen.clone();
        let work = handling_async("did:key:a", async move {
            noted.borrow_mut().push(current());
            let _ = rx.await;
            noted.borrow_mut().push(current());
        });
        futures::pin_mut!(work);
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        assert!(work.as_mut().poll(&mut cx).is_pending());
        assert_eq!(current(), None, "nothing is named while it waits");
        tx.send(()).expect("send");
        assert_eq!(work.as_mut().poll(&mut cx), Poll::Ready(()));
        assert_eq!(*seen.borrow(), [Some("did:key:a".to_owned()), Some("did:key:a".to_owned())]);
        assert_eq!(current(), None);
    }
}
