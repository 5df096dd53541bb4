//! Where each setting of a config is written. serde_yaml_ng (the loader) keeps no spans, so the audit
//! reads the same text a second time with yaml-rust2's marked events into a small tree of positions,
//! and answers "where is `routes[3].auth`" with a line and column. Aliases are kept as leaves (never
//! expanded), so the tree is no larger than the text; the loader has already refused what it bounds.
//! JSON is YAML, so JSON configs are located the same way.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A node with the place it starts at (1-based line and column).
#[derive(Debug, Default)]
pub struct Node {
    pub line: usize,
    pub column: usize,
    pub kind: Kind,
}

#[derive(Debug, Default)]
pub enum Kind {
    #[default]
    Leaf,
    Scalar(String),
    /// Entries in order: the key's text, where the key is written, the value.
    Map(Vec<(String, (usize, usize), Node)>),
    Seq(Vec<Node>),
}

/// The positions of a whole document; empty if the text does not parse (the loader has said why).
#[derive(Debug, Default)]
pub struct Positions {
    root: Node,
}

/// A path into the config: map keys and sequence indices, e.g. `["routes", "3", "auth"]`.
pub type Path = Vec<String>;

/// Builds a [`Path`] from keys and indices: `path!["routes", i, "auth"]`.
#[macro_export]
macro_rules! scan_path {
    ($($part:expr),* $(,)?) => { ::std::vec::Vec::<String>::from([$($part.to_string()),*]) };
}

