//! The `system.login.console` edit that puts keyward's login capture in the login, and takes it
//! out: pure functions from the XML property list `security authorizationdb read
//! system.login.console` prints to the one `security authorizationdb write` takes. No I/O
//! here ([`crate::authdb`] runs the tool).
//!
//! The rule: `keyward:capture,privileged` goes right after `builtin:authenticate,privileged`
//! (so it only ever sees a password macOS has just accepted), once; everything else in the
//! right — other keys, other mechanisms, third-party ones included, and their order — is kept
//! as it was. The edit is made on the text, as `pam-auth-update` edits /etc/pam.d: one
//! `<string>` line is inserted (indented like the line above it) or removed, and every other
//! byte is the one that was read, so uninstall gives back exactly the bytes install read. The
//! result is parsed back and compared, key by key, before it is handed out. A right keyward
//! does not understand is refused, never guessed at.

use plist::Value;

/// The right keyward edits.
pub const RIGHT: &str = "system.login.console";
/// keyward's mechanism (the bundle `keyward`, mechanism `capture`, in the root plugin host):
/// the plug-in's own constant, so the bundle's name and the right's entry cannot drift apart.
pub const CAPTURE: &str = keyward_authplugin::CAPTURE_RIGHT_ENTRY;
/// The mechanism keyward's goes right after: macOS's own password check.
pub const AUTHENTICATE: &str = "builtin:authenticate,privileged";

/// Why a right was refused. Rights carry no secrets; mechanism names are quoted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoginRightError {
    /// Not a property list.
    #[error("the right is not a property list: {0}")]
    NotAPlist(String),
    /// A property list, but not a dictionary.
    #[error("the right is not a dictionary")]
    NotADictionary,
    /// `class` is not `evaluate-mechanisms`: the right runs no mechanisms.
    #[error("the right's class is {0:?}, not \"evaluate-mechanisms\"")]
    NotMechanismBased(Option<String>),
    /// No `mechanisms` array.
    #[error("the right has no mechanisms array")]
    NoMechanisms,
    /// An entry of `mechanisms` that is not a string.
    #[error("the right's mechanisms array holds something other than strings")]
    NonStringMechanism,
    /// No `builtin:authenticate,privileged`: keyward will not guess where the password is
    /// checked.
    #[error("the right has no \"builtin:authenticate,privileged\": keyward will not guess where macOS checks the password")]
    NoAuthenticate,
    /// `builtin:authenticate,privileged` more than once.
    #[error("the right has \"builtin:authenticate,privileged\" {0} times")]
    ManyAuthenticate(usize),
    /// A `keyward:` mechanism other than keyward's own one right after authentication: moved,
    /// duplicated, or unprivileged. An administrator changed it; keyward leaves it to them.
    #[error("the right has {found:?} at position {position}, which is not where keyward puts its mechanism (right after \"builtin:authenticate,privileged\"); remove it, then install again")]
    UnexpectedKeywardMechanism {
        /// The entry.
        found: String,
        /// Its index in `mechanisms`.
        position: usize,
    },
    /// The edited right did not parse back to exactly what was meant.
    #[error("the edited right does not read back as written")]
    RoundTrip,
    /// The mechanism's `<string>` element is not spelled exactly once in the text (it is also
    /// in a comment, or written with entities): keyward edits the text and will not guess.
    #[error("{0:?} is not written exactly once as a plain <string> element in the right's text; keyward will not guess which one to edit")]
    NotPlainText(&'static str),
}

/// The outcome of an edit.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Edit {
    /// Nothing to do: keyward's mechanism is already where it belongs (install), or absent
    /// (uninstall).
    Unchanged,
    /// The new definition to write.
    Changed {
        /// The right, as an XML property list.
        plist: Vec<u8>,
        /// Install: the mechanism that was right after `builtin:authenticate,privileged` and
        /// now follows keyward's (kept, in place); uninstall: `None`.
        kept_after: Option<String>,
    },
}

/// The right with `keyward:capture,privileged` right after `builtin:authenticate,privileged`.
pub fn insert_capture(xml: &[u8]) -> Result<Edit, LoginRightError> {
    let (value, names) = parse(xml)?;
    let at = authenticate_position(&names)?;
    let ours = keyward_entries(&names);
    match ours.as_slice() {
        [] => {}
        [(p, name)] if *p == at + 1 && name == CAPTURE => return Ok(Edit::Unchanged),
        [(p, name), ..] => {
            return Err(LoginRightError::UnexpectedKeywardMechanism {
                found: name.clone(),
                position: *p,
            })
        }
    }
    let kept_after = names.get(at + 1).cloned();
    let mut edited = names;
    edited.insert(at + 1, CAPTURE.to_owned());
    let text = plist_text(xml);
    let anchor = element(AUTHENTICATE);
    let start = only_occurrence(text, &anchor, AUTHENTICATE)?;
    let end = start + anchor.len();
    // On a line of its own, the new element gets a line of its own with the same indentation;
    // otherwise (a one-line array) it goes right after the anchor.
    let mut insertion = Vec::new();
    if let Some(indent) = own_line_indent(text, start) {
        insertion.push(b'\n');
        insertion.extend_from_slice(indent);
    }
    insertion.extend_from_slice(element(CAPTURE).as_bytes());
    let plist = [&text[..end], &insertion[..], &text[end..]].concat();
    check(&value, &plist, edited)?;
    Ok(Edit::Changed { plist, kept_after })
}

