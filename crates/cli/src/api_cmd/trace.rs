//! `longlink trace ID`: one message's trail through the node — every stage the ledger
//! recorded, with its node, who it concerned and when — from `GET /v1/trace/{id}`
//! (/work/spec/observability.md, docs/api.md).
//!
//! The timeline is computed from each event's `at_us` (whole microseconds), so offsets and
//! deltas print exactly, with three decimals of a millisecond.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use reqwest::StatusCode;
use serde::Deserialize;

use super::{Api, ApiFailure, ApiOpts, utc_ms};

/// Shown where a field is null or absent.
const DASH: &str = "—";
/// Width of the stage column: the longest stage name, `acked_to_sender`.
const STAGE_WIDTH: usize = 15;

#[derive(Debug, Args)]
pub(crate) struct TraceArgs {
    /// A log_id (as in the server's logs, `client listen --json`, a push's answer) or a
    /// msgid, in decimal.
    id: u64,
    /// Read ID only as a log_id or only as a msgid (default: a log_id first, then a msgid).
    #[arg(long, value_enum)]
    by: Option<TraceBy>,
    /// Print the API's JSON answer, pretty.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiOpts,
}

/// `--by`: what ID is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TraceBy {
    /// The trace id a message got when it entered the platform.
    #[value(alias = "log_id")]
    LogId,
    /// The id a stored message got.
    Msgid,
}

impl TraceBy {
    /// The API's spelling (`?by=`).
    fn query(self) -> &'static str {
        match self {
            TraceBy::LogId => "log_id",
            TraceBy::Msgid => "msgid",
        }
    }
}

/// A log_id or msgid: the API writes them as decimal strings (they can exceed 2^53); a
/// number is read too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "IdRepr")]
struct Id(u64);

#[derive(Deserialize)]
#[serde(untagged)]
enum IdRepr {
    Number(u64),
    Text(String),
}

impl TryFrom<IdRepr> for Id {
    type Error = String;

    fn try_from(repr: IdRepr) -> Result<Self, String> {
        match repr {
            IdRepr::Number(n) => Ok(Id(n)),
            IdRepr::Text(text) => text
                .parse()
                .map(Id)
                .map_err(|_| format!("{text:?} is not a decimal id")),
        }
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// `GET /v1/trace/{id}`; fields the timeline does not show are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Trace {
    log_id: Id,
    msgids: Vec<Id>,
    kind: String,
    from: Option<String>,
    to: Option<String>,
    appcodes: Vec<u32>,
    started_ms: u64,
    events: Vec<Event>,
    dropped_events: u64,
}

/// One stage of the trail.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Event {
    stage: String,
    at_us: u64,
    node: String,
    msgid: Option<Id>,
    who: Option<String>,
    detail: Option<String>,
}

/// Runs `longlink trace`.
pub(crate) async fn trace(args: TraceArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    let id = args.id.to_string();
    let query: Vec<(&str, String)> = args
        .by
        .map(|by| ("by", by.query().to_owned()))
        .into_iter()
        .collect();
    // Kept in the server's field order, so `--json` reads log_id, msgids, kind… as documented.
    let raw: Ordered = match api.get(&["v1", "trace", &id], &query, Duration::ZERO).await {
        Ok(raw) => raw,
        Err(err) => {
            return Err(match err.downcast::<ApiFailure>() {
                Ok(failure) if failure.status == Some(StatusCode::NOT_FOUND) => {
                    not_found(args.id, args.by).into()
                }
                Ok(failure) => failure.into(),
                Err(err) => err,
            });
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&raw)?);
        return Ok(());
    }
    let trace: Trace = serde_json::to_value(&raw)
        .and_then(serde_json::from_value)
        .with_context(|| format!("unexpected answer to GET /v1/trace/{id}"))?;
    print!("{}", render(&trace));
    Ok(())
}

/// The one line (exit 1) for an id the ledger does not hold.
fn not_found(id: u64, by: Option<TraceBy>) -> ApiFailure {
    let what = match by {
        None => "log_id or msgid",
        Some(by) => by.query(),
    };
    ApiFailure {
        code: 1,
        line: format!(
            "trace: no message with {what} {id} in the ledger (it may be older than the trace window)"
        ),
        status: Some(StatusCode::NOT_FOUND),
    }
}

