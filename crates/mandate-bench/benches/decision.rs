//! Mandate decisions side by side with peers doing equivalent work, in one
//! run so their ratios are comparable:
//!
//! - `warm/*`: a decision with everything pre-built. Mandate: the chain is
//!   verified and cached, three conditions. Cedar: `is_authorized` on a policy
//!   equivalent to the procurement mandate's scope and condition.
//! - `cold_3hop/*`: wire bytes to a verified three-mandate chain to a
//!   decision. Mandate: `verify_uncached` + `decide`. Tenuo: `decode_stack` +
//!   `check_chain` (with its proof-of-possession). Biscuit: parse + verify the
//!   authority block and two attenuation blocks + authorize.
//! - `attenuate/*`: derive, sign and encode one child.
//! - `pop/*`: proof of possession on a cached chain: a fresh DPoP proof by
//!   the leaf's holder key verified and admitted to the replay cache; and the
//!   whole warm decision with it (what the gateway does per request).
//!
//! The figures go in BENCHMARKS.md; see it for how to run and read them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "benchmark fixtures over fixed inputs"
)]

#[path = "support/floor.rs"]
mod floor;

use std::collections::HashMap;
use std::hint::black_box;
use std::str::FromStr;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use floor::signature_floor;
use mandate_bench::{mandate_fixture, spec};
use mandate_core::chain::derive_child;
use mandate_core::keys::{Algorithm, SigningKey};
use mandate_core::prelude::*;
use serde_json::json;

const CEDAR_PERMIT: &str = r#"
permit(
  principal == Agent::"urn:agent:procurement/vendor-sourcing@3.2",
  action in [Action::"search", Action::"view_profile", Action::"initiate_onboarding"],
  resource is VendorPortal
) when {
  resource.location like "https://vendor-portal.example.com/*" &&
  resource.category == "logistics" && resource.region == "north-america" &&
  context.contract_template == "standard-logistics-v3" && context.spend_tier == "pre-approved" &&
  context.program_status == "active" && context.now < 1760547600
};
"#;

const CEDAR_HOPS: &str = r#"
forbid(principal, action, resource) unless {
  action in [Action::"search", Action::"view_profile"] &&
  resource.location like "https://vendor-portal.example.com/search*" &&
  context.budget_remaining > 0 && context.now < 1760054400
};
forbid(principal, action, resource) unless {
  action != Action::"delete" && context.now < 1759622400
};
"#;

struct CedarFixture {
    authorizer: cedar_policy::Authorizer,
    permit: cedar_policy::PolicySet,
    three_hop: cedar_policy::PolicySet,
    entities: cedar_policy::Entities,
    request: cedar_policy::Request,
}

