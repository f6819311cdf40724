//! SCIM filters (RFC 7644 §3.4.2.2) and attribute paths (§3.5.2): parsed into small trees,
//! evaluated against a resource's JSON. Attribute names are case-insensitive; string values
//! compare case-insensitively unless the attribute is `caseExact`.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::error::{quoted, ScimError};
use super::schema::{schemas, Owner, ENTERPRISE, USER};

/// An attribute named in a filter: its schema, the attribute and an optional sub-attribute.
/// Inside a value filter (`emails[type eq "work"]`) the names are the item's sub-attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct AttrRef {
    pub owner: Owner,
    pub names: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Compare(AttrRef, CompareOp, Value),
    Present(AttrRef),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    /// `attr[filter]`: some value of the multi-valued `attr` matches `filter`.
    ValuePath(AttrRef, Box<Filter>),
}

/// A PATCH path: `attr`, `attr.sub`, `attr[filter]`, `attr[filter].sub`, each optionally
/// prefixed with its schema URN; or a bare extension URN (`attr` is `None`).
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    pub owner: Owner,
    pub attr: Option<String>,
    pub filter: Option<Filter>,
    pub sub: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Tokens

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Number(serde_json::Number),
    Open,
    Close,
    OpenBracket,
    CloseBracket,
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | ':' | '.' | '-')
}

/// Most tokens a filter may have: `and` / `or` chains build trees as deep as they are long,
/// which evaluating and dropping walk recursively.
const MAX_TOKENS: usize = 512;

fn tokenize(text: &str) -> Result<Vec<Token>, ScimError> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if tokens.len() > MAX_TOKENS {
            return Err(ScimError::invalid_filter(format!(
                "the filter has more than {MAX_TOKENS} terms"
            )));
        }
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            '[' => {
                tokens.push(Token::OpenBracket);
                i += 1;
            }
            ']' => {
                tokens.push(Token::CloseBracket);
                i += 1;
            }
            '"' => {
                let (text, next) = string_at(&chars, i)?;
                tokens.push(Token::Text(text));
                i = next;
            }
            c if c == '-' || c.is_ascii_digit() => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_digit()
                        || matches!(chars[i], '-' | '+' | '.' | 'e' | 'E'))
                {
                    i += 1;
                }
                let raw: String = chars[start..i].iter().collect();
                let number: serde_json::Number = serde_json::from_str(&raw).map_err(|_| {
                    ScimError::invalid_filter(format!("{} is not a number", quoted(&raw)))
                })?;
                tokens.push(Token::Number(number));
            }
            c if is_word_char(c) => {
                let start = i;
                while i < chars.len() && is_word_char(chars[i]) {
                    i += 1;
                }
                tokens.push(Token::Word(chars[start..i].iter().collect()));
            }
            other => {
                return Err(ScimError::invalid_filter(format!(
                    "unexpected character {other:?}"
                )))
            }
        }
    }
    Ok(tokens)
}

/// The JSON string that starts with the quote at `start`, decoded, and the index after its
/// closing quote.
fn string_at(chars: &[char], start: usize) -> Result<(String, usize), ScimError> {
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '"' => {
                let raw: String = chars[start..=i].iter().collect();
                let decoded = serde_json::from_str(&raw).map_err(|_| {
                    ScimError::invalid_filter(format!("{} is not a valid string", quoted(&raw)))
                })?;
                return Ok((decoded, i + 1));
            }
            _ => i += 1,
        }
    }
    Err(ScimError::invalid_filter("a string is not closed"))
}

// ---------------------------------------------------------------------------------------
// Parsing

/// Splits a schema URN prefix off a path: `urn:...:User:name.givenName` → (Core, `name.givenName`).
/// A bare extension URN gives an empty rest.
pub(crate) fn split_urn(path: &str) -> Result<(Owner, &str), String> {
    // `get` rather than indexing: a path is client input, and a byte offset inside a
    // multi-byte character is no prefix (it panics when sliced).
    let prefixed = |prefix: &str| {
        path.get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    };
    for (owner, urn) in [(Owner::Enterprise, ENTERPRISE), (Owner::Core, USER)] {
        if prefixed(urn) {
            let rest = path.get(urn.len()..).unwrap_or_default();
            if rest.is_empty() {
                return Ok((owner, rest));
            }
            if let Some(rest) = rest.strip_prefix(':') {
                return Ok((owner, rest));
            }
        }
    }
    if prefixed("urn:") {
        return Err(format!("{}: unknown schema", quoted(path)));
    }
    Ok((Owner::Core, path))
}

