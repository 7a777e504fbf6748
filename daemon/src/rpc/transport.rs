//! Newline-delimited JSON-RPC 2.0 over a byte stream: one request (or batch) per
//! line in, one response line out.
//!
//! jsonrpsee's `raw_json_request` handles a well-formed request object; this layer
//! answers everything else itself, as JSON-RPC says: invalid UTF-8 or JSON is
//! -32700 with `id: null`, a non-object or a wrong `jsonrpc` is -32600, a line over
//! 16 MiB is -32600 (and the line is skipped, not buffered), batches are split and
//! their answers joined, and notifications get no answer. No input ends the
//! connection except end of stream.
//!
//! Subscriptions (`repo.subscribe`) push notification lines on the same
//! connection, after the answer that accepted them, for as long as the peer reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use codesearch_proto::limits::{MAX_BATCH, MAX_SUBSCRIPTIONS};
use codesearch_proto::{MAX_LINE_BYTES, code};
use jsonrpsee::RpcModule;
use jsonrpsee::core::server::MethodCallback;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Lines waiting to be written to one connection.
const OUTGOING_LINES: usize = 64;

/// Notifications buffered per subscription before the slowest are dropped.
const NOTIFICATIONS_BUFFERED: usize = 64;

/// The notifications of the subscriptions one line opened.
pub(crate) type Subscriptions = Vec<mpsc::Receiver<Box<RawValue>>>;

/// Serves one connection until the peer closes it.
pub(crate) async fn serve<C, R, W>(
    module: &RpcModule<C>,
    mut reader: R,
    mut writer: W,
) -> std::io::Result<()>
where
    C: Send + Sync + 'static,
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (out, mut outgoing) = mpsc::channel::<String>(OUTGOING_LINES);
    // Subscriptions open on this connection (each ends with its forwarder).
    let open = Arc::new(AtomicUsize::new(0));
    let read = async move {
        loop {
            let (reply, subscriptions) = match read_line(&mut reader, MAX_LINE_BYTES).await? {
                None => return Ok(()),
                Some(Line::TooLong) => (
                    Some(error(
                        code::INVALID_REQUEST,
                        &format!("request line longer than {} MiB", MAX_LINE_BYTES >> 20),
                        Value::Null,
                    )),
                    Vec::new(),
                ),
                Some(Line::Text(bytes)) if bytes.iter().all(u8::is_ascii_whitespace) => {
                    (None, Vec::new())
                }
                Some(Line::Text(bytes)) => {
                    let room = MAX_SUBSCRIPTIONS.saturating_sub(open.load(Ordering::SeqCst));
                    handle_with_room(module, &bytes, room).await
                }
            };
            if let Some(reply) = reply
                && out.send(reply).await.is_err()
            {
                return Ok(());
            }
            for rx in subscriptions {
                open.fetch_add(1, Ordering::SeqCst);
                let open = Open(open.clone());
                let out = out.clone();
                tokio::spawn(async move {
                    forward(rx, out).await;
                    drop(open);
                });
            }
        }
    };
    let write = async {
        while let Some(mut line) = outgoing.recv().await {
            line.push('\n');
            writer.write_all(line.as_bytes()).await?;
            writer.flush().await?;
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::try_join!(read, write).map(drop)
}

/// One open subscription of a connection, counted until dropped.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Moves a subscription's notifications to the connection until either ends;
/// dropping `rx` then tells the subscription that nobody listens.
async fn forward(mut rx: mpsc::Receiver<Box<RawValue>>, out: mpsc::Sender<String>) {
    loop {
        tokio::select! {
            note = rx.recv() => match note {
                Some(note) => {
                    if out.send(note.get().to_owned()).await.is_err() {
                        return;
                    }
                }
                None => return,
            },
            () = out.closed() => return,
        }
    }
}

/// The answer to one line, if it needs one, and the subscriptions it opened.
#[cfg(test)]
pub(crate) async fn handle<C: Send + Sync + 'static>(
    module: &RpcModule<C>,
    bytes: &[u8],
) -> (Option<String>, Subscriptions) {
    handle_with_room(module, bytes, MAX_SUBSCRIPTIONS).await
}