fn cedar_fixture() -> CedarFixture {
    use cedar_policy::{Context, Entities, EntityUid, PolicySet, Request};
    let permit = PolicySet::from_str(CEDAR_PERMIT).unwrap();
    let three_hop = PolicySet::from_str(&format!("{CEDAR_PERMIT}{CEDAR_HOPS}")).unwrap();
    let entities = Entities::from_json_value(
        json!([{
            "uid": {"type": "VendorPortal", "id": "search"},
            "attrs": {"location": "https://vendor-portal.example.com/search", "category": "logistics", "region": "north-america"},
            "parents": []
        }]),
        None,
    )
    .unwrap();
    let context = Context::from_json_value(
        json!({"contract_template": "standard-logistics-v3", "spend_tier": "pre-approved",
               "program_status": "active", "now": 1759395600, "budget_remaining": 125000}),
        None,
    )
    .unwrap();
    let request = Request::new(
        EntityUid::from_str(r#"Agent::"urn:agent:procurement/vendor-sourcing@3.2""#).unwrap(),
        EntityUid::from_str(r#"Action::"search""#).unwrap(),
        EntityUid::from_str(r#"VendorPortal::"search""#).unwrap(),
        context,
        None,
    )
    .unwrap();
    CedarFixture {
        authorizer: cedar_policy::Authorizer::new(),
        permit,
        three_hop,
        entities,
        request,
    }
}

fn bench_warm(c: &mut Criterion) {
    let m = mandate_fixture();
    let chain = m.verifier.verify(&m.three_hop).unwrap();
    assert_eq!(chain.conditions().len(), 3);
    let d = decide(&chain, &m.request, None, &m.state, m.now);
    assert!(d.allow, "{:?}", d.reasons);
    let cedar = cedar_fixture();
    assert_eq!(
        cedar
            .authorizer
            .is_authorized(&cedar.request, &cedar.three_hop, &cedar.entities)
            .decision(),
        cedar_policy::Decision::Allow
    );

    let mut g = c.benchmark_group("warm");
    g.bench_function("mandate/decide_verified_3hop_3conditions", |b| {
        b.iter(|| {
            decide(
                black_box(&chain),
                black_box(&m.request),
                None,
                &m.state,
                m.now,
            )
        })
    });
    g.bench_function("mandate/decide_presented_cached_3hop_3conditions", |b| {
        b.iter(|| {
            decide_presented(
                &m.verifier,
                black_box(&m.three_hop),
                black_box(&m.request),
                None,
                &m.state,
                m.now,
            )
        })
    });
    g.bench_function("cedar/is_authorized_permit", |b| {
        b.iter(|| {
            cedar.authorizer.is_authorized(
                black_box(&cedar.request),
                &cedar.permit,
                &cedar.entities,
            )
        })
    });
    g.bench_function("cedar/is_authorized_permit_and_2_forbid_unless", |b| {
        b.iter(|| {
            cedar.authorizer.is_authorized(
                black_box(&cedar.request),
                &cedar.three_hop,
                &cedar.entities,
            )
        })
    });
    g.finish();
}

struct TenuoFixture {
    authorizer: tenuo::planes::Authorizer,
    wire: Vec<u8>,
    args: HashMap<String, tenuo::constraints::ConstraintValue>,
    pop: tenuo::crypto::Signature,
}

fn tenuo_fixture() -> TenuoFixture {
    use tenuo::constraints::{ConstraintSet, ConstraintValue, Exact};
    use tenuo::crypto::SigningKey as TKey;
    use tenuo::warrant::Warrant;
    let keys: Vec<TKey> = (0..4).map(|_| TKey::generate()).collect();
    let cs = || {
        ConstraintSet::from_iter(vec![
            ("category".to_string(), Exact::new("logistics").into()),
            ("region".to_string(), Exact::new("north-america").into()),
            (
                "contract_template".to_string(),
                Exact::new("standard-logistics-v3").into(),
            ),
            ("spend_tier".to_string(), Exact::new("pre-approved").into()),
        ])
    };
    let root = Warrant::builder()
        .capability("search", cs())
        .capability("view_profile", cs())
        .capability("initiate_onboarding", cs())
        .ttl(Duration::from_secs(3600))
        .holder(keys[1].public_key())
        .build(&keys[0])
        .unwrap();
    let child = root
        .attenuate()
        .inherit_all()
        .holder(keys[2].public_key())
        .build(&keys[1])
        .unwrap();
    let leaf = child
        .attenuate()
        .inherit_all()
        .holder(keys[3].public_key())
        .build(&keys[2])
        .unwrap();
    let args: HashMap<String, ConstraintValue> = [
        ("category", "logistics"),
        ("region", "north-america"),
        ("contract_template", "standard-logistics-v3"),
        ("spend_tier", "pre-approved"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ConstraintValue::String(v.to_string())))
    .collect();
    let pop = leaf.sign(&keys[3], "search", &args).unwrap();
    let wire = tenuo::wire::encode_stack(&tenuo::wire::WarrantStack::new(vec![root, child, leaf]))
        .unwrap();
    TenuoFixture {
        authorizer: tenuo::planes::Authorizer::new().with_trusted_root(keys[0].public_key()),
        wire,
        args,
        pop,
    }
}

fn tenuo_cold(t: &TenuoFixture) -> bool {
    let stack = tenuo::wire::decode_stack(black_box(&t.wire)).unwrap();
    t.authorizer
        .check_chain(&stack.0, "search", &t.args, Some(&t.pop), &[])
        .is_ok()
}

struct BiscuitFixture {
    root_public: biscuit_auth::PublicKey,
    wire: Vec<u8>,
}

fn biscuit_fixture() -> BiscuitFixture {
    use biscuit_auth::macros::{biscuit, block};
    let root = biscuit_auth::KeyPair::new();
    let token = biscuit!(
        r#"
        right("vendor_portal", "search");
        right("vendor_portal", "view_profile");
        right("vendor_portal", "initiate_onboarding");
        check if resource($r), $r.starts_with("https://vendor-portal.example.com/");
        check if resource_attr("category", "logistics"), resource_attr("region", "north-america");
        check if input("contract_template", "standard-logistics-v3"), input("spend_tier", "pre-approved");
        check if fact("program_status", "active");
        check if time($t), $t < 2025-10-15T17:00:00Z;
        "#
    )
    .build(&root)
    .unwrap();
    let token = token
        .append(block!(
            r#"
            check if operation($op), ["search", "view_profile"].contains($op);
            check if resource($r), $r.starts_with("https://vendor-portal.example.com/search");
            check if fact("budget_positive", true);
            check if time($t), $t < 2025-10-10T00:00:00Z;
            "#
        ))
        .unwrap()
        .append(block!(
            r#"
            check if operation($op), $op != "delete";
            check if time($t), $t < 2025-10-05T00:00:00Z;
            "#
        ))
        .unwrap();
    BiscuitFixture {
        root_public: root.public(),
        wire: token.to_vec().unwrap(),
    }
}

fn biscuit_cold(b: &BiscuitFixture) -> bool {
    use biscuit_auth::macros::authorizer;
    let token = biscuit_auth::Biscuit::from(black_box(&b.wire), b.root_public).unwrap();
    let mut authorizer = authorizer!(
        r#"
        resource("https://vendor-portal.example.com/search");
        operation("search");
        resource_attr("category", "logistics");
        resource_attr("region", "north-america");
        input("contract_template", "standard-logistics-v3");
        input("spend_tier", "pre-approved");
        fact("program_status", "active");
        fact("budget_positive", true);
        time(2025-10-02T09:00:00Z);
        allow if right("vendor_portal", $op), operation($op);
        "#
    )
    .build(&token)
    .unwrap();
    authorizer.authorize().is_ok()
}

fn bench_cold(c: &mut Criterion) {
    let m = mandate_fixture();
    let t = tenuo_fixture();
    let b = biscuit_fixture();
    assert!(tenuo_cold(&t), "tenuo fixture must authorize");
    assert!(biscuit_cold(&b), "biscuit fixture must authorize");
    let mandate_cold = || {
        let chain = m.verifier.verify_uncached(black_box(&m.three_hop)).unwrap();
        decide(&chain, &m.request, None, &m.state, m.now).allow
    };
    assert!(mandate_cold());

    let fresh_cold = || {
        let verifier = Verifier::new(m.keys.clone());
        let chain = verifier.verify_uncached(black_box(&m.three_hop)).unwrap();
        decide(&chain, &m.request, None, &m.state, m.now).allow
    };
    assert!(fresh_cold());

    // The floor: the chain's three signatures batch-verified, nothing else.
    let (messages, signatures, keys) = signature_floor(&m.three_hop);
    let floor = || floor::verify_floor(&messages, &signatures, &keys);
    assert!(floor(), "the floor must verify the fixture's signatures");

    // A sub-agent's new chain below its parent's, which this verifier has
    // already verified (the parent acted with it): only the leaf is new.
    let below_verifier = Verifier::new(m.keys.clone());
    let (parent_chain, _) = m.three_hop.rsplit_once('~').unwrap();
    below_verifier.verify(parent_chain).unwrap();
    let below = || {
        let chain = below_verifier
            .verify_unstored(black_box(&m.three_hop))
            .unwrap();
        decide(&chain, &m.request, None, &m.state, m.now).allow
    };
    assert!(below());
    // Its floor: the leaf's one signature, checked alone.
    let leaf_floor = {
        let (messages, signatures, keys) = signature_floor(&m.three_hop);
        let (message, signature, key) = (messages[2].clone(), signatures[2], keys[2]);
        move || key.verify_strict(&message, &signature).is_ok()
    };
    assert!(
        leaf_floor(),
        "the leaf floor must verify the leaf's signature"
    );

    let mut g = c.benchmark_group("cold_3hop");
    g.bench_function("floor/ed25519_verify_batch_3", |bench| bench.iter(floor));
    g.bench_function("floor/ed25519_verify_strict_leaf", |bench| {
        bench.iter(&leaf_floor)
    });
    g.bench_function("mandate/leaf_below_verified_parent_chain", |bench| {
        bench.iter(below)
    });
    g.bench_function("mandate/verify_uncached_and_decide", |bench| {
        bench.iter(mandate_cold)
    });
    g.bench_function("mandate/fresh_verifier_incl_condition_compile", |bench| {
        bench.iter(fresh_cold)
    });
    // Tenuo's proof of possession holds for about a minute, and on a slow
    // machine the benchmarks before this one take longer than that: a
    // fresh fixture, so that every iteration measured verifies.
    let t = tenuo_fixture();
    assert!(tenuo_cold(&t), "tenuo fixture must authorize");
    g.bench_function("tenuo/decode_stack_and_check_chain", |bench| {
        bench.iter(|| tenuo_cold(&t))
    });
    g.bench_function("biscuit/parse_verify_authorize", |bench| {
        bench.iter(|| biscuit_cold(&b))
    });
    g.finish();
    assert!(
        tenuo_cold(&t),
        "tenuo's proof-of-possession must still hold after the run"
    );
}

fn bench_attenuate(c: &mut Criterion) {
    let m = mandate_fixture();
    let holder = SigningKey::from_seed(Algorithm::EdDSA, [9; 32]);
    let child_spec = spec(
        &holder,
        0,
        "https://vendor-portal.example.com/search",
        "2025-10-10T00:00:00Z",
        None,
    );
    let id = MandateId::new("mnd-bench-att").unwrap();
    let mut g = c.benchmark_group("attenuate");
    g.bench_function("mandate/derive_child", |bench| {
        bench.iter(|| {
            derive_child(black_box(&m.root), &m.agent, &child_spec, id.clone(), m.now).unwrap()
        })
    });
    // Biscuit appends to a token it has already read; so does this one.
    let parent = mandate_core::chain::Parent::parse(&m.root).unwrap();
    g.bench_function("mandate/derive_child_from_read_parent", |bench| {
        bench.iter(|| {
            black_box(&parent)
                .derive(&m.agent, &child_spec, id.clone(), m.now)
                .unwrap()
        })
    });
    let bf = biscuit_fixture();
    let token = biscuit_auth::Biscuit::from(&bf.wire, bf.root_public).unwrap();
    g.bench_function("biscuit/append_block_and_serialize", |bench| {
        bench.iter(|| {
            token
                .append(biscuit_auth::macros::block!(
                    r#"check if operation("search");"#
                ))
                .unwrap()
                .to_vec()
                .unwrap()
        })
    });
    g.finish();
}

fn bench_pop(c: &mut Criterion) {
    use mandate_core::pop::{self, Possession, ProofTarget, ReplayCache};
    let m = mandate_fixture();
    let leaf_key = SigningKey::from_seed(Algorithm::EdDSA, [4; 32]);
    let url = "https://gw.example.com/search";
    let cache = ReplayCache::new(50_000_000);
    let counter = std::cell::Cell::new(0u64);
    let fresh = || {
        counter.set(counter.get() + 1);
        pop::make_proof(
            &leaf_key,
            "POST",
            url,
            None,
            &format!("j{}", counter.get()),
            m.now,
        )
    };
    let target = ProofTarget {
        htm: "POST",
        htu: url,
        access_token: None,
        nonce: None,
    };
    let chain = m.verifier.verify(&m.three_hop).unwrap();
    let first = fresh();
    let possession = Possession::Proof {
        proof: Some(&first),
        target,
        certificate: None,
    };
    assert!(pop::check(&chain, &possession, &cache, m.now).is_none());

    let mut g = c.benchmark_group("pop");
    // The floor: the one Ed25519 verification a proof costs (strict, as the
    // proof check does), in the same run.
    let holder = chain.holder_key().unwrap().clone();
    let msg = first.rsplit_once('.').unwrap().0.to_owned();
    let sig = leaf_key.sign(msg.as_bytes());
    assert!(holder.verify(msg.as_bytes(), &sig));
    // ed25519-dalek's own `verify_strict`, the floor's unit; and the same
    // rule as `VerifyingKey::verify` checks it (one field inversion, not four).
    let dalek = ed25519_dalek::VerifyingKey::from_bytes(
        &mandate_core::b64::decode(&holder.jwk().x)
            .unwrap()
            .try_into()
            .unwrap(),
    )
    .unwrap();
    let dalek_sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
    assert!(dalek.verify_strict(msg.as_bytes(), &dalek_sig).is_ok());
    g.bench_function("floor/ed25519_verify_strict", |b| {
        b.iter(|| dalek.verify_strict(black_box(msg.as_bytes()), black_box(&dalek_sig)))
    });
    g.bench_function("mandate/ed25519_verify", |b| {
        b.iter(|| holder.verify(black_box(msg.as_bytes()), black_box(&sig)))
    });
    g.bench_function("mandate/check_dpop_proof_cached_chain", |b| {
        b.iter_batched(
            fresh,
            |proof| {
                let possession = Possession::Proof {
                    proof: Some(&proof),
                    target,
                    certificate: None,
                };
                pop::check(black_box(&chain), &possession, &cache, m.now)
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.bench_function("mandate/decide_presented_cached_with_proof", |b| {
        b.iter_batched(
            fresh,
            |proof| {
                let chain = m.verifier.verify(black_box(&m.three_hop)).unwrap();
                let possession = Possession::Proof {
                    proof: Some(&proof),
                    target,
                    certificate: None,
                };
                let failure = pop::check(&chain, &possession, &cache, m.now);
                let mut d = decide(&chain, black_box(&m.request), None, &m.state, m.now);
                if let Some(e) = failure {
                    d.deny_also(e.code());
                }
                d
            },
            criterion::BatchSize::SmallInput,
        )
    });
    // A proof by an ES256 holder key (DPoP's most common algorithm): one
    // P-256 ECDSA verification of a proof's signing input, as Mandate does
    // it, beside the RustCrypto `p256` crate that did it before.
    let es = SigningKey::from_seed(Algorithm::ES256, [6; 32]);
    let es_key = es.verifying_key().unwrap();
    let es_sig = es.sign(msg.as_bytes());
    assert!(es_key.verify(msg.as_bytes(), &es_sig));
    g.bench_function("mandate/es256_verify", |b| {
        b.iter(|| es_key.verify(black_box(msg.as_bytes()), black_box(&es_sig)))
    });
    let reference = {
        let jwk = es.public_jwk();
        let coordinate = |c: &str| {
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, c).unwrap()
        };
        let point = p256::EncodedPoint::from_affine_coordinates(
            coordinate(&jwk.x).as_slice().into(),
            coordinate(jwk.y.as_deref().unwrap()).as_slice().into(),
            false,
        );
        p256::ecdsa::VerifyingKey::from_encoded_point(&point).unwrap()
    };
    let reference_sig = p256::ecdsa::Signature::from_slice(&es_sig).unwrap();
    g.bench_function("p256_crate/es256_verify", |b| {
        use p256::ecdsa::signature::Verifier as _;
        b.iter(|| {
            reference
                .verify(black_box(msg.as_bytes()), black_box(&reference_sig))
                .is_ok()
        })
    });
    g.finish();
}

/// What one proof's signature costs checked alone (`VerifyingKey::verify`)
/// and as one of a batch of `n` (ed25519-dalek's batch check, as the
/// signature batcher runs it), proofs of ~400 bytes by distinct holders.
fn bench_batch(c: &mut Criterion) {
    use criterion::{BenchmarkId, Throughput};
    let items: Vec<(mandate_core::keys::VerifyingKey, Vec<u8>, Vec<u8>)> = (0..32_u8)
        .map(|i| {
            let key = SigningKey::from_seed(Algorithm::EdDSA, [i.wrapping_add(40); 32]);
            let msg = vec![b'a' + i % 26; 400];
            let sig = key.sign(&msg);
            (key.verifying_key().unwrap(), msg, sig)
        })
        .collect();
    {
        // Signing a mandate-sized message (~4.5 KB): AWS-LC (what signs) and
        // ed25519-dalek, and SHA-512 over twice that (what Ed25519 hashes).
        use ed25519_dalek::Signer as _;
        let msg = vec![b'x'; 4500];
        let ours = SigningKey::from_seed(Algorithm::EdDSA, [91; 32]);
        let dalek = ed25519_dalek::SigningKey::from_bytes(&[91; 32]);
        let mut g = c.benchmark_group("sign_4500_bytes");
        g.bench_function("mandate_aws_lc", |b| b.iter(|| ours.sign(black_box(&msg))));
        g.bench_function("dalek", |b| b.iter(|| dalek.sign(black_box(&msg))));
        g.bench_function("sha512_9000_bytes_sha2", |b| {
            b.iter(|| {
                use sha2::Digest as _;
                let mut h = sha2::Sha512::new();
                h.update(black_box(&msg));
                h.update(black_box(&msg));
                h.finalize()
            })
        });
        g.finish();
    }
    let holder_key = SigningKey::from_seed(Algorithm::EdDSA, [90; 32]);
    let holder = holder_key.verifying_key().unwrap();
    let mut g = c.benchmark_group("signatures");
    g.throughput(Throughput::Elements(1));
    g.bench_function("alone", |b| {
        let (k, m, s) = &items[0];
        b.iter(|| assert!(k.verify(black_box(m), black_box(s))))
    });
    for n in [2_usize, 3, 4, 8, 16, 32] {
        let keys: Vec<ed25519_dalek::VerifyingKey> = items[..n]
            .iter()
            .map(|(k, _, _)| {
                ed25519_dalek::VerifyingKey::from_bytes(
                    &mandate_core::b64::decode(&k.jwk().x)
                        .unwrap()
                        .try_into()
                        .unwrap(),
                )
                .unwrap()
            })
            .collect();
        let msgs: Vec<&[u8]> = items[..n].iter().map(|(_, m, _)| m.as_slice()).collect();
        let sigs: Vec<ed25519_dalek::Signature> = items[..n]
            .iter()
            .map(|(_, _, s)| ed25519_dalek::Signature::from_slice(s).unwrap())
            .collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("dalek_batch", n), &n, |b, _| {
            b.iter(|| assert!(ed25519_dalek::verify_batch(&msgs, &sigs, &keys).is_ok()))
        });
        g.bench_with_input(BenchmarkId::new("mandate_batch", n), &n, |b, _| {
            b.iter(|| {
                assert!(mandate_core::keys::VerifyingKey::verify_batch(
                    items[..n]
                        .iter()
                        .map(|(k, m, s)| (k, m.as_slice(), s.as_slice()))
                ))
            })
        });
        // Every proof by one holder (an agent's concurrent requests).
        let one: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
            .map(|i| {
                let msg = vec![b'a' + (i % 26) as u8; 400];
                (msg.clone(), holder_key.sign(&msg))
            })
            .collect();
        g.bench_with_input(
            BenchmarkId::new("mandate_batch_one_holder", n),
            &n,
            |b, _| {
                b.iter(|| {
                    assert!(mandate_core::keys::VerifyingKey::verify_batch(
                        one.iter()
                            .map(|(m, s)| (&holder, m.as_slice(), s.as_slice()))
                    ))
                })
            },
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench_warm, bench_cold, bench_attenuate, bench_pop, bench_batch
}
criterion_main!(benches);
