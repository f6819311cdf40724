//! The documentation against the code, so they cannot drift apart: every key of
//! config/default.toml is in docs/configuration.md with its variable and default, the README
//! and the pages under docs/ and deploy/ name no key, variable, metric or table that does not
//! exist, their relative links lead to files and headings that exist, the README links every
//! page and names every command and only options the command line has, every metric is
//! described, the Prometheus rules parse and name only metrics the process exports, every
//! alert has unit tests, the PrometheusRule carries the rules, and the Grafana dashboard
//! queries only metrics the process exports and shows every one of them.

use std::collections::{BTreeMap, BTreeSet};

use invite_sync::config::{env_var_name, DEFAULTS_TOML};
use invite_sync::metrics::{
    ActionLabels, CallLabels, CategoryLabel, EndpointLabel, OperationLabel, OutcomeLabel,
};

use crate::common::{read, repo_path, yaml};

const CONFIGURATION_MD: &str = "docs/configuration.md";
const OPERATIONS_MD: &str = "docs/operations.md";
const SIMULATOR_MD: &str = "docs/simulator.md";
const README_MD: &str = "README.md";
const ALERTS_YAML: &str = "deploy/prometheus/alerts.yaml";
const ALERTS_TEST_YAML: &str = "deploy/prometheus/alerts.test.yaml";
const PROMETHEUS_RULE_YAML: &str = "deploy/prometheus/prometheusrule.yaml";
/// Series of Prometheus itself that the dashboard may query besides invite-sync's own.
const PROMETHEUS_SERIES: [&str; 1] = ["up"];

/// Every Markdown file under docs/, by its path relative to the repository.
fn docs() -> Vec<(String, String)> {
    let dir = repo_path("docs");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("docs/ cannot be listed: {e}"))
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".md"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "docs/ holds no Markdown file");
    names
        .into_iter()
        .map(|name| {
            let relative = format!("docs/{name}");
            let text = read(&relative);
            (relative, text)
        })
        .collect()
}

/// Every Markdown file a reader is sent to: the README, every page under docs/ and under
/// deploy/, by its path relative to the repository, README.md first.
fn documents() -> Vec<(String, String)> {
    let mut found = vec![(README_MD.to_owned(), read(README_MD))];
    let mut deploy = Vec::new();
    markdown_under(&repo_path("deploy"), &mut deploy);
    deploy.sort();
    found.extend(deploy.into_iter().map(|relative| {
        let text = read(&relative);
        (relative, text)
    }));
    found.extend(docs());
    found
}

/// Every `.md` file under `dir`, its subfolders included, relative to the repository.
fn markdown_under(dir: &std::path::Path, found: &mut Vec<String>) {
    let root = repo_path("");
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{dir:?} cannot be listed: {e}"))
    {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            markdown_under(&path, found);
        } else if path.extension().and_then(|e| e.to_str()) == Some("md") {
            let relative = path.strip_prefix(&root).expect("under the repository");
            found.push(relative.to_string_lossy().into_owned());
        }
    }
}

/// A key of config/default.toml.
#[derive(Debug)]
struct Key {
    /// `section.key`.
    dotted: String,
    /// The value exactly as default.toml writes it; `None` for an optional key, which
    /// default.toml shows commented out (`# key = example`).
    default: Option<String>,
}

/// The keys of config/default.toml, in file order: those it sets, read with the `toml`
/// crate, and the optional ones it shows commented out.
fn default_keys() -> Vec<Key> {
    let parsed: toml::Table = toml::from_str(DEFAULTS_TOML).expect("config/default.toml parses");
    let mut keys = Vec::new();
    let mut section: Option<String> = None;
    for line in DEFAULTS_TOML.lines() {
        let line = line.trim_end();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.to_owned());
            continue;
        }
        let Some(section) = &section else { continue };
        let (commented, assignment) = match line.strip_prefix("# ") {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let Some((name, value)) = assignment.split_once(" = ") else {
            continue;
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            continue;
        }
        let set = parsed
            .get(section)
            .and_then(toml::Value::as_table)
            .and_then(|table| table.get(name));
        let default = if commented {
            assert!(
                set.is_none(),
                "{section}.{name} is both set and shown commented out in config/default.toml"
            );
            None
        } else {
            let set = set.unwrap_or_else(|| panic!("{section}.{name} is not parsed as set"));
            let written: toml::Table = toml::from_str(&format!("value = {value}"))
                .unwrap_or_else(|e| panic!("{section}.{name}: {value} is not a TOML value: {e}"));
            assert_eq!(
                written.get("value"),
                Some(set),
                "{section}.{name}: the line does not hold the parsed value"
            );
            Some(value.to_owned())
        };
        keys.push(Key {
            dotted: format!("{section}.{name}"),
            default,
        });
    }
    let found: BTreeSet<&str> = keys.iter().map(|k| k.dotted.as_str()).collect();
    for (section, table) in &parsed {
        let table = table.as_table().expect("every top-level item is a section");
        for name in table.keys() {
            assert!(
                found.contains(format!("{section}.{name}").as_str()),
                "{section}.{name} is set in config/default.toml on a line this test cannot read"
            );
        }
    }
    assert!(keys.len() > 20, "too few keys read: {keys:?}");
    keys
}

