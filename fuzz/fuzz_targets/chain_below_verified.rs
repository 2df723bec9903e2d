//! A chain presented below one the verifier has already verified (a
//! sub-agent's new leaf under its parent's chain): whatever follows the
//! verified part, the verifier that builds on it must answer exactly as a
//! verifier that has seen nothing. The input is what comes after
//! `root~child~` (a leaf, or anything else, `~`s included); the first bytes
//! choose whether the honest leaf comes first, whole or with one byte
//! changed, so that near-valid chains are reached too.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mandate_core::chain::{ChildSpec, derive_child, issue_root};
use mandate_core::keys::{Algorithm, KeySet, SigningKey};
use mandate_core::model::{Confirmation, MandateClaims};
use mandate_core::prelude::*;

struct Fixture {
    keys: KeySet,
    /// `root~child`, which the warm verifier has verified.
    parent: String,
    /// The honest leaf below it.
    leaf: String,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let key = |seed| SigningKey::from_seed(Algorithm::EdDSA, [seed; 32]);
        let (authority, agent, sub, leaf_holder) = (key(1), key(2), key(3), key(4));
        let mut claims: MandateClaims = serde_json::from_str(include_str!(
            "../../testdata/procurement-mandate.json"
        ))
        .unwrap();
        claims.agent.cnf = Some(Confirmation::key(agent.public_jwk()));
        claims.delegation.max_additional_hops = 2;
        let root = issue_root(&authority, &claims).unwrap();
        let now = UnixTime::parse_rfc3339("2025-10-02T09:00:00Z").unwrap();
        let spec = |holder: &SigningKey, hops: u8, expiry: &str| -> ChildSpec {
            serde_json::from_value(serde_json::json!({
                "agent": {"id": format!("urn:agent:hop{hops}"), "instance": "inst-1", "cnf": {"jwk": holder.public_jwk()}},
                "authorization_details": [{"type": "vendor_portal", "locations": ["https://vendor-portal.example.com/search"],
                    "resource": {"category": "logistics", "region": "north-america"}, "actions": ["search"],
                    "constraints": {"contract_template": "standard-logistics-v3", "spend_tier": "pre-approved"}}],
                "lifecycle": {"hard_expiry": expiry},
                "delegation": {"permitted": hops > 0, "max_additional_hops": hops,
                    "attenuation": "strict_subset_of_parent", "cascade_revocation": "immediate"}
            }))
            .unwrap()
        };
        let id = |s: &str| MandateId::new(s).unwrap();
        let parent = derive_child(&root, &agent, &spec(&sub, 1, "2025-10-06T00:00:00Z"), id("mnd-fuzz-child"), now).unwrap();
        let full = derive_child(&parent, &sub, &spec(&leaf_holder, 0, "2025-10-05T00:00:00Z"), id("mnd-fuzz-leaf"), now).unwrap();
        let leaf = full.rsplit_once('~').unwrap().1.to_owned();
        let mut keys = KeySet::new();
        keys.insert(authority.verifying_key().unwrap());
        Fixture { keys, parent, leaf }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let (presented, tail) = match data {
        // The honest leaf with one byte changed (any byte: header, claims or
        // signature), then the rest of the input.
        [m, hi, lo, x, rest @ ..] if m % 3 == 2 => {
            let mut leaf = f.leaf.clone().into_bytes();
            let at = usize::from(u16::from_be_bytes([*hi, *lo])) % leaf.len();
            if let Some(b) = leaf.get_mut(at) {
                *b ^= x;
            }
            let Ok(leaf) = String::from_utf8(leaf) else {
                return;
            };
            (format!("{}~{leaf}", f.parent), rest)
        }
        // The honest leaf, then the rest.
        [m, rest @ ..] if m % 3 == 1 => (format!("{}~{}", f.parent, f.leaf), rest),
        // Anything at all after the verified part.
        [_, rest @ ..] => (format!("{}~", f.parent), rest),
        [] => return,
    };
    let Ok(tail) = std::str::from_utf8(tail) else {
        return;
    };
    let presented = format!("{presented}{tail}");
    let warm = Verifier::new(f.keys.clone());
    assert!(warm.verify(&f.parent).is_ok());
    let below = warm.verify_unstored(&presented);
    let alone = Verifier::new(f.keys.clone()).verify_uncached(&presented);
    match (below, alone) {
        (Ok(b), Ok(a)) => {
            assert_eq!(b.ids(), a.ids());
            for (x, y) in b.mandates().iter().zip(a.mandates()) {
                assert_eq!(x.claims(), y.claims());
                assert_eq!(x.jws_sha256(), y.jws_sha256());
            }
        }
        (Err(b), Err(a)) => assert_eq!(b.codes(), a.codes()),
        (b, a) => panic!(
            "below a verified chain: {:?}; alone: {:?}",
            b.map(|c| c.ids()),
            a.map(|c| c.ids())
        ),
    }
});
