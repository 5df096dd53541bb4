//! The targets of a request: path segments, query names and values, cookies, selected headers, and
//! the body's values by media type (JSON keys and string leaves, form fields, multipart field values
//! and file names, XML text and attribute values). Each value is handed to [`Walker::value`] with its
//! kind and target label (`query:q`, `json:/a/0/b`, `header:user-agent` ...).

use super::detect::{protocol, TargetKind};
use super::Walker;
use crate::exchange::Reject;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// Percent-decoded once (`+` as space when `form`). Bytes that do not form UTF-8 stay
/// percent-encoded, so normalisation decodes them and flags overlong forms (`%c0%af`).
pub fn decode_component(s: &[u8], form: bool) -> Cow<'_, str> {
    if !(s.contains(&b'%') || form && s.contains(&b'+')) {
        return String::from_utf8_lossy(s);
    }
    let plus = |b: &u8| if form && *b == b'+' { b' ' } else { *b };
    let bytes: Vec<u8> = if form { s.iter().map(plus).collect() } else { s.to_vec() };
    let decoded: Vec<u8> = percent_encoding::percent_decode(&bytes).collect();
    match String::from_utf8(decoded) {
        Ok(v) => Cow::Owned(v),
        Err(e) => {
            let bytes = e.into_bytes();
            let mut out = String::with_capacity(bytes.len() + 8);
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                match std::str::from_utf8(rest) {
                    Ok(v) => {
                        out.push_str(v);
                        break;
                    }
                    Err(e) => {
                        let (good, bad) = rest.split_at(e.valid_up_to());
                        out.push_str(std::str::from_utf8(good).unwrap_or_default());
                        let n = e.error_len().unwrap_or(bad.len());
                        for b in &bad[..n] {
                            out.push_str(&format!("%{b:02x}"));
                        }
                        rest = &bad[n..];
                    }
                }
            }
            Cow::Owned(out)
        }
    }
}

pub fn path(w: &mut Walker<'_>, path: &str) -> bool {
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        let v = decode_component(seg.as_bytes(), false);
        if w.value(TargetKind::PathSegment, "path", "", &v) {
            return true;
        }
    }
    false
}

/// `a=1&b=2` pairs (query strings and form bodies): names and values.
pub fn pairs(
    w: &mut Walker<'_>,
    s: &[u8],
    name_kind: TargetKind,
    value_kind: TargetKind,
    prefix: &'static str,
) -> bool {
    let name_prefix = if prefix == "query" { "query-name" } else { "form-name" };
    for pair in s.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (n, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let name = decode_component(n, true);
        if w.value(name_kind, name_prefix, &name, &name) {
            return true;
        }
        if !v.is_empty() {
            let value = decode_component(v, true);
            if w.value(value_kind, prefix, &name, &value) {
                return true;
            }
        }
    }
    false
}

pub fn cookies(w: &mut Walker<'_>, header: &[u8]) -> bool {
    for c in header.split(|&b| b == b';') {
        let c = c.trim_ascii();
        let (n, v) = match c.iter().position(|&b| b == b'=') {
            Some(i) => (&c[..i], &c[i + 1..]),
            None => (c, &b""[..]),
        };
        if v.is_empty() {
            continue;
        }
        let name = String::from_utf8_lossy(n);
        let value = decode_component(v, false);
        if w.value(TargetKind::Cookie, "cookie", &name, &value) {
            return true;
        }
    }
    false
}

/// What the body is, judged by its declared media type.
pub enum BodyKind {
    Json,
    Xml,
    Form,
    Multipart,
    Text,
    /// Not inspected as text (octet-stream, images ...).
    Opaque,
}

pub fn body_kind(media: &str, body: &[u8]) -> BodyKind {
    match media {
        "application/json" => BodyKind::Json,
        m if m.starts_with("application/") && m.ends_with("+json") => BodyKind::Json,
        "application/xml" | "text/xml" => BodyKind::Xml,
        m if m.ends_with("+xml") => BodyKind::Xml,
        "application/x-www-form-urlencoded" => BodyKind::Form,
        "multipart/form-data" => BodyKind::Multipart,
        m if m.starts_with("text/") => BodyKind::Text,
        "" => {
            // No declared type: an upstream may sniff it, so it is read as what it looks like.
            match body.iter().find(|b| !b.is_ascii_whitespace()) {
                Some(b'{' | b'[') if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() => BodyKind::Json,
                Some(b'<') => BodyKind::Text,
                _ if std::str::from_utf8(body).is_ok() => BodyKind::Text,
                _ => BodyKind::Opaque,
            }
        }
        _ => BodyKind::Opaque,
    }
}

