//! The two APIs' request and response bodies, and the checks every answer
//! passes before its vectors are used: a server is outside input.

use serde::{Deserialize, Serialize};

use super::Api;
use crate::embed::InputKind;

/// The body of one `POST {base_url}/embeddings`.
#[derive(Debug, Serialize)]
pub(super) struct Request<'a> {
    model: &'a str,
    input: &'a [String],
    /// OpenAI: `float` (not base64), so any compatible server answers numbers.
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding_format: Option<&'static str>,
    /// OpenAI's Matryoshka shortening (text-embedding-3, infinity, Ollama).
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<usize>,
    /// Voyage: `query` or `document`.
    #[serde(skip_serializing_if = "Option::is_none")]
    input_type: Option<&'static str>,
    /// Voyage: the length of its vectors.
    #[serde(skip_serializing_if = "Option::is_none")]
    output_dimension: Option<usize>,
}

impl<'a> Request<'a> {
    pub(super) fn new(
        api: Api,
        model: &'a str,
        input: &'a [String],
        kind: InputKind,
        dimensions: Option<usize>,
    ) -> Self {
        match api {
            Api::OpenAi => Self {
                model,
                input,
                encoding_format: Some("float"),
                dimensions,
                input_type: None,
                output_dimension: None,
            },
            Api::Voyage => Self {
                model,
                input,
                encoding_format: None,
                dimensions: None,
                input_type: Some(match kind {
                    InputKind::Query => "query",
                    InputKind::Document => "document",
                }),
                output_dimension: dimensions,
            },
        }
    }
}

#[derive(Debug, Deserialize)]
struct Response {
    data: Vec<Item>,
}

#[derive(Debug, Deserialize)]
struct Item {
    embedding: Vec<f32>,
    index: Option<usize>,
}

/// The vectors of an answer to `n` inputs, in input order, each of length
/// `dims` and L2-normalised; or what is wrong with the answer.
pub(super) fn vectors(body: &str, n: usize, dims: Option<usize>) -> Result<Vec<Vec<f32>>, String> {
    let answer: Response = serde_json::from_str(body)
        .map_err(|e| format!("the answer is not an embeddings response ({e})"))?;
    if answer.data.len() != n {
        return Err(format!(
            "the answer has {} vectors for {n} inputs",
            answer.data.len()
        ));
    }
    let mut out: Vec<Option<Vec<f32>>> = vec![None; n];
    for (position, item) in answer.data.into_iter().enumerate() {
        // Servers give `index`; one that does not answers in order.
        let i = item.index.unwrap_or(position);
        let slot = out
            .get_mut(i)
            .ok_or_else(|| format!("the answer has a vector for input {i} of {n}"))?;
        if slot.is_some() {
            return Err(format!("the answer has two vectors for input {i}"));
        }
        let mut v = item.embedding;
        if let Some(d) = dims
            && v.len() != d
        {
            return Err(format!(
                "the answer's vectors have {} dimensions, not the {d} configured",
                v.len()
            ));
        }
        if v.is_empty() {
            return Err("the answer has an empty vector".to_owned());
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if !norm.is_finite() || norm == 0.0 {
            return Err(format!(
                "the vector for input {i} is zero or not finite; it cannot be compared"
            ));
        }
        v.iter_mut().for_each(|x| *x /= norm);
        *slot = Some(v);
    }
    let vectors: Vec<Vec<f32>> = out.into_iter().flatten().collect();
    if vectors.len() != n {
        return Err("the answer does not cover every input".to_owned());
    }
    if let Some(first) = vectors.first()
        && vectors.iter().any(|v| v.len() != first.len())
    {
        return Err("the answer's vectors differ in length".to_owned());
    }
    Ok(vectors)
}

/// The message an error answer carries (OpenAI's `error.message`, Voyage's
/// `detail`), else the start of the body; never more than 300 characters.
pub(super) fn error_message(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let text = parsed
        .as_ref()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.get("detail"))
                .or_else(|| v.get("error"))
                .or_else(|| v.get("message"))
        })
        .map(|m| match m {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .unwrap_or_else(|| body.to_owned());
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_speak_each_api() {
        let input = vec!["fn main() {}".to_owned()];
        let openai = serde_json::to_value(Request::new(
            Api::OpenAi,
            "m",
            &input,
            InputKind::Query,
            Some(256),
        ))
        .unwrap();
        assert_eq!(
            openai,
            serde_json::json!({"model": "m", "input": ["fn main() {}"], "encoding_format": "float", "dimensions": 256})
        );
        let voyage = serde_json::to_value(Request::new(
            Api::Voyage,
            "voyage-code-3",
            &input,
            InputKind::Document,
            None,
        ))
        .unwrap();
        assert_eq!(
            voyage,
            serde_json::json!({"model": "voyage-code-3", "input": ["fn main() {}"], "input_type": "document"})
        );
    }

    #[test]
    fn answers_are_put_in_input_order_and_normalised() {
        let body =
            r#"{"data":[{"embedding":[0,2],"index":1},{"embedding":[3,4],"index":0}],"model":"m"}"#;
        let v = vectors(body, 2, Some(2)).unwrap();
        assert_eq!(v, vec![vec![0.6, 0.8], vec![0.0, 1.0]]);
    }

    #[test]
    fn bad_answers_are_refused_with_the_reason() {
        for (body, n, dims, want) in [
            ("<html>", 1, None, "not an embeddings response"),
            (r#"{"data":[]}"#, 1, None, "0 vectors for 1 inputs"),
            (
                r#"{"data":[{"embedding":[1,0],"index":0}]}"#,
                1,
                Some(3),
                "2 dimensions, not the 3 configured",
            ),
            (
                r#"{"data":[{"embedding":[1],"index":0},{"embedding":[1],"index":0}]}"#,
                2,
                None,
                "two vectors for input 0",
            ),
            (
                r#"{"data":[{"embedding":[1],"index":7}]}"#,
                1,
                None,
                "input 7 of 1",
            ),
            (
                r#"{"data":[{"embedding":[0,0],"index":0}]}"#,
                1,
                None,
                "zero or not finite",
            ),
            (
                r#"{"data":[{"embedding":[1],"index":0},{"embedding":[1,2],"index":1}]}"#,
                2,
                None,
                "differ in length",
            ),
        ] {
            let err = vectors(body, n, dims).unwrap_err();
            assert!(err.contains(want), "{body}: {err}");
        }
    }

    #[test]
    fn error_messages_are_read_from_either_api_and_cut() {
        assert_eq!(
            error_message(r#"{"error":{"message":"Rate limit reached","type":"x"}}"#),
            "Rate limit reached"
        );
        assert_eq!(
            error_message(r#"{"detail":"Invalid model"}"#),
            "Invalid model"
        );
        assert_eq!(error_message("Bad\n  Gateway"), "Bad Gateway");
        let long = "x".repeat(1000);
        assert_eq!(error_message(&long).chars().count(), 301);
    }
}
