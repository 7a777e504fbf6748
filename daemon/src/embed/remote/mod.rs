//! Embedding through an HTTP API instead of a resident model: any server that
//! speaks OpenAI's `POST /v1/embeddings` (OpenAI, Ollama, vLLM, TEI, LM Studio,
//! infinity), or Voyage's API with its `input_type` of query or document.
//!
//! A [`RemoteEmbedder`] is an [`Embedder`] like the local ones, so the index
//! pipeline and the queue do not know the difference; the queue gives it a
//! second thread for queries ([`super::EmbedWorker::spawn_lanes`]), so a query
//! never waits behind an indexing request that is retrying.
//!
//! - `wire`: the two APIs' bodies, and the checks every answer passes.
//! - `http`: one batch there and back, with the rate limit, retries and backoff.

mod http;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use codesearch_proto::{ModelInfo, Pooling};

use super::{EmbedError, Embedder, InputKind};

/// Which API a remote model speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// OpenAI's `/v1/embeddings`, which most servers copy.
    OpenAi,
    /// Voyage AI's `/v1/embeddings` (`input_type`, `output_dimension`).
    Voyage,
}

impl Api {
    /// The name `config.yaml` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::OpenAi => "openai",
            Api::Voyage => "voyage",
        }
    }

    /// The base URL used when the config names none.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Api::OpenAi => "https://api.openai.com/v1",
            Api::Voyage => "https://api.voyageai.com/v1",
        }
    }
}

impl std::str::FromStr for Api {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "openai" => Ok(Api::OpenAi),
            "voyage" => Ok(Api::Voyage),
            other => Err(format!(
                "unknown api `{other}`; use `openai` (any OpenAI-compatible /v1/embeddings) or `voyage`"
            )),
        }
    }
}

/// A remote model as `config.yaml` describes it (the key itself is read from
/// the environment when the model is loaded, never kept here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSpec {
    /// The name `--model` takes.
    pub name: String,
    /// The API it speaks.
    pub api: Api,
    /// Up to the `/embeddings` part, e.g. `http://localhost:11434/v1`.
    pub base_url: String,
    /// The model name the server knows.
    pub model: String,
    /// Length of its vectors; asked of the server when given (OpenAI's
    /// `dimensions`, Voyage's `output_dimension`), else learnt from one request.
    pub dimensions: Option<usize>,
    /// The environment variable that holds the API key; `None` sends no key.
    pub api_key_env: Option<String>,
    /// Texts per request.
    pub batch_size: usize,
    /// Requests in flight at once, per caller.
    pub concurrency: usize,
    /// Request starts per minute at most; `None` is unlimited.
    pub requests_per_minute: Option<u32>,
    /// Per request, connecting included.
    pub timeout: Duration,
    /// Tries after a 429 or 5xx answer before the call fails.
    pub max_retries: u32,
    /// What the server reads of one input, in tokens. It also sizes the
    /// chunks. Servers truncate longer inputs themselves (or, as OpenAI does,
    /// refuse them); only inputs beyond eight bytes a token, more than any
    /// tokenizer reads, are cut before they are sent.
    pub max_tokens: usize,
    /// Prepended to queries.
    pub query_prefix: String,
    /// Prepended to documents.
    pub document_prefix: String,
}

/// Names that mean a remote model without any `config.yaml`: each reads its
/// key from the usual variable. A config entry of the same name changes them.
pub const BUILTIN: &[&str] = &["openai", "voyage"];

impl RemoteSpec {
    /// The settings a remote model of `api` starts from.
    pub fn defaults(name: &str, api: Api) -> Self {
        Self {
            name: name.to_owned(),
            api,
            base_url: api.default_base_url().to_owned(),
            model: String::new(),
            dimensions: None,
            api_key_env: None,
            batch_size: 64,
            concurrency: 4,
            requests_per_minute: None,
            timeout: Duration::from_secs(60),
            max_retries: 5,
            max_tokens: 8192,
            query_prefix: String::new(),
            document_prefix: String::new(),
        }
    }

