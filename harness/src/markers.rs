//! Console markers as data: which console line becomes which timeline
//! [`Event`], read from TOML (`harness/markers/*.toml`, embedded in the
//! binary) instead of code, so a device profile can bring its own.
//!
//! A file is a list of `[[marker]]`s:
//!
//! ```toml
//! [[marker]]
//! match = 'devlab-boot: slot (?<slot>[AB]) tries-left (?<tries_left>\d+)'
//! event = "slot_chosen"          # an Event kind, as timeline.json names it
//! numbers = ["tries_left"]       # captures that are numbers (else text)
//! trim = []                      # captures to trim of surrounding blanks
//! fields = { }                   # fixed fields: { slot = "ostree" }
//! ```
//!
//! Each named capture fills the event field of its name; `fields` adds
//! fixed values. The event is built through serde, so [`load`] checks every
//! marker against [`Event`] once: an unknown event, a field the event does
//! not have or is missing, or a field of the wrong type is an input error
//! naming the file, line, column and field. Markers are tried in order, the
//! first that matches wins (a `RegexSet` finds the candidates in one pass,
//! so a line that matches nothing costs one scan). Nothing here does I/O.

use crate::error::{InputError, Result};
use crate::timeline::Event;
use regex::{Regex, RegexSet};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;
use toml::Spanned;

/// The shipped marker files, in the order they are tried.
pub const BUILTIN: &[(&str, &str)] = &[
    ("harness/markers/uboot.toml", include_str!("../markers/uboot.toml")),
    ("harness/markers/devlab-image.toml", include_str!("../markers/devlab-image.toml")),
    ("harness/markers/seabios-ipxe.toml", include_str!("../markers/seabios-ipxe.toml")),
    ("harness/markers/netboot.toml", include_str!("../markers/netboot.toml")),
    ("harness/markers/mgmt.toml", include_str!("../markers/mgmt.toml")),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MarkerFile {
    #[serde(default)]
    marker: Vec<MarkerSpec>,
}

/// One `[[marker]]` as written (also read from a device profile).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MarkerSpec {
    #[serde(rename = "match")]
    pattern: Spanned<String>,
    event: Spanned<String>,
    #[serde(default)]
    fields: BTreeMap<Spanned<String>, toml::Value>,
    #[serde(default)]
    numbers: Vec<Spanned<String>>,
    #[serde(default)]
    trim: Vec<Spanned<String>>,
}

/// A named capture and what to do with its text.
#[derive(Debug, Clone)]
struct Capture {
    name: String,
    number: bool,
    trim: bool,
}

/// One checked marker: a regex and the event it makes.
#[derive(Debug, Clone)]
pub struct Marker {
    re: Regex,
    /// `event` and the fixed fields; captures are added per line.
    template: Map<String, Value>,
    captures: Vec<Capture>,
    /// A device's own event name (not an [`Event`] kind): the line becomes
    /// [`Event::Mark`] with that name, captures and fixed fields in `fields`.
    mark: bool,
    /// `file:line` of the marker, for people.
    pub origin: String,
}

impl Marker {
    pub fn pattern(&self) -> &str {
        self.re.as_str()
    }

    /// The event for `line`, if the marker matches it.
    pub fn event(&self, line: &str) -> Option<Event> {
        let caps = self.re.captures(line)?;
        let mut obj = self.template.clone();
        for c in &self.captures {
            if let Some(m) = caps.name(&c.name) {
                let text = if c.trim { m.as_str().trim() } else { m.as_str() };
                let value = if c.number && !self.mark { number(text) } else { Value::String(text.to_string()) };
                match obj.get_mut("fields").and_then(Value::as_object_mut).filter(|_| self.mark) {
                    Some(fields) => fields.insert(c.name.clone(), value),
                    None => obj.insert(c.name.clone(), value),
                };
            }
        }
        // Checked at load; only a number out of the field's range fails here.
        serde_json::from_value(Value::Object(obj)).ok()
    }
}

/// A capture's text as a JSON number: 0 when it is none.
fn number(text: &str) -> Value {
    text.parse::<u64>()
        .map(Value::from)
        .or_else(|_| text.parse::<i64>().map(Value::from))
        .unwrap_or_else(|_| Value::from(0))
}

/// Markers tried in order, the first match wins.
#[derive(Debug, Clone)]
pub struct Markers {
    set: RegexSet,
    markers: Vec<Marker>,
}

