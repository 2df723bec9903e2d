//! Batch signature checks in a loop, for instruction counts that machine
//! noise does not move:
//! `valgrind --tool=callgrind target/release/examples/profile_batch mandate 32 200`
//! (`mandate`: distinct keys through `VerifyingKey::verify_batch`; `one`:
//! every signature by one key; `dalek`: ed25519-dalek's `verify_batch` on
//! the distinct keys), each message 400 bytes.

use mandate_core::keys::{Algorithm, SigningKey, VerifyingKey};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "mandate".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(32);
    let rounds: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(200);
    let items: Vec<(SigningKey, Vec<u8>)> = (0..n)
        .map(|i| {
            let seed = u8::try_from(i % 200).unwrap_or(0).wrapping_add(40);
            let key = if which == "one" {
                SigningKey::from_seed(Algorithm::EdDSA, [90; 32])
            } else {
                SigningKey::from_seed(Algorithm::EdDSA, [seed; 32])
            };
            (key, vec![b'a' + u8::try_from(i % 26).unwrap_or(0); 400])
        })
        .collect();
    let signed = items
        .iter()
        .map(|(k, m)| Ok((k.verifying_key()?, m.clone(), k.sign(m))))
        .collect::<Result<Vec<(VerifyingKey, Vec<u8>, Vec<u8>)>, mandate_core::keys::KeyError>>()?;
    let dalek_keys = signed
        .iter()
        .map(|(k, _, _)| {
            let bytes = mandate_core::b64::decode(&k.jwk().x).unwrap_or_default();
            let bytes: [u8; 32] = bytes.try_into().unwrap_or([0; 32]);
            ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let msgs: Vec<&[u8]> = signed.iter().map(|(_, m, _)| m.as_slice()).collect();
    let sigs = signed
        .iter()
        .map(|(_, _, s)| ed25519_dalek::Signature::from_slice(s))
        .collect::<Result<Vec<_>, _>>()?;
    let mut passed = 0usize;
    for _ in 0..rounds {
        let ok = if which == "dalek" {
            ed25519_dalek::verify_batch(&msgs, &sigs, &dalek_keys).is_ok()
        } else {
            VerifyingKey::verify_batch(
                signed
                    .iter()
                    .map(|(k, m, s)| (k, m.as_slice(), s.as_slice())),
            )
        };
        passed += usize::from(std::hint::black_box(ok));
    }
    println!("{passed} of {rounds} batches of {n} passed ({which})");
    Ok(())
}
