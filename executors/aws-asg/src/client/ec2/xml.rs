//! A strict, bounded XML reader for EC2's answers: a small element tree over `xmlparser` (the
//! tokenizer aws-smithy-xml itself uses, already in the build).
//!
//! Strict because a truncated answer must be an error, never a shorter list of instances: an
//! unclosed element, a mismatched end tag, a second root or a malformed token all fail. Bounded
//! in depth and element count, so no answer can make the reader recurse or allocate without end
//! (the body itself is capped before it gets here).

use std::fmt;

/// Deepest nesting accepted (EC2's answers nest about ten levels).
pub const MAX_DEPTH: usize = 64;

/// Most elements accepted in one document: a full page of instances is far below this.
pub const MAX_ELEMENTS: usize = 2_000_000;

/// An element: its local name (namespace prefix dropped), its text and its child elements.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Element {
    /// Local name, e.g. `instanceId`.
    pub name: String,
    /// The element's own character data (entities decoded), concatenated.
    pub text: String,
    /// Child elements, in document order.
    pub children: Vec<Element>,
}

/// Why a document was refused; says where, never repeats the document.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct XmlError(pub String);

impl Element {
    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child named `name`.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The element at a `/`-separated path of child names below this one.
    pub fn path(&self, path: &str) -> Option<&Element> {
        path.split('/')
            .filter(|p| !p.is_empty())
            .try_fold(self, |e, name| e.child(name))
    }

    /// The text at a path, when present and not empty.
    pub fn text_at(&self, path: &str) -> Option<&str> {
        self.path(path)
            .map(|e| e.text.as_str())
            .filter(|t| !t.is_empty())
    }

    /// The `<item>` children of the element at `path` (EC2's list encoding); empty when absent.
    pub fn items<'a>(&'a self, path: &str) -> impl Iterator<Item = &'a Element> + 'a {
        self.path(path)
            .into_iter()
            .flat_map(|e| e.children_named("item"))
    }
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.name)
    }
}

/// Parses a whole document into its root element; fails on anything not well-formed.
pub fn parse(doc: &str) -> Result<Element, XmlError> {
    use xmlparser::{ElementEnd, Token};
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    for token in xmlparser::Tokenizer::from(doc) {
        let token = token.map_err(|e| XmlError(format!("malformed XML: {e}")))?;
        match token {
            Token::ElementStart { local, .. } => {
                if root.is_some() {
                    return Err(XmlError(format!(
                        "malformed XML: a second root element <{local}>"
                    )));
                }
                count += 1;
                if count > MAX_ELEMENTS || stack.len() >= MAX_DEPTH {
                    return Err(XmlError(format!(
                        "XML too large: more than {MAX_ELEMENTS} elements or {MAX_DEPTH} levels"
                    )));
                }
                stack.push(Element {
                    name: local.as_str().to_string(),
                    ..Element::default()
                });
            }
            Token::ElementEnd { end, .. } => match end {
                ElementEnd::Open => {}
                ElementEnd::Close(_, local) => {
                    let open = stack.last().map(|e| e.name.as_str());
                    if open != Some(local.as_str()) {
                        return Err(XmlError(format!(
                            "malformed XML: </{}> closes <{}>",
                            local.as_str(),
                            open.unwrap_or("nothing")
                        )));
                    }
                    close(&mut stack, &mut root);
                }
                ElementEnd::Empty => close(&mut stack, &mut root),
            },
            Token::Text { text } => {
                let t = text.as_str();
                match stack.last_mut() {
                    Some(e) => e.text.push_str(&unescape(t)?),
                    None if t.trim().is_empty() => {}
                    None => {
                        return Err(XmlError(
                            "malformed XML: text outside the root element".into(),
                        ))
                    }
                }
            }
            Token::Cdata { text, .. } => {
                if let Some(e) = stack.last_mut() {
                    e.text.push_str(text.as_str());
                }
            }
            _ => {}
        }
    }
    if let Some(open) = stack.last() {
        return Err(XmlError(format!(
            "truncated XML: <{}> is never closed",
            open.name
        )));
    }
    root.ok_or_else(|| XmlError("not XML: no root element".into()))
}

fn close(stack: &mut Vec<Element>, root: &mut Option<Element>) {
    if let Some(done) = stack.pop() {
        match stack.last_mut() {
            Some(parent) => parent.children.push(done),
            None => *root = Some(done),
        }
    }
}

/// Decodes the five predefined entities and numeric character references.
fn unescape(s: &str) -> Result<String, XmlError> {
    if !s.contains('&') {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let end = after
            .find(';')
            .filter(|&e| e <= 10)
            .ok_or_else(|| XmlError("malformed XML: an unterminated entity".into()))?;
        let name = &after[..end];
        let c = match name {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            n => {
                let code = if let Some(h) = n.strip_prefix("#x") {
                    u32::from_str_radix(h, 16).ok()
                } else if let Some(d) = n.strip_prefix('#') {
                    d.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
                    .ok_or_else(|| XmlError(format!("malformed XML: unknown entity &{n};")))?
            }
        };
        out.push(c);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_tree_with_entities_and_namespaces() {
        let e = parse(
            "<?xml version=\"1.0\"?>\n<R xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
             <a><item><k>x &amp; y &#60;&#x3e;</k></item><item><k/></item></a><b>2</b></R>",
        )
        .unwrap();
        assert_eq!(e.name, "R");
        let items: Vec<_> = e.items("a").collect();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].text_at("k"), Some("x & y <>"));
        assert_eq!(items[1].text_at("k"), None);
        assert_eq!(e.text_at("b"), Some("2"));
        assert_eq!(e.items("missing").count(), 0);
    }

    #[test]
    fn refuses_what_is_not_well_formed() {
        for (doc, want) in [
            ("<R><a>1</a>", "truncated XML: <R> is never closed"),
            ("<R><a>1</b></R>", "</b> closes <a>"),
            ("<R/><S/>", "malformed XML"),
            ("", "no root element"),
            ("Service Unavailable", "malformed XML"),
            ("<R>&bogus;</R>", "unknown entity"),
            ("<R><a", "truncated XML"),
        ] {
            let e = parse(doc).unwrap_err();
            assert!(e.0.contains(want), "{doc:?}: {e}");
        }
        let deep = "<a>".repeat(MAX_DEPTH + 1);
        assert!(parse(&deep).unwrap_err().0.contains("too large"));
    }
}
