//! Chat node aliases: the domains at which the chat service (XEP-0045 rooms) is reached.
//!
//! Every chat node (an instance of the rooms service, named by its `node_id`) has
//! aliases; a room's address is `room@<alias>`, and the alias is part of the room's
//! identity (`team@a.example` and `team@b.example` are two rooms). The table is one
//! cluster-wide value (setting `rooms.aliases` on the `config` topic) so every process
//! serves and routes the same aliases:
//!
//! - **System aliases**: while `system_aliases` is on (the default), each node has the
//!   alias `conference-<node_id>-<cluster_id>.<domain>`, added and kept by the system. A
//!   system alias can be neither edited nor deleted.
//! - **Manual aliases**: added, edited and deleted by an administrator; a node may have
//!   any number of them.
//! - A system alias that is no longer expected — system aliases turned off, or the
//!   cluster id or the domain changed — becomes a manual alias, never disappears, so the
//!   rooms created under it stay addressable until an administrator deletes it.
//! - Deleting a node drops its system alias (its rooms are unaddressable until that alias
//!   is added to another node); a node that still has manual aliases cannot be deleted.
//! - Aliases are valid domains, unique across the cluster, and never the IM domain.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Whether the system or an administrator manages an alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AliasKind {
    /// `conference-<node_id>-<cluster_id>.<domain>`, kept by the system.
    System,
    /// Added by an administrator (or a former system alias).
    Manual,
}

impl fmt::Display for AliasKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AliasKind::System => "system",
            AliasKind::Manual => "manual",
        })
    }
}

/// One alias: the node it belongs to and who manages it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alias {
    pub node: u32,
    pub kind: AliasKind,
}

/// What the system aliases are made of: the cluster id and the IM domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub cluster_id: String,
    pub domain: String,
}

impl Site {
    pub fn new(cluster_id: impl Into<String>, domain: impl Into<String>) -> Self {
        Self {
            cluster_id: cluster_id.into(),
            domain: domain.into(),
        }
    }

    /// The system alias of `node`: `conference-<node>-<cluster_id>.<domain>`.
    pub fn system_alias(&self, node: u32) -> String {
        format!("conference-{node}-{}.{}", self.cluster_id, self.domain)
    }
}

/// Why an alias change was refused. Every message names the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AliasError {
    #[error(
        "{0:?} is not a valid chat node alias: use a domain such as conference.example.com \
         (labels of a-z, 0-9 and '-', separated by dots, at most 253 characters)"
    )]
    InvalidDomain(String),
    #[error("the alias {alias} already exists (on node {node}); every alias must be unique")]
    Duplicate { alias: String, node: u32 },
    #[error("the alias {0} is the IM domain; a chat node alias must differ from it")]
    ImDomain(String),
    #[error(
        "there is no chat node {0} (list them with `imbus alias list`, add one with `imbus alias node add`)"
    )]
    UnknownNode(u32),
    #[error("there is no alias {0} (list them with `imbus alias list`)")]
    UnknownAlias(String),
    #[error(
        "{0} is a system alias: it cannot be edited or deleted; turn system aliases off \
         (`imbus alias system off`) to make it an ordinary alias"
    )]
    SystemAlias(String),
    #[error("chat node {0} already exists")]
    NodeExists(u32),
    #[error("chat node {0} is not a valid node id: use 1 to 65535")]
    InvalidNode(u32),
    #[error(
        "chat node {node} still has the aliases {}: reassign them to another node \
         (`imbus alias edit <alias> --node <id>`) or delete them first",
        aliases.join(", ")
    )]
    NodeHasAliases { node: u32, aliases: Vec<String> },
    #[error("the alias {0} is given without a change: say --to and/or --node")]
    NothingToChange(String),
    #[error("invalid alias table: {0}")]
    Format(String),
}

/// The chat nodes and their aliases, cluster-wide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatNodes {
    system_aliases: bool,
    nodes: BTreeSet<u32>,
    aliases: BTreeMap<String, Alias>,
}

impl Default for ChatNodes {
    /// No node yet; system aliases on.
    fn default() -> Self {
        Self {
            system_aliases: true,
            nodes: BTreeSet::new(),
            aliases: BTreeMap::new(),
        }
    }
}