fn attr_ref(word: &str, inner: bool) -> Result<AttrRef, ScimError> {
    let (owner, rest) = if inner {
        (Owner::Core, word)
    } else {
        split_urn(word).map_err(ScimError::invalid_filter)?
    };
    let names: Vec<String> = rest.split('.').map(str::to_owned).collect();
    if names.iter().any(|n| n.is_empty() || n.contains(':')) || names.len() > 2 {
        return Err(ScimError::invalid_filter(format!(
            "{word} is not an attribute path"
        )));
    }
    Ok(AttrRef { owner, names })
}

/// Deepest nesting of parentheses and `not` a filter may have: the parser recurses, and a
/// hostile filter must not exhaust the stack.
const MAX_DEPTH: usize = 32;

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
    }

    fn or(&mut self, inner: bool) -> Result<Filter, ScimError> {
        let mut left = self.and(inner)?;
        while self.keyword("or") {
            self.at += 1;
            let right = self.and(inner)?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self, inner: bool) -> Result<Filter, ScimError> {
        let mut left = self.unary(inner)?;
        while self.keyword("and") {
            self.at += 1;
            let right = self.unary(inner)?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self, inner: bool) -> Result<Filter, ScimError> {
        if self.keyword("not") || self.peek() == Some(&Token::Open) {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(ScimError::invalid_filter(format!(
                    "the filter nests deeper than {MAX_DEPTH} levels"
                )));
            }
            let nested = self.nested(inner);
            self.depth -= 1;
            return nested;
        }
        self.comparison(inner)
    }

    fn nested(&mut self, inner: bool) -> Result<Filter, ScimError> {
        if self.keyword("not") {
            self.at += 1;
            if self.next() != Some(Token::Open) {
                return Err(ScimError::invalid_filter("not must be followed by ("));
            }
            let inside = self.or(inner)?;
            if self.next() != Some(Token::Close) {
                return Err(ScimError::invalid_filter("a ( is not closed"));
            }
            return Ok(Filter::Not(Box::new(inside)));
        }
        if self.peek() == Some(&Token::Open) {
            self.at += 1;
            let inside = self.or(inner)?;
            if self.next() != Some(Token::Close) {
                return Err(ScimError::invalid_filter("a ( is not closed"));
            }
            return Ok(inside);
        }
        self.comparison(inner)
    }

    fn comparison(&mut self, inner: bool) -> Result<Filter, ScimError> {
        let word = match self.next() {
            Some(Token::Word(word)) => word,
            Some(other) => {
                return Err(ScimError::invalid_filter(format!(
                    "expected an attribute, found {}",
                    describe(&other)
                )))
            }
            None => return Err(ScimError::invalid_filter("the filter ends too early")),
        };
        let attr = attr_ref(&word, inner)?;
        if self.peek() == Some(&Token::OpenBracket) {
            if inner {
                return Err(ScimError::invalid_filter("value filters cannot be nested"));
            }
            self.at += 1;
            let inside = self.or(true)?;
            if self.next() != Some(Token::CloseBracket) {
                return Err(ScimError::invalid_filter("a [ is not closed"));
            }
            return Ok(Filter::ValuePath(attr, Box::new(inside)));
        }
        let op = match self.next() {
            Some(Token::Word(op)) => op.to_ascii_lowercase(),
            Some(other) => {
                return Err(ScimError::invalid_filter(format!(
                    "expected an operator after {word}, found {}",
                    describe(&other)
                )))
            }
            None => {
                return Err(ScimError::invalid_filter(format!(
                    "expected an operator after {word}"
                )))
            }
        };
        let op = match op.as_str() {
            "pr" => return Ok(Filter::Present(attr)),
            "eq" => CompareOp::Eq,
            "ne" => CompareOp::Ne,
            "co" => CompareOp::Co,
            "sw" => CompareOp::Sw,
            "ew" => CompareOp::Ew,
            "gt" => CompareOp::Gt,
            "ge" => CompareOp::Ge,
            "lt" => CompareOp::Lt,
            "le" => CompareOp::Le,
            other => {
                return Err(ScimError::invalid_filter(format!(
                    "{other} is not an operator (eq, ne, co, sw, ew, gt, ge, lt, le, pr)"
                )))
            }
        };
        let value = match self.next() {
            Some(Token::Text(text)) => Value::String(text),
            Some(Token::Number(n)) => Value::Number(n),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("true") => Value::Bool(true),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("false") => Value::Bool(false),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("null") => Value::Null,
            Some(other) => {
                return Err(ScimError::invalid_filter(format!(
                    "expected a value after `{word}`, found {}; strings are quoted",
                    describe(&other)
                )))
            }
            None => {
                return Err(ScimError::invalid_filter(format!(
                    "expected a value after {word}"
                )))
            }
        };
        if value.as_str().is_some_and(|text| text.contains('\0')) {
            // PostgreSQL's text cannot hold one, and no stored value has one.
            return Err(ScimError::invalid_value(format!(
                "{word}: a filter value must not contain a NUL character"
            )));
        }
        Ok(Filter::Compare(attr, op, value))
    }
}

