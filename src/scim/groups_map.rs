//! From SCIM Groups to the membership roster: which organization and role each group means
//! (`scim.groups`), and the rows a set of groups and their members asks for. Pure: the
//! groups and the rows are stored by `store::scim_groups` and `store::group_memberships`.
//!
//! A mapping's `group` names a group by its `externalId` or, when no mapping names the
//! group's `externalId`, by its `displayName` (compared case-insensitively, as SCIM compares
//! display names). Several groups may name one organization with different roles; a person
//! in more than one of them gets the role of the mapping with the highest `precedence` (a
//! tie goes to the mapping listed first). A group no mapping names is ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::{check_organization, check_role};

/// One `scim.groups` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMapping {
    /// A group's `externalId`, or else its `displayName`.
    pub group: String,
    /// An organization id (`org_...`) or slug.
    pub organization: String,
    /// An organization role key (`org:admin`); unset takes `organizations.default_role`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Higher wins when one person is in several groups naming one organization.
    #[serde(default)]
    pub precedence: i64,
}

/// The fields an entry may have.
pub const FIELDS: &[&str] = &["group", "organization", "role", "precedence"];

/// The longest `group` an entry may name (SCIM stores display names and external ids of up
/// to 256 characters).
const MAX_GROUP: usize = 256;

impl GroupMapping {
    /// Checks one entry's values (not its relation to the others): the normalised entry,
    /// or why it is refused.
    pub fn checked(&self) -> Result<GroupMapping, String> {
        let group = self.group.trim();
        if group.is_empty() {
            return Err("group is empty: name a group's externalId or displayName".to_owned());
        }
        if group.contains('\0') || group.chars().any(char::is_control) {
            return Err("group holds a control character".to_owned());
        }
        if group.chars().count() > MAX_GROUP {
            return Err(format!("group is longer than {MAX_GROUP} characters"));
        }
        let organization = check_organization(&self.organization)?;
        let role = match self.role.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(role) => Some(check_role(role).map_err(|e| format!("role {role:?} {e}"))?),
        };
        Ok(GroupMapping {
            group: group.to_owned(),
            organization,
            role,
            precedence: self.precedence,
        })
    }

    /// How an entry is named in a message: its position (from 1) and its group.
    pub fn named(index: usize, group: &str) -> String {
        format!("entry {} (group {group:?})", index + 1)
    }
}

/// Checks a whole `scim.groups` list: each entry, then the rules between them (one entry per
/// group and organization; two entries naming one organization with different roles need
/// different precedences, so which role wins never depends on their order). Every problem
/// is returned, each naming its entry.
pub fn check_mappings(mappings: &[GroupMapping]) -> Result<Vec<GroupMapping>, Vec<String>> {
    let mut problems = Vec::new();
    let mut checked: Vec<(usize, GroupMapping)> = Vec::new();
    for (index, mapping) in mappings.iter().enumerate() {
        match mapping.checked() {
            Ok(entry) => checked.push((index, entry)),
            Err(reason) => problems.push(format!(
                "{}: {reason}",
                GroupMapping::named(index, &mapping.group)
            )),
        }
    }
    for (at, (index, entry)) in checked.iter().enumerate() {
        for (earlier, other) in &checked[..at] {
            if other.organization != entry.organization {
                continue;
            }
            if other.group.to_lowercase() == entry.group.to_lowercase() {
                problems.push(format!(
                    "{}: names organization {:?} again for the same group as {}; keep one entry",
                    GroupMapping::named(*index, &entry.group),
                    entry.organization,
                    GroupMapping::named(*earlier, &other.group),
                ));
            } else if other.precedence == entry.precedence && other.role != entry.role {
                problems.push(format!(
                    "{}: has precedence {} like {}, which gives organization {:?} another \
                     role; give one of them a higher precedence, so a person in both gets \
                     the role you mean",
                    GroupMapping::named(*index, &entry.group),
                    entry.precedence,
                    GroupMapping::named(*earlier, &other.group),
                    entry.organization,
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(checked.into_iter().map(|(_, entry)| entry).collect())
    } else {
        Err(problems)
    }
}

/// A group as the mapping sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupName<'a> {
    pub display_name: &'a str,
    pub external_id: Option<&'a str>,
}

/// The configured mappings, ready to match groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mappings {
    entries: Vec<GroupMapping>,
}

impl Mappings {
    /// The entries, in the order configured (checked when the configuration loads).
    pub fn new(entries: Vec<GroupMapping>) -> Mappings {
        Mappings { entries }
    }

    pub fn entries(&self) -> &[GroupMapping] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The positions of the entries that name this group: those naming its `externalId`,
    /// else those naming its `displayName` (case-insensitively).
    pub fn of(&self, group: &GroupName<'_>) -> Vec<usize> {
        if let Some(external) = group.external_id {
            let by_external: Vec<usize> = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, m)| m.group == external)
                .map(|(i, _)| i)
                .collect();
            if !by_external.is_empty() {
                return by_external;
            }
        }
        let display = group.display_name.to_lowercase();
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, m)| m.group.to_lowercase() == display)
            .map(|(i, _)| i)
            .collect()
    }

    /// Whether any entry names this group.
    pub fn maps(&self, group: &GroupName<'_>) -> bool {
        !self.of(group).is_empty()
    }
}