/// [`handle`] on a connection that may open `room` more subscriptions; a
/// subscribe past that is answered `OVERLOADED`.
pub(crate) async fn handle_with_room<C: Send + Sync + 'static>(
    module: &RpcModule<C>,
    bytes: &[u8],
    room: usize,
) -> (Option<String>, Subscriptions) {
    let mut subscriptions = Vec::new();
    let mut room = room;
    let answer = answer(module, bytes, &mut subscriptions, &mut room).await;
    (answer, subscriptions)
}

async fn answer<C: Send + Sync + 'static>(
    module: &RpcModule<C>,
    bytes: &[u8],
    subscriptions: &mut Subscriptions,
    room: &mut usize,
) -> Option<String> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Some(error(
            code::PARSE_ERROR,
            "Parse error: the line is not valid UTF-8",
            Value::Null,
        ));
    };
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Some(error(
                code::PARSE_ERROR,
                &format!("Parse error: {e}"),
                Value::Null,
            ));
        }
    };
    match value {
        Value::Array(items) if items.is_empty() => Some(error(
            code::INVALID_REQUEST,
            "Invalid request: empty batch",
            Value::Null,
        )),
        Value::Array(items) if items.len() > MAX_BATCH => Some(error(
            code::INVALID_REQUEST,
            &format!(
                "Invalid request: a batch of {} requests; send at most {MAX_BATCH} per batch",
                items.len()
            ),
            Value::Null,
        )),
        Value::Array(items) => {
            let mut answers = Vec::new();
            for item in items {
                if let Some(a) = handle_one(module, item, subscriptions, room).await {
                    answers.push(a);
                }
            }
            (!answers.is_empty()).then(|| format!("[{}]", answers.join(",")))
        }
        other => handle_one(module, other, subscriptions, room).await,
    }
}

async fn handle_one<C: Send + Sync + 'static>(
    module: &RpcModule<C>,
    value: Value,
    subscriptions: &mut Subscriptions,
    room: &mut usize,
) -> Option<String> {
    let Some(obj) = value.as_object() else {
        return Some(error(
            code::INVALID_REQUEST,
            "Invalid request: expected a JSON object",
            Value::Null,
        ));
    };
    let id = obj.get("id").cloned();
    let is_notification = id.is_none();
    let reply_id = id.clone().unwrap_or(Value::Null);
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return (!is_notification).then(|| {
            error(
                code::INVALID_REQUEST,
                "Invalid request: \"jsonrpc\" must be \"2.0\"",
                reply_id,
            )
        });
    }
    if !obj.get("method").is_some_and(Value::is_string) {
        return (!is_notification).then(|| {
            error(
                code::INVALID_REQUEST,
                "Invalid request: \"method\" must be a string",
                reply_id,
            )
        });
    }
    let subscribes = obj
        .get("method")
        .and_then(Value::as_str)
        .and_then(|m| module.method(m))
        .is_some_and(|m| matches!(m, MethodCallback::Subscription(_)));
    if subscribes && !is_notification {
        if *room == 0 {
            return Some(error(
                code::OVERLOADED,
                &format!(
                    "too many subscriptions on this connection ({MAX_SUBSCRIPTIONS}); unsubscribe (repo.unsubscribe) or open another connection"
                ),
                reply_id,
            ));
        }
        *room -= 1;
    }
    if subscribes && is_notification {
        return None; // a subscription nobody can hear: nothing to open
    }
    // jsonrpsee answers only requests with an id: run a notification as one, and drop the answer.
    let mut request = value;
    if is_notification {
        request["id"] = json!("notification");
    }
    let answer = match module
        .raw_json_request(&request.to_string(), NOTIFICATIONS_BUFFERED)
        .await
    {
        Ok((response, notifications)) => {
            if subscribes && !is_notification {
                subscriptions.push(notifications);
            }
            response.get().to_owned()
        }
        Err(e) => error(
            code::INVALID_REQUEST,
            &format!("Invalid request: {e}"),
            reply_id,
        ),
    };
    (!is_notification).then_some(answer)
}

