//! The keys' types, and the walk over the merged layers that reports every
//! problem at once. The keys themselves are the fields of the settings structs, declared
//! with [`section!`] and [`settings!`], which derive each key's [`Spec`] from its field.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;

use config::{Value, ValueKind};
use serde::de::{self, Deserializer, Visitor};
use url::Url;

use super::error::Problem;
use super::secret::{DatabaseUrl, Secret};
use super::sources::is_env_origin;
use super::{ExistingUsers, LogFormat, OnChange, Ownership, ScimEmail};
use crate::clerk::TemplateSlug;

/// A check of a string value: the normalised value, or why it is refused. A reason never
/// repeats the value; the walk adds it for keys that are not secret.
type Check = fn(&str) -> Result<String, String>;

/// A check of a list of records (tables), each as JSON: the normalised list, or every
/// reason, each naming its entry.
type RecordsCheck = fn(Vec<serde_json::Value>) -> Result<toml::Value, String>;

pub(crate) enum Kind {
    Bool,
    Int {
        min: i64,
        max: i64,
    },
    Float {
        min: f64,
        max: f64,
    },
    Text(Check),
    /// One of an enum's variants, named as serde names them.
    Choice(fn() -> &'static [&'static str]),
    List(Check),
    /// A table of names to strings, each entry checked as `name = value`; from the
    /// environment, `name=value` pairs separated by commas.
    Table(Check),
    /// `events.endpoints`: an array of `{ url, secret }` or `{ url, secret_file }` tables;
    /// from the environment, the same written as a TOML array.
    Endpoints,
    /// A list of tables (`[[section.key]]` in a file), each checked as JSON by the key's
    /// check; from the environment, a JSON array of objects.
    Records(RecordsCheck),
}

pub(crate) const fn int(min: i64, max: i64) -> Kind {
    Kind::Int { min, max }
}

pub(crate) const fn float(min: f64, max: f64) -> Kind {
    Kind::Float { min, max }
}

/// One key of a section.
pub(crate) struct Spec {
    pub name: &'static str,
    pub kind: Kind,
    /// The field is an `Option`: the key may be unset.
    pub optional: bool,
    /// The field holds a [`Secret`]: no message shows its value.
    pub secret: bool,
}

impl Spec {
    /// The key of a field of type `T`, of the kind given or else the one its type implies.
    pub(crate) const fn of<T: KeyType>(name: &'static str, kind: Option<Kind>) -> Spec {
        let kind = match (kind, T::KIND) {
            (Some(kind), _) | (None, Some(kind)) => kind,
            (None, None) => panic!("a key of this type needs its kind after `=`"),
        };
        Spec {
            name,
            kind,
            optional: T::OPTIONAL,
            secret: T::SECRET,
        }
    }
}

/// A section: a table of the configuration and its keys, in field order.
pub(crate) struct Section {
    pub name: &'static str,
    pub keys: &'static [Spec],
}

/// What a field's type says about its key: whether it may be unset, whether it is a
/// secret, and its kind when the type alone decides it (a boolean, an enum).
pub(crate) trait KeyType {
    const KIND: Option<Kind> = None;
    const OPTIONAL: bool = false;
    const SECRET: bool = false;
}

impl KeyType for u32 {}
impl KeyType for u64 {}
impl KeyType for f64 {}
impl KeyType for String {}
impl KeyType for PathBuf {}
impl KeyType for SocketAddr {}
impl KeyType for Url {}
impl KeyType for BTreeMap<String, String> {}
impl KeyType for crate::scim::groups_map::GroupMapping {}

impl KeyType for bool {
    const KIND: Option<Kind> = Some(Kind::Bool);
}

impl KeyType for Secret {
    const SECRET: bool = true;
}

impl KeyType for DatabaseUrl {
    const SECRET: bool = true;
}

impl<T: KeyType> KeyType for Option<T> {
    const KIND: Option<Kind> = T::KIND;
    const OPTIONAL: bool = true;
    const SECRET: bool = T::SECRET;
}

