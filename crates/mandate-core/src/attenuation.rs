//! Attenuation: a child mandate is within its parent in every dimension.
//!
//! | dimension | rule | code when exceeded |
//! | --- | --- | --- |
//! | delegation | the parent permits delegation and has hops left | `delegation_not_permitted` |
//! | `iss`, `principal`, `purpose` | equal to the parent's | `attenuation_violation:iss` / `:principal` / `:purpose` |
//! | authorization detail type | each child detail has a parent detail of the same type | `attenuation_violation:authorization_details` |
//! | `locations` | each child location is covered by a parent location (see [`crate::location`]) | `attenuation_violation:locations` |
//! | `actions` | a subset of the parent detail's | `attenuation_violation:actions` |
//! | `resource` | every parent attribute kept with the same value; new ones may be added | `attenuation_violation:resource` |
//! | `constraints` | every parent constraint kept, equal or narrower (see [`crate::constraint`]); new ones may be added | `attenuation_violation:constraints` |
//! | `lifecycle.hard_expiry` | no later than the parent's; strictly earlier under `strict_subset_of_parent` | `attenuation_violation:hard_expiry` |
//! | `nbf`, `iat` | no earlier than the parent's | `attenuation_violation:nbf` / `:iat` |
//! | `delegation.max_additional_hops` | strictly smaller than the parent's | `attenuation_violation:max_additional_hops` |
//! | `delegation.attenuation` | not weaker than the parent's | `attenuation_violation:attenuation` |
//! | `conditions` | every parent condition repeated verbatim; new ones may be added | `attenuation_violation:conditions` |
//! | `lifecycle.terminal_events` | every parent terminal event repeated; new ones may be added | `attenuation_violation:terminal_events` |
//! | `lifecycle.one_time` | a one-time parent has only one-time children | `attenuation_violation:one_time` |
//! | `discovery` | within the parent's discovery allowance (types and actions subsets, locations covered, lifetime no longer) | `attenuation_violation:discovery` |
//!
//! A child detail is covered when *some* parent detail of its type covers it
//! in every dimension at once; when none does, the violations reported are
//! those of the parent detail that came closest.

use std::fmt;

use crate::constraint::Constraint;
use crate::location;
use crate::model::{Attenuation, AuthorizationDetail, DiscoveryAllowance, MandateClaims};

/// One way a child exceeds its parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The dimension: `actions`, `locations`, `hard_expiry`, ... or
    /// `delegation` for [`Violation::code`] `delegation_not_permitted`.
    pub dimension: &'static str,
    /// JSON path in the child.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl Violation {
    /// The stable reason code: `attenuation_violation:<dimension>`, or
    /// `delegation_not_permitted`.
    #[must_use]
    pub fn code(&self) -> String {
        if self.dimension == "delegation" {
            "delegation_not_permitted".to_owned()
        } else {
            format!("attenuation_violation:{}", self.dimension)
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}: {})", self.code(), self.path, self.message)
    }
}

fn v(dimension: &'static str, path: impl Into<String>, message: impl Into<String>) -> Violation {
    Violation {
        dimension,
        path: path.into(),
        message: message.into(),
    }
}

/// Every way `child` exceeds `parent`; empty when the child is within it.
#[must_use]
pub fn check(parent: &MandateClaims, child: &MandateClaims) -> Vec<Violation> {
    let mut out = Vec::new();
    if !parent.delegation.permitted {
        out.push(v(
            "delegation",
            "delegation.permitted",
            "the parent does not permit delegation",
        ));
    } else if parent.delegation.max_additional_hops == 0 {
        out.push(v(
            "delegation",
            "delegation.max_additional_hops",
            "the parent has no hops left",
        ));
    } else if child.delegation.max_additional_hops >= parent.delegation.max_additional_hops {
        out.push(v(
            "max_additional_hops",
            "delegation.max_additional_hops",
            format!(
                "must be less than the parent's {}",
                parent.delegation.max_additional_hops
            ),
        ));
    }
    identity(parent, child, &mut out);
    out.extend(details_within(
        &parent.authorization_details,
        &child.authorization_details,
    ));
    let strict = parent.delegation.attenuation == Attenuation::StrictSubsetOfParent;
    let (ce, pe) = (child.lifecycle.hard_expiry, parent.lifecycle.hard_expiry);
    if ce > pe || (strict && ce == pe) {
        out.push(v(
            "hard_expiry",
            "lifecycle.hard_expiry",
            format!(
                "`{ce}` must be {} the parent's `{pe}`",
                if strict { "before" } else { "no later than" }
            ),
        ));
    }
    if child.nbf < parent.nbf {
        out.push(v("nbf", "nbf", "must not be before the parent's"));
    }
    if child.iat < parent.iat {
        out.push(v("iat", "iat", "must not be before the parent's"));
    }
    if strict && child.delegation.attenuation != Attenuation::StrictSubsetOfParent {
        out.push(v(
            "attenuation",
            "delegation.attenuation",
            "must stay `strict_subset_of_parent` like the parent's",
        ));
    }
    inherited(parent, child, &mut out);
    if let Some(cd) = &child.discovery {
        let within = parent
            .discovery
            .as_ref()
            .is_some_and(|pd| discovery_within(pd, cd));
        if !within {
            out.push(v(
                "discovery",
                "discovery",
                "must be within the parent's discovery allowance",
            ));
        }
    }
    if parent.lifecycle.one_time && !child.lifecycle.one_time {
        out.push(v(
            "one_time",
            "lifecycle.one_time",
            "a one-time parent has only one-time children",
        ));
    }
    out
}

