//! Signatures of concurrent requests verified together.
//!
//! A server deciding many requests at once checks one DPoP proof per
//! request. Ed25519 batch verification checks `n` signatures for much less
//! than `n` single checks (one multi-scalar multiplication instead of `n`
//! double-scalar ones), so a [`SignatureBatcher`] runs a thread that takes
//! every signature waiting when it is free, checks them as one batch, and
//! answers each caller. A signature that comes alone — nothing being
//! checked, and either none submitted in the previous [`LONE_GAP_MICROS`]
//! or its request the only one the server is handling — is checked at once
//! by its caller (no thread hop for a lone request); one in a stream of
//! requests joins the next batch, which is whatever queued during the
//! previous one (nothing waits for company). Deciding by the gap and not
//! only by "nothing is being checked right now" matters under load: with
//! the latter, the authority's workers checked most proofs one at a time
//! between batches, and decided ~30% fewer requests per second. Deciding by
//! the requests in flight as well ([`SignatureBatcher::request`]) matters
//! to one client calling one request after another: its next proof comes
//! within the gap, but no other request can keep it company, and sending it
//! to the thread only added two thread wake-ups to every request.
//!
//! A batch that fails is checked again one signature at a time with
//! `verify_strict`'s rule, so exactly the bad ones fail. The batch check
//! ([`VerifyingKey::verify_batch`]) refuses what the strict check refuses
//! on sight (a non-canonical `S`, an `R` that is no point or has small
//! order), but it checks a random combination of the equations without the
//! cofactor, so the holder of a key with a torsion part could craft a
//! signature that only one of the two accepts, which gains it nothing it
//! could not sign honestly (the same reasoning as a chain's own batch, see
//! [`crate::chain`]). Small-order keys never get here: keys are refused
//! when decoded.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread;

use crate::keys::VerifyingKey;

/// What a caller is told: whether its signature verified.
pub type Answer = Box<dyn FnOnce(bool) + Send>;

struct Pending {
    key: VerifyingKey,
    msg: Vec<u8>,
    sig: Vec<u8>,
    answer: Answer,
}

/// A signature submitted less than this after the one before is part of a
/// stream of requests: it goes to the batcher's thread, where it will likely
/// have company, even when nothing is being checked at that instant.
pub const LONE_GAP_MICROS: u64 = 200;

/// `last_submit` before the first signature.
const NEVER: u64 = u64::MAX;

/// Most signatures in one batch (beyond this the gain per signature is
/// small and a failed batch costs more to sort out).
pub const MAX_BATCH: usize = 64;

/// A thread verifying the signatures handed to it in batches. Dropping it
/// stops the thread after it answered everything queued.
pub struct SignatureBatcher {
    tx: Mutex<Option<mpsc::Sender<Pending>>>,
    /// Signatures being checked now, here or on the thread.
    busy: Arc<AtomicUsize>,
    /// Requests the server is handling now, as [`Self::request`] counts
    /// them (0 when the server does not count).
    in_flight: Arc<AtomicUsize>,
    /// When the last signature was submitted, in microseconds since `epoch`.
    last_submit: AtomicU64,
    epoch: std::time::Instant,
    stats: Arc<Stats>,
    thread: Mutex<Option<thread::JoinHandle<()>>>,
}

/// How the signatures submitted so far were checked (for metrics: whether
/// batching pays under the load a server sees).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Checked at once by the caller (a lone request, a P-256 key, or a
    /// stopped batcher; no thread hop).
    pub at_once: u64,
    /// Taken by the thread with nothing else queued, and checked alone.
    pub thread_alone: u64,
    /// Taken by the thread with company, and checked as one batch.
    pub in_batches: u64,
    /// Batch checks made (each of two signatures or more).
    pub batches: u64,
    /// Checked again one by one because their batch failed.
    pub rechecked: u64,
}

#[derive(Default)]
struct Stats {
    at_once: AtomicU64,
    thread_alone: AtomicU64,
    in_batches: AtomicU64,
    batches: AtomicU64,
    rechecked: AtomicU64,
}

impl std::fmt::Debug for SignatureBatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureBatcher").finish_non_exhaustive()
    }
}

impl SignatureBatcher {
    /// Starts the verifying thread.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start() -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Pending>();
        let busy = Arc::new(AtomicUsize::new(0));
        let done = Arc::clone(&busy);
        let stats = Arc::new(Stats::default());
        let counted = Arc::clone(&stats);
        let thread = thread::Builder::new()
            .name("mandate-sig-batch".into())
            .spawn(move || run(&rx, &done, &counted))?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            busy,
            in_flight: Arc::new(AtomicUsize::new(0)),
            last_submit: AtomicU64::new(NEVER),
            epoch: std::time::Instant::now(),
            stats,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// How the signatures submitted so far were checked.
    #[must_use]
    pub fn counts(&self) -> Counts {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counts {
            at_once: read(&self.stats.at_once),
            thread_alone: read(&self.stats.thread_alone),
            in_batches: read(&self.stats.in_batches),
            batches: read(&self.stats.batches),
            rechecked: read(&self.stats.rechecked),
        }
    }