fn json_offset(body: &[u8], line: usize, column: usize) -> u64 {
    let mut offset = 0usize;
    for (i, l) in body.split(|b| *b == b'\n').enumerate() {
        if i + 1 == line {
            return (offset + column.saturating_sub(1)) as u64;
        }
        offset += l.len() + 1;
    }
    offset as u64
}

/// Walks a JSON body without building it: keys and string leaves go to the walker (numbers, booleans
/// and null are not inspected). Nesting is bounded by serde_json's recursion limit (128).
pub fn json(w: &mut Walker<'_>, body: &[u8]) -> Result<(), Reject> {
    let mut ptr = String::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    let seed = JsonSeed { w, ptr: &mut ptr };
    let r = seed.deserialize(&mut de).and_then(|()| de.end());
    match r {
        Ok(()) => Ok(()),
        // The walker stopped early (a block decision was reached): not a malformed body.
        Err(_) if w.stopped => Ok(()),
        Err(e) => {
            Err(Reject::MalformedJson { offset: json_offset(body, e.line(), e.column()), reason: "malformed JSON" })
        }
    }
}

struct JsonSeed<'a, 'w, 'e> {
    w: &'a mut Walker<'e>,
    ptr: &'w mut String,
}

fn push_pointer(ptr: &mut String, key: &str) {
    ptr.push('/');
    for c in key.chars() {
        match c {
            '~' => ptr.push_str("~0"),
            '/' => ptr.push_str("~1"),
            c => ptr.push(c),
        }
    }
}

fn stop<E: serde::de::Error>() -> E {
    E::custom("inspection stopped")
}

impl<'de> DeserializeSeed<'de> for JsonSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JsonSeed<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        if self.w.value(TargetKind::JsonString, "json", self.ptr, v) {
            return Err(stop());
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0usize;
        loop {
            let len = self.ptr.len();
            self.ptr.push('/');
            self.ptr.push_str(itoa::Buffer::new().format(i));
            let more = seq.next_element_seed(JsonSeed { w: self.w, ptr: self.ptr })?;
            self.ptr.truncate(len);
            if more.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        loop {
            let len = self.ptr.len();
            if map.next_key_seed(KeySeed { w: self.w, ptr: self.ptr })?.is_none() {
                return Ok(());
            }
            map.next_value_seed(JsonSeed { w: self.w, ptr: self.ptr })?;
            self.ptr.truncate(len);
        }
    }
}

struct KeySeed<'a, 'w, 'e> {
    w: &'a mut Walker<'e>,
    ptr: &'w mut String,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        push_pointer(self.ptr, v);
        if self.w.value(TargetKind::JsonKey, "json-key", self.ptr, v) {
            return Err(stop());
        }
        Ok(())
    }
}

/// Multipart form data: each part's field value (when it is text and not a file) and file name.
/// A body that does not frame as multipart with its boundary is malformed.
pub fn multipart(w: &mut Walker<'_>, body: &[u8], boundary: Option<&str>) -> Result<(), Reject> {
    let bad = Reject::BadRequest("malformed multipart body");
    let boundary = boundary.filter(|b| !b.is_empty() && b.len() <= 200).ok_or(bad.clone())?;
    let delim = format!("--{boundary}");
    let finder = memchr::memmem::Finder::new(delim.as_bytes());
    let mut positions = finder.find_iter(body);
    let Some(mut at) = positions.next() else { return Err(bad) };
    loop {
        let after = at + delim.len();
        if body.get(after..after + 2) == Some(b"--") {
            return Ok(());
        }
        let Some(next) = positions.next() else { return Err(bad) };
        let part = body.get(after..next).ok_or(bad.clone())?;
        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        let part = part.strip_suffix(b"\r\n").unwrap_or(part);
        let Some(split) = memchr::memmem::find(part, b"\r\n\r\n") else { return Err(bad) };
        let (head, content) = (&part[..split], &part[split + 4..]);
        let head = String::from_utf8_lossy(head);
        let mut name = String::new();
        let mut filename: Option<String> = None;
        let mut text = true;
        for line in head.split("\r\n") {
            let Some((k, v)) = line.split_once(':') else { continue };
            let k = k.trim();
            if k.eq_ignore_ascii_case("content-disposition") {
                for (pk, pv) in disposition_params(v) {
                    match pk.to_ascii_lowercase().as_str() {
                        "name" => name = pv,
                        "filename" => filename = Some(pv),
                        _ => {}
                    }
                }
            } else if k.eq_ignore_ascii_case("content-type") {
                // A part whose type does not parse is read as text (never skipped on a guess).
                text = crate::content::media_type(v).is_none_or(|m| {
                    m.top() == "text" || m.is_json() || m.is_form() || m.is_xml() || !is_binary(content)
                });
            }
        }
        if let Some(f) = &filename {
            if w.value(TargetKind::FileName, "filename", &name, f) {
                return Ok(());
            }
        } else if text {
            let v = String::from_utf8_lossy(content);
            if w.value(TargetKind::MultipartValue, "form", &name, &v) {
                return Ok(());
            }
        }
        at = next;
    }
}