fn describe(token: &Token) -> String {
    match token {
        Token::Word(w) => format!("`{w}`"),
        Token::Text(t) => format!("{t:?}"),
        Token::Number(n) => n.to_string(),
        Token::Open => "(".to_owned(),
        Token::Close => ")".to_owned(),
        Token::OpenBracket => "[".to_owned(),
        Token::CloseBracket => "]".to_owned(),
    }
}

fn parse_tokens(tokens: Vec<Token>, inner: bool) -> Result<Filter, ScimError> {
    let mut parser = Parser {
        tokens,
        at: 0,
        depth: 0,
    };
    let filter = parser.or(inner)?;
    match parser.next() {
        None => Ok(filter),
        Some(extra) => Err(ScimError::invalid_filter(format!(
            "unexpected {} after a complete filter",
            describe(&extra)
        ))),
    }
}

/// Parses a `filter` parameter.
pub fn parse(text: &str) -> Result<Filter, ScimError> {
    if text.trim().is_empty() {
        return Err(ScimError::invalid_filter("the filter is empty"));
    }
    parse_tokens(tokenize(text)?, false)
}

/// Parses a PATCH `path`. Errors are `invalidPath` (an unparsable value filter: `invalidFilter`).
pub fn parse_path(text: &str) -> Result<PatchPath, ScimError> {
    let text = text.trim();
    let (owner, rest) = split_urn(text).map_err(ScimError::invalid_path)?;
    if rest.is_empty() {
        if owner == Owner::Enterprise {
            return Ok(PatchPath {
                owner,
                attr: None,
                filter: None,
                sub: None,
            });
        }
        return Err(ScimError::invalid_path(format!(
            "{} names no attribute",
            quoted(text)
        )));
    }
    let name_end = rest.find(['.', '[']).unwrap_or(rest.len());
    let attr = &rest[..name_end];
    let mut tail = &rest[name_end..];
    let mut filter = None;
    if let Some(inside) = tail.strip_prefix('[') {
        let close = closing_bracket(inside).ok_or_else(|| {
            ScimError::invalid_path(format!("{}: a [ is not closed", quoted(text)))
        })?;
        filter = Some(parse_tokens(tokenize(&inside[..close])?, true)?);
        tail = &inside[close + 1..];
    }
    let sub = match tail.strip_prefix('.') {
        Some(sub) => Some(sub),
        None if tail.is_empty() => None,
        None => {
            return Err(ScimError::invalid_path(format!(
                "{} is not an attribute path",
                quoted(text)
            )))
        }
    };
    let valid = |name: &str| {
        !name.is_empty() && name.chars().all(is_word_char) && !name.contains(['.', ':'])
    };
    if !valid(attr) || sub.is_some_and(|s| !valid(s)) {
        return Err(ScimError::invalid_path(format!(
            "{} is not an attribute path",
            quoted(text)
        )));
    }
    Ok(PatchPath {
        owner,
        attr: Some(attr.to_owned()),
        filter,
        sub: sub.map(str::to_owned),
    })
}