/// `routes[3].auth`, for messages.
pub fn show(path: &[String]) -> String {
    let mut out = String::new();
    for part in path {
        if part.parse::<usize>().is_ok() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

impl Positions {
    pub fn parse(text: &str) -> Positions {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut builder, false).is_err() {
            return Positions::default();
        }
        Positions { root: builder.root.unwrap_or_default() }
    }

    /// The line and column of the deepest part of `path` that is written: the key of a map entry,
    /// the start of a sequence item. `(1, 1)` when not even the first part is.
    pub fn locate(&self, path: &[String]) -> (usize, usize) {
        let mut at = (1, 1);
        let mut node = &self.root;
        for part in path {
            match &node.kind {
                Kind::Map(entries) => match entries.iter().find(|(k, _, _)| k == part) {
                    Some((_, key_at, value)) => {
                        at = *key_at;
                        node = value;
                    }
                    None => break,
                },
                Kind::Seq(items) => match part.parse::<usize>().ok().and_then(|i| items.get(i)) {
                    Some(item) => {
                        // A block mapping's start mark lies past its first key: use the key.
                        at = match &item.kind {
                            Kind::Map(entries) if !entries.is_empty() => entries[0].1,
                            _ => (item.line, item.column),
                        };
                        node = item;
                    }
                    None => break,
                },
                Kind::Leaf | Kind::Scalar(_) => break,
            }
        }
        at
    }

    /// The node at `path`, if written.
    pub fn get(&self, path: &[String]) -> Option<&Node> {
        let mut node = &self.root;
        for part in path {
            node = match &node.kind {
                Kind::Map(entries) => &entries.iter().find(|(k, _, _)| k == part)?.2,
                Kind::Seq(items) => items.get(part.parse::<usize>().ok()?)?,
                Kind::Leaf | Kind::Scalar(_) => return None,
            };
        }
        Some(node)
    }

    /// Every scalar value with its path (for rules that look at literal text, such as inline secrets).
    pub fn scalars(&self) -> Vec<(Path, &str, (usize, usize))> {
        let mut out = Vec::new();
        let mut stack: Vec<(Path, &Node)> = vec![(Vec::new(), &self.root)];
        while let Some((path, node)) = stack.pop() {
            match &node.kind {
                Kind::Scalar(s) => out.push((path, s.as_str(), (node.line, node.column))),
                Kind::Map(entries) => {
                    for (k, _, v) in entries.iter().rev() {
                        let mut p = path.clone();
                        p.push(k.clone());
                        stack.push((p, v));
                    }
                }
                Kind::Seq(items) => {
                    for (i, v) in items.iter().enumerate().rev() {
                        let mut p = path.clone();
                        p.push(i.to_string());
                        stack.push((p, v));
                    }
                }
                Kind::Leaf => {}
            }
        }
        out
    }
}

/// Turns the event stream into a [`Node`] tree with an explicit stack (no recursion on nesting).
/// An open collection and, for a map, its key waiting for a value.
type Open = (Node, Option<(String, (usize, usize))>);

#[derive(Default)]
struct Builder {
    /// Open collections; a map's pending key waits in `key`.
    stack: Vec<Open>,
    root: Option<Node>,
    done: bool,
}

impl Builder {
    fn add(&mut self, node: Node) {
        let Some((parent, key)) = self.stack.last_mut() else {
            if self.root.is_none() {
                self.root = Some(node);
            }
            return;
        };
        match &mut parent.kind {
            Kind::Seq(items) => items.push(node),
            Kind::Map(entries) => match key.take() {
                Some((k, at)) => entries.push((k, at, node)),
                None => {
                    // This node is a key: only a scalar key names an entry (others are never config keys).
                    let text = if let Kind::Scalar(s) = &node.kind { s.clone() } else { String::new() };
                    *key = Some((text, (node.line, node.column)));
                }
            },
            Kind::Leaf | Kind::Scalar(_) => {}
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.done {
            return;
        }
        // yaml-rust2's column is 0-based, its line 1-based.
        let (line, column) = (mark.line(), mark.col() + 1);
        match ev {
            Event::Scalar(text, ..) => self.add(Node { line, column, kind: Kind::Scalar(text) }),
            Event::Alias(_) => self.add(Node { line, column, kind: Kind::Leaf }),
            Event::SequenceStart(..) => self.stack.push((Node { line, column, kind: Kind::Seq(Vec::new()) }, None)),
            Event::MappingStart(..) => self.stack.push((Node { line, column, kind: Kind::Map(Vec::new()) }, None)),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((node, _)) = self.stack.pop() {
                    self.add(node);
                }
            }
            Event::DocumentEnd => self.done = true,
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn keys_and_items_are_located() {
        let text = "listeners:\n  - name: a\n    address: x\nroutes:\n  - name: r0\n  - name: r1\n    auth:   none\n";
        let p = Positions::parse(text);
        assert_eq!(p.locate(&scan_path!["routes", 1, "auth"]), (7, 5));
        assert_eq!(p.locate(&scan_path!["routes", 1]), (6, 5));
        assert_eq!(p.locate(&scan_path!["listeners", 0, "address"]), (3, 5));
        // Not written: the deepest part that is.
        assert_eq!(p.locate(&scan_path!["routes", 0, "authorize"]), (5, 5));
        assert_eq!(p.locate(&scan_path!["nothing"]), (1, 1));
        assert_eq!(show(&scan_path!["routes", 1, "auth"]), "routes[1].auth");
    }

    #[test]
    fn json_and_flow_styles() {
        let text = "{\n  \"routes\": [\n    {\"name\": \"a\", \"auth\": \"none\"}\n  ]\n}\n";
        let p = Positions::parse(text);
        assert_eq!(p.locate(&scan_path!["routes", 0, "auth"]), (3, 19));
        let scalars = p.scalars();
        assert!(scalars.iter().any(|(path, v, _)| show(path) == "routes[0].name" && *v == "a"));
    }

    #[test]
    fn aliases_are_not_expanded_and_bad_text_is_empty() {
        let text = "a: &x [1, 2]\nb: *x\n";
        let p = Positions::parse(text);
        assert!(matches!(p.get(&scan_path!["b"]).unwrap().kind, Kind::Leaf));
        let p = Positions::parse("a: [\n");
        assert_eq!(p.locate(&scan_path!["a"]), (1, 1));
    }
}