impl Markers {
    pub fn new(markers: Vec<Marker>) -> Markers {
        let set = RegexSet::new(markers.iter().map(|m| m.re.as_str())).expect("each pattern compiled on its own");
        Markers { set, markers }
    }

    /// Load `files` (name, text) in order.
    pub fn from_files<'a>(files: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Markers> {
        let mut all = Vec::new();
        for (name, text) in files {
            all.extend(load(name, text)?);
        }
        Ok(Markers::new(all))
    }

    /// The event of the first marker that matches `line`.
    pub fn event(&self, line: &str) -> Option<Event> {
        self.set.matches(line).iter().find_map(|i| self.markers[i].event(line))
    }

    pub fn markers(&self) -> &[Marker] {
        &self.markers
    }
}

/// The shipped markers ([`BUILTIN`]), loaded and compiled once.
pub fn builtin() -> &'static Markers {
    static MARKERS: OnceLock<Markers> = OnceLock::new();
    MARKERS.get_or_init(|| Markers::from_files(BUILTIN.iter().copied()).unwrap_or_else(|e| panic!("{e}")))
}

/// Parse and check the markers of one file. `file` names it in errors.
pub fn load(file: &str, text: &str) -> Result<Vec<Marker>> {
    let path = Path::new(file);
    let parsed: MarkerFile = toml::from_str(text).map_err(|e| InputError::from_toml(path, text, 0, &e))?;
    load_specs(file, text, parsed.marker, false)
}

/// Check markers already read from `text` (spans into it), e.g. a device
/// profile's `[[marker]]` tables. With `own_names` (a device's), an event
/// name that is no [`Event`] kind names a [`Event::Mark`] instead of being
/// refused; a known kind is still checked field by field.
pub(crate) fn load_specs(file: &str, text: &str, specs: Vec<MarkerSpec>, own_names: bool) -> Result<Vec<Marker>> {
    let path = Path::new(file);
    let err = |offset: usize, field: &str, msg: String| InputError::new(path, msg).at(text, offset).field(field);
    let mut out = Vec::new();
    for spec in specs {
        let pattern = spec.pattern.get_ref();
        let pattern_at = spec.pattern.span().start;
        let re = Regex::new(pattern).map_err(|e| err(pattern_at, "match", format!("not a regex: {e}")))?;
        // Where a capture is written, when the pattern is a 'literal string' (no escapes to count).
        let capture_at = |name: &str| {
            let literal = text[pattern_at..].starts_with('\'') && !text[pattern_at..].starts_with("'''");
            match pattern.find(&format!("(?<{name}>")).or_else(|| pattern.find(&format!("(?P<{name}>"))) {
                Some(i) if literal => pattern_at + 1 + i,
                _ => pattern_at,
            }
        };
        let names: Vec<String> = re.capture_names().flatten().map(str::to_string).collect();
        for (list, key) in [(&spec.numbers, "numbers"), (&spec.trim, "trim")] {
            if let Some(n) = list.iter().find(|n| !names.contains(n.get_ref())) {
                return Err(err(
                    n.span().start,
                    key,
                    format!("`{}` is not a named capture of `match` (captures: {})", n.get_ref(), names.join(", ")),
                )
                .into());
            }
        }
        let event = spec.event.get_ref();
        let event_at = spec.event.span().start;
        let mut template = Map::new();
        template.insert("event".into(), Value::String(event.clone()));
        // (field, its sample value, where it is written)
        let mut fields: Vec<(String, Value, usize)> = Vec::new();
        for (key, value) in &spec.fields {
            let name = key.get_ref();
            if name == "event" || names.contains(name) {
                let why = if name == "event" { "is the event's tag" } else { "is also a named capture" };
                return Err(err(key.span().start, name, format!("fixed field `{name}` {why}")).into());
            }
            let value = serde_json::to_value(value)
                .map_err(|e| err(key.span().start, name, format!("not a JSON value: {e}")))?;
            template.insert(name.clone(), value.clone());
            fields.push((name.clone(), value, key.span().start));
        }
        let mut captures = Vec::new();
        for name in &names {
            if name == "event" {
                return Err(err(capture_at(name), name, "a capture cannot be named `event` (the tag)".into()).into());
            }
            let number = spec.numbers.iter().any(|n| n.get_ref() == name);
            let trim = spec.trim.iter().any(|n| n.get_ref() == name);
            let sample = if number { Value::from(0) } else { Value::String("x".into()) };
            fields.push((name.clone(), sample, capture_at(name)));
            captures.push(Capture { name: name.clone(), number, trim });
        }
        let mark = own_names && try_event(event, &[]).is_err_and(|e| e.starts_with("unknown variant"));
        if mark {
            // The device's own event: its name, and every field as text.
            let fixed: Map<String, Value> = template
                .iter()
                .filter(|(k, _)| *k != "event")
                .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| Value::String(v.to_string()), |s| s.into())))
                .collect();
            template = Map::new();
            template.insert("event".into(), "mark".into());
            template.insert("name".into(), Value::String(event.clone()));
            template.insert("fields".into(), Value::Object(fixed));
        } else {
            check(event, &fields).map_err(|(field, offset, msg)| match field {
                None => err(event_at, "event", msg),
                Some(f) => err(offset.unwrap_or(event_at), &f, msg),
            })?;
        }
        let (line, _) = crate::error::line_col(text, pattern_at);
        out.push(Marker { re, template, captures, mark, origin: format!("{file}:{line}") });
    }
    Ok(out)
}

