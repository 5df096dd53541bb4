//! The response side: problem+json rejections, CORS, and the headers the gateway adds or removes.

pub mod cors;
pub mod problem;
