//! A minimal XML tree for SQS query-protocol responses (which are small and flat).

use quick_xml::events::Event;
use quick_xml::Reader;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Element {
    /// Local name (namespace prefix stripped).
    pub name: String,
    /// Concatenated, unescaped text content directly inside this element.
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    /// Depth-first search for the first descendant (or self) with this name.
    pub fn find(&self, name: &str) -> Option<&Element> {
        if self.name == name {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(name))
    }
}

fn local(name: &str) -> String {
    match name.rsplit_once(':') {
        Some((_, l)) => l.to_string(),
        None => name.to_string(),
    }
}

/// Parse a document into its root element. Character and predefined entity references are
/// resolved; text is taken verbatim otherwise (SQS encodes CR as `&#xD;`, so no EOL folding).
pub fn parse(doc: &str) -> Result<Element, String> {
    let mut reader = Reader::from_str(doc);
    let mut stack: Vec<Element> = Vec::new();
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| format!("malformed XML: {e}"))?;
        match ev {
            Event::Start(s) => stack.push(Element {
                name: local(s.name().as_ref()),
                ..Default::default()
            }),
            Event::Empty(s) => {
                let el = Element {
                    name: local(s.name().as_ref()),
                    ..Default::default()
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => return Ok(el),
                }
            }
            Event::End(_) => {
                let el = stack.pop().ok_or("unbalanced XML")?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => return Ok(el),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.into_inner());
                }
            }
            Event::CData(c) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&c.into_inner());
                }
            }
            Event::GeneralRef(r) => {
                let top = stack.last_mut().ok_or("reference outside an element")?;
                if r.is_char_ref() {
                    let c = r
                        .resolve_char_ref()
                        .map_err(|e| format!("bad character reference: {e}"))?
                        .ok_or("bad character reference")?;
                    top.text.push(c);
                } else {
                    let name = r.into_inner();
                    let s = quick_xml::escape::resolve_predefined_entity(&name)
                        .ok_or_else(|| format!("unknown entity &{name};"))?;
                    top.text.push_str(s);
                }
            }
            Event::Eof => return Err("XML document ended early".into()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities_and_char_refs() {
        let el = parse(r#"<?xml version="1.0"?><a xmlns="x"><b>{&quot;k&quot;:&quot;&lt;&amp;&gt;&apos;&#xD;&#10;é&quot;}</b><c/></a>"#).unwrap();
        assert_eq!(el.name, "a");
        assert_eq!(el.child_text("b"), Some("{\"k\":\"<&>'\r\né\"}"));
        assert!(el.child("c").is_some());
    }

    #[test]
    fn malformed() {
        assert!(parse("<a><b></a>").is_err());
        assert!(parse("<a>").is_err());
        assert!(parse("<a>&bogus;</a>").is_err());
        assert!(parse("").is_err());
    }
}
