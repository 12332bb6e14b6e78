//! aifb's offline analyzer.
//!
//! | module | role |
//! |---|---|
//! | [`stages`] | per-stage aggregates from request rows and stage windows |
//! | [`bottleneck`] | bottleneck attribution per level from metrics.parquet |
//! | [`changepoint`] | change points by E-divisive means (steadiness within a level) |
//! | [`html`] | the self-contained report.html |
//! | [`knee`] | the Kneedle knee (matches kneed 0.9.0 for concave, increasing curves) |
//! | [`regress`] | the regression gate: comparability, block-bootstrap verdicts, exact tests |
//! | [`report`] | the report: saturation summary, report.md and report.json |
//! | [`plot`] | SVG plots with an embedded font |
//! | [`summary`] | streaming per-level summary of files of any size |
//! | [`table`] | two-column CSV input with located errors |
//! | [`usl`] | the Universal Scalability Law: model, closed forms and fit |

pub mod bottleneck;
pub mod changepoint;
pub mod compat;
pub mod html;
pub mod knee;
pub mod plot;
pub mod regress;
pub mod report;
pub mod stages;
pub mod summary;
pub mod table;
pub mod usl;