fn sections() -> BTreeSet<String> {
    let parsed: toml::Table = toml::from_str(DEFAULTS_TOML).expect("config/default.toml parses");
    parsed.keys().cloned().collect()
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every `section.key` the text names: a known section, a dot and a lower-case name, not
/// part of a longer dotted word, a path or a host name (`api.clerk.com`, `invite-sync.service`).
fn dotted_keys_in(text: &str, sections: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for section in sections {
        let prefix = format!("{section}.");
        for (at, _) in text.match_indices(&prefix) {
            let before = text[..at].chars().next_back();
            if before.is_some_and(|c| is_word(c) || matches!(c, '.' | '-' | '/' | '@')) {
                continue;
            }
            let rest = &text[at + prefix.len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let after = rest[name.len()..].chars().next();
            if name.is_empty()
                || after.is_some_and(|c| {
                    is_word(c) || (c == '.' && rest[name.len() + 1..].starts_with(is_word))
                })
            {
                continue;
            }
            found.insert(format!("{section}.{name}"));
        }
    }
    found
}

/// Every `INVITE_SYNC__...` variable the text names.
fn variables_in(text: &str) -> BTreeSet<String> {
    text.match_indices("INVITE_SYNC__")
        .filter(|(at, _)| !text[..*at].ends_with(is_word))
        .map(|(at, _)| {
            text[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect()
}

/// The families of the process's metrics exposition: name → type.
///
/// A labelled family is printed only once it has a series, so each is first given one with
/// label values the service itself uses (at zero: nothing is counted). Every family that
/// src/metrics.rs registers must then be in the exposition.
fn metric_families() -> BTreeMap<String, String> {
    let metrics = invite_sync::metrics::metrics();
    let label = |value: &str| value.to_owned();
    drop(metrics.cycles.get_or_create(&OutcomeLabel {
        outcome: label("succeeded"),
    }));
    drop(metrics.actions.get_or_create(&ActionLabels {
        kind: label("create"),
        outcome: label("created"),
    }));
    drop(metrics.drift.get_or_create(&CategoryLabel {
        category: label("in_sync"),
    }));
    drop(metrics.budget_left.get_or_create(&EndpointLabel {
        endpoint: label("create_invitation"),
    }));
    drop(metrics.clerk_calls.get_or_create(&CallLabels {
        operation: label("list_invitations"),
        status: label("200"),
    }));
    drop(metrics.clerk_call_duration.get_or_create(&OperationLabel {
        operation: label("list_invitations"),
    }));
    let exposition = metrics.encode();
    let families: BTreeMap<String, String> = exposition
        .lines()
        .filter_map(|line| {
            let mut parts = line.strip_prefix("# TYPE ")?.split_whitespace();
            Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
        })
        .collect();
    let registered = read("src/metrics.rs").matches("registry.register(").count();
    assert_eq!(
        families.len(),
        registered,
        "src/metrics.rs registers {registered} families but the exposition shows {}: \
         give a new labelled family a series above\n{exposition}",
        families.len()
    );
    families
}

/// The sample names a family is queried by.
fn sample_names(family: &str, kind: &str) -> Vec<String> {
    match kind {
        "counter" => vec![format!("{family}_total")],
        "histogram" => ["_bucket", "_sum", "_count"]
            .iter()
            .map(|suffix| format!("{family}{suffix}"))
            .collect(),
        _ => vec![family.to_owned()],
    }
}

/// The family a sample name belongs to, if the process exports it.
fn family_of<'a>(sample: &str, families: &'a BTreeMap<String, String>) -> Option<&'a str> {
    families.iter().find_map(|(family, kind)| {
        sample_names(family, kind)
            .iter()
            .any(|name| name == sample)
            .then_some(family.as_str())
    })
}

/// Every `invite_sync_...` identifier in the text.
pub(crate) fn invite_sync_names_in(text: &str) -> BTreeSet<String> {
    text.match_indices("invite_sync_")
        .filter(|(at, _)| !text[..*at].ends_with(is_word))
        .map(|(at, _)| {
            text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect::<String>()
        })
        .filter(|name| name.len() > "invite_sync_".len())
        .collect()
}

/// The cells of a Markdown table row, trimmed; `None` for any other line.
fn table_cells(line: &str) -> Option<Vec<&str>> {
    let inner = line.trim().strip_prefix('|')?.strip_suffix('|')?;
    Some(inner.split(" | ").map(str::trim).collect())
}

#[test]
fn configuration_md_documents_every_key_with_its_variable_and_default() {
    let doc = read(CONFIGURATION_MD);
    let mut missing = Vec::new();
    for key in default_keys() {
        let mention = format!("`{}`", key.dotted);
        let variable = env_var_name(&key.dotted);
        // | `section.key` | `default` or "unset ..." | the variable | what it does |
        let row = doc
            .lines()
            .filter_map(table_cells)
            .find(|cells| cells.first() == Some(&mention.as_str()));
        let Some(cells) = row else {
            missing.push(format!("no table row starts with {mention}"));
            continue;
        };
        let default_cell = cells.get(1).copied().unwrap_or_default();
        match &key.default {
            Some(default) if default_cell != format!("`{default}`") => missing.push(format!(
                "{mention}: the default cell is {default_cell:?}, not `{default}`"
            )),
            None if !default_cell.starts_with("unset") => missing.push(format!(
                "{mention} has no default, but its default cell is {default_cell:?}"
            )),
            _ => {}
        }
        if !cells.get(2).is_some_and(|cell| cell.contains(&variable)) {
            missing.push(format!(
                "{mention}: the variable cell does not name {variable}"
            ));
        }
        if cells.get(3).is_none_or(|cell| cell.is_empty()) {
            missing.push(format!("{mention}: no description"));
        }
    }
    assert!(
        missing.is_empty(),
        "{CONFIGURATION_MD} is behind config/default.toml:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn the_docs_name_no_key_or_variable_that_does_not_exist() {
    let keys: BTreeSet<String> = default_keys().into_iter().map(|k| k.dotted).collect();
    let variables: BTreeSet<String> = keys.iter().map(|k| env_var_name(k)).collect();
    let sections = sections();
    let mut unknown = Vec::new();
    for (path, text) in documents() {
        for key in dotted_keys_in(&text, &sections) {
            if !keys.contains(&key) {
                unknown.push(format!("{path}: {key}"));
            }
        }
        for variable in variables_in(&text) {
            if variable != "INVITE_SYNC__SECTION__KEY" && !variables.contains(&variable) {
                unknown.push(format!("{path}: {variable}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "the docs name keys or variables config/default.toml does not have:\n  {}",
        unknown.join("\n  ")
    );
}

#[test]
fn the_key_scanner_skips_host_names_and_file_names() {
    let sections: BTreeSet<String> = ["clerk", "sync", "log"].map(str::to_owned).into();
    let found = dotted_keys_in(
        "`sync.dry_run`, api.clerk.com, invite-sync.service, /v1/log.txt, sync.target. \
         log.format, clerk.secret_key_file",
        &sections,
    );
    let expected: BTreeSet<String> = [
        "sync.dry_run",
        "sync.target",
        "log.format",
        "clerk.secret_key_file",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(found, expected);
}

#[test]
fn operations_md_describes_every_metric_with_its_type() {
    let doc = read(OPERATIONS_MD);
    let mut missing = Vec::new();
    for (family, kind) in metric_families() {
        let name = sample_names(&family, &kind)
            .into_iter()
            .next()
            .expect("a family has a sample name");
        let shown = if kind == "histogram" {
            family.clone()
        } else {
            name
        };
        let described = doc
            .lines()
            .any(|line| line.contains(&format!("`{shown}`")) && line.contains(&kind));
        if !described {
            missing.push(format!("`{shown}` ({kind})"));
        }
    }
    assert!(
        missing.is_empty(),
        "{OPERATIONS_MD} has no table row for:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn the_docs_name_only_metrics_and_tables_that_exist() {
    let families = metric_families();
    let mut schema = String::new();
    for entry in std::fs::read_dir(repo_path("migrations")).expect("migrations/ is listed") {
        let path = entry.expect("a migration entry").path();
        schema.push_str(&std::fs::read_to_string(&path).expect("a migration is read"));
    }
    let schema_names = invite_sync_names_in(&schema);
    let mut unknown = Vec::new();
    for (path, text) in documents() {
        for name in invite_sync_names_in(&text) {
            let known = families.contains_key(&name)
                || family_of(&name, &families).is_some()
                || schema_names.contains(&name)
                || name == invite_sync::commands::demo::DATABASE;
            if !known {
                unknown.push(format!("{path}: {name}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "the docs name metrics or tables that do not exist:\n  {}",
        unknown.join("\n  ")
    );
}

/// The lines of a Markdown text outside fenced code blocks, with their numbers (from 1).
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for (at, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            lines.push((at + 1, line));
        }
    }
    lines
}

/// The anchors of a Markdown text's headings, as GitHub makes them: lower case, punctuation
/// dropped, spaces made hyphens, a repeated one numbered.
fn anchors_of(text: &str) -> BTreeSet<String> {
    let mut anchors = BTreeSet::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (_, line) in prose_lines(text) {
        let Some(title) = line.strip_prefix('#') else {
            continue;
        };
        let title = title.trim_start_matches('#');
        if !title.starts_with(' ') {
            continue;
        }
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let count = seen.entry(slug.clone()).or_insert(0);
        anchors.insert(if *count == 0 {
            slug.clone()
        } else {
            format!("{slug}-{count}")
        });
        *count += 1;
    }
    anchors
}

/// The targets of a text's Markdown links outside code blocks, with their line numbers.
fn link_targets(text: &str) -> Vec<(usize, String)> {
    let mut targets = Vec::new();
    for (number, line) in prose_lines(text) {
        for (at, _) in line.match_indices("](") {
            let rest = &line[at + 2..];
            if let Some(end) = rest.find(')') {
                targets.push((number, rest[..end].to_owned()));
            }
        }
    }
    targets
}

/// `base/relative` with `.` and `..` resolved, relative to the repository.
fn resolve(base: &std::path::Path, relative: &str) -> std::path::PathBuf {
    let mut path = base.to_path_buf();
    for part in relative.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                path.pop();
            }
            part => path.push(part),
        }
    }
    path
}

#[test]
fn every_relative_link_of_the_docs_leads_to_a_file_and_heading_that_exist() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for (path, text) in documents() {
        let dir = std::path::Path::new(&path)
            .parent()
            .unwrap_or_else(|| std::path::Path::new(""))
            .to_path_buf();
        for (line, target) in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (file, anchor) = match target.split_once('#') {
                Some((file, anchor)) => (file, Some(anchor)),
                None => (target.as_str(), None),
            };
            let linked = if file.is_empty() {
                std::path::PathBuf::from(&path)
            } else {
                resolve(&dir, file)
            };
            let linked_text = linked.to_string_lossy().into_owned();
            if !repo_path(&linked_text).exists() {
                broken.push(format!("{path}:{line}: {target}: no file {linked_text}"));
                continue;
            }
            if let Some(anchor) = anchor {
                if !linked_text.ends_with(".md") {
                    continue;
                }
                if !anchors_of(&read(&linked_text)).contains(anchor) {
                    broken.push(format!(
                        "{path}:{line}: {target}: {linked_text} has no heading #{anchor}"
                    ));
                }
            }
        }
    }
    assert!(checked > 50, "too few links found: {checked}");
    assert!(
        broken.is_empty(),
        "links lead nowhere:\n  {}",
        broken.join("\n  ")
    );
}

#[test]
fn the_readme_links_every_document_under_docs_and_deploy() {
    let readme = read(README_MD);
    let linked: BTreeSet<String> = link_targets(&readme)
        .into_iter()
        .filter(|(_, target)| !target.contains("://"))
        .map(|(_, target)| {
            let file = target.split('#').next().unwrap_or_default();
            resolve(std::path::Path::new(""), file)
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let mut unlinked = Vec::new();
    for (path, _) in documents().into_iter().skip(1) {
        if !linked.contains(&path) {
            unlinked.push(path);
        }
    }
    assert!(
        unlinked.is_empty(),
        "{README_MD} links none of: {unlinked:?}"
    );
}

/// An invocation the text shows: a subcommand (and its own subcommand) and the long options
/// after it, as words; `None` when the code is no invocation of invite-sync.
fn invocation<'a>(code: &'a str, cli: &clap::Command) -> Option<(Vec<&'a str>, Vec<&'a str>)> {
    let mut words = code.split_whitespace().peekable();
    let named = words.peek() == Some(&"invite-sync");
    if named {
        words.next();
    }
    let words: Vec<&str> = words.collect();
    let first = *words.first()?;
    let sub = cli.find_subcommand(first);
    // A bare word such as `status` or `plan` is prose, not an invocation.
    if !named && (words.len() < 2 || sub.is_none()) {
        return None;
    }
    let mut path = vec![first];
    let mut rest = &words[1..];
    if let (Some(sub), Some(next)) = (sub, rest.first()) {
        if sub.has_subcommands() && !next.starts_with('-') {
            path.push(next);
            rest = &rest[1..];
        }
    }
    if !named && path.len() == 1 && !rest.first().is_some_and(|w| w.starts_with("--")) {
        return None;
    }
    let options = rest
        .iter()
        .map(|word| word.trim_matches(|c| c == '[' || c == ']'))
        .filter(|word| word.starts_with("--"))
        .map(|word| word.split('=').next().unwrap_or(word))
        .collect();
    Some((path, options))
}

/// The inline code of a text outside code blocks, Markdown tables' `\|` read as `|`, and the
/// lines of its shell blocks.
fn code_of(text: &str) -> Vec<String> {
    let mut code = Vec::new();
    for (_, line) in prose_lines(text) {
        let line = line.replace("\\|", "|");
        code.extend(line.split('`').skip(1).step_by(2).map(str::to_owned));
    }
    let mut in_shell = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            in_shell = trimmed == "```sh";
            continue;
        }
        if in_shell {
            code.push(line.split('#').next().unwrap_or_default().to_owned());
        }
    }
    code
}

#[test]
fn the_readme_names_every_command_and_only_commands_options_and_scripts_that_exist() {
    use clap::CommandFactory;
    let cli = invite_sync::cli::Cli::command();
    let global: BTreeSet<String> = cli
        .get_arguments()
        .filter_map(|arg| arg.get_long().map(str::to_owned))
        .collect();
    let readme = read(README_MD);
    let mut problems = Vec::new();
    let mut named = BTreeSet::new();
    for code in code_of(&readme) {
        // `cargo run --release -- demo`: the binary's arguments follow `--`.
        let code = match code.split_once("cargo run") {
            Some((_, run)) => run.split_once(" -- ").map_or("", |(_, args)| args),
            None => code.as_str(),
        };
        for word in code.split_whitespace() {
            if word.starts_with("scripts/") && !repo_path(word).is_file() {
                problems.push(format!("{word}: no such script"));
            }
        }
        let Some((path, options)) = invocation(code, &cli) else {
            continue;
        };
        let mut command = &cli;
        for name in &path {
            match command.find_subcommand(name) {
                Some(sub) => command = sub,
                None => {
                    problems.push(format!("`{code}`: invite-sync has no command {name}"));
                    break;
                }
            }
        }
        if command.get_name() != path.last().copied().unwrap_or_default() {
            continue;
        }
        named.insert(path.join(" "));
        for option in options {
            let long = option.trim_start_matches('-');
            let known = global.contains(long)
                || command
                    .get_arguments()
                    .any(|arg| arg.get_long() == Some(long));
            if !known {
                problems.push(format!(
                    "`{code}`: {} has no option {option}",
                    path.join(" ")
                ));
            }
        }
    }
    for sub in cli.get_subcommands() {
        let names: Vec<String> = if sub.has_subcommands() {
            sub.get_subcommands()
                .map(|inner| format!("{} {}", sub.get_name(), inner.get_name()))
                .collect()
        } else {
            vec![sub.get_name().to_owned()]
        };
        for name in names {
            if !named.contains(&name) {
                problems.push(format!(
                    "the command `invite-sync {name}` is not in {README_MD}"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{README_MD} and the command line disagree:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_alert_rules_parse_and_name_only_exported_metrics() {
    let text = read(ALERTS_YAML);
    let root: serde_yaml::Value = serde_yaml::from_str(&text).expect("alerts.yaml is YAML");
    let groups = root["groups"]
        .as_sequence()
        .expect("alerts.yaml has a list of groups");
    assert!(!groups.is_empty(), "alerts.yaml has no group");
    let families = metric_families();
    let str_at = |value: &serde_yaml::Value, path: &[&str]| -> Option<String> {
        let mut node = value;
        for step in path {
            node = node.get(step)?;
        }
        match node {
            serde_yaml::Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
            _ => None,
        }
    };
    let mut alerts = BTreeSet::new();
    let mut problems = Vec::new();
    for group in groups {
        let group_name = str_at(group, &["name"]).unwrap_or_default();
        assert!(!group_name.is_empty(), "a group has no name");
        let rules = group["rules"]
            .as_sequence()
            .unwrap_or_else(|| panic!("group {group_name} has no list of rules"));
        assert!(!rules.is_empty(), "group {group_name} has no rule");
        for rule in rules {
            let Some(alert) = str_at(rule, &["alert"]) else {
                problems.push(format!("a rule of {group_name} has no alert name"));
                continue;
            };
            if !alerts.insert(alert.clone()) {
                problems.push(format!("{alert} appears twice"));
            }
            for path in [
                &["expr"][..],
                &["for"],
                &["labels", "severity"],
                &["annotations", "summary"],
                &["annotations", "description"],
            ] {
                if str_at(rule, path).is_none() {
                    problems.push(format!("{alert} has no {}", path.join(".")));
                }
            }
            let expr = str_at(rule, &["expr"]).unwrap_or_default();
            let names = invite_sync_names_in(&expr);
            if names.is_empty() {
                problems.push(format!(
                    "{alert}: the expression names no invite_sync_ metric"
                ));
            }
            for name in names {
                if family_of(&name, &families).is_none() {
                    problems.push(format!(
                        "{alert}: {name} is not in the metrics exposition (families: {})",
                        families.keys().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
    }
    for required in [
        "invite_sync_last_success_timestamp_seconds",
        "invite_sync_held_revocations",
        "invite_sync_backlog_eta_seconds",
        "invite_sync_clerk_calls_total",
    ] {
        if !invite_sync_names_in(&text).contains(required) {
            problems.push(format!("no rule watches {required}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{ALERTS_YAML}:\n  {}",
        problems.join("\n  ")
    );
}

/// The alert names of alerts.yaml.
fn alert_names() -> BTreeSet<String> {
    let root = yaml(ALERTS_YAML);
    root["groups"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|group| group["rules"].as_sequence().into_iter().flatten())
        .filter_map(|rule| rule["alert"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn every_alert_has_a_unit_test_that_fires_it_and_one_that_keeps_it_silent() {
    let root = yaml(ALERTS_TEST_YAML);
    let rule_files: Vec<&str> = root["rule_files"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(serde_yaml::Value::as_str)
        .collect();
    assert_eq!(
        rule_files,
        ["alerts.yaml"],
        "{ALERTS_TEST_YAML} must test the shipped rules"
    );
    let mut fired = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for test in root["tests"].as_sequence().into_iter().flatten() {
        for case in test["alert_rule_test"].as_sequence().into_iter().flatten() {
            let Some(alert) = case["alertname"].as_str() else {
                continue;
            };
            let expected = case["exp_alerts"]
                .as_sequence()
                .map_or(0, |alerts| alerts.len());
            if expected > 0 {
                fired.insert(alert.to_owned());
            } else {
                silent.insert(alert.to_owned());
            }
        }
    }
    let mut missing = Vec::new();
    for alert in alert_names() {
        if !fired.contains(&alert) {
            missing.push(format!("{alert}: no test expects it to fire"));
        }
        if !silent.contains(&alert) {
            missing.push(format!("{alert}: no test expects it to stay silent"));
        }
    }
    for alert in fired.union(&silent) {
        if !alert_names().contains(alert) {
            missing.push(format!("{alert} is tested but not in {ALERTS_YAML}"));
        }
    }
    assert!(
        missing.is_empty(),
        "{ALERTS_TEST_YAML}:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn the_prometheus_rule_carries_exactly_the_alert_rules() {
    let rule = yaml(PROMETHEUS_RULE_YAML);
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["kind"], "PrometheusRule");
    assert!(
        rule["metadata"]["name"]
            .as_str()
            .is_some_and(|n| !n.is_empty()),
        "{PROMETHEUS_RULE_YAML} has no metadata.name"
    );
    assert!(
        rule["spec"] == yaml(ALERTS_YAML),
        "{PROMETHEUS_RULE_YAML}'s spec differs from {ALERTS_YAML}: run scripts/gen-prometheusrule"
    );
}

/// Every metric name the dashboard's queries and variables use: `invite_sync_...` sample
/// names, and Prometheus' own series in [`PROMETHEUS_SERIES`].
#[test]
fn the_dashboard_queries_only_exported_metrics_and_shows_every_one() {
    let families = metric_families();
    let mut problems = Vec::new();
    let mut shown = BTreeSet::new();
    let mut check = |place: String, expr: &str| {
        let names = invite_sync_names_in(expr);
        let own = PROMETHEUS_SERIES.iter().any(|series| {
            expr.match_indices(series).any(|(at, _)| {
                !expr[..at].ends_with(is_word) && !expr[at + series.len()..].starts_with(is_word)
            })
        });
        if names.is_empty() && !own {
            problems.push(format!("{place}: {expr:?} names no metric"));
        }
        for name in names {
            match family_of(&name, &families) {
                Some(family) => {
                    shown.insert(family.to_owned());
                }
                None => problems.push(format!(
                    "{place}: {name} is not in the metrics exposition (served: {})",
                    families
                        .iter()
                        .flat_map(|(family, kind)| sample_names(family, kind))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }
    };
    for query in crate::dashboard::queries() {
        check(query.place(), &query.expr);
    }
    for definition in crate::dashboard::variable_queries() {
        check(format!("variable {definition:?}"), &definition);
    }
    // Names in titles or descriptions must exist too.
    for name in invite_sync_names_in(&crate::dashboard::text()) {
        if family_of(&name, &families).is_none() && !families.contains_key(&name) {
            problems.push(format!("{name} is named in the dashboard but not exported"));
        }
    }
    for family in families.keys() {
        if !shown.contains(family) {
            problems.push(format!(
                "{family} is exported but no panel shows it: add a panel for it"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{}:\n  {}",
        crate::dashboard::DASHBOARD_JSON,
        problems.join("\n  ")
    );
}

// ---------------------------------------------------------------------------
// Backup, metric help texts, plan's output, the simulator's faults

/// The tables a fresh database holds after every migration that a backup must carry:
/// invite-sync's own and the rosters.
async fn tables_to_back_up() -> BTreeSet<String> {
    let db = crate::common::TestDb::migrated().await;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') \
         AND (c.relname LIKE 'invite\\_sync\\_%' \
              OR c.relname IN ('desired_invitees', 'desired_memberships'))",
    )
    .fetch_all(&db.pool)
    .await
    .expect("the tables can be listed");
    assert!(tables.len() > 5, "too few tables found: {tables:?}");
    tables.into_iter().collect()
}

#[tokio::test]
async fn the_backup_names_every_table_the_migrations_create() {
    let tables = tables_to_back_up().await;
    let doc = read(OPERATIONS_MD);

    // The data-only dump's -t list.
    let block = crate::deploy::marked_block(&doc, "backup: tables");
    let words: Vec<&str> = block.split_whitespace().collect();
    let dumped: BTreeSet<String> = words
        .windows(2)
        .filter(|pair| pair[0] == "-t")
        .map(|pair| pair[1].to_owned())
        .collect();
    assert_eq!(
        dumped, tables,
        "{OPERATIONS_MD}'s pg_dump -t list differs from the tables the migrations create"
    );

    // The table of what each holds.
    let section = doc
        .split_once("## Backup and restore")
        .expect("a backup section")
        .1;
    let described: BTreeSet<String> = section
        .lines()
        .take_while(|line| !line.starts_with("## "))
        .filter_map(table_cells)
        .filter_map(|cells| {
            let name = cells.first()?.strip_prefix('`')?.strip_suffix('`')?;
            Some(name.to_owned())
        })
        .collect();
    let missing: Vec<&String> = tables.difference(&described).collect();
    assert!(
        missing.is_empty(),
        "{OPERATIONS_MD}'s backup table does not say what these hold: {missing:?}"
    );
}

/// The comma-separated lists in parentheses of a help text: `by kind (create, revoke)`.
fn listed_values(help: &str) -> Vec<String> {
    let mut values = Vec::new();
    let mut rest = help;
    while let Some((_, after)) = rest.split_once('(') {
        let Some((inside, tail)) = after.split_once(')') else {
            break;
        };
        let items: Vec<&str> = inside.split(", ").map(str::trim).collect();
        let all_labels = items.len() > 1
            && items.iter().all(|item| {
                !item.is_empty()
                    && item
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            });
        if all_labels {
            values.extend(items.into_iter().map(str::to_owned));
        }
        rest = tail;
    }
    values
}

/// The row of operations.md's metrics table for `metric`.
fn metric_row(doc: &str, metric: &str) -> Option<String> {
    doc.lines()
        .filter_map(table_cells)
        .find(|cells| cells.first() == Some(&format!("`{metric}`").as_str()))
        .map(|cells| cells.join(" | "))
}

/// Every `.rs` file under `dir`, its subfolders included.
fn rust_files_under(dir: &std::path::Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source directory lists") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            rust_files_under(&path, files);
        } else if path.extension().and_then(|e| e.to_str()) == Some("rs") {
            files.push(path);
        }
    }
}

/// Every `(kind, outcome)` the code counts in `invite_sync_actions`: the literal arguments of
/// its `.action("kind", "outcome")` calls (an outcome held in a variable gives its kind alone).
fn counted_actions() -> Vec<(String, Option<String>)> {
    let mut files = Vec::new();
    for dir in ["src/reconcile", "src/service", "src/commands"] {
        rust_files_under(&repo_path(dir), &mut files);
    }
    let mut found = Vec::new();
    for path in files {
        let source = std::fs::read_to_string(&path).expect("a source file reads");
        for (at, _) in source.match_indices(".action(\"") {
            let args = &source[at + ".action(".len()..];
            let args = &args[..args.find(')').expect("the call is closed")];
            let mut parts = args.split(',').map(str::trim);
            let kind = parts.next().expect("a kind").trim_matches('"').to_owned();
            let outcome = parts
                .next()
                .filter(|o| o.starts_with('"'))
                .map(|o| o.trim_matches('"').to_owned());
            found.push((kind, outcome));
        }
    }
    assert!(
        found.len() > 8,
        "too few .action(..) calls found: {found:?}"
    );
    found
}

#[test]
fn every_metric_help_and_label_value_is_documented() {
    let doc = read(OPERATIONS_MD);
    // Labelled families are printed once they have a series, which metric_families gives them.
    let families = metric_families();
    let exposition = invite_sync::metrics::metrics().encode();
    let mut problems = Vec::new();
    for (family, kind) in &families {
        let help = exposition
            .lines()
            .find_map(|line| line.strip_prefix(&format!("# HELP {family} ")))
            .unwrap_or_else(|| panic!("{family} has no help text"));
        let shown = if kind == "histogram" {
            family.clone()
        } else {
            sample_names(family, kind).remove(0)
        };
        let Some(row) = metric_row(&doc, &shown) else {
            problems.push(format!("{shown}: no row in {OPERATIONS_MD}"));
            continue;
        };
        for value in listed_values(help) {
            if !row.contains(&format!("`{value}`")) {
                problems.push(format!(
                    "{shown}: its help lists {value}, its row does not: {help:?}"
                ));
            }
        }
    }
    // invite_sync_actions: every kind the code counts is in the help text and every kind and
    // outcome in the docs' row.
    let actions_help = exposition
        .lines()
        .find_map(|line| line.strip_prefix("# HELP invite_sync_actions "))
        .expect("invite_sync_actions has a help text");
    let help_kinds = listed_values(actions_help);
    let row = metric_row(&doc, "invite_sync_actions_total").unwrap_or_default();
    for (kind, outcome) in counted_actions() {
        if !help_kinds.contains(&kind) {
            problems.push(format!(
                "invite_sync_actions: its help does not list {kind}"
            ));
        }
        let documented = match &outcome {
            Some(outcome) => {
                row.contains(&format!("`{kind}` (")) && {
                    let after = row.split_once(&format!("`{kind}` (")).map(|(_, a)| a);
                    after
                        .and_then(|a| a.split_once(')'))
                        .is_some_and(|(list, _)| list.contains(&format!("`{outcome}`")))
                }
            }
            None => row.contains(&format!("`{kind}`")),
        };
        if !documented {
            problems.push(format!(
                "invite_sync_actions_total: kind {kind} outcome {outcome:?} is not in its row"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "the metrics' help texts and {OPERATIONS_MD} disagree:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_plan_example_ends_as_plan_prints_its_backlog() {
    use invite_sync::commands::plan::backlog_text;
    let doc = read(OPERATIONS_MD);
    let (_, after) = doc
        .split_once("Plan for target default")
        .expect("operations.md shows a plan");
    let example = &after[..after.find("```").expect("the example ends")];
    let counts = example
        .lines()
        .find(|line| line.starts_with("Counts: "))
        .expect("the example has a counts line");
    let number = |category: &str| -> usize {
        counts
            .split_whitespace()
            .find_map(|pair| pair.strip_prefix(&format!("{category}=")))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let queued = number("create") + number("reinvite") + number("replace");
    let backlog = example
        .lines()
        .find(|line| line.starts_with("Backlog "))
        .expect("the example has a backlog line");
    // 3 h 27 min: whatever number of seconds rounds up to it.
    assert_eq!(backlog, backlog_text(queued, 0, 3 * 3600 + 26 * 60 + 1));
    for (queued, awaiting, eta) in [(1204, 4, 12_420), (0, 0, 0)] {
        let sentence = backlog_text(queued, awaiting, eta);
        let shown = sentence.split(" (").next().unwrap_or(&sentence);
        assert!(
            doc.replace('\n', " ").contains(shown),
            "{OPERATIONS_MD} does not show plan's {sentence:?}"
        );
    }
}

#[test]
fn the_simulators_fault_body_is_documented_and_parses() {
    use invite_sync::clerk::sim::{Fault, Operation};
    let doc = read(SIMULATOR_MD);
    let (_, after) = doc
        .split_once("Faults: `POST /_sim/faults`")
        .expect("the simulator's page documents /_sim/faults");
    let fence = after.find("```json").expect("an example block");
    let block = &after[fence + "```json".len()..];
    let block = &block[..block.find("```").expect("the block ends")];
    let mut types = BTreeSet::new();
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        let fault: Fault = serde_json::from_str(line).unwrap_or_else(|e| {
            panic!("{SIMULATOR_MD}'s fault example {line} does not parse: {e}")
        });
        let value = serde_json::to_value(&fault).expect("a fault serialises");
        types.insert(
            value["kind"]["type"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    for kind in ["status", "status_after_apply", "drop_after_apply", "hang"] {
        assert!(types.contains(kind), "no example of the fault {kind}");
    }
    let operations = after
        .split_once("- `operation`:")
        .expect("the operations are listed")
        .1;
    let operations = &operations[..operations.find("\n- ").expect("the list goes on")];
    let mut named = 0;
    for name in operations.split('`').skip(1).step_by(2) {
        serde_json::from_value::<Operation>(serde_json::Value::String(name.to_owned()))
            .unwrap_or_else(|e| panic!("{SIMULATOR_MD} names an operation {name}: {e}"));
        named += 1;
    }
    assert!(named >= 7, "{SIMULATOR_MD} lists {named} operations");
}
