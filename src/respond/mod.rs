//! The response side: problem+json rejections, CORS, and response protection (security headers, error
//! scrubbing, JSON-only routes, data-loss masking: `protect`).

pub mod cors;
pub mod json_mask;
pub mod mask;
pub mod problem;
pub mod protect;