/// Where the `]` closing a value filter is, skipping quoted strings.
fn closing_bracket(text: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (at, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ']' if !quoted => return Some(at),
            _ => {}
        }
    }
    None
}

/// Checks a path names an attribute of the served schemas (for `scim.metadata`).
pub fn check_attribute_path(text: &str) -> Result<(), String> {
    let path = parse_path(text).map_err(|e| e.detail)?;
    let Some(name) = &path.attr else {
        return Ok(());
    };
    let attribute = schemas().attribute(path.owner, name).ok_or_else(|| {
        format!(
            "{}: {name} is not an attribute of the User schemas",
            quoted(text)
        )
    })?;
    if let Some(sub) = &path.sub {
        if attribute.sub(sub).is_none() {
            return Err(format!(
                "{}: {name} has no sub-attribute {sub}",
                quoted(text)
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Evaluation

/// A key of `object` matching `name` case-insensitively.
pub fn get_ci<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value)
}

/// Whether comparisons on this attribute respect case.
fn case_exact(attr: &AttrRef, parent: Option<&str>) -> bool {
    let schemas = schemas();
    let (first, rest) = match parent {
        Some(parent) => (parent, attr.names.first().map(String::as_str)),
        None => (
            attr.names.first().map_or("", String::as_str),
            attr.names.get(1).map(String::as_str),
        ),
    };
    if parent.is_none() && first.eq_ignore_ascii_case("id") {
        return true;
    }
    let Some(attribute) = schemas.attribute(attr.owner, first) else {
        return false;
    };
    match rest {
        Some(sub) => attribute.sub(sub).is_some_and(|s| s.case_exact),
        None => attribute.case_exact,
    }
}

/// The values `attr` reaches in `object`: every value of a multi-valued attribute, and of a
/// complex multi-valued attribute's items without a sub-attribute, their `value`.
fn values<'a>(object: &'a Map<String, Value>, attr: &AttrRef, inner: bool) -> Vec<&'a Value> {
    let base = if !inner && attr.owner == Owner::Enterprise {
        match get_ci(object, ENTERPRISE) {
            Some(Value::Object(extension)) => extension,
            _ => return Vec::new(),
        }
    } else {
        object
    };
    let mut found = Vec::new();
    let Some(first) = attr.names.first().and_then(|n| get_ci(base, n)) else {
        return found;
    };
    let items: Vec<&Value> = match first {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    for item in items {
        match (attr.names.get(1), item) {
            (Some(sub), Value::Object(fields)) => {
                if let Some(value) = get_ci(fields, sub) {
                    found.push(value);
                }
            }
            (Some(_), _) => {}
            (None, Value::Object(fields)) if first.is_array() => {
                if let Some(value) = get_ci(fields, "value") {
                    found.push(value);
                }
            }
            (None, value) => found.push(value),
        }
    }
    found
}

fn compare(op: CompareOp, actual: &Value, expected: &Value, exact: bool) -> bool {
    let fold = |s: &str| {
        if exact {
            s.to_owned()
        } else {
            s.to_lowercase()
        }
    };
    match (actual, expected) {
        (Value::String(a), Value::String(e)) => {
            let (a, e) = (fold(a), fold(e));
            match op {
                CompareOp::Eq => a == e,
                CompareOp::Ne => a != e,
                CompareOp::Co => a.contains(&e),
                CompareOp::Sw => a.starts_with(&e),
                CompareOp::Ew => a.ends_with(&e),
                CompareOp::Gt => a.cmp(&e) == Ordering::Greater,
                CompareOp::Ge => a.cmp(&e) != Ordering::Less,
                CompareOp::Lt => a.cmp(&e) == Ordering::Less,
                CompareOp::Le => a.cmp(&e) != Ordering::Greater,
            }
        }
        (Value::Number(a), Value::Number(e)) => {
            let (Some(a), Some(e)) = (a.as_f64(), e.as_f64()) else {
                return false;
            };
            match op {
                CompareOp::Eq => a == e,
                CompareOp::Ne => a != e,
                CompareOp::Gt => a > e,
                CompareOp::Ge => a >= e,
                CompareOp::Lt => a < e,
                CompareOp::Le => a <= e,
                _ => false,
            }
        }
        (Value::Bool(a), Value::Bool(e)) => match op {
            CompareOp::Eq => a == e,
            CompareOp::Ne => a != e,
            _ => false,
        },
        _ => op == CompareOp::Ne,
    }
}

fn present(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(fields) => !fields.is_empty(),
        _ => true,
    }
}

/// Whether `object` (a resource, or with `parent` the item of that multi-valued attribute)
/// matches.
fn eval(filter: &Filter, object: &Map<String, Value>, parent: Option<&str>) -> bool {
    let inner = parent.is_some();
    match filter {
        Filter::And(a, b) => eval(a, object, parent) && eval(b, object, parent),
        Filter::Or(a, b) => eval(a, object, parent) || eval(b, object, parent),
        Filter::Not(a) => !eval(a, object, parent),
        Filter::Present(attr) => values(object, attr, inner).into_iter().any(present),
        Filter::Compare(attr, op, expected) => {
            let found = values(object, attr, inner);
            if expected.is_null() {
                let any = found.iter().any(|v| present(v));
                return match op {
                    CompareOp::Eq => !any,
                    CompareOp::Ne => any,
                    _ => false,
                };
            }
            let exact = case_exact(attr, parent);
            if *op == CompareOp::Ne {
                return !found
                    .iter()
                    .any(|v| compare(CompareOp::Eq, v, expected, exact));
            }
            found.iter().any(|v| compare(*op, v, expected, exact))
        }
        Filter::ValuePath(attr, inside) => {
            let base = if attr.owner == Owner::Enterprise {
                match get_ci(object, ENTERPRISE) {
                    Some(Value::Object(extension)) => extension,
                    _ => return false,
                }
            } else {
                object
            };
            let name = attr.names.first().map_or("", String::as_str);
            match get_ci(base, name) {
                Some(Value::Array(items)) => items.iter().any(|item| match item {
                    Value::Object(fields) => eval(inside, fields, Some(name)),
                    _ => false,
                }),
                Some(Value::Object(fields)) => eval(inside, fields, Some(name)),
                _ => false,
            }
        }
    }
}

/// Whether a resource matches a filter.
pub fn matches(filter: &Filter, resource: &Map<String, Value>) -> bool {
    eval(filter, resource, None)
}

/// Whether an item of the multi-valued attribute `attribute` matches a value filter.
pub fn item_matches(filter: &Filter, attribute: &str, item: &Map<String, Value>) -> bool {
    eval(filter, item, Some(attribute))
}

/// A value the filter's top-level `and` chain requires `attribute` (a core attribute) to
/// equal, to narrow the rows to read.
pub fn required_eq<'a>(filter: &'a Filter, attribute: &str) -> Option<&'a str> {
    match filter {
        Filter::Compare(attr, CompareOp::Eq, Value::String(value))
            if attr.owner == Owner::Core
                && attr.names.len() == 1
                && attr.names[0].eq_ignore_ascii_case(attribute) =>
        {
            Some(value)
        }
        Filter::And(a, b) => required_eq(a, attribute).or_else(|| required_eq(b, attribute)),
        _ => None,
    }
}

