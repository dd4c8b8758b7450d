//! API keys and what each may touch.
//!
//! [`ApiKeys`] maps a key string to its [`KeyScope`]: a name (for logs) and the appcodes the key
//! covers. Both surfaces authenticate the same way: HTTP headers and gRPC metadata carry
//! `authorization: Bearer <key>` or `x-api-key: <key>`. Authorization is by appcode: a push,
//! presence or statistics call names one appcode; a consume call names a topic, which the key
//! may use only if it covers every appcode routed to it ([`KeyScope::check_topic`]).
//!
//! Operating the node (listing and draining gates, `GET /v1/gates`) touches the users of every
//! appcode, so it takes an *operator* key: one that covers every appcode the node serves
//! ([`ApiKeys::with_node_appcodes`], [`ApiKeys::check_operator`]). No separate admin secret
//! exists: a key that may already push to and look up everyone is trusted with the gates too.

use std::collections::{BTreeSet, HashMap};

use axum::http::HeaderMap;
use longlink_bus::Routes;

use crate::error::ApiError;

/// What one API key may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyScope {
    /// The key's name from the configuration (never the key itself), for logs.
    pub name: String,
    /// The appcodes the key covers.
    pub appcodes: BTreeSet<u32>,
}

impl KeyScope {
    /// Whether the key covers `appcode`.
    pub fn allows(&self, appcode: u32) -> bool {
        self.appcodes.contains(&appcode)
    }

    /// `Ok` when the key covers `appcode`.
    ///
    /// # Errors
    /// 403 permission_denied.
    pub fn check_appcode(&self, appcode: u32) -> Result<(), ApiError> {
        if self.allows(appcode) {
            Ok(())
        } else {
            Err(ApiError::permission_denied(format!(
                "the API key does not cover appcode {appcode}"
            )))
        }
    }

    /// Whether the key may consume `topic`: the appcodes routed to it are known and all
    /// covered by the key.
    pub fn may_consume(&self, routes: &Routes, topic: &str) -> bool {
        let feeding = routes.appcodes_of(topic);
        !feeding.is_empty() && feeding.is_subset(&self.appcodes)
    }

    /// `Ok` when the key may consume `topic`.
    ///
    /// # Errors
    /// 404 not_found when no appcode is routed to `topic` (an unknown topic); 403
    /// permission_denied when an appcode routed to it is outside the key's scope.
    pub fn check_topic(&self, routes: &Routes, topic: &str) -> Result<(), ApiError> {
        let feeding = routes.appcodes_of(topic);
        if feeding.is_empty() {
            return Err(ApiError::not_found(format!("unknown topic {topic:?}")));
        }
        match feeding.difference(&self.appcodes).next() {
            None => Ok(()),
            Some(outside) => Err(ApiError::permission_denied(format!(
                "topic {topic:?} carries messages of appcode {outside}, which the API key does not cover"
            ))),
        }
    }
}

/// The configured API keys.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    by_key: HashMap<String, KeyScope>,
    /// The appcodes the node serves; a key covering all of them is an operator key.
    node_appcodes: BTreeSet<u32>,
}

impl ApiKeys {
    /// The keys `(name, key, appcodes)`.
    ///
    /// # Errors
    /// A key is empty or not a valid header value (visible ASCII), or two entries share a key.
    pub fn new<N, K, A>(keys: impl IntoIterator<Item = (N, K, A)>) -> Result<Self, String>
    where
        N: Into<String>,
        K: Into<String>,
        A: IntoIterator<Item = u32>,
    {
        let mut by_key = HashMap::new();
        for (name, key, appcodes) in keys {
            let (name, key) = (name.into(), key.into());
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "API key {name:?}: the key must be non-empty visible ASCII"
                ));
            }
            let scope = KeyScope {
                name: name.clone(),
                appcodes: appcodes.into_iter().collect(),
            };
            if let Some(earlier) = by_key.insert(key, scope) {
                return Err(format!(
                    "API keys {:?} and {name:?} have the same key",
                    earlier.name
                ));
            }
        }
        Ok(Self {
            by_key,
            node_appcodes: BTreeSet::new(),
        })
    }

    /// Names the appcodes the node serves: a key covering all of them is an operator key (it
    /// may list and drain gates). Without this call, or with no appcode, no key is one — the
    /// safe default for a node that did not say.
    #[must_use]
    pub fn with_node_appcodes(mut self, appcodes: impl IntoIterator<Item = u32>) -> Self {
        self.node_appcodes = appcodes.into_iter().collect();
        self
    }

    /// `Ok` when `scope` is an operator key: it covers every appcode the node serves.
    ///
    /// # Errors
    /// 403 permission_denied.
    pub fn check_operator(&self, scope: &KeyScope) -> Result<(), ApiError> {
        if !self.node_appcodes.is_empty() && self.node_appcodes.is_subset(&scope.appcodes) {
            return Ok(());
        }
        let missing = self.node_appcodes.difference(&scope.appcodes).next();
        Err(ApiError::permission_denied(match missing {
            Some(appcode) => format!(
                "operating gates takes a key covering every appcode of the node; this one does not cover {appcode}"
            ),
            None => "operating gates takes a key covering every appcode of the node".to_owned(),
        }))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no key is configured (every call is then refused).
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The scope of `key`, if configured.
    pub fn scope(&self, key: &str) -> Option<&KeyScope> {
        self.by_key.get(key)
    }

    /// The scope of the key in HTTP headers (`Authorization: Bearer <key>` or `x-api-key`).
    ///
    /// # Errors
    /// 401 unauthenticated when no key is given or it is unknown.
    pub fn authorize(&self, headers: &HeaderMap) -> Result<&KeyScope, ApiError> {
        let authorization = headers
            .get(axum::http::header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or_default());
        let api_key = headers
            .get("x-api-key")
            .map(|v| v.to_str().unwrap_or_default());
        self.authorize_values(authorization, api_key)
    }

    /// The scope of the key given as an `authorization` value (`Bearer <key>`) or an
    /// `x-api-key` value; the two surfaces read these from headers or gRPC metadata.
    ///
    /// # Errors
    /// 401 unauthenticated when no key is given or it is unknown.
    pub fn authorize_values(
        &self,
        authorization: Option<&str>,
        api_key: Option<&str>,
    ) -> Result<&KeyScope, ApiError> {
        let key = match (authorization, api_key) {
            (Some(value), _) => bearer(value).ok_or_else(|| {
                ApiError::unauthenticated("the authorization header must be `Bearer <key>`")
            })?,
            (None, Some(key)) => key.trim(),
            (None, None) => {
                return Err(ApiError::unauthenticated(
                    "an API key is required (`authorization: Bearer <key>` or `x-api-key`)",
                ));
            }
        };
        self.scope(key)
            .ok_or_else(|| ApiError::unauthenticated("unknown API key"))
    }
}