/// The trace as text: a header, one line per event, the total and a note on dropped events.
fn render(trace: &Trace) -> String {
    let mut out = String::new();
    let ids = match trace.msgids.as_slice() {
        [] => format!("msgid {DASH}"),
        [one] => format!("msgid {one}"),
        many => format!("msgids {}", join(many)),
    };
    let kind = if trace.kind.is_empty() {
        "unknown"
    } else {
        &trace.kind
    };
    let _ = writeln!(
        out,
        "log_id {}  {ids}  {kind}  {} → {}",
        trace.log_id,
        or_dash(trace.from.as_deref()),
        or_dash(trace.to.as_deref())
    );
    let appcodes = if trace.appcodes.is_empty() {
        DASH.to_owned()
    } else {
        join(&trace.appcodes)
    };
    let _ = writeln!(
        out,
        "started {}  appcodes {appcodes}",
        if trace.events.is_empty() {
            DASH.to_owned()
        } else {
            utc_ms(trace.started_ms)
        }
    );
    let (Some(first), Some(last)) = (trace.events.first(), trace.events.last()) else {
        out.push_str("no events recorded\n");
        dropped_note(&mut out, trace.dropped_events);
        return out;
    };

    // Offsets and deltas are signed: events are in time order, but clocks of two nodes may
    // disagree by a little.
    let since = |from: u64, to: u64| i128::from(to) - i128::from(from);
    let offsets: Vec<String> = trace
        .events
        .iter()
        .map(|event| signed_ms(since(first.at_us, event.at_us)))
        .collect();
    let deltas: Vec<String> = trace
        .events
        .iter()
        .scan(first.at_us, |previous, event| {
            let delta = since(*previous, event.at_us);
            *previous = event.at_us;
            Some(format!("({})", signed_ms(delta)))
        })
        .collect();
    let width = |column: &[String]| column.iter().map(|s| s.chars().count()).max().unwrap_or(0);
    let nodes: Vec<String> = trace
        .events
        .iter()
        .map(|event| or_dash(Some(&event.node)).to_owned())
        .collect();
    let whos: Vec<String> = trace
        .events
        .iter()
        .map(|event| or_dash(event.who.as_deref()).to_owned())
        .collect();
    let (offset_width, delta_width) = (width(&offsets), width(&deltas));
    let (node_width, who_width) = (width(&nodes), width(&whos));
    for (i, event) in trace.events.iter().enumerate() {
        let mut line = format!(
            "  {:>offset_width$} ms  {:>delta_width$}  {:<STAGE_WIDTH$}  {:<node_width$}  {:<who_width$}",
            offsets[i], deltas[i], event.stage, nodes[i], whos[i]
        );
        if let Some(detail) = event.detail.as_deref().filter(|d| !d.is_empty()) {
            let _ = write!(line, "  {detail}");
        }
        if let Some(msgid) = event.msgid {
            let _ = write!(line, "  msgid {msgid}");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let events = trace.events.len();
    let _ = writeln!(
        out,
        "total {} ms  {} → {}  ({events} event{})",
        unsigned_ms(since(first.at_us, last.at_us)),
        first.stage,
        last.stage,
        if events == 1 { "" } else { "s" }
    );
    dropped_note(&mut out, trace.dropped_events);
    out
}

fn dropped_note(out: &mut String, dropped: u64) {
    if dropped > 0 {
        let _ = writeln!(
            out,
            "note: {dropped} more event{} not kept (beyond the ledger's per-message cap, as for a \
             broadcast's recipients)",
            if dropped == 1 { " was" } else { "s were" }
        );
    }
}

/// Microseconds as milliseconds with three decimals and a sign: `+1.234`, `-0.050`.
fn signed_ms(micros: i128) -> String {
    let sign = if micros < 0 { '-' } else { '+' };
    format!("{sign}{}", unsigned_ms(micros))
}

/// The magnitude of microseconds as milliseconds with three decimals: `1.234`.
fn unsigned_ms(micros: i128) -> String {
    let abs = micros.unsigned_abs();
    format!("{}.{:03}", abs / 1000, abs % 1000)
}

fn or_dash(text: Option<&str>) -> &str {
    match text {
        Some(text) if !text.is_empty() => text,
        _ => DASH,
    }
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A JSON value that keeps its objects' fields in the order they came (`serde_json::Value`
/// sorts them): what `--json` prints.
#[derive(Debug, Clone, PartialEq)]
enum Ordered {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Ordered>),
    Object(Vec<(String, Ordered)>),
}

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Ordered;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Ordered, E> {
                Ok(Ordered::Null)
            }
            fn visit_none<E>(self) -> Result<Ordered, E> {
                Ok(Ordered::Null)
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Ordered, D::Error> {
                Ordered::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Ordered, E> {
                Ok(Ordered::Bool(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Ordered, E> {
                Ok(Ordered::Number(v.into()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Ordered, E> {
                Ok(Ordered::Number(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Ordered, E> {
                Ok(serde_json::Number::from_f64(v).map_or(Ordered::Null, Ordered::Number))
            }
            fn visit_str<E>(self, v: &str) -> Result<Ordered, E> {
                Ok(Ordered::String(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Ordered, E> {
                Ok(Ordered::String(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Ordered, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Ordered::Array(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Ordered, A::Error> {
                let mut fields = Vec::new();
                while let Some(field) = map.next_entry()? {
                    fields.push(field);
                }
                Ok(Ordered::Object(fields))
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

impl serde::Serialize for Ordered {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            Ordered::Null => serializer.serialize_unit(),
            Ordered::Bool(v) => serializer.serialize_bool(*v),
            Ordered::Number(v) => v.serialize(serializer),
            Ordered::String(v) => serializer.serialize_str(v),
            Ordered::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Ordered::Object(fields) => {
                let mut map = serializer.serialize_map(Some(fields.len()))?;
                for (key, value) in fields {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A c2c from alice's phone to bob's two devices, as the spec's example extends it.
    const FIXTURE: &str = r#"{
      "log_id": 123,
      "msgids": [456],
      "kind": "c2c",
      "from": "129:alice",
      "to": "130:bob",
      "appcodes": [129, 130],
      "started_ms": 1790000000000,
      "events": [
        {"stage": "accepted", "at_us": 1790000000000123, "offset_ms": 0.0, "delta_ms": 0.0,
         "node": "gate-1", "msgid": null, "who": "129:alice/phone", "detail": "c2c"},
        {"stage": "stored", "at_us": 1790000000001333, "offset_ms": 1.21, "delta_ms": 1.21,
         "node": "gate-1", "msgid": 456, "who": null, "detail": null},
        {"stage": "acked_to_sender", "at_us": 1790000000001400, "node": "gate-1",
         "msgid": 456, "who": "129:alice/phone", "detail": null},
        {"stage": "routed", "at_us": 1790000000001450, "node": "gate-1", "msgid": 456,
         "who": "130:bob", "detail": "2 sessions"},
        {"stage": "written", "at_us": 1790000000001600, "node": "gate-1", "msgid": 456,
         "who": "130:bob/ipad", "detail": null},
        {"stage": "receiver_acked", "at_us": 1790000000012345, "node": "gate-1",
         "msgid": 456, "who": "130:bob/ipad", "detail": null, "new_field": true}
      ],
      "dropped_events": 0,
      "something_new": {"ignored": true}
    }"#;

    fn fixture() -> Trace {
        serde_json::from_str(FIXTURE).unwrap()
    }

    #[test]
    fn renders_a_header_a_timeline_and_the_total() {
        let text = render(&fixture());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "log_id 123  msgid 456  c2c  129:alice → 130:bob");
        assert_eq!(
            lines[1],
            "started 2026-09-21T14:13:20.000Z  appcodes 129, 130"
        );
        assert_eq!(
            &lines[2..],
            [
                "   +0.000 ms   (+0.000)  accepted         gate-1  129:alice/phone  c2c",
                "   +1.210 ms   (+1.210)  stored           gate-1  —                msgid 456",
                "   +1.277 ms   (+0.067)  acked_to_sender  gate-1  129:alice/phone  msgid 456",
                "   +1.327 ms   (+0.050)  routed           gate-1  130:bob          2 sessions  msgid 456",
                "   +1.477 ms   (+0.150)  written          gate-1  130:bob/ipad     msgid 456",
                "  +12.222 ms  (+10.745)  receiver_acked   gate-1  130:bob/ipad     msgid 456",
                "total 12.222 ms  accepted → receiver_acked  (6 events)",
            ]
        );
    }

    #[test]
    fn nulls_are_dashes_and_dropped_events_get_a_note() {
        let mut trace = fixture();
        trace.from = None;
        trace.to = Some("130 (3 users)".to_owned());
        trace.kind = "s2c".to_owned();
        trace.msgids = vec![Id(7), Id(8)];
        trace.events.truncate(1);
        trace.events[0].who = None;
        trace.events[0].detail = None;
        trace.dropped_events = 12;
        let text = render(&trace);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "log_id 123  msgids 7, 8  s2c  — → 130 (3 users)");
        assert_eq!(
            lines[2],
            "  +0.000 ms  (+0.000)  accepted         gate-1  —"
        );
        assert_eq!(lines[3], "total 0.000 ms  accepted → accepted  (1 event)");
        assert!(
            lines[4].starts_with("note: 12 more events were not kept"),
            "{text}"
        );
        assert_eq!(lines.len(), 5);
    }

    #[test]
    fn an_empty_trace_says_so() {
        let trace: Trace = serde_json::from_str(r#"{"log_id": 5, "kind": "unknown"}"#).unwrap();
        let text = render(&trace);
        assert_eq!(
            text,
            "log_id 5  msgid —  unknown  — → —\nstarted —  appcodes —\nno events recorded\n"
        );
    }

    #[test]
    fn clock_skew_shows_a_negative_delta() {
        let mut trace = fixture();
        trace.events[1].at_us = trace.events[0].at_us - 50;
        let text = render(&trace);
        assert!(text.contains("-0.050 ms   (-0.050)  stored"), "{text}");
    }

    #[test]
    fn json_keeps_the_fields_in_the_servers_order() {
        let raw: Ordered = serde_json::from_str(FIXTURE).unwrap();
        let pretty = serde_json::to_string_pretty(&raw).unwrap();
        assert!(
            pretty.starts_with("{\n  \"log_id\": 123,\n  \"msgids\": [\n    456\n  ],\n  \"kind\""),
            "{pretty}"
        );
        assert!(pretty.contains("\"stage\": \"accepted\",\n      \"at_us\": 1790000000000123"));
        let again: serde_json::Value = serde_json::from_str(&pretty).unwrap();
        let direct: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
        assert_eq!(again, direct, "the same value, only laid out");
        // u64 beyond 2^53 (msgids are) stays exact.
        let big: Ordered = serde_json::from_str("[18446744073709551615, -1, 0.5, null]").unwrap();
        assert_eq!(
            serde_json::to_string(&big).unwrap(),
            "[18446744073709551615,-1,0.5,null]"
        );
    }

    #[test]
    fn milliseconds_have_three_decimals() {
        assert_eq!(signed_ms(0), "+0.000");
        assert_eq!(signed_ms(1_234), "+1.234");
        assert_eq!(signed_ms(-5), "-0.005");
        assert_eq!(unsigned_ms(12_345_678), "12345.678");
    }

    #[test]
    fn not_found_is_one_line_with_exit_1() {
        let failure = not_found(999_999_999, None);
        assert_eq!(failure.code, 1);
        assert_eq!(
            failure.line,
            "trace: no message with log_id or msgid 999999999 in the ledger (it may be older \
             than the trace window)"
        );
        assert!(
            not_found(4, Some(TraceBy::Msgid))
                .line
                .contains("with msgid 4 ")
        );
    }
}