/// The sub-attribute values an `eq` chain pins (`type eq "work" and primary eq true`), to
/// build the item a PATCH creates when none matches.
pub fn pinned_values(filter: &Filter) -> Option<Map<String, Value>> {
    match filter {
        Filter::Compare(attr, CompareOp::Eq, value)
            if attr.names.len() == 1 && !value.is_null() =>
        {
            let mut pinned = Map::new();
            pinned.insert(attr.names[0].clone(), value.clone());
            Some(pinned)
        }
        Filter::And(a, b) => {
            let mut pinned = pinned_values(a)?;
            pinned.extend(pinned_values(b)?);
            Some(pinned)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resource() -> Map<String, Value> {
        match json!({
            "id": "2819c223-7f76-453a-919d-413861904646",
            "userName": "Bjensen@example.com",
            "externalId": "E-1",
            "name": {"familyName": "Jensen", "givenName": "Barbara"},
            "active": true,
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@jensen.org", "type": "home"}
            ],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Tour Operations"},
            "meta": {"lastModified": "2026-05-13T04:42:34Z"}
        }) {
            Value::Object(fields) => fields,
            _ => unreachable!(),
        }
    }

    fn check(text: &str) -> bool {
        matches(
            &parse(text).unwrap_or_else(|e| panic!("{text}: {e}")),
            &resource(),
        )
    }

    #[test]
    fn the_filters_identity_providers_send_match_as_the_rfc_says() {
        assert!(check(r#"userName eq "bjensen@example.com""#));
        assert!(check(r#"USERNAME Eq "BJENSEN@EXAMPLE.COM""#));
        assert!(check(r#"externalId eq "E-1""#));
        assert!(!check(r#"externalId eq "e-1""#), "externalId is caseExact");
        assert!(check(r#"emails.value eq "babs@jensen.org""#));
        assert!(check(r#"emails[type eq "work" and value co "example"]"#));
        assert!(check(r#"id eq "2819c223-7f76-453a-919d-413861904646""#));
        assert!(check(
            r#"userName eq "bjensen@example.com" and active eq true"#
        ));
        assert!(check(r#"name.familyName sw "J" or title pr"#));
        assert!(check(
            r#"not (title pr) and (active eq false or name.givenName ew "ara")"#
        ));
        assert!(check(r#"meta.lastModified gt "2026-01-01T00:00:00Z""#));
        assert!(check(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "tour operations""#
        ));
        assert!(!check(r#"userName eq "other@example.com""#));
        assert!(check(r#"title eq null"#));
    }

    #[test]
    fn malformed_filters_are_invalid_filter_errors() {
        for bad in [
            "",
            "userName",
            r#"userName eq"#,
            r#"userName equals "x""#,
            r#"userName eq "x" and"#,
            r#"userName eq x"#,
            r#"(userName eq "x""#,
            r#"emails[type eq "work""#,
            r#"userName eq "unterminated"#,
            r#"urn:unknown:thing eq "x""#,
            r#"userName eq "x" )"#,
            &format!("{}userName pr{}", "(".repeat(100_000), ")".repeat(100_000)),
            &"not (".repeat(100_000),
            &vec![r#"title pr"#; 100_000].join(" and "),
        ] {
            let error = parse(bad).expect_err(bad);
            assert_eq!(error.scim_type, Some("invalidFilter"), "{bad}");
            assert_eq!(error.status, 400);
        }
    }

    #[test]
    fn the_narrowing_value_is_found_in_an_and_chain_only() {
        let filter = parse(r#"active eq true and userName eq "a@x.com""#).unwrap();
        assert_eq!(required_eq(&filter, "userName"), Some("a@x.com"));
        let filter = parse(r#"active eq true or userName eq "a@x.com""#).unwrap();
        assert_eq!(required_eq(&filter, "userName"), None);
    }

    #[test]
    fn patch_paths_parse_with_and_without_urns_filters_and_sub_attributes() {
        let path = parse_path(r#"emails[type eq "work"].value"#).unwrap();
        assert_eq!(path.attr.as_deref(), Some("emails"));
        assert_eq!(path.sub.as_deref(), Some("value"));
        assert_eq!(
            pinned_values(path.filter.as_ref().unwrap()),
            Some(match json!({"type": "work"}) {
                Value::Object(m) => m,
                _ => unreachable!(),
            })
        );
        let path = parse_path("name.givenName").unwrap();
        assert_eq!(
            (path.attr.as_deref(), path.sub.as_deref()),
            (Some("name"), Some("givenName"))
        );
        let path =
            parse_path("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value")
                .unwrap();
        assert_eq!(path.owner, Owner::Enterprise);
        assert_eq!(path.attr.as_deref(), Some("manager"));
        let path =
            parse_path("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User").unwrap();
        assert_eq!((path.owner, path.attr), (Owner::Enterprise, None));
        let path = parse_path("urn:ietf:params:scim:schemas:core:2.0:User:userName").unwrap();
        assert_eq!(path.attr.as_deref(), Some("userName"));
        for bad in ["", "emails[type eq", "a.b.c", "urn:x:y:z", "emails]"] {
            assert!(parse_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn metadata_paths_must_name_served_attributes() {
        assert!(check_attribute_path("externalId").is_ok());
        assert!(check_attribute_path(r#"emails[type eq "work"].value"#).is_ok());
        assert!(check_attribute_path("name.nickname").is_err());
        assert!(check_attribute_path("favouriteColour").is_err());
    }
}