/// The right without `keyward:capture,privileged` (the reverse of [`insert_capture`]).
/// Other `keyward:` entries are refused as on install: keyward removes only what it adds.
pub fn remove_capture(xml: &[u8]) -> Result<Edit, LoginRightError> {
    let (value, names) = parse(xml)?;
    let ours = keyward_entries(&names);
    if let Some((position, found)) = ours.iter().find(|(_, n)| n != CAPTURE) {
        return Err(LoginRightError::UnexpectedKeywardMechanism {
            found: found.clone(),
            position: *position,
        });
    }
    if ours.is_empty() {
        return Ok(Edit::Unchanged);
    }
    let edited: Vec<String> = names.into_iter().filter(|n| n != CAPTURE).collect();
    let text = plist_text(xml);
    let ours = element(CAPTURE);
    let start = only_occurrence(text, &ours, CAPTURE)?;
    let end = start + ours.len();
    // The reverse of insert_capture: the element and the line break (and indentation) before it.
    let from = match own_line_indent(text, start) {
        Some(indent) => {
            let newline = start - indent.len() - 1;
            if newline > 0 && text[newline - 1] == b'\r' {
                newline - 1
            } else {
                newline
            }
        }
        None => start,
    };
    let plist = [&text[..from], &text[end..]].concat();
    check(&value, &plist, edited)?;
    Ok(Edit::Changed {
        plist,
        kept_after: None,
    })
}

/// The mechanism names of a right, in order.
pub fn mechanisms(xml: &[u8]) -> Result<Vec<String>, LoginRightError> {
    parse(xml).map(|(_, names)| names)
}

/// Parse the right and check it is one keyward understands.
fn parse(xml: &[u8]) -> Result<(Value, Vec<String>), LoginRightError> {
    // `security` prints its status on stderr, but tolerate it (or anything) after the plist.
    let end = find(xml, b"</plist>").map_or(xml.len(), |i| i + b"</plist>".len());
    let value = Value::from_reader_xml(&xml[..end])
        .map_err(|e| LoginRightError::NotAPlist(e.to_string()))?;
    let dict = value
        .as_dictionary()
        .ok_or(LoginRightError::NotADictionary)?;
    let class = dict.get("class").and_then(Value::as_string);
    if class != Some("evaluate-mechanisms") {
        return Err(LoginRightError::NotMechanismBased(class.map(str::to_owned)));
    }
    let names = dict
        .get("mechanisms")
        .and_then(Value::as_array)
        .ok_or(LoginRightError::NoMechanisms)?
        .iter()
        .map(|m| m.as_string().map(str::to_owned))
        .collect::<Option<Vec<_>>>()
        .ok_or(LoginRightError::NonStringMechanism)?;
    Ok((value, names))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Where `builtin:authenticate,privileged` is; exactly once.
fn authenticate_position(names: &[String]) -> Result<usize, LoginRightError> {
    let found: Vec<usize> = names
        .iter()
        .enumerate()
        .filter(|(_, n)| *n == AUTHENTICATE)
        .map(|(i, _)| i)
        .collect();
    match found.as_slice() {
        [] => Err(LoginRightError::NoAuthenticate),
        [one] => Ok(*one),
        many => Err(LoginRightError::ManyAuthenticate(many.len())),
    }
}

/// Every entry of keyward's plugin, with its position.
fn keyward_entries(names: &[String]) -> Vec<(usize, String)> {
    names
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            n.strip_prefix(keyward_authplugin::PLUGIN_NAME)
                .is_some_and(|rest| rest.starts_with(':'))
        })
        .map(|(i, n)| (i, n.clone()))
        .collect()
}

/// The property list itself: what was read, up to `</plist>` and the line break after it
/// (anything after that is not part of the right).
fn plist_text(xml: &[u8]) -> &[u8] {
    let Some(at) = find(xml, b"</plist>") else {
        return xml;
    };
    let mut end = at + b"</plist>".len();
    if xml.get(end) == Some(&b'\r') {
        end += 1;
    }
    if xml.get(end) == Some(&b'\n') {
        end += 1;
    }
    &xml[..end]
}

/// A mechanism as the `<string>` element the right's text holds.
fn element(name: &str) -> String {
    format!("<string>{name}</string>")
}

/// Where `needle` is in `text`; it must be there exactly once.
fn only_occurrence(
    text: &[u8],
    needle: &str,
    name: &'static str,
) -> Result<usize, LoginRightError> {
    let needle = needle.as_bytes();
    let mut found =
        (0..text.len().saturating_sub(needle.len() - 1)).filter(|&i| text[i..].starts_with(needle));
    match (found.next(), found.next()) {
        (Some(at), None) => Ok(at),
        _ => Err(LoginRightError::NotPlainText(name)),
    }
}

/// The indentation before the element at `start`, if only spaces and tabs precede it on its
/// line (and a line break precedes the line).
fn own_line_indent(text: &[u8], start: usize) -> Option<&[u8]> {
    let line_start = text[..start].iter().rposition(|b| *b == b'\n')? + 1;
    let indent = &text[line_start..start];
    indent
        .iter()
        .all(|b| *b == b' ' || *b == b'\t')
        .then_some(indent)
}

/// The edited text must parse to the original right with exactly `names` as its mechanisms,
/// every other key and value unchanged (reals included).
fn check(original: &Value, edited: &[u8], names: Vec<String>) -> Result<(), LoginRightError> {
    let mut want = original.clone();
    let array = names.into_iter().map(Value::String).collect();
    match want.as_dictionary_mut() {
        Some(dict) => dict.insert("mechanisms".to_owned(), Value::Array(array)),
        None => return Err(LoginRightError::NotADictionary),
    };
    match Value::from_reader_xml(edited) {
        Ok(back) if back == want => Ok(()),
        _ => Err(LoginRightError::RoundTrip),
    }
}