    /// Counts one request the server is handling until the guard is
    /// dropped: a server that takes one for each request it decides lets a
    /// proof of the only request in flight be checked at once, however soon
    /// it follows the one before ([`Self::submit`]).
    #[must_use]
    pub fn request(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(&self.in_flight))
    }

    /// Verifies `sig` over `msg` by `key` and calls `answer` with the result.
    /// When nothing else is being checked, and either no signature came in
    /// the last [`LONE_GAP_MICROS`] or its request is the only one in flight
    /// ([`Self::request`]), the signature is checked here, at once (a lone
    /// request waits for no thread); otherwise it joins the next batch on
    /// the batcher's thread. A key that cannot be batched
    /// (P-256), or a batcher that has stopped, is checked here too.
    pub fn submit(&self, key: &VerifyingKey, msg: &[u8], sig: &[u8], answer: Answer) {
        if key.ed25519().is_none() {
            self.stats.at_once.fetch_add(1, Ordering::Relaxed);
            answer(key.verify(msg, sig));
            return;
        }
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX - 1);
        let previous = self.last_submit.swap(now, Ordering::AcqRel);
        let lone = self.in_flight.load(Ordering::Acquire) == 1
            || previous == NEVER
            || now.saturating_sub(previous) >= LONE_GAP_MICROS;
        if self.busy.fetch_add(1, Ordering::AcqRel) == 0 && lone {
            self.stats.at_once.fetch_add(1, Ordering::Relaxed);
            let ok = key.verify(msg, sig);
            self.busy.fetch_sub(1, Ordering::AcqRel);
            answer(ok);
            return;
        }
        let pending = Pending {
            key: key.clone(),
            msg: msg.to_vec(),
            sig: sig.to_vec(),
            answer,
        };
        let sent = match self.tx.lock() {
            Ok(tx) => match tx.as_ref() {
                Some(tx) => tx.send(pending).map_err(|e| e.0),
                None => Err(pending),
            },
            Err(_) => Err(pending),
        };
        if let Err(p) = sent {
            self.stats.at_once.fetch_add(1, Ordering::Relaxed);
            let ok = p.key.verify(&p.msg, &p.sig);
            self.busy.fetch_sub(1, Ordering::AcqRel);
            (p.answer)(ok);
        }
    }

    /// [`submit`](Self::submit) as a future (for any async runtime): whether
    /// the signature verified; `false` if the batcher dropped it unanswered.
    pub fn verify(&self, key: &VerifyingKey, msg: &[u8], sig: &[u8]) -> Verified {
        let slot = Arc::new(Mutex::new(Slot::default()));
        let answerer = Answerer(Arc::clone(&slot));
        let answer: Answer = Box::new(move |ok| answerer.answer(ok));
        self.submit(key, msg, sig, answer);
        Verified { slot }
    }

    /// Checks a DPoP proof's signature ([`crate::pop::UncheckedProof`]) in
    /// the batch.
    pub fn verify_proof(&self, proof: &crate::pop::UncheckedProof<'_>) -> Verified {
        self.verify(proof.holder(), proof.signing_input(), proof.signature())
    }

    /// [`crate::pop::check_admitted`] with the signature checked in the
    /// batch, and without the replay cache: the proof that proves possession
    /// for `chain`'s leaf (`None` when none is needed), for the caller to
    /// admit to its replay cache.
    ///
    /// # Errors
    /// Why possession is not proved, as `check_admitted` says it.
    pub async fn prove_possession(
        &self,
        chain: &crate::chain::VerifiedChain,
        possession: &crate::pop::Possession<'_>,
        now: crate::timestamp::UnixTime,
    ) -> Result<Option<crate::pop::Proof>, crate::pop::PopError> {
        let Some((unchecked, target)) = crate::pop::unchecked(chain, possession)? else {
            return Ok(None);
        };
        let signed = self.verify_proof(&unchecked).await;
        unchecked.finish(signed, &target, now).map(Some)
    }
}

/// One request in flight at the server a [`SignatureBatcher`] serves, until
/// dropped ([`SignatureBatcher::request`]).
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Fills the slot; dropped unanswered (a batcher that died), it says so,
/// so the waiting request is denied instead of waiting for ever.
struct Answerer(Arc<Mutex<Slot>>);

impl Answerer {
    fn answer(&self, ok: bool) {
        self.settle(ok);
    }