impl KeyType for super::EventEndpoint {
    const KIND: Option<Kind> = Some(Kind::Endpoints);
    const SECRET: bool = true;
}

impl<T: KeyType> KeyType for Vec<T> {
    const KIND: Option<Kind> = match T::KIND {
        Some(Kind::Endpoints) => Some(Kind::Endpoints),
        _ => None,
    };
    const SECRET: bool = T::SECRET;
}

macro_rules! choices {
    ($($ty:ty),*) => {$(
        impl KeyType for $ty {
            const KIND: Option<Kind> = Some(Kind::Choice(variants::<$ty>));
        }
    )*};
}
choices!(
    LogFormat,
    Ownership,
    OnChange,
    ScimEmail,
    TemplateSlug,
    ExistingUsers
);

/// The names serde reads for the variants of the enum `T`.
fn variants<T: de::DeserializeOwned>() -> &'static [&'static str] {
    /// A deserializer that only notes the variants it is offered.
    struct Probe<'a>(&'a mut &'static [&'static str]);

    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not an enum"))
        }

        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _name: &'static str,
            variants: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = variants;
            Err(de::Error::custom("probed"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
            struct identifier ignored_any
        }
    }

    let mut variants: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut variants));
    variants
}

/// Declares a section's struct, read and written by serde, and its keys: one per field, in
/// field order, each of the kind written after `=` or else the one its type implies.
macro_rules! section {
    (
        $(#[$attr:meta])*
        pub struct $name:ident {
            $(
                $(#[$field_attr:meta])*
                pub $field:ident: $ty:ty $(= $kind:expr)?,
            )*
        }
    ) => {
        $(#[$attr])*
        #[derive(serde::Deserialize, serde::Serialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$field_attr])* pub $field: $ty,)*
        }

        impl $name {
            pub(crate) const KEYS: &'static [$crate::config::schema::Spec] = &[$(
                $crate::config::schema::Spec::of::<$ty>(
                    stringify!($field),
                    $crate::config::schema::section!(@kind $($kind)?),
                ),
            )*];
        }
    };
    (@kind) => { None };
    (@kind $kind:expr) => { Some($kind) };
}
pub(crate) use section;

/// Declares the whole configuration: one field per section, in the order of
/// config/default.toml.
macro_rules! settings {
    (
        $(#[$attr:meta])*
        pub struct $name:ident {
            $(pub $section:ident: $ty:ident,)*
        }
    ) => {
        $(#[$attr])*
        #[derive(serde::Deserialize, serde::Serialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $(pub $section: $ty,)*
        }

        impl $name {
            /// Every section and its keys, in the order of config/default.toml.
            pub(crate) const SECTIONS: &'static [$crate::config::schema::Section] = &[$(
                $crate::config::schema::Section {
                    name: stringify!($section),
                    keys: $ty::KEYS,
                },
            )*];
        }
    };
}
pub(crate) use settings;

/// The merged layers, checked: a normalised table ready to deserialize, where each key
/// came from, and every problem.
pub(crate) struct Walked {
    pub table: toml::Table,
    pub origins: HashMap<String, String>,
    pub problems: Vec<Problem>,
}