/// Issuer, principal and purpose come from the parent unchanged.
fn identity(parent: &MandateClaims, child: &MandateClaims, out: &mut Vec<Violation>) {
    if child.iss != parent.iss {
        out.push(v("iss", "iss", "must equal the parent's"));
    }
    if child.principal != parent.principal {
        out.push(v("principal", "principal", "must equal the parent's"));
    }
    if child.purpose != parent.purpose {
        out.push(v(
            "purpose",
            "purpose",
            "is inherited unchanged from the parent",
        ));
    }
}

/// Every condition and terminal event of the parent keeps applying.
fn inherited(parent: &MandateClaims, child: &MandateClaims, out: &mut Vec<Violation>) {
    for pc in parent
        .conditions
        .iter()
        .filter(|pc| !child.conditions.contains(pc))
    {
        out.push(v(
            "conditions",
            "conditions",
            format!("the parent's condition `{}` must be kept unchanged", pc.id),
        ));
    }
    for pt in parent
        .lifecycle
        .terminal_events
        .iter()
        .filter(|pt| !child.lifecycle.terminal_events.contains(pt))
    {
        out.push(v(
            "terminal_events",
            "lifecycle.terminal_events",
            format!("the parent's terminal event `{}` must be kept", pt.type_),
        ));
    }
}

fn discovery_within(p: &DiscoveryAllowance, c: &DiscoveryAllowance) -> bool {
    let parent_locs: Vec<std::sync::Arc<location::Location>> = p
        .locations
        .iter()
        .filter_map(|l| location::grant(l).ok())
        .collect();
    c.types.iter().all(|t| p.types.contains(t))
        && c.actions.iter().all(|a| p.actions.contains(a))
        && c.max_lifetime_secs <= p.max_lifetime_secs
        && c.locations
            .iter()
            .all(|l| location::grant(l).is_ok_and(|cl| parent_locs.iter().any(|pl| pl.covers(&cl))))
}