fn error(code: i32, message: &str, id: Value) -> String {
    json!({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": id}).to_string()
}

enum Line {
    Text(Vec<u8>),
    TooLong,
}

/// Reads up to the next `\n`; a line over `max` bytes is consumed but not kept.
async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    max: usize,
) -> std::io::Result<Option<Line>> {
    let mut buf = Vec::new();
    let mut too_long = false;
    let mut seen_any = false;
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok(match (seen_any, too_long) {
                (false, _) => None,
                (true, true) => Some(Line::TooLong),
                (true, false) => Some(Line::Text(buf)),
            });
        }
        seen_any = true;
        let newline = available.iter().position(|&b| b == b'\n');
        let chunk = &available[..newline.unwrap_or(available.len())];
        if !too_long {
            if buf.len() + chunk.len() > max {
                too_long = true;
                buf = Vec::new();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let consumed = newline.map_or(available.len(), |i| i + 1);
        r.consume(consumed);
        if newline.is_some() {
            return Ok(Some(if too_long {
                Line::TooLong
            } else {
                Line::Text(buf)
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ask(module: &RpcModule<()>, line: &str) -> Option<Value> {
        handle(module, line.as_bytes())
            .await
            .0
            .map(|s| serde_json::from_str(&s).unwrap())
    }

    fn module() -> RpcModule<()> {
        let mut m = RpcModule::new(());
        m.register_method("echo", |p, _, _| p.parse::<Value>().unwrap_or(Value::Null))
            .unwrap();
        m
    }

    #[tokio::test]
    async fn answers_what_jsonrpsee_does_not() {
        let m = module();
        let v = ask(
            &m,
            r#"{"jsonrpc":"2.0","id":1,"method":"echo","params":[5]}"#,
        )
        .await
        .unwrap();
        assert_eq!(v["result"], json!([5]));
        let v = ask(&m, "{not json").await.unwrap();
        assert_eq!(
            (v["error"]["code"].as_i64(), &v["id"]),
            (Some(-32700), &Value::Null)
        );
        let v = handle(&m, b"\xff\xfe").await.0.unwrap();
        assert!(v.contains("-32700"), "{v}");
        let v = ask(&m, r#"{"jsonrpc":"2.0","id":2,"method":"nope"}"#)
            .await
            .unwrap();
        assert_eq!(v["error"]["code"], -32601);
        let v = ask(&m, r#"{"jsonrpc":"1.0","id":3,"method":"echo"}"#)
            .await
            .unwrap();
        assert_eq!(
            (v["error"]["code"].as_i64(), &v["id"]),
            (Some(-32600), &json!(3))
        );
        let v = ask(&m, "[]").await.unwrap();
        assert_eq!(v["error"]["code"], -32600);
        let v = ask(&m, "42").await.unwrap();
        assert_eq!(v["error"]["code"], -32600);
        assert!(
            ask(&m, r#"{"jsonrpc":"2.0","method":"echo"}"#)
                .await
                .is_none()
        );
        let v = ask(
            &m,
            r#"[{"jsonrpc":"2.0","id":1,"method":"echo","params":[1]},{"jsonrpc":"2.0","method":"echo"},{"jsonrpc":"2.0","id":2,"method":"nope"}]"#,
        )
        .await
        .unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    }

    #[tokio::test]
    async fn a_batch_over_the_limit_is_one_error() {
        let m = module();
        let item = r#"{"jsonrpc":"2.0","id":1,"method":"echo","params":[1]}"#;
        let batch = |n: usize| format!("[{}]", vec![item; n].join(","));
        let v = ask(&m, &batch(MAX_BATCH + 1)).await.unwrap();
        assert_eq!(
            (v["error"]["code"].as_i64(), &v["id"]),
            (Some(-32600), &Value::Null)
        );
        let v = ask(&m, &batch(MAX_BATCH)).await.unwrap();
        assert_eq!(v.as_array().unwrap().len(), MAX_BATCH);
    }

    #[tokio::test]
    async fn an_overlong_line_is_skipped_and_the_next_one_served() {
        let m = module();
        let mut input = vec![b'x'; 64];
        input.extend_from_slice(
            b"\n{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"echo\",\"params\":[1]}\n",
        );
        let mut reader = std::io::Cursor::new(input);
        let first = read_line(&mut reader, 32).await.unwrap();
        assert!(matches!(first, Some(Line::TooLong)));
        let Some(Line::Text(second)) = read_line(&mut reader, 1024).await.unwrap() else {
            panic!("the next line was lost");
        };
        let v: Value = serde_json::from_str(&handle(&m, &second).await.0.unwrap()).unwrap();
        assert_eq!(v["id"], 7);
        assert!(read_line(&mut reader, 1024).await.unwrap().is_none());
    }
}