/// The `key=value` parameters of a `Content-Disposition` value (after its type); a quoted value may
/// hold `;` and `\"`.
fn disposition_params(v: &str) -> Vec<(String, String)> {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut i = b.iter().position(|&c| c == b';').map_or(b.len(), |p| p + 1);
    while i < b.len() {
        while i < b.len() && (b[i] == b' ' || b[i] == b';' || b[i] == b'\t') {
            i += 1;
        }
        let k0 = i;
        while i < b.len() && b[i] != b'=' && b[i] != b';' {
            i += 1;
        }
        let key = v[k0..i].trim().to_owned();
        if i >= b.len() || b[i] == b';' {
            continue;
        }
        i += 1;
        let mut value = Vec::new();
        if b.get(i) == Some(&b'"') {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                value.push(b[i]);
                i += 1;
            }
            i += 1;
        } else {
            while i < b.len() && b[i] != b';' {
                value.push(b[i]);
                i += 1;
            }
        }
        out.push((key, String::from_utf8_lossy(&value).trim().to_owned()));
    }
    out
}

/// XML text and attribute values, read with quick-xml (non-validating, entities never resolved: a
/// DTD is refused before anything else, and only the five predefined entities and character
/// references are decoded).
pub fn xml(w: &mut Walker<'_>, body: &[u8]) -> Result<(), Reject> {
    use quick_xml::events::Event;
    let bad = Reject::BadRequest("malformed XML body");
    let mut reader = quick_xml::Reader::from_reader(body);
    reader.config_mut().check_end_names = true;
    let mut path = String::new();
    let mut lens: Vec<usize> = Vec::new();
    // An element's text arrives in pieces (text, references, CDATA): it is inspected whole.
    let mut text = String::new();
    loop {
        let event = reader.read_event().map_err(|_| bad.clone())?;
        if matches!(event, Event::Start(_) | Event::Empty(_) | Event::End(_) | Event::Eof) && flush(w, &mut text, &path)
        {
            return Ok(());
        }
        match event {
            Event::Eof => {
                return if lens.is_empty() { Ok(()) } else { Err(bad) };
            }
            Event::DocType(_) => {
                w.protocol(&protocol::XML_DTD, "xml", "");
                return Ok(());
            }
            Event::Start(e) => {
                lens.push(path.len());
                path.push('/');
                path.push_str(&String::from_utf8_lossy(e.name().as_ref()));
                if attrs(w, &e, &path)? {
                    return Ok(());
                }
                if lens.len() > 256 {
                    return Err(bad);
                }
            }
            Event::Empty(e) => {
                let len = path.len();
                path.push('/');
                path.push_str(&String::from_utf8_lossy(e.name().as_ref()));
                if attrs(w, &e, &path)? {
                    return Ok(());
                }
                path.truncate(len);
            }
            Event::End(_) => {
                let len = lens.pop().ok_or(bad.clone())?;
                path.truncate(len);
            }
            Event::Text(t) => text.push_str(&String::from_utf8_lossy(t.as_ref())),
            Event::CData(t) => text.push_str(&String::from_utf8_lossy(t.as_ref())),
            Event::GeneralRef(r) => {
                // Only character references and the five predefined entities exist without a DTD.
                let name = String::from_utf8_lossy(r.as_ref());
                let reference = format!("&{name};");
                let resolved = quick_xml::escape::unescape(&reference).map_err(|_| bad.clone())?;
                text.push_str(&resolved);
            }
            _ => {}
        }
    }
}

/// Inspects the text gathered so far (if any) and empties it; true when inspection stops.
fn flush(w: &mut Walker<'_>, text: &mut String, path: &str) -> bool {
    let stop = !text.trim().is_empty() && w.value(TargetKind::XmlText, "xml", path, text);
    text.clear();
    stop
}

fn attrs(w: &mut Walker<'_>, e: &quick_xml::events::BytesStart<'_>, path: &str) -> Result<bool, Reject> {
    let bad = Reject::BadRequest("malformed XML body");
    for a in e.attributes() {
        let a = a.map_err(|_| bad.clone())?;
        let raw = String::from_utf8_lossy(&a.value);
        let v = quick_xml::escape::unescape(&raw).map_err(|_| bad.clone())?;
        let label = format!("{path}@{}", String::from_utf8_lossy(a.key.as_ref()));
        if w.value(TargetKind::XmlAttribute, "xml", &label, &v) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Bytes that are not UTF-8 text (a file's content): not inspected as text.
fn is_binary(content: &[u8]) -> bool {
    std::str::from_utf8(content).is_err()
}