/// Whether `text` is a domain imbus accepts (lower-case ASCII host name).
pub fn valid_domain(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// An alias as typed, normalised (trimmed, lower case) and checked.
fn alias_name(text: &str) -> Result<String, AliasError> {
    let name = text.trim().trim_end_matches('.').to_ascii_lowercase();
    if valid_domain(&name) {
        Ok(name)
    } else {
        Err(AliasError::InvalidDomain(text.to_owned()))
    }
}

fn valid_node(node: u32) -> Result<(), AliasError> {
    if (1..=65_535).contains(&node) {
        Ok(())
    } else {
        Err(AliasError::InvalidNode(node))
    }
}

impl ChatNodes {
    /// Whether the system manages a primary alias per node.
    pub fn system_aliases(&self) -> bool {
        self.system_aliases
    }

    /// The chat nodes, in id order.
    pub fn nodes(&self) -> impl Iterator<Item = u32> + '_ {
        self.nodes.iter().copied()
    }

    /// Whether any node was ever registered.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.aliases.is_empty()
    }

    /// Every alias, in name order.
    pub fn aliases(&self) -> impl Iterator<Item = (&str, Alias)> {
        self.aliases.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// One alias.
    pub fn get(&self, alias: &str) -> Option<Alias> {
        self.aliases.get(alias).copied()
    }

    /// The aliases of `node`, in name order.
    pub fn aliases_of(&self, node: u32) -> impl Iterator<Item = (&str, AliasKind)> {
        self.aliases
            .iter()
            .filter(move |(_, a)| a.node == node)
            .map(|(k, a)| (k.as_str(), a.kind))
    }

    fn check_new_name(&self, name: &str, im_domain: &str) -> Result<(), AliasError> {
        if name == im_domain {
            return Err(AliasError::ImDomain(name.to_owned()));
        }
        if let Some(existing) = self.aliases.get(name) {
            return Err(AliasError::Duplicate {
                alias: name.to_owned(),
                node: existing.node,
            });
        }
        Ok(())
    }

    fn check_node(&self, node: u32) -> Result<(), AliasError> {
        if self.nodes.contains(&node) {
            Ok(())
        } else {
            Err(AliasError::UnknownNode(node))
        }
    }

    /// Adds the manual alias `alias` to `node`.
    pub fn add(&mut self, alias: &str, node: u32, site: &Site) -> Result<String, AliasError> {
        let name = alias_name(alias)?;
        self.check_node(node)?;
        self.check_new_name(&name, &site.domain)?;
        self.aliases.insert(
            name.clone(),
            Alias {
                node,
                kind: AliasKind::Manual,
            },
        );
        Ok(name)
    }

    /// Renames the manual alias `alias` to `to` and/or moves it to `node`.
    pub fn edit(
        &mut self,
        alias: &str,
        to: Option<&str>,
        node: Option<u32>,
        site: &Site,
    ) -> Result<String, AliasError> {
        let old = alias_name(alias)?;
        let current = *self
            .aliases
            .get(&old)
            .ok_or_else(|| AliasError::UnknownAlias(old.clone()))?;
        if current.kind == AliasKind::System {
            return Err(AliasError::SystemAlias(old));
        }
        if to.is_none() && node.is_none() {
            return Err(AliasError::NothingToChange(old));
        }
        let new = match to {
            Some(to) => alias_name(to)?,
            None => old.clone(),
        };
        let node = node.unwrap_or(current.node);
        self.check_node(node)?;
        if new != old {
            self.check_new_name(&new, &site.domain)?;
        }
        self.aliases.remove(&old);
        self.aliases.insert(
            new.clone(),
            Alias {
                node,
                kind: AliasKind::Manual,
            },
        );
        Ok(new)
    }

    /// Deletes the manual alias `alias`.
    pub fn delete(&mut self, alias: &str) -> Result<String, AliasError> {
        let name = alias_name(alias)?;
        match self.aliases.get(&name) {
            None => Err(AliasError::UnknownAlias(name)),
            Some(a) if a.kind == AliasKind::System => Err(AliasError::SystemAlias(name)),
            Some(_) => {
                self.aliases.remove(&name);
                Ok(name)
            }
        }
    }

    /// Turns system-managed aliases on or off. Off: every system alias becomes manual. On:
    /// each node gets its system alias.
    pub fn set_system_aliases(&mut self, on: bool, site: &Site) {
        self.system_aliases = on;
        self.reconcile(site);
    }

    /// Adds the chat node `node` (with its system alias when they are on).
    pub fn add_node(&mut self, node: u32, site: &Site) -> Result<(), AliasError> {
        valid_node(node)?;
        if !self.nodes.insert(node) {
            return Err(AliasError::NodeExists(node));
        }
        self.reconcile(site);
        Ok(())
    }

    /// Deletes the chat node `node` and its system alias; refused while it has manual
    /// aliases.
    pub fn delete_node(&mut self, node: u32) -> Result<(), AliasError> {
        self.check_node(node)?;
        let manual: Vec<String> = self
            .aliases_of(node)
            .filter(|(_, kind)| *kind == AliasKind::Manual)
            .map(|(name, _)| name.to_owned())
            .collect();
        if !manual.is_empty() {
            return Err(AliasError::NodeHasAliases {
                node,
                aliases: manual,
            });
        }
        self.nodes.remove(&node);
        self.aliases.retain(|_, a| a.node != node);
        Ok(())
    }

    /// Makes sure `node` is a chat node (a rooms service starting on it), then
    /// reconciles. Returns whether anything changed.
    pub fn register(&mut self, node: u32, site: &Site) -> bool {
        let before = self.clone();
        if valid_node(node).is_ok() {
            self.nodes.insert(node);
        }
        self.reconcile(site);
        *self != before
    }

    /// Brings the system aliases in line with `site`: a system alias that is no longer
    /// expected (system aliases off, another cluster id or domain) becomes manual; a node
    /// without its expected system alias gets it — a manual alias of that name on the same
    /// node becomes the system alias again, one on another node is left alone (the node
    /// then has no system alias). Returns whether anything changed.
    pub fn reconcile(&mut self, site: &Site) -> bool {
        let before = self.clone();
        for (name, alias) in self.aliases.iter_mut() {
            if alias.kind == AliasKind::System
                && !(self.system_aliases && *name == site.system_alias(alias.node))
            {
                alias.kind = AliasKind::Manual;
            }
        }
        if self.system_aliases {
            for &node in &self.nodes {
                let expected = site.system_alias(node);
                if expected == site.domain || !valid_domain(&expected) {
                    continue;
                }
                match self.aliases.get_mut(&expected) {
                    None => {
                        self.aliases.insert(
                            expected,
                            Alias {
                                node,
                                kind: AliasKind::System,
                            },
                        );
                    }
                    Some(a) if a.node == node => a.kind = AliasKind::System,
                    Some(_) => {}
                }
            }
        }
        *self != before
    }

    /// Checks the table against the IM domain `im_domain`.
    pub fn validate(&self, im_domain: &str) -> Result<(), AliasError> {
        for (name, alias) in &self.aliases {
            if !valid_domain(name) {
                return Err(AliasError::InvalidDomain(name.clone()));
            }
            if name == im_domain {
                return Err(AliasError::ImDomain(name.clone()));
            }
            self.check_node(alias.node)?;
        }
        for &node in &self.nodes {
            valid_node(node)?;
        }
        Ok(())
    }

    /// The stored form (the value of `rooms.aliases`): JSON with the nodes, the
    /// system-aliases switch and each alias with its node and kind; the empty text is the
    /// empty table.
    pub fn to_text(&self) -> String {
        if *self == Self::default() {
            return String::new();
        }
        let stored = Stored {
            system_aliases: self.system_aliases,
            nodes: self.nodes.iter().copied().collect(),
            aliases: self
                .aliases
                .iter()
                .map(|(name, a)| {
                    (
                        name.clone(),
                        StoredAlias {
                            node: a.node,
                            kind: match a.kind {
                                AliasKind::System => "system".to_owned(),
                                AliasKind::Manual => "manual".to_owned(),
                            },
                        },
                    )
                })
                .collect(),
        };
        serde_json::to_string(&stored).unwrap_or_default()
    }

    /// Reads the stored form (see [`Self::to_text`]) and checks its structure (valid
    /// domains and node ids, every alias on a known node).
    pub fn parse(text: &str) -> Result<Self, AliasError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let stored: Stored =
            serde_json::from_str(text).map_err(|e| AliasError::Format(e.to_string()))?;
        let mut table = Self {
            system_aliases: stored.system_aliases,
            nodes: stored.nodes.into_iter().collect(),
            aliases: BTreeMap::new(),
        };
        for (name, a) in stored.aliases {
            let kind = match a.kind.as_str() {
                "system" => AliasKind::System,
                "manual" => AliasKind::Manual,
                other => {
                    return Err(AliasError::Format(format!(
                        "alias {name}: kind {other:?} is neither system nor manual"
                    )));
                }
            };
            table.aliases.insert(name, Alias { node: a.node, kind });
        }
        table.validate("")?;
        Ok(table)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    system_aliases: bool,
    nodes: Vec<u32>,
    aliases: BTreeMap<String, StoredAlias>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAlias {
    node: u32,
    kind: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cisco() -> Site {
        Site::new("mycup", "cisco.com")
    }

    fn one_node(site: &Site) -> ChatNodes {
        let mut t = ChatNodes::default();
        assert!(t.register(1, site));
        t
    }

    fn list(t: &ChatNodes) -> Vec<(String, u32, AliasKind)> {
        t.aliases()
            .map(|(n, a)| (n.to_owned(), a.node, a.kind))
            .collect()
    }

    fn entry(name: &str, node: u32, kind: AliasKind) -> (String, u32, AliasKind) {
        (name.to_owned(), node, kind)
    }

    use AliasKind::{Manual, System};

    #[test]
    fn a_registered_node_gets_its_system_alias_and_registering_again_changes_nothing() {
        let site = Site::new("imbus", "localhost");
        let mut t = one_node(&site);
        assert_eq!(list(&t), [entry("conference-1-imbus.localhost", 1, System)]);
        assert!(!t.register(1, &site));
        assert!(!t.reconcile(&site));
        // Two processes reconciling the same inputs write the same thing.
        let mut other = ChatNodes::parse(&t.to_text()).unwrap();
        assert!(!other.register(1, &site));
        assert_eq!(other.to_text(), t.to_text());
    }

    #[test]
    fn scenario_1_system_aliases_off_then_the_old_one_is_renamed() {
        let site = cisco();
        let mut t = one_node(&site);
        t.set_system_aliases(false, &site);
        assert!(!t.system_aliases());
        assert_eq!(list(&t), [entry("conference-1-mycup.cisco.com", 1, Manual)]);
        let new = t
            .edit(
                "conference-1-mycup.cisco.com",
                Some("primary-conf-server.cisco.com"),
                None,
                &site,
            )
            .unwrap();
        assert_eq!(new, "primary-conf-server.cisco.com");
        assert_eq!(
            list(&t),
            [entry("primary-conf-server.cisco.com", 1, Manual)]
        );
        // A restart with system aliases off brings nothing back.
        assert!(!t.register(1, &site));
    }

    #[test]
    fn scenario_2_a_new_domain_keeps_the_old_system_alias_as_a_manual_one() {
        let mut t = one_node(&cisco());
        let linksys = Site::new("mycup", "linksys.com");
        assert!(t.register(1, &linksys));
        assert_eq!(
            list(&t),
            [
                entry("conference-1-mycup.cisco.com", 1, Manual),
                entry("conference-1-mycup.linksys.com", 1, System),
            ]
        );
        assert!(!t.register(1, &linksys));
    }

    #[test]
    fn scenario_3_a_new_cluster_id_and_the_old_alias_deleted() {
        let mut t = one_node(&cisco());
        let ireland = Site::new("ireland", "cisco.com");
        assert!(t.register(1, &ireland));
        assert_eq!(
            list(&t),
            [
                entry("conference-1-ireland.cisco.com", 1, System),
                entry("conference-1-mycup.cisco.com", 1, Manual),
            ]
        );
        t.delete("conference-1-mycup.cisco.com").unwrap();
        assert_eq!(
            list(&t),
            [entry("conference-1-ireland.cisco.com", 1, System)]
        );
    }

    #[test]
    fn scenario_4_a_new_cluster_id_keeping_only_the_old_alias() {
        let mut t = one_node(&cisco());
        let ireland = Site::new("ireland", "cisco.com");
        t.register(1, &ireland);
        t.set_system_aliases(false, &ireland);
        t.delete("conference-1-ireland.cisco.com").unwrap();
        assert_eq!(list(&t), [entry("conference-1-mycup.cisco.com", 1, Manual)]);
        assert!(!t.register(1, &ireland));
    }

    #[test]
    fn scenario_5_a_deleted_node_s_alias_moves_to_a_new_node() {
        let site = cisco();
        let mut t = ChatNodes::default();
        t.register(3, &site);
        t.add_node(7, &site).unwrap();
        t.delete_node(3).unwrap();
        assert_eq!(list(&t), [entry("conference-7-mycup.cisco.com", 7, System)]);
        // Option 1: the old alias added to node 7.
        let mut option1 = t.clone();
        option1
            .add("conference-3-mycup.cisco.com", 7, &site)
            .unwrap();
        assert_eq!(
            list(&option1),
            [
                entry("conference-3-mycup.cisco.com", 7, Manual),
                entry("conference-7-mycup.cisco.com", 7, System),
            ]
        );
        // Option 2: system aliases off, node 7's alias renamed to the old one.
        let mut option2 = t.clone();
        option2.set_system_aliases(false, &site);
        option2
            .edit(
                "conference-7-mycup.cisco.com",
                Some("conference-3-mycup.cisco.com"),
                None,
                &site,
            )
            .unwrap();
        assert_eq!(
            list(&option2),
            [entry("conference-3-mycup.cisco.com", 7, Manual)]
        );
    }

    #[test]
    fn system_aliases_cannot_be_edited_or_deleted() {
        let site = cisco();
        let mut t = one_node(&site);
        let e = t.delete("conference-1-mycup.cisco.com").unwrap_err();
        assert_eq!(
            e,
            AliasError::SystemAlias("conference-1-mycup.cisco.com".into())
        );
        assert!(e.to_string().contains("conference-1-mycup.cisco.com"));
        let e = t
            .edit(
                "conference-1-mycup.cisco.com",
                Some("x.cisco.com"),
                None,
                &site,
            )
            .unwrap_err();
        assert!(matches!(e, AliasError::SystemAlias(_)));
    }

    #[test]
    fn aliases_are_valid_unique_not_the_im_domain_and_on_known_nodes() {
        let site = cisco();
        let mut t = one_node(&site);
        t.add_node(2, &site).unwrap();
        let e = t.add("Bad Alias!", 1, &site).unwrap_err();
        assert!(e.to_string().contains("\"Bad Alias!\""), "{e}");
        let e = t.add("conference-2-mycup.cisco.com", 1, &site).unwrap_err();
        assert_eq!(
            e,
            AliasError::Duplicate {
                alias: "conference-2-mycup.cisco.com".into(),
                node: 2
            }
        );
        let e = t.add("cisco.com", 1, &site).unwrap_err();
        assert_eq!(e, AliasError::ImDomain("cisco.com".into()));
        let e = t.add("chat.cisco.com", 9, &site).unwrap_err();
        assert_eq!(e, AliasError::UnknownNode(9));
        assert!(e.to_string().contains('9'));
        // Names are domains: case and a trailing dot do not make a new alias.
        assert_eq!(
            t.add("Chat.Cisco.com.", 1, &site).unwrap(),
            "chat.cisco.com"
        );
        assert!(matches!(
            t.add("chat.cisco.com", 2, &site),
            Err(AliasError::Duplicate { .. })
        ));
        assert!(matches!(
            t.edit("chat.cisco.com", Some("cisco.com"), None, &site),
            Err(AliasError::ImDomain(_))
        ));
        assert!(matches!(
            t.edit("chat.cisco.com", None, Some(5), &site),
            Err(AliasError::UnknownNode(5))
        ));
        assert!(matches!(
            t.edit("chat.cisco.com", None, None, &site),
            Err(AliasError::NothingToChange(_))
        ));
        t.edit("chat.cisco.com", None, Some(2), &site).unwrap();
        assert_eq!(t.get("chat.cisco.com").map(|a| a.node), Some(2));
        assert!(matches!(
            t.delete("nothing.cisco.com"),
            Err(AliasError::UnknownAlias(_))
        ));
        assert!(matches!(
            t.add_node(2, &site),
            Err(AliasError::NodeExists(2))
        ));
        assert!(matches!(
            t.add_node(0, &site),
            Err(AliasError::InvalidNode(0))
        ));
    }

    #[test]
    fn a_node_with_manual_aliases_cannot_be_deleted() {
        let site = cisco();
        let mut t = one_node(&site);
        t.add("chat.cisco.com", 1, &site).unwrap();
        t.add("team.cisco.com", 1, &site).unwrap();
        let e = t.delete_node(1).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("chat.cisco.com, team.cisco.com") && text.contains("node 1"),
            "{text}"
        );
        assert!(matches!(t.delete_node(4), Err(AliasError::UnknownNode(4))));
    }

    #[test]
    fn turning_system_aliases_back_on_makes_the_former_one_system_again() {
        let site = cisco();
        let mut t = one_node(&site);
        t.set_system_aliases(false, &site);
        t.set_system_aliases(true, &site);
        assert_eq!(list(&t), [entry("conference-1-mycup.cisco.com", 1, System)]);
        // Taken by another node as a manual alias: left alone.
        let mut t = one_node(&site);
        t.set_system_aliases(false, &site);
        t.add_node(2, &site).unwrap();
        t.edit("conference-1-mycup.cisco.com", None, Some(2), &site)
            .unwrap();
        t.set_system_aliases(true, &site);
        assert_eq!(
            t.get("conference-1-mycup.cisco.com"),
            Some(Alias {
                node: 2,
                kind: Manual
            })
        );
    }

    #[test]
    fn the_table_is_a_live_setting_that_gives_the_chat_domains() {
        let base = crate::Config::load(None, Vec::<(String, String)>::new()).unwrap();
        // Before any chat node registered: this node's system alias.
        assert!(base.chat_nodes.is_empty());
        assert_eq!(base.chat_domains(), ["conference-1-imbus.localhost"]);
        let site = base.chat_site();
        let mut t = ChatNodes::default();
        t.register(1, &site);
        t.add("chat.localhost", 1, &site).unwrap();
        let live = base
            .with_override(&base, "rooms.aliases", Some(&t.to_text()))
            .unwrap();
        assert_eq!(live.chat_nodes, t);
        assert_eq!(
            live.chat_domains(),
            ["chat.localhost", "conference-1-imbus.localhost"]
        );
        // Every alias deleted: no chat domain at all.
        t.set_system_aliases(false, &site);
        t.delete("chat.localhost").unwrap();
        t.delete("conference-1-imbus.localhost").unwrap();
        let live = base
            .with_override(&base, "rooms.aliases", Some(&t.to_text()))
            .unwrap();
        assert!(live.chat_domains().is_empty());
        let e = base
            .with_override(&base, "rooms.aliases", Some("{\"nodes\": 1}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`rooms.aliases`") && e.contains("imbus alias"),
            "{e}"
        );
    }

    #[test]
    fn the_stored_form_round_trips_and_refuses_nonsense() {
        let site = cisco();
        let mut t = one_node(&site);
        t.add("chat.cisco.com", 1, &site).unwrap();
        t.set_system_aliases(false, &site);
        let text = t.to_text();
        assert_eq!(ChatNodes::parse(&text).unwrap(), t);
        assert_eq!(ChatNodes::parse("").unwrap(), ChatNodes::default());
        assert_eq!(ChatNodes::default().to_text(), "");
        assert!(matches!(ChatNodes::parse("{"), Err(AliasError::Format(_))));
        let orphan = r#"{"system_aliases":true,"nodes":[1],"aliases":{"a.example":{"node":2,"kind":"manual"}}}"#;
        assert_eq!(ChatNodes::parse(orphan), Err(AliasError::UnknownNode(2)));
        let bad =
            r#"{"system_aliases":true,"nodes":[1],"aliases":{"A B":{"node":1,"kind":"manual"}}}"#;
        assert!(matches!(
            ChatNodes::parse(bad),
            Err(AliasError::InvalidDomain(_))
        ));
    }
}