    fn settle(&self, answer: bool) {
        if let Ok(mut s) = self.0.lock()
            && s.answer.is_none()
        {
            s.answer = Some(answer);
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        }
    }
}

impl Drop for Answerer {
    /// Unanswered (a batcher that died): a deny, not a wait for ever.
    fn drop(&mut self) {
        self.settle(false);
    }
}

#[derive(Default)]
struct Slot {
    answer: Option<bool>,
    waker: Option<std::task::Waker>,
}

/// The answer of [`SignatureBatcher::verify`], when it comes.
pub struct Verified {
    slot: Arc<Mutex<Slot>>,
}

impl std::fmt::Debug for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified").finish_non_exhaustive()
    }
}

impl Future for Verified {
    type Output = bool;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let Ok(mut s) = self.slot.lock() else {
            return Poll::Ready(false);
        };
        if let Some(ok) = s.answer {
            return Poll::Ready(ok);
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for SignatureBatcher {
    fn drop(&mut self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Ok(mut t) = self.thread.lock()
            && let Some(t) = t.take()
        {
            let _ = t.join();
        }
    }
}

fn run(rx: &mpsc::Receiver<Pending>, busy: &AtomicUsize, stats: &Stats) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let all = batch.len() > 1
            && VerifyingKey::verify_batch(
                batch
                    .iter()
                    .map(|p| (&p.key, p.msg.as_slice(), p.sig.as_slice())),
            );
        let n = batch.len() as u64;
        if n > 1 {
            stats.batches.fetch_add(1, Ordering::Relaxed);
            stats.in_batches.fetch_add(n, Ordering::Relaxed);
            if !all {
                stats.rechecked.fetch_add(n, Ordering::Relaxed);
            }
        } else {
            stats.thread_alone.fetch_add(1, Ordering::Relaxed);
        }
        for p in batch.drain(..) {
            let ok = all || p.key.verify(&p.msg, &p.sig);
            busy.fetch_sub(1, Ordering::AcqRel);
            (p.answer)(ok);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

    use std::sync::mpsc;

    use super::SignatureBatcher;
    use crate::keys::{Algorithm, SigningKey};

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_seed(Algorithm::EdDSA, [seed; 32])
    }

    #[test]
    fn every_signature_gets_its_own_answer_whatever_else_is_in_its_batch() {
        let batcher = SignatureBatcher::start().unwrap();
        // As if one were being checked: every signature goes to the thread.
        batcher
            .busy
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let (tx, rx) = mpsc::channel();
        // 300 signatures from 8 threads at once: every fifth is bad (signed
        // by another key, or over other bytes, or not 64 bytes), so most
        // batches hold good and bad ones and must be sorted out one by one.
        std::thread::scope(|s| {
            for t in 0..8u8 {
                let (tx, batcher) = (tx.clone(), &batcher);
                s.spawn(move || {
                    for i in 0..300usize {
                        if i % 8 != usize::from(t) {
                            continue;
                        }
                        let signer = key(t + 1);
                        let msg = format!("request {i}").into_bytes();
                        let (sig, good) = match i % 5 {
                            0 => (key(99).sign(&msg), false),
                            1 if i % 3 == 0 => (signer.sign(b"other bytes"), false),
                            2 if i % 3 == 0 => (vec![0u8; 10], false),
                            _ => (signer.sign(&msg), true),
                        };
                        let tx = tx.clone();
                        batcher.submit(
                            &signer.verifying_key().unwrap(),
                            &msg,
                            &sig,
                            Box::new(move |ok| tx.send((i, ok, good)).unwrap()),
                        );
                    }
                });
            }
        });
        drop(tx);
        let answers: Vec<_> = rx.iter().collect();
        assert_eq!(answers.len(), 300);
        for (i, ok, good) in answers {
            assert_eq!(ok, good, "signature {i}");
        }
        // Every signature went to the thread, and is counted once there;
        // the batches that held a bad one were checked again one by one.
        let c = batcher.counts();
        assert_eq!(c.at_once, 0, "{c:?}");
        assert_eq!(c.thread_alone + c.in_batches, 300, "{c:?}");
        assert!(c.batches == 0 || c.in_batches >= 2 * c.batches, "{c:?}");
        assert!(c.rechecked <= c.in_batches, "{c:?}");
        assert!(c.batches == 0 || c.rechecked > 0, "60 bad ones: {c:?}");
    }

    #[test]
    fn a_lone_signature_is_checked_by_its_caller_and_one_in_a_stream_goes_to_the_batch() {
        let batcher = SignatureBatcher::start().unwrap();
        let signer = key(1);
        let public = signer.verifying_key().unwrap();
        let sig = signer.sign(b"m");
        let (tx, rx) = mpsc::channel();
        let answer = |tx: mpsc::Sender<bool>| Box::new(move |ok| tx.send(ok).unwrap());
        // The first: nothing before it, nothing being checked: answered
        // before `submit` returns, on this thread.
        batcher.submit(&public, b"m", &sig, answer(tx.clone()));
        assert_eq!(rx.try_recv(), Ok(true));
        // One that follows another by less than the gap joins the batch:
        // as if the previous had just been submitted.
        let now = u64::try_from(batcher.epoch.elapsed().as_micros()).unwrap();
        batcher
            .last_submit
            .store(now + 1_000_000, std::sync::atomic::Ordering::Release);
        let (tx_thread, rx_thread) = mpsc::channel();
        batcher.submit(
            &public,
            b"m",
            &sig,
            Box::new(move |ok| {
                tx_thread
                    .send((ok, std::thread::current().name().map(str::to_owned)))
                    .unwrap();
            }),
        );
        let (ok, thread) = rx_thread.recv().unwrap();
        assert!(ok);
        assert_eq!(thread.as_deref(), Some("mandate-sig-batch"));
        drop(tx);
        assert_eq!(
            batcher.counts(),
            super::Counts {
                at_once: 1,
                thread_alone: 1,
                ..super::Counts::default()
            }
        );
    }

    /// Where each signature is checked: on the caller's thread or the
    /// batcher's.
    fn checked_on(batcher: &SignatureBatcher, signer: &SigningKey) -> Option<String> {
        let (tx, rx) = mpsc::channel();
        let sig = signer.sign(b"m");
        batcher.submit(
            &signer.verifying_key().unwrap(),
            b"m",
            &sig,
            Box::new(move |ok| {
                assert!(ok);
                tx.send(std::thread::current().name().map(str::to_owned))
                    .unwrap();
            }),
        );
        rx.recv().unwrap()
    }

    #[test]
    fn the_only_request_in_flight_is_checked_at_once_however_soon_it_follows_another() {
        let batcher = SignatureBatcher::start().unwrap();
        let signer = key(3);
        let here = std::thread::current().name().map(str::to_owned);
        let soon = |b: &SignatureBatcher| {
            // As if a signature had just been submitted: within the gap.
            let now = u64::try_from(b.epoch.elapsed().as_micros()).unwrap();
            b.last_submit
                .store(now + 1_000_000, std::sync::atomic::Ordering::Release);
        };
        // One client calling one request after another.
        {
            let _one = batcher.request();
            soon(&batcher);
            assert_eq!(checked_on(&batcher, &signer), here);
        }
        // Two requests in flight: the second may keep it company.
        let first = batcher.request();
        let second = batcher.request();
        soon(&batcher);
        assert_eq!(
            checked_on(&batcher, &signer).as_deref(),
            Some("mandate-sig-batch")
        );
        drop((first, second));
        // The guards gave back what they counted.
        assert_eq!(
            batcher.in_flight.load(std::sync::atomic::Ordering::Acquire),
            0
        );
    }

    /// Polls a future to its end on this thread.
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        struct Unpark(std::thread::Thread);
        impl std::task::Wake for Unpark {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
        let mut cx = std::task::Context::from_waker(&waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
            std::thread::park();
        }
    }

    #[test]
    fn the_future_answers_as_the_batch_does_and_denies_when_nobody_answers() {
        let batcher = SignatureBatcher::start().unwrap();
        let k = key(4);
        let vk = k.verifying_key().unwrap();
        assert!(block_on(batcher.verify(&vk, b"m", &k.sign(b"m"))));
        assert!(!block_on(batcher.verify(&vk, b"m", &k.sign(b"x"))));
        // An answer dropped unanswered (a batcher that died) is a deny, not
        // a request waiting for ever.
        let slot = std::sync::Arc::new(std::sync::Mutex::new(super::Slot::default()));
        drop(super::Answerer(std::sync::Arc::clone(&slot)));
        assert!(!block_on(super::Verified { slot }));
    }

    #[test]
    fn a_stopped_batcher_still_answers_by_checking_at_once() {
        let batcher = SignatureBatcher::start().unwrap();
        batcher.tx.lock().unwrap().take();
        let k = key(3);
        let (tx, rx) = mpsc::channel();
        let vk = k.verifying_key().unwrap();
        let t2 = tx.clone();
        batcher.submit(
            &vk,
            b"m",
            &k.sign(b"m"),
            Box::new(move |ok| t2.send(ok).unwrap()),
        );
        batcher.submit(
            &vk,
            b"m",
            &k.sign(b"n"),
            Box::new(move |ok| tx.send(ok).unwrap()),
        );
        assert_eq!(rx.iter().collect::<Vec<_>>(), [true, false]);
    }
}
