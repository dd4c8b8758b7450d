//! [`Routes`]: the c2s routing table (seed 003: appcode + msgtype → MQ topic).
//!
//! Explicit routes map one (appcode, msgtype) to a named topic (several pairs may share one).
//! A pair without a route follows [`Unrouted`]: its own per-type topic `c2s.<appcode>.<msgtype>`,
//! one default topic, or a refusal. The table also answers the reverse question the API needs
//! to authorise a consumer: which appcodes' messages can land on a topic.

use std::collections::{BTreeSet, HashMap};

use crate::c2s_topic;

/// What happens to a c2s message whose (appcode, msgtype) has no route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unrouted {
    /// It goes to `c2s.<appcode>.<msgtype>` (the default).
    PerType,
    /// It goes to this one topic.
    Topic(String),
    /// It is refused (the client gets INVALID_ARGUMENT).
    Refuse,
}

/// The routing table.
#[derive(Debug, Clone)]
pub struct Routes {
    explicit: HashMap<(u32, u32), String>,
    unrouted: Unrouted,
    appcodes: BTreeSet<u32>,
}

/// Longest topic name.
pub const MAX_TOPIC_BYTES: usize = 200;

/// Whether `topic` is a valid topic name: 1..=200 bytes of `[A-Za-z0-9._-]`.
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= MAX_TOPIC_BYTES
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Routes {
    /// A table over `routes` ((appcode, msgtype, topic)), for the configured `appcodes`.
    ///
    /// # Errors
    /// A route names an invalid topic, an unknown appcode, or a pair twice.
    pub fn new(
        routes: impl IntoIterator<Item = (u32, u32, String)>,
        unrouted: Unrouted,
        appcodes: impl IntoIterator<Item = u32>,
    ) -> Result<Self, String> {
        let appcodes: BTreeSet<u32> = appcodes.into_iter().collect();
        let mut explicit = HashMap::new();
        for (appcode, msgtype, topic) in routes {
            if !valid_topic(&topic) {
                return Err(format!(
                    "route ({appcode}, {msgtype}): topic {topic:?} must be 1..={MAX_TOPIC_BYTES} bytes of [A-Za-z0-9._-]"
                ));
            }
            if !appcodes.contains(&appcode) {
                return Err(format!(
                    "route ({appcode}, {msgtype}): appcode {appcode} is not configured"
                ));
            }
            if explicit.insert((appcode, msgtype), topic).is_some() {
                return Err(format!("route ({appcode}, {msgtype}) is given twice"));
            }
        }
        if let Unrouted::Topic(topic) = &unrouted
            && !valid_topic(topic)
        {
            return Err(format!("default topic {topic:?} is not a valid topic name"));
        }
        Ok(Self {
            explicit,
            unrouted,
            appcodes,
        })
    }

    /// The topic a c2s message of (`appcode`, `msgtype`) goes to, or `None` when refused.
    pub fn topic_for(&self, appcode: u32, msgtype: u32) -> Option<String> {
        if let Some(topic) = self.explicit.get(&(appcode, msgtype)) {
            return Some(topic.clone());
        }
        match &self.unrouted {
            Unrouted::PerType => Some(c2s_topic(appcode, msgtype)),
            Unrouted::Topic(topic) => Some(topic.clone()),
            Unrouted::Refuse => None,
        }
    }

    /// The appcodes whose messages can land on `topic` (empty: no message can).
    /// A consumer must be allowed all of them.
    pub fn appcodes_of(&self, topic: &str) -> BTreeSet<u32> {
        let mut out: BTreeSet<u32> = self
            .explicit
            .iter()
            .filter(|(_, t)| t.as_str() == topic)
            .map(|((appcode, _), _)| *appcode)
            .collect();
        match &self.unrouted {
            Unrouted::Topic(default) if default == topic => out.extend(&self.appcodes),
            Unrouted::PerType => {
                if let Some((appcode, _msgtype)) = parse_per_type(topic)
                    && self.appcodes.contains(&appcode)
                {
                    out.insert(appcode);
                }
            }
            _ => {}
        }
        out
    }
}

/// `c2s.<appcode>.<msgtype>` → (appcode, msgtype).
fn parse_per_type(topic: &str) -> Option<(u32, u32)> {
    let rest = topic.strip_prefix("c2s.")?;
    let (appcode, msgtype) = rest.split_once('.')?;
    Some((appcode.parse().ok()?, msgtype.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(unrouted: Unrouted) -> Routes {
        Routes::new(
            [
                (130, 1, "gps".to_owned()),
                (131, 1, "gps".to_owned()),
                (129, 5, "orders".to_owned()),
            ],
            unrouted,
            [129, 130, 131],
        )
        .unwrap()
    }

    #[test]
    fn explicit_routes_win_and_unrouted_follows_the_policy() {
        let per_type = table(Unrouted::PerType);
        assert_eq!(per_type.topic_for(130, 1).as_deref(), Some("gps"));
        assert_eq!(per_type.topic_for(130, 2).as_deref(), Some("c2s.130.2"));
        let default = table(Unrouted::Topic("c2s.default".into()));
        assert_eq!(default.topic_for(129, 9).as_deref(), Some("c2s.default"));
        assert_eq!(table(Unrouted::Refuse).topic_for(129, 9), None);
        assert_eq!(
            table(Unrouted::Refuse).topic_for(129, 5).as_deref(),
            Some("orders")
        );
    }

    #[test]
    fn a_topic_names_the_appcodes_that_feed_it() {
        let per_type = table(Unrouted::PerType);
        assert_eq!(per_type.appcodes_of("gps"), BTreeSet::from([130, 131]));
        assert_eq!(per_type.appcodes_of("c2s.129.7"), BTreeSet::from([129]));
        assert!(per_type.appcodes_of("c2s.999.7").is_empty());
        assert!(per_type.appcodes_of("nothing").is_empty());
        let default = table(Unrouted::Topic("c2s.default".into()));
        assert_eq!(
            default.appcodes_of("c2s.default"),
            BTreeSet::from([129, 130, 131])
        );
    }

    #[test]
    fn bad_tables_are_refused() {
        assert!(Routes::new([(129, 1, "bad topic".into())], Unrouted::PerType, [129]).is_err());
        assert!(Routes::new([(7, 1, "t".into())], Unrouted::PerType, [129]).is_err());
        assert!(
            Routes::new(
                [(129, 1, "a".into()), (129, 1, "b".into())],
                Unrouted::PerType,
                [129]
            )
            .is_err()
        );
    }
}
