//! Signatures of concurrent requests verified together.
//!
//! A server deciding many requests at once checks one DPoP proof per
//! request. Ed25519 batch verification checks `n` signatures for much less
//! than `n` single checks (one multi-scalar multiplication instead of `n`
//! double-scalar ones), so a [`SignatureBatcher`] runs a thread that takes
//! every signature waiting when it is free, checks them as one batch, and
//! answers each caller. Alone, a signature is checked alone (no waiting for
//! company: the batch is whatever queued during the previous one).
//!
//! A batch that fails is checked again one signature at a time with
//! `verify_strict`, so exactly the bad ones fail. Batch verification is
//! cofactored where `verify_strict` is not: a signer could craft a
//! signature that only one of them accepts, which gains the signer nothing
//! it could not sign honestly (the same reasoning as a chain's own batch,
//! see [`crate::chain`]). Small-order keys never get here: keys are refused
//! when decoded.

use std::sync::Mutex;
use std::sync::mpsc;
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

/// Most signatures in one batch (beyond this the gain per signature is
/// small and a failed batch costs more to sort out).
pub const MAX_BATCH: usize = 64;

/// A thread verifying the signatures handed to it in batches. Dropping it
/// stops the thread after it answered everything queued.
pub struct SignatureBatcher {
    tx: Mutex<Option<mpsc::Sender<Pending>>>,
    thread: Mutex<Option<thread::JoinHandle<()>>>,
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
        let thread = thread::Builder::new()
            .name("mandate-sig-batch".into())
            .spawn(move || run(&rx))?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Verifies `sig` over `msg` by `key` and calls `answer` with the result,
    /// on the batcher's thread. A key that cannot be batched (P-256), or a
    /// batcher that has stopped, is checked here, at once.
    pub fn submit(&self, key: &VerifyingKey, msg: &[u8], sig: &[u8], answer: Answer) {
        if key.ed25519().is_none() {
            answer(key.verify(msg, sig));
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
            (p.answer)(p.key.verify(&p.msg, &p.sig));
        }
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

fn run(rx: &mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let all = batch.len() > 1 && verify_together(&batch);
        for p in batch.drain(..) {
            let ok = all || p.key.verify(&p.msg, &p.sig);
            (p.answer)(ok);
        }
    }
}

/// Whether every signature of `batch` verifies, by one batch check.
fn verify_together(batch: &[Pending]) -> bool {
    let mut keys = Vec::with_capacity(batch.len());
    let mut sigs = Vec::with_capacity(batch.len());
    let mut msgs: Vec<&[u8]> = Vec::with_capacity(batch.len());
    for p in batch {
        let (Some(k), Ok(s)) = (
            p.key.ed25519(),
            ed25519_dalek::Signature::from_slice(&p.sig),
        ) else {
            return false;
        };
        keys.push(*k);
        sigs.push(s);
        msgs.push(&p.msg);
    }
    ed25519_dalek::verify_batch(&msgs, &sigs, &keys).is_ok()
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