/// The key of `Bearer <key>` (scheme case-insensitive, RFC 9110).
pub(crate) fn bearer(value: &str) -> Option<&str> {
    let (scheme, key) = value.trim().split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

#[cfg(test)]
mod tests {
    use longlink_bus::Unrouted;

    use super::*;
    use crate::error::ErrorKind;

    fn keys() -> ApiKeys {
        ApiKeys::new([
            ("orders", "k-129", vec![129]),
            ("ops", "k-all", vec![129, 130]),
        ])
        .unwrap()
    }

    #[test]
    fn keys_come_from_either_header() {
        let keys = keys();
        assert_eq!(
            keys.authorize_values(Some("Bearer k-129"), None)
                .unwrap()
                .name,
            "orders"
        );
        assert_eq!(
            keys.authorize_values(Some("bearer  k-all "), None)
                .unwrap()
                .name,
            "ops"
        );
        assert_eq!(
            keys.authorize_values(None, Some("k-129")).unwrap().name,
            "orders"
        );
        for (authorization, api_key) in [
            (None, None),
            (Some("Basic k-129"), None),
            (Some("Bearer"), None),
            (Some("Bearer nope"), None),
            (None, Some("nope")),
        ] {
            let err = keys.authorize_values(authorization, api_key).unwrap_err();
            assert_eq!(
                err.kind(),
                ErrorKind::Unauthenticated,
                "{authorization:?} {api_key:?}"
            );
        }
    }

    #[test]
    fn duplicate_and_empty_keys_are_refused() {
        assert!(ApiKeys::new([("a", "k", vec![1]), ("b", "k", vec![2])]).is_err());
        assert!(ApiKeys::new([("a", "", vec![1])]).is_err());
        assert!(ApiKeys::new([("a", "with space", vec![1])]).is_err());
    }

    #[test]
    fn a_topic_needs_every_appcode_routed_to_it() {
        let routes = Routes::new(
            [(129, 1, "mixed".to_owned()), (130, 1, "mixed".to_owned())],
            Unrouted::PerType,
            [129, 130],
        )
        .unwrap();
        let keys = keys();
        let narrow = keys.scope("k-129").unwrap();
        let wide = keys.scope("k-all").unwrap();
        assert!(narrow.check_topic(&routes, "c2s.129.7").is_ok());
        assert_eq!(
            narrow.check_topic(&routes, "c2s.130.7").unwrap_err().kind(),
            ErrorKind::PermissionDenied
        );
        assert_eq!(
            narrow.check_topic(&routes, "mixed").unwrap_err().kind(),
            ErrorKind::PermissionDenied
        );
        assert!(wide.check_topic(&routes, "mixed").is_ok());
        assert_eq!(
            wide.check_topic(&routes, "c2s.999.1").unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert!(!narrow.may_consume(&routes, "mixed"));
    }

    #[test]
    fn an_operator_key_covers_every_appcode_of_the_node() {
        // The node did not name its appcodes: nobody operates it.
        let keys = keys();
        assert_eq!(
            keys.check_operator(keys.scope("k-all").unwrap())
                .unwrap_err()
                .kind(),
            ErrorKind::PermissionDenied
        );
        let keys = keys.with_node_appcodes([129, 130]);
        assert!(keys.check_operator(keys.scope("k-all").unwrap()).is_ok());
        let err = keys
            .check_operator(keys.scope("k-129").unwrap())
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied);
        assert!(err.message().contains("130"), "{}", err.message());
    }
}
