//! Settings the user set in a local IM client, read from the client's own
//! files as its module's `reader` declares ([`ClientReader`]): Pidgin's
//! saved status and buddy icon, Psi's last status message. Pure: `watch`
//! decides what to report.
//!
//! A path is a list of steps from the root element: `name` or
//! `name[@attribute='value']`, the last one optionally `@attribute` (its
//! value) instead of an element (its text). `{other}` in a test's value is
//! the value named `other`, read first.

use gateway_api::ClientReader;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a reader found; `None` fields are not set in the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalSettings {
    /// Status message.
    pub signature: Option<String>,
    /// Mood.
    pub mood: Option<String>,
    /// The image file the client uses as avatar.
    pub avatar: Option<PathBuf>,
}

/// Why a client's files could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {reason}")]
pub struct ReaderError {
    /// The file (or the reader's declaration).
    pub file: String,
    /// What is wrong.
    pub reason: String,
}

/// Reads a client's settings; `Ok(None)` when none of its files exists
/// (the client is not used here).
pub fn read(reader: &ClientReader, home: &Path) -> Result<Option<LocalSettings>, ReaderError> {
    let mut files: BTreeMap<&str, (PathBuf, String)> = BTreeMap::new();
    for (name, paths) in &reader.files {
        let found = paths.iter().map(|p| expand(home, p)).find(|p| p.is_file());
        if let Some(path) = found {
            let text = std::fs::read_to_string(&path).map_err(|e| ReaderError {
                file: path.display().to_string(),
                reason: e.to_string(),
            })?;
            files.insert(name, (path, text));
        }
    }
    if files.is_empty() {
        return Ok(None);
    }
    let mut docs = BTreeMap::new();
    for (name, (path, text)) in &files {
        // Psi's files start with a DOCTYPE; roxmltree bounds what entities
        // may expand to.
        let options = roxmltree::ParsingOptions {
            allow_dtd: true,
            ..roxmltree::ParsingOptions::default()
        };
        let doc =
            roxmltree::Document::parse_with_options(text, options).map_err(|e| ReaderError {
                file: path.display().to_string(),
                reason: format!("not XML this monitor understands: {e}"),
            })?;
        docs.insert(*name, (path, doc));
    }
    let mut values: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut get = |name: &str| value(reader, &docs, name, &mut values, 0);
    let signature = get("signature")?;
    let mood = get("mood")?;
    let avatar = get("avatar")?
        .filter(|p| !p.trim().is_empty())
        .map(|p| expand(home, &p));
    Ok(Some(LocalSettings {
        signature,
        mood,
        avatar,
    }))
}

type Docs<'a> = BTreeMap<&'a str, (&'a PathBuf, roxmltree::Document<'a>)>;

/// Value `name` (memoized), its placeholders resolved first.
fn value(
    reader: &ClientReader,
    docs: &Docs<'_>,
    name: &str,
    memo: &mut BTreeMap<String, Option<String>>,
    depth: usize,
) -> Result<Option<String>, ReaderError> {
    if let Some(known) = memo.get(name) {
        return Ok(known.clone());
    }
    let Some(spec) = reader.values.get(name) else {
        return Ok(None);
    };
    let declared = |reason: String| ReaderError {
        file: format!("the reader's value {name:?}"),
        reason,
    };
    if depth > 8 {
        return Err(declared("its placeholders refer to each other".into()));
    }
    let Some((path, doc)) = docs.get(spec.file.as_str()) else {
        // That file is absent here: the value is not set.
        return Ok(None);
    };
    // Fill `{other}` placeholders.
    let mut xml = String::new();
    let mut rest = spec.xml.as_str();
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .map(|c| open + c)
            .ok_or_else(|| declared(format!("an unclosed {{ in {:?}", spec.xml)))?;
        xml.push_str(&rest[..open]);
        let other = &rest[open + 1..close];
        match value(reader, docs, other, memo, depth + 1)? {
            Some(v) => xml.push_str(&v.replace('\'', "")),
            None => {
                memo.insert(name.to_owned(), None);
                return Ok(None);
            }
        }
        rest = &rest[close + 1..];
    }
    xml.push_str(rest);
    let found = select(doc, &xml).map_err(|reason| ReaderError {
        file: path.display().to_string(),
        reason: format!("the reader's path {:?}: {reason}", spec.xml),
    })?;
    memo.insert(name.to_owned(), found.clone());
    Ok(found)
}

/// One step of a path.
struct Step<'p> {
    name: &'p str,
    test: Option<(&'p str, &'p str)>,
}

fn step(text: &str) -> Result<Step<'_>, String> {
    let Some(open) = text.find('[') else {
        return Ok(Step {
            name: text,
            test: None,
        });
    };
    let inner = text[open..]
        .strip_prefix("[@")
        .and_then(|t| t.strip_suffix("']"))
        .ok_or_else(|| format!("{text:?} is not name[@attribute='value']"))?;
    let (attribute, value) = inner
        .split_once("='")
        .ok_or_else(|| format!("{text:?} is not name[@attribute='value']"))?;
    Ok(Step {
        name: &text[..open],
        test: Some((attribute, value)),
    })
}