    /// `openai` (text-embedding-3-small, 1,536 dims, `OPENAI_API_KEY`) and
    /// `voyage` (voyage-code-3, 1,024 dims, `VOYAGE_API_KEY`).
    pub fn builtin(name: &str) -> Option<Self> {
        match name {
            "openai" => Some(Self {
                model: "text-embedding-3-small".to_owned(),
                dimensions: Some(1536),
                api_key_env: Some("OPENAI_API_KEY".to_owned()),
                max_tokens: 8191,
                ..Self::defaults(name, Api::OpenAi)
            }),
            "voyage" => Some(Self {
                model: "voyage-code-3".to_owned(),
                dimensions: Some(1024),
                api_key_env: Some("VOYAGE_API_KEY".to_owned()),
                // Voyage's limit is 1,000 texts and 120k tokens a request.
                batch_size: 32,
                max_tokens: 32000,
                ..Self::defaults(name, Api::Voyage)
            }),
            _ => None,
        }
    }

    /// What an index built with this model records besides its name: vectors
    /// of another server model are not comparable, even under one name.
    pub fn identity(&self) -> String {
        format!("{} API model `{}`", self.api.as_str(), self.model)
    }

    /// The base URL without any user:password part, for messages and status.
    pub fn display_url(&self) -> String {
        display_url(&self.base_url)
    }

    /// The `models.list` row.
    pub fn info(&self) -> ModelInfo {
        ModelInfo {
            name: self.name.clone(),
            aliases: Vec::new(),
            hf_repo: String::new(),
            dims: self.dimensions.unwrap_or(0),
            max_tokens: self.max_tokens,
            pooling: Pooling::Server,
            availability: Some("remote".to_owned()),
            location: Some(self.display_url()),
            device: None,
            remote_model: Some(self.model.clone()),
        }
    }
}

/// `url` with any `user:password@` removed.
fn display_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if scheme.is_empty() {
        format!("{host}{path}")
    } else {
        format!("{scheme}://{host}{path}")
    }
}

/// A remote model, ready to embed.
#[derive(Debug, Clone)]
pub struct RemoteEmbedder {
    spec: Arc<RemoteSpec>,
    client: http::Client,
    dims: usize,
}

impl RemoteEmbedder {
    /// Reads the API key from the environment and, when the config does not
    /// give the dimensions, learns them with one request.
    pub fn connect(spec: &RemoteSpec) -> Result<Self, EmbedError> {
        let key = match &spec.api_key_env {
            Some(var) => match std::env::var(var) {
                Ok(k) if !k.trim().is_empty() => Some(http::Secret::new(k.trim().to_owned())),
                _ => {
                    return Err(EmbedError::RemoteSetup {
                        model: spec.name.clone(),
                        reason: format!(
                            "its API key is read from {var}, which is not set in codesearchd's environment; set it where the daemon starts (the shell that runs `codesearch`, or the service's environment: docs/MODELS.md), then restart the daemon (`codesearch daemon stop`)"
                        ),
                    });
                }
            },
            None => None,
        };
        let url = format!("{}/embeddings", spec.base_url.trim_end_matches('/'));
        let client = http::Client::new(
            url,
            key,
            spec.api_key_env.clone(),
            spec.timeout,
            Arc::new(http::RateLimit::per_minute(spec.requests_per_minute)),
            spec.max_retries,
        );
        let mut embedder = Self {
            spec: Arc::new(spec.clone()),
            client,
            dims: spec.dimensions.unwrap_or(0),
        };
        if spec.dimensions.is_none() {
            let probe = embedder
                .post(&["dimension probe".to_owned()], InputKind::Document)
                .map_err(|reason| embedder.error(reason))?;
            embedder.dims = probe.first().map_or(0, Vec::len);
            tracing::info!(model = %spec.name, dims = embedder.dims, "learnt the remote model's dimensions");
        }
        Ok(embedder)
    }

    /// What is sent for `text`: its prefix, cut to what the server reads.
    fn prepare(&self, text: &str, kind: InputKind) -> String {
        let prefix = match kind {
            InputKind::Query => &self.spec.query_prefix,
            InputKind::Document => &self.spec.document_prefix,
        };
        let limit = self.spec.max_tokens.saturating_mul(8).max(1);
        let mut end = text.len().min(limit);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let body = &text[..end];
        // OpenAI refuses empty strings; one space embeds as "nothing".
        if body.trim().is_empty() && prefix.is_empty() {
            " ".to_owned()
        } else {
            format!("{prefix}{body}")
        }
    }