/// Deserialize `{event, fields...}` as an [`Event`].
fn try_event(event: &str, fields: &[(&str, Value)]) -> std::result::Result<Event, String> {
    let mut obj = Map::new();
    obj.insert("event".into(), Value::String(event.into()));
    for (k, v) in fields {
        obj.insert(k.to_string(), v.clone());
    }
    serde_json::from_value(Value::Object(obj)).map_err(|e| e.to_string())
}

/// Check a marker's event and fields against [`Event`] through serde: the
/// event exists, each field is one of its fields and takes the value's type,
/// and no field it needs is left out. Errors: (field, where, message).
#[allow(clippy::type_complexity)]
fn check(
    event: &str,
    fields: &[(String, Value, usize)],
) -> std::result::Result<(), (Option<String>, Option<usize>, String)> {
    if let Err(e) = try_event(event, &[]) {
        if e.starts_with("unknown variant") {
            return Err((None, None, e));
        }
    }
    // A struct's fields are read (and type-checked) in order before any is
    // found missing, so one field on its own shows its type error, if any.
    // A value no field of any event takes tells a field (type error) from
    // one the event ignores (no error but "missing field", or none).
    let impossible = serde_json::json!({ "\u{0}": [[null]] });
    for (name, sample, at) in fields {
        let known = match try_event(event, &[(name, impossible.clone())]) {
            Ok(_) => false,
            Err(e) => !e.starts_with("missing field"),
        };
        if !known {
            return Err((Some(name.clone()), Some(*at), format!("event `{event}` has no field `{name}`")));
        }
        if let Err(e) = try_event(event, &[(name, sample.clone())]) {
            if !e.starts_with("missing field") {
                let hint = match sample {
                    Value::String(_) => " (a capture is text; list it in `numbers` for a number)",
                    _ => "",
                };
                return Err((Some(name.clone()), Some(*at), format!("event `{event}`: {e}{hint}")));
            }
        }
    }
    let all: Vec<(&str, Value)> = fields.iter().map(|(n, v, _)| (n.as_str(), v.clone())).collect();
    try_event(event, &all).map(|_| ()).map_err(|e| match e.strip_prefix("missing field `") {
        Some(rest) => {
            let f = rest.split('`').next().unwrap_or_default().to_string();
            let msg = format!("event `{event}` needs `{f}`: a named capture `(?<{f}>…)` in `match`, or `fields`");
            (Some(f), None, msg)
        }
        None => (None, None, format!("event `{event}`: {e}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_err(text: &str) -> String {
        load("m.toml", text).unwrap_err().to_string()
    }

    #[test]
    fn builtin_markers_load_in_order() {
        let m = builtin();
        assert_eq!(m.markers().len(), 26);
        assert!(m.markers()[0].origin.starts_with("harness/markers/uboot.toml:"), "{:?}", m.markers()[0].origin);
        assert_eq!(m.markers()[0].pattern(), r"^U-Boot \d{4}\.\d{2}");
        assert!(m.markers()[25].origin.starts_with("harness/markers/mgmt.toml:"));
    }

    #[test]
    fn captures_literals_numbers_and_trim_fill_the_event() {
        let m = Markers::new(
            load(
                "m.toml",
                r#"
[[marker]]
match = 'slot (?<slot>[AB]) left (?<tries_left>\d+)'
event = "slot_chosen"
numbers = ["tries_left"]

[[marker]]
match = 'root ostree'
event = "root_mounted"
fields = { slot = "ostree" }

[[marker]]
match = 'health: (?<result>.+)'
event = "health"
trim = ["result"]

[[marker]]
match = 'health: never'
event = "kernel_panic"
"#,
            )
            .unwrap(),
        );
        assert_eq!(m.event("slot B left 2"), Some(Event::SlotChosen { slot: "B".into(), tries_left: 2 }));
        assert_eq!(m.event("x root ostree y"), Some(Event::RootMounted { slot: "ostree".into() }));
        // The first match wins.
        assert_eq!(m.event("health: never  "), Some(Event::Health { result: "never".into() }));
        assert_eq!(m.event("nothing"), None);
        // A number out of the field's range: no event from that marker.
        assert_eq!(m.event("slot A left 99999999999"), None);
    }

    #[test]
    fn unknown_event_is_refused_at_load_with_its_place() {
        let err = load_err("# markers\n\n[[marker]]\nmatch = 'x'\nevent = \"no_such_event\"\n");
        assert!(err.starts_with("m.toml:5:9: field `event`: unknown variant `no_such_event`"), "{err}");
        assert!(err.contains("`slot_chosen`"), "lists the known events: {err}");
    }

    #[test]
    fn a_field_of_the_wrong_type_is_refused_at_load() {
        // A capture is text, tries_left a number.
        let err = load_err("[[marker]]\nmatch = 'slot (?<slot>.) (?<tries_left>\\d+)'\nevent = \"slot_chosen\"\n");
        assert!(err.starts_with("m.toml:2:26: field `tries_left`: event `slot_chosen`: invalid type: string"), "{err}");
        assert!(err.contains("expected u32") && err.contains("`numbers`"), "{err}");
        // A fixed value of the wrong type.
        let err = load_err("[[marker]]\nmatch = 'link'\nevent = \"link\"\nfields = { up = \"yes\" }\n");
        assert!(
            err.starts_with("m.toml:4:12: field `up`: event `link`: invalid type: string \"yes\", expected a boolean"),
            "{err}"
        );
        // A number where the event wants text.
        let err = load_err("[[marker]]\nmatch = 'env (?<copy>\\d)'\nevent = \"env_copy\"\nnumbers = [\"copy\"]\n");
        assert!(
            err.starts_with(
                "m.toml:2:14: field `copy`: event `env_copy`: invalid type: integer `0`, expected a string"
            ),
            "{err}"
        );
    }

    #[test]
    fn unknown_and_missing_fields_are_refused_at_load() {
        let err = load_err("[[marker]]\nmatch = 'root (?<slott>.)'\nevent = \"root_mounted\"\n");
        assert!(err.starts_with("m.toml:2:15: field `slott`: event `root_mounted` has no field `slott`"), "{err}");
        let err = load_err("[[marker]]\nmatch = 'banner'\nevent = \"uboot_banner\"\nfields = { name = \"x\" }\n");
        assert!(err.starts_with("m.toml:4:12: field `name`: event `uboot_banner` has no field `name`"), "{err}");
        let err = load_err("[[marker]]\nmatch = 'root'\nevent = \"root_mounted\"\n");
        assert!(err.starts_with("m.toml:3:9: field `slot`: event `root_mounted` needs `slot`"), "{err}");
    }

    #[test]
    fn bad_regex_lists_and_keys_are_refused_at_load() {
        let err = load_err("[[marker]]\nmatch = 'a(b'\nevent = \"kernel_panic\"\n");
        assert!(err.starts_with("m.toml:2:9: field `match`: not a regex"), "{err}");
        let err = load_err("[[marker]]\nmatch = 'a (?<n>.)'\nevent = \"env_copy\"\ntrim = [\"copy\"]\n");
        assert!(err.starts_with("m.toml:4:9: field `trim`: `copy` is not a named capture"), "{err}");
        let err = load_err("[[marker]]\nmatch = 'a'\nevent = \"kernel_panic\"\nfield = 1\n");
        assert!(err.starts_with("m.toml:4:1: field `field`: unknown field `field`"), "{err}");
        let err = load_err("[[marker]]\nmatch = 'env (?<copy>.)'\nevent = \"env_copy\"\nfields = { copy = \"a\" }\n");
        assert!(err.contains("field `copy`: fixed field `copy` is also a named capture"), "{err}");
    }
}