/// The text or attribute `path` names in `doc` (the first match).
pub fn select(doc: &roxmltree::Document<'_>, path: &str) -> Result<Option<String>, String> {
    let parts: Vec<&str> = path
        .strip_prefix('/')
        .ok_or("a path starts at the root: /")?
        .split('/')
        .collect();
    let (attribute, elements) = match parts.split_last() {
        Some((last, before)) if last.starts_with('@') => (Some(&last[1..]), before),
        _ => (None, parts.as_slice()),
    };
    let steps = elements
        .iter()
        .map(|s| step(s))
        .collect::<Result<Vec<_>, _>>()?;
    let Some((first, below)) = steps.split_first() else {
        return Err("the path names no element".into());
    };
    let matches = |node: &roxmltree::Node<'_, '_>, s: &Step<'_>| {
        node.is_element()
            && node.tag_name().name() == s.name
            && s.test.is_none_or(|(a, v)| node.attribute(a) == Some(v))
    };
    let root = doc.root_element();
    if !matches(&root, first) {
        return Ok(None);
    }
    let mut current = vec![root];
    for s in below {
        current = current
            .iter()
            .flat_map(|n| n.children())
            .filter(|n| matches(n, s))
            .collect();
    }
    Ok(current.first().and_then(|node| match attribute {
        Some(a) => node.attribute(a).map(str::to_owned),
        None => Some(node.text().unwrap_or_default().to_owned()),
    }))
}

fn expand(home: &Path, path: &str) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None => PathBuf::from(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pidgin() -> ClientReader {
        serde_json::from_value(serde_json::json!({
            "files": {"prefs": ["~/.purple/prefs.xml"], "status": ["~/.purple/status.xml"]},
            "values": {
                "current": {"file": "prefs", "xml": "/pref/pref[@name='purple']/pref[@name='savedstatus']/pref[@name='default']/@value"},
                "signature": {"file": "status", "xml": "/statuses/status[@created='{current}']/message"},
                "avatar": {"file": "prefs", "xml": "/pref/pref[@name='pidgin']/pref[@name='accounts']/pref[@name='buddyicon']/@value"}
            }
        }))
        .unwrap()
    }

    fn write(home: &Path, name: &str, text: &str) {
        let path = home.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn pidgins_current_saved_status_and_buddy_icon_are_read() {
        let home = tempfile::tempdir().unwrap();
        assert_eq!(read(&pidgin(), home.path()), Ok(None));
        write(
            home.path(),
            ".purple/prefs.xml",
            "<?xml version='1.0' encoding='UTF-8' ?>\n<pref version='1' name='/'>\
             <pref name='purple'><pref name='savedstatus'>\
             <pref name='default' type='int' value='1700000002'/></pref></pref>\
             <pref name='pidgin'><pref name='accounts'>\
             <pref name='buddyicon' type='path' value='/pics/me.png'/></pref></pref></pref>",
        );
        write(
            home.path(),
            ".purple/status.xml",
            "<?xml version='1.0' encoding='UTF-8' ?>\n<statuses version='1.0'>\
             <status type='available' name='Old' created='1700000001'><state>available</state>\
             <message>old one</message></status>\
             <status type='away' name='Now' created='1700000002'><state>away</state>\
             <message>In a meeting &amp; busy</message></status></statuses>",
        );
        let got = read(&pidgin(), home.path()).unwrap().unwrap();
        assert_eq!(got.signature.as_deref(), Some("In a meeting & busy"));
        assert_eq!(got.avatar, Some(PathBuf::from("/pics/me.png")));
        assert_eq!(got.mood, None);
    }

    /// The reader of a client in the reference xmpp hints.
    fn shipped(client: &str) -> ClientReader {
        let hints: gateway_api::DetectHints =
            serde_json::from_str(include_str!("../../plugins/xmpp/detect.json")).unwrap();
        hints
            .named_clients("XMPP")
            .into_iter()
            .find(|c| c.name == client)
            .and_then(|c| c.reader)
            .unwrap()
    }

    #[test]
    fn the_shipped_readers_read_pidgin_and_psi() {
        assert_eq!(shipped("Pidgin"), pidgin());
        let home = tempfile::tempdir().unwrap();
        write(
            home.path(),
            ".config/psi/profiles/default/options.xml",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE psi>\n\
             <psi version=\"1.5\" application=\"Psi\" xmlns=\"http://psi-im.org/options\">\
             <options><status><last-message type=\"QString\">Reading</last-message>\
             <last-status type=\"QString\">away</last-status></status></options></psi>",
        );
        let got = read(&shipped("Psi"), home.path()).unwrap().unwrap();
        assert_eq!(got.signature.as_deref(), Some("Reading"));
    }

    #[test]
    fn a_file_that_is_not_xml_or_a_bad_path_is_an_error_naming_it() {
        let home = tempfile::tempdir().unwrap();
        write(
            home.path(),
            ".purple/prefs.xml",
            "<pref name='/'><unclosed>",
        );
        let e = read(&pidgin(), home.path()).unwrap_err();
        assert!(
            e.file.ends_with("prefs.xml") && e.reason.contains("not XML"),
            "{e}"
        );
        let doc = roxmltree::Document::parse("<a><b x='1'>t</b></a>").unwrap();
        assert_eq!(select(&doc, "/a/b[@x='1']"), Ok(Some("t".into())));
        assert_eq!(select(&doc, "/a/b/@x"), Ok(Some("1".into())));
        assert_eq!(select(&doc, "/a/c"), Ok(None));
        assert!(select(&doc, "a/b").is_err());
        assert!(select(&doc, "/a/b[x=1]").is_err());
    }
}
