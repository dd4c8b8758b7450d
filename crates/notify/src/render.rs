//! Turns the due outbox rows of one device into the text of one notification: the appcode's
//! rule (templates per content type, privacy, badge, priority, TTL) applied to the newest
//! message, "N new messages" when several collapse into one.
//!
//! Placeholders are substituted in one pass, so a sender name or a message containing
//! "{preview}" is shown as typed, never expanded.

use std::time::Duration;

use longlink_proto::wire::ContentType;

use crate::config::{RuleConfig, TemplateConfig};

/// Characters of a message kept as its preview (stored in the outbox, shown in the body).
pub const PREVIEW_CHARS: usize = 100;

/// One message waiting to be notified, as the outbox keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The message.
    pub msgid: u64,
    /// Its sender (uid or push label).
    pub from: String,
    /// Its business type.
    pub msgtype: u32,
    /// Its content type (`longlink_proto` `ContentType` as i32).
    pub content_type: i32,
    /// The start of its text ("" when it has none or the rule is private).
    pub preview: String,
}

/// A notification's text and delivery options, before a token and an id are attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Title ("" = none).
    pub title: String,
    /// Body.
    pub body: String,
    /// Badge (None = leave it alone).
    pub badge: Option<u32>,
    /// Collapse key / thread id.
    pub collapse_id: String,
    /// Provider TTL.
    pub ttl: Duration,
    /// Wake the device now.
    pub high_priority: bool,
    /// Sound ("" = silent).
    pub sound: String,
    /// Data for the app, without `ll_nid` (the engine adds it once the id is known).
    pub data: Vec<(String, String)>,
}

/// The template name of a protocol content type: "text", "rich", "business" or "other".
pub fn content_type_name(content_type: i32) -> &'static str {
    match ContentType::try_from(content_type) {
        Ok(ContentType::Text) => "text",
        Ok(ContentType::Rich) => "rich",
        Ok(ContentType::Business) => "business",
        _ => "other",
    }
}

