//! The SDK for agent runtimes (orchestrator enforcement): hold the mandate,
//! `check` every tool call before making it (locally, against a replica fed
//! by the authority's signals), derive an attenuated child for a sub-agent
//! offline, ask for a discovery grant, make the DPoP proof every call to a
//! gateway carries, exchange the mandate for a DPoP-bound access token, and
//! be told when the mission ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use mandate_core::chain::{ChildSpec, Verifier, derive_child};
use mandate_core::decision::Decision;
use mandate_core::id::MandateId;
use mandate_core::keys::SigningKey;
use mandate_core::request::EvaluationRequest;
use mandate_core::state::MandateState;
use mandate_core::timestamp::UnixTime;
use serde_json::{Value, json};

use crate::client::{AuthorityClient, ClientError, run_poller};
use crate::replica::{Proved, Replica, decide_with};
use mandate_core::pop::{Possession, ReplayCache, make_proof};

/// Why the mission ended (or paused), as the runtime is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The mandate of the chain that is no longer active.
    pub mandate_id: MandateId,
    /// Its state.
    pub state: MandateState,
}

type Listener = Box<dyn Fn(&Ended) + Send + Sync>;

/// A mandate-bound access token from [`AgentRuntime::exchange_token`].
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// The `at+jwt` (never printed by `Debug`).
    pub token: String,
    /// Seconds it lives.
    pub expires_in: u64,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// An agent runtime's handle on its mandate.
pub struct AgentRuntime {
    agent: AuthorityClient,
    holder: SigningKey,
    mandate: RwLock<String>,
    verifier: Arc<Verifier>,
    replica: Arc<Replica>,
    stop: Arc<AtomicBool>,
    listeners: Arc<Mutex<Vec<Listener>>>,
    replay: ReplayCache,
    issuer: String,
}

impl std::fmt::Debug for AgentRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentRuntime")
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

/// A fresh `jti`: 128 random bits, hex.
#[must_use]
pub fn random_jti() -> String {
    let mut b = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    hex::encode(b)
}

fn now() -> UnixTime {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
        .unwrap_or(0);
    UnixTime::from_secs(secs).unwrap_or(UnixTime::EPOCH)
}