pub(crate) fn walk(root: &Value, sections: &[Section]) -> Walked {
    let mut walked = Walked {
        table: toml::Table::new(),
        origins: HashMap::new(),
        problems: Vec::new(),
    };
    let ValueKind::Table(root_table) = &root.kind else {
        walked
            .problems
            .push(Problem::new("configuration", "is not a table"));
        return walked;
    };
    let empty = config::Map::new();
    for (section, keys) in sections.iter().map(|s| (s.name, s.keys)) {
        let fields = match root_table.get(section).map(|value| (value, &value.kind)) {
            None => &empty,
            Some((_, ValueKind::Table(fields))) => fields,
            Some((value, kind)) => {
                walked.problems.push(
                    Problem::new(
                        section,
                        format!("expected a table ([{section}]), found {}", describe(kind)),
                    )
                    .with_origin(origin_of(value)),
                );
                continue;
            }
        };
        let mut section_table = toml::Table::new();
        for spec in keys {
            let key = format!("{section}.{}", spec.name);
            let Some(value) = fields.get(spec.name) else {
                if !spec.optional {
                    walked.problems.push(Problem::new(key, "must be set"));
                }
                continue;
            };
            let origin = origin_of(value);
            match coerce(spec, value) {
                Ok(Some(normalised)) => {
                    section_table.insert(spec.name.to_owned(), normalised);
                }
                Ok(None) => {}
                Err(reason) => {
                    walked
                        .problems
                        .push(Problem::new(key.clone(), reason).with_origin(origin.clone()));
                }
            }
            if let Some(origin) = origin {
                walked.origins.insert(key, origin);
            }
        }
        let names: Vec<&str> = keys.iter().map(|s| s.name).collect();
        walked
            .problems
            .extend(unknown(section, fields, &names, "unknown key"));
        walked
            .table
            .insert(section.to_owned(), toml::Value::Table(section_table));
    }
    let names: Vec<&str> = sections.iter().map(|s| s.name).collect();
    let mut unknown_sections = unknown("", root_table, &names, "unknown section");
    walked.problems.append(&mut unknown_sections);
    walked
}

fn unknown(
    section: &str,
    fields: &config::Map<String, Value>,
    known: &[&str],
    what: &str,
) -> Vec<Problem> {
    let mut names: Vec<&String> = fields
        .keys()
        .filter(|name| !known.contains(&name.as_str()))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let key = if section.is_empty() {
                name.clone()
            } else {
                format!("{section}.{name}")
            };
            let reason = match suggest(name, known) {
                Some(near) => format!("{what} (did you mean `{near}`?)"),
                None => what.to_owned(),
            };
            let origin = fields.get(name).and_then(origin_of);
            Problem::new(key, reason).with_origin(origin)
        })
        .collect()
}

/// Where a value came from. A merged table has no origin of its own, so it takes that
/// of its first value that has one.
fn origin_of(value: &Value) -> Option<String> {
    if let Some(origin) = value.origin() {
        return Some(origin.to_owned());
    }
    match &value.kind {
        ValueKind::Table(fields) => {
            let mut names: Vec<&String> = fields.keys().collect();
            names.sort();
            names
                .into_iter()
                .find_map(|name| fields.get(name).and_then(origin_of))
        }
        ValueKind::Array(items) => items.iter().find_map(origin_of),
        _ => None,
    }
}

/// The known name closest to a misspelt one, if it is close enough to be a typo: at most
/// a third of its length in edits (insert, delete, substitute, swap two neighbours).
fn suggest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let name = name.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (strsim::osa_distance(&name, k), *k))
        .filter(|(distance, k)| *distance <= (k.len() / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k)
}

fn describe(kind: &ValueKind) -> &'static str {
    match kind {
        ValueKind::Nil => "nothing",
        ValueKind::Boolean(_) => "a boolean",
        ValueKind::I64(_) | ValueKind::I128(_) | ValueKind::U64(_) | ValueKind::U128(_) => {
            "an integer"
        }
        ValueKind::Float(_) => "a float",
        ValueKind::String(_) => "a string",
        ValueKind::Table(_) => "a table",
        ValueKind::Array(_) => "an array",
    }
}

fn expected(kind: &Kind) -> &'static str {
    match kind {
        Kind::Bool => "a boolean (true or false)",
        Kind::Int { .. } => "an integer",
        Kind::Float { .. } => "a number",
        Kind::Text(_) | Kind::Choice(_) => "a string",
        Kind::List(_) => "an array of strings",
        Kind::Table(_) => "a table of strings",
        Kind::Records(_) => "an array of tables",
        Kind::Endpoints => "an array of { url, secret } tables",
    }
}