/// Every way a one-time *discovery grant* exceeds what its parent's
/// principal pre-approved. A discovery grant is a child the authority signs
/// (not the holder) for a tool the parent does not list: its single
/// authorization detail must fall within the parent's `discovery` allowance
/// (type, location, action), it must be one-time, not delegable, and live no
/// longer than `max_lifetime_secs` nor past the parent; identity, purpose,
/// conditions and terminal events are inherited as for any child.
#[must_use]
pub fn check_discovery_grant(parent: &MandateClaims, child: &MandateClaims) -> Vec<Violation> {
    let mut out = Vec::new();
    let Some(allow) = &parent.discovery else {
        return vec![v(
            "discovery",
            "discovery",
            "the parent's grant allows no discovery",
        )];
    };
    identity(parent, child, &mut out);
    let locs: Vec<std::sync::Arc<location::Location>> = allow
        .locations
        .iter()
        .filter_map(|l| location::grant(l).ok())
        .collect();
    match child.authorization_details.as_slice() {
        [d] if d.locations.len() == 1 && d.actions.len() == 1 => {
            if !allow.types.contains(&d.type_) {
                out.push(v(
                    "authorization_details",
                    "authorization_details[0].type",
                    format!(
                        "`{}` is not a type the principal approved for discovery",
                        d.type_
                    ),
                ));
            }
            if !d
                .locations
                .iter()
                .all(|l| location::grant(l).is_ok_and(|cl| locs.iter().any(|pl| pl.covers(&cl))))
            {
                out.push(v(
                    "locations",
                    "authorization_details[0].locations",
                    "not within the discovery allowance",
                ));
            }
            if !d.actions.iter().all(|a| allow.actions.contains(a)) {
                out.push(v(
                    "actions",
                    "authorization_details[0].actions",
                    "not within the discovery allowance",
                ));
            }
        }
        _ => out.push(v(
            "authorization_details",
            "authorization_details",
            "a discovery grant has exactly one detail with one location and one action",
        )),
    }
    if !child.lifecycle.one_time {
        out.push(v(
            "one_time",
            "lifecycle.one_time",
            "a discovery grant is one-time",
        ));
    }
    if child.delegation.permitted
        || child.delegation.max_additional_hops > 0
        || child.discovery.is_some()
    {
        out.push(v(
            "delegation",
            "delegation.permitted",
            "a discovery grant is not delegable",
        ));
    }
    let latest = child
        .iat
        .plus(i64::from(allow.max_lifetime_secs))
        .min(parent.lifecycle.hard_expiry);
    if child.lifecycle.hard_expiry > latest {
        out.push(v(
            "hard_expiry",
            "lifecycle.hard_expiry",
            format!("must be no later than `{latest}`"),
        ));
    }
    if child.iat < parent.iat {
        out.push(v("iat", "iat", "must not be before the parent's"));
    }
    inherited(parent, child, &mut out);
    out
}

/// Every way a set of authorization details exceeds another (the scope
/// dimensions of [`check`]); empty when `child` is within `parent`.
#[must_use]
pub fn details_within(
    parent: &[AuthorizationDetail],
    child: &[AuthorizationDetail],
) -> Vec<Violation> {
    child
        .iter()
        .enumerate()
        .flat_map(|(i, d)| detail_violations(parent, d, i))
        .collect()
}

fn detail_violations(
    parent: &[AuthorizationDetail],
    d: &AuthorizationDetail,
    i: usize,
) -> Vec<Violation> {
    let p = crate::validate::DetailPath(i);
    let mut best: Option<Vec<Violation>> = None;
    for pd in parent.iter().filter(|pd| pd.type_ == d.type_) {
        let found = against(pd, d, &p);
        if found.is_empty() {
            return found;
        }
        if best.as_ref().is_none_or(|b| found.len() < b.len()) {
            best = Some(found);
        }
    }
    best.unwrap_or_else(|| {
        vec![v(
            "authorization_details",
            format!("{p}.type"),
            format!("the parent grants nothing of type `{}`", d.type_),
        )]
    })
}

fn against(
    pd: &AuthorizationDetail,
    d: &AuthorizationDetail,
    p: &crate::validate::DetailPath,
) -> Vec<Violation> {
    let mut out = Vec::new();
    let parent_locs: Vec<std::sync::Arc<location::Location>> = pd
        .locations
        .iter()
        .filter_map(|l| location::grant(l).ok())
        .collect();
    for (j, l) in d.locations.iter().enumerate() {
        let covered = location::grant(l)
            .map(|cl| parent_locs.iter().any(|pl| pl.covers(&cl)))
            .unwrap_or(false);
        if !covered {
            out.push(v(
                "locations",
                format!("{p}.locations[{j}]"),
                format!("`{l}` is not within the parent's locations"),
            ));
        }
    }
    for (j, a) in d.actions.iter().enumerate() {
        if !pd.actions.contains(a) {
            out.push(v(
                "actions",
                format!("{p}.actions[{j}]"),
                format!("`{a}` is not in the parent's actions"),
            ));
        }
    }
    for (k, pv) in &pd.resource {
        if d.resource.get(k) != Some(pv) {
            out.push(v(
                "resource",
                format!("{p}.resource.{k}"),
                "must keep the parent's value",
            ));
        }
    }
    for (k, pv) in &pd.constraints {
        let ok = match (
            Constraint::parse(pv),
            d.constraints.get(k).map(Constraint::parse),
        ) {
            (Ok(pc), Some(Ok(cc))) => cc.within(&pc),
            _ => false,
        };
        if !ok {
            out.push(v(
                "constraints",
                format!("{p}.constraints.{k}"),
                "must keep the parent's constraint, equal or narrower",
            ));
        }
    }
    out
}
