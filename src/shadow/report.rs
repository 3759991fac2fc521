//! What `GET /services/{name}/shadow` and `cutover diff` show of a shadow step.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ShadowReport {
    /// Still copying (the step is running).
    pub active: bool,
    #[serde(flatten)]
    pub counts: ShadowCounts,
    pub mismatch_rate: Option<f64>,
    /// Fields that differed between two OLD answers: never counted as mismatches.
    pub noise_fields: Vec<String>,
    /// The last 50, oldest first.
    pub mismatches: Vec<MismatchSample>,
}

/// How the copies of a step came out, in copies.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ShadowCounts {
    pub matched: u64,
    pub mismatched: u64,
    pub noise: u64,
    /// Copies with no comparison on one side (`new_errors` of them NEW's).
    pub errors: u64,
    pub new_errors: u64,
    pub dropped: u64,
    /// match + noise + mismatch + NEW's errors: what the mismatch rate is over.
    pub comparisons: u64,
}

impl ShadowCounts {
    /// The comparisons that count against NEW: mismatches and NEW's errors.
    pub fn bad(&self) -> u64 {
        self.mismatched + self.new_errors
    }

    /// `bad / comparisons`; `None` before the first comparison.
    pub fn mismatch_rate(&self) -> Option<f64> {
        (self.comparisons > 0).then(|| self.bad() as f64 / self.comparisons as f64)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MismatchSample {
    pub method: String,
    pub path: String,
    pub old_status: u16,
    /// `None`: NEW gave no answer.
    pub new_status: Option<u16>,
    /// `status`, `header:NAME`, `$.json.path`, `body`, or `error`.
    pub differing: Vec<String>,
    pub body_diff: Option<String>,
}