/// One value, checked and converted to its TOML form. `Ok(None)`: an optional key left
/// unset. Values from the environment arrive as text and are parsed here; values from a
/// file must already have the right type.
fn coerce(spec: &Spec, value: &Value) -> Result<Option<toml::Value>, String> {
    match &value.kind {
        ValueKind::Nil if spec.optional => Ok(None),
        ValueKind::String(text) if is_env_origin(value.origin()) => from_env_text(spec, text),
        kind => from_typed(spec, kind),
    }
}

fn from_env_text(spec: &Spec, text: &str) -> Result<Option<toml::Value>, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return match spec.kind {
            Kind::List(_) => Ok(Some(toml::Value::Array(Vec::new()))),
            Kind::Table(_) => Ok(Some(toml::Value::Table(toml::Table::new()))),
            Kind::Endpoints => Ok(Some(toml::Value::Array(Vec::new()))),
            Kind::Records(_) => Ok(Some(toml::Value::Array(Vec::new()))),
            _ if spec.optional => Ok(None),
            _ => Err("is empty".to_owned()),
        };
    }
    let got = || got(spec, trimmed);
    match &spec.kind {
        Kind::Bool => match trimmed.to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(Some(toml::Value::Boolean(true))),
            "false" | "0" => Ok(Some(toml::Value::Boolean(false))),
            _ => Err(format!("expected true or false{}", got())),
        },
        Kind::Int { min, max } => match trimmed.parse::<i64>() {
            Ok(n) => in_int_range(n, *min, *max).map(Some),
            Err(_) => Err(format!("expected an integer{}", got())),
        },
        Kind::Float { min, max } => match trimmed.parse::<f64>() {
            Ok(x) => in_float_range(x, *min, *max).map(Some),
            Err(_) => Err(format!("expected a number{}", got())),
        },
        Kind::Text(check) => text_value(spec, *check, trimmed),
        Kind::Choice(choices) => choice(spec, choices(), trimmed),
        Kind::List(check) => {
            let items: Vec<&str> = trimmed
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .collect();
            list(spec, *check, items)
        }
        Kind::Table(check) => {
            let mut entries = Vec::new();
            for item in trimmed.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                let Some((name, value)) = item.split_once('=') else {
                    return Err(format!(
                        "expected name=value pairs separated by commas{}",
                        got()
                    ));
                };
                entries.push((name.trim().to_owned(), value.trim().to_owned()));
            }
            table(*check, entries)
        }
        Kind::Records(check) => match serde_json::from_str::<serde_json::Value>(trimmed) {
            Ok(serde_json::Value::Array(items)) => check(items).map(Some),
            Ok(_) | Err(_) => Err(format!(
                "expected a JSON array of objects, e.g. \
                 [{{\"group\": \"Acme\", \"organization\": \"acme\"}}]{}",
                got()
            )),
        },
        Kind::Endpoints => {
            let wrapped = format!("endpoints = {trimmed}");
            match toml::from_str::<toml::Table>(&wrapped) {
                Ok(mut parsed) => match parsed.remove("endpoints") {
                    Some(toml::Value::Array(items)) => endpoints(
                        items
                            .into_iter()
                            .map(|item| match item {
                                toml::Value::Table(table) => Some(
                                    table
                                        .into_iter()
                                        .map(|(name, value)| match value {
                                            toml::Value::String(text) => (name, Some(text)),
                                            _ => (name, None),
                                        })
                                        .collect(),
                                ),
                                _ => None,
                            })
                            .collect(),
                    ),
                    _ => Err(ENDPOINTS_SHAPE.to_owned()),
                },
                // The parser's message may quote a secret: not shown.
                Err(_) => Err(ENDPOINTS_SHAPE.to_owned()),
            }
        }
    }
}

