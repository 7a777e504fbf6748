//! One batch to the server and back: the request, the rate limit, and the
//! retries (429 and 5xx with backoff, `Retry-After` honoured; a server that
//! is down is given up on quickly, so an indexing pass ends with a clear error).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest answer read (a batch of 2,048 vectors of 3,072 floats as JSON is ~120 MB;
/// batches that size are refused by the config's batch limit long before).
const MAX_ANSWER_BYTES: u64 = 256 * 1024 * 1024;
/// The longest wait a `Retry-After` may ask for; a longer one ends the call.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);
/// First backoff; it doubles per retry up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(20);
/// Tries after a refused or dropped connection: the server is probably down,
/// and an indexing pass should say so rather than wait it out.
const CONNECT_RETRIES: u32 = 2;
/// Tries after a timeout: each already took the whole timeout.
const TIMEOUT_RETRIES: u32 = 1;

/// An API key: read from the environment once, sent only in the
/// `Authorization` header, and never printed (its `Debug` is `***`).
#[derive(Clone)]
pub(super) struct Secret(String);

impl Secret {
    pub(super) fn new(key: String) -> Self {
        Self(key)
    }

    /// `text` with every occurrence of the key blanked out (a server's error
    /// message may quote what it was sent).
    fn redact(&self, text: &str) -> String {
        if self.0.len() < 4 {
            return text.to_owned();
        }
        text.replace(&self.0, "***")
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Request starts spaced to a rate (`requests_per_minute`), shared by every
/// caller of one endpoint.
#[derive(Debug)]
pub(super) struct RateLimit {
    interval: Duration,
    next: Mutex<Instant>,
}

impl RateLimit {
    pub(super) fn per_minute(requests: Option<u32>) -> Self {
        Self {
            interval: requests
                .filter(|r| *r > 0)
                .map_or(Duration::ZERO, |r| Duration::from_secs(60) / r),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits for this caller's turn.
    fn wait(&self) {
        if self.interval.is_zero() {
            return;
        }
        let start = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let start = (*next).max(Instant::now());
            *next = start + self.interval;
            start
        };
        let now = Instant::now();
        if start > now {
            std::thread::sleep(start - now);
        }
    }
}

/// Posts batches to one endpoint.
#[derive(Debug, Clone)]
pub(super) struct Client {
    agent: ureq::Agent,
    /// `{base_url}/embeddings`.
    url: String,
    key: Option<Secret>,
    /// Where the key came from, for messages (`VOYAGE_API_KEY`).
    key_env: Option<String>,
    limit: Arc<RateLimit>,
    max_retries: u32,
}

/// Why one try failed, and whether another may help.
enum Failure {
    /// Not worth repeating (a refused key, a bad request, a malformed answer).
    Final(String),
    /// The server is busy or failing: try again after the wait it asked for, if any.
    Busy {
        message: String,
        retry_after: Option<Duration>,
    },
    /// No answer: refused or dropped connection, or a DNS failure.
    Unreachable(String),
    /// No answer within the timeout.
    TimedOut(String),
}

impl Client {
    pub(super) fn new(
        url: String,
        key: Option<Secret>,
        key_env: Option<String>,
        timeout: Duration,
        limit: Arc<RateLimit>,
        max_retries: u32,
    ) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout.min(Duration::from_secs(10))))
            .http_status_as_error(false)
            .user_agent(concat!("codesearchd/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Self {
            agent,
            url,
            key,
            key_env,
            limit,
            max_retries,
        }
    }

    /// The endpoint, for messages.
    pub(super) fn url(&self) -> &str {
        &self.url
    }

    /// Posts `body` (JSON) until an answer comes or retrying is pointless;
    /// `parse` turns the answer's body into the result.
    pub(super) fn post<T>(
        &self,
        body: &[u8],
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, String> {
        let mut tries = 0u32;
        loop {
            self.limit.wait();
            tries += 1;
            let failure = match self.try_once(body) {
                Ok(text) => return parse(&text),
                Err(f) => f,
            };
            let (message, allowed, asked) = match failure {
                Failure::Final(message) => return Err(message),
                Failure::Busy {
                    message,
                    retry_after,
                } => (message, self.max_retries, retry_after),
                Failure::Unreachable(message) => (message, CONNECT_RETRIES, None),
                Failure::TimedOut(message) => (message, TIMEOUT_RETRIES, None),
            };
            if tries > allowed {
                return Err(if tries == 1 {
                    message
                } else {
                    format!("{message} (tried {tries} times)")
                });
            }
            let wait = match asked {
                Some(w) if w > MAX_RETRY_AFTER => {
                    return Err(format!(
                        "{message}; the server asks to wait {} s before trying again",
                        w.as_secs()
                    ));
                }
                Some(w) => w,
                None => backoff(tries),
            };
            tracing::warn!(url = %self.url, %message, wait_ms = wait.as_millis() as u64, "embedding request failed; trying again");
            std::thread::sleep(wait);
        }
    }

    fn try_once(&self, body: &[u8]) -> Result<String, Failure> {
        let mut request = self
            .agent
            .post(&self.url)
            .header("content-type", "application/json");
        if let Some(key) = &self.key {
            request = request.header("authorization", format!("Bearer {}", key.0));
        }
        let mut response = request.send(body).map_err(|e| self.transport(&e))?;
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_string()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(n) => Failure::Final(format!(
                    "the answer is larger than {n} bytes; lower the batch size"
                )),
                other => self.transport(&other),
            })?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let said = self.redacted(&super::wire::error_message(&text));
        let message = format!("HTTP {status}: {said}");
        Err(match status {
            401 | 403 => Failure::Final(match &self.key_env {
                Some(env) => format!(
                    "{message}; the server refused the API key in {env} (check its value, then restart the daemon: `codesearch daemon stop`)"
                ),
                None => format!(
                    "{message}; the server wants an API key: name the variable that holds it in config.yaml (`api_key_env`)"
                ),
            }),
            408 | 409 | 425 | 429 | 500..=599 => Failure::Busy {
                message,
                retry_after,
            },
            _ => Failure::Final(message),
        })
    }