/// One membership roster row a group mapping asks for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DesiredRow {
    /// The member's roster address (normalised).
    pub email: String,
    pub organization: String,
    /// `None`: `organizations.default_role`.
    pub role: Option<String>,
}

/// The rows the groups ask for: for each (member, organization) that a mapped group of the
/// member names, the role of the highest-precedence mapping among the member's groups (the
/// earlier entry on a tie). `groups` pairs each group with its members' addresses (members
/// without an address, or inactive, are left out by the caller). Sorted by address, then
/// organization.
pub fn desired<'a, I, M>(mappings: &Mappings, groups: I) -> Vec<DesiredRow>
where
    I: IntoIterator<Item = (GroupName<'a>, M)>,
    M: IntoIterator<Item = &'a str>,
{
    // (email, organization) -> (precedence, -entry index) of the winning mapping, its role.
    type Rank = (i64, std::cmp::Reverse<usize>);
    let mut best: BTreeMap<(String, String), (Rank, Option<String>)> = BTreeMap::new();
    for (group, members) in groups {
        let entries = mappings.of(&group);
        if entries.is_empty() {
            continue;
        }
        let members: Vec<&str> = members.into_iter().collect();
        for index in entries {
            let mapping = &mappings.entries[index];
            let rank = (mapping.precedence, std::cmp::Reverse(index));
            for email in &members {
                let key = ((*email).to_owned(), mapping.organization.clone());
                match best.get(&key) {
                    Some((held, _)) if *held >= rank => {}
                    _ => {
                        best.insert(key, (rank, mapping.role.clone()));
                    }
                }
            }
        }
    }
    best.into_iter()
        .map(|((email, organization), (_, role))| DesiredRow {
            email,
            organization,
            role,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mapping(
        group: &str,
        organization: &str,
        role: Option<&str>,
        precedence: i64,
    ) -> GroupMapping {
        GroupMapping {
            group: group.to_owned(),
            organization: organization.to_owned(),
            role: role.map(str::to_owned),
            precedence,
        }
    }

    fn name(display_name: &str) -> GroupName<'_> {
        GroupName {
            display_name,
            external_id: None,
        }
    }

    fn row(email: &str, organization: &str, role: Option<&str>) -> DesiredRow {
        DesiredRow {
            email: email.to_owned(),
            organization: organization.to_owned(),
            role: role.map(str::to_owned),
        }
    }

    #[test]
    fn several_groups_name_one_organization_and_the_highest_precedence_gives_the_role() {
        let mappings = Mappings::new(vec![
            mapping("Acme", "acme", None, 0),
            mapping("Acme admins", "acme", Some("org:admin"), 10),
            mapping("Globex", "org_globex", Some("org:member"), 0),
        ]);
        let rows = desired(
            &mappings,
            [
                (name("Acme"), vec!["ann@x.com", "bob@x.com"]),
                (name("acme ADMINS"), vec!["bob@x.com"]),
                (name("Globex"), vec!["ann@x.com"]),
                (name("Everyone"), vec!["ann@x.com", "cy@x.com"]),
            ],
        );
        assert_eq!(
            rows,
            [
                row("ann@x.com", "acme", None),
                row("ann@x.com", "org_globex", Some("org:member")),
                row("bob@x.com", "acme", Some("org:admin")),
            ],
            "cy is only in a group no mapping names: no row"
        );
    }

    #[test]
    fn the_external_id_is_matched_first_and_the_display_name_only_failing_that() {
        let mappings = Mappings::new(vec![
            mapping("00g1abc", "acme", Some("org:admin"), 0),
            mapping("Sales", "globex", None, 0),
        ]);
        let by_external = GroupName {
            display_name: "Sales",
            external_id: Some("00g1abc"),
        };
        assert_eq!(mappings.of(&by_external), [0]);
        let falls_back = GroupName {
            display_name: "sales",
            external_id: Some("other"),
        };
        assert_eq!(mappings.of(&falls_back), [1]);
        let external_is_exact = GroupName {
            display_name: "x",
            external_id: Some("00G1ABC"),
        };
        assert!(!mappings.maps(&external_is_exact));
    }

    #[test]
    fn a_tie_goes_to_the_entry_listed_first() {
        let mappings = Mappings::new(vec![
            mapping("A", "acme", Some("org:a"), 5),
            mapping("B", "acme", Some("org:b"), 5),
        ]);
        let rows = desired(
            &mappings,
            [(name("B"), vec!["p@x.com"]), (name("A"), vec!["p@x.com"])],
        );
        assert_eq!(rows, [row("p@x.com", "acme", Some("org:a"))]);
    }

    #[test]
    fn checks_name_each_bad_entry() {
        let problems = check_mappings(&[
            mapping("Acme", "acme", None, 0),
            mapping(" ", "acme", None, 0),
            mapping("Bad org", "has space", None, 0),
            mapping("Bad role", "acme", Some("admin"), 1),
            mapping("ACME", "acme", Some("org:admin"), 3),
            mapping("Acme admins", "acme", Some("org:admin"), 0),
        ])
        .unwrap_err();
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(problems[0].starts_with("entry 2 (group \" \"): group is empty"));
        assert!(problems[1].starts_with("entry 3 (group \"Bad org\"): organization"));
        assert!(problems[2].starts_with("entry 4 (group \"Bad role\"): role \"admin\""));
        assert!(
            problems[3].starts_with("entry 5 (group \"ACME\"): names organization \"acme\" again")
        );
        assert!(problems[4]
            .starts_with("entry 6 (group \"Acme admins\"): has precedence 0 like entry 1"));
        let fine = check_mappings(&[
            mapping(" Acme ", " acme ", Some(" org:admin "), 1),
            mapping("Acme users", "acme", None, 0),
        ])
        .unwrap();
        assert_eq!(fine[0], mapping("Acme", "acme", Some("org:admin"), 1));
    }

    /// The same answer, computed the slow and obvious way: every mapping that names one of
    /// the person's groups, the highest precedence then the earliest entry.
    fn oracle(
        mappings: &Mappings,
        groups: &[(String, Vec<String>)],
        email: &str,
        organization: &str,
    ) -> Option<Option<String>> {
        let mut candidates: Vec<(i64, usize)> = Vec::new();
        for (group, members) in groups {
            if !members.iter().any(|m| m == email) {
                continue;
            }
            for index in mappings.of(&name(group)) {
                if mappings.entries()[index].organization == organization {
                    candidates.push((mappings.entries()[index].precedence, index));
                }
            }
        }
        candidates
            .into_iter()
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
            .map(|(_, index)| mappings.entries()[index].role.clone())
    }

    proptest! {
        #[test]
        fn each_row_holds_the_role_of_the_highest_precedence_and_nothing_else_is_asked(
            entries in proptest::collection::vec(
                (0..5usize, 0..3usize, proptest::option::of(0..3usize), -2..3i64), 0..8),
            groups in proptest::collection::vec(
                (0..6usize, proptest::collection::vec(0..4usize, 0..4)), 0..6),
        ) {
            let group_names = ["g0", "g1", "g2", "g3", "g4", "unmapped"];
            let organizations = ["acme", "org_2", "globex"];
            let roles = ["org:admin", "org:member", "org:billing"];
            let emails = ["a@x.com", "b@x.com", "c@x.com", "d@x.com"];
            let mappings = Mappings::new(entries.iter().map(|(g, o, r, p)| mapping(
                group_names[*g], organizations[*o], r.map(|r| roles[r]), *p)).collect());
            let groups: Vec<(String, Vec<String>)> = groups.iter().map(|(g, members)| (
                group_names[*g].to_owned(),
                members.iter().map(|m| emails[*m].to_owned()).collect(),
            )).collect();
            let rows = desired(&mappings, groups.iter().map(|(g, members)| {
                (name(g), members.iter().map(String::as_str))
            }));
            let mut sorted = rows.clone();
            sorted.sort();
            sorted.dedup_by(|a, b| a.email == b.email && a.organization == b.organization);
            prop_assert_eq!(&sorted, &rows, "one row per person and organization, in order");
            for email in emails {
                for organization in organizations {
                    let got = rows.iter()
                        .find(|r| r.email == email && r.organization == organization)
                        .map(|r| r.role.clone());
                    prop_assert_eq!(got, oracle(&mappings, &groups, email, organization),
                        "{} in {}", email, organization);
                }
            }
        }
    }
}