/// A value of the merged layers as JSON, for a check of records.
fn to_json(value: &Value) -> serde_json::Value {
    use serde_json::Value as Json;
    match &value.kind {
        ValueKind::Nil => Json::Null,
        ValueKind::Boolean(b) => Json::Bool(*b),
        ValueKind::I64(n) => Json::from(*n),
        ValueKind::U64(n) => Json::from(*n),
        ValueKind::I128(n) => i64::try_from(*n).map_or(Json::Null, Json::from),
        ValueKind::U128(n) => u64::try_from(*n).map_or(Json::Null, Json::from),
        ValueKind::Float(x) => serde_json::Number::from_f64(*x).map_or(Json::Null, Json::Number),
        ValueKind::String(text) => Json::String(text.clone()),
        ValueKind::Table(fields) => Json::Object(
            fields
                .iter()
                .map(|(name, item)| (name.clone(), to_json(item)))
                .collect(),
        ),
        ValueKind::Array(items) => Json::Array(items.iter().map(to_json).collect()),
    }
}

const ENDPOINTS_SHAPE: &str =
    "expected a TOML array of tables, e.g. [{ url = \"https://...\", secret_file = \"/path\" }]";

/// An `events.endpoints` item: its keys and values (`None` for a value that is not a
/// string), or `None` when the item is not a table.
type EndpointFields = Option<Vec<(String, Option<String>)>>;

/// `events.endpoints`' items, each checked, named by its position (its
/// secret is never shown).
fn endpoints(items: Vec<EndpointFields>) -> Result<Option<toml::Value>, String> {
    let mut values = Vec::with_capacity(items.len());
    let mut reasons = Vec::new();
    let mut urls = std::collections::HashSet::new();
    for (index, item) in items.into_iter().enumerate() {
        let position = index + 1;
        let Some(fields) = item else {
            reasons.push(format!(
                "item {position}: expected a table {{ url, secret }}"
            ));
            continue;
        };
        let mut table = toml::Table::new();
        let mut problems = Vec::new();
        for (name, value) in fields {
            let Some(value) = value else {
                problems.push(format!("{name} must be a string"));
                continue;
            };
            let checked = match name.as_str() {
                "url" => super::checks::check_endpoint_url(&value),
                "secret" => super::checks::check_webhook_secret(&value),
                "secret_file" => super::checks::check_path(&value),
                other => {
                    problems.push(format!(
                        "unknown key {other:?} (an endpoint has url, and secret or secret_file)"
                    ));
                    continue;
                }
            };
            match checked {
                Ok(normalised) => {
                    table.insert(name, toml::Value::String(normalised));
                }
                Err(reason) => problems.push(format!("{name} {reason}")),
            }
        }
        match table.get("url").and_then(toml::Value::as_str) {
            None if !problems.iter().any(|p| p.starts_with("url ")) => {
                problems.push("url must be set".to_owned());
            }
            Some(url) if !urls.insert(url.to_owned()) => {
                problems.push(format!("url {url:?} is named by an earlier endpoint too"));
            }
            _ => {}
        }
        match (
            table.contains_key("secret"),
            table.contains_key("secret_file"),
        ) {
            (true, true) => problems.push("set secret or secret_file, not both".to_owned()),
            (false, false) if !problems.iter().any(|p| p.starts_with("secret")) => {
                problems.push("secret or secret_file must be set".to_owned());
            }
            _ => {}
        }
        if problems.is_empty() {
            values.push(toml::Value::Table(table));
        } else {
            reasons.push(format!("item {position}: {}", problems.join(", ")));
        }
    }
    if reasons.is_empty() {
        Ok(Some(toml::Value::Array(values)))
    } else {
        Err(reasons.join("; "))
    }
}