    fn transport(&self, e: &ureq::Error) -> Failure {
        let message = self.redacted(&e.to_string());
        match e {
            ureq::Error::Timeout(_) => Failure::TimedOut(format!("no answer in time ({message})")),
            ureq::Error::Io(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::ConnectProxyFailed(_)
            | ureq::Error::Protocol(_)
            | ureq::Error::BodyStalled => {
                Failure::Unreachable(format!("cannot reach the server ({message})"))
            }
            _ => Failure::Final(message),
        }
    }

    fn redacted(&self, text: &str) -> String {
        match &self.key {
            Some(k) => k.redact(text),
            None => text.to_owned(),
        }
    }
}

/// The wait a busy server asks for: OpenAI's `retry-after-ms`, else the
/// standard `Retry-After` in seconds (its date form is left to the backoff).
fn retry_after(headers: &ureq::http::HeaderMap) -> Option<Duration> {
    let number = |name: &str| -> Option<f64> {
        headers
            .get(name)?
            .to_str()
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    number("retry-after-ms")
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .or_else(|| number("retry-after").map(|s| Duration::from_secs_f64(s.min(1e6))))
}

/// The wait before try `tries + 1`: doubling from [`FIRST_BACKOFF`], capped,
/// with up to a quarter more so that callers who failed together spread out.
fn backoff(tries: u32) -> Duration {
    let base = FIRST_BACKOFF
        .saturating_mul(1u32 << tries.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    base + base.mul_f64(f64::from(nanos % 1000) / 4000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    /// A real HTTP server on a local port that answers each request with the
    /// next of `answers` (status, extra headers, body) and records the requests.
    fn serve(
        answers: Vec<(u16, &'static str, String)>,
    ) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/embeddings", listener.local_addr().unwrap());
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for (status, headers, body) in answers {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream);
                let mut head = String::new();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    head.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut request = vec![0; length];
                reader.read_exact(&mut request).unwrap();
                seen.push(format!("{head}{}", String::from_utf8_lossy(&request)));
                let mut stream = reader.into_inner();
                write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
            seen
        });
        (url, thread)
    }

    fn client(url: String, key: Option<&str>) -> Client {
        Client::new(
            url,
            key.map(|k| Secret::new(k.to_owned())),
            key.map(|_| "TEST_KEY".to_owned()),
            Duration::from_secs(5),
            Arc::new(RateLimit::per_minute(None)),
            3,
        )
    }

    const OK: &str = r#"{"data":[{"embedding":[1,0],"index":0}]}"#;

    #[test]
    fn busy_answers_are_retried_after_the_wait_asked_for() {
        let (url, server) = serve(vec![
            (
                429,
                "retry-after: 1\r\n",
                r#"{"error":{"message":"slow down"}}"#.into(),
            ),
            (503, "retry-after-ms: 10\r\n", "overloaded".into()),
            (200, "", OK.into()),
        ]);
        let started = Instant::now();
        let body = client(url, Some("sk-secret"))
            .post(b"{}", |t| Ok(t.to_owned()))
            .unwrap();
        assert_eq!(body, OK);
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "Retry-After was not honoured"
        );
        let seen = server.join().unwrap();
        assert_eq!(seen.len(), 3);
        assert!(
            seen[0]
                .to_ascii_lowercase()
                .contains("authorization: bearer sk-secret")
        );
    }

    #[test]
    fn retries_end_with_the_last_answer_and_a_count() {
        let busy = || (500, "retry-after: 0\r\n", "boom".to_owned());
        let (url, server) = serve(vec![busy(), busy(), busy(), busy()]);
        let err = client(url, None)
            .post(b"{}", |t| Ok(t.to_owned()))
            .unwrap_err();
        assert_eq!(err, "HTTP 500: boom (tried 4 times)");
        server.join().unwrap();
    }

    #[test]
    fn a_refused_key_is_final_and_never_printed() {
        let (url, server) = serve(vec![(
            401,
            "",
            r#"{"error":{"message":"Incorrect API key provided: sk-secret-123"}}"#.into(),
        )]);
        let c = client(url, Some("sk-secret-123"));
        let err = c.post(b"{}", |t| Ok(t.to_owned())).unwrap_err();
        assert!(
            err.contains("HTTP 401") && err.contains("TEST_KEY"),
            "{err}"
        );
        assert!(!err.contains("sk-secret"), "{err}");
        assert!(!format!("{c:?}").contains("sk-secret"));
        server.join().unwrap();
    }

    #[test]
    fn a_server_that_is_down_is_given_up_on_quickly() {
        // A port with nothing listening: bound, then closed.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let started = Instant::now();
        let err = client(format!("http://127.0.0.1:{port}/v1/embeddings"), None)
            .post(b"{}", |t| Ok(t.to_owned()))
            .unwrap_err();
        assert!(err.starts_with("cannot reach the server"), "{err}");
        assert!(err.contains("tried 3 times"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_long_retry_after_ends_the_call() {
        let (url, server) = serve(vec![(429, "retry-after: 3600\r\n", "{}".into())]);
        let err = client(url, None)
            .post(b"{}", |t| Ok(t.to_owned()))
            .unwrap_err();
        assert!(err.contains("asks to wait 3600 s"), "{err}");
        server.join().unwrap();
    }

    #[test]
    fn the_rate_limit_spaces_request_starts() {
        let limit = RateLimit::per_minute(Some(600));
        let started = Instant::now();
        for _ in 0..4 {
            limit.wait();
        }
        // 600/min = one every 100 ms: the fourth starts 300 ms after the first.
        assert!(started.elapsed() >= Duration::from_millis(290));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert!(backoff(1) >= FIRST_BACKOFF && backoff(1) < FIRST_BACKOFF * 2);
        assert!(backoff(3) >= FIRST_BACKOFF * 4);
        assert!(backoff(30) <= MAX_BACKOFF + MAX_BACKOFF / 4);
    }
}