impl AgentRuntime {
    /// Connects to the authority at `base`: the agent's token for its own
    /// calls, an enforcer token for the signal stream, the holder key its
    /// mandate binds, and the mandate (presented chain). Blocks until the
    /// replica has its first snapshot (at most 10 s).
    ///
    /// # Errors
    /// When the authority cannot be reached or the mandate does not verify.
    pub fn connect(
        base: &str,
        agent_token: &str,
        enforcer_token: &str,
        holder: SigningKey,
        mandate: &str,
        staleness: Duration,
    ) -> Result<Self, ClientError> {
        let enforcer = AuthorityClient::new(base, enforcer_token);
        let keys = enforcer.keys()?;
        let issuer = enforcer.issuer()?;
        let verifier = Arc::new(Verifier::new(keys.clone()).with_issuer(issuer.clone()));
        let issuer_for_tokens = issuer.clone();
        let chain = verifier
            .verify(mandate)
            .map_err(|e| ClientError(format!("mandate: {e}")))?;
        // The runtime decides its own calls as the holder: it must hold the
        // key the leaf binds, or it could not prove possession anywhere.
        let bound = chain.holder_key().map(|k| k.to_jwk().thumbprint());
        let held = holder.public_jwk().thumbprint();
        if bound.as_deref() != Some(held.as_str()) {
            return Err(ClientError(
                "holder key: not the key the mandate binds (agent.cnf.jwk)".into(),
            ));
        }
        let replica = Arc::new(Replica::new(keys, &issuer, staleness));
        let (stream, aud) = enforcer.create_stream(None)?;
        replica.set_audience(&aud);
        let stop = Arc::new(AtomicBool::new(false));
        crate::point::spawn_key_refresher(
            Arc::downgrade(&verifier),
            Arc::downgrade(&replica),
            enforcer.clone(),
            Arc::clone(&stop),
            crate::point::KEY_REFRESH,
        )
        .map_err(|e| ClientError(e.to_string()))?;
        let (r, st) = (Arc::clone(&replica), Arc::clone(&stop));
        let wait = staleness / 3;
        std::thread::Builder::new()
            .name("mandate-sdk-feed".into())
            .spawn(move || run_poller(&r, &enforcer, &stream, &st, wait))
            .map_err(|e| ClientError(e.to_string()))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !replica.is_fresh() {
            if std::time::Instant::now() > deadline {
                return Err(ClientError("no signal stream within 10 s".into()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let rt = Self {
            agent: AuthorityClient::new(base, agent_token),
            holder,
            mandate: RwLock::new(mandate.trim().to_owned()),
            verifier,
            replica,
            stop,
            listeners: Arc::new(Mutex::new(Vec::new())),
            replay: ReplayCache::new(1),
            issuer: issuer_for_tokens,
        };
        rt.watch();
        Ok(rt)
    }

    /// The mandate this runtime holds.
    #[must_use]
    pub fn mandate(&self) -> String {
        self.mandate.read().map(|m| m.clone()).unwrap_or_default()
    }

    /// Decides a tool call before it is made. Call it before every one.
    ///
    /// The runtime acts as its own mandate's leaf holder: a request that
    /// does not say which agent instance acts is sent as that instance.
    #[must_use]
    pub fn check(&self, request: &EvaluationRequest) -> Decision {
        let mandate = self.mandate();
        let own;
        let request = match (request.agent_instance(), self.verifier.verify(&mandate)) {
            (None, Ok(chain)) => {
                own = request
                    .clone()
                    .with_agent_instance(&chain.leaf().claims().agent.instance);
                &own
            }
            _ => request,
        };
        // Possession was established at `connect`: this runtime holds the
        // leaf's key.
        decide_with(
            &self.verifier,
            &self.replica,
            &mandate,
            request,
            None,
            &Proved {
                possession: Possession::Held,
                cache: &self.replay,
            },
            now(),
        )
    }

    /// A DPoP proof (RFC 9449) for one HTTP request this agent is about to
    /// make with its mandate (to a gateway, or for the authority's token
    /// endpoint): signed with the holder key, fresh `jti`, `iat` now. Send it
    /// as the `DPoP` header beside `Mandate`; `access_token`, when the
    /// request also carries one, is named by its hash (`ath`).
    #[must_use]
    pub fn proof(&self, method: &str, url: &str, access_token: Option<&str>) -> String {
        make_proof(
            &self.holder,
            method,
            url,
            access_token,
            &random_jti(),
            now(),
        )
    }

    /// Exchanges the mandate for a short-lived access token bound to the
    /// holder key (RFC 8693 token exchange with a DPoP proof): for resource
    /// servers that take OAuth tokens rather than mandates. `resource`
    /// narrows its audience. Present it as `Authorization: DPoP <token>`
    /// with a fresh [`proof`](Self::proof) naming it. It dies with the
    /// mission (introspection answers inactive) and within minutes anyway.
    ///
    /// # Errors
    /// When the authority refuses (`invalid_grant` once the mission ended).
    pub fn exchange_token(&self, resource: Option<&str>) -> Result<AccessToken, ClientError> {
        let mandate = self.mandate();
        let token_url = format!("{}/oauth/token", self.issuer.trim_end_matches('/'));
        let proof = self.proof("POST", &token_url, None);
        let ty = if mandate.contains(mandate_core::chain::CHAIN_SEPARATOR) {
            "urn:mandate:params:oauth:token-type:mandate-chain"
        } else {
            "urn:ietf:params:oauth:token-type:jwt"
        };
        let mut form = vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", mandate.as_str()),
            ("subject_token_type", ty),
        ];
        if let Some(r) = resource {
            form.push(("resource", r));
        }
        let (st, v) = self
            .agent
            .post_form("/oauth/token", &form, &[("DPoP", &proof)])?;
        match (st, v.get("access_token").and_then(Value::as_str)) {
            (200, Some(t)) => Ok(AccessToken {
                token: t.to_owned(),
                expires_in: v.get("expires_in").and_then(Value::as_u64).unwrap_or(0),
            }),
            _ => Err(ClientError(format!(
                "token exchange refused: {} ({})",
                v.get("error").and_then(Value::as_str).unwrap_or("unknown"),
                v.get("error_description")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            ))),
        }
    }

    /// Derives a child for a sub-agent, offline, signed with the holder key,
    /// and registers it with the authority so revocation reaches it by name.
    /// Returns the child's presented chain.
    ///
    /// # Errors
    /// When the child would exceed the mandate (naming the dimension) or the
    /// authority refuses the registration.
    /// The child's id is `<this mandate's id>.<name>`: a registered child's
    /// id lives under its parent's.
    pub fn delegate(&self, spec: &ChildSpec, name: &str) -> Result<String, ClientError> {
        let parent = self.mandate();
        let parent_id = self
            .verifier
            .verify(&parent)
            .map_err(|e| ClientError(e.to_string()))?
            .leaf()
            .id()
            .to_string();
        let id = MandateId::new(format!("{parent_id}.{name}"))
            .map_err(|e| ClientError(format!("child name `{name}`: {e}")))?;
        let child = derive_child(&parent, &self.holder, spec, id, now())
            .map_err(|e| ClientError(e.to_string()))?;
        let (st, v) = self.agent.post(
            &format!("/v1/mandates/{parent_id}/children"),
            &json!({"mandate": child}),
        )?;
        if st != 200 {
            return Err(ClientError(format!("register child: {st} {v}")));
        }
        Ok(child)
    }

    /// Asks the authority for a one-time grant for a tool the agent found.
    /// Returns the grant's presented chain.
    ///
    /// # Errors
    /// When the authority refuses (outside what the principal pre-approved).
    pub fn discover(
        &self,
        type_: &str,
        location: &str,
        action: &str,
    ) -> Result<String, ClientError> {
        let parent = self
            .verifier
            .verify(&self.mandate())
            .map_err(|e| ClientError(e.to_string()))?
            .leaf()
            .id()
            .to_string();
        let (st, v) = self.agent.post(
            &format!("/v1/mandates/{parent}/discovery"),
            &json!({"type": type_, "location": location, "action": action}),
        )?;
        match (st, v.get("mandate").and_then(Value::as_str)) {
            (200, Some(m)) => Ok(m.to_owned()),
            _ => Err(ClientError(format!(
                "discovery refused: {}",
                v.get("detail").and_then(Value::as_str).unwrap_or("unknown")
            ))),
        }
    }

    /// Calls `f` once, when any mandate of the chain stops being active
    /// (suspended, revoked, expired, completed, superseded): the runtime can
    /// stop its work there.
    pub fn on_end(&self, f: impl Fn(&Ended) + Send + Sync + 'static) {
        if let Ok(mut l) = self.listeners.lock() {
            l.push(Box::new(f));
        }
    }

    /// The first mandate of the chain that is not active, if any.
    #[must_use]
    pub fn ended(&self) -> Option<Ended> {
        let chain = self.verifier.verify(&self.mandate()).ok()?;
        chain
            .ids()
            .into_iter()
            .find_map(|id| match self.replica.state_of(&id) {
                Some(MandateState::Active) | None => None,
                Some(state) => Some(Ended {
                    mandate_id: id,
                    state,
                }),
            })
    }

    fn watch(&self) {
        let (replica, listeners, stop) = (
            Arc::clone(&self.replica),
            Arc::clone(&self.listeners),
            Arc::clone(&self.stop),
        );
        let ids = self
            .verifier
            .verify(&self.mandate())
            .map(|c| c.ids())
            .unwrap_or_default();
        let _ = std::thread::Builder::new()
            .name("mandate-sdk-watch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let ended = ids.iter().find_map(|id| match replica.state_of(id) {
                        Some(MandateState::Active) | None => None,
                        Some(state) => Some(Ended {
                            mandate_id: id.clone(),
                            state,
                        }),
                    });
                    if let Some(e) = ended {
                        if let Ok(l) = listeners.lock() {
                            for f in l.iter() {
                                f(&e);
                            }
                        }
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
    }

    /// Stops the signal feed.
    pub fn close(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Drop for AgentRuntime {
    fn drop(&mut self) {
        self.close();
    }
}