fn from_typed(spec: &Spec, kind: &ValueKind) -> Result<Option<toml::Value>, String> {
    let mismatch = || {
        format!(
            "expected {}, found {}",
            expected(&spec.kind),
            describe(kind)
        )
    };
    match (&spec.kind, kind) {
        (Kind::Bool, ValueKind::Boolean(b)) => Ok(Some(toml::Value::Boolean(*b))),
        (Kind::Int { min, max }, ValueKind::I64(n)) => in_int_range(*n, *min, *max).map(Some),
        (Kind::Int { min, max }, ValueKind::U64(n)) => {
            in_int_range(i64::try_from(*n).unwrap_or(i64::MAX), *min, *max).map(Some)
        }
        (Kind::Int { min, max }, ValueKind::I128(n)) => {
            let n = i64::try_from(*n).unwrap_or(if *n < 0 { i64::MIN } else { i64::MAX });
            in_int_range(n, *min, *max).map(Some)
        }
        (Kind::Int { min, max }, ValueKind::U128(n)) => {
            in_int_range(i64::try_from(*n).unwrap_or(i64::MAX), *min, *max).map(Some)
        }
        (Kind::Float { min, max }, ValueKind::Float(x)) => in_float_range(*x, *min, *max).map(Some),
        // Whole numbers are natural for a ratio such as 1 or 0.
        #[allow(clippy::cast_precision_loss)]
        (Kind::Float { min, max }, ValueKind::I64(n)) => {
            in_float_range(*n as f64, *min, *max).map(Some)
        }
        (Kind::Text(check), ValueKind::String(text)) => text_value(spec, *check, text),
        (Kind::Choice(choices), ValueKind::String(text)) => choice(spec, choices(), text),
        (Kind::List(check), ValueKind::Array(items)) => {
            let mut texts = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                match &item.kind {
                    ValueKind::String(text) => texts.push(text.as_str()),
                    other => {
                        return Err(format!(
                            "item {}: expected a string, found {}",
                            index + 1,
                            describe(other)
                        ))
                    }
                }
            }
            list(spec, *check, texts)
        }
        (Kind::Table(check), ValueKind::Table(fields)) => {
            let mut entries = Vec::with_capacity(fields.len());
            for (name, item) in fields {
                match &item.kind {
                    ValueKind::String(text) => entries.push((name.clone(), text.clone())),
                    other => {
                        return Err(format!(
                            "{name}: expected a string, found {}",
                            describe(other)
                        ))
                    }
                }
            }
            table(*check, entries)
        }
        (Kind::Records(check), ValueKind::Array(items)) => {
            check(items.iter().map(to_json).collect()).map(Some)
        }
        (Kind::Endpoints, ValueKind::Array(items)) => endpoints(
            items
                .iter()
                .map(|item| match &item.kind {
                    ValueKind::Table(fields) => Some(
                        fields
                            .iter()
                            .map(|(name, value)| match &value.kind {
                                ValueKind::String(text) => (name.clone(), Some(text.clone())),
                                _ => (name.clone(), None),
                            })
                            .collect(),
                    ),
                    _ => None,
                })
                .collect(),
        ),
        _ => Err(mismatch()),
    }
}

fn got(spec: &Spec, text: &str) -> String {
    if spec.secret {
        String::new()
    } else {
        format!(" (got {})", quoted(text))
    }
}

/// A value quoted for a message, cut short so one bad value cannot flood the output.
fn quoted(text: &str) -> String {
    const MAX: usize = 80;
    if text.chars().count() > MAX {
        let cut: String = text.chars().take(MAX).collect();
        format!("{:?}...", cut)
    } else {
        format!("{text:?}")
    }
}

fn in_int_range(n: i64, min: i64, max: i64) -> Result<toml::Value, String> {
    if (min..=max).contains(&n) {
        Ok(toml::Value::Integer(n))
    } else {
        Err(format!("must be between {min} and {max} (got {n})"))
    }
}

fn in_float_range(x: f64, min: f64, max: f64) -> Result<toml::Value, String> {
    if (min..=max).contains(&x) {
        Ok(toml::Value::Float(x))
    } else {
        Err(format!("must be between {min} and {max} (got {x})"))
    }
}

fn text_value(spec: &Spec, check: Check, text: &str) -> Result<Option<toml::Value>, String> {
    match check(text) {
        Ok(normalised) => Ok(Some(toml::Value::String(normalised))),
        Err(reason) => Err(format!("{reason}{}", got(spec, text))),
    }
}