/// The preview of a message: the start of a text message, the text of a rich one without
/// its markup; nothing for opaque business content.
pub fn preview(content_type: i32, content: &[u8]) -> String {
    let text = String::from_utf8_lossy(content);
    let text: String = match content_type_name(content_type) {
        "text" => text.into_owned(),
        "rich" => strip_markup(&text),
        _ => return String::new(),
    };
    let trimmed = text.trim();
    let mut out: String = trimmed.chars().take(PREVIEW_CHARS).collect();
    if trimmed.chars().nth(PREVIEW_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// Drops `<…>` tags (the rich format's `<font>`, `<img />`, `<shake />`).
fn strip_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// Substitutes `{from}`, `{count}`, `{preview}` and `{appcode}` in one pass; other braces
/// stay as they are.
fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let hit = vars.iter().find_map(|(name, value)| {
            after
                .strip_prefix('{')
                .and_then(|s| s.strip_prefix(name))
                .and_then(|s| s.strip_prefix('}'))
                .map(|tail| (value, tail))
        });
        match hit {
            Some((value, tail)) => {
                out.push_str(value);
                rest = tail;
            }
            None => {
                out.push('{');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Renders the notification of `messages` (oldest first, at least one) to (appcode, uid)
/// under `rule`, with `badge` when the rule shows one.
pub fn render(
    rule: &RuleConfig,
    appcode: u32,
    uid: &str,
    messages: &[Pending],
    badge: Option<u32>,
) -> Rendered {
    let count = messages.len().max(1);
    let newest = messages.last();
    let newest_msgid = newest.map_or(0, |m| m.msgid);
    let single_sender = newest
        .map(|n| messages.iter().all(|m| m.from == n.from))
        .unwrap_or(false);
    let from = newest.map_or("", |m| m.from.as_str());
    let count_text = count.to_string();
    let appcode_text = appcode.to_string();
    let (title, body) = if rule.privacy {
        let title = if rule.app_name.is_empty() {
            "New message".to_owned()
        } else {
            rule.app_name.clone()
        };
        let body = if count == 1 {
            "You have a new message".to_owned()
        } else {
            format!("You have {count} new messages")
        };
        (title, body)
    } else {
        let kind = newest.map_or("other", |m| content_type_name(m.content_type));
        let default = TemplateConfig::default();
        let template = rule
            .templates
            .iter()
            .find(|t| t.content_type == kind || t.content_type == "*")
            .unwrap_or(&default);
        let preview = newest
            .map(|m| m.preview.as_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("New message");
        let title_from = if single_sender { from } else { "" };
        let vars = [
            ("from", title_from),
            ("count", count_text.as_str()),
            ("preview", preview),
            ("appcode", appcode_text.as_str()),
        ];
        let mut title = fill(&template.title, &vars);
        if title.trim().is_empty() {
            title = if rule.app_name.is_empty() {
                "New messages".to_owned()
            } else {
                rule.app_name.clone()
            };
        }
        let body = if count == 1 {
            fill(&template.body, &vars)
        } else if template.body_many.is_empty() {
            format!("{count} new messages")
        } else {
            fill(&template.body_many, &vars)
        };
        (title, body)
    };
    let collapse_id = if single_sender && !rule.privacy {
        format!("ll-{appcode}-{uid}-{from}")
    } else {
        format!("ll-{appcode}-{uid}")
    };
    Rendered {
        title,
        body,
        badge: if rule.badge { badge } else { None },
        collapse_id,
        ttl: Duration::from_secs(rule.ttl_secs),
        high_priority: rule.high_priority,
        sound: rule.sound.clone(),
        data: vec![
            ("ll_appcode".to_owned(), appcode_text.clone()),
            ("ll_uid".to_owned(), uid.to_owned()),
            ("ll_msgid".to_owned(), newest_msgid.to_string()),
            ("ll_count".to_owned(), count_text.clone()),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(msgid: u64, from: &str, text: &str) -> Pending {
        Pending {
            msgid,
            from: from.to_owned(),
            msgtype: 1,
            content_type: ContentType::Text as i32,
            preview: preview(ContentType::Text as i32, text.as_bytes()),
        }
    }

    #[test]
    fn one_message_shows_sender_and_preview() {
        let r = render(
            &RuleConfig::default(),
            7,
            "bob",
            &[msg(5, "alice", "hi")],
            Some(3),
        );
        assert_eq!(r.title, "alice");
        assert_eq!(r.body, "hi");
        assert_eq!(r.badge, Some(3));
        assert_eq!(r.collapse_id, "ll-7-bob-alice");
        assert!(r.data.contains(&("ll_msgid".to_owned(), "5".to_owned())));
    }

    #[test]
    fn a_burst_says_how_many_and_privacy_hides_content() {
        let messages = [
            msg(1, "alice", "a"),
            msg(2, "carol", "b"),
            msg(3, "alice", "c"),
        ];
        let r = render(&RuleConfig::default(), 7, "bob", &messages, None);
        assert_eq!(r.body, "3 new messages");
        assert_eq!(r.title, "New messages");
        assert_eq!(r.collapse_id, "ll-7-bob");
        let private = RuleConfig {
            privacy: true,
            badge: false,
            ..RuleConfig::default()
        };
        let r = render(&private, 7, "bob", &messages, Some(3));
        assert_eq!(r.title, "New message");
        assert_eq!(r.body, "You have 3 new messages");
        assert_eq!(r.badge, None);
        assert!(!r.body.contains('a') || !r.title.contains("alice"));
    }

    #[test]
    fn templates_fill_once_and_match_content_type() {
        let rule = RuleConfig {
            templates: vec![TemplateConfig {
                content_type: "text".to_owned(),
                title: "{from} ({appcode})".to_owned(),
                body: "{preview} {unknown}".to_owned(),
                body_many: String::new(),
            }],
            ..RuleConfig::default()
        };
        let r = render(&rule, 9, "u", &[msg(1, "{preview}", "x")], None);
        assert_eq!(r.title, "{preview} (9)");
        assert_eq!(r.body, "x {unknown}");
    }

    #[test]
    fn previews_strip_markup_and_truncate() {
        assert_eq!(
            preview(
                ContentType::Rich as i32,
                b"<font size=3>hello</font> <shake />"
            ),
            "hello"
        );
        assert_eq!(preview(ContentType::Business as i32, b"\x00\x01"), "");
        let long = "é".repeat(150);
        let p = preview(ContentType::Text as i32, long.as_bytes());
        assert_eq!(p.chars().count(), PREVIEW_CHARS + 1);
    }
}
