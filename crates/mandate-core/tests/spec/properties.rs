//! Property tests: a randomly narrowed child always verifies; a child widened
//! in any single dimension never does, and the refusal names the dimension.

use mandate_core::model::MandateClaims;
use mandate_core::prelude::*;
use proptest::prelude::*;
use serde_json::json;

use crate::support::*;

const ACTIONS: [&str; 3] = ["search", "view_profile", "initiate_onboarding"];

#[derive(Debug, Clone)]
struct Narrowing {
    actions: u8,
    segments: Vec<String>,
    extra_attribute: Option<String>,
    extra_constraint: Option<u32>,
    shorter_by: i64,
    hops: u8,
    extra_condition: bool,
}

fn narrowing() -> impl Strategy<Value = Narrowing> {
    (
        1u8..8,
        proptest::collection::vec("[a-z0-9]{1,8}", 0..3),
        proptest::option::of("[a-z]{1,6}"),
        proptest::option::of(1u32..10_000),
        1i64..(13 * 86_400),
        0u8..2,
        any::<bool>(),
    )
        .prop_map(
            |(
                actions,
                segments,
                extra_attribute,
                extra_constraint,
                shorter_by,
                hops,
                extra_condition,
            )| Narrowing {
                actions,
                segments,
                extra_attribute,
                extra_constraint,
                shorter_by,
                hops,
                extra_condition,
            },
        )
}

fn narrowed_spec(n: &Narrowing) -> ChildSpec {
    let mut spec = search_only_spec(n.hops);
    let d = &mut spec.authorization_details[0];
    d.actions = ACTIONS
        .iter()
        .enumerate()
        .filter(|(i, _)| n.actions & (1 << i) != 0)
        .map(|(_, a)| (*a).to_owned())
        .collect();
    let mut loc = "https://vendor-portal.example.com".to_owned();
    for s in &n.segments {
        loc.push('/');
        loc.push_str(s);
    }
    d.locations = vec![loc];
    if let Some(a) = &n.extra_attribute {
        d.resource.insert(format!("x_{a}"), json!(a));
    }
    if let Some(max) = n.extra_constraint {
        d.constraints
            .insert("order_total".into(), json!({"max": max}));
    }
    spec.lifecycle.hard_expiry = t("2025-10-15T17:00:00Z").plus(-n.shorter_by);
    if n.extra_condition {
        spec.conditions.push(serde_json::from_value(json!({
            "id": "extra", "expression": "true", "evaluation": "per_action", "on_failure": "deny"
        })).unwrap());
    }
    spec
}

#[derive(Debug, Clone)]
enum Widening {
    Action(String),
    Location(String),
    Attribute(String),
    Constraint(String),
    Expiry(i64),
    Hops(u8),
    Type(String),
}

impl Widening {
    fn dimension(&self) -> &'static str {
        match self {
            Widening::Action(_) => "attenuation_violation:actions",
            Widening::Location(_) => "attenuation_violation:locations",
            Widening::Attribute(_) => "attenuation_violation:resource",
            Widening::Constraint(_) => "attenuation_violation:constraints",
            Widening::Expiry(_) => "attenuation_violation:hard_expiry",
            Widening::Hops(_) => "attenuation_violation:max_additional_hops",
            Widening::Type(_) => "attenuation_violation:authorization_details",
        }
    }

    fn apply(&self, c: &mut MandateClaims) {
        let d = &mut c.authorization_details[0];
        match self {
            Widening::Action(a) => d.actions.push(format!("x_{a}")),
            Widening::Location(host) => d.locations = vec![format!("https://{host}.example.org/")],
            Widening::Attribute(v) => {
                d.resource.insert("region".into(), json!(format!("x-{v}")));
            }
            Widening::Constraint(v) => {
                d.constraints.insert(
                    "spend_tier".into(),
                    json!(["pre-approved", format!("x-{v}")]),
                );
            }
            Widening::Expiry(by) => {
                c.lifecycle.hard_expiry = t("2025-10-15T17:00:00Z").plus(*by);
                c.exp = c.lifecycle.hard_expiry;
            }
            Widening::Hops(h) => {
                c.delegation.permitted = true;
                c.delegation.max_additional_hops = *h;
            }
            Widening::Type(ty) => d.type_ = format!("x_{ty}"),
        }
    }
}

fn widening() -> impl Strategy<Value = Widening> {
    prop_oneof![
        "[a-z]{1,8}".prop_map(Widening::Action),
        "[a-z]{1,8}".prop_map(Widening::Location),
        "[a-z]{1,8}".prop_map(Widening::Attribute),
        "[a-z]{1,8}".prop_map(Widening::Constraint),
        (0i64..10_000_000).prop_map(Widening::Expiry),
        (2u8..16).prop_map(Widening::Hops),
        "[a-z]{1,8}".prop_map(Widening::Type),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn a_randomly_narrowed_child_always_verifies(n in narrowing()) {
        let chain = child_of(&root(2), &agent_key(), &narrowed_spec(&n), "mnd-prop").unwrap();
        let verified = verifier().verify_uncached(&chain);
        prop_assert!(verified.is_ok(), "{:?}", verified.err());
    }

    #[test]
    fn a_child_widened_in_any_one_dimension_never_verifies(n in narrowing(), w in widening()) {
        let spec = narrowed_spec(&n);
        let forged = forge_child(&root(2), &agent_key(), &spec, |c| w.apply(c));
        let err = verifier().verify_uncached(&forged).err();
        prop_assert!(err.is_some(), "widened child verified: {:?}", w);
        let codes = err.map(|e| e.codes()).unwrap_or_default();
        prop_assert!(codes.contains(&w.dimension().to_owned()), "{:?} gave {:?}", w, codes);
    }
}