fn choice(spec: &Spec, choices: &[&str], text: &str) -> Result<Option<toml::Value>, String> {
    if choices.contains(&text) {
        Ok(Some(toml::Value::String(text.to_owned())))
    } else {
        let options: Vec<String> = choices.iter().map(|c| format!("\"{c}\"")).collect();
        Err(format!(
            "must be one of {}{}",
            options.join(", "),
            got(spec, text)
        ))
    }
}

fn list(spec: &Spec, check: Check, items: Vec<&str>) -> Result<Option<toml::Value>, String> {
    let mut values = Vec::with_capacity(items.len());
    let mut reasons = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match check(item) {
            Ok(normalised) => values.push(toml::Value::String(normalised)),
            // A secret list names the item by its position, never by its value.
            Err(reason) if spec.secret => reasons.push(format!("item {}: {reason}", index + 1)),
            Err(reason) => reasons.push(format!("{}: {reason}", quoted(item))),
        }
    }
    if reasons.is_empty() {
        Ok(Some(toml::Value::Array(values)))
    } else {
        Err(reasons.join("; "))
    }
}

/// A table's entries, each checked as `name = value`. An empty value drops the entry, so a
/// file can remove an entry the built-in defaults set.
fn table(check: Check, entries: Vec<(String, String)>) -> Result<Option<toml::Value>, String> {
    let mut values = toml::Table::new();
    let mut reasons = Vec::new();
    for (name, value) in entries {
        if value.trim().is_empty() {
            continue;
        }
        match check(&format!("{name}={value}")) {
            Ok(normalised) => {
                values.insert(name, toml::Value::String(normalised));
            }
            Err(reason) => reasons.push(format!("{name}: {reason}")),
        }
    }
    if reasons.is_empty() {
        Ok(Some(toml::Value::Table(values)))
    } else {
        reasons.sort();
        Err(reasons.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    #[test]
    fn suggestions() {
        assert_eq!(suggest("dry_rn", &["dry_run", "notify"]), Some("dry_run"));
        let sections: Vec<&str> = Settings::SECTIONS.iter().map(|s| s.name).collect();
        assert_eq!(suggest("sycn", &sections), Some("sync"));
        assert_eq!(suggest("completely_else", &["dry_run"]), None);
    }

    fn keys_where(flag: fn(&Spec) -> bool) -> Vec<String> {
        Settings::SECTIONS
            .iter()
            .flat_map(|section| {
                section
                    .keys
                    .iter()
                    .filter(move |spec| flag(spec))
                    .map(move |spec| format!("{}.{}", section.name, spec.name))
            })
            .collect()
    }

    #[test]
    fn a_key_is_secret_or_optional_by_its_type() {
        assert_eq!(
            keys_where(|spec| spec.secret),
            [
                "database.url",
                "clerk.secret_key",
                "http.api_token",
                "http.roster_webhook_secret",
                "http.clerk_webhook_secret",
                "scim.token",
                "events.endpoints",
            ]
        );
        assert_eq!(
            keys_where(|spec| spec.optional),
            [
                "database.min_connections",
                "clerk.secret_key",
                "clerk.secret_key_file",
                "clerk.requests_per_window",
                "sync.expires_in_days",
                "sync.redirect_url",
                "sync.template_slug",
                "http.admin_listen",
                "http.api_token",
            ]
        );
    }

    #[test]
    fn choices_are_the_variants_serde_reads() {
        assert_eq!(variants::<LogFormat>(), ["pretty", "json"]);
        assert_eq!(variants::<Ownership>(), ["owned", "all"]);
        assert_eq!(variants::<OnChange>(), ["report", "replace"]);
        assert_eq!(variants::<ScimEmail>(), ["user_name", "work_email"]);
        assert_eq!(
            variants::<TemplateSlug>(),
            ["invitation", "waitlist_invitation"]
        );
        assert!(matches!(
            <Option<TemplateSlug> as KeyType>::KIND,
            Some(Kind::Choice(_))
        ));
    }
}