    fn post(&self, inputs: &[String], kind: InputKind) -> Result<Vec<Vec<f32>>, String> {
        let request = wire::Request::new(
            self.spec.api,
            &self.spec.model,
            inputs,
            kind,
            self.spec.dimensions,
        );
        let body = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
        let dims = (self.dims > 0).then_some(self.dims);
        self.client
            .post(&body, |text| wire::vectors(text, inputs.len(), dims))
    }

    fn error(&self, reason: String) -> EmbedError {
        EmbedError::Remote {
            model: self.spec.name.clone(),
            url: display_url(self.client.url()),
            reason,
        }
    }
}

impl Embedder for RemoteEmbedder {
    fn model_name(&self) -> &str {
        &self.spec.name
    }

    fn dims(&self) -> usize {
        self.dims
    }

    fn max_tokens(&self) -> usize {
        self.spec.max_tokens
    }

    fn device_name(&self) -> String {
        "remote".to_owned()
    }

    fn batch_size(&self) -> usize {
        self.spec.batch_size
    }

    fn identity(&self) -> Option<String> {
        Some(self.spec.identity())
    }

    fn embed(&mut self, texts: &[&str], kind: InputKind) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embed_pausable(texts, kind, &mut |_| {})
    }

    /// Sends the texts in batches, `concurrency` requests at a time; pauses
    /// between those rounds.
    fn embed_pausable(
        &mut self,
        texts: &[&str],
        kind: InputKind,
        pause: &mut dyn FnMut(&mut dyn Embedder),
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let inputs: Vec<String> = texts.iter().map(|t| self.prepare(t, kind)).collect();
        let batches: Vec<&[String]> = inputs.chunks(self.spec.batch_size.max(1)).collect();
        let mut out = Vec::with_capacity(texts.len());
        for round in batches.chunks(self.spec.concurrency.max(1)) {
            let answers: Vec<Result<Vec<Vec<f32>>, String>> = match round {
                [one] => vec![self.post(one, kind)],
                many => {
                    let this = &*self;
                    std::thread::scope(|s| {
                        let running: Vec<_> = many
                            .iter()
                            .map(|batch| s.spawn(move || this.post(batch, kind)))
                            .collect();
                        running
                            .into_iter()
                            .map(|r| {
                                r.join()
                                    .unwrap_or_else(|_| Err("a request thread panicked".to_owned()))
                            })
                            .collect()
                    })
                }
            };
            for answer in answers {
                out.extend(answer.map_err(|reason| self.error(reason))?);
            }
            pause(self);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials_in_messages() {
        assert_eq!(
            display_url("https://user:pw@example.com:8443/v1"),
            "https://example.com:8443/v1"
        );
        assert_eq!(
            display_url("http://localhost:7997/v1"),
            "http://localhost:7997/v1"
        );
    }

    #[test]
    fn a_missing_key_names_the_variable_and_the_fix() {
        let spec = RemoteSpec {
            api_key_env: Some("CODESEARCH_TEST_UNSET_KEY".to_owned()),
            ..RemoteSpec::builtin("voyage").unwrap()
        };
        let err = RemoteEmbedder::connect(&spec).unwrap_err().to_string();
        assert!(
            err.contains("CODESEARCH_TEST_UNSET_KEY") && err.contains("voyage"),
            "{err}"
        );
    }

    #[test]
    fn inputs_get_their_prefix_and_are_cut_on_a_character() {
        let spec = RemoteSpec {
            max_tokens: 2,
            query_prefix: "q: ".to_owned(),
            model: "m".to_owned(),
            dimensions: Some(2),
            ..RemoteSpec::defaults("local", Api::OpenAi)
        };
        let e = RemoteEmbedder::connect(&spec).unwrap();
        let long = "abcdefgh".repeat(3);
        assert_eq!(
            e.prepare(&long, InputKind::Query),
            format!("q: {}", &long[..16])
        );
        assert_eq!(
            e.prepare(&"é".repeat(10), InputKind::Document),
            "é".repeat(8)
        );
        assert_eq!(e.prepare("", InputKind::Document), " ");
    }
}
