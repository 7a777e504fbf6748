//! What an index was built with (`manifest.json`), and how a mismatch reads.

use super::*;

/// What an index was built with. Opening it with anything else is an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Layout version.
    pub schema_version: u32,
    /// Canonical model name.
    pub model: String,
    /// Vector length.
    pub dims: usize,
    /// What else makes the vectors what they are, where the name does not
    /// say it: a remote model's API and server model (`openai API model
    /// \`text-embedding-3-small\``). Absent for local models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The repository root.
    pub root: PathBuf,
}

impl Manifest {
    /// The manifest of an index of `root` built with `embedder`, in this schema.
    pub fn of(embedder: &dyn crate::embed::Embedder, root: &Path) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            model: embedder.model_name().to_owned(),
            dims: embedder.dims(),
            source: embedder.identity(),
            root: root.to_owned(),
        }
    }
}

pub(super) fn describe(m: &Manifest) -> String {
    let source = m
        .source
        .as_ref()
        .map_or(String::new(), |s| format!(", {s}"));
    format!(
        "model `{}` ({} dims{source}, schema {})",
        m.model, m.dims, m.schema_version
    )
}
