//! Rules that normalisation and body parsing raise themselves (10xxx: XXE and protocol).
//!
//! A NUL byte or an overlong UTF-8 sequence in a decoded value is never legitimate text and is the
//! classic way past path and extension checks, so both are reported in the `traversal` category.
//! A DTD in an XML body (an entity declaration, internal or external) is refused as `xxe`, in block
//! mode whatever the route's threshold.

use super::{Category, Rule};

pub static XML_DTD: Rule =
    Rule { id: 10001, category: Category::Xxe, paranoia: 1, score: 5, name: "XML body with a DTD or an entity" };
pub static NUL: Rule =
    Rule { id: 10101, category: Category::Traversal, paranoia: 1, score: 5, name: "NUL byte in a decoded value" };
pub static OVERLONG_UTF8: Rule =
    Rule { id: 10102, category: Category::Traversal, paranoia: 1, score: 5, name: "overlong UTF-8 sequence" };
